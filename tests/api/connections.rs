//! Connection-level limits: stalled headers and bodies, idle keep-alive,
//! the connection cap, over-long request lines, `Expect: 100-continue`.
//! Nothing here touches storage, so these run on SQLite only.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::*;

/// Reads until the server closes; what it sent, and how long that took.
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .expect("read");
    (answer, started.elapsed())
}

fn json_error(answer: &[u8], status: u16) {
    let (got, body) = parse_http_response(answer);
    assert_eq!(got, status, "{}", String::from_utf8_lossy(answer));
    let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");
}

#[tokio::test]
async fn stalled_headers_are_cut_off_and_health_keeps_answering_at_the_connection_cap() {
    let app = spawn_with(Backend::Sqlite, |c| {
        c.http.max_connections = 8;
        c.http.header_timeout = Duration::from_millis(500);
    })
    .await;
    // Fill every slot: half of them send half a head, half send nothing.
    let mut stalled = Vec::new();
    for i in 0..8 {
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        if i % 2 == 0 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .expect("write");
        }
        stalled.push(stream);
    }
    // A real client still gets its answer, once the stalled ones are cut off.
    let health = app
        .client
        .get(app.url("/healthz"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("health answers");
    assert_eq!(health.status(), 200);
    for (i, mut stream) in stalled.into_iter().enumerate() {
        let (answer, _) = read_until_closed(&mut stream).await;
        if i % 2 == 0 {
            json_error(&answer, 408);
        } else {
            assert!(answer.is_empty(), "a silent connection is just closed");
        }
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let app = spawn_with(Backend::Sqlite, |c| {
        c.http.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    for _ in 0..2 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "kept alive");
    }
    let (rest, waited) = read_until_closed(&mut stream).await;
    assert!(rest.is_empty());
    assert!(
        waited >= Duration::from_millis(200),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408() {
    let app = spawn_with(Backend::Sqlite, |c| {
        c.http.body_timeout = Duration::from_millis(500);
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream
        .write_all(
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query\":",
        )
        .await
        .expect("write");
    let (answer, _) = read_until_closed(&mut stream).await;
    json_error(&answer, 408);
    assert!(app.gql("{ __typename }", serde_json::json!({})).await["errors"].is_null());
}

#[tokio::test]
async fn an_oversized_expect_100_continue_is_refused_before_the_body() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream
        .write_all(
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .expect("write");
    // The first thing back is the refusal, not `100 Continue`.
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered without a body")
        .expect("read");
    let (status, body) = parse_http_response(&answer[..n]);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer[..n]));
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");
}

#[tokio::test]
async fn over_long_request_lines_and_heads_get_json_errors() {
    let app = spawn_app(Backend::Sqlite).await;
    let (status, body) = raw_get_graphql(
        app.addr,
        &format!("{{ __typename }}#{}", "x".repeat(70_000)),
    )
    .await;
    assert_eq!(status, 414);
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");

    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
        "X-Padding: 0123456789012345678901234567890123456789\r\n".repeat(3_000)
    );
    let (status, body) = raw_http(app.addr, head.as_bytes()).await;
    assert_eq!(status, 431);
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    // Ordinary requests on new connections are unaffected.
    assert!(app.gql("{ __typename }", serde_json::json!({})).await["errors"].is_null());
}

#[tokio::test]
async fn empty_lines_before_a_request_still_have_a_deadline() {
    let app = spawn_with(Backend::Sqlite, |c| {
        c.http.header_timeout = Duration::from_millis(500);
    })
    .await;
    // Hyper skips empty lines before a request line; they must not count
    // as a finished head (that would disable every deadline).
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream.write_all(b"\r\n\r\n").await.expect("write");
    let (answer, waited) = read_until_closed(&mut stream).await;
    json_error(&answer, 408);
    assert!(waited < Duration::from_secs(20));
    // And a request after them is served.
    let (status, body) = raw_http(
        app.addr,
        b"\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn pipelined_and_continued_requests_are_answered_intact() {
    let app = spawn_with(Backend::Sqlite, |c| {
        c.http.idle_timeout = Duration::from_millis(500);
    })
    .await;
    let body = r#"{"query":"{ __typename }"}"#;
    let post = format!(
        "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // Two requests in one write, bare line feeds in the second.
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let pipelined = format!("{post}GET /healthz HTTP/1.1\nHost: x\n\n");
    stream.write_all(pipelined.as_bytes()).await.expect("write");
    let (answer, _) = read_until_closed(&mut stream).await;
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert!(text.contains(r#""__typename":"Query""#), "{text}");
    // Expect: 100-continue within the limit: 100, then the answer, then the
    // connection is idle again (and closed after the idle timeout).
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).await.expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    stream.write_all(body.as_bytes()).await.expect("body");
    let (answer, _) = read_until_closed(&mut stream).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("Query"),
        "{text}"
    );
}

#[tokio::test]
async fn shutdown_closes_kept_alive_connections_after_their_responses() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let started = Instant::now();
    app.stop().await;
    let (rest, _) = read_until_closed(&mut stream).await;
    assert!(rest.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
