//! The `authql` binary itself: subcommands, start-up refusals, signals.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_authql");

/// A command with none of the caller's authql settings leaking in.
pub fn authql(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("AUTHQL_") || key == "DATABASE_URL" {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A running `authql serve` process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    /// Everything it logged so far (JSON lines).
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// SIGTERM, then waits for the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(kill.success());
        self.child.wait().expect("wait").code()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `authql serve` on a free port; returns once it listens.
pub fn start(cmd: &mut Command) -> Server {
    let mut child = cmd
        .env("AUTHQL_BIND", "127.0.0.1:0")
        .env("AUTHQL_LOG_FORMAT", "json")
        .env("AUTHQL_ARGON2_MEMORY_KIB", "1024")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("authql starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("authql logged before exiting")
            .expect("line");
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if entry["fields"]["message"] == "authql listening" {
            break entry["fields"]["addr"].as_str().expect("addr").to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let mut log = sink.lock().expect("log lock");
            log.push_str(&line);
            log.push('\n');
        }
    });
    Server { child, addr, log }
}

#[test]
fn schema_graphql_equals_print_schema() {
    let dir = tempfile::tempdir().expect("dir");
    let output = authql(dir.path())
        .arg("print-schema")
        .output()
        .expect("runs");
    assert!(output.status.success());
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql");
    assert_eq!(
        String::from_utf8(output.stdout).expect("utf-8"),
        committed,
        "schema.graphql is stale: run `cargo run -- print-schema > schema.graphql`"
    );
}

#[test]
fn a_short_secret_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    let output = authql(dir.path())
        .arg("serve")
        .env("AUTHQL_JWT_SECRET", "too-short")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("AUTHQL_JWT_SECRET") && stderr.contains("at least 32 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("too-short"), "the secret is not echoed");
}

#[test]
fn migrate_creates_the_default_database_with_no_configuration() {
    let dir = tempfile::tempdir().expect("dir");
    let status = authql(dir.path()).arg("migrate").status().expect("runs");
    assert!(status.success());
    let file = dir.path().join("data/authql.db");
    assert!(file.exists(), "default SQLite file under ./data/");
    // It holds password hashes and the signing key: its owner's only.
    use std::os::unix::fs::PermissionsExt as _;
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600, "database file");
    assert_eq!(mode(&dir.path().join("data")), 0o700, "database folder");
    let wal = dir.path().join("data/authql.db-wal");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600, "WAL file");
    }
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let dir = tempfile::tempdir().expect("dir");
    let server = start(&mut authql(dir.path()));
    let addr = server.addr.clone();

    let body = r#"{"query":"{ __typename }"}"#;
    let (head, tail) = body.split_at(10);
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{head}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write head");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // SIGTERM while the request is still arriving.
    let exit = tokio::task::spawn_blocking(move || server.terminate());
    tokio::time::sleep(Duration::from_millis(300)).await;

    stream.write_all(tail.as_bytes()).await.expect("write rest");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""__typename":"Query""#), "{response}");

    assert_eq!(
        exit.await.expect("join"),
        Some(0),
        "clean exit after SIGTERM"
    );
    // New connections are no longer accepted.
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
}

#[test]
fn a_wildcard_cors_origin_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    for origins in [
        "*",
        "https://app.example.com, *",
        "app.example.com",
        "https://app.example.com/path",
    ] {
        let output = authql(dir.path())
            .env("AUTHQL_CORS_ORIGINS", origins)
            .env("AUTHQL_BIND", "127.0.0.1:0")
            .output()
            .expect("runs");
        assert!(!output.status.success(), "{origins} refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("AUTHQL_CORS_ORIGINS"),
            "{origins}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn a_half_sent_request_does_not_hold_up_shutdown() {
    let dir = tempfile::tempdir().expect("dir");
    // The default shutdown timeout (30 s) is what a stalled request used to cost.
    let server = start(&mut authql(dir.path()));
    let mut half_sent = tokio::net::TcpStream::connect(&server.addr)
        .await
        .expect("connect");
    half_sent
        .write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
        .await
        .expect("write");
    let _silent = tokio::net::TcpStream::connect(&server.addr)
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let exit = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .expect("join");
    assert_eq!(exit, Some(0));
    // Loose on purpose (machines are noisy); the old behaviour was 30 s.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
}

/// With the most verbose logging, a whole session's worth of requests leaves
/// no password, token or hash in the log.
#[tokio::test]
async fn logs_never_contain_passwords_tokens_or_hashes() {
    use serde_json::json;

    use crate::helpers::{post_graphql, CREATE_TOKEN, ME, REFRESH, SIGN_UP};
    let dir = tempfile::tempdir().expect("dir");
    let server = start(authql(dir.path()).env("AUTHQL_LOG", "trace"));
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = server.url("/graphql");
    let password = "Secret-Passphrase-4711";
    let signed_up = post_graphql(
        &client,
        &url,
        None,
        None,
        SIGN_UP,
        json!({ "input": {
        "username": "logged", "password": password, "email": "logged@example.com" } }),
    )
    .await;
    let payload = &signed_up["data"]["signUp"];
    let access = payload["accessToken"].as_str().expect("access").to_owned();
    let refresh = payload["refreshToken"]
        .as_str()
        .expect("refresh")
        .to_owned();
    post_graphql(
        &client,
        &url,
        None,
        None,
        CREATE_TOKEN,
        json!({ "input": { "login": "logged", "password": password } }),
    )
    .await;
    post_graphql(
        &client,
        &url,
        None,
        None,
        CREATE_TOKEN,
        json!({ "input": { "login": "logged", "password": "Wrong-Passphrase-0815" } }),
    )
    .await;
    post_graphql(&client, &url, Some(&access), None, ME, json!({})).await;
    let rotated = post_graphql(
        &client,
        &url,
        None,
        None,
        REFRESH,
        json!({ "token": refresh }),
    )
    .await;
    let next = rotated["data"]["refreshToken"]["refreshToken"]
        .as_str()
        .expect("next")
        .to_owned();
    // GET puts the document in the URL; a password there must not be logged either.
    client
        .get(server.url("/graphql"))
        .query(&[("query", format!("{{ me {{ id }} }} # {password}"))])
        .send()
        .await
        .expect("sent");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log.lock().expect("log").clone();
    assert!(log.contains("signed in"), "the log was captured");
    for secret in [
        password,
        "Wrong-Passphrase-0815",
        &access,
        &refresh,
        &next,
        "$argon2id$",
    ] {
        assert!(!log.contains(secret), "log contains {secret:?}");
    }
    // Not even a JWT-looking fragment of the access token.
    let signature = access.rsplit('.').next().expect("signature");
    assert!(!log.contains(signature));
}

/// Waits (up to 30 s) until the server's log holds `needle`; returns the log.
async fn log_with(server: &Server, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = server.log.lock().expect("log").clone();
        if log.contains(needle) {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in the log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn with_no_configuration_mails_are_files_and_their_links_are_logged() {
    use serde_json::json;

    use crate::helpers::{post_graphql, SIGN_UP};
    let dir = tempfile::tempdir().expect("dir");
    let server = start(&mut authql(dir.path()));
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = server.url("/graphql");
    post_graphql(
        &client,
        &url,
        None,
        None,
        SIGN_UP,
        json!({ "input": { "username": "laptop", "password": "a long passphrase", "email": "me@laptop.example" } }),
    )
    .await;
    // A person reads the link off the log and pastes its token into GraphiQL.
    let log = log_with(&server, "mail link (file mode)").await;
    let line = log
        .lines()
        .find(|l| l.contains("mail link (file mode)"))
        .expect("line");
    let entry: serde_json::Value = serde_json::from_str(line).expect("json line");
    let link = entry["fields"]["link"].as_str().expect("link");
    let prefix = format!("http://{}/verify-email?token=", server.addr);
    assert!(link.starts_with(&prefix), "{link}");
    let token = &link[prefix.len()..];
    let verified = post_graphql(
        &client,
        &url,
        None,
        None,
        "mutation($t: String!) { verifyEmail(token: $t) { __typename } }",
        json!({ "t": token }),
    )
    .await;
    assert_eq!(
        verified["data"]["verifyEmail"]["__typename"],
        "VerifyEmailSuccess"
    );
    let files: Vec<_> = std::fs::read_dir(dir.path().join("data/mail"))
        .expect("./data/mail")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .collect();
    assert_eq!(files.len(), 1);
}

#[tokio::test]
async fn with_smtp_no_log_line_holds_a_mail_token_or_body() {
    use serde_json::json;

    use crate::helpers::{post_graphql, SIGN_UP};
    let Some(sink) = crate::smtp::SmtpSink::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let server = start(
        authql(dir.path())
            .env("AUTHQL_SMTP_URL", sink.url())
            .env("AUTHQL_LOG", "trace"),
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = server.url("/graphql");
    post_graphql(
        &client,
        &url,
        None,
        None,
        SIGN_UP,
        json!({ "input": { "username": "private", "password": "a long passphrase", "email": "private@example.com" } }),
    )
    .await;
    post_graphql(
        &client,
        &url,
        None,
        None,
        "mutation { requestPasswordReset(email: \"private@example.com\") { __typename } }",
        json!({}),
    )
    .await;
    let mails = sink.wait_for(2).await;
    let reset = mails
        .iter()
        .find(|m| m.subject.contains("Reset"))
        .expect("reset mail");
    let token = reset.token();
    post_graphql(
        &client,
        &url,
        None,
        None,
        "mutation($t: String!) { resetPassword(token: $t, newPassword: \"another long passphrase\") { __typename } }",
        json!({ "t": token }),
    )
    .await;
    let log = log_with(&server, "password reset").await;
    assert!(log.contains("mail sent"), "{log}");
    for secret in [
        token.as_str(),
        &mails[0].token(),
        "reset-password?token",
        "someone (we hope you)",
        "another long passphrase",
    ] {
        assert!(!log.contains(secret), "log contains {secret:?}");
    }
}

/// The boolean settings as README and operators write them: `1`, `0`,
/// `yes`, `On`, read from the environment by the binary.
#[tokio::test]
async fn boolean_settings_take_1_0_yes_no_on_off_from_the_environment() {
    use serde_json::json;

    use crate::helpers::post_graphql;
    let dir = tempfile::tempdir().expect("dir");
    assert!(authql(dir.path())
        .arg("migrate")
        .status()
        .expect("runs")
        .success());
    let server = start(
        authql(dir.path())
            .env("AUTHQL_NO_MIGRATE", "1")
            .env("AUTHQL_INTROSPECTION", "0")
            .env("AUTHQL_SIGN_IN_CODES", "On")
            .env("AUTHQL_REQUIRE_VERIFIED_EMAIL", "yes"),
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = server.url("/graphql");
    let introspection = post_graphql(
        &client,
        &url,
        None,
        None,
        "{ __schema { queryType { name } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        introspection["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
        "AUTHQL_INTROSPECTION=0: {introspection}"
    );
    let code = post_graphql(
        &client,
        &url,
        None,
        None,
        "mutation { requestSignInCode(email: \"a@example.com\") { __typename } }",
        json!({}),
    )
    .await;
    assert_eq!(
        code["data"]["requestSignInCode"]["__typename"], "MailQueued",
        "AUTHQL_SIGN_IN_CODES=On: {code}"
    );
    post_graphql(
        &client,
        &url,
        None,
        None,
        crate::helpers::SIGN_UP,
        json!({ "input": { "username": "flags", "password": "a long passphrase", "email": "flags@example.com" } }),
    )
    .await;
    let unverified = post_graphql(
        &client,
        &url,
        None,
        None,
        crate::helpers::CREATE_TOKEN,
        json!({ "input": { "login": "flags@example.com", "password": "a long passphrase" } }),
    )
    .await;
    assert_eq!(
        unverified["errors"][0]["extensions"]["code"], "EMAIL_NOT_VERIFIED",
        "AUTHQL_REQUIRE_VERIFIED_EMAIL=yes: {unverified}"
    );
    drop(server);

    // AUTHQL_NO_MIGRATE=1 really skips migrations: an empty database stays
    // empty and the start fails on it instead of migrating.
    let empty = tempfile::tempdir().expect("dir");
    let output = authql(empty.path())
        .arg("serve")
        .env("AUTHQL_NO_MIGRATE", "yes")
        .env("AUTHQL_BIND", "127.0.0.1:0")
        .output()
        .expect("runs");
    assert!(
        !output.status.success(),
        "no tables, no migration: the start fails"
    );
    for wrong in ["maybe", "2"] {
        let output = authql(empty.path())
            .arg("serve")
            .env("AUTHQL_NO_MIGRATE", wrong)
            .output()
            .expect("runs");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(wrong) && stderr.contains("no-migrate"),
            "{stderr}"
        );
    }
}

/// SIGHUP reloads AUTHQL_TRUSTED_DOCUMENTS: a document added to the file
/// runs after it; a broken file leaves the manifest in force.
#[tokio::test]
async fn sighup_reloads_the_trusted_documents() {
    use serde_json::{json, Value};
    use sha2::{Digest as _, Sha256};
    let hash = |text: &str| -> String {
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let (first, second) = ("query A { __typename }", "query B { __typename }");
    let write = |path: &std::path::Path, docs: &[&str]| {
        let map: serde_json::Map<String, Value> =
            docs.iter().map(|d| (hash(d), json!(d))).collect();
        std::fs::write(path, Value::Object(map).to_string()).expect("manifest");
    };
    let dir = tempfile::tempdir().expect("dir");
    let manifest = dir.path().join("manifest.json");
    write(&manifest, &[first]);
    let server = start(
        authql(dir.path())
            .env(
                "DATABASE_URL",
                format!("sqlite://{}/authql.db", dir.path().display()),
            )
            .env("AUTHQL_TRUSTED_DOCUMENTS", &manifest)
            .env("AUTHQL_TRUSTED_DOCUMENTS_ONLY", "true"),
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let run = |id: String| {
        let (client, url) = (client.clone(), server.url("/graphql"));
        async move {
            let body: Value = client
                .post(url)
                .json(&json!({ "documentId": format!("sha256:{id}") }))
                .send()
                .await
                .expect("request")
                .json()
                .await
                .expect("JSON");
            body
        }
    };
    assert_eq!(run(hash(first)).await["data"]["__typename"], "Query");
    let before = run(hash(second)).await;
    assert_eq!(
        before["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );
    let hangup = |pid: u32| {
        let kill = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(kill.success());
    };
    write(&manifest, &[first, second]);
    hangup(server.child.id());
    log_with(&server, "trusted documents reloaded").await;
    assert_eq!(run(hash(second)).await["data"]["__typename"], "Query");
    std::fs::write(&manifest, "{ not json").expect("broken");
    hangup(server.child.id());
    log_with(&server, "trusted documents not reloaded").await;
    assert_eq!(run(hash(second)).await["data"]["__typename"], "Query");
}
