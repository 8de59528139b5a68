//! `GET /docs` (spec §2) as a browser meets it: a page whose every script and style
//! comes from this server, gzipped, cached by ETag, under a strict policy; `DOCS=off`
//! takes it away. The real browser's test is scripts/docs-browser (in `.ci/run`).

use hyper::Method;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const GZIP: (&str, &str) = ("accept-encoding", "gzip, deflate, br");

/// The files the page loads: every `src=` and `href=` that is a path of this server.
fn loaded(page: &str) -> Vec<String> {
    let attribute = |part: &str| part.split('"').nth(1).map(str::to_owned);
    let parts = page.split(" src=").chain(page.split(" href=")).skip(1);
    let files: Vec<_> = parts.filter_map(attribute).filter(|at| at.starts_with('/')).collect();
    files
}

/// `gzip -dc` of `bytes`.
fn gunzip(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut gzip = std::process::Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run gzip");
    let (mut stdin, bytes) = (gzip.stdin.take().unwrap(), bytes.to_vec());
    // Written while gzip's output is read, so neither pipe fills and stops the other.
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let output = gzip.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success(), "not gzip");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> crate::helpers::TestResponse {
    app.request(Method::GET, path, headers, "").await
}

#[tokio::test]
async fn docs_serve_swagger_ui_from_the_binary_under_a_strict_policy() {
    let app = spawn_app().await;
    let page = get(&app, "/docs", &[GZIP]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let policy = page.header("content-security-policy").expect("a policy");
    for rule in ["script-src 'self';", "connect-src 'self';", "frame-ancestors 'none'"] {
        assert!(policy.contains(rule), "{policy}");
    }
    assert!(!policy.contains("http") && !policy.contains("'unsafe-eval'"), "{policy}");
    assert!(!page.body.contains("<script>"), "no inline script: {}", page.body);

    let files = loaded(&page.body);
    assert!(files.contains(&"/docs/swagger-ui-bundle.js".to_owned()), "{files:?}");
    let mut wire = page.raw.len();
    for file in &files {
        let response = get(&app, file, &[GZIP]).await;
        assert_eq!(response.status, 200, "{file}: {}", response.body);
        assert!(response.header("cache-control").unwrap().contains("max-age"), "{file}");
        assert!(response.header("x-request-id").is_some(), "{file}");
        wire += response.raw.len();
        if response.header("content-encoding") == Some("gzip") {
            let text = gunzip(&response.raw);
            assert!(!file.ends_with(".js") || text.contains("SwaggerUIBundle"), "{file}");
        }
        let etag = response.header("etag").expect("an etag").to_owned();
        let again = get(&app, file, &[GZIP, ("if-none-match", &etag)]).await;
        assert_eq!((again.status, again.raw.len()), (304, 0), "{file}");
    }
    let bundle = get(&app, "/docs/swagger-ui-bundle.js", &[GZIP]).await;
    assert_eq!(bundle.header("content-encoding"), Some("gzip"));
    assert_eq!(bundle.header("vary"), Some("accept-encoding"));
    let document = get(&app, "/openapi.json", &[GZIP]).await;
    wire += document.raw.len();
    assert!(wire <= 600 * 1024, "first load: {wire} bytes");

    // A client that refuses gzip gets a reason, not bytes it cannot read.
    let identity = get(&app, "/docs/swagger-ui-bundle.js", &[("accept-encoding", "identity")]);
    let identity = identity.await;
    assert_eq!(identity.status, 406);
    assert!(identity.detail().contains("gzip"), "{}", identity.body);
    assert_eq!(get(&app, "/docs/missing.js", &[GZIP]).await.status, 404);
    let post = app.request(Method::POST, "/docs", &[], "").await;
    assert_eq!((post.status, post.header("allow")), (405, Some("GET")));
}

#[tokio::test]
async fn docs_off_answers_404() {
    let app = spawn_app_with(&[("DOCS", "off")]).await;
    for path in ["/docs", "/docs/swagger-ui-bundle.js"] {
        let response = get(&app, path, &[GZIP]).await;
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(response.detail(), "Not Found");
    }
    assert_eq!(app.get("/openapi.json").await.status, 200);
}
