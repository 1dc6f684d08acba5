//! The security audit trail: an append-only table (triggers refuse updates
//! and deletes) plus a Prometheus counter per event kind. Events carry ids,
//! addresses and internal reasons, never a password or token.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::Utc;

use crate::metrics::Metrics;
use crate::storage::{SecurityEvent, Store};

pub const SIGN_UP: &str = "sign_up";
pub const SIGN_IN: &str = "sign_in";
pub const SIGN_IN_FAILED: &str = "sign_in_failed";
pub const REFRESH: &str = "refresh";
pub const REFRESH_REPLAYED: &str = "refresh_replayed";
pub const REUSE_DETECTED: &str = "refresh_reuse_detected";
pub const REVOKE: &str = "revoke";
pub const SIGN_OUT_EVERYWHERE: &str = "sign_out_everywhere";
pub const RATE_LIMITED: &str = "rate_limited";

pub struct Audit {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl Audit {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self { store, metrics }
    }

    /// Counts an event whose row the store wrote inside the transaction it
    /// belongs to (a sign-up's).
    pub fn written_elsewhere(&self, kind: &'static str) {
        self.metrics.security_event(kind);
    }

    /// Records an event. A failure to write it is logged, not returned: the
    /// request it describes has already been decided.
    pub async fn record(
        &self,
        kind: &'static str,
        user_id: Option<i64>,
        client: IpAddr,
        detail: Option<&str>,
    ) {
        self.metrics.security_event(kind);
        let event = SecurityEvent {
            at: Utc::now(),
            kind,
            user_id,
            client_addr: Some(client.to_string()),
            detail: detail.map(str::to_owned),
        };
        if let Err(e) = self.store.record_event(&event).await {
            tracing::error!(kind, error = %e, "security event not recorded");
        }
    }
}
