//! The accept loop, in place of `axum::serve`, which runs hyper without a
//! timer: there, a connection that never finishes its headers stays open
//! for ever, enough of them exhaust the file descriptors, and one
//! half-sent request holds up shutdown for the whole shutdown timeout.
//!
//! - At most `max_connections` connections at once; past that, new ones
//!   wait in the kernel's backlog until one closes (nothing is refused,
//!   and `/healthz` is answered as soon as a slot frees).
//! - Each connection is watched by a [`ConnectionGuard`]: an idle
//!   keep-alive connection closes after `idle_timeout`, a request's head
//!   must arrive within `header_timeout` of its first byte (else 408), and
//!   an over-long request line or head gets a JSON 414/431 at once instead
//!   of hyper's empty one. Request bodies have their own deadline in the
//!   GraphQL handler.
//! - HTTP/1.1 only: authql runs behind a TLS-terminating proxy, which
//!   speaks HTTP/1.1 upstream; cleartext HTTP/2 would bring a second set of
//!   limits to get right for no client that needs it.
//! - On shutdown: stop accepting, let requests in flight finish and their
//!   responses be written (up to the shutdown timeout), then close every
//!   connection, including idle and half-sent ones, without waiting for them.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

use super::error_body;

/// Connection-level limits (`AUTHQL_HTTP_*`, `AUTHQL_MAX_CONNECTIONS`).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
}

/// Longest request line: hyper's own URI limit (65,534 bytes), so that ours
/// answers first, with a JSON body.
pub const MAX_REQUEST_LINE: usize = 65_534;
/// Longest request head (request line and headers).
pub const MAX_HEAD: usize = 128 * 1024;
/// Most header lines (hyper's own limit, which would answer an empty 431).
pub const MAX_HEADERS: usize = 100;
/// "No deadline" while a request is being handled.
const BUSY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let in_flight = InFlight::default();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.map_err(io::Error::other)?,
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: back off briefly and go on serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let active = Arc::new(AtomicUsize::new(0));
        let service = connection_service(router.clone(), peer, in_flight.clone(), active.clone());
        let io = TokioIo::new(ConnectionGuard::new(stream, limits, active));
        let connection = graceful.watch(http.serve_connection(io, service));
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    let deadline = Instant::now() + limits.shutdown_timeout;
    // Its first poll sends the signal: idle keep-alive connections close,
    // busy ones after their response. Fresh and half-sent ones hyper keeps,
    // so the wait is for requests in flight, not for connections.
    let all_closed = graceful.shutdown();
    tokio::pin!(all_closed);
    tokio::select! {
        biased;
        () = &mut all_closed => {}
        () = in_flight.drained() => {
            // Their responses are handed to hyper: let them be written.
            let flush = deadline.min(Instant::now() + FLUSH_GRACE);
            tokio::select! {
                () = &mut all_closed => {}
                () = tokio::time::sleep_until(flush) => {}
            }
        }
        () = tokio::time::sleep_until(deadline) => {
            tracing::warn!("shutdown timeout reached; dropping remaining connections");
        }
    }
    // What is left is idle or half-sent: not worth waiting for.
    connections.shutdown().await;
    Ok(())
}

/// How long finished responses may take to reach their clients at shutdown.
const FLUSH_GRACE: Duration = Duration::from_secs(1);

/// The router as a hyper service for one connection: the peer address as
/// axum's `ConnectInfo`, and every request counted while in flight, in all
/// and on this connection (`active`, which tells the connection's guard
/// when it is between requests).
fn connection_service(
    router: Router,
    peer: SocketAddr,
    in_flight: InFlight,
    active: Arc<AtomicUsize>,
) -> hyper_util::service::TowerToHyperService<
    impl tower::Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = std::convert::Infallible,
            Future: Send,
        > + Clone,
> {
    let service = router
        .map_request(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        })
        .map_future(move |response| {
            // Runs when hyper calls the service, right after it parsed the
            // head and before it reads any of the body.
            let guards = (in_flight.enter(), ActiveGuard::enter(&active));
            async move {
                let response: Result<Response<Body>, _> = response.await;
                // Counted until hyper has written (and dropped) the body.
                response.map(|r| {
                    r.map(|body| {
                        Body::new(Guarded {
                            body,
                            _guards: guards,
                        })
                    })
                })
            }
        });
    hyper_util::service::TowerToHyperService::new(service)
}

/// Requests whose handler has started and whose response is not yet written.
#[derive(Clone, Default)]
struct InFlight {
    count: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

struct InFlightGuard(InFlight);

impl InFlight {
    fn enter(&self) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    async fn drained(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// One request on one connection, counted until its response is written.
struct ActiveGuard(Arc<AtomicUsize>);

impl ActiveGuard {
    fn enter(active: &Arc<AtomicUsize>) -> Self {
        active.fetch_add(1, Ordering::SeqCst);
        Self(active.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that holds its request's counts until it is dropped.
struct Guarded {
    body: Body,
    _guards: (InFlightGuard, ActiveGuard),
}

impl http_body::Body for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Where a connection is between requests, as far as its bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request yet: the first byte must come within the header timeout.
    Fresh,
    /// Kept alive after a response: closed after the idle timeout.
    Idle,
    /// Inside a request's head.
    Head(HeadProgress),
    /// Head complete: the body and the handler are the handler's business.
    Busy,
}

/// How far a request head has come, byte by byte. Line ends are `\n` or
/// `\r\n`, and empty lines before the request line are skipped, as hyper's
/// parser does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct HeadProgress {
    request_line_done: bool,
    /// Bytes of the current line, line end excluded.
    line: usize,
    head: usize,
    headers: usize,
}

/// What one more byte of a head means.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    More,
    Done,
    Refuse(Refusal),
}

/// A connection-level refusal, answered with a JSON body before closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    LineTooLong,
    HeadTooLarge,
    HeadTimeout,
}

impl Refusal {
    fn status_line(self) -> &'static str {
        match self {
            Refusal::LineTooLong => "414 URI Too Long",
            Refusal::HeadTooLarge => "431 Request Header Fields Too Large",
            Refusal::HeadTimeout => "408 Request Timeout",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refusal::LineTooLong => "request line longer than 65534 bytes",
            Refusal::HeadTooLarge => "request head over 128 KiB or over 100 headers",
            Refusal::HeadTimeout => "request headers not received in time",
        }
    }

    fn response(self) -> Vec<u8> {
        let body = error_body(super::BAD_REQUEST, self.message());
        format!(
            "HTTP/1.1 {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.status_line(),
            body.len()
        )
        .into_bytes()
    }
}

impl HeadProgress {
    fn push(&mut self, b: u8) -> Step {
        self.head += 1;
        if self.head > MAX_HEAD {
            return Step::Refuse(Refusal::HeadTooLarge);
        }
        match b {
            b'\r' => {}
            b'\n' if !self.request_line_done => {
                // Empty lines before the request line are skipped.
                self.request_line_done = self.line > 0;
                self.line = 0;
            }
            b'\n' if self.line == 0 => return Step::Done,
            b'\n' => {
                self.headers += 1;
                self.line = 0;
                if self.headers > MAX_HEADERS {
                    return Step::Refuse(Refusal::HeadTooLarge);
                }
            }
            _ => {
                self.line += 1;
                if !self.request_line_done && self.line > MAX_REQUEST_LINE {
                    return Step::Refuse(Refusal::LineTooLong);
                }
            }
        }
        Step::More
    }
}

/// Watches the bytes of one connection for the limits hyper does not
/// enforce the way we want (see the module documentation).
pub struct ConnectionGuard {
    stream: TcpStream,
    limits: ServerLimits,
    /// Requests of this connection that are being handled or answered.
    active: Arc<AtomicUsize>,
    phase: Phase,
    /// Deadline of the current phase (none while busy).
    timer: Pin<Box<Sleep>>,
    /// A refusal being written before the connection is closed.
    refusal: Option<(Vec<u8>, usize)>,
    closed: bool,
}

impl ConnectionGuard {
    fn new(stream: TcpStream, limits: ServerLimits, active: Arc<AtomicUsize>) -> Self {
        Self {
            stream,
            limits,
            active,
            phase: Phase::Fresh,
            timer: Box::pin(tokio::time::sleep(limits.header_timeout)),
            refusal: None,
            closed: false,
        }
    }

    /// Follows the request head through newly read bytes.
    fn scan(&mut self, bytes: &[u8]) -> Option<Refusal> {
        for &b in bytes {
            match &mut self.phase {
                Phase::Busy => return None,
                Phase::Fresh | Phase::Idle => {
                    // A request begins: its head has a deadline.
                    self.phase = Phase::Head(HeadProgress::default());
                    self.timer
                        .as_mut()
                        .reset(Instant::now() + self.limits.header_timeout);
                }
                Phase::Head(_) => {}
            }
            if let Phase::Head(progress) = &mut self.phase {
                match progress.push(b) {
                    Step::More => {}
                    Step::Done => {
                        // No deadline while the handler works (the body has
                        // its own); the timer stays armed far away, holding
                        // the task's waker for when `settle` brings the idle
                        // deadline back.
                        self.phase = Phase::Busy;
                        self.timer.as_mut().reset(Instant::now() + BUSY);
                    }
                    Step::Refuse(refusal) => return Some(refusal),
                }
            }
        }
        None
    }

    /// Writes the pending refusal; then reads end (hyper sees EOF and
    /// closes the connection without answering itself).
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.refusal {
            if *written == bytes.len() {
                self.refusal = None;
                break;
            }
            match Pin::new(&mut self.stream).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => self.refusal = None,
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Pending => return Poll::Pending,
            }
        }
        self.closed = true;
        Poll::Ready(Ok(()))
    }

    fn refuse(&mut self, refusal: Refusal, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tracing::debug!(?refusal, "connection refused");
        self.refusal = Some((refusal.response(), 0));
        self.poll_refusal(cx)
    }

    /// A busy connection whose requests are all answered waits for the
    /// next one: from now on, the idle deadline.
    fn settle(&mut self) {
        if self.phase == Phase::Busy && self.active.load(Ordering::SeqCst) == 0 {
            self.phase = Phase::Idle;
            self.timer
                .as_mut()
                .reset(Instant::now() + self.limits.idle_timeout);
        }
    }
}

impl AsyncRead for ConnectionGuard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusal.is_some() || this.closed {
            return this.poll_refusal(cx);
        }
        this.settle();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some(refusal) = this.scan(&buf.filled()[before..]) {
                    // hyper never sees these bytes.
                    buf.set_filled(before);
                    return this.refuse(refusal, cx);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                // Polled in every phase, so the task is woken at the deadline
                // even when hyper registered its read interest while busy.
                if this.timer.as_mut().poll(cx).is_ready() && this.phase != Phase::Busy {
                    return match this.phase {
                        Phase::Head(_) => this.refuse(Refusal::HeadTimeout, cx),
                        // Nothing asked for a while: close quietly.
                        _ => {
                            this.closed = true;
                            Poll::Ready(Ok(()))
                        }
                    };
                }
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for ConnectionGuard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(progress: &mut HeadProgress, bytes: &[u8]) -> Step {
        for &b in bytes {
            match progress.push(b) {
                Step::More => {}
                other => return other,
            }
        }
        Step::More
    }

    #[test]
    fn a_head_ends_at_the_blank_line_even_across_reads() {
        let mut p = HeadProgress::default();
        assert_eq!(feed(&mut p, b"GET / HTTP/1.1\r\nHost: x\r"), Step::More);
        assert_eq!(feed(&mut p, b"\n\r"), Step::More);
        assert_eq!(feed(&mut p, b"\n"), Step::Done);
    }

    #[test]
    fn empty_lines_before_a_request_and_bare_line_feeds_are_understood() {
        // Hyper skips empty lines before the request line: so do we, and the
        // head deadline keeps running meanwhile.
        let mut p = HeadProgress::default();
        assert_eq!(feed(&mut p, b"\r\n\r\n\n"), Step::More);
        assert_eq!(feed(&mut p, b"GET / HTTP/1.1\nHost: x\n"), Step::More);
        assert_eq!(feed(&mut p, b"\n"), Step::Done);
        let mut p = HeadProgress::default();
        let many = b"\r\n".repeat(MAX_HEAD);
        assert_eq!(feed(&mut p, &many), Step::Refuse(Refusal::HeadTooLarge));
    }

    #[test]
    fn over_long_lines_and_heads_are_refused() {
        let mut p = HeadProgress::default();
        let line = vec![b'a'; MAX_REQUEST_LINE + 1];
        assert_eq!(feed(&mut p, &line), Step::Refuse(Refusal::LineTooLong));
        let mut p = HeadProgress::default();
        assert_eq!(feed(&mut p, b"GET / HTTP/1.1\r\n"), Step::More);
        let header = vec![b'h'; MAX_HEAD];
        assert_eq!(feed(&mut p, &header), Step::Refuse(Refusal::HeadTooLarge));
        let response = String::from_utf8(Refusal::LineTooLong.response()).expect("utf-8");
        assert!(response.starts_with("HTTP/1.1 414 URI Too Long\r\n"));
        let (_, body) = response.split_once("\r\n\r\n").expect("head and body");
        let body: serde_json::Value = serde_json::from_str(body).expect("JSON body");
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    }
}
