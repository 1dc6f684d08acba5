//! A typed client generated from the committed schema.graphql with
//! graphql_client, as a frontend team would generate one, run against the
//! live server: signUp -> createToken -> me -> refreshToken.

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

crate::on_both_backends!(generated_client_signs_up_signs_in_reads_me_and_refreshes,);
