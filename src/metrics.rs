//! Prometheus metrics, held by the app (no process-global registry, so tests
//! can run many apps in one process).
//!
//! Label values are bounded: the operation label is built from the schema's
//! own root field names, never from client-chosen operation names.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
    /// `ok` or `error` (any entry in `errors[]`).
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationOnly {
    operation: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<OperationLabels, Counter>,
    latency: HistogramFamily<OperationOnly>,
    sign_ins: Family<ResultLabels, Counter>,
    hash_wait: Histogram,
    hash_shed: Family<ReasonLabels, Counter>,
    hash_queue_depth: Gauge,
    security_events: Family<KindLabels, Counter>,
    mail_queued: Family<KindLabels, Counter>,
    mail_sent: Family<KindLabels, Counter>,
    mail_failed: Family<ReasonLabels, Counter>,
    mail_retried: Counter,
    mail_waiting: Gauge,
    mail_queue_age: Gauge,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Publishes the read replica's lag and where its reads went.
    pub fn watch_replica(&mut self, stats: crate::storage::replica::ReplicaStats) {
        self.registry.register(
            "read_replica_lag_seconds",
            "Replay lag of AUTHQL_READ_DATABASE_URL at the last sample (-1: unknown)",
            stats.lag_seconds,
        );
        self.registry.register(
            "read_replica_reads",
            "Reads that may go to the replica, by the server that served them and why not the replica",
            stats.reads,
        );
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("authql");
        let requests = Family::<OperationLabels, Counter>::default();
        registry.register(
            "graphql_requests",
            "GraphQL requests by root operation and outcome",
            requests.clone(),
        );
        let latency: HistogramFamily<OperationOnly> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)));
        registry.register(
            "graphql_request_duration_seconds",
            "GraphQL request latency by root operation",
            latency.clone(),
        );
        let sign_ins = Family::<ResultLabels, Counter>::default();
        registry.register(
            "sign_ins",
            "createToken attempts by result (success or failure)",
            sign_ins.clone(),
        );
        let hash_wait = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "password_hash_queue_wait_seconds",
            "Time an argon2 hash or verify waited for a free hashing slot",
            hash_wait.clone(),
        );
        let hash_shed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "password_hash_shed",
            "Password hashes not computed: queue_full and client_share (refused with RATE_LIMITED), caller_gone (the client hung up while queued)",
            hash_shed.clone(),
        );
        let hash_queue_depth = Gauge::default();
        registry.register(
            "password_hash_queue_depth",
            "Password hashes waiting for a hashing thread (and places reserved)",
            hash_queue_depth.clone(),
        );
        let security_events = Family::<KindLabels, Counter>::default();
        registry.register(
            "security_events",
            "Security events (also in the security_events table) by kind",
            security_events.clone(),
        );
        let mail_queued = Family::<KindLabels, Counter>::default();
        registry.register(
            "mail_queued",
            "Mails written to the outbox by this instance, by kind",
            mail_queued.clone(),
        );
        let mail_sent = Family::<KindLabels, Counter>::default();
        registry.register(
            "mail_sent",
            "Mails this instance's sender delivered, by kind",
            mail_sent.clone(),
        );
        let mail_failed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "mail_failed",
            "Mails given up: permanent (a 5xx answer) or expired (no delivery within AUTHQL_MAIL_GIVE_UP)",
            mail_failed.clone(),
        );
        let mail_retried = Counter::default();
        registry.register(
            "mail_retried",
            "Delivery attempts that failed for now and will be retried",
            mail_retried.clone(),
        );
        let mail_waiting = Gauge::default();
        registry.register(
            "mail_queue_waiting",
            "Mails in the outbox not yet sent or given up (all instances)",
            mail_waiting.clone(),
        );
        let mail_queue_age = Gauge::default();
        registry.register(
            "mail_queue_age_seconds",
            "Age of the oldest mail waiting in the outbox (0 when none)",
            mail_queue_age.clone(),
        );
        Self {
            registry,
            security_events,
            mail_queued,
            mail_sent,
            mail_failed,
            mail_retried,
            mail_waiting,
            mail_queue_age,
            requests,
            latency,
            sign_ins,
            hash_wait,
            hash_shed,
            hash_queue_depth,
        }
    }

    pub fn observe_request(&self, operation: &str, ok: bool, elapsed: Duration) {
        self.requests
            .get_or_create(&OperationLabels {
                operation: operation.to_owned(),
                outcome: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&OperationOnly {
                operation: operation.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn sign_in(&self, success: bool) {
        self.sign_ins
            .get_or_create(&ResultLabels {
                result: if success { "success" } else { "failure" }.to_owned(),
            })
            .inc();
    }

    pub fn security_event(&self, kind: &str) {
        self.security_events
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn hash_shed(&self, reason: &'static str) {
        self.hash_shed
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn set_hash_queue_depth(&self, depth: usize) {
        self.hash_queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    pub fn observe_hash_wait(&self, waited: Duration) {
        self.hash_wait.observe(waited.as_secs_f64());
    }

    pub fn mail_queued(&self, kind: &str) {
        self.mail_queued
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn mail_sent(&self, kind: &str) {
        self.mail_sent
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// `reason`: `permanent` or `expired`.
    pub fn mail_failed(&self, reason: &'static str) {
        self.mail_failed
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn mail_retried(&self) {
        self.mail_retried.inc();
    }

    pub fn set_mail_backlog(&self, waiting: i64, oldest_age: Duration) {
        self.mail_waiting.set(waiting);
        self.mail_queue_age
            .set(i64::try_from(oldest_age.as_secs()).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition (Prometheus scrapes it natively).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
