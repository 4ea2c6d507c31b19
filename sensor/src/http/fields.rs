//! Splitting a request into named fields: query/form pairs, JSON strings, multipart parts.
//!
//! Everything here borrows from the request and tolerates truncated input (a body prefix may end
//! in the middle of a JSON string or a multipart part): it extracts what is there.

use std::borrow::Cow;

/// How a body prefix is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    Empty,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// JSON (`application/json`, `*+json`).
    Json,
    /// XML (`*/xml`, `*+xml`).
    Xml,
    /// `multipart/form-data`.
    Multipart,
    /// Anything else (text, binary, unknown).
    Other,
}

/// A classified body prefix.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    /// The encoding.
    pub kind: BodyKind,
    /// The raw prefix.
    pub bytes: &'a [u8],
    boundary: Option<&'a str>,
}

impl<'a> Body<'a> {
    /// Classify `bytes` by `content_type`; without one, sniff the first byte.
    pub fn classify(content_type: Option<&'a str>, bytes: &'a [u8]) -> Body<'a> {
        let mut body = Body {
            kind: BodyKind::Other,
            bytes,
            boundary: None,
        };
        if bytes.is_empty() {
            body.kind = BodyKind::Empty;
            return body;
        }
        let ct = content_type.unwrap_or("");
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        body.kind = if essence == "application/x-www-form-urlencoded" {
            BodyKind::Form
        } else if essence.ends_with("/json") || essence.ends_with("+json") {
            BodyKind::Json
        } else if essence.ends_with("/xml") || essence.ends_with("+xml") {
            BodyKind::Xml
        } else if essence.starts_with("multipart/") {
            body.boundary = boundary(ct);
            if body.boundary.is_some() {
                BodyKind::Multipart
            } else {
                BodyKind::Other
            }
        } else {
            sniff(bytes)
        };
        body
    }

    /// A window of a body whose encoding was decided on its first bytes: not sniffed again
    /// (a later window of a JSON body need not start with `{`).
    pub fn with_kind(kind: BodyKind, content_type: Option<&'a str>, bytes: &'a [u8]) -> Body<'a> {
        let boundary = match kind {
            BodyKind::Multipart => content_type.and_then(boundary),
            _ => None,
        };
        let kind = match kind {
            _ if bytes.is_empty() => BodyKind::Empty,
            BodyKind::Multipart if boundary.is_none() => BodyKind::Other,
            k => k,
        };
        Body {
            kind,
            bytes,
            boundary,
        }
    }

    /// Call `f(name, value, form_encoded)` for every field of the body. Form bodies give their
    /// pairs (raw, `form_encoded` = true), JSON every string (keys with name `""`, values named
    /// by their key, escapes decoded), multipart every part (and its file name), XML and other
    /// bodies one field with an empty name holding the whole prefix.
    pub fn for_each_field(&self, mut f: impl FnMut(&str, &[u8], bool)) {
        self.fields_dyn(&mut f);
    }

    fn fields_dyn(&self, f: &mut dyn FnMut(&str, &[u8], bool)) {
        match self.kind {
            BodyKind::Empty => {}
            BodyKind::Form => {
                for (name, value) in form_pairs(self.bytes) {
                    f(&String::from_utf8_lossy(name), value, true);
                }
            }
            BodyKind::Json => json_strings(self.bytes, |key, value| match key {
                None => f("", value, false),
                Some(k) => f(k, value, false),
            }),
            BodyKind::Multipart => {
                let boundary = self.boundary.unwrap_or("");
                multipart_parts(self.bytes, boundary, |name, filename, content| {
                    if let Some(fname) = filename {
                        f(name, fname.as_bytes(), false);
                    }
                    let inner = Body::classify(None, content);
                    match inner.kind {
                        BodyKind::Json | BodyKind::Form => {
                            inner.fields_dyn(&mut |_, v, enc| f(name, v, enc))
                        }
                        _ => f(name, content, false),
                    }
                });
            }
            BodyKind::Xml | BodyKind::Other => f("", self.bytes, false),
        }
    }
}

fn sniff(bytes: &[u8]) -> BodyKind {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'{') | Some(b'[') => BodyKind::Json,
        Some(b'<') => BodyKind::Xml,
        _ => {
            // name=value&... with printable bytes only.
            let looks_form = memchr::memchr(b'=', bytes).is_some()
                && bytes.iter().all(|&b| b > 0x20 && b < 0x7f);
            if looks_form {
                BodyKind::Form
            } else {
                BodyKind::Other
            }
        }
    }
}

fn boundary(ct: &str) -> Option<&str> {
    for param in ct.split(';').skip(1) {
        let param = param.trim();
        let Some((k, v)) = param.split_once('=') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("boundary") {
            let v = v.trim().trim_matches('"');
            if !v.is_empty() && v.len() <= 200 {
                return Some(v);
            }
        }
    }
    None
}

/// Split `name=value&name=value` (also `;` separated) into raw pairs. A piece without `=` is a
/// value with an empty name.
pub fn form_pairs(s: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    s.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match memchr::memchr(b'=', p) {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (&b""[..], p),
        })
}

/// Call `f(key, string)` for every JSON string in `buf`: object keys with `key` = None, other
/// strings with the latest key. Escapes are decoded. Tolerates truncated and invalid JSON.
pub(crate) fn json_strings(buf: &[u8], mut f: impl FnMut(Option<&str>, &[u8])) {
    let mut key: Cow<'_, str> = Cow::Borrowed("");
    let mut pos = 0;
    while let Some(rel) = memchr::memchr(b'"', &buf[pos..]) {
        let start = pos + rel + 1;
        let (s, end) = json_string(buf, start);
        pos = end;
        let mut after = end;
        while after < buf.len() && buf[after].is_ascii_whitespace() {
            after += 1;
        }
        if buf.get(after) == Some(&b':') {
            f(None, &s);
            key = Cow::Owned(String::from_utf8_lossy(&s).into_owned());
        } else {
            f(Some(&key), &s);
        }
    }
}

/// Decode the JSON string starting after its opening quote at `start`; returns the content and
/// the offset after the closing quote (or the end of the buffer).
fn json_string(buf: &[u8], start: usize) -> (Cow<'_, [u8]>, usize) {
    let mut i = start;
    // Fast path: no escapes.
    while i < buf.len() {
        match buf[i] {
            b'"' => return (Cow::Borrowed(&buf[start..i]), i + 1),
            b'\\' => break,
            _ => i += 1,
        }
    }
    if i >= buf.len() {
        return (Cow::Borrowed(&buf[start..]), buf.len());
    }
    let mut out = buf[start..i].to_vec();
    while i < buf.len() {
        match buf[i] {
            b'"' => return (Cow::Owned(out), i + 1),
            b'\\' => {
                let Some(&e) = buf.get(i + 1) else {
                    out.push(b'\\');
                    return (Cow::Owned(out), buf.len());
                };
                i += 2;
                match e {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'b' => out.push(0x08),
                    b'f' => out.push(0x0c),
                    b'u' => {
                        let cp = buf.get(i..i + 4).and_then(hex4);
                        match cp {
                            Some(mut cp) => {
                                i += 4;
                                if (0xD800..0xDC00).contains(&cp)
                                    && buf.get(i) == Some(&b'\\')
                                    && buf.get(i + 1) == Some(&b'u')
                                    && let Some(lo) = buf.get(i + 2..i + 6).and_then(hex4)
                                    && (0xDC00..0xE000).contains(&lo)
                                {
                                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                                    i += 6;
                                }
                                let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
                                let mut tmp = [0u8; 4];
                                out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                            }
                            None => out.extend_from_slice(b"\\u"),
                        }
                    }
                    other => out.push(other),
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    (Cow::Owned(out), buf.len())
}

/// The value of one ASCII hex digit.
pub(crate) fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

pub(crate) fn hex4(h: &[u8]) -> Option<u32> {
    if h.len() != 4 {
        return None;
    }
    h.iter().try_fold(0u32, |acc, &b| {
        hex_digit(b).map(|d| acc * 16 + u32::from(d))
    })
}

/// Call `f(name, filename, content)` for every part of a multipart body.
fn multipart_parts(buf: &[u8], boundary: &str, mut f: impl FnMut(&str, Option<&str>, &[u8])) {
    let delim = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delim.as_bytes());
    let mut starts: Vec<usize> = finder.find_iter(buf).collect();
    starts.push(buf.len());
    for w in starts.windows(2) {
        let part = &buf[w[0] + delim.len()..w[1]];
        if part.starts_with(b"--") {
            break;
        }
        let part = part
            .strip_prefix(b"\r\n")
            .or(part.strip_prefix(b"\n"))
            .unwrap_or(part);
        let (head, content) = match memchr::memmem::find(part, b"\r\n\r\n") {
            Some(i) => (&part[..i], &part[i + 4..]),
            None => match memchr::memmem::find(part, b"\n\n") {
                Some(i) => (&part[..i], &part[i + 2..]),
                None => (part, &b""[..]),
            },
        };
        let content = content
            .strip_suffix(b"\r\n")
            .or(content.strip_suffix(b"\n"))
            .unwrap_or(content);
        let head = String::from_utf8_lossy(head);
        let mut name = String::new();
        let mut filename = None;
        for line in head.lines() {
            let Some((hname, hval)) = line.split_once(':') else {
                continue;
            };
            if !hname.trim().eq_ignore_ascii_case("content-disposition") {
                continue;
            }
            for param in hval.split(';').skip(1) {
                if let Some((k, v)) = param.split_once('=') {
                    let v = v.trim().trim_matches('"');
                    match k.trim().to_ascii_lowercase().as_str() {
                        "name" => name = v.to_owned(),
                        "filename" => filename = Some(v.to_owned()),
                        _ => {}
                    }
                }
            }
        }
        f(&name, filename.as_deref(), content);
    }
}

/// Splits a body that arrives in pieces into windows for inspection without holding the whole
/// body. A field that is not finished at the end of a window is carried over to the next one,
/// so that it is seen whole: form bodies are cut at the last `&`, JSON outside a string (the
/// tokenizer's string and escape state decides where strings start; the last object key is
/// repeated in front of the next window so its values keep their name), multipart bodies at
/// the last part delimiter. A field longer than the carry bound, and any other body, is cut
/// where the window is full and its last [`BodyStream::overlap`] bytes are seen again at the
/// start of the next window (inside a JSON string or a multipart part, behind a synthetic
/// opening quote or the part's headers, so the tail is still read as what it is).
#[derive(Debug)]
pub struct BodyStream {
    content_type: Option<String>,
    /// Decided on the first window.
    kind: Option<BodyKind>,
    buf: Vec<u8>,
    /// Bytes at the start of `buf` that are synthetic (a key or quote put in front).
    prefix_len: usize,
    window: usize,
    /// Body bytes pushed so far.
    pushed: u64,
}

/// Where a window is cut.
struct Cut {
    /// The window is `buf[..end]`.
    end: usize,
    /// The next window starts with `prefix` then `buf[carry..]`.
    carry: usize,
    prefix: Vec<u8>,
}

/// Longest object key (raw) or multipart part head repeated in front of a window.
const MAX_REPEATED: usize = 512;

impl BodyStream {
    /// A stream of windows of `window` bytes (at least 1024) for a body of this content type.
    pub fn new(content_type: Option<&str>, window: usize) -> BodyStream {
        BodyStream {
            content_type: content_type.map(str::to_owned),
            kind: None,
            // Grown as bytes come: a small body never costs a whole window.
            buf: Vec::new(),
            prefix_len: 0,
            window: window.max(1024),
            pushed: 0,
        }
    }

    /// Most bytes this stream holds at once (what a flow reserves for it).
    pub fn capacity(&self) -> usize {
        self.window
    }

    /// A field longer than this is not carried over whole.
    pub fn max_carry(&self) -> usize {
        self.window / 2
    }

    /// Bytes of a window seen again at the start of the next when no field boundary is near.
    pub fn overlap(&self) -> usize {
        (self.window / 8).min(512)
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.buf.len()
    }

    /// Room left in the current window.
    pub fn room(&self) -> usize {
        self.window.saturating_sub(self.buf.len())
    }

    /// Append body bytes (at most [`BodyStream::room`]).
    pub fn push(&mut self, data: &[u8]) {
        let data = &data[..data.len().min(self.room())];
        self.buf.extend_from_slice(data);
        self.pushed += data.len() as u64;
    }

    /// The body's encoding (decided on the first window taken).
    pub fn kind(&mut self) -> BodyKind {
        match self.kind {
            Some(k) => k,
            None => {
                let k = Body::classify(self.content_type.as_deref(), &self.buf).kind;
                // Blank first bytes say nothing about a body without a content type.
                let telling = self.content_type.is_some()
                    || self.buf.iter().any(|b| !b.is_ascii_whitespace());
                if k != BodyKind::Empty && telling {
                    self.kind = Some(k);
                }
                k
            }
        }
    }

    /// Take the next window: `(bytes, offset in the body, kind)`. With `last`, everything held
    /// (the body ended, or bytes were lost and what follows cannot join it); otherwise the
    /// window ends at a field boundary and the unfinished field stays for the next window.
    pub fn take(&mut self, last: bool) -> Option<(Vec<u8>, u64, BodyKind)> {
        if self.buf.len() <= self.prefix_len {
            if last {
                self.buf.clear();
                self.prefix_len = 0;
            }
            return None;
        }
        let kind = self.kind();
        let offset = self
            .pushed
            .saturating_sub((self.buf.len() - self.prefix_len) as u64);
        if last {
            let window = std::mem::take(&mut self.buf);
            self.prefix_len = 0;
            return Some((window, offset, kind));
        }
        let mut cut = self.cut(kind);
        let len = self.buf.len();
        if self.room() == 0 && cut.prefix.len() + (len - cut.carry) >= len {
            // A full window must make room: fall back to the plain overlap.
            cut = Cut {
                end: len,
                carry: len.saturating_sub(self.overlap()).max(self.prefix_len),
                prefix: Vec::new(),
            };
        }
        let mut next = Vec::with_capacity(cut.prefix.len() + len - cut.carry);
        next.extend_from_slice(&cut.prefix);
        next.extend_from_slice(&self.buf[cut.carry..]);
        self.prefix_len = cut.prefix.len();
        let mut window = std::mem::replace(&mut self.buf, next);
        window.truncate(cut.end);
        Some((window, offset, kind))
    }

    fn cut(&self, kind: BodyKind) -> Cut {
        let buf = &self.buf;
        let len = buf.len();
        let plain = Cut {
            end: len,
            carry: len.saturating_sub(self.overlap()).max(self.prefix_len),
            prefix: Vec::new(),
        };
        match kind {
            BodyKind::Form => {
                let pair = memchr::memrchr(b'&', buf).map_or(0, |i| i + 1);
                if len - pair <= self.max_carry() {
                    return Cut {
                        end: pair.saturating_sub(1),
                        carry: pair,
                        prefix: Vec::new(),
                    };
                }
                // One long value: see its tail again, under its name.
                let mut prefix = Vec::new();
                if let Some(eq) = memchr::memchr(b'=', &buf[pair..])
                    && eq < MAX_REPEATED
                {
                    prefix.extend_from_slice(&buf[pair..pair + eq + 1]);
                }
                Cut { prefix, ..plain }
            }
            BodyKind::Json => self.json_cut(),
            BodyKind::Multipart => self.multipart_cut(plain),
            _ => plain,
        }
    }

    fn json_cut(&self) -> Cut {
        let buf = &self.buf;
        let len = buf.len();
        let mut i = 0;
        // Opening quote of the string we are in.
        let mut in_string: Option<usize> = None;
        // The last string closed, while only whitespace followed it.
        let mut last_string: Option<(usize, usize)> = None;
        // The last object key (raw, with its quotes).
        let mut key: Option<(usize, usize)> = None;
        while i < len {
            match in_string {
                Some(start) => match memchr::memchr2(b'"', b'\\', &buf[i..]) {
                    None => i = len,
                    Some(rel) if buf[i + rel] == b'\\' => i += rel + 2,
                    Some(rel) => {
                        i += rel + 1;
                        in_string = None;
                        last_string = Some((start, i));
                    }
                },
                None => {
                    match buf[i] {
                        b'"' => in_string = Some(i),
                        b':' => {
                            key = last_string.or(key);
                            last_string = None;
                        }
                        b if b.is_ascii_whitespace() => {}
                        _ => last_string = None,
                    }
                    i += 1;
                }
            }
        }
        let key_prefix = |before: usize| -> Vec<u8> {
            match key {
                Some((s, e)) if e <= before && e - s <= MAX_REPEATED => {
                    let mut p = buf[s..e].to_vec();
                    p.push(b':');
                    p
                }
                _ => Vec::new(),
            }
        };
        // The unfinished string, or a finished one whose role (key or value) the next bytes
        // tell, goes to the next window whole if it is short enough.
        let open = in_string.or(last_string.map(|(s, _)| s));
        if let Some(start) = open
            && len - start <= self.max_carry()
        {
            return Cut {
                end: start,
                carry: start,
                prefix: key_prefix(start),
            };
        }
        match in_string {
            Some(start) => {
                // A long string: its tail is seen again, still as a string, from an escape
                // boundary (a `\u` sequence is never split).
                let from = start + 1;
                let want = len.saturating_sub(self.overlap()).max(from);
                let carry = escape_boundary(buf, from, want);
                let mut prefix = key_prefix(start);
                prefix.push(b'"');
                Cut {
                    end: len,
                    carry,
                    prefix,
                }
            }
            None => Cut {
                end: len,
                carry: len,
                prefix: key_prefix(len),
            },
        }
    }

    fn multipart_cut(&self, plain: Cut) -> Cut {
        let buf = &self.buf;
        let len = buf.len();
        let Some(boundary) = self.content_type.as_deref().and_then(boundary) else {
            return plain;
        };
        let delim = format!("--{boundary}");
        let Some(part) = memchr::memmem::rfind(buf, delim.as_bytes()) else {
            return plain;
        };
        if len - part <= self.max_carry() {
            return Cut {
                end: part,
                carry: part,
                prefix: Vec::new(),
            };
        }
        // A long part: its tail is seen again behind the part's own headers.
        let head_end = memchr::memmem::find(&buf[part..], b"\r\n\r\n")
            .map(|i| part + i + 4)
            .or_else(|| memchr::memmem::find(&buf[part..], b"\n\n").map(|i| part + i + 2));
        match head_end {
            Some(h) if h - part <= MAX_REPEATED && h <= plain.carry => Cut {
                prefix: buf[part..h].to_vec(),
                ..plain
            },
            _ => plain,
        }
    }
}

/// The start of the JSON string token (character or escape sequence) that covers `want`,
/// walking from `from` (inside the string).
fn escape_boundary(buf: &[u8], from: usize, want: usize) -> usize {
    let mut i = from;
    while i < want {
        let step = match buf.get(i) {
            Some(b'\\') if buf.get(i + 1) == Some(&b'u') => 6,
            Some(b'\\') => 2,
            _ => 1,
        };
        if i + step > want {
            break;
        }
        i += step;
    }
    i.min(buf.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(ct: Option<&str>, body: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        Body::classify(ct, body).for_each_field(|n, v, _| {
            out.push((n.to_owned(), String::from_utf8_lossy(v).into_owned()))
        });
        out
    }

    #[test]
    fn form_pairs_split() {
        let f = fields(
            Some("application/x-www-form-urlencoded"),
            b"a=1&b=x%20y&flag",
        );
        assert_eq!(
            f,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x%20y".into()),
                ("".into(), "flag".into())
            ]
        );
    }

    #[test]
    fn json_strings_with_keys_and_escapes() {
        let f = fields(
            Some("application/json"),
            br#"{"user":"O\u0027Brien","tags":["a\"b"],"n":1,"x":{"y":"z"}}"#,
        );
        assert_eq!(
            f,
            vec![
                ("".into(), "user".into()),
                ("user".into(), "O'Brien".into()),
                ("".into(), "tags".into()),
                ("tags".into(), "a\"b".into()),
                ("".into(), "n".into()),
                ("".into(), "x".into()),
                ("".into(), "y".into()),
                ("y".into(), "z".into()),
            ]
        );
    }

    #[test]
    fn json_truncated_keeps_prefix() {
        let f = fields(None, br#"{"q":"1' union sel"#);
        assert_eq!(f.last(), Some(&("q".to_owned(), "1' union sel".to_owned())));
    }

    #[test]
    fn json_surrogate_pair() {
        let f = fields(None, br#"["\ud83d\ude00"]"#);
        assert_eq!(f, vec![("".into(), "\u{1F600}".into())]);
    }

    #[test]
    fn multipart_parts_and_filenames() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"up\"; filename=\"shell.php\"\r\nContent-Type: application/octet-stream\r\n\r\n<?php system($_GET[1]); ?>\r\n--XyZ--\r\n";
        let f = fields(Some("multipart/form-data; boundary=XyZ"), body);
        assert_eq!(
            f,
            vec![
                ("title".into(), "hello".into()),
                ("up".into(), "shell.php".into()),
                ("up".into(), "<?php system($_GET[1]); ?>".into()),
            ]
        );
    }

    #[test]
    fn multipart_without_boundary_is_other() {
        let b = Body::classify(Some("multipart/form-data"), b"abc");
        assert_eq!(b.kind, BodyKind::Other);
    }

    /// Push `body` in pieces of `step` and collect every window taken.
    fn windows(ct: &str, body: &[u8], window: usize, step: usize) -> Vec<Vec<u8>> {
        let mut s = BodyStream::new(Some(ct), window);
        let mut out = Vec::new();
        for piece in body.chunks(step) {
            let mut piece = piece;
            while !piece.is_empty() {
                let n = s.room().min(piece.len());
                s.push(&piece[..n]);
                piece = &piece[n..];
                assert!(s.held() <= s.capacity());
                if s.room() == 0 {
                    out.extend(s.take(false).map(|w| w.0));
                }
            }
        }
        out.extend(s.take(true).map(|w| w.0));
        out
    }

    fn all_fields(ct: &str, windows: &[Vec<u8>]) -> Vec<(String, String)> {
        let kind = Body::classify(Some(ct), &windows[0]).kind;
        let mut out = Vec::new();
        for w in windows {
            Body::with_kind(kind, Some(ct), w).for_each_field(|n, v, _| {
                out.push((n.to_owned(), String::from_utf8_lossy(v).into_owned()))
            });
        }
        out
    }

    #[test]
    fn form_windows_are_cut_at_pairs() {
        let body: Vec<u8> = (0..400)
            .map(|i| format!("field{i}=value-{i}&"))
            .collect::<String>()
            .into_bytes();
        let ct = "application/x-www-form-urlencoded";
        let w = windows(ct, &body, 1024, 333);
        assert!(w.len() > 4);
        let fields = all_fields(ct, &w);
        // Every pair seen whole, exactly once.
        assert_eq!(fields.len(), 400);
        for (i, (n, v)) in fields.iter().enumerate() {
            assert_eq!(
                (n.as_str(), v.as_str()),
                (&*format!("field{i}"), &*format!("value-{i}"))
            );
        }
    }

    #[test]
    fn json_windows_keep_strings_escapes_and_keys() {
        let mut body = b"{".to_vec();
        for i in 0..300 {
            body.extend_from_slice(format!("\"k{i}\": \"v\\\"{i}\\u0041\\\\\",").as_bytes());
        }
        body.extend_from_slice(b"\"end\":1}");
        let ct = "application/json";
        for step in [1, 100, 1000] {
            let w = windows(ct, &body, 1024, step);
            let fields = all_fields(ct, &w);
            for i in 0..300 {
                let want = (format!("k{i}"), format!("v\"{i}A\\"));
                assert!(fields.contains(&want), "step {step}: {want:?}");
            }
            // No value is seen cut in half (no partial escape, no string split).
            assert!(
                fields
                    .iter()
                    .all(|(n, v)| n.is_empty() || v.ends_with("A\\")),
                "step {step}"
            );
        }
    }

    #[test]
    fn a_long_json_string_goes_on_as_a_string() {
        let mut body = b"{\"q\":\"".to_vec();
        body.resize(3000, b'a');
        body.extend_from_slice(b"\\u0027 union select 1--\"}");
        let w = windows("application/json", &body, 1024, 4096);
        // The window after the cut starts with the key and a quote: still the string of `q`.
        assert!(
            w[1].starts_with(b"\"q\":\""),
            "{:?}",
            String::from_utf8_lossy(&w[1][..8])
        );
        let fields = all_fields("application/json", &w);
        assert!(
            fields
                .iter()
                .any(|(n, v)| n == "q" && v.ends_with("' union select 1--"))
        );
    }

    #[test]
    fn multipart_windows_are_cut_at_parts_and_long_parts_keep_their_headers() {
        let ct = "multipart/form-data; boundary=XyZ";
        let mut body = Vec::new();
        for i in 0..30 {
            body.extend_from_slice(
                format!(
                    "--XyZ\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nvalue {i}\r\n"
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"big\"\r\n\r\n");
        body.resize(body.len() + 3000, b'b');
        body.extend_from_slice(b"<?php system($_GET[1]); ?>\r\n--XyZ--\r\n");
        let w = windows(ct, &body, 1024, 500);
        let fields = all_fields(ct, &w);
        for i in 0..30 {
            assert!(
                fields.contains(&(format!("f{i}"), format!("value {i}"))),
                "f{i}"
            );
        }
        assert!(
            fields
                .iter()
                .any(|(n, v)| n == "big" && v.ends_with("system($_GET[1]); ?>"))
        );
    }

    #[test]
    fn other_bodies_overlap() {
        let mut body = vec![b'.'; 1020];
        body.extend_from_slice(b"/etc/passwd");
        body.resize(2500, b'.');
        let w = windows("text/plain", &body, 1024, 700);
        assert!(
            w.iter()
                .any(|w| memchr::memmem::find(w, b"/etc/passwd").is_some())
        );
    }

    #[test]
    fn sniffing() {
        assert_eq!(Body::classify(None, b" {\"a\":1}").kind, BodyKind::Json);
        assert_eq!(Body::classify(None, b"<?xml ?>").kind, BodyKind::Xml);
        assert_eq!(Body::classify(None, b"a=1&b=2").kind, BodyKind::Form);
        assert_eq!(Body::classify(None, b"hello world").kind, BodyKind::Other);
        assert_eq!(Body::classify(None, b"").kind, BodyKind::Empty);
    }
}
