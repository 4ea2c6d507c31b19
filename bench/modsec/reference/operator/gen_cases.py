#!/usr/bin/env python3
"""Regenerates pm_cases.tsv and rx_cases.tsv by running ./harness (libmodsecurity 3.0.9) on the
operators of /usr/share/modsecurity-crs/rules. Build the harness first (see harness.c)."""
import glob
import os
import random
import subprocess

RULES = '/usr/share/modsecurity-crs/rules'


def run(lines, encoding='latin1'):
    out = subprocess.run(['./harness'], input='\n'.join(lines) + '\n', capture_output=True,
                         encoding=encoding, check=True).stdout.splitlines()
    # the rule parser prints stray text on some inputs: keep the verdict lines only
    out = [l[l.find('MATCH') - 2 if 'NOMATCH' in l else l.find('MATCH'):] for l in out]
    assert len(out) == len(lines)
    return out


def pm_cases():
    random.seed(7)
    cases = []
    for f in sorted(glob.glob(RULES + '/*.data')):
        lines = [l for l in open(f, 'rb').read().split(b'\n') if l and not l.strip().startswith(b'#')]
        for l in random.sample(lines, min(25, len(lines))):
            l = l.decode('latin1')
            other = random.choice(lines).decode('latin1')
            for s in [l, 'x' + l.upper() + 'y', l[1:], l[:-1],
                      l[:len(l) // 2] + ' ' + l[len(l) // 2:], 'zz' + l[2:] + other]:
                if '\t' not in s and '\\' not in s:
                    cases.append((os.path.basename(f), s))
    out = run([f'@pmFromFile {RULES}/{f}\t{s}' for f, s in cases])
    with open('pm_cases.tsv', 'w', encoding='latin1') as o:
        for (f, s), r in zip(cases, out):
            o.write(f'{f}\t{s}\t{r}\n')


def rx_ops():
    ops = []
    for f in sorted(glob.glob(RULES + '/*.conf')):
        for line in open(f, encoding='utf-8').read().replace('\\\n', '').split('\n'):
            l = line.lstrip()
            if not l.startswith('SecRule '):
                continue
            toks, i = [], 0
            while i < len(l) and len(toks) < 2:
                if l[i] == '"':
                    j, buf = i + 1, ''
                    while j < len(l) and l[j] != '"':
                        if l[j] == '\\' and j + 1 < len(l) and l[j + 1] == '"':
                            buf += '\\"'
                            j += 2
                            continue
                        buf += l[j]
                        j += 1
                    toks.append(buf)
                    i = j + 1
                else:
                    i += 1
            op = [t for t in toks if t.startswith('@rx ') or t.startswith('!@rx ')]
            if op and '%{' not in op[0]:
                ops.append(op[0].lstrip('!'))
    return ops


SUBJECTS = ["1' or '1'='1", "1 union select 1,2,3 from users", "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>", "../../etc/passwd", ";cat /etc/passwd", "$(curl http://x)",
            "<?php system($_GET[1]); ?>", "java.lang.Runtime.getRuntime()",
            "Mozilla/5.0 (Windows NT 10.0)", "sqlmap/1.5", "application/json", "GET", "HTTP/1.1",
            "abc\\x0a", "\\x0a", "x", "0x41414141", "a=b&c=d", "eval(base64_decode('x'))",
            "__proto__[x]=1", "{{7*7}}", "http://1.2.3.4/x?y=http://evil", "/bin/bash -c id",
            "' having 1=1--", "<svg/onload=alert(1)>", "bytes=0-1,2-3", "multipart/form-data; boundary=x",
            "%u0041", "select\\x0afrom", "\\xc3\\xa9t\\xc3\\xa9", "\\xff\\xfe", "sleep(5)#",
            "1;DROP TABLE x", "onload=", "document.cookie", "cmd.exe /c dir", "powershell -enc",
            "${jndi:ldap://x/a}", "file:///etc/passwd"]


def rx_cases():
    lines = [f'{p}\t{s}' for p in rx_ops() for s in SUBJECTS]
    out = run(lines, 'utf-8')
    # every match, and the first 3 non-matches of each pattern (keeps the file small)
    misses = {}
    with open('rx_cases.tsv', 'w') as o:
        for l, r in zip(lines, out):
            p = l.split('\t')[0]
            if r.startswith('NOMATCH'):
                misses[p] = misses.get(p, 0) + 1
                if misses[p] > 3:
                    continue
            o.write(f'{l}\t{r}\n')


if __name__ == '__main__':
    pm_cases()
    rx_cases()
