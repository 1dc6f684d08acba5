//! The account rules: sign up, sign in, refresh, revoke, and who the caller
//! is. Resolvers call these and nothing else; these call the [`Store`], the
//! [`PasswordHasher`] and the [`TokenService`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

mod mail;
mod manage;

pub use mail::MailSettings;

use super::audit::Audit;
use super::throttle::{Action, LoginSubject, Throttle};
use crate::auth::tokens::{is_well_formed_refresh_token, refresh_token_hash};
use crate::auth::{PasswordHasher, TokenService, Verified};
use crate::clock::SharedClock;
use crate::domain::account::{Car, User};
use crate::domain::audit::EventKind;
use crate::domain::{has_control_chars, match_key, Client, SignInForm, SignUpForm, SignUpRules};
use crate::error::{AuthError, FieldCode, FieldError};
use crate::metrics::Metrics;
use crate::storage::{
    CleanupCutoffs, NewAccount, NewSession, Rotation, RotationOutcome, Store, StoreError, Taken,
};

impl From<StoreError> for AuthError {
    fn from(err: StoreError) -> Self {
        AuthError::Internal(err.into())
    }
}

/// Who is calling, decoded once per HTTP request from `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    Anonymous,
    /// A valid access token: its user and session.
    Authenticated {
        user_id: i64,
        session_id: String,
        issued_at: DateTime<Utc>,
    },
    /// A bearer token was sent but refused (bad signature, expired, ...).
    Rejected,
}

impl Viewer {
    /// The session of a valid token.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Viewer::Authenticated { session_id, .. } => Some(session_id),
            Viewer::Anonymous | Viewer::Rejected => None,
        }
    }

    /// User id, session id and issue time of a valid token, or UNAUTHENTICATED.
    fn session(&self) -> Result<(i64, &str, DateTime<Utc>), AuthError> {
        match self {
            Viewer::Authenticated {
                user_id,
                session_id,
                issued_at,
            } => Ok((*user_id, session_id, *issued_at)),
            Viewer::Anonymous | Viewer::Rejected => Err(AuthError::Unauthenticated),
        }
    }
}

/// A successful sign-up, sign-in or refresh.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: Duration,
    /// The session the pair belongs to.
    pub session_id: String,
    pub user: User,
    /// The user's cars when they are at hand already (sign-up).
    pub cars: Option<Vec<Car>>,
}

pub struct AccountService {
    store: Arc<dyn Store>,
    hasher: PasswordHasher,
    tokens: TokenService,
    throttle: Throttle,
    audit: Audit,
    rules: SignUpRules,
    refresh_ttl: Duration,
    refresh_grace: Duration,
    session_max_lifetime: Duration,
    cleanup_every: u64,
    sessions_opened: AtomicU64,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    /// Avatar uploads decoded at once (one per core).
    image_workers: Arc<tokio::sync::Semaphore>,
    mail: MailSettings,
}

pub struct AccountSettings {
    pub rules: SignUpRules,
    pub refresh_ttl: Duration,
    pub refresh_grace: Duration,
    pub session_max_lifetime: Duration,
    pub throttle: Throttle,
    pub cleanup_every: u64,
    pub mail: MailSettings,
}

/// Revoked sessions and stale counters are kept this long before cleanup.
const RETENTION: chrono::Duration = chrono::Duration::days(1);
/// Rows of each kind deleted by one cleanup batch.
const CLEANUP_BATCH: i64 = 500;

impl AccountService {
    pub fn new(
        store: Arc<dyn Store>,
        hasher: PasswordHasher,
        tokens: TokenService,
        settings: AccountSettings,
        metrics: Arc<Metrics>,
        clock: SharedClock,
    ) -> Self {
        Self {
            audit: Audit::new(store.clone(), metrics.clone(), clock.clone()),
            clock,
            store,
            hasher,
            tokens,
            throttle: settings.throttle,
            rules: settings.rules,
            refresh_ttl: settings.refresh_ttl,
            refresh_grace: settings.refresh_grace,
            session_max_lifetime: settings.session_max_lifetime,
            cleanup_every: settings.cleanup_every,
            sessions_opened: AtomicU64::new(0),
            metrics,
            image_workers: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, usize::from),
            )),
            mail: settings.mail,
        }
    }

    /// The token service (for benchmarks and tools that mint or check tokens).
    pub fn tokens(&self) -> &TokenService {
        &self.tokens
    }

    /// Counts an attempt against the client's limit, auditing a refusal.
    async fn attempt(&self, action: Action, client: &Client) -> Result<(), AuthError> {
        let result = self.throttle.attempt(action, client).await;
        if let Err(AuthError::RateLimited { .. }) = &result {
            self.audit.refused(client, action.name()).await;
        }
        result
    }

    /// Audits a refusal by the hashing queue or the sign-in back-off.
    async fn refused<T>(
        &self,
        result: Result<T, AuthError>,
        client: &Client,
        detail: &'static str,
    ) -> Result<T, AuthError> {
        if let Err(AuthError::RateLimited { .. }) = &result {
            self.audit.refused(client, detail).await;
        }
        result
    }

    pub async fn sign_up(&self, form: SignUpForm, client: &Client) -> Result<SignedIn, AuthError> {
        self.attempt(Action::SignUp, client).await?;
        // Uniqueness is reported together with every other problem, so the
        // look-up does not wait for validation (see `lookup_key`).
        let username_key = lookup_key(&form.username);
        let email_key = form.email.as_deref().and_then(lookup_key);
        let taken = self
            .store
            .taken(username_key.as_deref(), email_key.as_deref())
            .await?;
        let user = match form.validate(&self.rules) {
            Ok(user) if taken == Taken::default() => user,
            Ok(_) => return Err(AuthError::Validation(taken_errors(taken))),
            Err(mut problems) => {
                problems.extend(taken_errors(taken));
                return Err(AuthError::Validation(problems));
            }
        };
        let slot = self
            .refused(self.hasher.slot(client), client, "password hashing queue")
            .await?;
        let hash = slot.hash(&user.password).await?;
        let now = self.clock.now();
        let (refresh_token, session) = self.new_session(0, now, client);
        let account = NewAccount {
            user: &user,
            password_hash: &hash,
            now,
            session: &session,
        };
        let (record, cars) = match self.store.insert_user(&account).await {
            Ok(written) => written,
            // Lost a race with a concurrent sign-up: the unique index decided.
            Err(StoreError::Conflict) => {
                let email_key = user.email_key.as_deref();
                let mut taken = self
                    .store
                    .taken(Some(&user.username_key), email_key)
                    .await?;
                if taken == Taken::default() {
                    taken.username = true;
                }
                return Err(AuthError::Validation(taken_errors(taken)));
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(user_id = record.id, "user signed up");
        // The event row was written with the user; count it.
        self.audit.written_elsewhere(EventKind::SignUp);
        self.maybe_clean_up();
        if record.email.is_some() {
            self.send_verification(&record).await;
        }
        Ok(SignedIn {
            access_token: self.access_token(record.id, &session.id)?,
            refresh_token,
            expires_in: self.tokens.access_ttl(),
            session_id: session.id,
            user: record,
            cars: Some(cars),
        })
    }

    /// Sign-in by username or e-mail. Unknown login and wrong password give
    /// the same error after the same work (a look-up, a streak reservation,
    /// one argon2 verify).
    pub async fn sign_in(&self, form: SignInForm, client: &Client) -> Result<SignedIn, AuthError> {
        self.attempt(Action::SignIn, client).await?;
        let attempt = form.validate().map_err(AuthError::Validation)?;
        let found = match &attempt.login_key {
            Some(key) => self.store.credentials(key).await?,
            None => None,
        };
        let subject = match &found {
            Some(credentials) => LoginSubject::Account(credentials.user.id),
            None => LoginSubject::Unknown(attempt.login_key.clone().unwrap_or_default()),
        };
        // A place in the hashing queue first: a refusal there costs the
        // caller nothing, not even a counted attempt.
        let slot = self
            .refused(self.hasher.slot(client), client, "password hashing queue")
            .await?;
        if let Err(e) = self
            .refused(
                self.throttle.reserve_login(&subject, client).await,
                client,
                "sign-in wait after failures",
            )
            .await
        {
            self.metrics.sign_in(false);
            return Err(e);
        }
        let password = &attempt.password;
        let verified = match &found {
            Some(credentials) => slot.verify(password, &credentials.password_hash).await?,
            None => {
                slot.verify_dummy(password).await?;
                Verified::No
            }
        };
        let active = found.as_ref().is_some_and(|c| c.user.is_active());
        let (Verified::Yes { needs_rehash }, Some(credentials), true) =
            (verified, found.as_ref(), active)
        else {
            let user_id = found.as_ref().map(|c| c.user.id);
            let reason = match (user_id, verified) {
                (None, _) => "unknown login",
                (Some(_), Verified::Yes { .. }) => "account inactive",
                (Some(_), Verified::No) => "wrong password",
            };
            self.metrics.sign_in(false);
            tracing::info!(user_id, reason, "sign-in refused");
            self.audit
                .record(EventKind::SignInFailed, user_id, client, Some(reason))
                .await;
            return Err(AuthError::InvalidCredentials);
        };
        let user_id = credentials.user.id;
        if needs_rehash {
            // Not worth failing a sign-in over: with the queue full, later.
            match self.hasher.hash(password, client).await {
                Ok(hash) => {
                    self.store.set_password_hash(user_id, &hash).await?;
                    tracing::info!(user_id, "password re-hashed with current parameters");
                }
                Err(e) => tracing::info!(user_id, error = %e, "re-hash postponed"),
            }
        }
        self.throttle.login_succeeded(&subject, client).await?;
        // Told only now, to the one who knows the password.
        let by_email = attempt.login_key.is_some()
            && credentials.user.email.as_deref().map(match_key) == attempt.login_key;
        if self.mail.require_verified_email
            && by_email
            && credentials.user.email_verified_at.is_none()
        {
            self.metrics.sign_in(false);
            tracing::info!(user_id, "sign-in refused: e-mail not verified");
            return Err(AuthError::EmailNotVerified);
        }
        self.metrics.sign_in(true);
        tracing::info!(user_id, "signed in");
        self.open_session(credentials.user.clone(), client).await
    }

    /// Rotates a refresh token: the old one is consumed, a new pair issued.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client: &Client,
    ) -> Result<SignedIn, AuthError> {
        self.attempt(Action::Refresh, client).await?;
        if !is_well_formed_refresh_token(refresh_token) {
            return Err(AuthError::InvalidRefreshToken);
        }
        let successor = self.tokens.successor_of(refresh_token);
        let now = self.clock.now();
        let rotation = Rotation {
            presented_hash: refresh_token_hash(refresh_token),
            successor_hash: refresh_token_hash(&successor),
            now,
            policy: self.rotation_policy(),
            client_addr: client.addr.to_string(),
            user_agent: client.user_agent.clone(),
        };
        let outcome = self.store.rotate_refresh_token(&rotation).await?;
        // The event row was written with the rotation; count it.
        if let Some((kind, _, _)) = outcome.event() {
            self.audit.written_elsewhere(kind);
        }
        let (user_id, session_id) = match outcome {
            RotationOutcome::Rotated {
                user_id,
                session_id,
            } => (user_id, session_id),
            RotationOutcome::Replayed {
                user_id,
                session_id,
            } => {
                tracing::info!(user_id, "refresh token replayed inside the grace window");
                (user_id, session_id)
            }
            RotationOutcome::ReuseDetected {
                user_id,
                session_id,
            } => {
                tracing::warn!(
                    user_id,
                    session_id,
                    "refresh token reuse detected: session revoked"
                );
                return Err(AuthError::InvalidRefreshToken);
            }
            RotationOutcome::Invalid => return Err(AuthError::InvalidRefreshToken),
        };
        let (user, _) = self
            .store
            .session_user(user_id, &session_id, now, false)
            .await?
            .filter(|(user, _)| user.is_active())
            .ok_or(AuthError::InvalidRefreshToken)?;
        Ok(SignedIn {
            access_token: self.access_token(user_id, &session_id)?,
            refresh_token: successor,
            expires_in: self.tokens.access_ttl(),
            session_id,
            user,
            cars: None,
        })
    }

    /// Revokes the whole family of a refresh token (current or consumed).
    /// Idempotent: an already revoked family answers Ok again.
    pub async fn revoke(&self, refresh_token: &str, client: &Client) -> Result<(), AuthError> {
        self.attempt(Action::Revoke, client).await?;
        if !is_well_formed_refresh_token(refresh_token) {
            return Err(AuthError::InvalidRefreshToken);
        }
        match self
            .store
            .revoke_family(
                &refresh_token_hash(refresh_token),
                self.clock.now(),
                &client.addr.to_string(),
            )
            .await?
        {
            Some(user_id) => {
                tracing::info!(user_id, "session revoked");
                self.audit.written_elsewhere(EventKind::Revoke);
                Ok(())
            }
            None => Err(AuthError::InvalidRefreshToken),
        }
    }

    /// Decodes a bearer token. No database access, except to re-read the
    /// signing keys when a token names one this instance does not know yet.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Viewer {
        let Some(token) = bearer else {
            return Viewer::Anonymous;
        };
        match self.tokens.verify(token).await {
            Ok((user_id, claims)) => Viewer::Authenticated {
                user_id,
                session_id: claims.sid,
                issued_at: DateTime::from_timestamp(claims.iat, 0).unwrap_or_default(),
            },
            Err(reason) => {
                tracing::debug!(%reason, "access token refused");
                Viewer::Rejected
            }
        }
    }

    /// The signed-in user, with their cars when asked (in the same round
    /// trip). A revoked session (sign-out, reuse detection, sign-out
    /// everywhere) ends its access tokens at once.
    pub async fn me(
        &self,
        viewer: &Viewer,
        with_cars: bool,
    ) -> Result<(User, Option<Vec<Car>>), AuthError> {
        let (user_id, session_id, issued_at) = viewer.session()?;
        self.store
            .session_user(user_id, session_id, issued_at, with_cars)
            .await?
            .filter(|(user, _)| user.is_active())
            .ok_or(AuthError::Unauthenticated)
    }

    /// Revokes every session of the signed-in user and ends all their
    /// access tokens. Returns how many sessions were live.
    pub async fn sign_out_everywhere(
        &self,
        viewer: &Viewer,
        client: &Client,
    ) -> Result<u64, AuthError> {
        let (user, _) = self.me(viewer, false).await?;
        // Whole seconds, as `iat` is: a token issued later in this second
        // must not be refused (older ones die with their revoked sessions).
        let now = DateTime::from_timestamp(self.clock.now().timestamp(), 0).unwrap_or_default();
        let revoked = self
            .store
            .revoke_user_sessions(user.id, now, &client.addr.to_string())
            .await?;
        tracing::info!(user_id = user.id, revoked, "signed out everywhere");
        self.audit.written_elsewhere(EventKind::SignOutEverywhere);
        Ok(revoked)
    }

    pub async fn cars_of_users(&self, user_ids: &[i64]) -> Result<Vec<Car>, AuthError> {
        Ok(self.store.cars_of_users(user_ids).await?)
    }

    async fn open_session(&self, user: User, client: &Client) -> Result<SignedIn, AuthError> {
        let (refresh_token, session) = self.new_session(user.id, self.clock.now(), client);
        self.store.create_session(&session).await?;
        self.audit.written_elsewhere(EventKind::SignIn);
        self.maybe_clean_up();
        Ok(SignedIn {
            access_token: self.access_token(user.id, &session.id)?,
            refresh_token,
            expires_in: self.tokens.access_ttl(),
            session_id: session.id,
            user,
            cars: None,
        })
    }

    /// A new refresh token and the session (family) it starts.
    fn new_session(
        &self,
        user_id: i64,
        now: DateTime<Utc>,
        client: &Client,
    ) -> (String, NewSession) {
        let refresh_token = self.tokens.new_refresh_token();
        let session = NewSession {
            id: uuid::Uuid::new_v4().to_string(),
            user_id,
            token_hash: refresh_token_hash(&refresh_token),
            created_at: now,
            expires_at: now + self.refresh_ttl.min(self.session_max_lifetime),
            client_addr: client.addr.to_string(),
            user_agent: client.user_agent.clone(),
        };
        (refresh_token, session)
    }

    /// Every `cleanup_every`-th new session, deletes one small batch of
    /// expired and revoked rows in the background: tables stay bounded
    /// without a cron job, and no request waits for it.
    fn maybe_clean_up(&self) {
        if self.cleanup_every == 0 {
            return;
        }
        let n = self.sessions_opened.fetch_add(1, Ordering::Relaxed) + 1;
        if !n.is_multiple_of(self.cleanup_every) {
            return;
        }
        let store = self.store.clone();
        let now = self.clock.now();
        tokio::spawn(async move {
            let cutoffs = CleanupCutoffs {
                now,
                revoked_before: now - RETENTION,
                stale_before: now - RETENTION,
                batch: CLEANUP_BATCH,
            };
            match store.cleanup(&cutoffs).await {
                Ok(done) => tracing::debug!(?done, "cleanup batch"),
                Err(e) => tracing::warn!(error = %e, "cleanup batch failed"),
            }
        });
    }

    fn access_token(&self, user_id: i64, session_id: &str) -> Result<String, AuthError> {
        self.tokens
            .issue_access(user_id, session_id, self.clock.now())
            .map_err(AuthError::internal)
    }
}

/// The login key raw input is looked up by before validation: the key of
/// the validated value is the same (it trims and case-folds), and text with
/// control characters is invalid anyway and never looked up.
fn lookup_key(raw: &str) -> Option<String> {
    Some(match_key(raw)).filter(|k| !k.is_empty() && !has_control_chars(k))
}

fn taken_errors(taken: Taken) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if taken.username {
        errors.push(FieldError::new(
            "username",
            FieldCode::Taken,
            "this username is already registered",
        ));
    }
    if taken.email {
        errors.push(FieldError::new(
            "email",
            FieldCode::Taken,
            "this e-mail is already registered",
        ));
    }
    errors
}
