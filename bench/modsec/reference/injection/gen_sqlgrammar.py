#!/usr/bin/env python3
"""Random SQL-ish token sequences (keywords from the crate table dump /tmp/tbl_rs.tsv,
operators, strings, numbers, comments, variables) for the SQLi differential: stresses the
tokenizer and folding far more than natural text. Usage: gen_sqlgrammar.py OUT N SEED"""
import random, struct, sys
rng = random.Random(int(sys.argv[3]))
words = [l.split("\t")[0] for l in open("/tmp/tbl_rs.tsv") if not l.endswith("\tF\n")]
atoms = ["'", '"', "`", "1", "0x1F", "0b01", "1.5e3", ".5", "1e", "x'4f'", "b'01'", "N'a'",
         "q'[a]'", "$$a$$", "$a$b$a$", "@a", "@@version", "@`a`", "-- x", "#x", "/* c */",
         "/*! 1 */", "--", "/*", "*/", "(", ")", ",", ";", ":", ".", "{", "}", "\\", "\\N",
         "'abc'", '"abc"', "abc", "user", "into", "outfile", "not", "in", "like", "$1", "e'x'",
         "u&'x'", "[x]", "?", "~", "!", "||", "&&", "=", "<>", "<=>", ":=", "\xa0", "\t", "\n"]
with open(sys.argv[1], "wb") as f, open(sys.argv[1] + ".tags", "w") as t:
    for _ in range(int(sys.argv[2])):
        toks = []
        for _ in range(rng.randint(1, 9)):
            w = rng.choice(words) if rng.random() < 0.45 else rng.choice(atoms)
            if rng.random() < 0.3:
                w = w.lower()
            toks.append(w)
        sep = rng.choice([" ", "", "/**/", "  "])
        b = sep.join(toks).encode("latin-1", "replace")
        f.write(struct.pack("<I", len(b)) + b)
        t.write("grammar\n")
