//! The flows that go through a mailbox: e-mail verification, password
//! reset, e-mail change, sign-in codes.
//!
//! Every token or code is random, stored only as SHA-256, single use,
//! short-lived, and replaced by a newer one of its purpose. A mail is
//! written to the outbox in the transaction of the token it carries.
//! Requests that name an address (`requestPasswordReset`,
//! `requestSignInCode`) answer the same, after the same work, whether an
//! account has it or not: the look-up and the writing happen after the
//! answer, in a task of their own.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{lookup_key, AccountService, SignedIn, Viewer};
use crate::domain::account::User;
use crate::domain::audit::EventKind;
use crate::domain::mail::{
    is_well_formed_code, is_well_formed_link_token, new_link_token, new_sign_in_code, secret_hash,
    MailKind, TokenPurpose, MAX_CODE_ATTEMPTS,
};
use crate::domain::profile::{Change, ProfileForm};
use crate::domain::{match_key, Client, FieldCode, FieldError, Password};
use crate::error::AuthError;
use crate::mail::{MailFacts, Mailer};
use crate::service::throttle::Action;
use crate::storage::{NewMailToken, StoreError};

/// What the mail flows need besides the account service's own parts.
pub struct MailSettings {
    pub mailer: Arc<Mailer>,
    /// `createToken` by e-mail refuses unverified addresses.
    pub require_verified_email: bool,
    /// Sign-in codes are offered.
    pub sign_in_codes: bool,
}

impl AccountService {
    /// Queues a verification mail for the user's current address (after
    /// sign-up, or after `updateProfile` changed it). A failure here is
    /// logged, not answered: the change it follows is done, and
    /// `requestEmailVerification` sends another.
    pub(super) async fn send_verification(&self, user: &User) {
        if let Err(e) = self.queue_verification(user).await {
            tracing::warn!(user_id = user.id, error = %e, "verification mail not queued");
        }
    }

    async fn queue_verification(&self, user: &User) -> Result<(), AuthError> {
        let Some(email) = user.email.as_deref() else {
            return Ok(());
        };
        // However the mail came to be asked for, one address gets no more
        // than its share (an account cycling its e-mail through strangers'
        // addresses included).
        self.throttle.mail_to(&match_key(email)).await?;
        self.issue(
            user,
            TokenPurpose::VerifyEmail,
            email,
            &[(MailKind::VerifyEmail, email)],
        )
        .await
        .map(|_| ())
    }

    /// Stores a new token of `purpose` (sent to `address`) and queues the
    /// mails, the token's secret in each; `false` when the user is gone.
    async fn issue(
        &self,
        user: &User,
        purpose: TokenPurpose,
        address: &str,
        mails: &[(MailKind, &str)],
    ) -> Result<bool, AuthError> {
        let mailer = &self.mail.mailer;
        let secret = match purpose {
            TokenPurpose::SignInCode => new_sign_in_code(),
            TokenPurpose::VerifyEmail | TokenPurpose::ResetPassword | TokenPurpose::ChangeEmail => {
                new_link_token()
            }
        };
        let now = self.clock.now();
        let token = NewMailToken {
            user_id: user.id,
            purpose,
            hash: secret.hash,
            email: address.to_owned(),
            created_at: now,
            expires_at: mailer.lifetimes().expiry(purpose, now),
        };
        let composed = mails
            .iter()
            .map(|(kind, to)| {
                let carries_secret = *kind != MailKind::EmailChangeNotice;
                mailer.compose(
                    *kind,
                    to,
                    &MailFacts {
                        username: &user.username,
                        secret: carries_secret.then_some(secret.secret.as_str()),
                        new_email: Some(address),
                    },
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(AuthError::internal)?;
        let written = self.store.issue_mail(Some(&token), &composed, now).await?;
        if written {
            for mail in &composed {
                self.metrics.mail_queued(mail.kind.name());
            }
            mailer.queued();
            tracing::info!(user_id = user.id, purpose = purpose.name(), "mail queued");
        }
        Ok(written)
    }

    fn lifetime(&self, purpose: TokenPurpose) -> Duration {
        self.mail.mailer.lifetimes().of(purpose)
    }

    /// Whole seconds: a token issued later in this second (whose `iat` is
    /// this second) is not refused by a cut-off set now.
    fn now_whole_seconds(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.clock.now().timestamp(), 0).unwrap_or_default()
    }

    /// Mails the signed-in user a new verification link. How long it lives.
    pub async fn request_email_verification(
        &self,
        viewer: &Viewer,
        client: &Client,
    ) -> Result<Duration, AuthError> {
        let caller = self.caller(viewer, client).await?;
        self.attempt(Action::Mail, client).await?;
        let user = caller.user;
        if user.email.is_none() {
            return Err(AuthError::Validation(vec![FieldError::new(
                "email",
                FieldCode::FieldMissing,
                "the account has no e-mail address to verify",
            )]));
        }
        if user.email_verified_at.is_some() {
            return Err(AuthError::Validation(vec![FieldError::new(
                "email",
                FieldCode::Invalid,
                "the e-mail address is verified already",
            )]));
        }
        self.queue_verification(&user).await?;
        self.audit
            .record(
                EventKind::MailRequested,
                Some(user.id),
                client,
                Some(TokenPurpose::VerifyEmail.name()),
            )
            .await;
        Ok(self.lifetime(TokenPurpose::VerifyEmail))
    }

    /// Follows a verification link: the address it was sent to is
    /// verified, if it is still the account's. Returns the address.
    pub async fn verify_email(&self, token: &str, client: &Client) -> Result<String, AuthError> {
        self.attempt(Action::Account, client).await?;
        if !is_well_formed_link_token(token) {
            return Err(AuthError::InvalidToken);
        }
        let verified = self
            .store
            .verify_email(
                &secret_hash(token),
                self.clock.now(),
                &client.addr.to_string(),
            )
            .await?
            .ok_or(AuthError::InvalidToken)?;
        self.audit.written_elsewhere(EventKind::EmailVerified);
        tracing::info!(user_id = verified.user_id, "e-mail verified");
        Ok(verified.email)
    }

    /// The address of a request that names one (reset, sign-in code),
    /// checked by the sign-up rules, and its match key. The same answer
    /// for any well-formed address, registered or not.
    fn requested_address(&self, raw: &str) -> Result<String, AuthError> {
        let update = email_only(raw)
            .validate(&self.rules)
            .map_err(AuthError::Validation)?;
        match update.new_email() {
            Some(address) => Ok(address.to_owned()),
            None => Err(AuthError::Validation(vec![FieldError::new(
                "email",
                FieldCode::FieldMissing,
                "an e-mail address is required",
            )])),
        }
    }

    /// The user whose e-mail (not username) has this match key. Two reads
    /// whether or not there is one, so an unknown address costs the same.
    async fn owner_of_address(&self, email_key: &str) -> Result<Option<User>, StoreError> {
        let user_id = self.store.login_key_owner(email_key).await?.unwrap_or(-1);
        Ok(self
            .store
            .user(user_id)
            .await?
            .filter(|user| user.email.as_deref().map(match_key).as_deref() == Some(email_key)))
    }

    /// Mails a reset link if an account has this address. Answers the
    /// same either way, before looking; how long a link would live.
    pub async fn request_password_reset(
        self: &Arc<Self>,
        email: &str,
        client: &Client,
    ) -> Result<Duration, AuthError> {
        self.request_by_address(email, client, TokenPurpose::ResetPassword)
            .await
    }

    /// Mails a sign-in code if an account has this address (answers the
    /// same either way).
    pub async fn request_sign_in_code(
        self: &Arc<Self>,
        email: &str,
        client: &Client,
    ) -> Result<Duration, AuthError> {
        if !self.mail.sign_in_codes {
            return Err(AuthError::NotEnabled("sign-in by code"));
        }
        self.request_by_address(email, client, TokenPurpose::SignInCode)
            .await
    }

    async fn request_by_address(
        self: &Arc<Self>,
        email: &str,
        client: &Client,
        purpose: TokenPurpose,
    ) -> Result<Duration, AuthError> {
        self.attempt(Action::Mail, client).await?;
        let address = self.requested_address(email)?;
        let key = match_key(&address);
        self.throttle.mail_to(&key).await?;
        let service = Arc::clone(self);
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = service.mail_owner(&key, purpose, &client).await {
                tracing::warn!(purpose = purpose.name(), error = %e, "mail request not served");
            }
        });
        Ok(self.lifetime(purpose))
    }

    async fn mail_owner(
        &self,
        email_key: &str,
        purpose: TokenPurpose,
        client: &Client,
    ) -> Result<(), AuthError> {
        let Some(user) = self.owner_of_address(email_key).await? else {
            tracing::info!(
                purpose = purpose.name(),
                "mail asked for an address no account has"
            );
            return Ok(());
        };
        let Some(address) = user.email.clone() else {
            return Ok(());
        };
        if !user.may_recover_by_email() {
            tracing::info!(
                user_id = user.id,
                purpose = purpose.name(),
                "no mail: the address was changed after sign-up and is not verified"
            );
            return Ok(());
        }
        let kind = match purpose {
            TokenPurpose::ResetPassword => MailKind::ResetPassword,
            TokenPurpose::SignInCode => MailKind::SignInCode,
            TokenPurpose::VerifyEmail => MailKind::VerifyEmail,
            TokenPurpose::ChangeEmail => MailKind::ConfirmEmailChange,
        };
        if self
            .issue(&user, purpose, &address, &[(kind, &address)])
            .await?
        {
            self.audit
                .record(
                    EventKind::MailRequested,
                    Some(user.id),
                    client,
                    Some(purpose.name()),
                )
                .await;
        }
        Ok(())
    }

    /// Sets a new password with a reset link: every session of the user
    /// ends, and every access token. How many sessions ended.
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: Password,
        client: &Client,
    ) -> Result<u64, AuthError> {
        self.attempt(Action::Account, client).await?;
        if !is_well_formed_link_token(token) {
            return Err(AuthError::InvalidToken);
        }
        let hash = secret_hash(token);
        let now = self.now_whole_seconds();
        let found = self
            .store
            .mail_token(TokenPurpose::ResetPassword, &hash, now)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        let user = self
            .store
            .user(found.user_id)
            .await?
            .filter(|u| u.is_active())
            .ok_or(AuthError::InvalidToken)?;
        let problems = self
            .rules
            .check_new_password("newPassword", &new_password, &user);
        if !problems.is_empty() {
            return Err(AuthError::Validation(problems));
        }
        let password_hash = self
            .refused(self.hasher.slot(client), client, "password hashing queue")
            .await?
            .hash(&new_password)
            .await?;
        let (user_id, revoked) = self
            .store
            .reset_password(&hash, &password_hash, now, &client.addr.to_string())
            .await?
            .ok_or(AuthError::InvalidToken)?;
        self.audit.written_elsewhere(EventKind::PasswordReset);
        tracing::info!(user_id, revoked, "password reset");
        Ok(revoked)
    }

    /// Asks to move the account to `new_email`: the password is checked
    /// like a sign-in, a confirmation link goes to the new address and a
    /// notice to the old one. Nothing changes until the link is followed.
    pub async fn request_email_change(
        &self,
        viewer: &Viewer,
        password: Password,
        new_email: String,
        client: &Client,
    ) -> Result<Duration, AuthError> {
        let caller = self.caller(viewer, client).await?;
        self.attempt(Action::Mail, client).await?;
        let user = caller.user;
        let mut problems = Vec::new();
        if password.expose().is_empty() {
            problems.push(FieldError::new(
                "password",
                FieldCode::FieldMissing,
                "the password is required",
            ));
        }
        let address = match self.requested_address(&new_email) {
            Ok(address) => Some(address),
            Err(AuthError::Validation(fields)) => {
                problems.extend(fields.into_iter().map(|f| f.renamed("newEmail")));
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(address) = &address {
            let key = match_key(address);
            if user.email.as_deref().map(match_key).as_deref() == Some(key.as_str()) {
                problems.push(FieldError::new(
                    "newEmail",
                    FieldCode::Invalid,
                    "this is the account's address already",
                ));
            } else if self
                .store
                .login_key_owner(&key)
                .await?
                .is_some_and(|owner| owner != user.id)
            {
                problems.push(FieldError::new(
                    "newEmail",
                    FieldCode::Taken,
                    "this e-mail is already registered",
                ));
            }
        }
        let Some(address) = address.filter(|_| problems.is_empty()) else {
            return Err(AuthError::Validation(problems));
        };
        self.check_password(
            user.id,
            &password,
            client,
            "wrong password (requestEmailChange)",
        )
        .await?;
        self.throttle.mail_to(&match_key(&address)).await?;
        let mut mails = vec![(MailKind::ConfirmEmailChange, address.as_str())];
        if let Some(old) = user.email.as_deref() {
            mails.push((MailKind::EmailChangeNotice, old));
        }
        if !self
            .issue(&user, TokenPurpose::ChangeEmail, &address, &mails)
            .await?
        {
            return Err(AuthError::Unauthenticated);
        }
        self.audit
            .record(
                EventKind::MailRequested,
                Some(user.id),
                client,
                Some(TokenPurpose::ChangeEmail.name()),
            )
            .await;
        Ok(self.lifetime(TokenPurpose::ChangeEmail))
    }

    /// Follows an e-mail change link: the new address becomes the
    /// account's, verified. TAKEN if someone registered it meanwhile.
    pub async fn confirm_email_change(
        &self,
        token: &str,
        client: &Client,
    ) -> Result<User, AuthError> {
        self.attempt(Action::Account, client).await?;
        if !is_well_formed_link_token(token) {
            return Err(AuthError::InvalidToken);
        }
        let hash = secret_hash(token);
        let now = self.clock.now();
        let found = self
            .store
            .mail_token(TokenPurpose::ChangeEmail, &hash, now)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        let update = email_only(&found.email)
            .validate(&self.rules)
            .map_err(AuthError::Validation)?
            .with_email_proven();
        match self
            .store
            .update_profile(&self.actor(found.user_id, client), &update, Some(&hash))
            .await
        {
            Ok(Some(plan)) => {
                self.audit.written_elsewhere(EventKind::EmailChanged);
                tracing::info!(user_id = found.user_id, "e-mail changed");
                Ok(plan.user)
            }
            Ok(None) => Err(AuthError::InvalidToken),
            Err(StoreError::Conflict) => Err(AuthError::Validation(vec![FieldError::new(
                "email",
                FieldCode::Taken,
                "this e-mail was registered by someone else meanwhile",
            )])),
            Err(e) => Err(e.into()),
        }
    }

    async fn code_refused<T>(
        &self,
        user_id: Option<i64>,
        client: &Client,
        reason: &'static str,
    ) -> Result<T, AuthError> {
        self.metrics.sign_in(false);
        self.audit
            .record(EventKind::SignInFailed, user_id, client, Some(reason))
            .await;
        Err(AuthError::InvalidCredentials)
    }

    /// Signs in with a code mailed by `requestSignInCode`. A wrong code,
    /// an unknown address and a used-up code are one answer,
    /// INVALID_CREDENTIALS; a code allows five tries.
    pub async fn sign_in_with_code(
        &self,
        email: &str,
        code: &str,
        client: &Client,
    ) -> Result<SignedIn, AuthError> {
        if !self.mail.sign_in_codes {
            return Err(AuthError::NotEnabled("sign-in by code"));
        }
        self.attempt(Action::SignIn, client).await?;
        let Some(key) = lookup_key(email) else {
            return Err(AuthError::InvalidCredentials);
        };
        let now = self.clock.now();
        // Every refusal below costs the same work (two reads, the counting
        // statement, one audit row), so none tells whether the address
        // has an account or a live code.
        let user = self.owner_of_address(&key).await?;
        let user_id = user.as_ref().map(|u| u.id);
        // The try is counted before the code is compared, in one
        // statement: concurrent guesses get no more than five.
        let stored = self
            .store
            .reserve_code_attempt(user_id.unwrap_or(-1), now, MAX_CODE_ATTEMPTS)
            .await?;
        let presented = secret_hash(code);
        let (Some(user), Some(stored)) = (user, stored) else {
            return self
                .code_refused(user_id, client, "no live sign-in code")
                .await;
        };
        if !is_well_formed_code(code) || presented != stored || !user.is_active() {
            return self
                .code_refused(Some(user.id), client, "wrong sign-in code")
                .await;
        }
        let (refresh_token, session) = self.new_session(user.id, now, client);
        if !self.store.redeem_code(&presented, &session).await? {
            return self
                .code_refused(Some(user.id), client, "sign-in code used meanwhile")
                .await;
        }
        self.audit.written_elsewhere(EventKind::SignIn);
        self.metrics.sign_in(true);
        tracing::info!(user_id = user.id, "signed in with a code");
        let user = self
            .store
            .user(user.id)
            .await?
            .ok_or(AuthError::InvalidCredentials)?;
        Ok(SignedIn {
            access_token: self.access_token(user.id, &session.id)?,
            refresh_token,
            expires_in: self.tokens.access_ttl(),
            session_id: session.id,
            user,
            cars: None,
        })
    }
}

/// A profile change of the e-mail alone (what the mail flows check).
fn email_only(raw: &str) -> ProfileForm {
    ProfileForm {
        email: Change::Set(raw.to_owned()),
        ..ProfileForm::default()
    }
}
