//! What a signed-in user does with their own account: profile, cars,
//! sessions, password, avatar, deletion.
//!
//! Every call starts the same way: the viewer's token decoded (no
//! database), one attempt counted against the client's account limit, and
//! the session checked live. Calls that check a password go through
//! [`AccountService::check_password`], sign-in's own path (hashing queue,
//! the account's back-off, one argon2 verify).

use std::time::Duration;

use chrono::DateTime;

use super::{AccountService, SignedIn, Viewer};
use crate::auth::tokens::refresh_token_hash;
use crate::auth::Verified;
use crate::domain::account::{Car, Session, User};
use crate::domain::audit::EventKind;
use crate::domain::avatar::{self, AvatarFormat, AvatarSize, UploadedFile};
use crate::domain::profile::{Change, ProfileForm};
use crate::domain::rotation::RotationPolicy;
use crate::domain::{CarForm, Client, FieldCode, FieldError, Password};
use crate::error::AuthError;
use crate::service::throttle::{Action, LoginSubject};
use crate::storage::{Actor, CarAdded, PasswordChange, StoreError};

/// How long an upload may wait for a free image worker.
const AVATAR_WAIT: Duration = Duration::from_secs(10);

/// The signed-in caller, checked live.
pub(super) struct Caller {
    pub(super) user: User,
    pub(super) session_id: String,
}

impl AccountService {
    /// Counts the attempt and checks the session (in that order: refusing
    /// a flood must not cost a session read each).
    pub(super) async fn caller(
        &self,
        viewer: &Viewer,
        client: &Client,
    ) -> Result<Caller, AuthError> {
        let (_, session_id, _) = viewer.session()?;
        self.attempt(Action::Account, client).await?;
        let (user, _) = self.me(viewer, false).await?;
        Ok(Caller {
            user,
            session_id: session_id.to_owned(),
        })
    }

    pub(super) fn actor(&self, user_id: i64, client: &Client) -> Actor {
        Actor {
            user_id,
            now: self.clock.now(),
            client_addr: client.addr.to_string(),
        }
    }

    /// Checks the password of a signed-in user exactly as sign-in does: a
    /// place in the hashing queue, the account's back-off reserved from
    /// this client, one argon2 verify. A wrong one is INVALID_CREDENTIALS
    /// and a failure on the account's streak.
    pub(super) async fn check_password(
        &self,
        user_id: i64,
        password: &Password,
        client: &Client,
        what: &'static str,
    ) -> Result<(), AuthError> {
        let slot = self
            .refused(self.hasher.slot(client), client, "password hashing queue")
            .await?;
        let subject = LoginSubject::Account(user_id);
        self.refused(
            self.throttle.reserve_login(&subject, client).await,
            client,
            "sign-in wait after failures",
        )
        .await?;
        let hash = self
            .store
            .password_hash(user_id)
            .await?
            .ok_or(AuthError::Unauthenticated)?;
        if let Verified::No = slot.verify(password, &hash).await? {
            tracing::info!(user_id, what, "password check failed");
            self.audit
                .record(EventKind::SignInFailed, Some(user_id), client, Some(what))
                .await;
            return Err(AuthError::InvalidCredentials);
        }
        self.throttle.login_succeeded(&subject, client).await?;
        Ok(())
    }

    pub async fn update_profile(
        &self,
        viewer: &Viewer,
        form: ProfileForm,
        client: &Client,
    ) -> Result<User, AuthError> {
        let caller = self.caller(viewer, client).await?;
        let user_id = caller.user.id;
        // As at sign-up: a taken e-mail is reported with every other problem.
        let email_key = match &form.email {
            Change::Set(raw) => super::lookup_key(raw),
            Change::Keep | Change::Clear => None,
        };
        let taken = match email_key {
            Some(key) => self
                .store
                .login_key_owner(&key)
                .await?
                .is_some_and(|owner| owner != user_id),
            None => false,
        };
        let (update, mut problems) = match form.validate(&self.rules) {
            Ok(update) => (Some(update), Vec::new()),
            Err(problems) => (None, problems),
        };
        if taken {
            problems.push(email_taken());
        }
        let Some(update) = update.filter(|_| problems.is_empty()) else {
            return Err(AuthError::Validation(problems));
        };
        match self
            .store
            .update_profile(&self.actor(user_id, client), &update, None)
            .await
        {
            Ok(Some(plan)) => {
                if !plan.changed.is_empty() {
                    tracing::info!(user_id, changed = ?plan.changed, "profile updated");
                    self.audit.written_elsewhere(EventKind::ProfileUpdated);
                }
                // A new address is unverified until its mailbox answers.
                if plan.changed.contains(&"email") && plan.user.email.is_some() {
                    self.send_verification(&plan.user).await;
                }
                Ok(plan.user)
            }
            Ok(None) => Err(AuthError::Unauthenticated),
            // Lost a race for the address: the unique index decided.
            Err(StoreError::Conflict) => Err(AuthError::Validation(vec![email_taken()])),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn add_car(
        &self,
        viewer: &Viewer,
        form: CarForm,
        client: &Client,
    ) -> Result<Car, AuthError> {
        let caller = self.caller(viewer, client).await?;
        let car = form.validate().map_err(AuthError::Validation)?;
        match self
            .store
            .add_car(&self.actor(caller.user.id, client), &car)
            .await?
        {
            CarAdded::Added(car) => {
                self.audit.written_elsewhere(EventKind::ProfileUpdated);
                Ok(car)
            }
            CarAdded::NoRoom(problem) => Err(AuthError::Validation(vec![problem])),
            CarAdded::NoUser => Err(AuthError::Unauthenticated),
        }
    }

    pub async fn update_car(
        &self,
        viewer: &Viewer,
        car_id: &str,
        form: CarForm,
        client: &Client,
    ) -> Result<Car, AuthError> {
        let caller = self.caller(viewer, client).await?;
        let car = form.validate().map_err(AuthError::Validation)?;
        let car_id = parse_car_id(car_id)?;
        let car = self
            .store
            .update_car(&self.actor(caller.user.id, client), car_id, &car)
            .await?
            .ok_or(AuthError::NotFound("car"))?;
        self.audit.written_elsewhere(EventKind::ProfileUpdated);
        Ok(car)
    }

    pub async fn remove_car(
        &self,
        viewer: &Viewer,
        car_id: &str,
        client: &Client,
    ) -> Result<i64, AuthError> {
        let caller = self.caller(viewer, client).await?;
        let car_id = parse_car_id(car_id)?;
        if !self
            .store
            .remove_car(&self.actor(caller.user.id, client), car_id)
            .await?
        {
            return Err(AuthError::NotFound("car"));
        }
        self.audit.written_elsewhere(EventKind::ProfileUpdated);
        Ok(car_id)
    }

    /// The user's live sessions, for `User.sessions` (a read: no limit).
    pub async fn sessions_of(&self, user_id: i64) -> Result<Vec<Session>, AuthError> {
        Ok(self.store.sessions_of(user_id, self.clock.now()).await?)
    }

    /// Ends one of the caller's sessions (the current one too, if named):
    /// its refresh tokens and access tokens stop at once.
    pub async fn revoke_session(
        &self,
        viewer: &Viewer,
        session_id: &str,
        client: &Client,
    ) -> Result<String, AuthError> {
        let caller = self.caller(viewer, client).await?;
        let session_id = parse_session_id(session_id).ok_or(AuthError::NotFound("session"))?;
        if !self
            .store
            .revoke_session(&self.actor(caller.user.id, client), &session_id)
            .await?
        {
            return Err(AuthError::NotFound("session"));
        }
        tracing::info!(user_id = caller.user.id, "session revoked by its owner");
        self.audit.written_elsewhere(EventKind::SessionRevoked);
        Ok(session_id)
    }

    /// Ends every session of the caller but the current one; how many.
    pub async fn sign_out_other_sessions(
        &self,
        viewer: &Viewer,
        client: &Client,
    ) -> Result<u64, AuthError> {
        let caller = self.caller(viewer, client).await?;
        let revoked = self
            .store
            .revoke_other_sessions(&self.actor(caller.user.id, client), &caller.session_id)
            .await?;
        tracing::info!(
            user_id = caller.user.id,
            revoked,
            "other sessions signed out"
        );
        self.audit.written_elsewhere(EventKind::SessionRevoked);
        Ok(revoked)
    }

    /// Checks the current password, stores the new one, ends every other
    /// session and every access token issued before now; this session
    /// goes on with the fresh pair returned.
    pub async fn change_password(
        &self,
        viewer: &Viewer,
        current: Password,
        new: Password,
        client: &Client,
    ) -> Result<SignedIn, AuthError> {
        let caller = self.caller(viewer, client).await?;
        let user = caller.user;
        let mut problems = Vec::new();
        if current.expose().is_empty() {
            problems.push(FieldError::new(
                "currentPassword",
                FieldCode::FieldMissing,
                "the current password is required",
            ));
        }
        problems.extend(self.rules.check_new_password("newPassword", &new, &user));
        if problems.is_empty() && current.expose() == new.expose() {
            problems.push(FieldError::new(
                "newPassword",
                FieldCode::Invalid,
                "the new password must differ from the current one",
            ));
        }
        if !problems.is_empty() {
            return Err(AuthError::Validation(problems));
        }
        self.check_password(
            user.id,
            &current,
            client,
            "wrong current password (changePassword)",
        )
        .await?;
        let password_hash = self
            .refused(self.hasher.slot(client), client, "password hashing queue")
            .await?
            .hash(&new)
            .await?;
        let refresh_token = self.tokens.new_refresh_token();
        let now = self.clock.now();
        let change = PasswordChange {
            session_id: caller.session_id.clone(),
            password_hash,
            refresh_token_hash: refresh_token_hash(&refresh_token),
            // Whole seconds, as `iat` is: the pair issued below is not
            // refused, every earlier token of another session is.
            tokens_valid_after: DateTime::from_timestamp(now.timestamp(), 0).unwrap_or_default(),
            policy: self.rotation_policy(),
        };
        let revoked = self
            .store
            .change_password(&self.actor(user.id, client), &change)
            .await?
            .ok_or(AuthError::Unauthenticated)?;
        tracing::info!(user_id = user.id, revoked, "password changed");
        self.audit.written_elsewhere(EventKind::PasswordChanged);
        let user = self
            .store
            .user(user.id)
            .await?
            .ok_or(AuthError::Unauthenticated)?;
        Ok(SignedIn {
            access_token: self.access_token(user.id, &caller.session_id)?,
            refresh_token,
            expires_in: self.tokens.access_ttl(),
            session_id: caller.session_id,
            user,
            cars: None,
        })
    }

    /// Deletes the caller's account after checking their password. The
    /// username and e-mail are free again at once.
    pub async fn delete_account(
        &self,
        viewer: &Viewer,
        password: Password,
        client: &Client,
    ) -> Result<i64, AuthError> {
        let caller = self.caller(viewer, client).await?;
        let user_id = caller.user.id;
        if password.expose().is_empty() {
            return Err(AuthError::Validation(vec![FieldError::new(
                "password",
                FieldCode::FieldMissing,
                "the password is required",
            )]));
        }
        self.check_password(user_id, &password, client, "wrong password (deleteAccount)")
            .await?;
        if !self.store.delete_user(&self.actor(user_id, client)).await? {
            return Err(AuthError::Unauthenticated);
        }
        tracing::info!(user_id, "account deleted");
        self.audit.written_elsewhere(EventKind::AccountDeleted);
        Ok(user_id)
    }

    /// Checks and re-encodes an upload off the async workers (at most as
    /// many at once as there are cores) and stores it as the avatar.
    pub async fn upload_avatar(
        &self,
        viewer: &Viewer,
        file: UploadedFile,
        client: &Client,
    ) -> Result<User, AuthError> {
        let caller = self.caller(viewer, client).await?;
        let user_id = caller.user.id;
        let permit = tokio::time::timeout(AVATAR_WAIT, self.image_workers.clone().acquire_owned())
            .await
            .map_err(|_| AuthError::RateLimited {
                retry_after_secs: 1,
            })?
            .map_err(AuthError::internal)?;
        let processed = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            avatar::process(&file)
        })
        .await
        .map_err(AuthError::internal)?
        .map_err(AuthError::Validation)?;
        if !self
            .store
            .set_avatar(&self.actor(user_id, client), &processed)
            .await?
        {
            return Err(AuthError::Unauthenticated);
        }
        tracing::info!(user_id, format = processed.format.name(), "avatar uploaded");
        self.audit.written_elsewhere(EventKind::AvatarChanged);
        self.store
            .user(user_id)
            .await?
            .ok_or(AuthError::Unauthenticated)
    }

    pub async fn remove_avatar(&self, viewer: &Viewer, client: &Client) -> Result<User, AuthError> {
        let caller = self.caller(viewer, client).await?;
        let user_id = caller.user.id;
        if self
            .store
            .remove_avatar(&self.actor(user_id, client))
            .await?
        {
            self.audit.written_elsewhere(EventKind::AvatarChanged);
        }
        self.store
            .user(user_id)
            .await?
            .ok_or(AuthError::Unauthenticated)
    }

    /// A stored avatar copy, for `GET /avatars/...` (public: the URL names
    /// the version by its hash).
    pub async fn avatar(
        &self,
        user_id: i64,
        hash: &str,
        size: AvatarSize,
    ) -> Result<Option<(AvatarFormat, Vec<u8>)>, AuthError> {
        if !avatar::is_avatar_hash(hash) {
            return Ok(None);
        }
        Ok(self.store.avatar(user_id, hash, size).await?)
    }

    pub(super) fn rotation_policy(&self) -> RotationPolicy {
        RotationPolicy {
            refresh_ttl: self.refresh_ttl,
            max_lifetime: self.session_max_lifetime,
            grace: self.refresh_grace,
        }
    }
}

fn email_taken() -> FieldError {
    FieldError::new(
        "email",
        FieldCode::Taken,
        "this e-mail is already registered",
    )
}

/// Car ids are integers; anything else names no car.
fn parse_car_id(id: &str) -> Result<i64, AuthError> {
    id.trim().parse().map_err(|_| AuthError::NotFound("car"))
}

/// Session ids are UUIDs (hyphenated, lower case, as issued); anything
/// else names no session.
fn parse_session_id(id: &str) -> Option<String> {
    uuid::Uuid::parse_str(id.trim())
        .ok()
        .map(|id| id.hyphenated().to_string())
}
