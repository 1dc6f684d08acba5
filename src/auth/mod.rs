//! Credentials: passwords (argon2id, off the executor) and tokens (JWT access
//! tokens, opaque rotating refresh tokens), plus where their keys come from.

pub mod keys;
pub mod password;
mod queue;
pub mod tokens;

pub use keys::KeyRing;
pub use password::{HashSlot, PasswordHasher, Verified};
pub use tokens::TokenService;

use crate::storage::Store;

/// settings key of the refresh-token derivation key.
const GENERATED_REFRESH_KEY: &str = "refresh_token_key";

/// The key that derives a refresh token's successor (see [`tokens`]):
/// generated on first start, shared by every instance through the database.
pub async fn load_refresh_key(store: &dyn Store) -> anyhow::Result<Vec<u8>> {
    let value = store
        .setting_or_insert(GENERATED_REFRESH_KEY, &tokens::random_key_b64())
        .await?;
    tokens::decode_key_b64(&value).ok_or_else(|| {
        anyhow::anyhow!(
            "the stored {GENERATED_REFRESH_KEY} is not a base64 key of at least 32 bytes"
        )
    })
}
