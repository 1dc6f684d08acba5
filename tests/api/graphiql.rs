use crate::helpers::*;

async fn graphiql_is_served_from_the_binary_with_no_external_urls(backend: Backend) {
    let app = spawn_app(backend).await;
    for (path, accept) in [
        ("/", "*/*"),
        ("/graphql", "text/html,application/xhtml+xml"),
    ] {
        let page = app
            .client
            .get(app.url(path))
            .header("accept", accept)
            .send()
            .await
            .expect("sent");
        assert_eq!(page.status(), 200);
        assert!(page.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/html"));
        let csp = page.headers()["content-security-policy"]
            .to_str()
            .expect("csp")
            .to_owned();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        let html = page.text().await.expect("html");
        assert!(
            !html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"),
            "{html}"
        );
        let assets: Vec<&str> = html
            .split(['"', '\''])
            .filter(|s| s.starts_with("/graphiql/"))
            .collect();
        assert!(assets.len() >= 5, "page loads its own assets: {assets:?}");
        for asset in assets {
            let response = app.client.get(app.url(asset)).send().await.expect("sent");
            assert_eq!(response.status(), 200, "{asset}");
            let ct = response.headers()["content-type"]
                .to_str()
                .expect("ct")
                .to_owned();
            assert!(
                ct.starts_with("text/javascript") || ct.starts_with("text/css"),
                "{asset}: {ct}"
            );
            assert!(
                response.bytes().await.expect("body").len() > 100,
                "{asset} has content"
            );
        }
    }
    let missing = app
        .client
        .get(app.url("/graphiql/../Cargo.toml"))
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);
}

crate::on_both_backends!(graphiql_is_served_from_the_binary_with_no_external_urls,);

/// GraphiQL as a person uses it, in Debian's chromium driven by
/// playwright-core (`tests/browser/graphiql.mjs`): run the default
/// sign-up, put its access token into the Headers tab by hand, clear the
/// editor, type `me`, press Run; type another and press Ctrl-Enter; reload
/// and run again. Each must send what was typed and show its result, with
/// no error in the page's console and no request to another origin.
#[tokio::test]
async fn a_person_types_a_query_and_runs_it_in_a_real_browser() {
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/tests/browser/graphiql.mjs");
    let playwright = format!("{root}/tests/browser/node_modules/playwright-core");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node_runs = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(node_runs
        && std::path::Path::new(&playwright).is_dir()
        && std::path::Path::new(&chromium).exists())
    {
        assert!(
            std::env::var("AUTHQL_TEST_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "AUTHQL_TEST_REQUIRE_BROWSER=1 but node, {playwright} or {chromium} is missing"
        );
        eprintln!("SKIPPED (browser): node, playwright-core or chromium missing; run scripts/test");
        return;
    }
    let app = spawn_app(Backend::Sqlite).await;
    let base = app.url("");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(&script)
            .arg(&base)
            .env("CHROMIUM", &chromium)
            .output()
            .expect("node runs")
    })
    .await
    .expect("browser task");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
