//! The request variables of SecLang (ARGS, REQUEST_HEADERS, REQUEST_URI, FILES, XML, ...), built
//! the way libmodsecurity 3.0.9 builds them in `Transaction::processURI`, `addRequestHeader`,
//! `extractArguments`, `processRequestBody` and its multipart, JSON (yajl) and XML (libxml2) body
//! processors, so that rules see byte-for-byte the values the reference sees.
//!
//! Deliberate reproductions of 3.0.9 quirks (all checked against the installed library):
//! - multipart form-field values lose every line terminator (the CRLF/LF "reserve" is dropped);
//! - JSON arguments go to ARGS only, not ARGS_POST, and are named `json.a.b`, `json.a.array_0`;
//! - the URI fragment is cut before REQUEST_URI/QUERY_STRING but kept in REQUEST_URI_RAW/LINE;
//! - multipart arguments are only added when the final boundary was seen.

use memchr::memchr;

/// One HTTP request as the sensor saw it, input of [`Collections::from_head`].
pub struct RequestInput<'a> {
    /// Request method as on the request line.
    pub method: &'a [u8],
    /// Request-target as on the request line: "/a/b.php?x=1" or "http://h/a?x".
    pub target: &'a [u8],
    /// Protocol as on the request line, e.g. "HTTP/1.1" (a bare "1.1" is accepted too).
    pub protocol: &'a [u8],
    /// Headers in order, names as sent.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// The request body, de-chunked.
    pub body: &'a [u8],
    /// Client address.
    pub remote_addr: &'a str,
}

/// A request body processor (the value of REQBODY_PROCESSOR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProcessor {
    /// `application/x-www-form-urlencoded`.
    UrlEncoded,
    /// `multipart/form-data`.
    Multipart,
    /// XML, chosen by `ctl:requestBodyProcessor=XML`.
    Xml,
    /// JSON, chosen by `ctl:requestBodyProcessor=JSON`.
    Json,
}

impl BodyProcessor {
    /// The REQBODY_PROCESSOR value libmodsecurity reports for this processor.
    pub fn name(self) -> &'static str {
        match self {
            BodyProcessor::UrlEncoded => "URLENCODED",
            BodyProcessor::Multipart => "MULTIPART",
            BodyProcessor::Xml => "XML",
            BodyProcessor::Json => "JSON",
        }
    }
}

/// One member of a collection: its key (as libmodsecurity keys it) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Key, e.g. the argument name.
    pub name: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
}

impl Entry {
    fn new(name: &[u8], value: &[u8]) -> Entry {
        Entry {
            name: name.to_vec(),
            value: value.to_vec(),
        }
    }
}

/// The MULTIPART_* flag variables, each 0 or 1 (`unmatched_boundary` may be 2: 3.0.9 sets 2 when
/// a matching boundary line follows an earlier boundary, i.e. in every well-formed body).
/// All are 0 unless the multipart processor ran (then libmodsecurity sets them all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MultipartFlags {
    /// MULTIPART_STRICT_ERROR: OR of the parser error and every flag below except
    /// `unmatched_boundary` and `crlf_lf_lines`.
    pub strict_error: u8,
    /// MULTIPART_UNMATCHED_BOUNDARY (0, 1 or 2).
    pub unmatched_boundary: u8,
    /// MULTIPART_DATA_BEFORE.
    pub data_before: u8,
    /// MULTIPART_DATA_AFTER.
    pub data_after: u8,
    /// MULTIPART_HEADER_FOLDING.
    pub header_folding: u8,
    /// MULTIPART_LF_LINE.
    pub lf_line: u8,
    /// MULTIPART_CRLF_LF_LINES.
    pub crlf_lf_lines: u8,
    /// MULTIPART_MISSING_SEMICOLON.
    pub missing_semicolon: u8,
    /// MULTIPART_INVALID_QUOTING.
    pub invalid_quoting: u8,
    /// MULTIPART_INVALID_PART.
    pub invalid_part: u8,
    /// MULTIPART_INVALID_HEADER_FOLDING.
    pub invalid_header_folding: u8,
    /// MULTIPART_FILE_LIMIT_EXCEEDED (never set: files are not extracted).
    pub file_limit_exceeded: u8,
    /// MULTIPART_BOUNDARY_QUOTED.
    pub boundary_quoted: u8,
    /// MULTIPART_BOUNDARY_WHITESPACE.
    pub boundary_whitespace: u8,
}

/// Every request variable the engine resolves, built once per request.
#[derive(Debug, Clone, Default)]
pub struct Collections {
    /// ARGS_GET, from QUERY_STRING.
    pub args_get: Vec<Entry>,
    /// ARGS_POST: url-encoded and multipart body fields.
    pub args_post: Vec<Entry>,
    /// Arguments in ARGS/ARGS_NAMES but neither in ARGS_GET nor ARGS_POST: the JSON body's.
    /// ARGS = `args_get`, then `args_post`, then `args_other` (see [`Collections::args`]).
    pub args_other: Vec<Entry>,
    /// REQUEST_COOKIES.
    pub request_cookies: Vec<Entry>,
    /// REQUEST_HEADERS, names as sent (lookups by name are case-insensitive in SecLang).
    pub request_headers: Vec<Entry>,
    /// FILES: name = form field name, value = file name.
    pub files: Vec<Entry>,
    /// FILES_SIZES: name = form field name, value = the size libmodsecurity counts.
    pub files_sizes: Vec<Entry>,
    /// MULTIPART_PART_HEADERS: name = part name, value = the raw header line (with its CRLF).
    pub multipart_part_headers: Vec<Entry>,
    /// What `XML:/*` yields: the text content of the root element (None: no document).
    pub xml_text: Option<Vec<u8>>,
    /// What `XML://@*` yields: every attribute value of the document (entities decoded,
    /// white space normalized as libxml2 does for CDATA attributes).
    pub xml_attrs: Vec<Vec<u8>>,
    /// REQUEST_METHOD.
    pub request_method: Vec<u8>,
    /// REQUEST_PROTOCOL ("HTTP/" + version).
    pub request_protocol: Vec<u8>,
    /// REQUEST_LINE (with the raw target, fragment included).
    pub request_line: Vec<u8>,
    /// REQUEST_URI: decoded target without fragment, absolute-form reduced to its path.
    pub request_uri: Vec<u8>,
    /// REQUEST_URI_RAW: the target as sent, fragment included.
    pub request_uri_raw: Vec<u8>,
    /// REQUEST_FILENAME: decoded path (scheme and host kept for absolute-form targets).
    pub request_filename: Vec<u8>,
    /// REQUEST_BASENAME: REQUEST_FILENAME after the last '/' or '\'.
    pub request_basename: Vec<u8>,
    /// QUERY_STRING: raw, after the first '?', without fragment.
    pub query_string: Vec<u8>,
    /// REQUEST_BODY: set whenever the body is not empty (whatever the processor).
    pub request_body: Option<Vec<u8>>,
    /// REQUEST_BODY_LENGTH (libmodsecurity leaves the variable empty when the body is).
    pub request_body_length: usize,
    /// REQBODY_PROCESSOR.
    pub reqbody_processor: Option<BodyProcessor>,
    /// REQBODY_ERROR (and REQBODY_PROCESSOR_ERROR).
    pub reqbody_error: bool,
    /// REQBODY_ERROR_MSG, e.g. "JSON parsing error: parse error: premature EOF\n".
    pub reqbody_error_msg: Vec<u8>,
    /// MULTIPART_* flags.
    pub multipart: MultipartFlags,
    /// ARGS_COMBINED_SIZE: sum of name and value lengths of the url-encoded and JSON arguments
    /// (multipart fields are not counted). libmodsecurity prints it as a double ("18.000000")
    /// and leaves it empty when no argument was added.
    pub args_combined_size: usize,
    /// FILES_COMBINED_SIZE.
    pub files_combined_size: usize,
    /// URLENCODED_ERROR: an invalid %-escape in a query or url-encoded body argument.
    pub urlencoded_error: bool,
    /// REMOTE_ADDR.
    pub remote_addr: Vec<u8>,
    /// SecRequestBodyJsonDepthLimit: JSON nesting deeper than this is a REQBODY_ERROR.
    /// [`Collections::from_head`] sets libmodsecurity's default, 10000; the engine overrides
    /// it from the configuration before [`Collections::process_body`].
    pub json_depth_limit: usize,
    /// The first Content-Type header's value, which the multipart parser reads.
    content_type: Option<Vec<u8>>,
    /// The processor chosen from Content-Type by `addRequestHeader`.
    header_processor: Option<BodyProcessor>,
}

impl Collections {
    /// Phase-1 variables (everything but the body's), as `processURI` and `addRequestHeader`
    /// set them.
    pub fn from_head(input: &RequestInput) -> Collections {
        let mut c = Collections {
            remote_addr: input.remote_addr.as_bytes().to_vec(),
            json_depth_limit: JSON_DEFAULT_DEPTH_LIMIT,
            ..Collections::default()
        };
        c.process_uri(cstr(input.target), cstr(input.method), cstr(input.protocol));
        for &(name, value) in input.headers {
            c.add_request_header(name, value);
        }
        c
    }

    /// The processor libmodsecurity picks by itself from Content-Type (URLENCODED, MULTIPART);
    /// XML and JSON are chosen by rules (`ctl:requestBodyProcessor=XML|JSON`), which the engine
    /// applies before calling process_body.
    pub fn default_processor(&self) -> Option<BodyProcessor> {
        self.header_processor
    }

    /// ARGS in the order this crate keeps (libmodsecurity iterates its hash map instead).
    pub fn args(&self) -> impl Iterator<Item = &Entry> {
        self.args_get
            .iter()
            .chain(&self.args_post)
            .chain(&self.args_other)
    }

    /// Phase-2 variables: ARGS_POST, FILES, XML, REQUEST_BODY, REQBODY_*, MULTIPART_*.
    /// `processor` is the effective one: `ctl:requestBodyProcessor=JSON|XML` if a rule set it,
    /// else [`Collections::default_processor`].
    pub fn process_body(&mut self, processor: Option<BodyProcessor>, body: &[u8]) {
        self.reqbody_processor = processor;
        self.reqbody_error = false;
        self.reqbody_error_msg.clear();
        match processor {
            Some(BodyProcessor::Xml) => {
                let (text, attrs, ok) = xml_root_text(body);
                self.xml_text = text;
                self.xml_attrs = attrs;
                if !ok {
                    self.set_error(b"XML parsing error: XML: Failed parsing document.");
                }
            }
            Some(BodyProcessor::Json) => {
                let mut args = Vec::new();
                if let Err(e) = json_args(body, self.json_depth_limit, &mut args)
                    && !body.is_empty()
                {
                    let mut m = b"JSON parsing error: ".to_vec();
                    m.extend_from_slice(e.as_bytes());
                    if e != JSON_DEPTH_ERROR {
                        m.push(b'\n');
                    }
                    self.set_error(&m);
                }
                for a in &args {
                    self.args_combined_size += a.name.len() + a.value.len();
                }
                self.args_other.extend(args);
            }
            Some(BodyProcessor::Multipart) => {
                let ct = self.content_type.clone().unwrap_or_default();
                let mut mp = Multipart::new(self);
                let mut error = Vec::new();
                if mp.init(&ct, &mut error) {
                    mp.process(body, &mut error);
                }
                mp.complete(&mut error);
                if !error.is_empty() {
                    let mut m = b"Multipart parsing error: ".to_vec();
                    m.extend_from_slice(&error);
                    self.set_error(&m);
                }
            }
            Some(BodyProcessor::UrlEncoded) => {
                let mut args = std::mem::take(&mut self.args_post);
                self.extract_arguments(body, &mut args);
                self.args_post = args;
            }
            None => {}
        }
        self.request_body = (!body.is_empty()).then(|| body.to_vec());
        self.request_body_length = body.len();
    }

    fn set_error(&mut self, msg: &[u8]) {
        self.reqbody_error = true;
        self.reqbody_error_msg = msg.to_vec();
    }

    /// `Transaction::processURI` of 3.0.9 (with its fragment handling).
    fn process_uri(&mut self, uri: &[u8], method: &[u8], protocol: &[u8]) {
        let version = protocol.strip_prefix(b"HTTP/").unwrap_or(protocol);
        self.request_method = method.to_vec();
        self.request_protocol = [b"HTTP/", version].concat();
        self.request_line = [method, b" ", uri, b" ", &self.request_protocol].concat();
        self.request_uri_raw = uri.to_vec();

        let uri_s = match memchr(b'#', uri) {
            Some(p) => &uri[..p],
            None => uri,
        };
        if let Some(q) = memchr(b'?', uri_s) {
            self.query_string = uri_s[q + 1..].to_vec();
        }
        let decoded = uri_decode(uri_s);
        let path_info = match memchr(b'?', &decoded) {
            Some(p) => &decoded[..p],
            None => &decoded[..],
        };
        self.request_filename = path_info.to_vec();
        if let Some(off) = path_info.iter().rposition(|&b| b == b'/' || b == b'\\')
            && path_info.len() > off + 1
        {
            self.request_basename = path_info[off + 1..].to_vec();
        }
        self.request_uri = parsed_uri(&decoded).to_vec();
        if !self.query_string.is_empty() {
            let qs = std::mem::take(&mut self.query_string);
            let mut args = std::mem::take(&mut self.args_get);
            self.extract_arguments(&qs, &mut args);
            self.args_get = args;
            self.query_string = qs;
        }
    }

    /// `Transaction::extractArguments`: split on '&' (getline semantics), then on the first '=',
    /// and url-decode both halves leniently ('+' is a space, bad escapes stay as they are).
    fn extract_arguments(&mut self, buf: &[u8], out: &mut Vec<Entry>) {
        for t in ssplit(buf, b'&') {
            let (k, v) = match memchr(b'=', t) {
                Some(p) => (&t[..p], &t[p + 1..]),
                None => (t, &b""[..]),
            };
            let (k, bad_k) = urldecode_nonstrict(k);
            let (v, bad_v) = urldecode_nonstrict(v);
            if bad_k || bad_v {
                self.urlencoded_error = true;
            }
            self.args_combined_size += k.len() + v.len();
            out.push(Entry { name: k, value: v });
        }
    }

    /// `Transaction::addRequestHeader`: the header itself, cookies, and the body type.
    fn add_request_header(&mut self, key: &[u8], value: &[u8]) {
        self.request_headers.push(Entry::new(key, value));
        if key.eq_ignore_ascii_case(b"cookie") {
            self.add_cookies(value);
        }
        if key.eq_ignore_ascii_case(b"content-type") {
            if self.content_type.is_none() {
                self.content_type = Some(value.to_vec());
            }
            if starts_with_ci(value, b"multipart/form-data") {
                self.header_processor = Some(BodyProcessor::Multipart);
            }
            if starts_with_ci(value, b"application/x-www-form-urlencoded") {
                self.header_processor = Some(BodyProcessor::UrlEncoded);
            }
        }
    }

    /// Cookie parsing of `addRequestHeader`: split on ';', trim trailing whitespace of the last
    /// pair, split each on the first '=', left-trim the name, skip empty names. Values keep
    /// their quotes and spaces.
    fn add_cookies(&mut self, value: &[u8]) {
        let mut cookies: Vec<&[u8]> = ssplit(value, b';').collect();
        if let Some(last) = cookies.last_mut() {
            while let [rest @ .., c] = *last {
                if !is_space(*c) {
                    break;
                }
                *last = rest;
            }
        }
        for c in cookies {
            if c.is_empty() {
                continue;
            }
            let (mut k, v) = match memchr(b'=', c) {
                Some(p) => (&c[..p], &c[p + 1..]),
                None => (c, &b""[..]),
            };
            while let [first, rest @ ..] = k {
                if !is_space(*first) {
                    break;
                }
                k = rest;
            }
            if !k.is_empty() {
                self.request_cookies.push(Entry::new(k, v));
            }
        }
    }
}

/// The C-string view libmodsecurity gets through `msc_process_uri`: up to the first NUL.
fn cstr(s: &[u8]) -> &[u8] {
    match memchr(0, s) {
        Some(p) => &s[..p],
        None => s,
    }
}

fn starts_with_ci(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// C `isspace` in the "C" locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `utils::string::ssplit`: `std::getline` tokens, so "a&&b" gives an empty middle token but a
/// trailing separator gives no empty last one, and "" gives nothing.
fn ssplit(buf: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let trimmed = buf.strip_suffix(&[sep]).unwrap_or(buf);
    let empty = buf.is_empty();
    crate::http::split_on(trimmed, sep).filter(move |_| !empty)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `utils::uri_decode`: %XX decoded, everything else (including '+') kept.
fn uri_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && i + 2 < s.len()
            && let (Some(h), Some(l)) = (hex_val(s[i + 1]), hex_val(s[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// `utils::urldecode_nonstrict_inplace`: '+' is a space, valid %XX decoded, an invalid '%' kept
/// (and reported, for URLENCODED_ERROR).
fn urldecode_nonstrict(s: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(s.len());
    let mut invalid = false;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                if i + 2 < s.len()
                    && let (Some(h), Some(l)) = (hex_val(s[i + 1]), hex_val(s[i + 2]))
                {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                invalid = true;
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    (out, invalid)
}

/// REQUEST_URI of `processURI`: an absolute-form target ("scheme://host/path") is reduced to
/// its path; the index arithmetic wraps like the C++ `size_t` one.
fn parsed_uri(decoded: &[u8]) -> &[u8] {
    if decoded.is_empty() || decoded[0] == b'/' {
        return decoded;
    }
    let find = |needle: &[u8], from: usize| -> usize {
        if from > decoded.len() {
            return usize::MAX;
        }
        decoded[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map_or(usize::MAX, |p| p + from)
    };
    let scheme = find(b":", 0).wrapping_add(1);
    let netloc = find(b"//", scheme).wrapping_add(2);
    if netloc != scheme.wrapping_add(2) {
        return decoded;
    }
    match find(b"/", netloc) {
        usize::MAX => decoded,
        path => &decoded[path..],
    }
}

// ---------------------------------------------------------------------------------------------
// multipart/form-data: a port of src/request_body_processor/multipart.cc (3.0.9 behaviour)

const MULTIPART_BUF_SIZE: usize = 4096;

/// One part being built.
#[derive(Default)]
struct Part {
    name: Vec<u8>,
    filename: Vec<u8>,
    is_file: bool,
    /// Header name -> value, in order.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The raw header lines (MULTIPART_PART_HEADERS).
    header_lines: Vec<Vec<u8>>,
    /// The last header line read (raw, or folded), which a folded line replaces.
    last_line: Vec<u8>,
    last_header: Option<usize>,
    value: Vec<u8>,
    file_size: usize,
}

struct Multipart<'c> {
    out: &'c mut Collections,
    boundary: Vec<u8>,
    buf: Vec<u8>,
    buf_contains_line: bool,
    mpp: Option<Part>,
    /// false: reading part headers, true: reading part data.
    in_data: bool,
    reserve: usize,
    seen_data: bool,
    is_complete: bool,
    boundary_count: usize,
    parts: Vec<Part>,
    flag_error: bool,
    flag_crlf_line: bool,
    f: MultipartFlags,
}

/// Count of "boundary" occurrences (case-insensitive) followed somewhere by '='.
fn count_boundary_params(s: &[u8]) -> usize {
    let lower = s.to_ascii_lowercase();
    let mut count = 0;
    let mut i = 0;
    while let Some(p) = lower[i..].windows(8).position(|w| w == b"boundary") {
        i += p + 8;
        if memchr(b'=', &lower[i..]).is_some() {
            count += 1;
        }
    }
    count
}

fn boundary_characters_valid(b: &[u8]) -> bool {
    b.iter().enumerate().all(|(i, &c)| {
        c.is_ascii_alphanumeric() || (c == b' ' && i + 1 != b.len()) || b"'()+_,-./:=?".contains(&c)
    })
}

fn is_token_char(c: u8) -> bool {
    c > 32 && c < 127 && !b"()<>@,;:\\\"/[]?=".contains(&c)
}

impl<'c> Multipart<'c> {
    fn new(out: &'c mut Collections) -> Multipart<'c> {
        Multipart {
            out,
            boundary: Vec::new(),
            buf: Vec::with_capacity(MULTIPART_BUF_SIZE),
            buf_contains_line: true,
            mpp: None,
            in_data: false,
            reserve: 0,
            seen_data: false,
            is_complete: false,
            boundary_count: 0,
            parts: Vec::new(),
            flag_error: false,
            flag_crlf_line: false,
            f: MultipartFlags::default(),
        }
    }

    /// `Multipart::init`: find and validate the boundary in the Content-Type value.
    fn init(&mut self, header: &[u8], error: &mut Vec<u8>) -> bool {
        let header = cstr(header);
        let mut fail = |this: &mut Self, msg: &[u8]| {
            this.flag_error = true;
            *error = msg.to_vec();
            false
        };
        if header.is_empty() {
            return fail(self, b"Multipart: Content-Type header not available.");
        }
        if header.len() > 1024 {
            return fail(self, b"Multipart: Invalid boundary in C-T (length).");
        }
        if !starts_with_ci(header, b"multipart/form-data") {
            return fail(self, b"Multipart: Invalid MIME type.");
        }
        if count_boundary_params(header) > 1 {
            return fail(self, b"Multipart: Multiple boundary parameters in C-T.");
        }
        let Some(bpos) = header.windows(8).position(|w| w == b"boundary") else {
            if count_boundary_params(header) > 0 {
                return fail(
                    self,
                    b"Multipart: Invalid boundary in C-T (case sensitivity).",
                );
            }
            return fail(self, b"Multipart: Boundary not found in C-T.");
        };
        let mut seen_semicolon = false;
        for &c in header.get(19..bpos).unwrap_or_default() {
            if !is_space(c) {
                if !seen_semicolon && c == b';' {
                    seen_semicolon = true;
                } else {
                    return fail(self, b"Multipart: Invalid boundary in C-T (malformed).");
                }
            }
        }
        if !seen_semicolon {
            self.f.missing_semicolon = 1;
        }
        let Some(eq) = memchr(b'=', &header[bpos + 8..]).map(|p| p + bpos + 8) else {
            return fail(self, b"Multipart: Invalid boundary in C-T (malformed).");
        };
        for &c in &header[bpos + 8..eq] {
            if is_space(c) {
                self.f.boundary_whitespace = 1;
            } else {
                return fail(
                    self,
                    b"Multipart: Invalid boundary in C-T (parameter name).",
                );
            }
        }
        let b = &header[eq + 1..];
        if b.first().is_some_and(|&c| is_space(c)) {
            self.f.boundary_whitespace = 1;
        }
        if b.len() >= 2 && b[0] == b'"' && b[b.len() - 1] == b'"' {
            self.boundary = b[1..b.len() - 1].to_vec();
            if self.boundary.is_empty() {
                // `return -1` from a bool function: true, with an empty boundary
                return true;
            }
            self.f.boundary_quoted = 1;
        } else {
            if b.first() == Some(&b'"') || (b.len() >= 2 && b[b.len() - 1] == b'"') {
                return fail(self, b"Multipart: Invalid boundary in C-T (quote).");
            }
            self.boundary = b.to_vec();
            if self.boundary.is_empty() {
                return false;
            }
        }
        if count_boundary_params(&self.boundary) != 0 {
            return fail(self, b"Multipart: Invalid boundary in C-T (content).");
        }
        if !boundary_characters_valid(&self.boundary) {
            return fail(self, b"Multipart: Invalid boundary in C-T (characters).");
        }
        true
    }

    /// `Multipart::process`: the byte loop, line by line through a 4096-byte buffer.
    fn process(&mut self, data: &[u8], error: &mut Vec<u8>) -> bool {
        if data.is_empty() {
            return true;
        }
        self.seen_data = true;
        let mut i = 0;
        while i < data.len() {
            let c = data[i];
            let mut process_buffer = false;
            if c == b'\r' && self.buf.len() == MULTIPART_BUF_SIZE - 1 {
                process_buffer = true;
            } else {
                i += 1;
                self.buf.push(c);
            }
            if c == b'\n' || self.buf.len() == MULTIPART_BUF_SIZE || process_buffer {
                if !self.process_line(process_buffer, error) {
                    return false;
                }
                self.buf.clear();
                self.buf_contains_line = c == b'\n';
            }
            if self.is_complete && i < data.len() {
                self.f.data_after = 1;
                return true;
            }
        }
        true
    }

    /// One buffered line (or buffer-full chunk) of `process`; false aborts parsing.
    fn process_line(&mut self, process_buffer: bool, error: &mut Vec<u8>) -> bool {
        let line = cstr(&self.buf);
        let blen = self.boundary.len();
        let mut processed_as_boundary = false;
        if self.buf_contains_line && line.len() > 3 && line.starts_with(b"--") {
            let matches = line.len() >= blen + 2 && line[2..2 + blen] == self.boundary[..];
            if matches && self.mpp.is_some() && !self.in_data {
                // 3.0.9: our boundary among part headers flags the part and is read as a
                // header line
                self.f.invalid_part = 1;
            } else if matches {
                // 3.0.9 also judges the line end held back before the boundary
                if self.in_data && self.mpp.is_some() {
                    match self.reserve {
                        1 => self.f.lf_line = 1,
                        2 => self.flag_crlf_line = true,
                        _ => {}
                    }
                }
                if self.boundary_count > 0 {
                    self.f.unmatched_boundary = 2;
                }
                let mut end = &line[2 + blen..];
                let mut is_final = false;
                if end.starts_with(b"--") {
                    is_final = true;
                    end = &end[2..];
                    if self.is_complete {
                        self.flag_error = true;
                        *error = b"Multipart: Invalid boundary (final duplicate).".to_vec();
                        return false;
                    }
                }
                if end == b"\r\n" || end == b"\n" {
                    if end == b"\n" {
                        self.f.lf_line = 1;
                    } else {
                        self.flag_crlf_line = true;
                    }
                    self.process_boundary(is_final);
                    if is_final {
                        self.is_complete = true;
                    }
                    processed_as_boundary = true;
                    self.boundary_count += 1;
                } else {
                    self.flag_error = true;
                    let mut m = b"Multipart: Invalid boundary: ".to_vec();
                    m.extend_from_slice(line);
                    *error = m;
                    return false;
                }
            } else {
                if self.f.boundary_quoted != 0
                    && line.len() >= blen + 3
                    && line[2] == b'"'
                    && line[3..3 + blen] == self.boundary[..]
                {
                    self.flag_error = true;
                    *error = b"Multipart: Invalid boundary (quotes).".to_vec();
                    return false;
                }
                let ws = line[2..].iter().take_while(|&&c| is_space(c)).count();
                if ws > 0 && line[2 + ws..].starts_with(&self.boundary) {
                    self.flag_error = true;
                    *error = b"Multipart: Invalid boundary (whitespace).".to_vec();
                    return false;
                }
                self.f.unmatched_boundary = 1;
            }
        } else if self.buf_contains_line {
            let b = &self.buf;
            let found = (0..b.len()).any(|i| {
                b[i] == b'-'
                    && i + 1 < b.len()
                    && b[i + 1] == b'-'
                    && cstr(&b[i + 2..]).starts_with(&self.boundary)
            });
            if found {
                self.f.unmatched_boundary = 1;
            }
        }
        if !processed_as_boundary {
            if self.mpp.is_none() {
                self.f.data_before = 1;
            } else if !self.in_data {
                if self.buf.len() == MULTIPART_BUF_SIZE || process_buffer {
                    self.flag_error = true;
                    *error = b"Multipart: Part header line over 4096 bytes long".to_vec();
                    return false;
                }
                self.process_part_header(error);
            } else {
                self.process_part_data();
            }
        }
        true
    }

    /// `process_part_data`: a trailing CRLF/LF is held back; 3.0.9 never adds it back to
    /// form fields (only file sizes count it).
    fn process_part_data(&mut self) {
        let mut len = self.buf.len();
        let mut reserved = 0;
        if len >= 1 && self.buf[len - 1] == b'\n' {
            reserved = if len >= 2 && self.buf[len - 2] == b'\r' {
                2
            } else {
                1
            };
            len -= reserved;
        }
        let Some(mpp) = self.mpp.as_mut() else { return };
        if mpp.is_file {
            mpp.file_size += len + self.reserve;
        } else {
            mpp.value.extend_from_slice(&self.buf[..len]);
        }
        self.reserve = reserved;
    }

    /// `process_part_header`. Errors set `error` but parsing goes on (3.0.9 compares the
    /// `false` these return with `< 0`); true in every case.
    fn process_part_header(&mut self, error: &mut Vec<u8>) {
        let Some(mpp) = self.mpp.as_mut() else {
            return;
        };
        let buf = &self.buf;
        if memchr(0, buf).is_some() {
            *error = b"Multipart: Nul byte in part headers.".to_vec();
            return;
        }
        let len = buf.len();
        if len > 1 && buf[len - 2] == b'\r' {
            self.flag_crlf_line = true;
        } else {
            self.f.lf_line = 1;
        }
        if buf == b"\r\n" || buf == b"\n" {
            // 3.0.9 reports these but goes on reading headers (the part stays nameless)
            let mut fail = |msg: Vec<u8>| *error = msg;
            let Some(cd) = mpp
                .headers
                .iter()
                .find(|(n, _)| n == b"Content-Disposition")
            else {
                return fail(b"Multipart: Part missing Content-Disposition header.".to_vec());
            };
            let cd = cd.1.clone();
            if let Err(rc) = parse_content_disposition(&cd, mpp, &mut self.f) {
                let mut m =
                    format!("Multipart: Invalid Content-Disposition header ({rc}): ").into_bytes();
                m.extend_from_slice(&cd);
                return fail(m);
            }
            if mpp.name.is_empty() {
                return fail(b"Multipart: Content-Disposition header missing name field.".to_vec());
            }
            if !mpp.filename.is_empty() {
                if !cd.windows(9).any(|w| w == b"filename=") {
                    return fail(
                        b"Multipart: Invalid Content-Disposition header (filename).".to_vec(),
                    );
                }
                mpp.is_file = true;
            }
            self.in_data = true;
            mpp.last_header = None;
        } else if is_space(buf[0]) {
            self.f.header_folding = 1;
            if buf[0] != b'\t' && buf[0] != b' ' {
                self.f.invalid_header_folding = 1;
            }
            let Some(h) = mpp.last_header else {
                *error = b"Multipart: Invalid part header (folding error).".to_vec();
                return;
            };
            let ws = buf.iter().take_while(|&&c| is_space(c)).count();
            if buf[..ws].iter().any(|&c| c != b'\t' && c != b' ') {
                self.f.invalid_header_folding = 1;
            }
            let cont = chomp(&buf[ws..]);
            let (name, value) = &mut mpp.headers[h];
            value.push(b' ');
            value.extend_from_slice(cont);
            let mut line = name.clone();
            line.extend_from_slice(b": ");
            line.extend_from_slice(value);
            // the folded header replaces the line last read if it is in the list, else it is
            // added (so after an invalid or duplicate line both versions are listed)
            match mpp.header_lines.iter().position(|l| *l == mpp.last_line) {
                Some(i) => mpp.header_lines[i] = line.clone(),
                None => mpp.header_lines.push(line.clone()),
            }
            mpp.last_line = line;
            if value.len() > MULTIPART_BUF_SIZE {
                *error = b"Multipart: Part header too long.".to_vec();
            }
        } else {
            mpp.last_line.clone_from(buf);
            let Some(colon) = memchr(b':', buf) else {
                let mut m = b"Multipart: Invalid part header (colon missing): ".to_vec();
                m.extend_from_slice(buf);
                *error = m;
                return;
            };
            if colon == 0 {
                *error = b"Multipart: Invalid part header (header name missing).".to_vec();
                return;
            }
            let name = &buf[..colon];
            let rest = &buf[colon + 1..];
            let ws = rest
                .iter()
                .take_while(|&&c| c == b' ' || c == b'\t')
                .count();
            let value = chomp(&rest[ws..]);
            if mpp.headers.iter().any(|(n, _)| n == name) {
                return;
            }
            mpp.last_header = Some(mpp.headers.len());
            mpp.headers.push((name.to_vec(), value.to_vec()));
            mpp.header_lines.push(buf.clone());
        }
    }

    /// `process_boundary`: finish the current part, start a new one unless final.
    fn process_boundary(&mut self, last: bool) {
        if let Some(mpp) = self.mpp.take() {
            for l in &mpp.header_lines {
                self.out
                    .multipart_part_headers
                    .push(Entry::new(&mpp.name, l));
            }
            if mpp.name.is_empty() {
                self.f.invalid_part = 1;
            } else {
                self.parts.push(mpp);
            }
        }
        if !last {
            self.mpp = Some(Part::default());
            self.in_data = false;
            self.reserve = 0;
        }
    }

    /// `multipart_complete`: the flags, the final-boundary check, then ARGS_POST and FILES.
    fn complete(mut self, error: &mut Vec<u8>) {
        // an unterminated final boundary left in the buffer still ends the body
        let n = self.boundary.len();
        if self.seen_data
            && !self.is_complete
            && self.boundary_count > 0
            && self.buf_contains_line
            && self.buf.len() == 4 + n
            && self.buf.starts_with(b"--")
            && self.buf[2..2 + n] == self.boundary[..]
            && self.buf.ends_with(b"--")
        {
            self.process_boundary(true);
            self.is_complete = true;
        }
        let f = &mut self.f;
        f.crlf_lf_lines = u8::from(self.flag_crlf_line && f.lf_line != 0);
        f.strict_error = u8::from(
            self.flag_error
                || f.boundary_quoted != 0
                || f.boundary_whitespace != 0
                || f.data_before != 0
                || f.data_after != 0
                || f.header_folding != 0
                || f.lf_line != 0
                || f.missing_semicolon != 0
                || f.invalid_quoting != 0
                || f.invalid_part != 0
                || f.invalid_header_folding != 0
                || f.file_limit_exceeded != 0,
        );
        self.out.multipart = self.f;
        if self.seen_data && !self.is_complete {
            *error = if self.boundary_count == 0 {
                b"Multipart: No boundaries found in payload.".to_vec()
            } else {
                b"Multipart: Final boundary missing.".to_vec()
            };
            return;
        }
        for p in self.parts {
            if p.is_file {
                self.out.files.push(Entry::new(&p.name, &p.filename));
                self.out
                    .files_sizes
                    .push(Entry::new(&p.name, p.file_size.to_string().as_bytes()));
                self.out.files_combined_size += p.file_size;
            } else {
                self.out.args_post.push(Entry {
                    name: p.name,
                    value: p.value,
                });
            }
        }
    }
}

/// `utils::string::chomp`: drop every trailing CR and LF, but leave a string made only of
/// them unchanged (`find_last_not_of` finds nothing then).
fn chomp(s: &[u8]) -> &[u8] {
    match s.iter().rposition(|&c| c != b'\n' && c != b'\r') {
        Some(p) => &s[..=p],
        None => s,
    }
}

/// `Multipart::parse_content_disposition`; Err carries libmodsecurity's negative code.
fn parse_content_disposition(cd: &[u8], mpp: &mut Part, f: &mut MultipartFlags) -> Result<(), i32> {
    let cd = cstr(cd);
    let at = |i: usize| cd.get(i).copied().unwrap_or(0);
    if !cd.starts_with(b"form-data") {
        return Err(-1);
    }
    let mut p = 9;
    while at(p) == b'\t' || at(p) == b' ' {
        p += 1;
    }
    if at(p) == 0 {
        return Ok(());
    }
    if at(p) != b';' {
        return Err(-2);
    }
    p += 1;
    while at(p) != 0 {
        while at(p) == b'\t' || at(p) == b' ' {
            p += 1;
        }
        if at(p) == 0 {
            return Err(-3);
        }
        let start = p;
        while !matches!(at(p), 0 | b'=' | b'\t' | b' ') {
            p += 1;
        }
        if at(p) == 0 {
            return Err(-4);
        }
        let name = &cd[start..p];
        while at(p) == b'\t' || at(p) == b' ' {
            p += 1;
        }
        if at(p) == 0 {
            return Err(-5);
        }
        if at(p) != b'=' {
            return Err(-13);
        }
        p += 1;
        while at(p) == b'\t' || at(p) == b' ' {
            p += 1;
        }
        if at(p) == 0 {
            return Err(-6);
        }
        let mut value = Vec::new();
        let mut value_done = false;
        let quoted = at(p) == b'"' || at(p) == b'\'';
        if quoted {
            let quote = at(p);
            if quote == b'\'' {
                f.invalid_quoting = 1;
            }
            p += 1;
            if at(p) == 0 {
                return Err(-7);
            }
            while at(p) != 0 {
                if at(p) == b'\\' {
                    if at(p + 1) == 0 {
                        return Err(-8);
                    }
                    if at(p + 1) == quote || at(p + 1) == b'\\' {
                        p += 1;
                    }
                } else if at(p) == quote {
                    break;
                }
                value.push(at(p));
                p += 1;
            }
            if at(p) == 0 {
                // No closing quote: libmodsecurity steps over the NUL and reads whatever
                // byte follows (undefined behaviour); the installed library accepted the value
                // in 4 of the 6 cases seen, so it is accepted here.
                value_done = true;
            } else {
                p += 1;
            }
        } else {
            let start = p;
            while at(p) != 0 && is_token_char(at(p)) {
                p += 1;
            }
            value.extend_from_slice(&cd[start..p]);
        }
        if name == b"name" || name == b"filename" {
            // 3.0.9 looks for a single quote in unquoted values only
            if !quoted && value.contains(&b'\'') {
                f.invalid_quoting = 1;
            }
            let slot = if name == b"name" {
                &mut mpp.name
            } else {
                &mut mpp.filename
            };
            if !slot.is_empty() {
                return Err(if name == b"name" { -14 } else { -15 });
            }
            *slot = value;
        } else {
            return Err(-11);
        }
        if value_done {
            return Ok(());
        }
        if at(p) != 0 {
            while at(p) == b'\t' || at(p) == b' ' {
                p += 1;
            }
            if at(p) == 0 {
                return Ok(());
            }
            if at(p) != b';' {
                if p > 0 && (cd[p - 1] == b'\'' || cd[p - 1] == b'"') {
                    f.invalid_quoting = 1;
                }
                return Err(-12);
            }
            p += 1;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// JSON: a yajl-compatible parser feeding the argument naming of json.cc

enum Container {
    Map { name: Vec<u8> },
    Array { name: Vec<u8>, counter: usize },
}

/// The naming state of json.cc: the container stack and the current map key.
struct JsonNames<'o> {
    containers: Vec<Container>,
    current_key: Vec<u8>,
    out: &'o mut Vec<Entry>,
}

impl JsonNames<'_> {
    /// `JSON::getCurrentKey` as 3.0.9 behaves: "json" at the top, "" inside an array,
    /// "empty-key" for an empty map key.
    fn current_key(&self) -> Vec<u8> {
        match self.containers.last() {
            None => b"json".to_vec(),
            Some(Container::Array { .. }) => Vec::new(),
            Some(Container::Map { .. }) if self.current_key.is_empty() => b"empty-key".to_vec(),
            Some(Container::Map { .. }) => self.current_key.clone(),
        }
    }

    fn add(&mut self, value: &[u8]) {
        let mut path = Vec::new();
        for c in &self.containers {
            match c {
                Container::Map { name } => {
                    path.extend_from_slice(name);
                    path.push(b'.');
                }
                Container::Array { name, counter } => {
                    path.extend_from_slice(name);
                    path.extend_from_slice(b".array_");
                    path.extend_from_slice(counter.to_string().as_bytes());
                }
            }
        }
        if let Some(Container::Array { counter, .. }) = self.containers.last_mut() {
            *counter += 1;
        } else {
            path.extend_from_slice(&self.current_key());
        }
        self.out.push(Entry {
            name: path,
            value: value.to_vec(),
        });
    }

    fn start(&mut self, array: bool) {
        let name = self.current_key();
        self.containers.push(if array {
            Container::Array { name, counter: 0 }
        } else {
            Container::Map { name }
        });
    }

    fn end(&mut self) {
        self.containers.pop();
        if let Some(Container::Array { counter, .. }) = self.containers.last_mut() {
            *counter += 1;
        }
    }
}

/// A yajl token; strings are still raw (escapes undecoded), numbers are their text.
enum Tok {
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    Colon,
    Str(usize, usize),
    Value(&'static [u8]),
    Num(usize, usize),
}

/// What yajl's lexer returns: a token, "need more input" (only at the very end), or an error.
enum Lexed {
    Tok(Tok),
    Eof,
    Err(&'static str),
}

/// yajl's parser states (`yajl_state_*`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Start,
    Complete,
    MapStart,
    MapSep,
    MapNeedVal,
    MapGotVal,
    MapNeedKey,
    ArrayStart,
    ArrayGotVal,
    ArrayNeedVal,
}

const PREMATURE_EOF: &str = "parse error: premature EOF";

/// libmodsecurity's default SecRequestBodyJsonDepthLimit.
const JSON_DEFAULT_DEPTH_LIMIT: usize = 10000;

/// The error of a body nested deeper than the limit, exactly as 3.0.9 words it.
const JSON_DEPTH_ERROR: &str =
    "parse error: client cancelled parse via callback return value\n. Parsing depth limit exceeded";

struct JsonParser<'a, 'o> {
    s: &'a [u8],
    i: usize,
    depth_limit: usize,
    names: JsonNames<'o>,
}

impl JsonParser<'_, '_> {
    /// The byte at `i`, followed by the single space `yajl_complete_parse` feeds to flush the
    /// lexer (so "1" ends, "tru" is an invalid string and "\"ab" is a premature EOF).
    fn at(&self, i: usize) -> Option<u8> {
        match i.cmp(&self.s.len()) {
            std::cmp::Ordering::Less => Some(self.s[i]),
            std::cmp::Ordering::Equal => Some(b' '),
            std::cmp::Ordering::Greater => None,
        }
    }

    fn digit(&self, i: usize) -> bool {
        self.at(i).is_some_and(|c| c.is_ascii_digit())
    }

    /// `yajl_lex_lex`.
    fn lex(&mut self) -> Lexed {
        let c = loop {
            match self.at(self.i) {
                None => return Lexed::Eof,
                Some(b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') => self.i += 1,
                Some(c) => break c,
            }
        };
        let tok = |t, this: &mut Self| {
            this.i += 1;
            Lexed::Tok(t)
        };
        match c {
            b'{' => tok(Tok::LBrace, self),
            b'}' => tok(Tok::RBrace, self),
            b'[' => tok(Tok::LBracket, self),
            b']' => tok(Tok::RBracket, self),
            b',' => tok(Tok::Comma, self),
            b':' => tok(Tok::Colon, self),
            b't' | b'f' | b'n' => {
                let (word, val): (&[u8], &'static [u8]) = match c {
                    b't' => (b"true", b"true"),
                    b'f' => (b"false", b"false"),
                    _ => (b"null", b""),
                };
                for (k, &w) in word.iter().enumerate() {
                    match self.at(self.i + k) {
                        None => return Lexed::Eof,
                        Some(b) if b != w => {
                            return Lexed::Err("lexical error: invalid string in json text.");
                        }
                        Some(_) => {}
                    }
                }
                self.i += word.len();
                Lexed::Tok(Tok::Value(val))
            }
            b'"' => self.lex_string(),
            b'-' | b'0'..=b'9' => self.lex_number(),
            b'/' => Lexed::Err(
                "lexical error: probable comment found in input text, comments are not enabled.",
            ),
            _ => Lexed::Err("lexical error: invalid char in json text."),
        }
    }

    fn lex_number(&mut self) -> Lexed {
        let start = self.i;
        let mut i = self.i;
        if self.at(i) == Some(b'-') {
            i += 1;
        }
        if self.at(i) == Some(b'0') {
            i += 1;
        } else if self.digit(i) {
            while self.digit(i) {
                i += 1;
            }
        } else {
            return Lexed::Err(
                "lexical error: malformed number, a digit is required after the minus sign.",
            );
        }
        if self.at(i) == Some(b'.') {
            i += 1;
            if !self.digit(i) {
                return Lexed::Err(
                    "lexical error: malformed number, a digit is required after the decimal \
                     point.",
                );
            }
            while self.digit(i) {
                i += 1;
            }
        }
        if matches!(self.at(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(self.at(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !self.digit(i) {
                return Lexed::Err(
                    "lexical error: malformed number, a digit is required after the exponent.",
                );
            }
            while self.digit(i) {
                i += 1;
            }
        }
        self.i = i;
        Lexed::Tok(Tok::Num(start, i))
    }

    /// A string token, validated like yajl's lexer (escapes, control characters, UTF-8).
    fn lex_string(&mut self) -> Lexed {
        let start = self.i + 1;
        let mut i = start;
        loop {
            let Some(c) = self.at(i) else {
                return Lexed::Eof;
            };
            match c {
                b'"' => {
                    self.i = i + 1;
                    return Lexed::Tok(Tok::Str(start, i));
                }
                b'\\' => {
                    let Some(e) = self.at(i + 1) else {
                        return Lexed::Eof;
                    };
                    if e == b'u' {
                        for k in 0..4 {
                            match self.at(i + 2 + k) {
                                None => return Lexed::Eof,
                                Some(h) if hex_val(h).is_none() => {
                                    return Lexed::Err(
                                        "lexical error: invalid (non-hex) character occurs \
                                         after '\\u' inside string.",
                                    );
                                }
                                Some(_) => {}
                            }
                        }
                        i += 6;
                    } else if b"\"\\/bfnrt".contains(&e) {
                        i += 2;
                    } else {
                        return Lexed::Err(
                            "lexical error: inside a string, '\\' occurs before a character \
                             which it may not.",
                        );
                    }
                }
                0..=0x1f => {
                    return Lexed::Err("lexical error: invalid character inside string.");
                }
                0x80.. => {
                    let n = match c {
                        0xC0..=0xDF => 2,
                        0xE0..=0xEF => 3,
                        0xF0..=0xF7 => 4,
                        _ => return Lexed::Err("lexical error: invalid bytes in UTF8 string."),
                    };
                    for k in 1..n {
                        match self.at(i + k) {
                            None => return Lexed::Eof,
                            Some(b) if b & 0xC0 != 0x80 => {
                                return Lexed::Err("lexical error: invalid bytes in UTF8 string.");
                            }
                            Some(_) => {}
                        }
                    }
                    i += n;
                }
                _ => i += 1,
            }
        }
    }

    /// The `yajl_do_parse` state machine (iterative: deep nesting cannot overflow the stack).
    fn run(&mut self) -> Result<(), &'static str> {
        let mut stack = vec![St::Start];
        while let Some(&st) = stack.last() {
            let tok = match self.lex() {
                Lexed::Eof if st == St::Complete => return Ok(()),
                Lexed::Eof => return Err(PREMATURE_EOF),
                _ if st == St::Complete => return Err("parse error: trailing garbage"),
                Lexed::Err(e) => return Err(e),
                Lexed::Tok(t) => t,
            };
            let top = stack.len() - 1;
            match st {
                St::Start | St::MapNeedVal | St::ArrayNeedVal | St::ArrayStart => {
                    let mut push = None;
                    match tok {
                        Tok::Str(a, b) => {
                            let v = yajl_string_decode(&self.s[a..b]);
                            self.names.add(&v);
                        }
                        Tok::Num(a, b) => {
                            let v = &self.s[a..b];
                            self.names.add(v);
                        }
                        Tok::Value(v) => self.names.add(v),
                        Tok::LBrace | Tok::LBracket
                            if self.names.containers.len() >= self.depth_limit =>
                        {
                            return Err(JSON_DEPTH_ERROR);
                        }
                        Tok::LBrace => {
                            self.names.start(false);
                            push = Some(St::MapStart);
                        }
                        Tok::LBracket => {
                            self.names.start(true);
                            push = Some(St::ArrayStart);
                        }
                        Tok::RBracket if st == St::ArrayStart => {
                            stack.pop();
                            self.names.end();
                            continue;
                        }
                        _ => return Err("parse error: unallowed token at this point in JSON text"),
                    }
                    stack[top] = match st {
                        St::Start => St::Complete,
                        St::MapNeedVal => St::MapGotVal,
                        _ => St::ArrayGotVal,
                    };
                    if let Some(p) = push {
                        stack.push(p);
                    }
                }
                St::MapStart | St::MapNeedKey => match tok {
                    Tok::Str(a, b) => {
                        self.names.current_key = yajl_string_decode(&self.s[a..b]);
                        stack[top] = St::MapSep;
                    }
                    Tok::RBrace if st == St::MapStart => {
                        stack.pop();
                        self.names.end();
                    }
                    _ => return Err("parse error: invalid object key (must be a string)"),
                },
                St::MapSep => match tok {
                    Tok::Colon => stack[top] = St::MapNeedVal,
                    _ => {
                        return Err(
                            "parse error: object key and value must be separated by a colon \
                             (':')",
                        );
                    }
                },
                St::MapGotVal => match tok {
                    Tok::RBrace => {
                        stack.pop();
                        self.names.end();
                    }
                    Tok::Comma => stack[top] = St::MapNeedKey,
                    _ => {
                        return Err(
                            "parse error: after key and value, inside map, I expect ',' or '}'",
                        );
                    }
                },
                St::ArrayGotVal => match tok {
                    Tok::RBracket => {
                        stack.pop();
                        self.names.end();
                    }
                    Tok::Comma => stack[top] = St::ArrayNeedVal,
                    _ => return Err("parse error: after array element, I expect ',' or ']'"),
                },
                St::Complete => return Err("parse error: trailing garbage"),
            }
        }
        Ok(())
    }
}

/// `yajl_string_decode` on a validated raw string, a high surrogate not followed by `\u`
/// becomes '?'.
fn yajl_string_decode(s: &[u8]) -> Vec<u8> {
    let hex = |i: usize| -> u32 {
        (0..4).fold(0, |v, k| {
            v << 4 | u32::from(s.get(i + k).copied().and_then(hex_val).unwrap_or(0))
        })
    };
    let mut out = Vec::with_capacity(s.len());
    let mut end = 0;
    while end < s.len() {
        if s[end] != b'\\' {
            out.push(s[end]);
            end += 1;
            continue;
        }
        end += 1;
        match s.get(end).copied().unwrap_or(0) {
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b'f' => out.push(0x0c),
            b'b' => out.push(0x08),
            b't' => out.push(b'\t'),
            b'u' => {
                let mut cp = hex(end + 1);
                end += 4;
                if cp & 0xFC00 == 0xD800 {
                    end += 1;
                    if s.get(end) == Some(&b'\\') && s.get(end + 1) == Some(&b'u') {
                        let lo = hex(end + 2);
                        cp = ((cp & 0x3F) << 10) | ((((cp >> 6) & 0xF) + 1) << 16) | (lo & 0x3FF);
                        end += 5;
                    } else {
                        // (the installed yajl goes on with the byte after the four digits)
                        out.push(b'?');
                        continue;
                    }
                }
                push_utf8(&mut out, cp);
            }
            c => out.push(c),
        }
        end += 1;
    }
    out
}

/// yajl's `Utf32toUtf8`.
fn push_utf8(out: &mut Vec<u8>, cp: u32) {
    if cp < 0x80 {
        out.push(cp as u8);
    } else if cp < 0x800 {
        out.extend_from_slice(&[0xC0 | (cp >> 6) as u8, 0x80 | (cp & 0x3F) as u8]);
    } else if cp < 0x10000 {
        out.extend_from_slice(&[
            0xE0 | (cp >> 12) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]);
    } else if cp < 0x200000 {
        out.extend_from_slice(&[
            0xF0 | (cp >> 18) as u8,
            0x80 | ((cp >> 12) & 0x3F) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]);
    } else {
        out.push(b'?');
    }
}

/// Parses a JSON body into ARGS entries as json.cc names them. Arguments seen before an error
/// are kept (yajl is a streaming parser); the error is yajl's message without its newline.
fn json_args(body: &[u8], depth_limit: usize, out: &mut Vec<Entry>) -> Result<(), &'static str> {
    let mut p = JsonParser {
        s: body,
        i: 0,
        depth_limit,
        names: JsonNames {
            containers: Vec::new(),
            current_key: Vec::new(),
            out,
        },
    };
    p.run()
}

// ---------------------------------------------------------------------------------------------
// XML: what `XML:/*` yields, the text content of the root element (libxml2 xmlNodeGetContent)

struct XmlParser<'a> {
    s: &'a [u8],
    i: usize,
    text: Vec<u8>,
    /// Attribute values, normalized.
    attrs: Vec<Vec<u8>>,
    /// The DOCTYPE names an external subset: undeclared entities are then no error.
    external_dtd: bool,
    /// Internal general entities of the DOCTYPE: name, literal value.
    entities: Vec<(Vec<u8>, Vec<u8>)>,
}

/// XML white space.
fn is_xml_blank(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

impl XmlParser<'_> {
    fn starts(&self, p: &[u8]) -> bool {
        self.s[self.i..].starts_with(p)
    }

    fn skip_ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    /// Skips up to and past `end`; false if it never comes.
    fn skip_past(&mut self, end: &[u8]) -> bool {
        match self.s[self.i..].windows(end.len()).position(|w| w == end) {
            Some(p) => {
                self.i += p + end.len();
                true
            }
            None => false,
        }
    }

    /// A comment after "<!--": no "--" inside (libxml2 treats it as fatal).
    fn comment(&mut self) -> bool {
        self.i += 4;
        match self.s[self.i..].windows(2).position(|w| w == b"--") {
            Some(p) if self.s.get(self.i + p + 2) == Some(&b'>') => {
                self.i += p + 3;
                true
            }
            _ => false,
        }
    }

    /// A processing instruction after "<?": a target other than "xml", then blank or "?>".
    fn pi(&mut self) -> bool {
        self.i += 2;
        let Some(target) = self.name() else {
            return false;
        };
        if target.eq_ignore_ascii_case(b"xml") {
            return false;
        }
        if !self.starts(b"?>") && !self.s.get(self.i).is_some_and(|&c| is_xml_blank(c)) {
            return false;
        }
        self.skip_past(b"?>")
    }

    /// Comments, PIs and whitespace allowed outside the root element.
    fn misc(&mut self) -> bool {
        loop {
            self.skip_ws();
            let ok = if self.starts(b"<!--") {
                self.comment()
            } else if self.starts(b"<?") {
                self.pi()
            } else {
                return true;
            };
            if !ok {
                return false;
            }
        }
    }

    /// An XML name (ASCII name characters; any byte >= 0x80 is accepted as a letter).
    fn name(&mut self) -> Option<&[u8]> {
        let start = self.i;
        let first = *self.s.get(self.i)?;
        if !(first.is_ascii_alphabetic() || first == b'_' || first == b':' || first >= 0x80) {
            return None;
        }
        while self.i < self.s.len() {
            let c = self.s[self.i];
            if !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b':' | b'-' | b'.') || c >= 0x80) {
                break;
            }
            self.i += 1;
        }
        let n = &self.s[start..self.i];
        // non-ASCII name characters must be UTF-8
        std::str::from_utf8(n).is_ok().then_some(n)
    }

    /// S? '=' S? then a quoted value; returns the value.
    fn eq_quoted(&mut self) -> Option<&[u8]> {
        self.skip_ws();
        if self.s.get(self.i) != Some(&b'=') {
            return None;
        }
        self.i += 1;
        self.skip_ws();
        let q = *self.s.get(self.i).filter(|&&q| q == b'"' || q == b'\'')?;
        self.i += 1;
        let end = memchr(q, &self.s[self.i..])?;
        let v = &self.s[self.i..self.i + end];
        self.i += end + 1;
        Some(v)
    }

    /// The XML declaration `<?xml version="1.0" encoding="..." standalone="..."?>`.
    fn xml_decl(&mut self) -> bool {
        self.i += 5;
        let mut blank = self.s.get(self.i).is_some_and(|&c| is_xml_blank(c));
        self.skip_ws();
        if !blank || !self.starts(b"version") {
            return false;
        }
        self.i += 7;
        let Some(v) = self.eq_quoted() else {
            return false;
        };
        let dot = memchr(b'.', v);
        let num_ok = dot.is_some_and(|d| {
            d > 0
                && v[..d].iter().all(u8::is_ascii_digit)
                && v[d + 1..].iter().all(u8::is_ascii_digit)
        });
        if !num_ok {
            return false;
        }
        for (kw, check) in [(&b"encoding"[..], 0), (&b"standalone"[..], 1)] {
            blank = self.s.get(self.i).is_some_and(|&c| is_xml_blank(c));
            self.skip_ws();
            if blank && self.starts(kw) {
                self.i += kw.len();
                let Some(v) = self.eq_quoted() else {
                    return false;
                };
                let ok = if check == 0 {
                    v.first().is_some_and(u8::is_ascii_alphabetic)
                        && v.iter()
                            .all(|&c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
                } else {
                    v == b"yes" || v == b"no"
                };
                if !ok {
                    return false;
                }
            }
        }
        self.skip_ws();
        if !self.starts(b"?>") {
            return false;
        }
        self.i += 2;
        true
    }

    /// `<!DOCTYPE name [ExternalID] [internal subset]>`, checked the way libxml2 rejects it
    /// (markup declarations are checked only by keyword and, for ELEMENT, content spec).
    fn doctype(&mut self) -> bool {
        self.i += 9;
        if !self.s.get(self.i).is_some_and(|&c| is_xml_blank(c)) {
            return false;
        }
        self.skip_ws();
        if self.name().is_none() {
            return false;
        }
        self.skip_ws();
        for (kw, n) in [(&b"SYSTEM"[..], 1), (&b"PUBLIC"[..], 2)] {
            if self.starts(kw) {
                self.i += kw.len();
                for _ in 0..n {
                    self.skip_ws();
                    let Some(&q) = self.s.get(self.i).filter(|&&q| q == b'"' || q == b'\'') else {
                        return false;
                    };
                    self.i += 1;
                    let Some(end) = memchr(q, &self.s[self.i..]) else {
                        return false;
                    };
                    self.i += end + 1;
                }
                self.external_dtd = true;
                self.skip_ws();
            }
        }
        if self.s.get(self.i) == Some(&b'[') {
            self.i += 1;
            loop {
                self.skip_ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    break;
                }
                let ok = if self.starts(b"<!--") {
                    self.comment()
                } else if self.starts(b"<?") {
                    self.pi()
                } else if self.s.get(self.i) == Some(&b'%') {
                    self.skip_past(b";")
                } else {
                    self.markup_decl()
                };
                if !ok {
                    return false;
                }
            }
            self.skip_ws();
        }
        if self.s.get(self.i) != Some(&b'>') {
            return false;
        }
        self.i += 1;
        true
    }

    /// One `<!ELEMENT|ATTLIST|ENTITY|NOTATION ...>` of an internal subset; internal general
    /// entities are remembered for expansion.
    fn markup_decl(&mut self) -> bool {
        let Some(kw) = [&b"<!ELEMENT"[..], b"<!ATTLIST", b"<!ENTITY", b"<!NOTATION"]
            .into_iter()
            .find(|k| self.starts(k))
        else {
            return false;
        };
        self.i += kw.len();
        if !self.s.get(self.i).is_some_and(|&c| is_xml_blank(c)) {
            return false;
        }
        self.skip_ws();
        if kw == b"<!ENTITY" && self.s.get(self.i) != Some(&b'%') {
            let Some(name) = self.name().map(<[u8]>::to_vec) else {
                return false;
            };
            self.skip_ws();
            if let Some(&q) = self.s.get(self.i).filter(|&&q| q == b'"' || q == b'\'') {
                self.i += 1;
                let Some(end) = memchr(q, &self.s[self.i..]) else {
                    return false;
                };
                let value = self.s[self.i..self.i + end].to_vec();
                self.i += end + 1;
                if !self.entities.iter().any(|(n, _)| *n == name) {
                    self.entities.push((name, value));
                }
            }
        } else if kw == b"<!ELEMENT" {
            if self.name().is_none() {
                return false;
            }
            self.skip_ws();
            if let Some(kw) = [&b"EMPTY"[..], b"ANY"].into_iter().find(|k| self.starts(k)) {
                self.i += kw.len();
                self.skip_ws();
                let ok = self.s.get(self.i) == Some(&b'>');
                self.i += 1;
                return ok;
            }
            if !self.starts(b"(") {
                return false;
            }
        }
        // up to the closing '>', skipping quoted literals
        while let Some(&c) = self.s.get(self.i) {
            self.i += 1;
            match c {
                b'>' => return true,
                b'"' | b'\'' => match memchr(c, &self.s[self.i..]) {
                    Some(e) => self.i += e + 1,
                    None => return false,
                },
                _ => {}
            }
        }
        false
    }

    /// Appends character data with XML line-end normalisation; false on a forbidden char.
    fn push_text(&mut self, t: &[u8]) -> bool {
        // libxml2 stops at the first byte that is not UTF-8 (documents declaring another
        // encoding are not converted here)
        let (t, utf8_ok) = match std::str::from_utf8(t) {
            Ok(_) => (t, true),
            Err(e) => (&t[..e.valid_up_to()], false),
        };
        let mut k = 0;
        while k < t.len() {
            let c = t[k];
            if c == b'\r' {
                self.text.push(b'\n');
                if t.get(k + 1) == Some(&b'\n') {
                    k += 1;
                }
            } else if c < 0x20 && c != b'\t' && c != b'\n' {
                return false;
            } else {
                self.text.push(c);
            }
            k += 1;
        }
        utf8_ok
    }

    /// An entity or character reference after '&'.
    fn reference(&mut self) -> bool {
        let Some(end) = memchr(b';', &self.s[self.i..]) else {
            return false;
        };
        let r = &self.s[self.i + 1..self.i + end];
        self.i += end + 1;
        let cp = if let Some(h) = r.strip_prefix(b"#x") {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u32::from_str_radix(h, 16).ok())
        } else if let Some(d) = r.strip_prefix(b"#") {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| d.parse::<u32>().ok())
        } else {
            let c = match r {
                b"lt" => b'<',
                b"gt" => b'>',
                b"amp" => b'&',
                b"quot" => b'"',
                b"apos" => b'\'',
                _ => {
                    // an entity of the DOCTYPE: its literal value (markup in it is not parsed)
                    if let Some((_, v)) = self.entities.iter().find(|(n, _)| n == r) {
                        let v = v.clone();
                        return self.push_text(&v);
                    }
                    return self.external_dtd;
                }
            };
            self.text.push(c);
            return true;
        };
        match cp.and_then(char::from_u32) {
            Some(ch) if ch != '\0' && (ch >= ' ' || matches!(ch, '\t' | '\n' | '\r')) => {
                let mut b = [0u8; 4];
                self.text
                    .extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                true
            }
            _ => false,
        }
    }

    /// Attributes up to '>' or "/>"; returns Some(self_closing).
    fn attributes(&mut self) -> Option<bool> {
        let mut seen: Vec<Vec<u8>> = Vec::new();
        loop {
            let before = self.i;
            self.skip_ws();
            match self.s.get(self.i) {
                None => return None,
                Some(b'>') => {
                    self.i += 1;
                    return Some(false);
                }
                Some(b'/') => {
                    return (self.s.get(self.i + 1) == Some(&b'>')).then(|| {
                        self.i += 2;
                        true
                    });
                }
                Some(_) => {}
            }
            if before == self.i {
                return None; // attributes must be separated by whitespace
            }
            let n = self.name()?.to_vec();
            if seen.contains(&n) {
                return None;
            }
            seen.push(n);
            self.skip_ws();
            if self.s.get(self.i) != Some(&b'=') {
                return None;
            }
            self.i += 1;
            self.skip_ws();
            let q = *self.s.get(self.i).filter(|&&q| q == b'"' || q == b'\'')?;
            self.i += 1;
            let end = memchr(q, &self.s[self.i..])?;
            let v = &self.s[self.i..self.i + end];
            if memchr(b'<', v).is_some() || std::str::from_utf8(v).is_err() {
                return None;
            }
            self.attrs.push(attribute_value(v));
            self.i += end + 1;
        }
    }

    /// The root element and its content; false on the first well-formedness error (the text
    /// gathered so far stays, like libxml2's partial tree).
    fn element(&mut self) -> bool {
        let mut stack: Vec<Vec<u8>> = Vec::new();
        loop {
            // at '<' of a start tag
            self.i += 1;
            let Some(n) = self.name().map(<[u8]>::to_vec) else {
                return false;
            };
            match self.attributes() {
                None => return false,
                Some(true) => {
                    if stack.is_empty() {
                        return true;
                    }
                }
                Some(false) => stack.push(n),
            }
            // content until the next start tag
            loop {
                let Some(lt) = self.s[self.i..]
                    .iter()
                    .position(|&c| c == b'<' || c == b'&')
                else {
                    let t = &self.s[self.i..];
                    self.push_text(t);
                    return false;
                };
                let t = &self.s[self.i..self.i + lt];
                if !self.push_text(t) || t.windows(3).any(|w| w == b"]]>") {
                    return false;
                }
                self.i += lt;
                if self.s[self.i] == b'&' {
                    if !self.reference() {
                        return false;
                    }
                } else if self.starts(b"<![CDATA[") {
                    self.i += 9;
                    let Some(e) = self.s[self.i..].windows(3).position(|w| w == b"]]>") else {
                        return false;
                    };
                    let t = &self.s[self.i..self.i + e];
                    // a CDATA section reaches the tree whole or not at all
                    if t.iter()
                        .any(|&c| c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r'))
                        || std::str::from_utf8(t).is_err()
                    {
                        return false;
                    }
                    self.push_text(t);
                    self.i += e + 3;
                } else if self.starts(b"<!--") {
                    if !self.comment() {
                        return false;
                    }
                } else if self.starts(b"<?") {
                    if !self.pi() {
                        return false;
                    }
                } else if self.starts(b"</") {
                    self.i += 2;
                    let Some(n) = self.name().map(<[u8]>::to_vec) else {
                        return false;
                    };
                    self.skip_ws();
                    if self.s.get(self.i) != Some(&b'>') || stack.pop().as_ref() != Some(&n) {
                        return false;
                    }
                    self.i += 1;
                    if stack.is_empty() {
                        return true;
                    }
                } else {
                    break;
                }
            }
        }
    }
}

/// Parses an XML body: (text of the root element if one was started, well-formed?).
/// An attribute value as libxml2 hands it out: character and predefined entity references
/// decoded, each white-space character (tab, CR, LF) a space, CRLF one space.
fn attribute_value(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'\r' if v.get(i + 1) == Some(&b'\n') => {
                out.push(b' ');
                i += 2;
                continue;
            }
            b'\t' | b'\n' | b'\r' => out.push(b' '),
            b'&' => {
                let Some(end) = memchr(b';', &v[i..]) else {
                    out.push(b'&');
                    i += 1;
                    continue;
                };
                let name = &v[i + 1..i + end];
                let decoded: Option<u32> = match name {
                    b"lt" => Some(u32::from(b'<')),
                    b"gt" => Some(u32::from(b'>')),
                    b"amp" => Some(u32::from(b'&')),
                    b"quot" => Some(u32::from(b'"')),
                    b"apos" => Some(u32::from(b'\'')),
                    [b'#', b'x', hex @ ..] => std::str::from_utf8(hex)
                        .ok()
                        .and_then(|h| u32::from_str_radix(h, 16).ok()),
                    [b'#', dec @ ..] => std::str::from_utf8(dec).ok().and_then(|d| d.parse().ok()),
                    _ => None,
                };
                match decoded.and_then(char::from_u32) {
                    Some(c) => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        i += end + 1;
                        continue;
                    }
                    None => out.push(b'&'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn xml_root_text(body: &[u8]) -> (Option<Vec<u8>>, Vec<Vec<u8>>, bool) {
    let s = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut p = XmlParser {
        s,
        i: 0,
        text: Vec::new(),
        attrs: Vec::new(),
        external_dtd: false,
        entities: Vec::new(),
    };
    if p.starts(b"<?xml") && p.s.get(5).is_some_and(|&c| is_xml_blank(c)) && !p.xml_decl() {
        return (None, Vec::new(), false);
    }
    if !p.misc() {
        return (None, Vec::new(), false);
    }
    if p.starts(b"<!DOCTYPE") && (!p.doctype() || !p.misc()) {
        return (None, Vec::new(), false);
    }
    if p.s.get(p.i) != Some(&b'<') || p.starts(b"</") || p.starts(b"<!") {
        return (None, Vec::new(), false);
    }
    let ok = p.element();
    let ok = ok && p.misc() && p.i == p.s.len();
    (Some(p.text), p.attrs, ok)
}

#[cfg(test)]
mod tests {
    //! Expected values marked "lib" were produced by libmodsecurity 3.0.9 through
    //! bench/modsec/reference/collections/harness.c (`SecRule <VARS> @unconditionalMatch` collecting MATCHED_VAR_NAME and
    //! MATCHED_VAR of every match).

    use super::*;

    /// `ssplit` gives `std::getline`'s tokens: `slice::split` of the input without one
    /// trailing separator, and nothing for an empty input.
    #[test]
    fn ssplit_gives_getline_tokens() {
        let cases: [&[u8]; 9] = [
            b"", b"&", b"&&", b"a", b"a&", b"&a", b"a&&b", b"a&b&", b"a&b&&",
        ];
        for buf in cases {
            let trimmed = buf.strip_suffix(b"&").unwrap_or(buf);
            let want: Vec<&[u8]> = if buf.is_empty() {
                Vec::new()
            } else {
                trimmed.split(|&b| b == b'&').collect()
            };
            assert_eq!(ssplit(buf, b'&').collect::<Vec<_>>(), want, "{buf:?}");
        }
        assert_eq!(ssplit(b"a&&b", b'&').count(), 3);
        assert_eq!(ssplit(b"a&", b'&').collect::<Vec<_>>(), vec![&b"a"[..]]);
    }

    fn head(method: &str, target: &str, headers: &[(&str, &str)]) -> Collections {
        let h: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        Collections::from_head(&RequestInput {
            method: method.as_bytes(),
            target: target.as_bytes(),
            protocol: b"HTTP/1.1",
            headers: &h,
            body: b"",
            remote_addr: "10.0.0.1",
        })
    }

    fn pairs(v: &[Entry]) -> Vec<(String, String)> {
        v.iter()
            .map(|e| {
                (
                    String::from_utf8_lossy(&e.name).into_owned(),
                    String::from_utf8_lossy(&e.value).into_owned(),
                )
            })
            .collect()
    }

    fn p(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn s(v: &[u8]) -> &str {
        std::str::from_utf8(v).unwrap()
    }

    #[test]
    fn query_arguments_lib() {
        let c = head(
            "GET",
            "/a%2fb/c+d.php?x=1&y&=z&a+b=%zz%41&&q=%u0041#frag",
            &[],
        );
        assert_eq!(
            pairs(&c.args_get),
            p(&[
                ("x", "1"),
                ("y", ""),
                ("", "z"),
                ("a b", "%zzA"),
                ("", ""),
                ("q", "%u0041")
            ])
        );
        assert!(c.urlencoded_error);
        assert_eq!(c.args_combined_size, 18);
        assert_eq!(s(&c.query_string), "x=1&y&=z&a+b=%zz%41&&q=%u0041");
        assert_eq!(
            s(&c.request_uri),
            "/a/b/c+d.php?x=1&y&=z&a+b=%zzA&&q=%u0041"
        );
        assert_eq!(
            s(&c.request_uri_raw),
            "/a%2fb/c+d.php?x=1&y&=z&a+b=%zz%41&&q=%u0041#frag"
        );
        assert_eq!(s(&c.request_filename), "/a/b/c+d.php");
        assert_eq!(s(&c.request_basename), "c+d.php");
        assert_eq!(
            s(&c.request_line),
            "GET /a%2fb/c+d.php?x=1&y&=z&a+b=%zz%41&&q=%u0041#frag HTTP/1.1"
        );
        assert_eq!(s(&c.request_protocol), "HTTP/1.1");
        assert_eq!(c.default_processor(), None);
    }

    #[test]
    fn separators_lib() {
        assert_eq!(
            pairs(&head("GET", "/a?x=1&", &[]).args_get),
            p(&[("x", "1")])
        );
        assert_eq!(
            pairs(&head("GET", "/a?&x", &[]).args_get),
            p(&[("", ""), ("x", "")])
        );
        let c = head("GET", "/a?", &[]);
        assert!(c.args_get.is_empty() && c.query_string.is_empty());
        let c = head("GET", "/a%3fb?c=%3f", &[]);
        assert_eq!(s(&c.request_uri), "/a?b?c=?");
        assert_eq!(s(&c.request_filename), "/a");
        assert_eq!(s(&c.query_string), "c=%3f");
        assert_eq!(pairs(&c.args_get), p(&[("c", "?")]));
    }

    #[test]
    fn uri_forms_lib() {
        // (target, REQUEST_URI, REQUEST_FILENAME, REQUEST_BASENAME, QUERY_STRING)
        let cases = [
            (
                "http://h:80/a%2Fb/x.php?q=1%26#f",
                "/a/b/x.php?q=1&",
                "http://h:80/a/b/x.php",
                "x.php",
                "q=1%26",
            ),
            ("https://h", "https://h", "https://h", "h", ""),
            ("h:/x", "h:/x", "h:/x", "x", ""),
            ("ftp://a/b//c?x", "/b//c?x", "ftp://a/b//c", "c", "x"),
            ("/a/b/?x=1#f?y=2", "/a/b/?x=1", "/a/b/", "", "x=1"),
            ("/a\\b%5cc", "/a\\b\\c", "/a\\b\\c", "c", ""),
            ("/a/b#x/y", "/a/b", "/a/b", "b", ""),
            ("*", "*", "*", "", ""),
            ("/dir/", "/dir/", "/dir/", "", ""),
            ("/%zz%4", "/%zz%4", "/%zz%4", "%zz%4", ""),
        ];
        for (t, uri, file, base, qs) in cases {
            let c = head("GET", t, &[]);
            assert_eq!(s(&c.request_uri), uri, "{t}");
            assert_eq!(s(&c.request_uri_raw), t, "{t}");
            assert_eq!(s(&c.request_filename), file, "{t}");
            assert_eq!(s(&c.request_basename), base, "{t}");
            assert_eq!(s(&c.query_string), qs, "{t}");
        }
        assert_eq!(
            pairs(&head("GET", "http://h/x?q=1%26", &[]).args_get),
            p(&[("q", "1&")])
        );
    }

    #[test]
    fn cookies_and_headers_lib() {
        let c = head(
            "GET",
            "/",
            &[
                ("Host", "example.com"),
                ("cookie", " a=1; b ; =c;d=\"q\"; e=x=y ;"),
            ],
        );
        assert_eq!(
            pairs(&c.request_cookies),
            p(&[("a", "1"), ("b ", ""), ("d", "\"q\""), ("e", "x=y")])
        );
        assert_eq!(
            pairs(&c.request_headers),
            p(&[
                ("Host", "example.com"),
                ("cookie", " a=1; b ; =c;d=\"q\"; e=x=y ;")
            ])
        );
    }

    fn json(body: &str) -> Collections {
        let mut c = head("POST", "/p?g=1", &[("Content-Type", "application/json")]);
        c.process_body(Some(BodyProcessor::Json), body.as_bytes());
        c
    }

    #[test]
    fn json_names_lib() {
        let c = json(
            r#"{"a":{"b":"x","c":[1,2.50,{"d":true}],"e":{},"f":[],"g":null,"h":false},"":"empty","a.b":"dot","u":"\u00e9\n"}"#,
        );
        assert!(c.args_post.is_empty());
        assert_eq!(
            pairs(&c.args_other),
            p(&[
                ("json.a.b", "x"),
                ("json.a.c.array_0", "1"),
                ("json.a.c.array_1", "2.50"),
                ("json.a.c.array_2.d", "true"),
                ("json.a.g", ""),
                ("json.a.h", "false"),
                ("json.empty-key", "empty"),
                ("json.a.b", "dot"),
                ("json.u", "\u{e9}\n"),
            ])
        );
        assert_eq!(c.args_combined_size, 130);
        assert!(!c.reqbody_error);
        assert_eq!(c.request_body.as_deref(), Some(&b"{\"a\":{\"b\":\"x\",\"c\":[1,2.50,{\"d\":true}],\"e\":{},\"f\":[],\"g\":null,\"h\":false},\"\":\"empty\",\"a.b\":\"dot\",\"u\":\"\\u00e9\\n\"}"[..]));
        assert_eq!(c.request_body_length, 110);
        let c = json(r#"[1,["x","y"],{"k":"v"}]"#);
        assert_eq!(
            pairs(&c.args_other),
            p(&[
                ("json.array_0", "1"),
                ("json.array_1.array_0", "x"),
                ("json.array_1.array_1", "y"),
                ("json.array_2.k", "v"),
            ])
        );
        assert_eq!(pairs(&json(r#""str""#).args_other), p(&[("json", "str")]));
        assert_eq!(pairs(&json("42").args_other), p(&[("json", "42")]));
        assert!(json(r#"{"a":[[]]}"#).args_other.is_empty());
        assert_eq!(
            pairs(&json(r#"{"":{"x":1},"k":[{"":[1]}]}"#).args_other),
            p(&[
                ("json.empty-key.x", "1"),
                ("json.k.array_0.empty-key.array_0", "1")
            ])
        );
        assert_eq!(
            pairs(&json(r#"{"x":1e5,"y":-0,"z":12345678901234567890}"#).args_other),
            p(&[
                ("json.x", "1e5"),
                ("json.y", "-0"),
                ("json.z", "12345678901234567890")
            ])
        );
    }

    #[test]
    fn json_errors_lib() {
        let c = json(r#"{"a":1,}"#);
        assert_eq!(pairs(&c.args_other), p(&[("json.a", "1")]));
        assert!(c.reqbody_error);
        assert_eq!(
            s(&c.reqbody_error_msg),
            "JSON parsing error: parse error: invalid object key (must be a string)\n"
        );
        let c = json(r#"{"a":1"#);
        assert_eq!(pairs(&c.args_other), p(&[("json.a", "1")]));
        assert_eq!(
            s(&c.reqbody_error_msg),
            "JSON parsing error: parse error: premature EOF\n"
        );
        let c = json(r#"{"a":1}{"b":2}"#);
        assert_eq!(pairs(&c.args_other), p(&[("json.a", "1")]));
        assert_eq!(
            s(&c.reqbody_error_msg),
            "JSON parsing error: parse error: trailing garbage\n"
        );
        // an empty body is no error
        let c = json("");
        assert!(!c.reqbody_error && c.request_body.is_none());
        assert_eq!(c.reqbody_processor, Some(BodyProcessor::Json));
    }

    fn xml(body: &str) -> Collections {
        let mut c = head("POST", "/p", &[("Content-Type", "text/xml")]);
        c.process_body(Some(BodyProcessor::Xml), body.as_bytes());
        c
    }

    #[test]
    fn xml_text_lib() {
        let c = xml(
            r#"<?xml version="1.0"?><a x="1">t1<b>t2</b> <![CDATA[c<d]]><!--cm-->&lt;&#65;</a>"#,
        );
        assert_eq!(c.xml_text.as_deref(), Some(&b"t1t2 c<d<A"[..]));
        assert!(!c.reqbody_error);
        let c = xml("<a><b>x</a>");
        assert_eq!(c.xml_text.as_deref(), Some(&b"x"[..]));
        assert!(c.reqbody_error);
        assert_eq!(
            s(&c.reqbody_error_msg),
            "XML parsing error: XML: Failed parsing document."
        );
        for bad in ["", "notxml"] {
            let c = xml(bad);
            assert!(c.xml_text.is_none() && c.reqbody_error, "{bad}");
        }
        let c = xml("<a/><b/>");
        assert_eq!(c.xml_text.as_deref(), Some(&b""[..]));
        assert!(c.reqbody_error);
    }

    fn mp(ct: &str, body: &str) -> Collections {
        let mut c = head("POST", "/p", &[("Content-Type", ct)]);
        assert_eq!(c.default_processor(), Some(BodyProcessor::Multipart));
        c.process_body(Some(BodyProcessor::Multipart), body.as_bytes());
        c
    }

    const CT: &str = "multipart/form-data; boundary=XX";

    #[test]
    fn multipart_fields_and_files_lib() {
        let c = mp(
            CT,
            "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nval1\r\n--XX\r\n\
             Content-Disposition: form-data; name=\"f\"; filename=\"x.php\"\r\n\
             Content-Type: text/plain\r\n\r\n<?php ?>\r\n--XX--\r\n",
        );
        assert_eq!(pairs(&c.args_post), p(&[("a", "val1")]));
        assert_eq!(pairs(&c.files), p(&[("f", "x.php")]));
        assert_eq!(
            pairs(&c.multipart_part_headers),
            p(&[
                ("a", "Content-Disposition: form-data; name=\"a\"\r\n"),
                (
                    "f",
                    "Content-Disposition: form-data; name=\"f\"; filename=\"x.php\"\r\n"
                ),
                ("f", "Content-Type: text/plain\r\n"),
            ])
        );
        assert_eq!(c.files_combined_size, 8);
        assert_eq!(
            c.multipart,
            MultipartFlags {
                unmatched_boundary: 2,
                ..Default::default()
            }
        );
        assert!(!c.reqbody_error);
        assert_eq!(c.args_combined_size, 0);
        assert!(c.request_body.is_some());
    }

    #[test]
    fn multipart_line_ends_dropped_lib() {
        let c = mp(
            CT,
            "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\ny\r\nz\r\n\r\n--XX\r\n\
             Content-Disposition: form-data; name=\"f\"; filename=\"q\"\r\n\r\nline1\nline2\r\n--XX--",
        );
        assert_eq!(pairs(&c.args_post), p(&[("a", "xyz")]));
        assert_eq!(c.files_combined_size, 11);
        let c = mp(
            CT,
            "--XX\nContent-Disposition: form-data; name=\"a\"\n\nval1\n--XX--\n",
        );
        assert_eq!(pairs(&c.args_post), p(&[("a", "val1")]));
        assert_eq!(c.multipart.lf_line, 1);
        assert_eq!(c.multipart.strict_error, 1);
        assert_eq!(c.multipart.crlf_lf_lines, 0);
    }

    #[test]
    fn multipart_flags_lib() {
        let c = mp(
            "multipart/form-data; boundary=\"XX\"",
            "pre\r\n--XX\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--XX--\r\npost",
        );
        assert_eq!(pairs(&c.args_post), p(&[("a", "v")]));
        let f = c.multipart;
        assert_eq!(
            (
                f.strict_error,
                f.unmatched_boundary,
                f.data_before,
                f.data_after,
                f.boundary_quoted
            ),
            (1, 2, 1, 1, 1)
        );
        let c = mp("multipart/form-data boundary=XX", "");
        assert_eq!(
            (c.multipart.missing_semicolon, c.multipart.strict_error),
            (1, 1)
        );
        let c = mp(
            CT,
            "--XX\r\nContent-Disposition: form-data; name='a'\r\n\r\nv\r\n--XX--\r\n",
        );
        assert_eq!(pairs(&c.args_post), p(&[("a", "v")]));
        assert_eq!(
            (c.multipart.invalid_quoting, c.multipart.strict_error),
            (1, 1)
        );
        let c = mp(
            CT,
            "--XX\r\nContent-Disposition: form-data; name=\"a\\\"b\"; filename=\"c:\\\\x\\\\y.txt\"\
             \r\nX-A: b\r\n c\r\n\r\nline1\nline2\r\n--XX--\r\n",
        );
        assert_eq!(pairs(&c.files), p(&[("a\"b", "c:\\x\\y.txt")]));
        assert_eq!(c.multipart_part_headers[1].value, b"X-A: b c");
        assert_eq!(
            (c.multipart.header_folding, c.multipart.strict_error),
            (1, 1)
        );
    }

    #[test]
    fn multipart_errors_lib() {
        let missing = "Multipart parsing error: Multipart: Final boundary missing.";
        // unfinished last part: nothing is added, but finished parts' headers are
        let c = mp(
            CT,
            "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--XY\r\n--XX\r\n",
        );
        assert!(c.args_post.is_empty() && c.reqbody_error);
        assert_eq!(s(&c.reqbody_error_msg), missing);
        assert_eq!(c.multipart_part_headers.len(), 1);
        assert_eq!(
            (c.multipart.unmatched_boundary, c.multipart.strict_error),
            (2, 0)
        );
        // final boundary without line end is accepted
        let c = mp(
            CT,
            "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--XX--",
        );
        assert_eq!(pairs(&c.args_post), p(&[("a", "v")]));
        assert!(!c.reqbody_error);
        assert_eq!(c.multipart.unmatched_boundary, 0);
        // boundary with a suffix aborts
        let c = mp(
            CT,
            "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--XXY\r\n--XX--",
        );
        assert_eq!(s(&c.reqbody_error_msg), missing);
        assert_eq!(
            (c.multipart.strict_error, c.multipart.unmatched_boundary),
            (1, 2)
        );
        // invalid C-D aborts and flags the part
        let c = mp(
            CT,
            "--XX\r\nContent-Disposition: form-data; name=a b\r\n\r\nv\r\n--XX--\r\n",
        );
        assert_eq!(s(&c.reqbody_error_msg), missing);
        assert_eq!((c.multipart.invalid_part, c.multipart.strict_error), (1, 1));
        let c = mp(
            CT,
            "--XX\r\nContent-Type: text/plain\r\n\r\nv\r\n--XX--\r\n",
        );
        assert_eq!((c.multipart.invalid_part, c.multipart.strict_error), (1, 1));
        // a header line without colon is reported but parsing goes on
        let c = mp(
            CT,
            "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\nbad\r\n\r\nv\r\n--XX--\r\n",
        );
        assert_eq!(pairs(&c.args_post), p(&[("a", "v")]));
        assert_eq!(
            s(&c.reqbody_error_msg),
            "Multipart parsing error: Multipart: Invalid part header (colon missing): bad\r\n"
        );
        assert_eq!(c.multipart.strict_error, 0);
        let c = mp(
            "multipart/form-data; boundary = XX",
            "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--XX--\r\n",
        );
        assert_eq!(
            s(&c.reqbody_error_msg),
            "Multipart parsing error: Multipart: No boundaries found in payload."
        );
        let f = c.multipart;
        assert_eq!(
            (f.unmatched_boundary, f.data_before, f.boundary_whitespace),
            (1, 1, 1)
        );
        let c = mp("multipart/form-data", "x");
        assert_eq!(
            s(&c.reqbody_error_msg),
            "Multipart parsing error: Multipart: Boundary not found in C-T."
        );
        assert_eq!(c.multipart.strict_error, 1);
    }

    #[test]
    fn multipart_header_state_lib() {
        // our boundary among part headers is read as a header line and flags the part
        let c = mp(
            CT,
            "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n--XX\r\n\
             Content-Disposition: form-data; name=\"g\"\r\n\r\nw\r\n--XX--\r\n",
        );
        assert_eq!(pairs(&c.args_post), p(&[("a", "w")]));
        assert_eq!((c.multipart.invalid_part, c.multipart.strict_error), (1, 1));
        assert_eq!(
            s(&c.reqbody_error_msg),
            "Multipart parsing error: Multipart: Invalid part header (colon missing): --XX\r\n"
        );
        // a part without Content-Disposition keeps reading headers, into the next part
        let c = mp(
            CT,
            "--XX\r\nX: 1\r\n\r\n--YY\r\nContent-Disposition: form-data; name=\"g\"\r\n\r\n\
             w\r\n--XX--\r\n",
        );
        assert_eq!(pairs(&c.args_post), p(&[("g", "w")]));
        assert_eq!(
            pairs(&c.multipart_part_headers),
            p(&[
                ("g", "X: 1\r\n"),
                ("g", "Content-Disposition: form-data; name=\"g\"\r\n")
            ])
        );
        assert_eq!(c.multipart.invalid_part, 0);
        // an LF-only line end before a boundary is an LF line
        let c = mp(
            CT,
            "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\ny\n--XX--\r\n",
        );
        assert_eq!((c.multipart.lf_line, c.multipart.crlf_lf_lines), (1, 1));
        // single quotes are flagged in unquoted values only
        let q = |cd: &str| {
            let body =
                format!("--XX\r\nContent-Disposition: form-data; {cd}\r\n\r\nv\r\n--XX--\r\n");
            mp(CT, &body).multipart.invalid_quoting
        };
        assert_eq!((q("name=\"a'b\""), q("name=a'b")), (0, 1));
    }

    #[test]
    fn multipart_folding_list_lib() {
        // after a line without colon, the folded header is listed besides the raw one
        let c = mp(
            CT,
            "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\nX-A:1\r\nX-Ab\r\n c\r\n\r\n\
             v\r\n--XX--\r\n",
        );
        assert_eq!(
            pairs(&c.multipart_part_headers)[1..],
            p(&[("a", "X-A:1\r\n"), ("a", "X-A: 1 c")])[..]
        );
        let c = mp(
            CT,
            "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\nX-A: b\r\n c\r\n d\r\n\r\n\
             v\r\n--XX--\r\n",
        );
        assert_eq!(
            pairs(&c.multipart_part_headers)[1..],
            p(&[("a", "X-A: b c d")])[..]
        );
    }

    #[test]
    fn json_lexer_errors_lib() {
        let msg = |b: &str| s(&json(b).reqbody_error_msg).to_string();
        assert_eq!(
            msg(r#"{"a" tru}"#),
            "JSON parsing error: lexical error: invalid string in json text.\n"
        );
        assert_eq!(
            msg(r#"["\x"]"#),
            "JSON parsing error: lexical error: inside a string, '\\' occurs before a character \
             which it may not.\n"
        );
        assert_eq!(
            msg("[1,-]"),
            "JSON parsing error: lexical error: malformed number, a digit is required after the \
             minus sign.\n"
        );
        assert_eq!(
            msg("{}x"),
            "JSON parsing error: parse error: trailing garbage\n"
        );
        // a high surrogate without its pair becomes '?'
        assert_eq!(
            pairs(&json(r#"{"u":"\ud830e9"}"#).args_other),
            p(&[("json.u", "?e9")])
        );
        // depth limit (default 10000): 10001 nested containers fail, no argument
        let deep = |d: usize| format!("{}1{}", "[".repeat(d), "]".repeat(d));
        let c = json(&deep(10000));
        assert!(!c.reqbody_error && c.args_other.len() == 1);
        let c = json(&deep(10001));
        assert!(c.reqbody_error && c.args_other.is_empty());
        assert!(s(&c.reqbody_error_msg).ends_with(". Parsing depth limit exceeded"));
    }

    #[test]
    fn xml_prolog_errors_lib() {
        // errors before the root element leave no document
        for bad in [
            r#"<?xml version="1.>0"?><a>t</a>"#,
            r#"<?xml verion="1.0"?><a>t</a>"#,
            "<?xm<?xml version=\"1.0\"?><a>t</a>",
            "<!DOCTYPE r [<!ELEMEN:T r ANY>]><r>x</r>",
            "<!DOCTYPE r [<!ELEMENT r AN\r\nY>]><r>x</r>",
        ] {
            let c = xml(bad);
            assert!(c.xml_text.is_none() && c.reqbody_error, "{bad}");
        }
        // errors inside keep the text before them; a CDATA section is kept whole or not at all
        let c = xml("<a>t1<b>t2</b> <![CDATA[c\u{0}<d]]></a>");
        assert_eq!(c.xml_text.as_deref(), Some(&b"t1t2 "[..]));
        let c = xml("<r>\r\n<i,>1</i></r>");
        assert_eq!(c.xml_text.as_deref(), Some(&b"\n"[..]));
        let c = xml("<!DOCTYPE r [<!ELEMENT r ANY>]><r>x</r>");
        assert_eq!(c.xml_text.as_deref(), Some(&b"x"[..]));
        assert!(!c.reqbody_error);
    }

    #[test]
    fn urlencoded_body() {
        let mut c = head(
            "POST",
            "/p?g=1",
            &[(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )],
        );
        assert_eq!(c.default_processor(), Some(BodyProcessor::UrlEncoded));
        c.process_body(c.default_processor(), b"a=1+2&b=%41&c");
        assert_eq!(
            pairs(&c.args_post),
            p(&[("a", "1 2"), ("b", "A"), ("c", "")])
        );
        assert_eq!(c.args().count(), 4);
        assert_eq!(c.args_combined_size, 2 + 4 + 2 + 1);
        assert!(!c.reqbody_error);
    }
}
