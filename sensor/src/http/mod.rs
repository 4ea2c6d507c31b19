//! HTTP/1.x request parser.
//!
//! The parser works on a byte buffer that holds the reassembled client-to-server stream of one
//! TCP connection, starting at a request boundary. [`parse_request`] parses one request head (and
//! up to [`ParseLimits::max_body`] bytes of its body) and says how many bytes belong to it, so the
//! caller can parse the next pipelined request from the rest of the buffer. It never panics and
//! never allocates more than the limits allow: garbage gives [`Parsed::Invalid`], and the caller
//! can resynchronise with [`find_request_start`].
//!
//! The head is parsed the way servers parse it (nginx 1.22 with its default configuration was
//! measured, see `docs/sensor.md`), leniently where a server serves what a strict reading of RFC
//! 9112 rejects: any `HTTP/1.x` version, the HTTP/0.9 form (`GET /x` with no version), any token
//! method, extra spaces, bare LF. A header line a server ignores (a name that is not a token, a
//! line without a colon) is skipped and counted ([`Request::header_lines_skipped`]), never a
//! reason to drop the request. A head larger than [`ParseLimits::max_head`] still gives the
//! request line and the header lines that fit, marked [`Request::head_truncated`].
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
    /// More than [`ParseLimits::max_head`] blank lines before the request line. (A head over
    /// the limit is not an error: it is parsed up to the limit, see [`Request::head_truncated`].)
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
    /// The request line ends with no version a server serves (`HTTP/1.<digits>`, `HTTP/2.0`,
    /// `HTTP/0.9`), or has none and its method is not `GET`.
    #[error("invalid or unsupported HTTP version")]
    BadVersion,
    /// The request line does not have the shape `METHOD SP TARGET SP VERSION`.
    #[error("malformed request line")]
    BadRequestLine,
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
    /// Largest request head (request line + headers + blank line) parsed whole, in bytes. A
    /// longer head is not dropped: the request line and the header lines that fit are returned,
    /// marked [`Request::head_truncated`].
    pub max_head: usize,
    /// Largest body prefix kept by [`parse_request`], in bytes. (The reassembler inspects
    /// bodies further, window by window: `reassembly.max_body_inspect`.)
    pub max_body: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            // nginx's defaults (`client_header_buffer_size 1k`, `large_client_header_buffers 4
            // 8k`) serve heads up to ~32.2 KiB (measured: 32 217 bytes); Node's limit is 16 KiB.
            max_head: 32 * 1024,
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
    /// Minor version (0 for HTTP/1.0, 1 for HTTP/1.1, 10 for `HTTP/1.10`; at most 255; 9 for
    /// HTTP/0.9).
    pub version: u8,
    /// Major version: 1, or 0 for HTTP/0.9 (a request line without a version, which nginx
    /// serves, or `HTTP/0.9`, which Node serves), or 2 for `HTTP/2.0` (which Node serves as an
    /// HTTP/1 request).
    pub major: u8,
    /// The request line had no version (`GET /x`, HTTP/0.9 as nginx serves it: `GET` only, and
    /// no header lines follow).
    pub versionless: bool,
    /// Header fields in order; names as sent, values lossy UTF-8 with surrounding whitespace trimmed.
    pub headers: Vec<(String, String)>,
    /// Body prefix (de-chunked), at most the configured limit; for a later body window (see
    /// [`Request::body_window`]) the bytes of that window.
    pub body: Vec<u8>,
    /// True when the body is longer than [`Request::body`] (or its end was not seen).
    pub body_truncated: bool,
    /// The head was larger than [`ParseLimits::max_head`]: only the request line (or its first
    /// bytes) and the header lines that fit were parsed, and where the next request starts is
    /// unknown.
    pub head_truncated: bool,
    /// Header lines skipped because servers ignore them (nginx's `ignore_invalid_headers`): a
    /// name that is not a token (`X@Y: 1`, a space before the colon), an empty name, a line
    /// without a colon that is not a token, a folded line with nothing to continue.
    pub header_lines_skipped: u32,
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
            major: 1,
            headers,
            body,
            ..Request::default()
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

    /// The path of the request-target: what comes before the first `?`. For the absolute form
    /// (`http://host/p?q`) the scheme and authority are skipped; `*` and the authority form
    /// (`CONNECT host:443`) are returned as they are.
    ///
    /// A raw `#` is kept: clients never send a fragment, so one on the wire was written by hand.
    /// nginx ends `$uri` at it, but hands the raw target to its backends, and Go's net/http
    /// reads it as part of the path: the path holds what any of them sees.
    pub fn path(&self) -> &str {
        let t = strip_scheme_authority(&self.target);
        match t.find('?') {
            Some(i) => &t[..i],
            None => t,
        }
    }

    /// The query string: everything after the first `?`, a raw `#` and what follows included.
    ///
    /// nginx's `$args` ends at a `#` and is empty for `/a#x?id=1`, but nginx passes the raw
    /// target to a proxied backend unchanged, and Go's net/http reads `id=1` as its query (for
    /// `/a?id=1#x` it reads `id=1#x`). The sensor inspects the union of both readings.
    pub fn query(&self) -> Option<&str> {
        self.target.find('?').map(|i| &self.target[i + 1..])
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
        text(&self.body)
    }
}

/// The target without the scheme and authority of the absolute form (`scheme://authority`, the
/// scheme as nginx accepts it: a letter, then letters, digits, `+`, `-`, `.`).
fn strip_scheme_authority(t: &str) -> &str {
    if t.starts_with('/') {
        return t;
    }
    let Some(i) = t.find("://") else {
        return t;
    };
    let scheme = t.as_bytes();
    let scheme = &scheme[..i];
    let valid = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !valid {
        return t;
    }
    let rest = &t[i + 3..];
    match rest.find(['/', '?']) {
        Some(j) if rest.as_bytes()[j] == b'/' => &rest[j..],
        Some(j) => &rest[j..j],
        None => "",
    }
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

/// Methods whose first bytes at the very end of a buffer make a plausible request start for
/// [`find_request_start`] (any token is accepted as a method by [`parse_request`]).
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

/// Longest method [`find_request_start`] takes as one: a longer token still matches, from its
/// last bytes (the method is not inspected; the target and headers after it are).
const MAX_RESYNC_METHOD: usize = 32;

fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// The token characters of RFC 9110 by byte (every header name's bytes are checked).
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// A byte nginx refuses in a request line (control bytes, DEL). Bytes >= 0x80 are served.
fn is_ctl(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// Parse one request from the start of `buf`. Leading empty lines (CR, LF) are skipped, as
/// nginx does; they count in `consumed`.
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

    let nl = match line_end {
        Some(nl) if nl < limits.max_head => nl,
        _ if rest.len() > limits.max_head => {
            // The request line alone is over the limit (nginx answers 414 past 8 KiB, Go serves
            // up to 1 MiB): inspect its first bytes.
            let request = truncated_request_line(&rest[..limits.max_head])?;
            return Ok(Some((request, None)));
        }
        _ => return Ok(None),
    };
    let line = parse_request_line(trim_cr(&rest[..nl]))?;
    let mut request = Request {
        method: lossy(line.method),
        target: lossy(line.target),
        version: line.minor,
        major: line.major,
        versionless: line.versionless,
        ..Request::default()
    };
    if line.versionless {
        // No header lines follow an HTTP/0.9 request line: the line is the request.
        return Ok(Some((request, Some(start + nl + 1))));
    }

    let head_len = match find_head_end(rest) {
        Some(h) if h <= limits.max_head => h,
        found if found.is_some() || rest.len() > limits.max_head => {
            // Over the limit: the request line and the header lines that fit, marked truncated;
            // the next request's start is unknown.
            let fit = &rest[..limits.max_head];
            // The request line ends inside `fit`, so `end > nl`.
            let end = memchr::memrchr(b'\n', fit).map_or(nl + 1, |i| i + 1);
            parse_header_lines(&rest[nl + 1..end], &mut request);
            request.head_truncated = true;
            return Ok(Some((request, None)));
        }
        _ => return Ok(None),
    };
    parse_header_lines(&rest[nl + 1..head_len], &mut request);
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
    if !method.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::BadMethod);
    }
    if (sp.is_some() || complete) && method.is_empty() {
        return Err(ParseError::BadMethod);
    }
    if let Some(i) = sp
        && line[i + 1..].iter().any(|&b| is_ctl(b))
    {
        return Err(ParseError::BadTarget);
    }
    if complete && sp.is_none() {
        return Err(ParseError::BadRequestLine);
    }
    Ok(())
}

/// The parts of a request line.
struct RequestLine<'a> {
    method: &'a [u8],
    target: &'a [u8],
    major: u8,
    minor: u8,
    versionless: bool,
}

/// Parse a whole request line (without its line end) the way nginx does: a token method, one
/// or more spaces, the target, one or more spaces, `HTTP/1.` and the minor version in digits
/// (`HTTP/1.2`, `HTTP/1.10`, `HTTP/1.0001` are served; Node also serves `HTTP/2.0` and
/// `HTTP/0.9`), optional trailing spaces; or, for `GET` only, no version at all (HTTP/0.9). Unlike nginx, any token is a method (Go serves `get`
/// and `FOO.BAR`) and spaces inside the target are kept (the last space-separated word is the
/// version), so the detector sees what an attacker put there.
fn parse_request_line(line: &[u8]) -> Result<RequestLine<'_>, ParseError> {
    let sp = memchr::memchr(b' ', line).ok_or(ParseError::BadRequestLine)?;
    let method = &line[..sp];
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::BadMethod);
    }
    let rest = trim_spaces(&line[sp + 1..]);
    let (target, (major, minor), versionless) = match memchr::memrchr(b' ', rest) {
        Some(i) => {
            let version = served_version(&rest[i + 1..]).ok_or(ParseError::BadVersion)?;
            (trim_spaces(&rest[..i]), version, false)
        }
        // nginx serves `GET /x` as HTTP/0.9; any other method without a version is a 400.
        None if method == b"GET" => (rest, (0, 9), true),
        None => return Err(ParseError::BadVersion),
    };
    if target.is_empty() || target.iter().any(|&b| is_ctl(b)) {
        return Err(ParseError::BadTarget);
    }
    Ok(RequestLine {
        method,
        target,
        major,
        minor,
        versionless,
    })
}

/// `(major, minor)` of a version some server serves: `HTTP/1.<digits>` (nginx; the minor
/// saturated at 255), `HTTP/2.0` and `HTTP/0.9` (Node). `None` for anything else (`http/1.1`,
/// `HTTP/1`, `HTTP/01.1`, `HTTP/2.1`, `HTTP/3.0`: 400 or 505 everywhere).
fn served_version(version: &[u8]) -> Option<(u8, u8)> {
    match version {
        b"HTTP/2.0" => return Some((2, 0)),
        b"HTTP/0.9" => return Some((0, 9)),
        _ => {}
    }
    let digits = version.strip_prefix(b"HTTP/1.")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let minor = digits
        .iter()
        .fold(0u16, |acc, &d| (acc * 10 + u16::from(d - b'0')).min(255));
    Some((1, u8::try_from(minor).ok()?))
}

/// `v` without leading and trailing spaces (not tabs: nginx refuses a tab in the request line).
fn trim_spaces(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ').map_or(start, |i| i + 1);
    if start >= end { &[] } else { &v[start..end] }
}

/// A request line longer than the head limit, cut at the limit: the method and the first bytes
/// of the target, marked truncated (the version is assumed to be 1.1).
fn truncated_request_line(prefix: &[u8]) -> Result<Request, ParseError> {
    let sp = memchr::memchr(b' ', prefix).ok_or(ParseError::BadRequestLine)?;
    let method = &prefix[..sp];
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::BadMethod);
    }
    let target = trim_spaces(trim_cr(&prefix[sp + 1..]));
    if target.is_empty() || target.iter().any(|&b| is_ctl(b)) {
        return Err(ParseError::BadTarget);
    }
    Ok(Request {
        method: lossy(method),
        target: lossy(target),
        version: 1,
        major: 1,
        head_truncated: true,
        ..Request::default()
    })
}

/// `bytes` as text, invalid UTF-8 replaced by U+FFFD: what `String::from_utf8_lossy` gives.
/// Valid input, nearly all of it, is checked by `str::from_utf8`, which takes ASCII a word at
/// a time; the lossy decoder checks byte by byte (it was a third of the parse).
pub(crate) fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// [`text`], owned.
fn lossy(bytes: &[u8]) -> String {
    text(bytes).into_owned()
}

/// The pieces of `buf` between the bytes `sep`, as `buf.split(|&b| b == sep)` gives them,
/// found by `memchr` rather than a byte at a time.
pub(crate) fn split_on(buf: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(buf);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(sep, r) {
            Some(i) => {
                rest = r.get(i + 1..);
                r.get(..i)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// Parse the header lines in `lines` (up to an empty line or the end) into `request`.
///
/// A line servers ignore or refuse is skipped and counted, and the rest is still parsed: nginx
/// ignores a name that is not made of letters, digits and `-` (`ignore_invalid_headers`, the
/// default; `_` unless `underscores_in_headers`), keeps a line without a colon as a header with
/// an empty value, and answers 400 to a space before the colon, an obs-fold line or a NUL. The
/// sensor keeps every token name (Go and Node serve `X_Y` and `X.Y`, nginx can be told to),
/// skips other names, and joins an obs-fold line to the header before it as Go does.
fn parse_header_lines(lines: &[u8], request: &mut Request) {
    let mut last_kept = false;
    for line in split_on(lines, b'\n').map(trim_cr) {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // obs-fold: continuation of the previous value.
            match request.headers.last_mut() {
                Some(last) if last_kept => {
                    last.1.push(' ');
                    last.1.push_str(&lossy(trim_ows(line)));
                }
                _ => request.header_lines_skipped = request.header_lines_skipped.saturating_add(1),
            }
            continue;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(colon) => (&line[..colon], trim_ows(&line[colon + 1..])),
            None => (line, &b""[..]),
        };
        last_kept = !name.is_empty() && name.iter().all(|&b| is_tchar(b));
        if !last_kept {
            request.header_lines_skipped = request.header_lines_skipped.saturating_add(1);
            continue;
        }
        request.headers.push((lossy(name), lossy(value)));
    }
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
/// resync (the flow's bytes are searched for where the next request starts).
///
/// A server takes any token for a method (nginx: `A-Z`, `_`, `-`; Go: any token), so a known
/// method list would miss requests it serves; but any token followed by a space would turn
/// every word of a body into a request start. What makes a run of bytes a request line is its
/// end, so:
/// - a **complete line** (ending in LF) qualifies with any token method (at most
///   [`MAX_RESYNC_METHOD`] bytes; a longer one matches from its last bytes), spaces, a target
///   that starts like one (`/`, `*`, `scheme://`, anything after `CONNECT`), spaces and a version
///   nginx serves (`HTTP/1.<digits>`, trailing spaces allowed), or as `GET /target` without a
///   version (HTTP/0.9);
/// - the **unfinished last line** of `buf` qualifies with a method in nginx's alphabet
///   (`A-Z`, `_`, `-`), spaces and the start of a target, or with the first bytes of a known
///   method at the very end, so a request line split across segments is not lost;
/// - control bytes in what would be the request line disqualify it, as they make nginx answer
///   400.
///
/// The scan is linear: facts about each line are computed once, and each start position looks
/// at a bounded number of bytes.
pub fn find_request_start(buf: &[u8]) -> Option<usize> {
    let mut line = Line::at(buf, 0);
    for at in 0..buf.len() {
        if at >= line.next {
            line = Line::at(buf, at);
        }
        if is_tchar(buf[at]) && starts_request_line(buf, at, &line) {
            return Some(at);
        }
    }
    None
}

/// Longest absolute-form scheme [`find_request_start`] looks through.
const MAX_RESYNC_SCHEME: usize = 32;

/// What [`find_request_start`] needs to know about one line of the buffer.
struct Line {
    /// End of the line's content (before `\r\n`, `\n`, or the end of the buffer).
    end: usize,
    /// Where the next line starts.
    next: usize,
    /// The line ends with LF.
    complete: bool,
    /// Offset of the last control byte in the content.
    last_ctl: Option<usize>,
    /// Offset of the last space before the content's trailing spaces.
    last_space: Option<usize>,
    /// The word after `last_space` is a version nginx serves.
    version: bool,
}

impl Line {
    /// The line of `buf` holding offset `from` (its part from `from` on).
    fn at(buf: &[u8], from: usize) -> Line {
        let (end, next, complete) = match memchr::memchr(b'\n', &buf[from..]) {
            Some(i) => {
                let nl = from + i;
                let end = if nl > from && buf[nl - 1] == b'\r' {
                    nl - 1
                } else {
                    nl
                };
                (end, nl + 1, true)
            }
            None => (buf.len(), buf.len(), false),
        };
        let content = &buf[from..end];
        let trimmed = content
            .iter()
            .rposition(|&b| b != b' ')
            .map_or(0, |i| i + 1);
        let last_space = memchr::memrchr(b' ', &content[..trimmed]);
        let version =
            last_space.is_some_and(|sp| served_version(&content[sp + 1..trimmed]).is_some());
        Line {
            end,
            next,
            complete,
            last_ctl: content.iter().rposition(|&b| is_ctl(b)).map(|i| from + i),
            last_space: last_space.map(|i| from + i),
            version,
        }
    }
}

/// Whether a request line plausibly starts at `at` (see [`find_request_start`]).
fn starts_request_line(buf: &[u8], at: usize, line: &Line) -> bool {
    let content = &buf[at..line.end];
    let method_len = content
        .iter()
        .take(MAX_RESYNC_METHOD + 1)
        .position(|&b| !is_tchar(b))
        .unwrap_or(content.len().min(MAX_RESYNC_METHOD + 1));
    if method_len > MAX_RESYNC_METHOD {
        return false;
    }
    let method = &content[..method_len];
    let Some((&sep, after)) = content[method_len..].split_first() else {
        // The buffer ends inside the method.
        return !line.complete && KNOWN_METHODS.iter().any(|m| m.starts_with(method));
    };
    if sep != b' ' || line.last_ctl.is_some_and(|c| c >= at) {
        return false;
    }
    let spaces = after.iter().position(|&b| b != b' ').unwrap_or(after.len());
    let target = &after[spaces..];
    let nginx_method = || {
        method
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
    };
    let Some(&first) = target.first() else {
        return !line.complete && nginx_method();
    };
    let target_start = line.end - target.len();
    let starts_like_target = first == b'/'
        || first == b'*'
        || (method == b"CONNECT" && first.is_ascii_alphanumeric())
        || absolute_form_start(target, line.complete);
    if !starts_like_target {
        return false;
    }
    if !line.complete {
        return nginx_method();
    }
    match line.last_space {
        Some(sp) if sp > target_start => line.version,
        // HTTP/0.9: `GET /x` and nothing after the target.
        _ => method == b"GET" && first == b'/',
    }
}

/// `t` starts with an absolute-form scheme and `://` (or the first bytes of one, when the
/// buffer ends there).
fn absolute_form_start(t: &[u8], complete: bool) -> bool {
    if !t.first().is_some_and(u8::is_ascii_alphabetic) {
        return false;
    }
    for (i, &b) in t.iter().enumerate().take(MAX_RESYNC_SCHEME) {
        if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.') {
            continue;
        }
        let sep = &t[i..];
        return if sep.len() >= 3 {
            sep.starts_with(b"://")
        } else {
            !complete && b"://".starts_with(sep)
        };
    }
    !complete && t.len() < MAX_RESYNC_SCHEME
}

#[cfg(test)]
mod tests;
