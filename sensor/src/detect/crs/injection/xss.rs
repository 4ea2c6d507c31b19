//! libinjection 3.9.2's `libinjection_xss` (`libinjection_xss.c`) over the HTML5 tokenizer of
//! [`super::html5`]: attribute, tag and URL blacklists as libmodsecurity 3.0.9 has them.
//!
//! libinjection releases after 3.9.2 (and the `libinjectionrs` crate, which follows them)
//! replaced "any attribute of five or more bytes starting with `on`" by a fixed list of event
//! names, so `<x onxxx=1>` is XSS here (as for libmodsecurity 3.0.9) but not there.

use super::html5::{Html5Flags, Html5State, TokenType};

/// `libinjection_xss`: the input is tokenized as HTML5 from five starting states (data,
/// unquoted / single / double / back quoted attribute value) and is XSS if any pass meets a
/// dangerous token.
pub(super) fn detect(value: &[u8]) -> bool {
    // What makes a pass XSS is a doctype, tag or comment token, which only the tag-open state
    // emits (entered from the data state at a `<`), or an attribute value right after a
    // dangerous attribute name, which only the before-attribute-value state emits (entered at
    // a `=`; the value a quoted-value pass starts with follows no name). Without either byte
    // no pass can be XSS, and the five tokenizer runs are skipped.
    if memchr::memchr2(b'<', b'=', value).is_none() {
        return false;
    }
    tokenize_all(value)
}

/// The five passes, without the shortcut of [`detect`].
fn tokenize_all(value: &[u8]) -> bool {
    [
        Html5Flags::DataState,
        Html5Flags::ValueNoQuote,
        Html5Flags::ValueSingleQuote,
        Html5Flags::ValueDoubleQuote,
        Html5Flags::ValueBackQuote,
    ]
    .into_iter()
    .any(|flags| is_xss(value, flags))
}

/// What an attribute name says about its value (`attribute_t` of libinjection_xss.c).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attr {
    None,
    /// Always XSS once it has a value.
    Black,
    /// The value is a URL: XSS if it is a `javascript:`-like one.
    Url,
    /// Inline style: always XSS once it has a value.
    Style,
    /// The value names another attribute (SVG `attributeName`).
    Indirect,
}

/// 3.9.2 `BLACKATTR`: compared case-insensitively against the whole attribute name.
const BLACK_ATTRS: &[(&[u8], Attr)] = &[
    (b"ACTION", Attr::Url),
    (b"ATTRIBUTENAME", Attr::Indirect),
    (b"BY", Attr::Url),
    (b"BACKGROUND", Attr::Url),
    (b"DATAFORMATAS", Attr::Black),
    (b"DATASRC", Attr::Black),
    (b"DYNSRC", Attr::Url),
    (b"FILTER", Attr::Style),
    (b"FORMACTION", Attr::Url),
    (b"FOLDER", Attr::Url),
    (b"FROM", Attr::Url),
    (b"HANDLER", Attr::Url),
    (b"HREF", Attr::Url),
    (b"LOWSRC", Attr::Url),
    (b"POSTER", Attr::Url),
    (b"SRC", Attr::Url),
    (b"STYLE", Attr::Style),
    (b"TO", Attr::Url),
    (b"VALUES", Attr::Url),
    (b"XLINK:HREF", Attr::Url),
];

/// 3.9.2 `BLACKTAG`: tag names that are XSS on their own.
const BLACK_TAGS: &[&[u8]] = &[
    b"APPLET",
    b"BASE",
    b"COMMENT",
    b"EMBED",
    b"FRAME",
    b"FRAMESET",
    b"HANDLER",
    b"IFRAME",
    b"IMPORT",
    b"ISINDEX",
    b"LINK",
    b"LISTENER",
    b"META",
    b"NOSCRIPT",
    b"OBJECT",
    b"SCRIPT",
    b"STYLE",
    b"VMLFRAME",
    b"XML",
    b"XSS",
];

/// `libinjection_is_xss` for one starting state.
fn is_xss(s: &[u8], flags: Html5Flags) -> bool {
    let mut h5 = Html5State::new(s, flags);
    let mut attr = Attr::None;
    while h5.next() {
        // `token_start` runs to the end of the input: C may peek past the token (see
        // `html_decode_char_at`), so keep both views.
        let rest = h5.token_start;
        let tok = rest.get(..h5.token_len).unwrap_or(rest);
        if h5.token_type != TokenType::AttrValue {
            attr = Attr::None;
        }
        match h5.token_type {
            TokenType::Doctype => return true,
            TokenType::TagNameOpen if is_black_tag(tok) => return true,
            TokenType::AttrName => attr = is_black_attr(tok),
            TokenType::AttrValue => {
                match attr {
                    Attr::None => {}
                    Attr::Black | Attr::Style => return true,
                    Attr::Url if is_black_url(rest, tok.len()) => return true,
                    Attr::Url => {}
                    Attr::Indirect if is_black_attr(tok) != Attr::None => return true,
                    Attr::Indirect => {}
                }
                attr = Attr::None;
            }
            TokenType::TagComment if is_black_comment(tok) => return true,
            _ => {}
        }
    }
    false
}

/// The `TAG_COMMENT` checks: IE's backquote tag end, conditional comments, `<?xml`,
/// `<?import` and `<!ENTITY`.
fn is_black_comment(tok: &[u8]) -> bool {
    if tok.contains(&b'`') {
        return true;
    }
    if tok.len() > 3 {
        let head = [
            tok[0],
            tok[1].to_ascii_uppercase(),
            tok[2].to_ascii_uppercase(),
        ];
        if head == *b"[IF" || tok[..3].eq_ignore_ascii_case(b"XML") {
            return true;
        }
    }
    tok.len() > 5
        && (cstrcasecmp_with_null(b"IMPORT", &tok[..6])
            || cstrcasecmp_with_null(b"ENTITY", &tok[..6]))
}

/// libinjection's `cstrcasecmp_with_null(a, b, n) == 0`: `b` (`n` bytes, NULs skipped,
/// lowercase folded to upper) spells exactly the uppercase `a`.
fn cstrcasecmp_with_null(a: &[u8], b: &[u8]) -> bool {
    let mut a = a.iter();
    for &cb in b {
        if cb == 0 {
            continue;
        }
        if a.next() != Some(&cb.to_ascii_uppercase()) {
            return false;
        }
    }
    a.next().is_none()
}

/// `is_black_tag`: listed tags, and anything starting `svg` or `xsl`.
fn is_black_tag(s: &[u8]) -> bool {
    if s.len() < 3 {
        return false;
    }
    BLACK_TAGS.iter().any(|t| cstrcasecmp_with_null(t, s))
        || s[..3].eq_ignore_ascii_case(b"svg")
        || s[..3].eq_ignore_ascii_case(b"xsl")
}

/// 3.9.2 `is_black_attr`: `on*` names of five or more bytes, `xmlns*` / `xlink*`, or the
/// [`BLACK_ATTRS`] table.
fn is_black_attr(s: &[u8]) -> Attr {
    if s.len() < 2 {
        return Attr::None;
    }
    if s.len() >= 5 {
        if s[..2].eq_ignore_ascii_case(b"on") {
            return Attr::Black;
        }
        if cstrcasecmp_with_null(b"XMLNS", &s[..5]) || cstrcasecmp_with_null(b"XLINK", &s[..5]) {
            return Attr::Black;
        }
    }
    BLACK_ATTRS
        .iter()
        .find(|(name, _)| cstrcasecmp_with_null(name, s))
        .map_or(Attr::None, |&(_, t)| t)
}

/// `is_black_url`: after leading bytes <= 32 or >= 127, does the HTML-decoded value start
/// with `DATA`, `VIEW-SOURCE`, `JAVA` or `VBSCRIPT`? `rest` is the input from the token
/// start, `len` the token length.
fn is_black_url(rest: &[u8], len: usize) -> bool {
    let skip = rest[..len]
        .iter()
        .take_while(|&&c| c <= 32 || c >= 127)
        .count();
    let (rest, len) = (&rest[skip..], len - skip);
    [&b"DATA"[..], b"VIEW-SOURCE", b"JAVA", b"VBSCRIPT"]
        .iter()
        .any(|p| htmlencode_startswith(p, rest, len))
}

/// `htmlencode_startswith`: does the HTML-entity-decoded `rest[..n]` start with the
/// uppercase `prefix`, ignoring leading bytes <= 32, and NUL and LF anywhere?
fn htmlencode_startswith(prefix: &[u8], rest: &[u8], mut n: usize) -> bool {
    let mut a = prefix.iter().peekable();
    let mut pos = 0;
    let mut first = true;
    while n > 0 {
        let Some(&&want) = a.peek() else {
            return true;
        };
        let (cb, consumed) = html_decode_char_at(&rest[pos..], n);
        pos += consumed;
        n -= consumed;
        if first && cb <= 32 {
            continue;
        }
        first = false;
        if cb == 0 || cb == 10 {
            continue;
        }
        let cb = if (i32::from(b'a')..=i32::from(b'z')).contains(&cb) {
            cb - 0x20
        } else {
            cb
        };
        // C compares `*a != (char) cb`: only the low byte of the decoded value counts.
        if want != (cb & 0xff) as u8 {
            return false;
        }
        a.next();
    }
    a.peek().is_none()
}

/// `html_decode_char_at`: decodes one byte or one `&#NNN;` / `&#xHH;` entity at the start of
/// `src` (token length `len`), returning (value, bytes consumed). Like C, it reads bytes 2
/// and 3 even past the token end (there: the rest of the input, then C's terminating NUL).
fn html_decode_char_at(src: &[u8], len: usize) -> (i32, usize) {
    let at = |i: usize| src.get(i).copied().unwrap_or(0);
    if len == 0 {
        return (-1, 0);
    }
    if at(0) != b'&' || len < 2 {
        return (i32::from(at(0)), 1);
    }
    if at(1) != b'#' {
        return (i32::from(b'&'), 1);
    }
    let (radix, start) = if at(2) == b'x' || at(2) == b'X' {
        (16, 3)
    } else {
        (10, 2)
    };
    let Some(mut val) = char::from(at(start)).to_digit(radix) else {
        return (i32::from(b'&'), 1);
    };
    let mut i = start + 1;
    while i < len {
        let ch = at(i);
        if ch == b';' {
            return (val as i32, i + 1);
        }
        let Some(d) = char::from(ch).to_digit(radix) else {
            return (val as i32, i);
        };
        val = val * radix + d;
        if val > 0x0010_00FF {
            return (i32::from(b'&'), 1);
        }
        i += 1;
    }
    (val as i32, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Attribute rules probed against libmodsecurity 3.0.9's libinjection_xss.
    #[test]
    fn attribute_classes_of_3_9_2() {
        assert!(is_black_attr(b"onxxx") == Attr::Black);
        assert!(is_black_attr(b"onxx") == Attr::None);
        assert!(is_black_attr(b"XLinkY") == Attr::Black);
        assert!(is_black_attr(b"href") == Attr::Url);
        assert!(is_black_attr(b"sTyLe") == Attr::Style);
        assert!(is_black_attr(b"attributename") == Attr::Indirect);
    }

    #[test]
    fn urls_and_entities() {
        let url = |v: &[u8]| is_black_url(v, v.len());
        assert!(url(b" java"));
        assert!(url(b"&#106;avascript:"));
        assert!(url(b"d\x00ata:"));
        assert!(!url(b"&#x6a"));
        assert!(!url(b"http://x"));
        assert_eq!(html_decode_char_at(b"&#x41;", 6), (0x41, 6));
        assert_eq!(html_decode_char_at(b"&#65x", 5), (65, 4));
        assert_eq!(html_decode_char_at(b"&amp;", 5), (i32::from(b'&'), 1));
    }

    #[test]
    fn tags_and_comments() {
        assert!(is_black_tag(b"ScRiPt"));
        assert!(is_black_tag(b"svgfoo"));
        assert!(!is_black_tag(b"marquee"));
        assert!(is_black_comment(b"[if IE]"));
        assert!(is_black_comment(b"a`b"));
        assert!(!is_black_comment(b" x "));
    }

    /// The shortcut of `detect` never changes a verdict: every sequence of up to four pieces
    /// that tokenize into attribute names, values, quotes, tag ends, comments' first bytes (all
    /// but `<` and `=`) is not XSS for the full tokenizer.
    #[test]
    fn no_xss_without_a_tag_or_an_attribute_value() {
        let pieces: &[&[u8]] = &[
            b"onerror",
            b"style",
            b"src",
            b"href",
            b"attributename",
            b"javascript:alert(1)",
            b" ",
            b"\0",
            b"/",
            b">",
            b"'",
            b"\"",
            b"`",
            b"!",
            b"?",
            b"-",
            b"x",
        ];
        let mut inputs: Vec<Vec<u8>> = vec![Vec::new()];
        let mut frontier = inputs.clone();
        for _ in 0..4 {
            let mut next = Vec::new();
            for f in &frontier {
                for p in pieces {
                    let mut v = f.clone();
                    v.extend_from_slice(p);
                    next.push(v);
                }
            }
            inputs.extend(next.iter().cloned());
            frontier = next;
        }
        for v in &inputs {
            assert!(!tokenize_all(v), "{:?}", String::from_utf8_lossy(v));
        }
        // and with `=` or `<` the full tokenizer runs
        assert!(detect(b"x onerror=alert(1)"));
        assert!(detect(b"<script>"));
    }
}
