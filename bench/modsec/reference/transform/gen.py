#!/usr/bin/env python3
"""Generates random inputs for every transformation (lines "<name> <hex>") from alphabets full
of the bytes each decoder cares about, for ref/diff.sh."""
import random
import sys

NAMES = """lowercase uppercase urlDecode urlDecodeUni htmlEntityDecode jsDecode cssDecode cmdLine
compressWhitespace removeWhitespace removeNulls replaceNulls replaceComments removeComments
removeCommentsChar normalizePath normalizePathWin base64Decode base64DecodeExt base64Encode
hexDecode hexEncode sqlHexDecode utf8toUnicode length trim trimLeft trimRight escapeSeqDecode
parityEven7bit parityOdd7bit parityZero7bit md5 sha1 urlEncode""".split()

COMMON = [b"%", b"u", b"U", b"0", b"f", b"F", b"4", b"1", b"a", b"x", b"X", b"\\", b"&", b"#",
          b";", b"/", b"*", b"-", b"<", b"!", b">", b".", b" ", b"\t", b"\n", b"\r", b"\x0b",
          b"\x00", b"\xa0", b"\xc3", b"\xa9", b"\xe2", b"\x82", b"\xac", b"\xf0", b"\x9f",
          b"\xff", b"+", b"=", b"9", b"Q", b"z", b"_", b"7", b"8", b"'", b"\"", b"^", b",",
          b"(", b"A", b"Z", b"g", b"n", b"t", b"?", b"\x80", b"\xc0", b"\xe0", b"\xf8", b"\xf5",
          b"\xed", b"\xbf"]
PLAIN = [bytes([c]) for c in b"abcXYZ019 /(.-*#\t"]
TOKENS = {
    "urlDecode": [b"%41", b"%4", b"%zz", b"%u0041", b"%uff01", b"%", b"%%", b"+"],
    "htmlEntityDecode": [b"&#", b"&#x", b"&amp", b"&lt;", b"&quot", b"&nbsp;", b"&gt", b"&foo;",
                         b"&#65", b"&#x41", b"&#X4a;", b"99999999999999999999", b"&AMP;"],
    "jsDecode": [b"\\u", b"\\x", b"\\0", b"\\4", b"\\377", b"\\777", b"\\uff41", b"\\n", b"\\"],
    "cssDecode": [b"\\", b"\\ff41", b"\\0000ff", b"\\00ff41", b"\\a ", b"\\\n", b"\\12345"],
    "base64": [b"QUJD", b"QQ==", b"QUI=", b"Zm9v", b"YmFy", b"\r\n", b"  ", b"=", b"-_"],
    "path": [b"/", b"./", b"../", b"..", b".", b"\\", b"a/", b"//", b"\\..\\"],
    "comments": [b"/*", b"*/", b"<!--", b"-->", b"--", b"#"],
    "sql": [b"0x", b"0X", b"0x41", b"0x4142", b"0x00", b"0xzz"],
    "utf8": [b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"\xc0\x80", b"\xed\xa0\x80",
             b"\xf5\x80\x80\x80", b"\xe0\x80\x80", b"\xf0\x80\x80\x80"],
}
FAMILY = {"urlDecode": "urlDecode", "urlDecodeUni": "urlDecode",
          "htmlEntityDecode": "htmlEntityDecode", "jsDecode": "jsDecode",
          "escapeSeqDecode": "jsDecode", "cssDecode": "cssDecode", "base64Decode": "base64",
          "base64DecodeExt": "base64", "normalizePath": "path", "normalizePathWin": "path",
          "replaceComments": "comments", "removeComments": "comments",
          "removeCommentsChar": "comments", "sqlHexDecode": "sql", "utf8toUnicode": "utf8"}


def main():
    seed, per = int(sys.argv[1]), int(sys.argv[2])
    maxn = int(sys.argv[3]) if len(sys.argv) > 3 else 14
    rnd = random.Random(seed)
    for name in NAMES:
        toks = TOKENS.get(FAMILY.get(name, ""), [])
        for _ in range(per):
            n = rnd.randint(0, maxn)
            parts = []
            # Mostly-plain inputs exercise the "unchanged" fast paths.
            plain = rnd.random() < 0.3
            for _ in range(n):
                if plain and rnd.random() < 0.9:
                    parts.append(rnd.choice(PLAIN))
                elif toks and rnd.random() < 0.4:
                    parts.append(rnd.choice(toks))
                elif rnd.random() < 0.1:
                    parts.append(bytes([rnd.randint(0, 255)]))
                else:
                    parts.append(rnd.choice(COMMON))
            print(name, b"".join(parts).hex())


main()
