//! HTTP/1.x request parser.
//!
//! The parser works on a byte buffer that holds the reassembled client-to-server stream of one
//! TCP connection, starting at a request boundary. [`parse_request`] parses one request head (and
//! up to [`ParseLimits::max_body`] bytes of its body) and says how many bytes belong to it, so the
//! caller can parse the next pipelined request from the rest of the buffer. It never panics and
//! never allocates more than the limits allow: garbage gives [`Parsed::Invalid`], and the caller
//! can resynchronise with [`find_request_start`].
//!
//! [`parse_request`] captures a body as a *prefix* (the first [`ParseLimits::max_body`] bytes,
//! de-chunked). A body larger than the prefix still has a known length when it is framed by
//! `Content-Length`, so `consumed` may then be larger than the buffer: the caller skips the
//! remaining bytes as they arrive. A stream reader that follows bodies past the prefix (the
//! reassembler) parses the head alone with [`parse_head`], asks [`body_framing`] how the body
//! is delimited and walks chunked framing with [`ChunkedDecoder`] as bytes arrive.

use std::borrow::Cow;

mod chunked;
mod fields;

pub use chunked::{BadChunk, ChunkedDecoder, MAX_CHUNK_LINE, MAX_TRAILERS};

pub use fields::{Body, BodyKind, BodyStream, form_pairs};
pub(crate) use fields::{hex_digit, hex4};

/// Why a buffer is not an HTTP/1.x request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The request head is longer than [`ParseLimits::max_head`].
    #[error("request head is larger than {max} bytes")]
    HeadTooLarge {
        /// The configured limit.
        max: usize,
    },
    /// The method is not an HTTP token.
    #[error("invalid method")]
    BadMethod,
    /// The request-target is empty or holds control characters.
    #[error("invalid request target")]
    BadTarget,
    /// The request line does not end with `HTTP/1.0` or `HTTP/1.1`.
    #[error("invalid or unsupported HTTP version")]
    BadVersion,
    /// The request line does not have the shape `METHOD SP TARGET SP VERSION`.
    #[error("malformed request line")]
    BadRequestLine,
    /// A header line is not `name: value`.
    #[error("malformed header line {line}")]
    BadHeader {
        /// 1-based index of the header line.
        line: usize,
    },
    /// `Content-Length` is not a number, or several disagree.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// The chunked body framing is broken.
    #[error("invalid chunked body")]
    BadChunk,
    /// `Transfer-Encoding` does not end with `chunked` (nginx answers 501): the body's end
    /// is unknown.
    #[error("unsupported Transfer-Encoding")]
    BadTransferEncoding,
}

/// Size limits of the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Largest request head (request line + headers + blank line) accepted, in bytes.
    pub max_head: usize,
    /// Largest body prefix kept by [`parse_request`], in bytes. (The reassembler inspects
    /// bodies further, window by window: `reassembly.max_body_inspect`.)
    pub max_body: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_head: 16 * 1024,
            max_body: 2 * 1024,
        }
    }
}

/// One parsed request head plus the captured body prefix. Owned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Method as sent (`GET`, `POST`, ...).
    pub method: String,
    /// Raw request-target as sent (origin form `/a?b`, absolute form, `*` or authority form).
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Header fields in order; names as sent, values lossy UTF-8 with surrounding whitespace trimmed.
    pub headers: Vec<(String, String)>,
    /// Body prefix (de-chunked), at most the configured limit; for a later body window (see
    /// [`Request::body_window`]) the bytes of that window.
    pub body: Vec<u8>,
    /// True when the body is longer than [`Request::body`] (or its end was not seen).
    pub body_truncated: bool,
    /// Set when this is not the request itself but a later window of its body, emitted again
    /// with the same head so the detector can look at body bytes past the first window. The
    /// head was already inspected with the first window; only [`Request::body`] is new.
    pub body_window: Option<BodyWindow>,
}

/// Where a later window of a body lies, and how the body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyWindow {
    /// Offset of the window's first byte in the de-chunked body (approximate when the window
    /// starts with bytes carried over from the previous one).
    pub offset: u64,
    /// The body's encoding, decided on its first window (sniffing needs its first bytes).
    pub kind: BodyKind,
}

impl Request {
    /// Build a request from parts, e.g. from an access-log line. HTTP/1.1 is assumed.
    pub fn from_parts(
        method: impl Into<String>,
        target: impl Into<String>,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Request {
        Request {
            method: method.into(),
            target: target.into(),
            version: 1,
            headers,
            body,
            body_truncated: false,
            body_window: None,
        }
    }

    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers_all(name).next()
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn headers_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        let name = name.to_owned();
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|(_, v)| v.as_str())
    }

    /// The path of the request-target, without the query. For the absolute form
    /// (`http://host/p?q`) the scheme and authority are skipped; `*` and the authority form
    /// (`CONNECT host:443`) are returned as they are.
    pub fn path(&self) -> &str {
        let t = self.target_without_fragment();
        let t = strip_scheme_authority(t);
        match t.find('?') {
            Some(i) => &t[..i],
            None => t,
        }
    }

    /// The query string (after the first `?`, before any `#`), if there is one.
    pub fn query(&self) -> Option<&str> {
        let t = self.target_without_fragment();
        t.find('?').map(|i| &t[i + 1..])
    }

    /// Cookies from every `Cookie` header, as `(name, value)` pairs, raw (not decoded).
    pub fn cookies(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers_all("cookie").flat_map(|h| {
            h.split(';').filter_map(|kv| {
                let kv = kv.trim();
                if kv.is_empty() {
                    return None;
                }
                Some(match kv.find('=') {
                    Some(i) => (kv[..i].trim(), kv[i + 1..].trim()),
                    None => ("", kv),
                })
            })
        })
    }

    /// The body prefix, classified by `Content-Type` (or sniffed when it is absent).
    pub fn body_view(&self) -> Body<'_> {
        match self.body_window {
            Some(w) => Body::with_kind(w.kind, self.header("content-type"), &self.body),
            None => Body::classify(self.header("content-type"), &self.body),
        }
    }

    /// The body prefix as text (lossy UTF-8).
    pub fn body_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    fn target_without_fragment(&self) -> &str {
        match self.target.find('#') {
            Some(i) => &self.target[..i],
            None => &self.target,
        }
    }
}

fn strip_scheme_authority(t: &str) -> &str {
    if t.starts_with('/') {
        return t;
    }
    if let Some(i) = t.find("://") {
        let scheme = &t[..i];
        if !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+')
        {
            let rest = &t[i + 3..];
            return match rest.find(['/', '?']) {
                Some(j) if rest.as_bytes()[j] == b'/' => &rest[j..],
                Some(j) => &rest[j..j],
                None => "",
            };
        }
    }
    t
}

/// Result of [`parse_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request head was parsed. `consumed` = bytes of head + body that belong to this
    /// request when the framing is known (Content-Length, or no body); it may exceed the buffer
    /// length when the body is longer than the captured prefix. `None` when the next request's
    /// start is unknown (chunked body not fully captured, etc.): the caller then waits for bytes
    /// that look like a new request line ([`find_request_start`]).
    Complete {
        /// The parsed request.
        request: Request,
        /// Bytes that belong to this request, when known.
        consumed: Option<usize>,
    },
    /// Need more bytes (head not complete yet; or the body prefix wanted is not there yet).
    Partial,
    /// Not HTTP / garbage / oversize head: the caller drops the flow's buffer.
    Invalid(ParseError),
}

/// Methods recognised by [`find_request_start`] (any token is accepted by [`parse_request`]).
const KNOWN_METHODS: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"PUT",
    b"HEAD",
    b"DELETE",
    b"OPTIONS",
    b"PATCH",
    b"CONNECT",
    b"TRACE",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"SEARCH",
];

/// Longest method accepted (a long token is more likely garbage than a method).
const MAX_METHOD_LEN: usize = 24;
/// Most header lines accepted in one head.
const MAX_HEADERS: usize = 256;

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parse one request from the start of `buf`. Leading empty lines (CRLF) are skipped, as RFC
/// 9112 allows; they count in `consumed`.
pub fn parse_request(buf: &[u8], limits: &ParseLimits) -> Parsed {
    match parse_inner(buf, limits) {
        Ok(Some((request, consumed))) => Parsed::Complete { request, consumed },
        Ok(None) => Parsed::Partial,
        Err(e) => Parsed::Invalid(e),
    }
}

fn parse_inner(
    buf: &[u8],
    limits: &ParseLimits,
) -> Result<Option<(Request, Option<usize>)>, ParseError> {
    match parse_head(buf, limits)? {
        None => Ok(None),
        Some((request, Some(body_start))) => read_body(request, buf, body_start, limits),
        Some((request, None)) => Ok(Some((request, None))),
    }
}

/// Parse the request head at the start of `buf` (leading blank lines skipped) and nothing
/// else: `Ok(Some((request, Some(n))))` with an empty body when the head is complete, `n` being
/// the offset of the body's first byte; `Ok(Some((request, None)))` when a head was parsed but
/// where it ends is unknown (the caller must resynchronise); `Ok(None)` when the head is not
/// complete yet.
pub fn parse_head(
    buf: &[u8],
    limits: &ParseLimits,
) -> Result<Option<(Request, Option<usize>)>, ParseError> {
    // Skip leading blank lines.
    let mut start = 0;
    while start < buf.len() && (buf[start] == b'\r' || buf[start] == b'\n') {
        start += 1;
        if start > limits.max_head {
            return Err(ParseError::HeadTooLarge {
                max: limits.max_head,
            });
        }
    }
    let rest = &buf[start..];

    // Validate as much of the request line as we have, so garbage fails fast.
    let line_end = memchr::memchr(b'\n', rest);
    let line = match line_end {
        Some(i) => &rest[..i],
        None => rest,
    };
    check_request_line_prefix(line, line_end.is_some())?;

    let Some(head_len) = find_head_end(rest) else {
        if rest.len() > limits.max_head {
            return Err(ParseError::HeadTooLarge {
                max: limits.max_head,
            });
        }
        return Ok(None);
    };
    if head_len > limits.max_head {
        return Err(ParseError::HeadTooLarge {
            max: limits.max_head,
        });
    }
    let head = &rest[..head_len];
    let mut lines = head.split(|&b| b == b'\n').map(trim_cr);
    let request_line = lines.next().unwrap_or_default();
    let (method, target, version) = parse_request_line(request_line)?;

    let mut headers: Vec<(String, String)> = Vec::new();
    for (idx, line) in lines.enumerate() {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // obs-fold: continuation of the previous value.
            let Some(last) = headers.last_mut() else {
                return Err(ParseError::BadHeader { line: idx + 1 });
            };
            last.1.push(' ');
            last.1
                .push_str(String::from_utf8_lossy(trim_ows(line)).as_ref());
            continue;
        }
        let colon = memchr::memchr(b':', line).ok_or(ParseError::BadHeader { line: idx + 1 })?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(ParseError::BadHeader { line: idx + 1 });
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ParseError::HeadTooLarge {
                max: limits.max_head,
            });
        }
        let value = trim_ows(&line[colon + 1..]);
        headers.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }

    let request = Request {
        method,
        target,
        version,
        headers,
        body: Vec::new(),
        body_truncated: false,
        body_window: None,
    };
    Ok(Some((request, Some(start + head_len))))
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes (more than zero).
    Length(u64),
    /// The chunked transfer coding, up to its last chunk and trailers.
    Chunked,
}

/// How the body of `req` is delimited, as nginx decides it: `Transfer-Encoding` (any letter
/// case, all header lines as one list) wins over `Content-Length` when its last coding is
/// `chunked`; any other `Transfer-Encoding` leaves the body's end unknown
/// ([`ParseError::BadTransferEncoding`]); several `Content-Length` values must agree.
pub fn body_framing(req: &Request) -> Result<Framing, ParseError> {
    if req.headers_all("transfer-encoding").next().is_some() {
        let mut codings = req
            .headers_all("transfer-encoding")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .peekable();
        let mut last_chunked = false;
        let mut chunked_seen = 0;
        while let Some(c) = codings.next() {
            // A coding may carry parameters (`gzip;q=1`): only its name counts.
            let name = c.split(';').next().unwrap_or("").trim();
            let chunked = name.eq_ignore_ascii_case("chunked");
            chunked_seen += usize::from(chunked);
            last_chunked = chunked && codings.peek().is_none();
        }
        // chunked must be the final coding, applied once (RFC 9112 §6.1).
        return if last_chunked && chunked_seen == 1 {
            Ok(Framing::Chunked)
        } else {
            Err(ParseError::BadTransferEncoding)
        };
    }
    Ok(match content_length(req)? {
        None | Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
    })
}

/// The body part of [`parse_request`]: up to `limits.max_body` bytes of it, and the request's
/// length when its end is known.
fn read_body(
    mut request: Request,
    buf: &[u8],
    body_start: usize,
    limits: &ParseLimits,
) -> Result<Option<(Request, Option<usize>)>, ParseError> {
    let body_avail = &buf[body_start..];
    let framing = body_framing(&request)?;
    if framing == Framing::Chunked {
        return match dechunk(body_avail, limits.max_body)? {
            Dechunked::Done {
                body,
                len,
                truncated,
            } => {
                request.body = body;
                request.body_truncated = truncated;
                Ok(Some((request, Some(body_start + len))))
            }
            Dechunked::Prefix { body } => {
                request.body = body;
                request.body_truncated = true;
                Ok(Some((request, None)))
            }
            Dechunked::NeedMore => Ok(None),
        };
    }

    match framing {
        Framing::None | Framing::Chunked => Ok(Some((request, Some(body_start)))),
        Framing::Length(cl) => {
            let want = cl.min(limits.max_body as u64) as usize;
            if body_avail.len() < want {
                return Ok(None);
            }
            request.body = body_avail[..want].to_vec();
            request.body_truncated = (want as u64) < cl;
            let consumed = usize::try_from(cl)
                .ok()
                .and_then(|cl| body_start.checked_add(cl));
            Ok(Some((request, consumed)))
        }
    }
}

fn content_length(req: &Request) -> Result<Option<u64>, ParseError> {
    let mut found: Option<u64> = None;
    for v in req.headers_all("content-length") {
        for part in v.split(',') {
            let part = part.trim();
            if part.is_empty() || part.len() > 19 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseError::BadContentLength);
            }
            let n: u64 = part.parse().map_err(|_| ParseError::BadContentLength)?;
            match found {
                Some(prev) if prev != n => return Err(ParseError::BadContentLength),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// Offset just past the blank line ending the head (CRLFCRLF or bare LFLF), if present.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[pos..]) {
        let nl = pos + i;
        let next = nl + 1;
        if buf.get(next) == Some(&b'\n') {
            return Some(next + 1);
        }
        if buf.get(next) == Some(&b'\r') && buf.get(next + 1) == Some(&b'\n') {
            return Some(next + 2);
        }
        pos = next;
    }
    None
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t' && b != b'\r')
        .map_or(start, |i| i + 1);
    if start >= end { &[] } else { &v[start..end] }
}

/// Check what we have of the request line; `complete` says whether the line ended.
fn check_request_line_prefix(line: &[u8], complete: bool) -> Result<(), ParseError> {
    let line = trim_cr(line);
    let sp = memchr::memchr(b' ', line);
    let method = match sp {
        Some(i) => &line[..i],
        None => line,
    };
    if method.len() > MAX_METHOD_LEN || !method.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::BadMethod);
    }
    if (sp.is_some() || complete) && method.is_empty() {
        return Err(ParseError::BadMethod);
    }
    if let Some(i) = sp {
        let rest = &line[i + 1..];
        if rest.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
            return Err(ParseError::BadTarget);
        }
    }
    if complete && sp.is_none() {
        return Err(ParseError::BadRequestLine);
    }
    Ok(())
}

fn parse_request_line(line: &[u8]) -> Result<(String, String, u8), ParseError> {
    let sp1 = memchr::memchr(b' ', line).ok_or(ParseError::BadRequestLine)?;
    let method = &line[..sp1];
    if method.is_empty() || method.len() > MAX_METHOD_LEN || !method.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::BadMethod);
    }
    let rest = &line[sp1 + 1..];
    let sp2 = memchr::memrchr(b' ', rest).ok_or(ParseError::BadRequestLine)?;
    let target = trim_ows(&rest[..sp2]);
    let version = &rest[sp2 + 1..];
    let version = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        _ => return Err(ParseError::BadVersion),
    };
    if target.is_empty() || target.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(ParseError::BadTarget);
    }
    // Targets with raw spaces are not valid, but attackers send them and servers are lenient:
    // keep them so the detector sees the payload.
    Ok((
        String::from_utf8_lossy(method).into_owned(),
        String::from_utf8_lossy(target).into_owned(),
        version,
    ))
}

enum Dechunked {
    /// The whole chunked body (up to and including the last chunk and trailers) is in the
    /// buffer; `body` holds at most the prefix limit (`truncated` if there was more).
    Done {
        body: Vec<u8>,
        len: usize,
        truncated: bool,
    },
    /// The prefix limit was reached before the end (or the framing broke after it).
    Prefix { body: Vec<u8> },
    /// Need more bytes.
    NeedMore,
}

/// De-chunk the start of `buf` with the same decoder the reassembler walks bodies with.
fn dechunk(buf: &[u8], max_body: usize) -> Result<Dechunked, ParseError> {
    let mut body = Vec::new();
    let mut total = 0usize;
    let mut decoder = ChunkedDecoder::new();
    let fed = decoder.feed(buf, |data| {
        total = total.saturating_add(data.len());
        let room = max_body.saturating_sub(body.len());
        body.extend_from_slice(&data[..data.len().min(room)]);
    });
    match fed {
        Ok(Some(len)) => Ok(Dechunked::Done {
            truncated: total > body.len(),
            body,
            len,
        }),
        // The prefix is there; where the body ends is not known (yet, or at all).
        Ok(None) | Err(_) if total >= max_body => Ok(Dechunked::Prefix { body }),
        Ok(None) => Ok(Dechunked::NeedMore),
        Err(e) => Err(e.into()),
    }
}

/// Offset of the first thing in `buf` that looks like the start of an HTTP request line, for
/// resync: a known method, a space, and a target; when the line is complete it must end with an
/// HTTP/1.x version.
pub fn find_request_start(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    while pos < buf.len() {
        let rel = buf[pos..].iter().position(|&b| {
            matches!(
                b,
                b'G' | b'P' | b'H' | b'D' | b'O' | b'C' | b'T' | b'M' | b'L' | b'U' | b'S'
            )
        })?;
        let at = pos + rel;
        if looks_like_request_line(&buf[at..]) {
            return Some(at);
        }
        pos = at + 1;
    }
    None
}

fn looks_like_request_line(buf: &[u8]) -> bool {
    let Some(method) = KNOWN_METHODS.iter().find(|m| buf.starts_with(m)) else {
        // The buffer may end inside a method name.
        return !buf.is_empty()
            && KNOWN_METHODS
                .iter()
                .any(|m| m.len() > buf.len() && m.starts_with(buf));
    };
    let rest = &buf[method.len()..];
    match rest.first() {
        None => return true,
        Some(b' ') => {}
        Some(_) => return false,
    }
    let rest = &rest[1..];
    match rest.first() {
        None => return true,
        Some(b'/' | b'*' | b'h' | b'H') => {}
        Some(b) if b.is_ascii_alphanumeric() && *method == b"CONNECT" => {}
        Some(_) => return false,
    }
    let line = match memchr::memchr(b'\n', rest) {
        Some(i) => trim_cr(&rest[..i]),
        None => {
            // Incomplete line: plausible if it has no control bytes so far.
            return !rest.iter().any(|&b| b < 0x20 && b != b'\t');
        }
    };
    line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0")
}

#[cfg(test)]
mod tests;
