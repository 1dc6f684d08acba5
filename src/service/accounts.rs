//! The account rules: sign up, sign in, refresh, revoke, and who the caller
//! is. Resolvers call these and nothing else; these call the [`Store`], the
//! [`PasswordHasher`] and the [`TokenService`].

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::auth::tokens::{is_well_formed_refresh_token, refresh_token_hash};
use crate::auth::{PasswordHasher, TokenService, Verified};
use crate::domain::{match_key, Password, SignUpForm, SignUpRules};
use crate::error::{AuthError, FieldCode, FieldError};
use crate::metrics::Metrics;
use crate::storage::{
    CarRecord, NewSession, Rotation, RotationOutcome, Store, StoreError, Taken, UserRecord,
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
    },
    /// A bearer token was sent but refused (bad signature, expired, ...).
    Rejected,
}

/// A successful sign-up, sign-in or refresh.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: Duration,
    pub user: UserRecord,
}

pub struct AccountService {
    store: Arc<dyn Store>,
    hasher: PasswordHasher,
    tokens: TokenService,
    rules: SignUpRules,
    refresh_ttl: Duration,
    refresh_grace: Duration,
    metrics: Arc<Metrics>,
}

pub struct AccountSettings {
    pub rules: SignUpRules,
    pub refresh_ttl: Duration,
    pub refresh_grace: Duration,
}

impl AccountService {
    pub fn new(
        store: Arc<dyn Store>,
        hasher: PasswordHasher,
        tokens: TokenService,
        settings: AccountSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            hasher,
            tokens,
            rules: settings.rules,
            refresh_ttl: settings.refresh_ttl,
            refresh_grace: settings.refresh_grace,
            metrics,
        }
    }

    pub async fn sign_up(&self, form: SignUpForm) -> Result<SignedIn, AuthError> {
        // Uniqueness is reported together with every other problem. The match
        // keys of the raw input equal those of the validated input (the key
        // trims and case-folds), so the check need not wait for validation.
        let username_key = match_key(&form.username);
        let email_key = form
            .email
            .as_deref()
            .map(match_key)
            .filter(|k| !k.is_empty());
        let taken = self
            .store
            .taken(&username_key, email_key.as_deref())
            .await?;
        let user = match form.validate(&self.rules) {
            Ok(user) if taken == Taken::default() => user,
            Ok(_) => return Err(AuthError::Validation(taken_errors(taken))),
            Err(mut problems) => {
                problems.extend(taken_errors(taken));
                return Err(AuthError::Validation(problems));
            }
        };
        let hash = self.hasher.hash(&user.password).await?;
        let record = match self.store.insert_user(&user, &hash, Utc::now()).await {
            Ok(record) => record,
            // Lost a race with a concurrent sign-up: the unique index decided.
            Err(StoreError::Conflict) => {
                let mut taken = self
                    .store
                    .taken(&user.username_key, user.email_key.as_deref())
                    .await?;
                if taken == Taken::default() {
                    taken.username = true;
                }
                return Err(AuthError::Validation(taken_errors(taken)));
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(user_id = record.id, "user signed up");
        self.open_session(record).await
    }

    /// Sign-in by username or e-mail. Unknown login and wrong password give
    /// the same error after the same work (one argon2 verify).
    pub async fn sign_in(&self, login: &str, password: Password) -> Result<SignedIn, AuthError> {
        let found = self.store.credentials(&match_key(login)).await?;
        let Some(credentials) = found else {
            self.hasher.verify_dummy(&password).await?;
            self.metrics.sign_in(false);
            tracing::info!(reason = "unknown login", "sign-in refused");
            return Err(AuthError::InvalidCredentials);
        };
        match self
            .hasher
            .verify(&password, &credentials.password_hash)
            .await?
        {
            Verified::No => {
                self.metrics.sign_in(false);
                tracing::info!(
                    user_id = credentials.user.id,
                    reason = "wrong password",
                    "sign-in refused"
                );
                Err(AuthError::InvalidCredentials)
            }
            Verified::Yes { needs_rehash } => {
                if needs_rehash {
                    let hash = self.hasher.hash(&password).await?;
                    self.store
                        .set_password_hash(credentials.user.id, &hash)
                        .await?;
                    tracing::info!(
                        user_id = credentials.user.id,
                        "password re-hashed with current parameters"
                    );
                }
                self.metrics.sign_in(true);
                tracing::info!(user_id = credentials.user.id, "signed in");
                self.open_session(credentials.user).await
            }
        }
    }

    /// Rotates a refresh token: the old one is consumed, a new pair issued.
    pub async fn refresh(&self, refresh_token: &str) -> Result<SignedIn, AuthError> {
        if !is_well_formed_refresh_token(refresh_token) {
            return Err(AuthError::InvalidRefreshToken);
        }
        let successor = self.tokens.successor_of(refresh_token);
        let now = Utc::now();
        let rotation = Rotation {
            presented_hash: refresh_token_hash(refresh_token),
            successor_hash: refresh_token_hash(&successor),
            now,
            successor_expires_at: now + self.refresh_ttl,
            grace: self.refresh_grace,
        };
        let (user_id, session_id) = match self.store.rotate_refresh_token(&rotation).await? {
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
        let user = self
            .store
            .session_user(user_id, &session_id)
            .await?
            .ok_or(AuthError::InvalidRefreshToken)?;
        Ok(SignedIn {
            access_token: self.access_token(user_id, &session_id)?,
            refresh_token: successor,
            expires_in: self.tokens.access_ttl(),
            user,
        })
    }

    /// Revokes the whole family of a refresh token (current or consumed).
    /// Idempotent: an already revoked family answers Ok again.
    pub async fn revoke(&self, refresh_token: &str) -> Result<(), AuthError> {
        if !is_well_formed_refresh_token(refresh_token) {
            return Err(AuthError::InvalidRefreshToken);
        }
        match self
            .store
            .revoke_family(&refresh_token_hash(refresh_token), Utc::now())
            .await?
        {
            Some(user_id) => {
                tracing::info!(user_id, "session revoked");
                Ok(())
            }
            None => Err(AuthError::InvalidRefreshToken),
        }
    }

    /// Decodes a bearer token; no database access.
    pub fn authenticate(&self, bearer: Option<&str>) -> Viewer {
        let Some(token) = bearer else {
            return Viewer::Anonymous;
        };
        match self.tokens.verify_access(token) {
            Ok((user_id, claims)) => Viewer::Authenticated {
                user_id,
                session_id: claims.sid,
            },
            Err(reason) => {
                tracing::debug!(%reason, "access token refused");
                Viewer::Rejected
            }
        }
    }

    /// The signed-in user. A revoked session ends its access tokens at once.
    pub async fn me(&self, viewer: &Viewer) -> Result<UserRecord, AuthError> {
        let Viewer::Authenticated {
            user_id,
            session_id,
        } = viewer
        else {
            return Err(AuthError::Unauthenticated);
        };
        self.store
            .session_user(*user_id, session_id)
            .await?
            .ok_or(AuthError::Unauthenticated)
    }

    pub async fn cars_of_users(&self, user_ids: &[i64]) -> Result<Vec<CarRecord>, AuthError> {
        Ok(self.store.cars_of_users(user_ids).await?)
    }

    async fn open_session(&self, user: UserRecord) -> Result<SignedIn, AuthError> {
        let now = Utc::now();
        let refresh_token = self.tokens.new_refresh_token();
        let session = NewSession {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user.id,
            token_hash: refresh_token_hash(&refresh_token),
            created_at: now,
            expires_at: now + self.refresh_ttl,
        };
        self.store.create_session(&session).await?;
        Ok(SignedIn {
            access_token: self.access_token(user.id, &session.id)?,
            refresh_token,
            expires_in: self.tokens.access_ttl(),
            user,
        })
    }

    fn access_token(&self, user_id: i64, session_id: &str) -> Result<String, AuthError> {
        self.tokens
            .issue_access(user_id, session_id, Utc::now())
            .map_err(AuthError::internal)
    }
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
