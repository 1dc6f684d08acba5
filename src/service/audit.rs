//! The security audit trail: a table the database keeps append-only
//! (triggers refuse changes, except a growing count on aggregated rows and
//! deletion past the retention period) plus a Prometheus counter per kind.
//! Events carry ids, addresses and internal reasons, never a password or
//! token. Events that record a state change (sign-up, sign-in, refresh,
//! revoke, sign-out everywhere) are written by the store in the same
//! transaction as the change; refusals are counted per client bucket and
//! minute, so a flood of them writes one row.

use std::sync::Arc;

use chrono::DateTime;

use crate::clock::SharedClock;
use crate::domain::audit::EventKind;
use crate::domain::Client;
use crate::metrics::Metrics;
use crate::storage::{Refusal, SecurityEvent, Store};

/// Refusals of one kind from one bucket share a row for this long.
const REFUSAL_WINDOW_MS: i64 = 60_000;

pub struct Audit {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    clock: SharedClock,
}

impl Audit {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, clock: SharedClock) -> Self {
        Self {
            store,
            metrics,
            clock,
        }
    }

    /// Counts an event whose row the store wrote inside the transaction it
    /// belongs to.
    pub fn written_elsewhere(&self, kind: EventKind) {
        self.metrics.security_event(kind.name());
    }

    /// Records an event. A failure to write it is logged, not returned: the
    /// request it describes has already been decided.
    pub async fn record(
        &self,
        kind: EventKind,
        user_id: Option<i64>,
        client: &Client,
        detail: Option<&str>,
    ) {
        self.metrics.security_event(kind.name());
        let event = SecurityEvent {
            at: self.clock.now(),
            kind,
            user_id,
            client_addr: Some(client.addr.to_string()),
            detail: detail.map(str::to_owned),
        };
        if let Err(e) = self.store.record_event(&event).await {
            tracing::error!(kind = kind.name(), error = %e, "security event not recorded");
        }
    }

    /// Counts a request refused by a limit (`detail`: which one) in the row
    /// of its client bucket and minute.
    pub async fn refused(&self, client: &Client, detail: &'static str) {
        self.metrics.security_event(EventKind::RateLimited.name());
        let now = self.clock.now().timestamp_millis();
        let refusal = Refusal {
            kind: EventKind::RateLimited,
            client_bucket: client.bucket.to_string(),
            detail,
            window_start: DateTime::from_timestamp_millis(now - now.rem_euclid(REFUSAL_WINDOW_MS))
                .unwrap_or_default(),
        };
        if let Err(e) = self.store.record_refusal(&refusal).await {
            tracing::error!(error = %e, "refusal not recorded");
        }
    }
}
