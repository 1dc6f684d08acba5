//! Building and running the server: [`App::build`] opens the database, runs
//! the migrations, loads the keys and binds the listener (port 0 works, for
//! tests); [`App::run_until`] serves until the shutdown future resolves, then
//! lets in-flight requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::http::HeaderValue;
use axum::Router;
use tokio::net::TcpListener;

use crate::auth::{keys, load_refresh_key, KeyRing, PasswordHasher, TokenService};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Pooler, ServeConfig};
use crate::domain::mail::{MailLinks, RetryPolicy, TokenLifetimes};
use crate::domain::SignUpRules;
use crate::graphql::trusted::TrustedDocuments;
use crate::graphql::{build_schema, document_guard, AppSchema, DocumentGuard};
use crate::http::{router, AppState, RouterConfig, ServerLimits};
use crate::mail::{MailSender, MailTemplates, Mailer, SenderSettings, Transport};
use crate::metrics::Metrics;
use crate::service::{AccountService, AccountSettings, MailSettings, Throttle};
use crate::storage::{self, Store};

/// Everything a request needs, wired together: the HTTP layer serves it,
/// and the micro-benchmarks drive it without HTTP.
pub struct Services {
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyRing>,
    pub accounts: Arc<AccountService>,
    /// Renders mail for the outbox; the sender stops when it is dropped.
    pub mailer: Arc<Mailer>,
    pub clock: SharedClock,
    pub schema: AppSchema,
    pub documents: Arc<DocumentGuard>,
    /// AUTHQL_TRUSTED_DOCUMENTS, prepared by `documents`.
    pub trusted: Arc<TrustedDocuments>,
    pub metrics: Arc<Metrics>,
}

impl Services {
    /// Opens the database (migrating unless disabled), loads the keys and
    /// builds the services and the schema, on the system clock.
    pub async fn build(config: &ServeConfig) -> anyhow::Result<Self> {
        Self::build_with(config, Arc::new(SystemClock)).await
    }

    /// [`Self::build`] with the services reading time from `clock`.
    pub async fn build_with(config: &ServeConfig, clock: SharedClock) -> anyhow::Result<Self> {
        let store = open_database(&config.database, !config.no_migrate).await?;
        let keys = Arc::new(KeyRing::load(store.clone(), &config.tokens, clock.clone()).await?);
        let current = keys.current();
        tracing::info!(kid = %current.kid, algorithm = ?current.algorithm, "access-token signing key");
        let refresh_key = load_refresh_key(store.as_ref()).await?;
        // The database's delete trigger allows removing audit rows older than this.
        store
            .set_setting(
                AUDIT_RETENTION_SETTING,
                &config.security.audit_retention.as_millis().to_string(),
            )
            .await?;

        let mut metrics = Metrics::new();
        if let Some(stats) = store.replica_stats() {
            metrics.watch_replica(stats);
        }
        let metrics = Arc::new(metrics);
        let mailer = Arc::new(Mailer::new(
            MailTemplates::load(config.mail.mail_templates.as_deref())?,
            MailLinks::new(&config.mail_link_base()),
            TokenLifetimes {
                verify_email: config.mail.verify_email_ttl,
                reset_password: config.mail.password_reset_ttl,
                change_email: config.mail.email_change_ttl,
                sign_in_code: config.mail.sign_in_code_ttl,
            },
        ));
        let hasher = PasswordHasher::new(&config.passwords, metrics.clone())?;
        let tokens = TokenService::new(&config.tokens, keys.clone(), refresh_key, clock.clone());
        let accounts = Arc::new(AccountService::new(
            store.clone(),
            hasher,
            tokens,
            AccountSettings {
                rules: SignUpRules::new(config.phone_region.as_deref())
                    .with_context_words(&config.passwords.password_context_words),
                refresh_ttl: config.tokens.refresh_ttl,
                refresh_grace: config.tokens.refresh_grace,
                session_max_lifetime: config.tokens.session_max_lifetime,
                throttle: Throttle::new(
                    store.clone(),
                    &config.security,
                    &config.mail,
                    clock.clone(),
                ),
                cleanup_every: config.security.cleanup_every,
                mail: MailSettings {
                    mailer: mailer.clone(),
                    require_verified_email: config.mail.require_verified_email,
                    sign_in_codes: config.mail.sign_in_codes,
                },
            },
            metrics.clone(),
            clock.clone(),
        ));
        let schema = build_schema(
            accounts.clone(),
            &config.limits,
            config.introspection_enabled(),
            metrics.clone(),
            config.public_base(),
            config.cookie_policy(),
        );
        let documents = Arc::new(document_guard(
            &config.limits,
            config.introspection_enabled(),
        ));
        let trusted = Arc::new(TrustedDocuments::load(
            config.trusted_documents.clone(),
            config.trusted_documents_only,
            &documents,
        )?);
        if let Some(path) = &config.trusted_documents {
            tracing::info!(
                documents = trusted.current().len(),
                only = config.trusted_documents_only,
                path = %path.display(),
                "trusted documents loaded"
            );
        }
        Ok(Self {
            store,
            keys,
            accounts,
            mailer,
            clock,
            schema,
            documents,
            trusted,
            metrics,
        })
    }
}

/// settings key the audit trail's delete trigger reads (see migrations).
const AUDIT_RETENTION_SETTING: &str = "audit_retention_ms";

pub struct App {
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
}

impl App {
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        Self::build_with(config, Arc::new(SystemClock)).await
    }

    /// [`Self::build`] on another clock (tests move time with a
    /// [`crate::clock::ManualClock`] instead of sleeping).
    pub async fn build_with(mut config: ServeConfig, clock: SharedClock) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.bind))?;
        // The address taken (port 0 picks one): mail links default to it.
        config.bind = listener.local_addr().context("listening address")?;
        let Services {
            store,
            keys,
            accounts,
            mailer,
            clock,
            schema,
            documents,
            trusted,
            metrics,
        } = Services::build_with(&config, clock).await?;
        spawn_key_reloader(&keys);
        spawn_trusted_reloader(&trusted, &documents);
        spawn_mail_sender(&config, &store, &mailer, clock, &metrics)?;
        let cors_origins = config
            .cors_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .map(|o| {
                HeaderValue::from_str(o.trim_end_matches('/'))
                    .with_context(|| format!("AUTHQL_CORS_ORIGINS: {o:?} is not a valid origin"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let router = router(
            AppState {
                schema,
                documents,
                trusted,
                graphiql: config.introspection_enabled(),
                accounts,
                store,
                metrics,
                keys,
                trusted_proxies: Arc::new(config.security.trusted_proxies.clone()),
                ipv6_prefix: config.security.ipv6_prefix,
                max_document_bytes: config.limits.max_document_bytes,
                max_body_bytes: config.limits.max_body_bytes,
                max_upload_bytes: config.limits.max_upload_bytes,
                uploads: Arc::new(tokio::sync::Semaphore::new(config.limits.max_uploads)),
                body_timeout: config.http.body_timeout,
                cookie: config.cookie_policy(),
                own_origin: config.public_origin(),
                cors_origins: Arc::new(
                    config
                        .cors_origins
                        .iter()
                        .map(|o| o.trim().to_owned())
                        .filter(|o| !o.is_empty())
                        .collect(),
                ),
            },
            &RouterConfig {
                max_body_bytes: config.limits.max_body_bytes,
                cors_origins,
                credentials: config.cookie.refresh_cookie,
            },
        );
        Ok(Self {
            listener,
            router,
            limits: ServerLimits {
                max_connections: config.http.max_connections,
                header_timeout: config.http.header_timeout,
                idle_timeout: config.http.idle_timeout,
                shutdown_timeout: config.shutdown_timeout,
            },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` resolves; in-flight requests then get up to
    /// the configured shutdown timeout to finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "authql listening");
        crate::http::serve(self.listener, self.router, self.limits, shutdown)
            .await
            .context("server error")?;
        tracing::info!("authql stopped");
        Ok(())
    }
}

/// Re-reads the signing keys every minute, so keys rotated elsewhere reach
/// this instance; stops when the app is gone.
fn spawn_key_reloader(keys: &Arc<KeyRing>) {
    let keys = Arc::downgrade(keys);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(keys::RELOAD_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(keys) = keys.upgrade() else { break };
            if let Err(e) = keys.reload().await {
                tracing::warn!(error = %e, "signing keys could not be reloaded");
            }
        }
    });
}

/// Reloads the trusted-documents manifest on SIGHUP (a new client build
/// deployed); a manifest that fails to load leaves the one in force.
fn spawn_trusted_reloader(trusted: &Arc<TrustedDocuments>, documents: &Arc<DocumentGuard>) {
    if trusted.path.is_none() {
        return;
    }
    #[cfg(unix)]
    {
        let (trusted, documents) = (Arc::downgrade(trusted), documents.clone());
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("SIGHUP cannot be caught: trusted documents load at start only");
            return;
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let Some(trusted) = trusted.upgrade() else {
                    break;
                };
                match trusted.reload(&documents) {
                    Ok(n) => tracing::info!(documents = n, "trusted documents reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "trusted documents not reloaded; the previous manifest stays")
                    }
                }
            }
        });
    }
}

/// Starts this instance's outbox sender: SMTP when configured, else files.
fn spawn_mail_sender(
    config: &ServeConfig,
    store: &Arc<dyn Store>,
    mailer: &Arc<Mailer>,
    clock: SharedClock,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<()> {
    let transport = match &config.mail.smtp_url {
        Some(url) => Transport::smtp(url.expose())?,
        None => {
            tracing::info!(
                folder = %config.mail.mail_dir.display(),
                "no AUTHQL_SMTP_URL: mails are written as .eml files and their links logged"
            );
            if config.public_url.is_some() || config.mail.mail_link_base.is_some() {
                // A deployment (it has a public address) that forgot its
                // SMTP server: reset links would sit in the log.
                tracing::warn!(
                    "AUTHQL_PUBLIC_URL or AUTHQL_MAIL_LINK_BASE is set but AUTHQL_SMTP_URL is not: \
                     no mail leaves this machine, and every mail's link (password resets \
                     included) is written to the log"
                );
            }
            Transport::files(config.mail.mail_dir.clone())?
        }
    };
    let from = config
        .mail
        .mail_from
        .parse()
        .map_err(|e| anyhow::anyhow!("AUTHQL_MAIL_FROM: {e}"))?;
    MailSender::new(
        store.clone(),
        transport,
        SenderSettings {
            from,
            retry: RetryPolicy {
                first_delay: config.mail.mail_retry_delay,
                max_delay: std::time::Duration::from_secs(600),
                give_up_after: config.mail.mail_give_up,
            },
            poll: config.mail.mail_poll,
        },
        clock,
        metrics.clone(),
    )
    .spawn(&mailer.wake_handle());
    Ok(())
}

/// Connects and, unless disabled, applies pending migrations.
pub async fn open_database(
    config: &crate::config::DatabaseConfig,
    migrate: bool,
) -> anyhow::Result<Arc<dyn Store>> {
    config.validate().map_err(anyhow::Error::msg)?;
    let store = storage::connect(config).await?;
    if migrate {
        match (&config.direct_url, config.pooler) {
            // Migrations hold an advisory lock for their whole session,
            // which a transaction pooler would hand to other clients.
            (Some(_), _) => storage::connect(&config.direct())
                .await
                .context("connecting to AUTHQL_DIRECT_DATABASE_URL for migrations")?
                .migrate()
                .await
                .context("applying migrations")?,
            (None, Pooler::None) => store.migrate().await.context("applying migrations")?,
            (None, Pooler::Transaction) => anyhow::bail!(
                "AUTHQL_DB_POOLER=transaction: migrations need a session of their own; \
                 set AUTHQL_DIRECT_DATABASE_URL to PostgreSQL itself (not the pooler), \
                 or set AUTHQL_NO_MIGRATE=true and run `authql migrate` against PostgreSQL"
            ),
        }
    }
    Ok(store)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
