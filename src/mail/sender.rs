//! The background sender every instance runs: claims due mails from the
//! outbox, hands each to the transport, and records the outcome. Retries
//! and giving up are decided by [`crate::domain::mail::after_failure`].
//!
//! Claims are leases: a sender that dies leaves its rows to be claimed
//! again when the lease ends, so a crash between claim and send delays a
//! mail but never loses it. The lease is far longer than one SMTP
//! exchange may take, so a live sender's rows are never taken from it.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use lettre::message::Mailbox;
use tokio::sync::Notify;

use super::transport::{self, Transport};
use crate::clock::SharedClock;
use crate::domain::mail::{after_failure, AfterFailure, DeliveryFailure, RetryPolicy};
use crate::metrics::Metrics;
use crate::storage::{QueuedMail, Store};

/// How long a claim holds: well past [`SEND_TIMEOUT`], so a live sender
/// always finishes (and marks) its mail before anyone else may claim it.
const LEASE: Duration = Duration::from_secs(300);
/// The most one delivery may take, from connecting to the server's answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(120);
/// Mails claimed at once: one, so each lease covers one delivery.
const BATCH: i64 = 1;
/// Sent and given-up rows are kept this long (for the operator), then pruned.
const KEEP: chrono::Duration = chrono::Duration::days(7);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub struct SenderSettings {
    pub from: Mailbox,
    pub retry: RetryPolicy,
    /// How often the outbox is looked at without a wake-up (mail queued
    /// by other instances, retries that came due).
    pub poll: Duration,
}

pub struct MailSender {
    store: Arc<dyn Store>,
    transport: Transport,
    settings: SenderSettings,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    /// Names this sender's claims.
    worker: String,
}

impl MailSender {
    pub fn new(
        store: Arc<dyn Store>,
        transport: Transport,
        settings: SenderSettings,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            transport,
            settings,
            clock,
            metrics,
            worker: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Runs until every holder of `wake` (the app's [`super::Mailer`]) is gone.
    pub fn spawn(self, wake: &Arc<Notify>) {
        let wake = Arc::downgrade(wake);
        tokio::spawn(self.run(wake));
    }

    async fn run(self, wake: Weak<Notify>) {
        let mut last_prune: Option<Instant> = None;
        loop {
            let Some(notify) = wake.upgrade() else {
                return;
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let busy = match self.round().await {
                Ok(sent) => sent,
                Err(e) => {
                    tracing::warn!(error = %e, "mail outbox unavailable");
                    false
                }
            };
            if !busy {
                // Once the outbox is drained, not after every mail.
                self.report_backlog().await;
            }
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                let now = self.clock.now();
                if let Err(e) = self.store.prune_mail(now - KEEP, now, 500).await {
                    tracing::warn!(error = %e, "mail outbox not pruned");
                }
            }
            if !busy {
                tokio::select! {
                    () = &mut notified => {}
                    () = tokio::time::sleep(self.settings.poll) => {}
                }
            }
        }
    }

    /// Claims one batch and delivers it; whether there was any.
    async fn round(&self) -> Result<bool, crate::storage::StoreError> {
        let now = self.clock.now();
        let lease_until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let mails = self
            .store
            .claim_mail(&self.worker, now, lease_until, BATCH)
            .await?;
        let busy = !mails.is_empty();
        for mail in mails {
            self.deliver(mail).await?;
        }
        Ok(busy)
    }

    async fn deliver(&self, mail: QueuedMail) -> Result<(), crate::storage::StoreError> {
        let QueuedMail {
            id,
            kind,
            recipient,
            subject,
            body_text,
            body_html,
            link,
            queued_at,
            attempts,
        } = mail;
        let sent = match transport::message(
            &self.settings.from,
            &recipient,
            &subject,
            body_text,
            body_html,
        ) {
            Ok(message) => tokio::time::timeout(SEND_TIMEOUT, self.transport.send(message))
                .await
                .unwrap_or_else(|_| {
                    Err(super::transport::DeliveryError {
                        failure: DeliveryFailure::Transient,
                        reason: format!("no answer within {}s", SEND_TIMEOUT.as_secs()),
                    })
                }),
            Err(e) => Err(e),
        };
        let now = self.clock.now();
        match sent {
            Ok(place) => {
                self.store.mail_sent(id, &self.worker, now).await?;
                self.metrics.mail_sent(&kind);
                tracing::info!(mail_id = id, kind, %place, "mail sent");
                tracing::debug!(mail_id = id, to = %recipient, "mail recipient");
                if self.transport.is_files() {
                    // No SMTP server: a laptop. The link is the whole point.
                    if let Some(link) = link {
                        tracing::info!(mail_id = id, kind, %link, "mail link (file mode)");
                    }
                }
            }
            Err(error) => {
                match after_failure(
                    error.failure,
                    attempts,
                    queued_at,
                    now,
                    &self.settings.retry,
                ) {
                    AfterFailure::RetryAt(at) => {
                        self.store
                            .mail_retry(id, &self.worker, at, &error.reason)
                            .await?;
                        self.metrics.mail_retried();
                        tracing::warn!(mail_id = id, kind, attempts, retry_at = %at,
                            reason = %error.reason, "mail not delivered; will retry");
                    }
                    AfterFailure::GiveUp => {
                        let reason = match error.failure {
                            DeliveryFailure::Permanent => "permanent",
                            DeliveryFailure::Transient => "expired",
                        };
                        self.store
                            .mail_failed(id, &self.worker, now, &error.reason)
                            .await?;
                        self.metrics.mail_failed(reason);
                        tracing::warn!(mail_id = id, kind, attempts, why = reason,
                            reason = %error.reason, "mail given up");
                    }
                }
            }
        }
        Ok(())
    }

    async fn report_backlog(&self) {
        match self.store.mail_backlog().await {
            Ok(backlog) => {
                let age = backlog
                    .oldest
                    .and_then(|at| (self.clock.now() - at).to_std().ok())
                    .unwrap_or_default();
                self.metrics.set_mail_backlog(backlog.waiting, age);
            }
            Err(e) => tracing::debug!(error = %e, "mail backlog unknown"),
        }
    }
}
