//! Managing an account after sign-up: profile, cars, sessions, password,
//! deletion, each through its typed result, on both backends.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

const UPDATE_PROFILE: &str = "mutation($input: UpdateProfileInput!) {
  updateProfile(input: $input) {
    __typename
    ... on UpdateProfileSuccess { user { id username email phone name surname secondName createdAt updatedAt } }
    ... on ValidationFailed { fields { field code message } }
    ... on RateLimited { retryAfter }
    ... on UserError { code message }
  }
}";

const ADD_CAR: &str = "mutation($input: CarInput!) {
  addCar(input: $input) {
    __typename
    ... on AddCarSuccess { car { id brand model year vin } }
    ... on ValidationFailed { fields { field code } }
    ... on UserError { code message }
  }
}";

const UPDATE_CAR: &str = "mutation($id: ID!, $input: CarInput!) {
  updateCar(id: $id, input: $input) {
    __typename
    ... on UpdateCarSuccess { car { id brand model year } }
    ... on ValidationFailed { fields { field code } }
    ... on UserError { code message }
  }
}";

const REMOVE_CAR: &str = "mutation($id: ID!) {
  removeCar(id: $id) { __typename ... on RemoveCarSuccess { removedCarId } ... on UserError { code message } }
}";

const CHANGE_PASSWORD: &str = "mutation($current: String!, $new: String!) {
  changePassword(currentPassword: $current, newPassword: $new) {
    __typename
    ... on ChangePasswordSuccess { auth { accessToken refreshToken tokenType expiresIn user { id username } } }
    ... on ValidationFailed { fields { field code } }
    ... on RateLimited { retryAfter }
    ... on UserError { code message }
  }
}";

const SESSIONS: &str =
    "{ me { sessions { id createdAt lastUsedAt userAgent clientAddress current } } }";

const REVOKE_SESSION: &str = "mutation($id: ID!) {
  revokeSession(id: $id) { __typename ... on RevokeSessionSuccess { revokedSessionId } ... on UserError { code message } }
}";

const SIGN_OUT_OTHERS: &str = "mutation {
  signOutOtherSessions { __typename ... on SignOutOtherSessionsSuccess { revokedCount } ... on UserError { code } }
}";

const DELETE_ACCOUNT: &str = "mutation($password: String!) {
  deleteAccount(password: $password) {
    __typename
    ... on DeleteAccountSuccess { deletedUserId }
    ... on ValidationFailed { fields { field code } }
    ... on UserError { code message }
  }
}";

pub fn token(payload: &Value) -> String {
    payload["accessToken"]
        .as_str()
        .expect("access token")
        .to_owned()
}

/// The union member a typed result came back as.
fn typename(result: &Value) -> &str {
    result["__typename"].as_str().unwrap_or("")
}

/// `(field, code)` pairs of a `ValidationFailed` result.
fn problems(result: &Value) -> Vec<(String, String)> {
    assert_eq!(typename(result), "ValidationFailed", "{result}");
    assert_eq!(result["code"], "VALIDATION");
    result["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| {
            (
                f["field"].as_str().expect("field").to_owned(),
                f["code"].as_str().expect("code").to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(f, c)| ((*f).to_owned(), (*c).to_owned()))
        .collect()
}

async fn update_profile(app: &TestApp, access: &str, input: Value) -> Value {
    let body = app
        .gql_as(Some(access), UPDATE_PROFILE, json!({ "input": input }))
        .await;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["updateProfile"].clone()
}

async fn profile_changes_follow_the_sign_up_rules(backend: Backend) {
    let clock = ManualClock::starting_now();
    let app = spawn_with_clock(backend, clock.clone(), |c| {
        c.phone_region = Some("RU".into());
    })
    .await;
    let ivan = app
        .sign_up_with(json!({
            "username": "ivan", "password": PASSWORD, "email": "ivan@example.com",
            "phone": "+79991234567", "name": "Ivan", "surname": "Petrov"
        }))
        .await;
    app.sign_up_with(
        json!({ "username": "maria", "password": PASSWORD, "email": "maria@example.com" }),
    )
    .await;
    let access = token(&ivan);
    clock.advance(Duration::from_secs(5));

    // Absent stays, null clears, values are normalised as at sign-up.
    let result = update_profile(
        &app,
        &access,
        json!({ "name": " Иван ", "surname": null, "phone": "8 (999) 765-43-21", "email": " Ivan.New@EXAMPLE.com " }),
    )
    .await;
    assert_eq!(typename(&result), "UpdateProfileSuccess", "{result}");
    let user = &result["user"];
    assert_eq!(user["name"], "Иван");
    assert_eq!(user["surname"], Value::Null);
    assert_eq!(user["phone"], "+79997654321");
    assert_eq!(user["email"], "Ivan.New@example.com");
    assert_eq!(user["secondName"], Value::Null);
    assert_ne!(user["updatedAt"], user["createdAt"], "updatedAt moves");
    let me = app.me(&access).await;
    assert_eq!(me["data"]["me"]["email"], "Ivan.New@example.com");

    // The old address is free, the new one signs in, the old one does not.
    assert!(app.create_token("ivan.new@example.com", PASSWORD).await["errors"].is_null());
    assert_eq!(
        error_code(&app.create_token("ivan@example.com", PASSWORD).await),
        "INVALID_CREDENTIALS"
    );
    app.sign_up_with(
        json!({ "username": "newcomer", "password": PASSWORD, "email": "IVAN@example.com" }),
    )
    .await;

    // Every broken rule at once, nothing written.
    let before = app.me(&access).await["data"]["me"].clone();
    let result = update_profile(
        &app,
        &access,
        json!({ "email": "not an address", "phone": "12", "name": "n".repeat(151), "secondName": "a\u{0}b" }),
    )
    .await;
    assert_eq!(
        problems(&result),
        pairs(&[
            ("email", "INVALID"),
            ("phone", "INVALID"),
            ("name", "TOO_LONG"),
            ("secondName", "INVALID"),
        ])
    );
    // An e-mail or username someone else has is TAKEN (one namespace),
    // reported with the other problems.
    let result = update_profile(
        &app,
        &access,
        json!({ "email": "MARIA@example.com", "phone": "12" }),
    )
    .await;
    assert_eq!(
        problems(&result),
        pairs(&[("phone", "INVALID"), ("email", "TAKEN")])
    );
    app.sign_up_with(json!({ "username": "who@example.com", "password": PASSWORD }))
        .await;
    let result = update_profile(&app, &access, json!({ "email": "WHO@example.com" })).await;
    assert_eq!(problems(&result), pairs(&[("email", "TAKEN")]));
    assert_eq!(app.me(&access).await["data"]["me"], before);

    // Not signed in: a top-level error, as for `me`.
    let body = app
        .gql(UPDATE_PROFILE, json!({ "input": { "name": "x" } }))
        .await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED");

    // The audit trail names the changed fields, never their values.
    let pool = app.db_pool().await;
    let details: Vec<String> = sqlx::query_scalar(
        "SELECT detail FROM security_events WHERE kind = 'profile_updated' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("events");
    assert_eq!(details, ["email,phone,name,surname"]);
    assert!(app
        .metrics()
        .await
        .contains("security_events_total{kind=\"profile_updated\"} 1"));
}

async fn concurrent_claims_of_one_email_give_one_owner(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut tokens = Vec::new();
    for i in 0..8 {
        tokens.push(token(&app.sign_up(&format!("racer{i}")).await));
    }
    let results = futures::future::join_all(
        tokens
            .iter()
            .map(|access| update_profile(&app, access, json!({ "email": "Prize@Example.com" }))),
    )
    .await;
    let won = results
        .iter()
        .filter(|r| typename(r) == "UpdateProfileSuccess")
        .count();
    assert_eq!(won, 1, "{results:?}");
    for lost in results
        .iter()
        .filter(|r| typename(r) != "UpdateProfileSuccess")
    {
        assert_eq!(problems(lost), pairs(&[("email", "TAKEN")]));
    }
    assert_eq!(
        app.count("users WHERE email_key = 'prize@example.com'")
            .await,
        1
    );
    assert_eq!(
        app.count("login_keys WHERE key = 'prize@example.com'")
            .await,
        1
    );
}

async fn cars_are_added_changed_and_removed_in_order_and_only_ones_own(backend: Backend) {
    let app = spawn_app(backend).await;
    let ivan = app
        .sign_up_with(json!({ "username": "ivan", "password": PASSWORD, "cars": [{ "brand": "Lada", "model": "Vesta" }] }))
        .await;
    let access = token(&ivan);
    let maria = app
        .sign_up_with(json!({ "username": "maria", "password": PASSWORD, "cars": [{ "brand": "Kia", "model": "Rio" }] }))
        .await;
    let marias_car = maria["user"]["cars"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let mut ids = Vec::new();
    for (brand, model) in [("BMW", "X5"), ("Audi", "A4")] {
        let body = app
            .gql_as(
                Some(&access),
                ADD_CAR,
                json!({ "input": { "brand": brand, "model": model, "vin": "xta21700000000001" } }),
            )
            .await;
        let result = &body["data"]["addCar"];
        assert_eq!(typename(result), "AddCarSuccess", "{body}");
        assert_eq!(result["car"]["vin"], "XTA21700000000001");
        ids.push(result["car"]["id"].as_str().expect("id").to_owned());
    }
    let body = app
        .gql_as(
            Some(&access),
            UPDATE_CAR,
            json!({ "id": ids[0], "input": { "brand": "BMW", "model": "X6", "year": 2020 } }),
        )
        .await;
    assert_eq!(body["data"]["updateCar"]["car"]["model"], "X6", "{body}");
    let body = app
        .gql_as(Some(&access), REMOVE_CAR, json!({ "id": ids[1] }))
        .await;
    assert_eq!(body["data"]["removeCar"]["removedCarId"], ids[1], "{body}");
    let body = app
        .gql_as(
            Some(&access),
            ADD_CAR,
            json!({ "input": { "brand": "Volvo", "model": "XC90" } }),
        )
        .await;
    assert_eq!(typename(&body["data"]["addCar"]), "AddCarSuccess");
    // Insertion order, with the changes.
    let me = app.me(&access).await;
    let cars: Vec<(String, String)> = me["data"]["me"]["cars"]
        .as_array()
        .expect("cars")
        .iter()
        .map(|c| {
            (
                c["brand"].as_str().expect("brand").to_owned(),
                c["model"].as_str().expect("model").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        cars,
        pairs(&[("Lada", "Vesta"), ("BMW", "X6"), ("Volvo", "XC90")])
    );

    // Another user's car, a removed one, garbage: all the same NotFound.
    for id in [
        marias_car.as_str(),
        ids[1].as_str(),
        "nope",
        "-1",
        "99999999999999999999",
    ] {
        for (query, name) in [(UPDATE_CAR, "updateCar"), (REMOVE_CAR, "removeCar")] {
            let body = app
                .gql_as(
                    Some(&access),
                    query,
                    json!({ "id": id, "input": { "brand": "Hack", "model": "Hack" } }),
                )
                .await;
            let result = &body["data"][name];
            assert_eq!(typename(result), "NotFound", "{body}");
            assert_eq!(result["code"], "NOT_FOUND");
            assert_eq!(result["message"], "no such car");
        }
    }
    let maria_me = app.me(&token(&maria)).await;
    assert_eq!(maria_me["data"]["me"]["cars"][0]["brand"], "Kia");

    // A broken car: every rule, under the car's own field names.
    let body = app
        .gql_as(
            Some(&access),
            ADD_CAR,
            json!({ "input": { "brand": " ", "model": "M", "year": 1800, "vin": "IOQ" } }),
        )
        .await;
    assert_eq!(
        problems(&body["data"]["addCar"]),
        pairs(&[
            ("brand", "FIELD_MISSING"),
            ("year", "OUT_OF_RANGE"),
            ("vin", "INVALID")
        ])
    );
    assert_eq!(app.count("cars").await, 4);
}

async fn concurrent_add_car_at_nineteen_gives_exactly_one_success(backend: Backend) {
    let app = spawn_app(backend).await;
    let cars: Vec<Value> = (0..19)
        .map(|i| json!({ "brand": "Lada", "model": format!("m{i}") }))
        .collect();
    let ivan = app
        .sign_up_with(json!({ "username": "collector", "password": PASSWORD, "cars": cars }))
        .await;
    let access = token(&ivan);
    let results = futures::future::join_all((0..10).map(|i| {
        app.gql_as(
            Some(&access),
            ADD_CAR,
            json!({ "input": { "brand": "Extra", "model": format!("x{i}") } }),
        )
    }))
    .await;
    let mut added = 0;
    for body in &results {
        let result = &body["data"]["addCar"];
        match typename(result) {
            "AddCarSuccess" => added += 1,
            _ => assert_eq!(problems(result), pairs(&[("cars", "TOO_LONG")]), "{body}"),
        }
    }
    assert_eq!(added, 1, "{results:?}");
    assert_eq!(app.count("cars").await, 20);
}

async fn a_password_change_ends_the_other_devices_and_keeps_this_one(backend: Backend) {
    let clock = ManualClock::starting_now();
    let app = spawn_with_clock(backend, clock.clone(), |c| {
        c.security.login_free_failures = 2
    })
    .await;
    let here = app
        .sign_up_with(
            json!({ "username": "ivan.petrov", "password": PASSWORD, "email": "ivan@example.com" }),
        )
        .await;
    let there = app.create_token("ivan.petrov", PASSWORD).await["data"]["createToken"].clone();
    let change = |current: &str, new: &str, access: String| {
        let vars = json!({ "current": current, "new": new });
        let app = &app;
        async move {
            let body = app.gql_as(Some(&access), CHANGE_PASSWORD, vars).await;
            assert!(body["errors"].is_null(), "{body}");
            body["data"]["changePassword"].clone()
        }
    };

    // The new password meets the sign-up rules, with the user's own data.
    let result = change(PASSWORD, "Ivan.Petrov1", token(&here)).await;
    assert_eq!(problems(&result), pairs(&[("newPassword", "TOO_SIMILAR")]));
    let result = change(PASSWORD, "password123", token(&here)).await;
    assert_eq!(problems(&result), pairs(&[("newPassword", "TOO_COMMON")]));
    let result = change("", "short", token(&here)).await;
    assert_eq!(
        problems(&result),
        pairs(&[
            ("currentPassword", "FIELD_MISSING"),
            ("newPassword", "TOO_SHORT")
        ])
    );
    let result = change(PASSWORD, PASSWORD, token(&here)).await;
    assert_eq!(problems(&result), pairs(&[("newPassword", "INVALID")]));

    // A wrong current password counts like a failed sign-in: after the
    // free failures, the account's back-off answers.
    let new_password = "a new and long passphrase";
    for _ in 0..2 {
        let result = change("wrong password!", new_password, token(&here)).await;
        assert_eq!(typename(&result), "InvalidCredentials", "{result}");
        assert_eq!(result["code"], "INVALID_CREDENTIALS");
    }
    let result = change("wrong password!", new_password, token(&here)).await;
    assert_eq!(typename(&result), "RateLimited", "{result}");
    assert!(result["retryAfter"].as_i64().expect("retryAfter") >= 1);
    // The streak is the account's, shared with sign-in from this address.
    assert_eq!(
        error_code(&app.create_token("ivan.petrov", PASSWORD).await),
        "RATE_LIMITED"
    );
    clock.advance(Duration::from_secs(2));
    // Nothing changed: the old password still signs in.
    assert!(app.create_token("ivan.petrov", PASSWORD).await["errors"].is_null());

    let result = change(PASSWORD, new_password, token(&here)).await;
    assert_eq!(typename(&result), "ChangePasswordSuccess", "{result}");
    let fresh = result["auth"].clone();
    assert_eq!(fresh["tokenType"], "Bearer");
    // The other device: access and refresh token end at once.
    assert_eq!(error_code(&app.me(&token(&there)).await), "UNAUTHENTICATED");
    assert_eq!(
        error_code(
            &app.refresh(there["refreshToken"].as_str().expect("rt"))
                .await
        ),
        "INVALID_REFRESH_TOKEN"
    );
    // This device goes on with the fresh pair; its old refresh token is dead.
    assert!(app.me(&token(&fresh)).await["errors"].is_null());
    assert_eq!(
        error_code(
            &app.refresh(here["refreshToken"].as_str().expect("rt"))
                .await
        ),
        "INVALID_REFRESH_TOKEN"
    );
    let refreshed = app
        .refresh(fresh["refreshToken"].as_str().expect("rt"))
        .await;
    assert!(refreshed["errors"].is_null(), "{refreshed}");
    // The old password no longer signs in, the new one does.
    assert_eq!(
        error_code(&app.create_token("ivan@example.com", PASSWORD).await),
        "INVALID_CREDENTIALS"
    );
    assert!(app.create_token("ivan@example.com", new_password).await["errors"].is_null());

    let pool = app.db_pool().await;
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT COALESCE(detail, '') FROM security_events WHERE kind = 'password_changed'",
    )
    .fetch_all(&pool)
    .await
    .expect("events");
    assert_eq!(events, ["other sessions revoked: 2"]);
    let all: Vec<String> =
        sqlx::query_scalar("SELECT COALESCE(detail, '') || kind FROM security_events")
            .fetch_all(&pool)
            .await
            .expect("events");
    assert!(!all
        .iter()
        .any(|e| e.contains(PASSWORD) || e.contains(new_password)));
}

async fn two_password_checks_in_one_document_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let access = token(&app.sign_up("doubler").await);
    let body = app
        .gql_as(
            Some(&access),
            "mutation { a: changePassword(currentPassword: \"x\", newPassword: \"y\") { __typename }
                        b: deleteAccount(password: \"z\") { __typename } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    assert!(body["data"].is_null());
}

async fn sessions_are_listed_and_ended_one_by_one_or_all_but_this(backend: Backend) {
    let clock = ManualClock::starting_now();
    let app = spawn_with_clock(backend, clock.clone(), |_| {}).await;
    let ua = |agent: &'static str| [("user-agent", agent)];
    let body = app
        .gql_with(
            None,
            &ua("Phone/1.0"),
            SIGN_UP,
            json!({ "input": { "username": "ivan", "password": PASSWORD } }),
        )
        .await;
    let phone = body["data"]["signUp"].clone();
    let mut others = Vec::new();
    for agent in ["Laptop/2.0", "Tablet/3.0"] {
        clock.advance(Duration::from_secs(60));
        let body = app
            .gql_with(
                None,
                &ua(agent),
                CREATE_TOKEN,
                json!({ "input": { "login": "ivan", "password": PASSWORD } }),
            )
            .await;
        others.push(body["data"]["createToken"].clone());
    }
    let (laptop, tablet) = (&others[0], &others[1]);
    // A refresh records where and with what the session was used last.
    clock.advance(Duration::from_secs(60));
    let body = app
        .gql_with(
            None,
            &ua("Tablet/3.1"),
            REFRESH,
            json!({ "token": tablet["refreshToken"] }),
        )
        .await;
    let tablet = body["data"]["refreshToken"].clone();

    let sessions = |access: String| {
        let app = &app;
        async move {
            let body = app.gql_as(Some(&access), SESSIONS, json!({})).await;
            assert!(body["errors"].is_null(), "{body}");
            body["data"]["me"]["sessions"]
                .as_array()
                .expect("sessions")
                .clone()
        }
    };
    let list = sessions(token(&phone)).await;
    let agents: Vec<&str> = list
        .iter()
        .map(|s| s["userAgent"].as_str().expect("ua"))
        .collect();
    assert_eq!(
        agents,
        ["Tablet/3.1", "Laptop/2.0", "Phone/1.0"],
        "most recent first"
    );
    let current: Vec<bool> = list
        .iter()
        .map(|s| s["current"].as_bool().expect("bool"))
        .collect();
    assert_eq!(current, [false, false, true]);
    assert!(list.iter().all(|s| s["clientAddress"] == "127.0.0.1"));
    assert_ne!(list[0]["lastUsedAt"], list[0]["createdAt"]);
    assert_eq!(list[1]["lastUsedAt"], list[1]["createdAt"]);
    let laptop_id = list[1]["id"].as_str().expect("id").to_owned();

    // Ending the laptop's session stops its access token at once.
    let body = app
        .gql_as(
            Some(&token(&phone)),
            REVOKE_SESSION,
            json!({ "id": laptop_id }),
        )
        .await;
    assert_eq!(
        body["data"]["revokeSession"]["revokedSessionId"], laptop_id,
        "{body}"
    );
    assert_eq!(error_code(&app.me(&token(laptop)).await), "UNAUTHENTICATED");
    assert_eq!(
        error_code(
            &app.refresh(laptop["refreshToken"].as_str().expect("rt"))
                .await
        ),
        "INVALID_REFRESH_TOKEN"
    );
    // Ended already, someone else's, or no id at all: NotFound.
    let maria = app.sign_up("maria").await;
    let marias = sessions(token(&maria)).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for id in [laptop_id.as_str(), marias.as_str(), "not-a-uuid", ""] {
        let body = app
            .gql_as(Some(&token(&phone)), REVOKE_SESSION, json!({ "id": id }))
            .await;
        assert_eq!(
            typename(&body["data"]["revokeSession"]),
            "NotFound",
            "{body}"
        );
    }
    assert!(app.me(&token(&maria)).await["errors"].is_null());

    // All but this one: the tablet ends, the phone goes on.
    let body = app
        .gql_as(Some(&token(&phone)), SIGN_OUT_OTHERS, json!({}))
        .await;
    assert_eq!(
        body["data"]["signOutOtherSessions"]["revokedCount"], 1,
        "{body}"
    );
    assert_eq!(
        error_code(&app.me(&token(&tablet)).await),
        "UNAUTHENTICATED"
    );
    assert!(app.me(&token(&phone)).await["errors"].is_null());
    let list = sessions(token(&phone)).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["current"], true);
    assert_eq!(
        app.count("security_events WHERE kind = 'session_revoked'")
            .await,
        2
    );
}

async fn deleting_an_account_frees_its_names_and_ends_its_tokens(backend: Backend) {
    let app = spawn_app(backend).await;
    let ivan = app
        .sign_up_with(json!({
            "username": "ivan", "password": PASSWORD, "email": "ivan@example.com",
            "cars": [{ "brand": "Lada", "model": "Vesta" }]
        }))
        .await;
    let keep = app.sign_up("maria").await;
    let access = token(&ivan);
    let user_id = ivan["user"]["id"].as_str().expect("id").to_owned();

    for (password, arm) in [
        ("wrong password", "InvalidCredentials"),
        ("", "ValidationFailed"),
    ] {
        let body = app
            .gql_as(
                Some(&access),
                DELETE_ACCOUNT,
                json!({ "password": password }),
            )
            .await;
        assert_eq!(typename(&body["data"]["deleteAccount"]), arm, "{body}");
    }
    assert!(app.me(&access).await["errors"].is_null(), "nothing deleted");

    let body = app
        .gql_as(
            Some(&access),
            DELETE_ACCOUNT,
            json!({ "password": PASSWORD }),
        )
        .await;
    assert_eq!(
        body["data"]["deleteAccount"]["deletedUserId"], user_id,
        "{body}"
    );
    assert_eq!(error_code(&app.me(&access).await), "UNAUTHENTICATED");
    assert_eq!(
        error_code(
            &app.refresh(ivan["refreshToken"].as_str().expect("rt"))
                .await
        ),
        "INVALID_REFRESH_TOKEN"
    );
    assert_eq!(
        error_code(&app.create_token("ivan", PASSWORD).await),
        "INVALID_CREDENTIALS"
    );
    // Every row of the user is gone; the audit trail keeps the id only.
    let id: i64 = user_id.parse().expect("numeric id");
    for table in [
        "users WHERE id",
        "cars WHERE user_id",
        "sessions WHERE user_id",
        "login_keys WHERE user_id",
        "avatars WHERE user_id",
    ] {
        assert_eq!(app.count(&format!("{table} = {id}")).await, 0, "{table}");
    }
    let pool = app.db_pool().await;
    let (event_user, detail): (Option<i64>, Option<String>) = sqlx::query_as(
        "SELECT user_id, detail FROM security_events WHERE kind = 'account_deleted'",
    )
    .fetch_one(&pool)
    .await
    .expect("event");
    assert_eq!((event_user, detail), (Some(id), None));
    // The username and e-mail are free again; the other user is untouched.
    app.sign_up_with(
        json!({ "username": "IVAN", "password": PASSWORD, "email": "ivan@example.com" }),
    )
    .await;
    assert!(app.me(&token(&keep)).await["errors"].is_null());
    assert!(app
        .metrics()
        .await
        .contains("security_events_total{kind=\"account_deleted\"} 1"));
}

async fn every_account_change_counts_against_the_address_limit_under_load(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.security.rate_account = "5/10m".parse().expect("limit");
    })
    .await;
    let access = token(&app.sign_up("busy").await);
    let results = futures::future::join_all((0..20).map(|i| {
        let access = access.clone();
        let app = &app;
        async move {
            let query = if i % 2 == 0 { UPDATE_PROFILE } else { ADD_CAR };
            let input = if i % 2 == 0 {
                json!({ "name": format!("n{i}") })
            } else {
                json!({ "brand": "B", "model": format!("m{i}") })
            };
            app.gql_as(Some(&access), query, json!({ "input": input }))
                .await
        }
    }))
    .await;
    let arms: Vec<String> = results
        .iter()
        .map(|body| {
            let data = &body["data"];
            let result = if data["updateProfile"].is_null() {
                &data["addCar"]
            } else {
                &data["updateProfile"]
            };
            typename(result).to_owned()
        })
        .collect();
    let limited = arms.iter().filter(|a| *a == "RateLimited").count();
    assert_eq!(limited, 15, "{arms:?}");
    // Each admitted change wrote its event; a refused one wrote nothing.
    assert_eq!(
        app.count("security_events WHERE kind = 'profile_updated'")
            .await,
        5
    );
    let body = app.gql_as(Some(&access), SIGN_OUT_OTHERS, json!({})).await;
    assert_eq!(
        typename(&body["data"]["signOutOtherSessions"]),
        "RateLimited"
    );
}

async fn new_mutations_without_a_valid_token_fail_at_the_top_level(backend: Backend) {
    let app = spawn_app(backend).await;
    for (query, variables) in [
        (UPDATE_PROFILE, json!({ "input": {} })),
        (ADD_CAR, json!({ "input": { "brand": "a", "model": "b" } })),
        (
            UPDATE_CAR,
            json!({ "id": "1", "input": { "brand": "a", "model": "b" } }),
        ),
        (REMOVE_CAR, json!({ "id": "1" })),
        (CHANGE_PASSWORD, json!({ "current": "a", "new": "b" })),
        (REVOKE_SESSION, json!({ "id": "1" })),
        (SIGN_OUT_OTHERS, json!({})),
        (DELETE_ACCOUNT, json!({ "password": "x" })),
        ("mutation { removeAvatar { __typename } }", json!({})),
    ] {
        for token in [None, Some("not.a.token")] {
            let body = app.gql_as(token, query, variables.clone()).await;
            assert_eq!(error_code(&body), "UNAUTHENTICATED", "{query}: {body}");
        }
    }
}

crate::on_both_backends!(
    profile_changes_follow_the_sign_up_rules,
    concurrent_claims_of_one_email_give_one_owner,
    cars_are_added_changed_and_removed_in_order_and_only_ones_own,
    concurrent_add_car_at_nineteen_gives_exactly_one_success,
    a_password_change_ends_the_other_devices_and_keeps_this_one,
    two_password_checks_in_one_document_are_refused,
    sessions_are_listed_and_ended_one_by_one_or_all_but_this,
    deleting_an_account_frees_its_names_and_ends_its_tokens,
    every_account_change_counts_against_the_address_limit_under_load,
    new_mutations_without_a_valid_token_fail_at_the_top_level,
);
