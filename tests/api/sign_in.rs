use serde_json::json;

use crate::helpers::*;

async fn create_token_by_username_or_email_case_insensitively(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up_with(
        json!({ "username": "Мария", "password": PASSWORD, "email": "Maria@Example.com" }),
    )
    .await;
    for login in [
        "Мария",
        "мария",
        "МАРИЯ",
        "maria@example.com",
        "MARIA@EXAMPLE.COM",
        " Maria@Example.com ",
    ] {
        let body = app.create_token(login, PASSWORD).await;
        assert!(body["errors"].is_null(), "login {login}: {body}");
        let payload = &body["data"]["createToken"];
        assert_eq!(payload["user"]["username"], "Мария");
        assert_eq!(payload["tokenType"], "Bearer");
        let me = app
            .me(payload["accessToken"].as_str().expect("token"))
            .await;
        assert_eq!(me["data"]["me"]["username"], "Мария");
    }
}

async fn unknown_login_and_wrong_password_look_the_same(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up("existing").await;
    let wrong_password = app
        .create_token("existing", "not the password at all")
        .await;
    let unknown_login = app.create_token("nobody", "not the password at all").await;
    assert_eq!(error_code(&wrong_password), "INVALID_CREDENTIALS");
    assert_eq!(wrong_password, unknown_login, "same message and shape");
    // The password is checked exactly as given (no trimming, no case change).
    let padded = app.create_token("existing", &format!(" {PASSWORD}")).await;
    assert_eq!(error_code(&padded), "INVALID_CREDENTIALS");
    let upper = app.create_token("existing", &PASSWORD.to_uppercase()).await;
    assert_eq!(error_code(&upper), "INVALID_CREDENTIALS");
}

async fn stored(app: &TestApp) -> String {
    let pool = app.db_pool().await;
    sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(&pool)
        .await
        .expect("hash")
}

async fn a_hash_with_old_parameters_is_upgraded_at_sign_in(backend: Backend) {
    let app = spawn_with(backend, |c| c.passwords.argon2_iterations = 1).await;
    app.sign_up("upgrader").await;
    assert!(stored(&app).await.contains("m=19456,t=1,p=1"));
    let app = app.restart(|_| {}).await;
    // A wrong password changes nothing.
    assert_eq!(
        error_code(&app.create_token("upgrader", "wrong password!").await),
        "INVALID_CREDENTIALS"
    );
    assert!(stored(&app).await.contains("t=1"));
    let body = app.create_token("upgrader", PASSWORD).await;
    assert!(body["errors"].is_null(), "{body}");
    assert!(
        stored(&app).await.contains("m=19456,t=2,p=1"),
        "re-hashed with the current parameters"
    );
    let again = app.create_token("upgrader", PASSWORD).await;
    assert!(again["errors"].is_null(), "the new hash verifies: {again}");
}

crate::on_both_backends!(
    create_token_by_username_or_email_case_insensitively,
    unknown_login_and_wrong_password_look_the_same,
    a_hash_with_old_parameters_is_upgraded_at_sign_in,
);
