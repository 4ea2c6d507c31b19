# Differential-test request generator: python3 ref/gen.py SEED (env OUT=dir, MUT=max mutations);
# writes harness-format requests (GET/urlencoded/JSON/XML/multipart, mutated) for ref/diff.sh.
import random, os, sys
random.seed(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
out = os.environ.get('OUT', '/tmp/gen')
for f in os.listdir(out): os.remove(os.path.join(out, f))
alpha = ['a','b','=','&','%','%4','%41','%zz','+',';',' ','"',"'",'#','?','/','\\','%2f','%3f','%23','x','..','%00','é','%u0041',':','//','http://h','-','--']
def rs(n): return ''.join(random.choice(alpha) for _ in range(random.randint(0, n)))
def w(i, method, uri, headers, body):
    if '\t' in uri or '\n' in uri or ' ' in uri: uri = uri.replace('\t','').replace('\n','').replace(' ','')
    s = f'{method}\t{uri}\t1.1\n' + ''.join(f'{n}\t{v}\n' for n, v in headers) + '\n'
    open(f'{out}/c{i:04d}', 'wb').write(s.encode('utf-8', 'surrogateescape') + body)
seeds_mp = [
 b'--XX\r\nContent-Disposition: form-data; name="a"\r\n\r\nval1\r\n--XX\r\nContent-Disposition: form-data; name="f"; filename="x.php"\r\nContent-Type: text/plain\r\n\r\n<?php ?>\r\n--XX--\r\n',
 b'--XX\r\nContent-Disposition: form-data; name="a\\"b"; filename="c:\\\\x"\r\nX-A: b\r\n c\r\n\r\nl1\nl2\r\n--XX--\r\n',
]
jseeds = ['{"a":{"b":"x","c":[1,2.50,{"d":true}],"e":{},"f":[],"g":null,"h":false},"":"e","u":"\\u00e9\\n\\ud83d\\ude00"}', '[1,["x","y"],{"k":"v"}]', '{"a":[{"b":[1,{"c":"d"}]}],"z":-1.5e+3}']
xseeds = ['<?xml version="1.0"?><a x="1">t1<b>t2</b> <![CDATA[c<d]]><!--cm-->&lt;&#65;&#x42;</a>', '<r>\r\n<i>1</i>\r<i a=\'2\'>2&amp;</i></r>', '<!DOCTYPE r [<!ELEMENT r ANY>]><r>x</r>']
def mutate(b):
    b = bytearray(b)
    for _ in range(random.randint(1, int(os.environ.get("MUT", "3")))):
        op = random.random(); p = random.randint(0, len(b))
        if op < 0.3 and len(b) > 0: del b[p:p+random.randint(1, 4)]
        elif op < 0.6: b[p:p] = random.choice([b'\r\n', b'\n', b'--', b'"', b"'", b';', b' ', b'=', b'--XX', b'\\', b'{', b'}', b'[', b']', b',', b':', b'<', b'>', b'&', b'/', b'\x00', b'\xff', b'a'])
        else: b[p:p] = b[max(0, p-10):p]
    return bytes(b)
i = 0
for _ in range(150):
    uri = random.choice(['/', '/p/', 'http://h/', '']) + rs(8) + random.choice(['', '?']) + rs(10)
    hs = [('Host', 'h')]
    if random.random() < 0.7: hs.append((random.choice(['Cookie', 'cookie']), rs(10)))
    w(i, 'GET', uri or '/', hs, b''); i += 1
for _ in range(80):
    w(i, 'POST', '/p?' + rs(5), [('Content-Type', 'application/x-www-form-urlencoded')], rs(15).encode('utf-8', 'surrogateescape')); i += 1
for _ in range(150):
    s = random.choice(jseeds).encode(); s = mutate(s) if random.random() < 0.8 else s
    w(i, 'POST', '/j', [('Content-Type', 'application/json')], s); i += 1
for _ in range(100):
    s = random.choice(xseeds).encode(); s = mutate(s) if random.random() < 0.8 else s
    w(i, 'POST', '/x', [('Content-Type', 'text/xml')], s); i += 1
cts = ['multipart/form-data; boundary=XX', 'multipart/form-data; boundary="XX"', 'multipart/form-data;boundary=XX', 'multipart/form-data; boundary= XX', 'multipart/form-data; charset=x; boundary=XX', 'multipart/form-data; Boundary=XX', 'multipart/form-data; boundary=XX; boundary=YY', 'Multipart/Form-Data; boundary=XX']
for _ in range(250):
    s = random.choice(seeds_mp); s = mutate(s) if random.random() < 0.85 else s
    ct = random.choice(cts) if random.random() < 0.3 else cts[0]
    w(i, 'POST', '/m', [('Content-Type', ct)], s); i += 1
