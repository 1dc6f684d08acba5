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
