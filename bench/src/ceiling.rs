//! The ceiling for `me`: the same essential work without a GraphQL engine.
//! Verify the HS256 access token (same checks: alg, typ, kid-free lookup,
//! iss, aud, exp), load the user and their cars from the same database
//! (the SQLite file, or the PostgreSQL database, with a pool of the same
//! size), answer JSON. Whatever authql spends beyond this is the price of its
//! layers (GraphQL parsing, validation, execution, DataLoader, policy).

use std::net::SocketAddr;
use std::str::FromStr;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

#[derive(clap::Parser, Clone)]
pub struct Args {
    #[arg(long)]
    database_url: String,
    /// The HS256 secret authql signs with (AUTHQL_JWT_SECRET).
    #[arg(long)]
    secret: String,
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    #[arg(long, default_value_t = 10)]
    max_connections: u32,
    /// Skip the session/revocation check (read the user by id only), to
    /// measure what authql's per-request revocation check costs.
    #[arg(long)]
    no_session_check: bool,
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[derive(Clone)]
struct Ceiling {
    session_check: bool,
    pool: Pool,
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    sid: String,
    iat: i64,
}

pub fn serve(args: Args) -> anyhow::Result<()> {
    // Same runtime shape as authql: multi-threaded, one worker per core.
    tokio::runtime::Runtime::new()?.block_on(async move {
        let pool = if args.database_url.starts_with("postgres") {
            // Same pool size as authql's (AUTHQL_DB_MAX_CONNECTIONS).
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(args.max_connections)
                    .connect(&args.database_url)
                    .await?,
            )
        } else {
            let options = SqliteConnectOptions::from_str(&args.database_url)?
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .foreign_keys(true);
            // Same pool settings as authql's SQLite store.
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(args.max_connections)
                    .connect_with(options)
                    .await?,
            )
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&["authql"]);
        validation.set_audience(&["authql"]);
        validation.leeway = 0;
        let state = Ceiling {
            session_check: !args.no_session_check,
            pool,
            key: DecodingKey::from_secret(args.secret.as_bytes())?,
            validation,
        };
        let app = Router::new().route("/me", post(me)).with_state(state);
        let listener = tokio::net::TcpListener::bind(args.bind).await?;
        println!("listening {}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// A session id as PostgreSQL's `uuid` column takes it (hyphenated text).
fn uuid_of(sid: &str) -> Option<&str> {
    (sid.len() == 36).then_some(sid)
}

async fn me(
    State(c): State<Ceiling>,
    headers: HeaderMap,
    _body: axum::body::Bytes,
) -> Result<Json<Value>, StatusCode> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let header = jsonwebtoken::decode_header(token).map_err(|_| StatusCode::UNAUTHORIZED)?;
    if header.typ.as_deref() != Some("at+jwt") {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let claims = jsonwebtoken::decode::<Claims>(token, &c.key, &c.validation)
        .map_err(|_| StatusCode::UNAUTHORIZED)?
        .claims;
    let user_id: i64 = claims.sub.parse().map_err(|_| StatusCode::UNAUTHORIZED)?;
    // The same two reads authql makes: the user with a live session, then
    // cars; the SQL of each backend as authql's store writes it.
    type UserRow = (i64, String, Option<String>);
    type CarRow = (String, String, Option<i32>);
    const CARS: &str =
        "SELECT brand, model, year FROM cars WHERE user_id IN ($1) ORDER BY user_id, position";
    const BY_ID: &str = "SELECT u.id, u.username, u.email FROM users u WHERE u.id = $1";
    let error = |_| StatusCode::INTERNAL_SERVER_ERROR;
    let (user, cars): (Option<UserRow>, Vec<CarRow>) = match &c.pool {
        Pool::Sqlite(pool) => {
            let user = if c.session_check {
                sqlx::query_as(
                    "SELECT u.id, u.username, u.email FROM users u JOIN sessions s ON s.user_id = u.id
                     WHERE u.id = $1 AND s.id = $2 AND s.revoked_at IS NULL
                       AND (u.tokens_valid_after IS NULL OR u.tokens_valid_after <= $3)",
                )
                .bind(user_id)
                .bind(&claims.sid)
                .bind(claims.iat * 1000)
                .fetch_optional(pool)
                .await
            } else {
                sqlx::query_as(BY_ID).bind(user_id).fetch_optional(pool).await
            }
            .map_err(error)?;
            let cars = sqlx::query_as(CARS)
                .bind(user_id)
                .fetch_all(pool)
                .await
                .map_err(error)?;
            (user, cars)
        }
        Pool::Postgres(pool) => {
            let sid = uuid_of(&claims.sid).ok_or(StatusCode::UNAUTHORIZED)?;
            let user = if c.session_check {
                sqlx::query_as(
                    "SELECT u.id, u.username, u.email FROM users u JOIN sessions s ON s.user_id = u.id
                     WHERE u.id = $1 AND s.id = $2::text::uuid AND s.revoked_at IS NULL
                       AND (u.tokens_valid_after IS NULL
                            OR u.tokens_valid_after <= to_timestamp($3::bigint))",
                )
                .bind(user_id)
                .bind(sid)
                .bind(claims.iat)
                .fetch_optional(pool)
                .await
            } else {
                sqlx::query_as(BY_ID).bind(user_id).fetch_optional(pool).await
            }
            .map_err(error)?;
            let cars = sqlx::query_as(CARS)
                .bind(user_id)
                .fetch_all(pool)
                .await
                .map_err(error)?;
            (user, cars)
        }
    };
    let (id, username, email) = user.ok_or(StatusCode::UNAUTHORIZED)?;
    let cars: Vec<Value> = cars
        .into_iter()
        .map(|(brand, model, year)| json!({ "brand": brand, "model": model, "year": year }))
        .collect();
    Ok(Json(
        json!({ "data": { "me": { "id": id.to_string(), "username": username, "email": email, "cars": cars } } }),
    ))
}
