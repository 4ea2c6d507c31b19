//! Access-log line formats: nginx `combined`, JSON lines (envoy-style) and AWS ALB.
//!
//! Each parser builds the [`Request`] the detector inspects from what the log holds: method,
//! target, and the `User-Agent`, `Referer`, `Host` and `X-Forwarded-For` headers where present,
//! plus the peer address (the log's remote address, for the client-IP rules).

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use crate::config::LogFormat;
use crate::http::{Request, hex_digit};

/// One request read from a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The address that connected to the logging server.
    pub peer: IpAddr,
    /// The request as far as the log shows it.
    pub request: Request,
    /// When the request was logged, if the line says (else: when it was read).
    pub time: Option<DateTime<Utc>>,
}

/// Parse one line. `Err` gives a short, stable reason; the line is skipped and counted.
pub fn parse_line(format: LogFormat, line: &str) -> Result<LogEntry, &'static str> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Err("empty line");
    }
    match format {
        LogFormat::Nginx => parse_nginx(line),
        LogFormat::Json => parse_json(line),
        LogFormat::Alb => parse_alb(line),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Bare(String),
    Quoted(String),
    Bracketed(String),
}

impl Token {
    fn text(&self) -> &str {
        match self {
            Token::Bare(s) | Token::Quoted(s) | Token::Bracketed(s) => s,
        }
    }
}

/// Split a space-separated line with `"quoted"` (backslash escapes, `\xHH`) and `[bracketed]`
/// fields.
fn tokenize(line: &str) -> Result<Vec<Token>, &'static str> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' => i += 1,
            b'"' => {
                let mut bytes = Vec::new();
                i += 1;
                loop {
                    if i >= b.len() {
                        return Err("unterminated quoted field");
                    }
                    match b[i] {
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b'\\' if i + 1 < b.len() => {
                            let c = b[i + 1];
                            // `\xHH`, read from bytes: what follows `\x` may be any UTF-8.
                            if c == b'x'
                                && let Some(&[h, l]) = b.get(i + 2..i + 4)
                                && let (Some(h), Some(l)) = (hex_digit(h), hex_digit(l))
                            {
                                bytes.push(h << 4 | l);
                                i += 4;
                                continue;
                            }
                            bytes.push(match c {
                                b'n' => b'\n',
                                b't' => b'\t',
                                b'r' => b'\r',
                                other => other,
                            });
                            i += 2;
                        }
                        c => {
                            bytes.push(c);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Quoted(String::from_utf8_lossy(&bytes).into_owned()));
            }
            b'[' => {
                let end = memchr::memchr(b']', &b[i..]).ok_or("unterminated bracketed field")? + i;
                out.push(Token::Bracketed(text(&b[i + 1..end])));
                i = end + 1;
            }
            _ => {
                let end = memchr::memchr2(b' ', b'\t', &b[i..]).map_or(b.len(), |p| p + i);
                out.push(Token::Bare(text(&b[i..end])));
                i = end;
            }
        }
    }
    Ok(out)
}

/// Bytes of a field as text. Fields are cut at ASCII delimiters, so a field of a valid line is
/// valid UTF-8; working on bytes means no cut can panic even if that ever stops being true.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `::1`.
fn parse_addr(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest
            .split_once(']')?
            .0
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical());
    }
    let (host, _port) = s.rsplit_once(':')?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// `"GET /x HTTP/1.1"` -> (method, target).
fn split_request_line(s: &str) -> Result<(String, String), &'static str> {
    let mut parts = s.splitn(3, ' ');
    let method = parts.next().filter(|m| !m.is_empty()).ok_or("no method")?;
    let target = parts
        .next()
        .filter(|t| !t.is_empty())
        .ok_or("no request target")?;
    if !method
        .bytes()
        .all(|c| c.is_ascii_alphabetic() || c == b'-' || c == b'_')
    {
        return Err("malformed method");
    }
    Ok((method.to_owned(), target.to_owned()))
}

fn push_header(headers: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    if let Some(v) = value.map(str::trim).filter(|v| !v.is_empty() && *v != "-") {
        headers.push((name.to_owned(), v.to_owned()));
    }
}

fn parse_nginx(line: &str) -> Result<LogEntry, &'static str> {
    // $remote_addr - $remote_user [$time_local] "$request" $status $bytes "$referer" "$ua" ["$xff"]
    let t = tokenize(line)?;
    if t.len() < 9 {
        return Err("too few fields for nginx combined");
    }
    let peer = parse_addr(t[0].text()).ok_or("remote address is not an IP")?;
    let time = match &t[3] {
        Token::Bracketed(s) => DateTime::parse_from_str(s, "%d/%b/%Y:%H:%M:%S %z")
            .ok()
            .map(|d| d.with_timezone(&Utc)),
        _ => return Err("no [time_local] field"),
    };
    let Token::Quoted(request) = &t[4] else {
        return Err("no quoted request field");
    };
    let (method, target) = split_request_line(request)?;
    let mut headers = Vec::new();
    push_header(&mut headers, "Referer", Some(t[7].text()));
    push_header(&mut headers, "User-Agent", Some(t[8].text()));
    if let Some(Token::Quoted(xff)) = t.get(9) {
        push_header(&mut headers, "X-Forwarded-For", Some(xff));
    }
    Ok(LogEntry {
        peer,
        request: Request::from_parts(method, target, headers, Vec::new()),
        time,
    })
}

fn parse_alb(line: &str) -> Result<LogEntry, &'static str> {
    // type time elb client:port target:port rpt tpt rspt elb_status target_status rx tx
    // "request" "user_agent" ...
    let t = tokenize(line)?;
    if t.len() < 14 {
        return Err("too few fields for an ALB log");
    }
    let time = DateTime::parse_from_rfc3339(t[1].text())
        .ok()
        .map(|d| d.with_timezone(&Utc));
    let peer = parse_addr(t[3].text()).ok_or("client:port is not an IP")?;
    let Token::Quoted(request) = &t[12] else {
        return Err("no quoted request field");
    };
    let (method, url) = split_request_line(request)?;
    let mut headers = Vec::new();
    // ALB logs the absolute URL: `http://host:80/path?q`. Split it into Host + origin form.
    let target = match url.split_once("://") {
        Some((_, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(p) => (&rest[..p], &rest[p..]),
                None => (rest, "/"),
            };
            push_header(&mut headers, "Host", Some(authority));
            path.to_owned()
        }
        None => url,
    };
    push_header(&mut headers, "User-Agent", Some(t[13].text()));
    Ok(LogEntry {
        peer,
        request: Request::from_parts(method, target, headers, Vec::new()),
        time,
    })
}

fn parse_json(line: &str) -> Result<LogEntry, &'static str> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|_| "not JSON")?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let get = |keys: &[&str]| -> Option<String> {
        keys.iter().find_map(|k| match obj.get(*k) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
    };
    let peer = get(&[
        "downstream_remote_address",
        "remote_addr",
        "client_ip",
        "remote_ip",
        "peer",
    ])
    .as_deref()
    .and_then(parse_addr)
    .ok_or("no usable remote address")?;
    let (method, target) = match (
        get(&["method", ":method", "request_method"]),
        get(&["path", ":path", "request_uri", "uri", "url"]),
    ) {
        (Some(m), Some(p)) if !m.is_empty() && !p.is_empty() && p != "-" => (m, p),
        _ => match get(&["request"]) {
            Some(r) => split_request_line(&r)?,
            None => return Err("no method and path"),
        },
    };
    let mut headers = Vec::new();
    push_header(
        &mut headers,
        "Host",
        get(&["authority", ":authority", "host"]).as_deref(),
    );
    push_header(
        &mut headers,
        "User-Agent",
        get(&["user_agent", "user-agent", "http_user_agent"]).as_deref(),
    );
    push_header(
        &mut headers,
        "Referer",
        get(&["referer", "referrer", "http_referer"]).as_deref(),
    );
    push_header(
        &mut headers,
        "X-Forwarded-For",
        get(&["x_forwarded_for", "x-forwarded-for", "http_x_forwarded_for"]).as_deref(),
    );
    let time = get(&["start_time", "time", "timestamp", "@timestamp"])
        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|d| d.with_timezone(&Utc));
    Ok(LogEntry {
        peer,
        request: Request::from_parts(method, target, headers, Vec::new()),
        time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_combined_with_xff() {
        let line = r#"203.0.113.7 - - [25/Nov/2026:02:10:00 +0000] "GET /search?q=1%27%20OR%201=1-- HTTP/1.1" 200 512 "https://example.com/" "Mozilla/5.0 (X11)" "198.51.100.9, 10.0.0.2""#;
        let e = parse_line(LogFormat::Nginx, line).unwrap();
        assert_eq!(e.peer, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(e.request.method, "GET");
        assert_eq!(e.request.target, "/search?q=1%27%20OR%201=1--");
        assert_eq!(e.request.header("user-agent"), Some("Mozilla/5.0 (X11)"));
        assert_eq!(e.request.header("referer"), Some("https://example.com/"));
        assert_eq!(
            e.request.header("x-forwarded-for"),
            Some("198.51.100.9, 10.0.0.2")
        );
        assert_eq!(e.time.unwrap().to_rfc3339(), "2026-11-25T02:10:00+00:00");
    }

    #[test]
    fn nginx_escapes_and_dashes() {
        let line = r#"::1 - - [25/Nov/2026:02:10:00 +0100] "GET /a\x22b HTTP/1.0" 404 0 "-" "-""#;
        let e = parse_line(LogFormat::Nginx, line).unwrap();
        assert_eq!(e.request.target, "/a\"b");
        assert!(e.request.headers.is_empty());
        assert_eq!(e.peer, "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn nginx_garbage_is_an_error_not_a_panic() {
        for line in [
            "",
            "garbage",
            r#"1.2.3.4 - - [x] "GET"#,
            r#"nope - - [25/Nov/2026:02:10:00 +0000] "GET / HTTP/1.1" 200 1 "-" "-""#,
            r#"1.2.3.4 - - [25/Nov/2026:02:10:00 +0000] "-" 400 0 "-" "-""#,
            "\u{0}\u{1}[\"",
        ] {
            assert!(parse_line(LogFormat::Nginx, line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn backslash_x_before_multibyte_text_is_not_a_panic() {
        let line = |target: &str| {
            format!(
                r#"1.2.3.4 - - [25/Nov/2026:02:10:00 +0000] "GET {target} HTTP/1.1" 200 1 "-" "-""#
            )
        };
        for (target, want) in [
            (r"/a\x€b", "/ax€b"),
            (r"/a\xé", "/axé"),
            (r"/a\x4€", "/ax4€"),
            ("/a\\x\u{fffd}\u{fffd}", "/ax\u{fffd}\u{fffd}"),
            // Only two hex digits make an escape; a sign is not a digit.
            (r"/a\x+1", "/ax+1"),
            (r"/a\x2fb\x2F", "/a/b/"),
        ] {
            let e = parse_line(LogFormat::Nginx, &line(target)).unwrap();
            assert_eq!(e.request.target, want, "{target:?}");
        }
        for line in [
            r#"1.2.3.4 - - [x] "GET /\x"#,
            r#"1.2.3.4 - - [x] "GET /\x€"#,
            "1.2.3.4 \"\\x\u{fffd}",
            "[€",
            "€ [\u{fffd}] \"\\",
        ] {
            assert!(parse_line(LogFormat::Nginx, line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // Fragments that steer the tokenizer into its escape, bracket and quote paths.
        const PIECES: &[&[u8]] = &[
            b"\"",
            b"\\",
            b"\\x",
            b"x",
            b"[",
            b"]",
            b" ",
            b"\t",
            b"4",
            b"f",
            b"GET /",
            b"1.2.3.4",
            b"{\"request\":",
            b"://",
            "€".as_bytes(),
            "é".as_bytes(),
            b"\xff",
            b"\xc3",
        ];
        // xorshift64: deterministic, no dependency.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let nginx_head = r#"1.2.3.4 - - [25/Nov/2026:02:10:00 +0000] ""#;
        let alb_head = r#"http 2026-11-25T02:10:00Z lb 192.0.2.44:2817 - 0 0 0 200 200 1 1 ""#;
        for _ in 0..5000 {
            let mut raw = Vec::new();
            match next() % 3 {
                0 => raw.extend_from_slice(nginx_head.as_bytes()),
                1 => raw.extend_from_slice(alb_head.as_bytes()),
                _ => {}
            }
            for _ in 0..next() % 24 {
                let r = next();
                if r % 4 == 0 {
                    raw.push((r >> 8) as u8);
                } else {
                    raw.extend_from_slice(PIECES[(r >> 8) as usize % PIECES.len()]);
                }
            }
            // What the follower hands over: lossy UTF-8 of the raw line.
            let line = String::from_utf8_lossy(&raw);
            for format in [LogFormat::Nginx, LogFormat::Json, LogFormat::Alb] {
                let _ = parse_line(format, &line);
            }
        }
    }

    #[test]
    fn envoy_json() {
        let line = r#"{"start_time":"2026-11-25T02:10:00.123Z","method":"POST","path":"/api/x?cmd=;cat%20/etc/passwd","protocol":"HTTP/1.1","response_code":200,"downstream_remote_address":"10.0.0.2:51234","x_forwarded_for":"198.51.100.4","user_agent":"sqlmap/1.7","authority":"shop.example"}"#;
        let e = parse_line(LogFormat::Json, line).unwrap();
        assert_eq!(e.peer, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(e.request.method, "POST");
        assert_eq!(e.request.target, "/api/x?cmd=;cat%20/etc/passwd");
        assert_eq!(e.request.header("user-agent"), Some("sqlmap/1.7"));
        assert_eq!(e.request.header("host"), Some("shop.example"));
        assert_eq!(e.request.header("x-forwarded-for"), Some("198.51.100.4"));
        assert!(e.time.is_some());
    }

    #[test]
    fn json_with_request_line_and_errors() {
        let line = r#"{"remote_addr":"[2001:db8::5]:443","request":"GET /x HTTP/2.0"}"#;
        let e = parse_line(LogFormat::Json, line).unwrap();
        assert_eq!(e.peer, "2001:db8::5".parse::<IpAddr>().unwrap());
        assert_eq!(e.request.target, "/x");
        for bad in [
            "{",
            "[]",
            "{\"method\":\"GET\"}",
            r#"{"remote_addr":"x","request":"GET / HTTP/1.1"}"#,
        ] {
            assert!(parse_line(LogFormat::Json, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn aws_alb() {
        let line = r#"http 2026-11-25T02:10:00.186641Z app/my-lb/50dc6c495c0c9188 192.0.2.44:2817 10.0.0.1:80 0.000 0.001 0.000 200 200 34 366 "GET http://www.example.com:80/index.php?page=../../etc/passwd HTTP/1.1" "curl/8.0" - - arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 "Root=1-58337262-36d228ad5d99923122bbe354" "-" "-" 0 2026-11-25T02:09:59.364000Z "forward" "-" "-" "10.0.0.1:80" "200" "-" "-""#;
        let e = parse_line(LogFormat::Alb, line).unwrap();
        assert_eq!(e.peer, "192.0.2.44".parse::<IpAddr>().unwrap());
        assert_eq!(e.request.target, "/index.php?page=../../etc/passwd");
        assert_eq!(e.request.header("host"), Some("www.example.com:80"));
        assert_eq!(e.request.header("user-agent"), Some("curl/8.0"));
        assert!(parse_line(LogFormat::Alb, "http 2026 short").is_err());
    }
}
