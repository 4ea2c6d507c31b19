use super::*;

fn lim() -> ParseLimits {
    ParseLimits::default()
}

fn complete(buf: &[u8]) -> (Request, Option<usize>) {
    match parse_request(buf, &lim()) {
        Parsed::Complete { request, consumed } => (request, consumed),
        other => panic!("expected Complete, got {other:?}"),
    }
}

const GET: &[u8] = b"GET /search?q=select+union+members&page=2 HTTP/1.1\r\nHost: example.test\r\nUser-Agent: curl/8.0\r\nCookie: a=1; session=abc\r\n\r\n";

#[test]
fn simple_get() {
    let (r, consumed) = complete(GET);
    assert_eq!(r.method, "GET");
    assert_eq!(r.target, "/search?q=select+union+members&page=2");
    assert_eq!(r.version, 1);
    assert_eq!(r.path(), "/search");
    assert_eq!(r.query(), Some("q=select+union+members&page=2"));
    assert_eq!(r.header("HOST"), Some("example.test"));
    assert_eq!(r.header("user-agent"), Some("curl/8.0"));
    assert_eq!(
        r.cookies().collect::<Vec<_>>(),
        vec![("a", "1"), ("session", "abc")]
    );
    assert!(r.body.is_empty());
    assert_eq!(consumed, Some(GET.len()));
}

#[test]
fn every_split_point_is_partial_then_complete() {
    let mut req =
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nuser=admin'".to_vec();
    req.extend_from_slice(GET);
    let first_len = req.len() - GET.len();
    for cut in 0..first_len {
        match parse_request(&req[..cut], &lim()) {
            Parsed::Partial => {}
            other => panic!("cut {cut}: expected Partial, got {other:?}"),
        }
    }
    for cut in first_len..=req.len() {
        let (r, consumed) = complete(&req[..cut]);
        assert_eq!(r.method, "POST");
        assert_eq!(r.body, b"user=admin'");
        assert_eq!(consumed, Some(first_len));
    }
    // The pipelined second request parses from the remainder.
    let (r2, c2) = complete(&req[first_len..]);
    assert_eq!(r2.method, "GET");
    assert_eq!(c2, Some(GET.len()));
}

#[test]
fn pipelined_requests_in_one_buffer() {
    let mut buf = Vec::new();
    for i in 0..5 {
        buf.extend_from_slice(format!("GET /item/{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    }
    let mut pos = 0;
    let mut seen = Vec::new();
    while pos < buf.len() {
        let (r, consumed) = complete(&buf[pos..]);
        seen.push(r.path().to_owned());
        pos += consumed.unwrap_or(buf.len());
    }
    assert_eq!(
        seen,
        vec!["/item/0", "/item/1", "/item/2", "/item/3", "/item/4"]
    );
}

#[test]
fn body_prefix_is_limited_and_consumed_covers_all() {
    let limits = ParseLimits {
        max_head: 1024,
        max_body: 8,
    };
    let buf = b"POST /u HTTP/1.0\r\nContent-Length: 100\r\n\r\n0123456789abcdef";
    match parse_request(buf, &limits) {
        Parsed::Complete { request, consumed } => {
            assert_eq!(request.version, 0);
            assert_eq!(request.body, b"01234567");
            assert!(request.body_truncated);
            let head = buf.len() - 16;
            assert_eq!(consumed, Some(head + 100));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn chunked_body_is_dechunked() {
    let buf = b"POST /api HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    let (r, consumed) = complete(buf);
    assert_eq!(r.body, b"Wikipedia");
    assert!(!r.body_truncated);
    let consumed = consumed.expect("framing known");
    assert_eq!(&buf[consumed..], b"GET / HTTP/1.1\r\n\r\n");
    // Split inside the chunk framing: partial.
    for cut in 52..consumed {
        assert_eq!(
            parse_request(&buf[..cut], &lim()),
            Parsed::Partial,
            "cut {cut}"
        );
    }
}

#[test]
fn chunked_longer_than_prefix_has_unknown_framing() {
    let limits = ParseLimits {
        max_head: 1024,
        max_body: 4,
    };
    let buf = b"POST /api HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789";
    match parse_request(buf, &limits) {
        Parsed::Complete { request, consumed } => {
            assert_eq!(request.body, b"0123");
            assert!(request.body_truncated);
            assert_eq!(consumed, None);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_chunk_is_invalid() {
    let buf = b"POST /api HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n";
    assert_eq!(
        parse_request(buf, &lim()),
        Parsed::Invalid(ParseError::BadChunk)
    );
}

#[test]
fn garbage_is_invalid_early() {
    for g in [
        &b"\x16\x03\x01\x02\x00\x01\x00"[..],
        b"SSH-2.0-OpenSSH_9.0\r\n",
        b"GET\x00/ HTTP/1.1\r\n",
        b"GET / HTTP/3.0\r\n\r\n",
        b"GET / FOO\r\n\r\n",
        b"HELLO\r\n\r\n",
    ] {
        assert!(
            matches!(parse_request(g, &lim()), Parsed::Invalid(_)),
            "{:?}",
            String::from_utf8_lossy(g)
        );
    }
}

#[test]
fn bad_lengths() {
    assert_eq!(
        parse_request(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &lim()),
        Parsed::Invalid(ParseError::BadContentLength)
    );
    assert_eq!(
        parse_request(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            &lim()
        ),
        Parsed::Invalid(ParseError::BadContentLength)
    );
    // Same value repeated is fine.
    let (r, _) = complete(b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nab");
    assert_eq!(r.body, b"ab");
}

/// A head over the limit is not dropped: the request line and the header lines that fit are
/// returned, marked truncated, with the next request's start unknown.
#[test]
fn head_over_the_limit_keeps_what_fits() {
    let limits = ParseLimits {
        max_head: 64,
        max_body: 8,
    };
    let mut buf = b"GET /?id=1%27%20union%20select HTTP/1.1\r\nA: 1\r\nB: ".to_vec();
    buf.extend(std::iter::repeat_n(b'b', 100));
    for tail in [&b""[..], b"\r\n\r\n"] {
        let mut buf = buf.clone();
        buf.extend_from_slice(tail);
        let Parsed::Complete { request, consumed } = parse_request(&buf, &limits) else {
            panic!("expected Complete for tail {tail:?}");
        };
        assert!(request.head_truncated);
        assert_eq!(request.query(), Some("id=1%27%20union%20select"));
        assert_eq!(request.headers, vec![("A".to_owned(), "1".to_owned())]);
        assert_eq!(consumed, None);
    }
    // Under the limit and not complete: wait for more.
    assert_eq!(parse_request(&buf[..60], &limits), Parsed::Partial);
}

/// A request line longer than the limit gives its first bytes (Go serves 1 MiB heads).
#[test]
fn request_line_over_the_limit_keeps_its_start() {
    let limits = ParseLimits {
        max_head: 64,
        max_body: 8,
    };
    let mut buf = b"GET /?q=<script>alert(1)</script>&pad=".to_vec();
    buf.extend(std::iter::repeat_n(b'a', 100));
    let Parsed::Complete { request, consumed } = parse_request(&buf, &limits) else {
        panic!("expected Complete");
    };
    assert!(request.head_truncated);
    assert_eq!(request.method, "GET");
    assert_eq!(request.target.len(), 60);
    assert!(request.query().is_some_and(|q| q.starts_with("q=<script>")));
    assert_eq!(consumed, None);
    // Garbage stays garbage however long it is.
    assert!(matches!(
        parse_request(&[b'A'; 100], &limits),
        Parsed::Invalid(_)
    ));
}

/// The default head limit covers what nginx serves by default (measured 32 217 bytes with
/// `large_client_header_buffers 4 8k`): such a head parses whole.
#[test]
fn default_limit_covers_nginx_heads() {
    let mut buf = b"GET /?id=1 HTTP/1.1\r\nHost: h\r\n".to_vec();
    while buf.len() < 31_000 {
        buf.extend_from_slice(b"X-Pad: ");
        buf.extend(std::iter::repeat_n(b'p', 990));
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"X-Last: <script>\r\n\r\n");
    assert!(buf.len() > 16 * 1024 && buf.len() < 32_217);
    let (r, consumed) = complete(&buf);
    assert!(!r.head_truncated);
    assert_eq!(r.header("x-last"), Some("<script>"));
    assert_eq!(consumed, Some(buf.len()));
}

/// nginx has no header-count limit of its own below ~1000 lines: neither has the parser.
#[test]
fn many_header_lines() {
    let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..999 {
        buf.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
    }
    buf.extend_from_slice(b"\r\n");
    let (r, _) = complete(&buf);
    assert_eq!(r.headers.len(), 999);
    assert_eq!(r.header("h998"), Some("v"));
}

#[test]
fn lenient_forms() {
    // Bare LF line endings, leading blank lines, obs-fold, spaces inside the target.
    let (r, consumed) =
        complete(b"\r\nGET /a b/../c HTTP/1.1\nX-A: one\n  two\nUser-Agent:  x \n\n");
    assert_eq!(r.target, "/a b/../c");
    assert_eq!(r.header("x-a"), Some("one two"));
    assert_eq!(r.header("user-agent"), Some("x"));
    assert_eq!(consumed, Some(57));
}

#[test]
fn absolute_form_target() {
    let (r, _) = complete(b"GET http://example.test/p/q?x=1#frag HTTP/1.1\r\n\r\n");
    assert_eq!(r.path(), "/p/q");
    assert_eq!(r.query(), Some("x=1#frag"));
    // Any scheme nginx accepts, in any case, with a port or an IPv6 literal.
    for target in [
        "HTTP://EXAMPLE.TEST/p/q?x=1",
        "svn+ssh.x-y://example.test:80/p/q?x=1",
        "http://[::1]:80/p/q?x=1",
    ] {
        let (r, _) = complete(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes());
        assert_eq!((r.path(), r.query()), ("/p/q", Some("x=1")), "{target}");
    }
    let (r, _) = complete(b"GET http://example.test?x=1 HTTP/1.1\r\n\r\n");
    assert_eq!(r.path(), "");
    assert_eq!(r.query(), Some("x=1"));
    let (r, _) = complete(b"CONNECT example.test:443 HTTP/1.1\r\n\r\n");
    assert_eq!(r.path(), "example.test:443");
}

#[test]
fn non_utf8_is_lossy_not_an_error() {
    let (r, _) = complete(b"GET /\xff\xfe HTTP/1.1\r\nX: \xc3\x28\r\n\r\n");
    assert!(r.target.starts_with('/'));
    assert!(r.header("x").is_some());
}

#[test]
fn resync_finds_next_request() {
    let buf = b"\x00\x01garbage tail of a body}GET /next HTTP/1.1\r\nHost: h\r\n\r\n";
    let at = find_request_start(buf).expect("found");
    assert_eq!(&buf[at..at + 9], b"GET /next");
    let (r, _) = complete(&buf[at..]);
    assert_eq!(r.path(), "/next");

    // Words that merely start like a method are skipped.
    let buf = b"GETTING POST data PUT x GET /ok HTTP/1.0\r\n";
    let at = find_request_start(buf).expect("found");
    assert_eq!(&buf[at..], b"GET /ok HTTP/1.0\r\n");

    // A line that ends without a version is not a request line.
    assert_eq!(find_request_start(b"GET /x nope\r\n"), None);
    // An incomplete line at the end is plausible; so is a method cut short.
    assert_eq!(find_request_start(b"zzzPOST /a"), Some(3));
    assert_eq!(find_request_start(b"zzzPO"), Some(3));
    assert_eq!(find_request_start(b"zzz"), None);
}

#[test]
fn from_parts_and_headers_all() {
    let r = Request::from_parts(
        "GET",
        "/x?a=1",
        vec![
            ("X-Forwarded-For".into(), "1.1.1.1".into()),
            ("x-forwarded-for".into(), "2.2.2.2".into()),
        ],
        Vec::new(),
    );
    assert_eq!(
        r.headers_all("X-FORWARDED-FOR").collect::<Vec<_>>(),
        vec!["1.1.1.1", "2.2.2.2"]
    );
    assert_eq!(r.header("x-forwarded-for"), Some("1.1.1.1"));
    assert_eq!(r.query(), Some("a=1"));
}

/// Deterministic pseudo-random garbage never panics the parser and a valid request after it is
/// found by resync.
#[test]
fn random_garbage_never_panics() {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"GET POST / HTTP/1.1\r\n:; =%chunked0123456789abcdef\x00\xff";
    for _ in 0..2000 {
        let len = (next() % 200) as usize;
        let buf: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let _ = parse_request(&buf, &lim());
        if let Some(at) = find_request_start(&buf) {
            assert!(at < buf.len());
            let _ = parse_request(&buf[at..], &lim());
        }
    }
}

/// Versions nginx serves: any `HTTP/1.<digits>` (leading zeros, up to 999), trailing spaces;
/// and the two more Node serves.
#[test]
fn versions_servers_serve() {
    for (version, minor) in [
        ("HTTP/1.0", 0),
        ("HTTP/1.1", 1),
        ("HTTP/1.2", 2),
        ("HTTP/1.9", 9),
        ("HTTP/1.10", 10),
        ("HTTP/1.0001", 1),
        ("HTTP/1.999", 255),
        ("HTTP/1.1   ", 1),
    ] {
        let (r, consumed) =
            complete(format!("GET /x?id=1 {version}\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(
            (r.major, r.version, r.versionless),
            (1, minor, false),
            "{version}"
        );
        assert_eq!(r.query(), Some("id=1"), "{version}");
        assert!(consumed.is_some());
    }
    // Node serves these two (as HTTP/1 requests, headers and all).
    for (version, major, minor) in [("HTTP/2.0", 2, 0), ("HTTP/0.9", 0, 9)] {
        let (r, _) = complete(format!("GET /x?id=1 {version}\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!((r.major, r.version, r.versionless), (major, minor, false));
        assert_eq!(r.header("host"), Some("h"));
    }
    // Every server answers 400 or 505 to these: garbage for the sensor too.
    for version in [
        "HTTP/2.1",
        "HTTP/3.0",
        "HTTP/1",
        "HTTP/1.",
        "HTTP/01.1",
        "http/1.1",
        "HTTP/1.1x",
    ] {
        assert_eq!(
            parse_request(format!("GET /x {version}\r\n\r\n").as_bytes(), &lim()),
            Parsed::Invalid(ParseError::BadVersion),
            "{version}"
        );
    }
}

/// `GET /x` with no version is HTTP/0.9, which nginx serves (GET only): the line is the whole
/// request, with no header lines.
#[test]
fn http09_request_line() {
    let buf = b"GET /a?id=1%27%20or%201=1--  \r\nGET /b HTTP/1.1\r\n\r\n";
    let (r, consumed) = complete(buf);
    assert!(r.versionless);
    assert_eq!((r.major, r.version), (0, 9));
    assert_eq!(r.query(), Some("id=1%27%20or%201=1--"));
    assert!(r.headers.is_empty());
    assert_eq!(consumed, Some(31));
    assert_eq!(&buf[31..38], b"GET /b ");
    // Not complete until the line ends.
    assert_eq!(parse_request(b"GET /a?id=1", &lim()), Parsed::Partial);
    // Other methods need a version (nginx: 400).
    assert_eq!(
        parse_request(b"POST /a\r\n", &lim()),
        Parsed::Invalid(ParseError::BadVersion)
    );
}

/// Any token is a method (nginx serves `FOO_BAR-X` and methods of any length, Go `get` and
/// `FOO.BAR`); spaces between the parts are runs.
#[test]
fn methods_and_spaces() {
    let long = "A".repeat(100);
    for method in ["FOO_BAR-X", "get", "FOO.BAR", long.as_str()] {
        let (r, _) = complete(format!("{method} /x?q=1 HTTP/1.1\r\n\r\n").as_bytes());
        assert_eq!(r.method, method);
        assert_eq!(r.query(), Some("q=1"));
    }
    let (r, _) = complete(b"GET   /x?q=1   HTTP/1.1  \r\n\r\n");
    assert_eq!((r.method.as_str(), r.target.as_str()), ("GET", "/x?q=1"));
    // nginx refuses a tab or a leading space.
    for bad in [
        &b"GET\t/x HTTP/1.1\r\n\r\n"[..],
        b"GET /x\tHTTP/1.1\r\n\r\n",
        b" GET /x HTTP/1.1\r\n\r\n",
    ] {
        assert!(
            matches!(parse_request(bad, &lim()), Parsed::Invalid(_)),
            "{bad:?}"
        );
    }
}

/// Header lines nginx ignores are skipped and counted; the request and its other headers stay.
#[test]
fn header_lines_servers_ignore_are_skipped() {
    let buf = b"GET / HTTP/1.1\r\nHost: h\r\nX@Y: 1\r\n<script>: x\r\nA : sp\r\n: empty\r\nA\x00B: nul\r\n\x80: hi\r\nno colon here\r\nX-Ok: <script>\r\n\r\n";
    let (r, consumed) = complete(buf);
    assert_eq!(r.header_lines_skipped, 7);
    assert_eq!(
        r.headers,
        vec![
            ("Host".to_owned(), "h".to_owned()),
            ("X-Ok".to_owned(), "<script>".to_owned())
        ]
    );
    assert_eq!(consumed, Some(buf.len()));
}

/// Token names nginx drops by default but Go, Node and `underscores_in_headers` serve are kept; a
/// line without a colon is a header with an empty value, as nginx passes it to its backend.
#[test]
fn token_names_are_kept() {
    let (r, _) =
        complete(b"GET / HTTP/1.1\r\nX_Y: 1\r\nX.Y: 2\r\nnocolon\r\nA:: b\r\nB:\t c \t\r\r\n\r\n");
    assert_eq!(r.header_lines_skipped, 0);
    assert_eq!(r.header("x_y"), Some("1"));
    assert_eq!(r.header("x.y"), Some("2"));
    assert_eq!(r.header("nocolon"), Some(""));
    assert_eq!(r.header("a"), Some(": b"));
    assert_eq!(r.header("b"), Some("c"));
}

/// obs-fold joins the previous value (Go); with nothing to continue (first line, or after a
/// skipped line) it is skipped.
#[test]
fn obs_fold() {
    let (r, _) =
        complete(b"GET / HTTP/1.1\r\n lead\r\nA: one\r\n\ttwo\r\nX@Y: bad\r\n cont\r\n\r\n");
    assert_eq!(r.headers, vec![("A".to_owned(), "one two".to_owned())]);
    assert_eq!(r.header_lines_skipped, 3);
}

/// A raw `#` in the target: nginx cuts `$uri` and `$args` there but proxies the raw target, and
/// Go reads the query past it; path and query hold both readings.
#[test]
fn raw_hash_in_target() {
    for (target, path, query) in [
        ("/a#x?id=1", "/a#x", Some("id=1")),
        ("/a?id=1#x", "/a", Some("id=1#x")),
        ("/a?id=1#x?y=2", "/a", Some("id=1#x?y=2")),
        ("/#?id=1", "/#", Some("id=1")),
        ("/a#x", "/a#x", None),
        ("/a%23x?id=1", "/a%23x", Some("id=1")),
        ("/a%3Fid=1?z=2", "/a%3Fid=1", Some("z=2")),
        ("http://h#x?id=1", "", Some("id=1")),
    ] {
        let (r, _) = complete(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes());
        assert_eq!((r.path(), r.query()), (path, query), "{target}");
    }
}

/// Targets nginx normalises are kept raw (the detector normalises them); bytes >= 0x80 and the
/// characters nginx lets through in a query are kept.
#[test]
fn odd_targets_are_kept_raw() {
    for target in [
        "//a//b/./c/../d",
        "/a/%2e%2e/etc",
        "/a?x=%zz",
        "/a\\b",
        "/a?x=\"<>`{}|",
    ] {
        let (r, _) = complete(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes());
        assert_eq!(r.target, target);
    }
    let (r, _) = complete(b"GET /a\x80\xff HTTP/1.1\r\n\r\n");
    assert!(r.target.starts_with("/a"));
    // Control bytes make nginx answer 400.
    assert_eq!(
        parse_request(b"GET /a\x7f HTTP/1.1\r\n\r\n", &lim()),
        Parsed::Invalid(ParseError::BadTarget)
    );
}

/// Framing headers in any letter case, and pipelined requests after each kind of body.
#[test]
fn framing_in_any_case_and_pipelining() {
    let second = b"GET /next?id=2 HTTP/1.1\r\nhost: h\r\n\r\n";
    for first in [
        &b"POST /a HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc"[..],
        b"POST /a HTTP/1.1\r\nCONTENT-LENGTH: 3\r\n\r\nabc",
        b"POST /a HTTP/1.1\r\ntransfer-encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET /a HTTP/1.2\r\n\r\n",
        b"\r\n\r\nGET /a HTTP/1.1\n\n",
    ] {
        let mut buf = first.to_vec();
        buf.extend_from_slice(second);
        let (r1, c1) = complete(&buf);
        let c1 = c1.expect("framing known");
        assert_eq!(r1.path(), "/a");
        assert_eq!(c1, first.len(), "{:?}", String::from_utf8_lossy(first));
        if r1.method == "POST" {
            assert_eq!(r1.body, b"abc");
        }
        let (r2, c2) = complete(&buf[c1..]);
        assert_eq!(r2.query(), Some("id=2"));
        assert_eq!(c2, Some(second.len()));
    }
}

/// Resync takes any token method on a complete line with a served version, upper-case methods
/// on an unfinished line, and the HTTP/0.9 form; not body text.
#[test]
fn resync_methods_and_versions() {
    for (buf, at) in [
        (&b"junk}PURGE /x HTTP/1.1\r\n"[..], Some(5)),
        (b"junk}get /x HTTP/1.2\r\n", Some(5)),
        (b"junk FOO.BAR /x HTTP/1.10  \r\n", Some(5)),
        (b"junk\nGET /x?id=1\r\n", Some(5)),
        (b"junk\nGET http://h/x HTTP/1.1\n", Some(5)),
        (b"junk CUSTOM_M /x?a=", Some(5)),
        (b"junk CUSTOM_M HTT", Some(5)),
        // Unfinished lower-case or punctuated methods wait for the line end.
        (b"junk custom /x?a=", None),
        (b"zzzGET ", Some(3)),
        // Body text: no version, wrong target, control bytes, a 400 version.
        (b"a word /and more words\r\n", None),
        (b"PLAN A /B test\n", None),
        (b"POST /x HTTP/2.0\r\n", Some(0)),
        (b"POST /x HTTP/3.0\r\n", None),
        (b"POST /x http/1.1\r\n", None),
        (b"GET /x\x01 HTTP/1.1\r\n", None),
        (b"POST /x\r\n", None),
        (b"GET x y\r\n", None),
    ] {
        assert_eq!(
            find_request_start(buf),
            at,
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
    // A method longer than the resync bound matches from its last bytes.
    let mut buf = vec![b'M'; 40];
    buf.extend_from_slice(b" /x HTTP/1.1\r\n");
    assert_eq!(find_request_start(&buf), Some(8));
}

/// The resync scan stays linear on adversarial input (a long line of would-be request starts).
#[test]
fn resync_is_linear() {
    let mut buf = Vec::new();
    for _ in 0..20_000 {
        buf.extend_from_slice(b"A /A ");
    }
    buf.extend_from_slice(b"x\r\n");
    let mut letters = vec![b'G'; 100_000];
    letters.push(b'\n');
    let started = std::time::Instant::now();
    assert_eq!(find_request_start(&buf), None);
    assert_eq!(find_request_start(&letters), None);
    // Not a timing assertion: a quadratic scan would take minutes here, this prints the time.
    println!(
        "resync over {} bytes: {:?}",
        buf.len() + letters.len(),
        started.elapsed()
    );
}

/// Headers, method and target are read as `String::from_utf8_lossy` reads them, valid UTF-8
/// or not (the fast path for valid input changes nothing).
#[test]
fn text_is_what_the_lossy_decoder_makes() {
    let cases: [&[u8]; 7] = [
        b"",
        b"plain ascii",
        "caf\u{e9} \u{1F600}".as_bytes(),
        b"bad \xff byte",
        b"cut \xe2\x82",
        b"\xc0\xafoverlong",
        b"mixed \xe2\x82\xac \xed\xa0\x80 surrogate",
    ];
    for bytes in cases {
        assert_eq!(lossy(bytes), String::from_utf8_lossy(bytes), "{bytes:?}");
    }
    let mut raw = b"GET /a\xffb HTTP/1.1\r\nX-T: v\xc3\xa9 \xfe\r\n".to_vec();
    raw.extend_from_slice(b"Content-Length: 3\r\n\r\n\xffok");
    let (r, _) = complete(&raw);
    assert_eq!(r.target, "/a\u{FFFD}b");
    assert_eq!(r.headers[0].1, "v\u{e9} \u{FFFD}");
    assert_eq!(r.body_text(), "\u{FFFD}ok");
}

/// Header lines are split where `slice::split` on line feeds splits them.
#[test]
fn lines_split_as_slice_split_does() {
    let cases: [&[u8]; 7] = [
        b"",
        b"\n",
        b"a",
        b"a\n",
        b"a\r\nb: c\r\n\r\n",
        b"\n\nx\n",
        b"no end\nlast",
    ];
    for buf in cases {
        let want: Vec<&[u8]> = buf.split(|&b| b == b'\n').collect();
        assert_eq!(split_on(buf, b'\n').collect::<Vec<_>>(), want, "{buf:?}");
    }
}

/// The token table holds exactly RFC 9110's `tchar`.
#[test]
fn token_bytes_are_rfc_9110_tchar() {
    for b in 0..=255u8 {
        let want = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        assert_eq!(is_tchar(b), want, "{b:#04x}");
    }
}
