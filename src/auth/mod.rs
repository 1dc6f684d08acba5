//! Credentials: passwords (argon2id, off the executor) and tokens (JWT access
//! tokens, opaque rotating refresh tokens), plus where their keys come from.

pub mod password;
pub mod tokens;

pub use password::{PasswordHasher, Verified};
pub use tokens::{SigningKey, TokenService};

use crate::config::TokenConfig;
use crate::storage::Store;

/// settings keys of the generated secrets.
const GENERATED_JWT_KEY: &str = "jwt_hs256_key";
const GENERATED_REFRESH_KEY: &str = "refresh_token_key";

/// The access-token signing key and the refresh-token derivation key.
///
/// `AUTHQL_JWT_SECRET`, when set, is the HMAC key as given (its UTF-8 bytes).
/// Otherwise a 256-bit key is generated on first start and kept in the
/// database: the first instance to insert it wins, every other instance (and
/// every restart) reads that same key.
pub async fn load_keys(
    store: &dyn Store,
    config: &TokenConfig,
) -> anyhow::Result<(SigningKey, Vec<u8>)> {
    let signing = match &config.jwt_secret {
        Some(secret) => secret.expose().as_bytes().to_vec(),
        None => stored_key(store, GENERATED_JWT_KEY).await?,
    };
    let refresh = stored_key(store, GENERATED_REFRESH_KEY).await?;
    Ok((SigningKey::hs256(signing), refresh))
}

async fn stored_key(store: &dyn Store, name: &str) -> anyhow::Result<Vec<u8>> {
    let value = store
        .setting_or_insert(name, &tokens::random_key_b64())
        .await?;
    tokens::decode_key_b64(&value).ok_or_else(|| {
        anyhow::anyhow!("the stored {name} is not a base64 key of at least 32 bytes")
    })
}
