//! A typed client generated from the committed schema.graphql with
//! graphql_client, as a frontend team would generate one, run against the
//! live server: signUp -> createToken -> me -> refreshToken, and the
//! typed results of the account mutations, matched exhaustively so that a
//! new arm in schema.graphql fails to compile here before it surprises a
//! client.

use graphql_client::{GraphQLQuery, Response};

use crate::helpers::*;

/// The contract's DateTime scalar arrives as an RFC 3339 string.
type DateTime = String;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schema.graphql",
    query_path = "tests/queries/sign_up.graphql",
    response_derives = "Debug"
)]
struct SignUp;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schema.graphql",
    query_path = "tests/queries/create_token.graphql",
    response_derives = "Debug"
)]
struct CreateToken;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schema.graphql",
    query_path = "tests/queries/me.graphql",
    response_derives = "Debug"
)]
struct Me;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schema.graphql",
    query_path = "tests/queries/refresh_token.graphql",
    response_derives = "Debug"
)]
struct RefreshToken;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schema.graphql",
    query_path = "tests/queries/update_profile.graphql",
    response_derives = "Debug"
)]
struct UpdateProfile;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schema.graphql",
    query_path = "tests/queries/change_password.graphql",
    response_derives = "Debug"
)]
struct ChangePassword;

async fn run<Q: GraphQLQuery>(
    app: &TestApp,
    token: Option<&str>,
    variables: Q::Variables,
) -> Q::ResponseData
where
    Q::ResponseData: std::fmt::Debug,
{
    let mut request = app
        .client
        .post(app.url("/graphql"))
        .json(&Q::build_query(variables));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response: Response<Q::ResponseData> = request
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("typed JSON");
    assert!(response.errors.is_none(), "{:?}", response.errors);
    response.data.expect("data")
}

async fn generated_client_signs_up_signs_in_reads_me_and_refreshes(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed_up = run::<SignUp>(
        &app,
        None,
        sign_up::Variables {
            input: sign_up::SignUpInput {
                username: "typed".into(),
                password: PASSWORD.into(),
                email: Some("typed@example.com".into()),
                phone: None,
                name: None,
                surname: None,
                second_name: None,
                cars: Some(vec![sign_up::CarInput {
                    brand: "Lada".into(),
                    model: "Niva".into(),
                    year: Some(1977),
                    color: None,
                    license_plate: None,
                    vin: None,
                }]),
            },
        },
    )
    .await
    .sign_up;
    assert_eq!(signed_up.token_type, "Bearer");
    assert_eq!(signed_up.user.cars[0].year, Some(1977));

    let signed_in = run::<CreateToken>(
        &app,
        None,
        create_token::Variables {
            input: create_token::CreateTokenInput {
                login: "TYPED@example.com".into(),
                password: PASSWORD.into(),
            },
        },
    )
    .await
    .create_token;
    assert_eq!(signed_in.user.id, signed_up.user.id);

    let me = run::<Me>(&app, Some(&signed_in.access_token), me::Variables)
        .await
        .me;
    assert_eq!(me.username, "typed");
    assert_eq!(me.cars.len(), 1);
    assert!(me.created_at.ends_with('Z'));

    let refreshed = run::<RefreshToken>(
        &app,
        None,
        refresh_token::Variables {
            refresh_token: signed_in.refresh_token.clone(),
        },
    )
    .await
    .refresh_token;
    assert_ne!(refreshed.refresh_token, signed_in.refresh_token);
    assert_eq!(refreshed.user.username, "typed");
}

/// What a client makes of `updateProfile`: every arm named, no wildcard.
#[derive(Debug, PartialEq)]
enum ProfileOutcome {
    Saved {
        email: Option<String>,
        name: Option<String>,
    },
    Invalid(Vec<(String, String)>),
    Wait(i64),
}

async fn update_profile(
    app: &TestApp,
    token: &str,
    input: update_profile::UpdateProfileInput,
) -> ProfileOutcome {
    use update_profile::UpdateProfileUpdateProfile as Result;
    match run::<UpdateProfile>(app, Some(token), update_profile::Variables { input })
        .await
        .update_profile
    {
        Result::UpdateProfileSuccess(success) => {
            assert!(success.user.updated_at.ends_with('Z'));
            ProfileOutcome::Saved {
                email: success.user.email,
                name: success.user.name,
            }
        }
        Result::ValidationFailed(failed) => {
            assert_eq!(failed.code, "VALIDATION");
            assert!(!failed.message.is_empty());
            ProfileOutcome::Invalid(
                failed
                    .fields
                    .into_iter()
                    .map(|field| (field.field, field.code))
                    .collect(),
            )
        }
        Result::RateLimited(limited) => {
            assert_eq!(limited.code, "RATE_LIMITED");
            ProfileOutcome::Wait(limited.retry_after)
        }
    }
}

/// What a client makes of `changePassword`: every arm named, no wildcard.
#[derive(Debug, PartialEq)]
enum PasswordOutcome {
    Changed { access_token: String },
    Invalid(Vec<(String, String)>),
    WrongPassword,
    Wait(i64),
}

async fn change_password(app: &TestApp, token: &str, current: &str, new: &str) -> PasswordOutcome {
    use change_password::ChangePasswordChangePassword as Result;
    let variables = change_password::Variables {
        current_password: current.into(),
        new_password: new.into(),
    };
    match run::<ChangePassword>(app, Some(token), variables)
        .await
        .change_password
    {
        Result::ChangePasswordSuccess(success) => {
            assert!(!success.auth.refresh_token.is_empty());
            PasswordOutcome::Changed {
                access_token: success.auth.access_token,
            }
        }
        Result::ValidationFailed(failed) => {
            assert_eq!(failed.code, "VALIDATION");
            PasswordOutcome::Invalid(
                failed
                    .fields
                    .into_iter()
                    .map(|field| (field.field, field.code))
                    .collect(),
            )
        }
        Result::InvalidCredentials(wrong) => {
            assert_eq!(wrong.code, "INVALID_CREDENTIALS");
            PasswordOutcome::WrongPassword
        }
        Result::RateLimited(limited) => {
            assert_eq!(limited.code, "RATE_LIMITED");
            PasswordOutcome::Wait(limited.retry_after)
        }
    }
}

fn profile_input(email: Option<&str>, name: Option<&str>) -> update_profile::UpdateProfileInput {
    update_profile::UpdateProfileInput {
        email: email.map(Into::into),
        phone: None,
        name: name.map(Into::into),
        surname: None,
        second_name: None,
    }
}

async fn generated_client_matches_every_arm_of_the_account_results(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.security.rate_account = "5/10m".parse().expect("limit");
    })
    .await;
    let access = app.sign_up("typed_results").await["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();

    assert_eq!(
        update_profile(
            &app,
            &access,
            profile_input(Some("new@example.com"), Some("Ann"))
        )
        .await,
        ProfileOutcome::Saved {
            email: Some("new@example.com".into()),
            name: Some("Ann".into()),
        }
    );
    assert_eq!(
        update_profile(&app, &access, profile_input(Some("not an e-mail"), None)).await,
        ProfileOutcome::Invalid(vec![("email".into(), "INVALID".into())])
    );
    assert_eq!(
        change_password(&app, &access, "not my password", "a brand new passphrase").await,
        PasswordOutcome::WrongPassword
    );
    assert_eq!(
        change_password(&app, &access, PASSWORD, "short").await,
        PasswordOutcome::Invalid(vec![("newPassword".into(), "TOO_SHORT".into())])
    );
    let PasswordOutcome::Changed { access_token } =
        change_password(&app, &access, PASSWORD, "a brand new passphrase").await
    else {
        panic!("the password change should succeed");
    };
    // The sixth account change from this address within ten minutes.
    match update_profile(&app, &access_token, profile_input(None, Some("Bo"))).await {
        ProfileOutcome::Wait(seconds) => assert!(seconds > 0 && seconds <= 600, "{seconds}"),
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

crate::on_both_backends!(
    generated_client_signs_up_signs_in_reads_me_and_refreshes,
    generated_client_matches_every_arm_of_the_account_results,
);
