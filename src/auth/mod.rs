//! Credentials: passwords (argon2id, off the executor) and tokens (JWT access
//! tokens, opaque rotating refresh tokens), plus where their keys come from.

pub mod keys;
pub mod password;
mod queue;
pub mod tokens;

pub use keys::{load_refresh_key, KeyRing};
pub use password::{HashSlot, PasswordHasher, Verified};
pub use tokens::TokenService;
