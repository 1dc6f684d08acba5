//! Mail through a real SMTP server (see [`crate::smtp`]): verification,
//! password reset, e-mail change and sign-in codes from the mutation to the
//! mail's link to the final mutation; the outbox through outages, 5xx
//! answers and two instances; zero-configuration files.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::smtp::SmtpSink;

const ME_EMAIL: &str = "{ me { email emailVerified } }";
const VERIFY: &str = "mutation($t: String!) { verifyEmail(token: $t) { __typename ... on VerifyEmailSuccess { email } ... on UserError { code message } } }";
const REQUEST_VERIFICATION: &str = "mutation { requestEmailVerification { __typename ... on MailQueued { expiresIn } ... on ValidationFailed { fields { field code } } ... on UserError { code } } }";
const REQUEST_RESET: &str = "mutation($e: String!) { requestPasswordReset(email: $e) { __typename ... on MailQueued { expiresIn } ... on ValidationFailed { fields { field code } } ... on RateLimited { retryAfter } ... on UserError { code } } }";
const RESET: &str = "mutation($t: String!, $p: String!) { resetPassword(token: $t, newPassword: $p) { __typename ... on ResetPasswordSuccess { signedOutSessions } ... on ValidationFailed { fields { field code } } ... on UserError { code } } }";
const REQUEST_CHANGE: &str = "mutation($p: String!, $e: String!) { requestEmailChange(password: $p, newEmail: $e) { __typename ... on MailQueued { expiresIn } ... on ValidationFailed { fields { field code } } ... on UserError { code } } }";
const CONFIRM_CHANGE: &str = "mutation($t: String!) { confirmEmailChange(token: $t) { __typename ... on ConfirmEmailChangeSuccess { email } ... on ValidationFailed { fields { field code } } ... on UserError { code } } }";
const REQUEST_CODE: &str = "mutation($e: String!) { requestSignInCode(email: $e) { __typename ... on MailQueued { expiresIn } ... on UserError { code } } }";
const SIGN_IN_WITH_CODE: &str = "mutation($e: String!, $c: String!) { signInWithCode(email: $e, code: $c) { __typename ... on SignInWithCodeSuccess { auth { accessToken refreshToken user { email emailVerified } } } ... on UserError { code } } }";

/// An app that sends through `sink`, on `clock`.
async fn mail_app(
    backend: Backend,
    sink: &SmtpSink,
    clock: Arc<ManualClock>,
    customize: impl FnOnce(&mut authql::config::ServeConfig),
) -> TestApp {
    let url = sink.url();
    spawn_with_clock(backend, clock, move |c| {
        c.mail.smtp_url = Some(authql::config::Secret::new(url));
        c.mail.mail_link_base = Some("https://app.example.com".into());
        customize(c);
    })
    .await
}

fn result<'a>(body: &'a Value, field: &str) -> &'a Value {
    assert!(body["errors"].is_null(), "{body}");
    &body["data"][field]
}

fn access(payload: &Value) -> String {
    payload["accessToken"].as_str().expect("access").to_owned()
}

async fn sign_up_with_email(app: &TestApp, username: &str, email: &str) -> Value {
    app.sign_up_with(json!({ "username": username, "password": PASSWORD, "email": email }))
        .await
}

async fn verification_is_mailed_at_sign_up_and_its_link_verifies(backend: Backend) {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let app = mail_app(backend, &sink, ManualClock::starting_now(), |_| {}).await;
    let signed_up = sign_up_with_email(&app, "vera", "Vera@Example.COM").await;
    let token = access(&signed_up);
    let mail = sink
        .wait_for_mail("Vera@example.com", "Confirm your e-mail")
        .await;
    assert_eq!(mail.from, "noreply@localhost");
    assert!(
        mail.text()
            .contains("https://app.example.com/verify-email?token="),
        "{}",
        mail.text()
    );
    let html = mail.html.clone().expect("an HTML part");
    assert!(html.contains("verify-email?token="), "{html}");
    let me = app.gql_as(Some(&token), ME_EMAIL, json!({})).await;
    assert_eq!(me["data"]["me"]["emailVerified"], false);

    // Junk, and a well-formed token nobody issued: one answer.
    for junk in ["nope", &"A".repeat(43)] {
        let body = app.gql(VERIFY, json!({ "t": junk })).await;
        assert_eq!(result(&body, "verifyEmail")["code"], "INVALID_TOKEN");
    }
    let body = app.gql(VERIFY, json!({ "t": mail.token() })).await;
    assert_eq!(
        result(&body, "verifyEmail"),
        &json!({ "__typename": "VerifyEmailSuccess", "email": "Vera@example.com" })
    );
    let me = app.gql_as(Some(&token), ME_EMAIL, json!({})).await;
    assert_eq!(me["data"]["me"]["emailVerified"], true);
    // Single use.
    let body = app.gql(VERIFY, json!({ "t": mail.token() })).await;
    assert_eq!(result(&body, "verifyEmail")["__typename"], "InvalidToken");
    let body = app
        .gql_as(Some(&token), REQUEST_VERIFICATION, json!({}))
        .await;
    assert_eq!(
        result(&body, "requestEmailVerification")["fields"],
        json!([{ "field": "email", "code": "INVALID" }])
    );

    // A new address is unverified, and gets a link of its own; a link
    // sent to the old address proves nothing about the new one.
    let body = app
        .gql_as(
            Some(&token),
            "mutation { updateProfile(input: {email: \"vera@new.example\"}) { __typename } }",
            json!({}),
        )
        .await;
    assert_eq!(
        result(&body, "updateProfile")["__typename"],
        "UpdateProfileSuccess"
    );
    let me = app.gql_as(Some(&token), ME_EMAIL, json!({})).await;
    assert_eq!(me["data"]["me"]["emailVerified"], false);
    let first = sink
        .wait_for_mail("vera@new.example", "Confirm your e-mail")
        .await;
    let body = app
        .gql_as(Some(&token), REQUEST_VERIFICATION, json!({}))
        .await;
    assert_eq!(
        result(&body, "requestEmailVerification"),
        &json!({ "__typename": "MailQueued", "expiresIn": 86400 })
    );
    let second = sink
        .wait_for_nth("vera@new.example", "Confirm your e-mail", 2)
        .await;
    // The newer link replaced the older.
    let body = app.gql(VERIFY, json!({ "t": first.token() })).await;
    assert_eq!(result(&body, "verifyEmail")["__typename"], "InvalidToken");
    // Set with nothing but a session, the new address gets no reset link
    // until it is verified: a stolen session cannot become the account.
    let asked = app
        .gql(REQUEST_RESET, json!({ "e": "vera@new.example" }))
        .await;
    assert_eq!(
        result(&asked, "requestPasswordReset")["__typename"],
        "MailQueued"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = app.gql(VERIFY, json!({ "t": second.token() })).await;
    assert_eq!(
        result(&body, "verifyEmail")["__typename"],
        "VerifyEmailSuccess"
    );
    app.gql(REQUEST_RESET, json!({ "e": "vera@new.example" }))
        .await;
    sink.wait_for_mail("vera@new.example", "Reset your password")
        .await;
    let resets = sink
        .mails_to("vera@new.example")
        .into_iter()
        .filter(|m| m.subject.contains("Reset"))
        .count();
    assert_eq!(resets, 1, "only the request after verification was served");
}

async fn password_reset_tells_nothing_and_ends_every_session(backend: Backend) {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let clock = ManualClock::starting_now();
    let app = mail_app(backend, &sink, clock.clone(), |_| {}).await;
    let first = sign_up_with_email(&app, "rita", "rita@example.com").await;
    let second = app.create_token("rita", PASSWORD).await;
    let second = &second["data"]["createToken"];
    sink.wait_for(1).await; // the verification mail

    // Unknown and known addresses: the same answer.
    let unknown = app
        .gql(REQUEST_RESET, json!({ "e": "nobody@example.com" }))
        .await;
    let known = app
        .gql(REQUEST_RESET, json!({ "e": "RITA@example.com" }))
        .await;
    assert_eq!(unknown, known);
    assert_eq!(
        result(&known, "requestPasswordReset"),
        &json!({ "__typename": "MailQueued", "expiresIn": 3600 })
    );
    let invalid = app
        .gql(REQUEST_RESET, json!({ "e": "not an address" }))
        .await;
    assert_eq!(
        result(&invalid, "requestPasswordReset")["fields"],
        json!([{ "field": "email", "code": "INVALID" }])
    );
    let mail = sink
        .wait_for_mail("rita@example.com", "Reset your password")
        .await;
    assert!(mail
        .text()
        .contains("https://app.example.com/reset-password?token="));
    assert!(sink.mails_to("nobody@example.com").is_empty());

    // The sign-up rules apply to the new password; nothing is used up.
    let body = app
        .gql(RESET, json!({ "t": mail.token(), "p": "short" }))
        .await;
    assert_eq!(
        result(&body, "resetPassword")["fields"],
        json!([{ "field": "newPassword", "code": "TOO_SHORT" }])
    );
    let body = app
        .gql(
            RESET,
            json!({ "t": mail.token(), "p": "a brand new passphrase" }),
        )
        .await;
    assert_eq!(
        result(&body, "resetPassword"),
        &json!({ "__typename": "ResetPasswordSuccess", "signedOutSessions": 2 })
    );
    // Every session and access token ended, at once.
    for payload in [&first, second] {
        let me = app.gql_as(Some(&access(payload)), ME, json!({})).await;
        assert_eq!(error_code(&me), "UNAUTHENTICATED");
        let refreshed = app
            .gql(REFRESH, json!({ "token": payload["refreshToken"] }))
            .await;
        assert_eq!(error_code(&refreshed), "INVALID_REFRESH_TOKEN");
    }
    let old = app.create_token("rita", PASSWORD).await;
    assert_eq!(error_code(&old), "INVALID_CREDENTIALS");
    let new = app.create_token("rita", "a brand new passphrase").await;
    assert!(new["errors"].is_null(), "{new}");
    // Single use.
    let body = app
        .gql(
            RESET,
            json!({ "t": mail.token(), "p": "yet another passphrase" }),
        )
        .await;
    assert_eq!(result(&body, "resetPassword")["__typename"], "InvalidToken");

    // A newer link kills the older; so does a password change; so does time.
    let ask = |n: usize| {
        let (app, sink) = (&app, &sink);
        async move {
            app.gql(REQUEST_RESET, json!({ "e": "rita@example.com" }))
                .await;
            sink.wait_for_nth("rita@example.com", "Reset", n)
                .await
                .token()
        }
    };
    let older = ask(2).await;
    let newer = ask(3).await;
    let body = app
        .gql(RESET, json!({ "t": older, "p": "yet another passphrase" }))
        .await;
    assert_eq!(result(&body, "resetPassword")["__typename"], "InvalidToken");
    let signed_in = access(&new["data"]["createToken"]);
    let changed = app
        .gql_as(
            Some(&signed_in),
            "mutation { changePassword(currentPassword: \"a brand new passphrase\", newPassword: \"the fourth passphrase\") { __typename } }",
            json!({}),
        )
        .await;
    assert_eq!(
        result(&changed, "changePassword")["__typename"],
        "ChangePasswordSuccess"
    );
    let body = app
        .gql(RESET, json!({ "t": newer, "p": "yet another passphrase" }))
        .await;
    assert_eq!(result(&body, "resetPassword")["__typename"], "InvalidToken");
    let expiring = ask(4).await;
    clock.advance(Duration::from_secs(3601));
    let body = app
        .gql(
            RESET,
            json!({ "t": expiring, "p": "yet another passphrase" }),
        )
        .await;
    assert_eq!(result(&body, "resetPassword")["__typename"], "InvalidToken");

    // A link mailed to an address the account has left is dead.
    let left_behind = ask(5).await;
    let signed_in =
        access(&app.create_token("rita", "the fourth passphrase").await["data"]["createToken"]);
    let moved = app
        .gql_as(
            Some(&signed_in),
            "mutation { updateProfile(input: {email: \"rita@moved.example\"}) { __typename } }",
            json!({}),
        )
        .await;
    assert_eq!(
        result(&moved, "updateProfile")["__typename"],
        "UpdateProfileSuccess"
    );
    let body = app
        .gql(
            RESET,
            json!({ "t": left_behind, "p": "yet another passphrase" }),
        )
        .await;
    assert_eq!(result(&body, "resetPassword")["__typename"], "InvalidToken");
}

async fn an_email_change_needs_the_password_and_the_new_mailbox(backend: Backend) {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let app = mail_app(backend, &sink, ManualClock::starting_now(), |_| {}).await;
    let signed_up = sign_up_with_email(&app, "emil", "emil@old.example").await;
    let token = access(&signed_up);
    sign_up_with_email(&app, "other", "other@example.com").await;
    let ask = |password: &str, email: &str| {
        app.gql_as(
            Some(&token),
            REQUEST_CHANGE,
            json!({ "p": password, "e": email }),
        )
    };
    let wrong = ask("not my password", "emil@new.example").await;
    assert_eq!(
        result(&wrong, "requestEmailChange")["__typename"],
        "InvalidCredentials"
    );
    let taken = ask(PASSWORD, "OTHER@example.com").await;
    assert_eq!(
        result(&taken, "requestEmailChange")["fields"],
        json!([{ "field": "newEmail", "code": "TAKEN" }])
    );
    let same = ask(PASSWORD, "emil@OLD.example").await;
    assert_eq!(
        result(&same, "requestEmailChange")["fields"],
        json!([{ "field": "newEmail", "code": "INVALID" }])
    );
    let asked = ask(PASSWORD, "emil@new.example").await;
    assert_eq!(
        result(&asked, "requestEmailChange")["__typename"],
        "MailQueued"
    );
    let confirm = sink
        .wait_for_mail("emil@new.example", "Confirm your new e-mail")
        .await;
    let notice = sink
        .wait_for_mail("emil@old.example", "being changed")
        .await;
    assert!(
        notice.text().contains("emil@new.example"),
        "{}",
        notice.text()
    );
    assert!(
        !notice.text().contains("token="),
        "the notice carries no link"
    );
    // Nothing changes before the link is followed.
    let me = app.gql_as(Some(&token), ME_EMAIL, json!({})).await;
    assert_eq!(me["data"]["me"]["email"], "emil@old.example");

    let body = app
        .gql(CONFIRM_CHANGE, json!({ "t": confirm.token() }))
        .await;
    assert_eq!(
        result(&body, "confirmEmailChange"),
        &json!({ "__typename": "ConfirmEmailChangeSuccess", "email": "emil@new.example" })
    );
    let me = app.gql_as(Some(&token), ME_EMAIL, json!({})).await;
    assert_eq!(
        me["data"]["me"],
        json!({ "email": "emil@new.example", "emailVerified": true })
    );
    assert!(app.create_token("emil@new.example", PASSWORD).await["errors"].is_null());
    assert_eq!(
        error_code(&app.create_token("emil@old.example", PASSWORD).await),
        "INVALID_CREDENTIALS"
    );
    let again = app
        .gql(CONFIRM_CHANGE, json!({ "t": confirm.token() }))
        .await;
    assert_eq!(
        result(&again, "confirmEmailChange")["__typename"],
        "InvalidToken"
    );

    // Claimed by someone else between request and confirmation: TAKEN.
    let asked = ask(PASSWORD, "contested@example.com").await;
    assert_eq!(
        result(&asked, "requestEmailChange")["__typename"],
        "MailQueued"
    );
    let confirm = sink
        .wait_for_mail("contested@example.com", "Confirm your new e-mail")
        .await;
    sign_up_with_email(&app, "quick", "Contested@example.com").await;
    let body = app
        .gql(CONFIRM_CHANGE, json!({ "t": confirm.token() }))
        .await;
    assert_eq!(
        result(&body, "confirmEmailChange")["fields"],
        json!([{ "field": "email", "code": "TAKEN" }])
    );

    // A change someone started with the password dies when the owner
    // changes the password, as the notice advises.
    let asked = ask(PASSWORD, "intruder@example.com").await;
    assert_eq!(
        result(&asked, "requestEmailChange")["__typename"],
        "MailQueued"
    );
    let confirm = sink
        .wait_for_mail("intruder@example.com", "Confirm your new e-mail")
        .await;
    let changed = app
        .gql_as(
            Some(&token),
            "mutation { changePassword(currentPassword: \"correct horse battery staple\", newPassword: \"a fresh passphrase here\") { __typename } }",
            json!({}),
        )
        .await;
    assert_eq!(
        result(&changed, "changePassword")["__typename"],
        "ChangePasswordSuccess"
    );
    let body = app
        .gql(CONFIRM_CHANGE, json!({ "t": confirm.token() }))
        .await;
    assert_eq!(
        result(&body, "confirmEmailChange")["__typename"],
        "InvalidToken"
    );
}

async fn sign_in_codes_work_once_and_hold_five_tries_under_load(backend: Backend) {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let clock = ManualClock::starting_now();
    let off = mail_app(backend, &sink, clock.clone(), |_| {}).await;
    let body = off.gql(REQUEST_CODE, json!({ "e": "a@example.com" })).await;
    assert_eq!(error_code(&body), "NOT_ENABLED");
    drop(off);

    let app = mail_app(backend, &sink, clock.clone(), |c| {
        c.mail.sign_in_codes = true
    })
    .await;
    sign_up_with_email(&app, "cody", "cody@example.com").await;
    let request = || app.gql(REQUEST_CODE, json!({ "e": "cody@example.com" }));
    let unknown = app
        .gql(REQUEST_CODE, json!({ "e": "nobody@example.com" }))
        .await;
    let known = request().await;
    assert_eq!(unknown, known);
    assert_eq!(
        result(&known, "requestSignInCode"),
        &json!({ "__typename": "MailQueued", "expiresIn": 600 })
    );
    let mail = sink.wait_for_mail("cody@example.com", "sign-in code").await;
    let code = mail.code();
    assert!(mail.subject.contains(&code));
    assert!(
        mail.text().contains(&format!(
            "https://app.example.com/sign-in?email=cody%40example.com&code={code}"
        )),
        "{}",
        mail.text()
    );
    let wrong = if code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };

    // Forty wrong guesses at once: five are counted, then the code is dead,
    // the right one included.
    let guesses = futures::future::join_all((0..40).map(|_| {
        app.gql(
            SIGN_IN_WITH_CODE,
            json!({ "e": "cody@example.com", "c": wrong }),
        )
    }))
    .await;
    for body in &guesses {
        assert_eq!(
            result(body, "signInWithCode")["code"],
            "INVALID_CREDENTIALS"
        );
    }
    let pool = app.db_pool().await;
    let tries: i64 = sqlx::query_scalar(
        "SELECT CAST(failed_attempts AS BIGINT) FROM mail_tokens WHERE purpose = 'sign_in_code'",
    )
    .fetch_one(&pool)
    .await
    .expect("tries");
    assert_eq!(tries, 5);
    let right = app
        .gql(
            SIGN_IN_WITH_CODE,
            json!({ "e": "cody@example.com", "c": code }),
        )
        .await;
    assert_eq!(
        result(&right, "signInWithCode")["__typename"],
        "InvalidCredentials"
    );

    // A new code signs in once, and verifies the address on the way.
    request().await;
    let code = sink
        .wait_for_nth("cody@example.com", "sign-in code", 2)
        .await
        .code();
    // Following a link is a GET: it can run no mutation, so a mail
    // scanner that fetches it uses nothing up.
    let scanned = app
        .client
        .get(app.url("/graphql"))
        .query(&[(
            "query",
            format!("mutation {{ signInWithCode(email: \"cody@example.com\", code: \"{code}\") {{ __typename }} }}"),
        )])
        .send()
        .await
        .expect("GET");
    assert_eq!(scanned.status(), 405);
    let signed_in = app
        .gql(
            SIGN_IN_WITH_CODE,
            json!({ "e": " Cody@Example.com ", "c": code }),
        )
        .await;
    let auth = &result(&signed_in, "signInWithCode")["auth"];
    assert_eq!(auth["user"]["emailVerified"], true, "{signed_in}");
    let me = app.gql_as(Some(&access(auth)), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["username"], "cody");
    let again = app
        .gql(
            SIGN_IN_WITH_CODE,
            json!({ "e": "cody@example.com", "c": code }),
        )
        .await;
    assert_eq!(
        result(&again, "signInWithCode")["__typename"],
        "InvalidCredentials"
    );
    let unknown = app
        .gql(
            SIGN_IN_WITH_CODE,
            json!({ "e": "nobody@example.com", "c": code }),
        )
        .await;
    assert_eq!(
        result(&unknown, "signInWithCode")["__typename"],
        "InvalidCredentials"
    );

    // Ten minutes later a code is dead.
    request().await;
    let code = sink
        .wait_for_nth("cody@example.com", "sign-in code", 3)
        .await
        .code();
    clock.advance(Duration::from_secs(601));
    let late = app
        .gql(
            SIGN_IN_WITH_CODE,
            json!({ "e": "cody@example.com", "c": code }),
        )
        .await;
    assert_eq!(
        result(&late, "signInWithCode")["__typename"],
        "InvalidCredentials"
    );
}

async fn unverified_addresses_cannot_sign_in_by_email_when_required(backend: Backend) {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let app = mail_app(backend, &sink, ManualClock::starting_now(), |c| {
        c.mail.require_verified_email = true;
    })
    .await;
    sign_up_with_email(&app, "una", "una@example.com").await;
    let wrong = app
        .create_token("una@example.com", "not the password")
        .await;
    assert_eq!(
        error_code(&wrong),
        "INVALID_CREDENTIALS",
        "told only to who knows the password"
    );
    let unverified = app.create_token("una@example.com", PASSWORD).await;
    assert_eq!(error_code(&unverified), "EMAIL_NOT_VERIFIED");
    assert!(
        app.create_token("una", PASSWORD).await["errors"].is_null(),
        "by username"
    );
    let mail = sink.wait_for_mail("una@example.com", "Confirm").await;
    app.gql(VERIFY, json!({ "t": mail.token() })).await;
    assert!(app.create_token("una@example.com", PASSWORD).await["errors"].is_null());
}

async fn mail_limits_hold_per_address_and_per_recipient_under_load(backend: Backend) {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let app = mail_app(backend, &sink, ManualClock::starting_now(), |c| {
        c.mail.rate_mail_recipient = "3/1h".parse().expect("limit");
    })
    .await;
    sign_up_with_email(&app, "lim", "lim@example.com").await;
    sink.wait_for(1).await;
    for address in ["lim@example.com", "ghost@example.com"] {
        let answers = futures::future::join_all(
            (0..12).map(|_| app.gql(REQUEST_RESET, json!({ "e": address }))),
        )
        .await;
        let kinds: Vec<_> = answers
            .iter()
            .map(|b| result(b, "requestPasswordReset")["__typename"].clone())
            .collect();
        let queued = kinds.iter().filter(|k| *k == "MailQueued").count();
        let limited = kinds.iter().filter(|k| *k == "RateLimited").count();
        // The sign-up's verification mail used one of lim@'s three.
        let expected = if address == "lim@example.com" {
            (2, 10)
        } else {
            (3, 9)
        };
        assert_eq!((queued, limited), expected, "{address}: {kinds:?}");
    }
    sink.wait_for(3).await;
    let pool = app.db_pool().await;
    let queued: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM mail_outbox WHERE kind = 'reset_password'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(queued, 2);

    let strict = mail_app(backend, &sink, ManualClock::starting_now(), |c| {
        c.mail.rate_mail = "5/1h".parse().expect("limit");
    })
    .await;
    let answers = futures::future::join_all(
        (0..12).map(|i| strict.gql(REQUEST_RESET, json!({ "e": format!("n{i}@example.com") }))),
    )
    .await;
    let limited = answers
        .iter()
        .filter(|b| result(b, "requestPasswordReset")["__typename"] == "RateLimited")
        .count();
    assert_eq!(limited, 7);
}

/// Polls the outbox until `done` holds for the newest mail of `kind`, read
/// while no sender holds it (not in the middle of an attempt).
async fn outbox_row(
    app: &TestApp,
    kind: &str,
    done: impl Fn(i64, Option<&str>, bool) -> bool,
) -> (i64, Option<String>) {
    let pool = app.db_pool().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let row: Option<(i64, Option<String>, i64)> = sqlx::query_as(
            "SELECT CAST(attempts AS BIGINT), last_error,
                    CASE WHEN failed_at IS NULL THEN 0 ELSE 1 END
             FROM mail_outbox WHERE kind = $1 AND claimed_until IS NULL
             ORDER BY id DESC LIMIT 1",
        )
        .bind(kind)
        .fetch_optional(&pool)
        .await
        .expect("outbox");
        if let Some((attempts, error, failed)) = &row {
            if done(*attempts, error.as_deref(), *failed == 1) {
                return (*attempts, error.clone());
            }
        }
        assert!(std::time::Instant::now() < deadline, "outbox row: {row:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn mail_survives_an_smtp_outage_and_arrives_once(backend: Backend) {
    let Some(mut sink) = SmtpSink::start() else {
        return;
    };
    let clock = ManualClock::starting_now();
    let app = mail_app(backend, &sink, clock.clone(), |_| {}).await;
    // Signed up without an e-mail; the change below queues the one mail.
    app.sign_up("out").await;
    sink.stop();
    let token = access(&app.create_token("out", PASSWORD).await["data"]["createToken"]);
    let body = app
        .gql_as(
            Some(&token),
            "mutation { updateProfile(input: {email: \"out@example.com\"}) { __typename } }",
            json!({}),
        )
        .await;
    assert_eq!(
        result(&body, "updateProfile")["__typename"],
        "UpdateProfileSuccess"
    );
    // Refused connections: tried, kept, due again later.
    let (_, error) = outbox_row(&app, "verify_email", |attempts, error, _| {
        attempts >= 1 && error.is_some()
    })
    .await;
    assert!(error.is_some());
    sink.resume();
    clock.advance(Duration::from_secs(3600));
    let mails = sink.wait_for(1).await;
    // More rounds of the sender, and still one.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(sink.mails_to("out@example.com").len(), 1);
    // (Verified, so that it may receive a reset link below.)
    let body = app.gql(VERIFY, json!({ "t": mails[0].token() })).await;
    assert_eq!(
        result(&body, "verifyEmail")["__typename"],
        "VerifyEmailSuccess"
    );
    let metrics = app.metrics().await;
    assert!(metrics.contains("authql_mail_retried_total"), "{metrics}");
    assert!(
        metrics.contains("authql_mail_sent_total{kind=\"verify_email\"} 1"),
        "{metrics}"
    );

    // A 5xx answer is recorded and not retried.
    sink.answer("550");
    app.gql(REQUEST_RESET, json!({ "e": "out@example.com" }))
        .await;
    let (attempts, error) = outbox_row(&app, "reset_password", |_, _, failed| failed).await;
    assert_eq!(attempts, 1);
    assert!(
        error.as_deref().is_some_and(|e| e.contains("550")),
        "{error:?}"
    );
    clock.advance(Duration::from_secs(86_400));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (attempts, _) = outbox_row(&app, "reset_password", |_, _, failed| failed).await;
    assert_eq!(attempts, 1, "never retried");
    assert!(app
        .metrics()
        .await
        .contains("authql_mail_failed_total{reason=\"permanent\"} 1"));
    // The content of a mail given up is gone from the database.
    let pool = app.db_pool().await;
    let bodies: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM mail_outbox WHERE body_text IS NOT NULL OR link IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(bodies, 0);
}

async fn mail_that_cannot_be_delivered_in_time_is_given_up(backend: Backend) {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let clock = ManualClock::starting_now();
    let app = mail_app(backend, &sink, clock.clone(), |_| {}).await;
    sink.answer("451");
    sign_up_with_email(&app, "late", "late@example.com").await;
    outbox_row(&app, "verify_email", |attempts, error, _| {
        attempts >= 1 && error.is_some_and(|e| e.contains("451"))
    })
    .await;
    // Retried while time passes, then given up after AUTHQL_MAIL_GIVE_UP (24h).
    for _ in 0..3 {
        clock.advance(Duration::from_secs(600));
        let before = outbox_row(&app, "verify_email", |_, _, _| true).await.0;
        outbox_row(&app, "verify_email", |attempts, _, _| attempts > before).await;
    }
    clock.advance(Duration::from_secs(86_400));
    let (_, error) = outbox_row(&app, "verify_email", |_, _, failed| failed).await;
    assert!(error.is_some_and(|e| e.contains("451")));
    assert!(app
        .metrics()
        .await
        .contains("authql_mail_failed_total{reason=\"expired\"} 1"));
    assert!(sink.mails().is_empty());
}

/// A sender that claimed a mail and died before sending it: the claim ends
/// with its lease, and the mail goes out then, once.
async fn a_mail_claimed_by_a_crashed_sender_goes_out_when_its_lease_ends(backend: Backend) {
    use authql::clock::Clock as _;
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let clock = ManualClock::starting_now();
    let app = mail_app(backend, &sink, clock.clone(), |_| {}).await;
    let now = clock.now();
    let lease_end = now + chrono::Duration::seconds(300);
    let literal = |t: chrono::DateTime<chrono::Utc>| match backend {
        Backend::Sqlite => t.timestamp_millis().to_string(),
        Backend::Postgres | Backend::Pooled => format!("to_timestamp({})", t.timestamp()),
    };
    let pool = app.db_pool().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO mail_outbox (kind, recipient, subject, body_text, body_html, created_at,
                                  next_attempt_at, attempts, claimed_by, claimed_until)
         VALUES ('verify_email', 'orphan@example.com', 'Orphaned', 'text', '<p>html</p>', {n}, {n}, 1,
                 'a-sender-that-crashed', {l})",
        n = literal(now),
        l = literal(lease_end),
    )))
    .execute(&pool)
    .await
    .expect("claimed row");
    // Still leased: the live sender leaves it alone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.mails().is_empty());
    clock.advance(Duration::from_secs(301));
    let mails = sink.wait_for(1).await;
    assert_eq!(mails[0].subject, "Orphaned");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.mails().len(), 1);
}

async fn two_instances_deliver_fifty_mails_exactly_once(backend: Backend) {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let clock = ManualClock::starting_now();
    let db = TestDatabase::new(backend).await;
    let url = sink.url();
    let config = move |c: &mut authql::config::ServeConfig| {
        c.mail.smtp_url = Some(authql::config::Secret::new(url.clone()));
        c.mail.mail_poll = Duration::from_millis(20);
    };
    let a = spawn_on_clock(db.clone(), clock.clone(), config.clone()).await;
    let b = spawn_on_clock(db.clone(), clock.clone(), config).await;
    // Queued while the server answers 451: every mail waits in the outbox.
    sink.answer("451");
    futures::future::join_all((0..50).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        async move {
            sign_up_with_email(app, &format!("user{i}"), &format!("user{i}@example.com")).await
        }
    }))
    .await;
    let pool = a.db_pool().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let tried: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mail_outbox WHERE attempts >= 1")
            .fetch_one(&pool)
            .await
            .expect("count");
        if tried == 50 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{tried} of 50 tried");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Now both senders find all fifty due at once.
    sink.answer("");
    clock.advance(Duration::from_secs(3600));
    sink.wait_for(50).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mails = sink.mails();
    assert_eq!(mails.len(), 50);
    let mut recipients: Vec<_> = mails.iter().flat_map(|m| m.to.clone()).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), 50, "each address once");
    let sent = |metrics: String| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with("authql_mail_sent_total{kind=\"verify_email\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(sent(a.metrics().await) + sent(b.metrics().await), 50);
}

async fn without_smtp_mails_become_files(backend: Backend) {
    let app = spawn_app(backend).await;
    sign_up_with_email(&app, "laptop", "laptop@example.com").await;
    let folder = app.db.mail_dir.path().to_path_buf();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let eml = loop {
        let found: Vec<_> = std::fs::read_dir(&folder)
            .expect("mail folder")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        if let Some(path) = found.first() {
            break std::fs::read_to_string(path).expect("eml");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no .eml in {folder:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(eml.contains("To: laptop@example.com"), "{eml}");
    assert!(
        eml.contains("Subject: Confirm your e-mail address"),
        "{eml}"
    );
    assert!(eml.contains("verify-email?token"), "{eml}");
}

crate::on_both_backends!(
    verification_is_mailed_at_sign_up_and_its_link_verifies,
    password_reset_tells_nothing_and_ends_every_session,
    an_email_change_needs_the_password_and_the_new_mailbox,
    sign_in_codes_work_once_and_hold_five_tries_under_load,
    unverified_addresses_cannot_sign_in_by_email_when_required,
    mail_limits_hold_per_address_and_per_recipient_under_load,
    mail_survives_an_smtp_outage_and_arrives_once,
    two_instances_deliver_fifty_mails_exactly_once,
    mail_that_cannot_be_delivered_in_time_is_given_up,
    a_mail_claimed_by_a_crashed_sender_goes_out_when_its_lease_ends,
    without_smtp_mails_become_files,
);
