use serde_json::{json, Value};

use crate::helpers::*;

async fn sign_up_returns_a_token_pair_the_user_and_cars_in_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let payload = app
        .sign_up_with(json!({
            "username": "Ivan.Petrov",
            "password": PASSWORD,
            "email": "  Ivan.Petrov@Example.COM ",
            "phone": "+7 (999) 123-45-67",
            "name": " Иван ",
            "surname": "Петров",
            "secondName": "Сергеевич",
            "cars": [
                { "brand": "Lada", "model": "Vesta", "year": 2021, "color": "white",
                  "licensePlate": "A123BC77", "vin": "xta21700000000001" },
                { "brand": "BMW", "model": "X5" },
                { "brand": "Audi", "model": "A4", "year": 2010 }
            ]
        }))
        .await;
    assert_eq!(payload["tokenType"], "Bearer");
    assert_eq!(payload["expiresIn"], 900);
    assert!(
        payload["accessToken"]
            .as_str()
            .expect("access")
            .split('.')
            .count()
            == 3
    );
    assert!(payload["refreshToken"].as_str().expect("refresh").len() >= 43);
    let user = &payload["user"];
    assert_eq!(user["username"], "Ivan.Petrov");
    assert_eq!(user["email"], "Ivan.Petrov@example.com");
    assert_eq!(user["phone"], "+79991234567");
    assert_eq!(user["name"], "Иван");
    assert_eq!(user["secondName"], "Сергеевич");
    let created = user["createdAt"].as_str().expect("createdAt");
    assert!(
        created.ends_with('Z') && created.len() == 20,
        "RFC 3339 UTC: {created}"
    );
    let cars = user["cars"].as_array().expect("cars");
    let brands: Vec<&str> = cars
        .iter()
        .map(|c| c["brand"].as_str().expect("brand"))
        .collect();
    assert_eq!(brands, ["Lada", "BMW", "Audi"]);
    assert_eq!(cars[0]["vin"], "XTA21700000000001");
    assert_eq!(cars[0]["licensePlate"], "A123BC77");
    assert_eq!(cars[1]["year"], Value::Null);

    // `me` sees the same user and cars.
    let me = app
        .me(payload["accessToken"].as_str().expect("token"))
        .await;
    assert_eq!(me["data"]["me"], *user);

    // Stored: an argon2id PHC string, never the password; only token hashes.
    let pool = app.db_pool().await;
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(&pool)
        .await
        .expect("hash");
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(!hash.contains(PASSWORD));
    let refresh = payload["refreshToken"].as_str().expect("refresh");
    let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM refresh_tokens")
        .fetch_all(&pool)
        .await
        .expect("hashes");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].len(), 32, "SHA-256, not the token");
    assert!(!String::from_utf8_lossy(&rows[0]).contains(refresh));
}

/// One input per rule; each must produce exactly the expected (field, code).
async fn every_validation_rule_has_its_code(backend: Backend) {
    let app = spawn_app(backend).await;
    let base = || json!({ "username": "valid_user", "password": PASSWORD });
    let with = |key: &str, value: Value| {
        let mut input = base();
        input[key] = value;
        input
    };
    let car = |fields: Value| {
        let mut c = json!({ "brand": "Lada", "model": "Vesta" });
        for (k, v) in fields.as_object().expect("object") {
            c[k] = v.clone();
        }
        with("cars", json!([c]))
    };
    let next_year = chrono::Utc::now()
        .format("%Y")
        .to_string()
        .parse::<i32>()
        .expect("year")
        + 1;
    let cases: Vec<(Value, &str, &str)> = vec![
        (with("username", json!("")), "username", "FIELD_MISSING"),
        (with("username", json!("ab")), "username", "TOO_SHORT"),
        (
            with("username", json!("a".repeat(151))),
            "username",
            "TOO_LONG",
        ),
        (
            with("username", json!("white space")),
            "username",
            "INVALID",
        ),
        (with("username", json!("emoji🙂")), "username", "INVALID"),
        (with("password", json!("")), "password", "FIELD_MISSING"),
        (with("password", json!("Zq8#x")), "password", "TOO_SHORT"),
        (
            with("password", json!("x".repeat(257))),
            "password",
            "TOO_LONG",
        ),
        (
            with("password", json!("Password123")),
            "password",
            "TOO_COMMON",
        ),
        (
            with("password", json!("valid_user1")),
            "password",
            "TOO_SIMILAR",
        ),
        (with("email", json!("not-an-address")), "email", "INVALID"),
        (
            with("email", json!(format!("{}@example.com", "a".repeat(250)))),
            "email",
            "TOO_LONG",
        ),
        (with("phone", json!("+7 123")), "phone", "INVALID"),
        (with("phone", json!("89991234567")), "phone", "INVALID"),
        (with("name", json!("n".repeat(151))), "name", "TOO_LONG"),
        (
            with("surname", json!("s".repeat(151))),
            "surname",
            "TOO_LONG",
        ),
        (
            with("secondName", json!("p".repeat(151))),
            "secondName",
            "TOO_LONG",
        ),
        (
            car(json!({ "brand": "  " })),
            "cars[0].brand",
            "FIELD_MISSING",
        ),
        (
            car(json!({ "model": "m".repeat(65) })),
            "cars[0].model",
            "TOO_LONG",
        ),
        (car(json!({ "year": 1885 })), "cars[0].year", "OUT_OF_RANGE"),
        (
            car(json!({ "year": next_year + 1 })),
            "cars[0].year",
            "OUT_OF_RANGE",
        ),
        (
            car(json!({ "vin": "1HGCM82633A00435" })),
            "cars[0].vin",
            "INVALID",
        ),
        (
            car(json!({ "vin": "1HGCM82633A00435I" })),
            "cars[0].vin",
            "INVALID",
        ),
        (
            car(json!({ "licensePlate": "p".repeat(17) })),
            "cars[0].licensePlate",
            "TOO_LONG",
        ),
        (
            with(
                "cars",
                json!(vec![json!({ "brand": "B", "model": "M" }); 21]),
            ),
            "cars",
            "TOO_LONG",
        ),
    ];
    for (input, field, code) in cases {
        let body = app.gql(SIGN_UP, json!({ "input": input })).await;
        assert_eq!(
            field_codes(&body),
            vec![(field.to_owned(), code.to_owned())],
            "input {input}"
        );
        assert!(body["data"].is_null(), "nothing returned on failure");
    }
    // Edge values that are allowed.
    app.sign_up_with(json!({
        "username": "й".repeat(150), "password": "ж".repeat(256),
        "cars": [{ "brand": "Benz", "model": "Patent-Motorwagen", "year": 1886 },
                 { "brand": "Future", "model": "Car", "year": next_year }]
    }))
    .await;
    assert_eq!(
        app.count("users").await,
        1,
        "nothing was stored by refused sign-ups"
    );
    assert_eq!(app.count("cars").await, 2);
}

async fn all_problems_come_back_in_one_response(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up_with(
        json!({ "username": "taken", "password": PASSWORD, "email": "taken@example.com" }),
    )
    .await;
    let body = app
        .gql(
            SIGN_UP,
            json!({ "input": {
                "username": "TAKEN", "password": "123", "email": "Taken@Example.com",
                "phone": "garbage", "cars": [{ "brand": "", "model": "M", "vin": "short" },
                                              { "brand": "B", "model": "M", "year": 3000 }]
            }}),
        )
        .await;
    let mut got = field_codes(&body);
    got.sort();
    let mut expected: Vec<(String, String)> = [
        ("username", "TAKEN"),
        ("email", "TAKEN"),
        ("password", "TOO_SHORT"),
        ("password", "TOO_COMMON"),
        ("phone", "INVALID"),
        ("cars[0].brand", "FIELD_MISSING"),
        ("cars[0].vin", "INVALID"),
        ("cars[1].year", "OUT_OF_RANGE"),
    ]
    .iter()
    .map(|(f, c)| ((*f).to_owned(), (*c).to_owned()))
    .collect();
    expected.sort();
    assert_eq!(got, expected);
}

async fn usernames_and_emails_are_unique_with_unicode_case_folding(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up_with(
        json!({ "username": "Иван", "password": PASSWORD, "email": "Ivan@Example.com" }),
    )
    .await;
    for (username, email, field) in [
        ("иван", None, "username"),
        ("ИВАН", None, "username"),
        ("someone", Some("ivan@example.COM"), "email"),
        ("someone", Some("IVAN@example.com"), "email"),
    ] {
        let mut input = json!({ "username": username, "password": PASSWORD });
        if let Some(email) = email {
            input["email"] = json!(email);
        }
        let body = app.gql(SIGN_UP, json!({ "input": input })).await;
        assert_eq!(
            field_codes(&body),
            vec![(field.to_owned(), "TAKEN".to_owned())]
        );
    }
    // Stored as given.
    let pool = app.db_pool().await;
    let name: String = sqlx::query_scalar("SELECT username FROM users")
        .fetch_one(&pool)
        .await
        .expect("username");
    assert_eq!(name, "Иван");
}

async fn twenty_parallel_sign_ups_of_one_username_yield_exactly_one_user(backend: Backend) {
    let app = spawn_app(backend).await;
    let attempts = (0..20).map(|i| {
        app.gql(
            SIGN_UP,
            json!({ "input": {
                "username": if i % 2 == 0 { "Racer" } else { "racer" },
                "password": PASSWORD,
                "cars": [{ "brand": "B", "model": "M" }, { "brand": "C", "model": "N" }]
            }}),
        )
    });
    let results = futures::future::join_all(attempts).await;
    let mut ok = 0;
    for body in &results {
        match error_code(body).as_str() {
            "" => ok += 1,
            "VALIDATION" => {
                assert_eq!(field_codes(body), vec![("username".into(), "TAKEN".into())])
            }
            other => panic!("unexpected code {other}: {body}"),
        }
    }
    assert_eq!(ok, 1, "exactly one sign-up wins");
    assert_eq!(app.count("users").await, 1);
    assert_eq!(app.count("cars").await, 2, "losers left no cars behind");
    assert_eq!(app.count("sessions").await, 1);
}

async fn national_phone_numbers_use_the_configured_region(backend: Backend) {
    let app = spawn_with(backend, |c| c.phone_region = Some("RU".into())).await;
    let payload = app
        .sign_up_with(
            json!({ "username": "phoned", "password": PASSWORD, "phone": "8 (999) 123-45-67" }),
        )
        .await;
    assert_eq!(payload["user"]["phone"], "+79991234567");
}

crate::on_both_backends!(
    sign_up_returns_a_token_pair_the_user_and_cars_in_order,
    every_validation_rule_has_its_code,
    all_problems_come_back_in_one_response,
    usernames_and_emails_are_unique_with_unicode_case_folding,
    twenty_parallel_sign_ups_of_one_username_yield_exactly_one_user,
    national_phone_numbers_use_the_configured_region,
);
