//! Access tokens (JWT, RFC 9068 profile) and refresh tokens (opaque).
//!
//! Access tokens are verified with everything pinned: algorithm, `typ`,
//! `kid` (looked up among our own keys only; `jku`/`x5u`/`jwk` headers are
//! never read), issuer, audience, `exp`/`nbf` with the configured leeway, and
//! `token_type`. Refresh tokens are 256 random bits; only their SHA-256 is
//! stored. A successor refresh token is derived from its predecessor with an
//! HMAC, so a racing client that presents the same token twice inside the
//! grace window can be given the same successor without storing it.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::TokenConfig;

/// The JOSE `typ` of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
pub const TOKEN_TYPE_ACCESS: &str = "access";
/// Bytes of randomness in a refresh token.
const REFRESH_TOKEN_BYTES: usize = 32;

/// One HMAC signing key with its public id.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    secret: Vec<u8>,
}

impl SigningKey {
    pub fn hs256(secret: Vec<u8>) -> Self {
        // The kid names the key without revealing it: a hash of the key, cut short.
        let digest = Sha256::new()
            .chain_update(b"authql kid v1\0")
            .chain_update(&secret)
            .finalize();
        let kid = format!("hs256-{}", &hex(&digest)[..16]);
        Self { kid, secret }
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: String,
    pub sid: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    pub iss: String,
    pub aud: String,
    pub token_type: String,
    pub roles: Vec<String>,
}

/// Why an access token was refused (for the log; clients see UNAUTHENTICATED).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenRejected {
    #[error("malformed token or header")]
    Malformed,
    #[error("unexpected typ header")]
    WrongTyp,
    #[error("unknown kid")]
    UnknownKey,
    #[error("not an access token")]
    WrongTokenType,
    #[error("bad subject")]
    BadSubject,
    #[error("{0}")]
    Invalid(String),
}

pub struct TokenService {
    key: SigningKey,
    refresh_key: Vec<u8>,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    validation: Validation,
}

impl TokenService {
    /// `refresh_key` keys the successor derivation of refresh tokens.
    pub fn new(config: &TokenConfig, key: SigningKey, refresh_key: Vec<u8>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&config.jwt_issuer]);
        validation.set_audience(&[&config.jwt_audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = config.jwt_leeway.as_secs();
        Self {
            key,
            refresh_key,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            access_ttl: config.access_ttl,
            validation,
        }
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    pub fn issue_access(
        &self,
        user_id: i64,
        session_id: &str,
        now: DateTime<Utc>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now.timestamp();
        let claims = AccessClaims {
            sub: user_id.to_string(),
            sid: session_id.to_owned(),
            iat,
            nbf: iat,
            exp: iat.saturating_add(i64::try_from(self.access_ttl.as_secs()).unwrap_or(i64::MAX)),
            jti: uuid::Uuid::new_v4().to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            token_type: TOKEN_TYPE_ACCESS.to_owned(),
            roles: Vec::new(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(self.key.kid.clone());
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(&self.key.secret),
        )
    }

    /// Verifies an access token and returns `(user id, claims)`.
    pub fn verify_access(&self, token: &str) -> Result<(i64, AccessClaims), TokenRejected> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejected::Malformed)?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(TokenRejected::WrongTyp);
        }
        if header.kid.as_deref() != Some(self.key.kid.as_str()) {
            return Err(TokenRejected::UnknownKey);
        }
        let data = jsonwebtoken::decode::<AccessClaims>(
            token,
            &DecodingKey::from_secret(&self.key.secret),
            &self.validation,
        )
        .map_err(|e| TokenRejected::Invalid(e.to_string()))?;
        let claims = data.claims;
        if claims.token_type != TOKEN_TYPE_ACCESS {
            return Err(TokenRejected::WrongTokenType);
        }
        let user_id = claims.sub.parse().map_err(|_| TokenRejected::BadSubject)?;
        Ok((user_id, claims))
    }

    /// A fresh refresh token: 256 random bits, base64url.
    pub fn new_refresh_token(&self) -> String {
        let mut bytes = [0u8; REFRESH_TOKEN_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The token that replaces `token` at rotation: HMAC-SHA256 of it under
    /// the instance-wide refresh key, so every instance derives the same one.
    pub fn successor_of(&self, token: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.refresh_key)
            .expect("HMAC accepts keys of any length");
        mac.update(token.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

/// Whether `token` has the shape of one of our refresh tokens; anything else
/// is refused without a database round trip.
pub fn is_well_formed_refresh_token(token: &str) -> bool {
    token.len() == 43
        && URL_SAFE_NO_PAD
            .decode(token)
            .is_ok_and(|b| b.len() == REFRESH_TOKEN_BYTES)
}

/// What is stored of a refresh token.
pub fn refresh_token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// 256 random bits, base64 (for generated keys).
pub fn random_key_b64() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode_key_b64(value: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()
        .filter(|k| k.len() >= 32)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn config() -> TokenConfig {
        crate::config::Cli::try_parse_from(["authql"])
            .expect("defaults")
            .serve
            .tokens
    }

    fn service(cfg: &TokenConfig, secret: &[u8]) -> TokenService {
        TokenService::new(
            cfg,
            SigningKey::hs256(secret.to_vec()),
            b"refresh-key".to_vec(),
        )
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip_and_header() {
        let tokens = service(&config(), SECRET);
        let jwt = tokens.issue_access(42, "sess", Utc::now()).expect("issue");
        let header = jsonwebtoken::decode_header(&jwt).expect("header");
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.alg, Algorithm::HS256);
        assert!(header.kid.is_some());
        let (user, claims) = tokens.verify_access(&jwt).expect("valid");
        assert_eq!(user, 42);
        assert_eq!(claims.sid, "sess");
        assert_eq!(claims.exp - claims.iat, 15 * 60);
        assert_eq!(claims.roles, Vec::<String>::new());
    }

    #[test]
    fn refuses_tampering() {
        let cfg = config();
        let tokens = service(&cfg, SECRET);
        let other = service(&cfg, b"another-secret-another-secret-xx");
        let forged = other.issue_access(1, "s", Utc::now()).expect("issue");
        assert_eq!(
            tokens.verify_access(&forged),
            Err(TokenRejected::UnknownKey)
        );

        // Same kid, wrong signature.
        let good = tokens.issue_access(1, "s", Utc::now()).expect("issue");
        let mut parts: Vec<&str> = good.split('.').collect();
        let bad_sig = URL_SAFE_NO_PAD.encode([7u8; 32]);
        parts[2] = &bad_sig;
        assert!(matches!(
            tokens.verify_access(&parts.join(".")),
            Err(TokenRejected::Invalid(_))
        ));

        // alg: none.
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#);
        let none = format!("{none_header}.{}.", parts[1]);
        assert!(tokens.verify_access(&none).is_err());

        // Expired.
        let old = tokens
            .issue_access(1, "s", Utc::now() - chrono::Duration::hours(1))
            .expect("issue");
        assert!(matches!(
            tokens.verify_access(&old),
            Err(TokenRejected::Invalid(_))
        ));

        // Wrong issuer / audience.
        let mut cfg2 = config();
        cfg2.jwt_issuer = "someone-else".into();
        let foreign = service(&cfg2, SECRET)
            .issue_access(1, "s", Utc::now())
            .expect("issue");
        assert!(matches!(
            tokens.verify_access(&foreign),
            Err(TokenRejected::Invalid(_))
        ));
        let mut cfg3 = config();
        cfg3.jwt_audience = "other-app".into();
        let foreign = service(&cfg3, SECRET)
            .issue_access(1, "s", Utc::now())
            .expect("issue");
        assert!(matches!(
            tokens.verify_access(&foreign),
            Err(TokenRejected::Invalid(_))
        ));

        // Garbage.
        assert_eq!(
            tokens.verify_access("not.a.jwt"),
            Err(TokenRejected::Malformed)
        );
        assert_eq!(tokens.verify_access(""), Err(TokenRejected::Malformed));
    }

    #[test]
    fn refresh_tokens() {
        let tokens = service(&config(), SECRET);
        let a = tokens.new_refresh_token();
        let b = tokens.new_refresh_token();
        assert_ne!(a, b);
        assert!(is_well_formed_refresh_token(&a));
        assert!(!is_well_formed_refresh_token("short"));
        assert!(!is_well_formed_refresh_token(&format!("{}!", &a[..42])));
        let next = tokens.successor_of(&a);
        assert!(is_well_formed_refresh_token(&next));
        assert_eq!(next, tokens.successor_of(&a), "derivation is deterministic");
        assert_ne!(next, tokens.successor_of(&b));
        assert_eq!(refresh_token_hash(&a).len(), 32);
    }
}
