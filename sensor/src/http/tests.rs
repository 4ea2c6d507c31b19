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
        b"GET / HTTP/2.0\r\n\r\n",
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
fn bad_headers_and_lengths() {
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", &lim()),
        Parsed::Invalid(ParseError::BadHeader { line: 1 })
    );
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\r\nbad name: x\r\n\r\n", &lim()),
        Parsed::Invalid(ParseError::BadHeader { line: 1 })
    );
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

#[test]
fn head_too_large() {
    let limits = ParseLimits {
        max_head: 64,
        max_body: 8,
    };
    let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
    buf.extend(std::iter::repeat_n(b'a', 100));
    assert_eq!(
        parse_request(&buf, &limits),
        Parsed::Invalid(ParseError::HeadTooLarge { max: 64 })
    );
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
    assert_eq!(r.query(), Some("x=1"));
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
