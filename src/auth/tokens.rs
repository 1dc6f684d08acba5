//! Access tokens (JWT, RFC 9068 profile) and refresh tokens (opaque).
//!
//! Access tokens are verified with everything pinned: algorithm, `typ`,
//! `kid` (looked up among our own keys only; `jku`/`x5u`/`jwk` headers are
//! never read), issuer, audience, `exp`/`nbf` with the configured leeway, and
//! `token_type`. Refresh tokens are 256 random bits; only their SHA-256 is
//! stored. A successor refresh token is derived from its predecessor with an
//! HMAC, so a racing client that presents the same token twice inside the
//! grace window can be given the same successor without storing it.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit as _, Mac};
use jsonwebtoken::{Algorithm, Header, Validation};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::KeyRing;
use crate::clock::SharedClock;
use crate::config::TokenConfig;

/// The JOSE `typ` of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
pub const TOKEN_TYPE_ACCESS: &str = "access";
/// Bytes of randomness in a refresh token.
const REFRESH_TOKEN_BYTES: usize = 32;

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
    #[error("issued in the future")]
    IssuedInFuture,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
    #[error("{0}")]
    Invalid(String),
}

pub struct TokenService {
    keys: Arc<KeyRing>,
    clock: SharedClock,
    refresh_key: Vec<u8>,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    leeway: Duration,
    hs256: Validation,
    eddsa: Validation,
}

impl TokenService {
    /// `refresh_key` keys the successor derivation of refresh tokens.
    pub fn new(
        config: &TokenConfig,
        keys: Arc<KeyRing>,
        refresh_key: Vec<u8>,
        clock: SharedClock,
    ) -> Self {
        let validation = |algorithm| {
            let mut v = Validation::new(algorithm);
            v.set_issuer(&[&config.jwt_issuer]);
            v.set_audience(&[&config.jwt_audience]);
            v.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
            // Times are checked below, against the injected clock.
            v.validate_exp = false;
            v.validate_nbf = false;
            v
        };
        Self {
            keys,
            clock,
            refresh_key,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            access_ttl: config.access_ttl,
            leeway: config.jwt_leeway,
            hs256: validation(Algorithm::HS256),
            eddsa: validation(Algorithm::EdDSA),
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
        let key = self.keys.current();
        let mut header = Header::new(key.algorithm);
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &claims, key.encoding())
    }

    /// Verifies an access token and returns `(user id, claims)`. A token
    /// naming a key this instance does not know yet makes it re-read the
    /// keys (at most every few seconds), so keys rotated elsewhere verify.
    pub async fn verify(&self, token: &str) -> Result<(i64, AccessClaims), TokenRejected> {
        match self.check(token) {
            Err(TokenRejected::UnknownKey) if self.keys.reload_after_miss().await => {
                self.check(token)
            }
            verified => verified,
        }
    }

    /// [`Self::verify`] with the keys at hand.
    fn check(&self, token: &str) -> Result<(i64, AccessClaims), TokenRejected> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejected::Malformed)?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(TokenRejected::WrongTyp);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenRejected::UnknownKey)?;
        // The key decides the algorithm; the header must agree with it.
        let validation = match key.algorithm {
            Algorithm::EdDSA => &self.eddsa,
            _ => &self.hs256,
        };
        let data = jsonwebtoken::decode::<AccessClaims>(token, key.decoding(), validation)
            .map_err(|e| TokenRejected::Invalid(e.to_string()))?;
        let claims = data.claims;
        if claims.token_type != TOKEN_TYPE_ACCESS {
            return Err(TokenRejected::WrongTokenType);
        }
        let now = self.clock.now().timestamp();
        let leeway = i64::try_from(self.leeway.as_secs()).unwrap_or(60);
        if claims.exp.saturating_add(leeway) < now {
            return Err(TokenRejected::Expired);
        }
        if claims.nbf > now.saturating_add(leeway) {
            return Err(TokenRejected::NotYetValid);
        }
        // `iat` is what "tokens valid after" compares with: a token dated
        // ahead would survive a sign-out everywhere.
        if claims.iat > now.saturating_add(leeway) {
            return Err(TokenRejected::IssuedInFuture);
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn config() -> TokenConfig {
        crate::config::ServeConfig::defaults().tokens
    }

    /// A token service over a fixed HS256 key (no database).
    pub(super) fn service(cfg: &TokenConfig, secret: &[u8]) -> TokenService {
        let clock: SharedClock = std::sync::Arc::new(crate::clock::SystemClock);
        let key = super::super::keys::Key::hs256(secret, DateTime::<Utc>::UNIX_EPOCH).expect("key");
        let keys = Arc::new(KeyRing::fixed(key, cfg, clock.clone()));
        TokenService::new(cfg, keys, b"refresh-key".to_vec(), clock)
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[tokio::test]
    async fn round_trip_and_header() {
        let tokens = service(&config(), SECRET);
        let jwt = tokens.issue_access(42, "sess", Utc::now()).expect("issue");
        let header = jsonwebtoken::decode_header(&jwt).expect("header");
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.alg, Algorithm::HS256);
        assert!(header.kid.is_some());
        let (user, claims) = tokens.check(&jwt).expect("valid");
        assert_eq!(user, 42);
        assert_eq!(claims.sid, "sess");
        assert_eq!(claims.exp - claims.iat, 15 * 60);
        assert_eq!(claims.roles, Vec::<String>::new());
    }

    #[tokio::test]
    async fn refuses_tampering() {
        let cfg = config();
        let tokens = service(&cfg, SECRET);
        let other = service(&cfg, b"another-secret-another-secret-xx");
        let forged = other.issue_access(1, "s", Utc::now()).expect("issue");
        assert_eq!(tokens.check(&forged), Err(TokenRejected::UnknownKey));

        // Same kid, wrong signature.
        let good = tokens.issue_access(1, "s", Utc::now()).expect("issue");
        let mut parts: Vec<&str> = good.split('.').collect();
        let bad_sig = URL_SAFE_NO_PAD.encode([7u8; 32]);
        parts[2] = &bad_sig;
        assert!(matches!(
            tokens.check(&parts.join(".")),
            Err(TokenRejected::Invalid(_))
        ));

        // alg: none.
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#);
        let none = format!("{none_header}.{}.", parts[1]);
        assert!(tokens.check(&none).is_err());

        // Expired.
        let old = tokens
            .issue_access(1, "s", Utc::now() - chrono::Duration::hours(1))
            .expect("issue");
        assert_eq!(tokens.check(&old), Err(TokenRejected::Expired));

        // Wrong issuer / audience.
        let mut cfg2 = config();
        cfg2.jwt_issuer = "someone-else".into();
        let issuer = service(&cfg2, SECRET);
        let foreign = issuer.issue_access(1, "s", Utc::now()).expect("issue");
        assert!(matches!(
            tokens.check(&foreign),
            Err(TokenRejected::Invalid(_))
        ));
        let mut cfg3 = config();
        cfg3.jwt_audience = "other-app".into();
        let issuer = service(&cfg3, SECRET);
        let foreign = issuer.issue_access(1, "s", Utc::now()).expect("issue");
        assert!(matches!(
            tokens.check(&foreign),
            Err(TokenRejected::Invalid(_))
        ));

        // Garbage.
        assert_eq!(tokens.check("not.a.jwt"), Err(TokenRejected::Malformed));
        assert_eq!(tokens.check(""), Err(TokenRejected::Malformed));
    }

    #[tokio::test]
    async fn refresh_tokens() {
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

/// Property tests: JWT parsing never panics, and no string that is not a
/// token we issued verifies. `PROPTEST_CASES` raises the count (CI: 2,000).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(2_000)
    }

    fn setup() -> (TokenService, String) {
        let cfg = crate::config::ServeConfig::defaults().tokens;
        let service = tests::service(&cfg, b"0123456789abcdef0123456789abcdef");
        let token = service
            .issue_access(7, "session", Utc::now())
            .expect("issue");
        (service, token)
    }

    #[test]
    fn arbitrary_strings_never_verify() {
        let (service, _) = setup();
        proptest!(ProptestConfig::with_cases(cases()), |(s in prop_oneof![
            any::<String>(),
            "[A-Za-z0-9_\\-]{0,60}\\.[A-Za-z0-9_\\-]{0,200}\\.[A-Za-z0-9_\\-]{0,90}",
            "eyJ[A-Za-z0-9_\\-]{0,80}\\.eyJ[A-Za-z0-9_\\-]{0,200}\\.[A-Za-z0-9_\\-]{0,90}",
        ])| {
            prop_assert!(service.check(&s).is_err());
        });
    }

    #[test]
    fn any_change_to_a_valid_token_is_refused() {
        let (service, token) = setup();
        prop_assert_ok(&service, &token);
        let bytes = token.as_bytes().to_vec();
        proptest!(ProptestConfig::with_cases(cases()), |(index in 0..bytes.len(), byte in any::<u8>())| {
            let mut changed = bytes.clone();
            changed[index] = byte;
            if changed != bytes {
                if let Ok(text) = String::from_utf8(changed) {
                    // base64url has unused low bits in the last character of a
                    // part; a change there can decode to the same bytes.
                    if let Ok((user, _)) = service.check(&text) {
                        prop_assert_eq!(user, 7);
                        prop_assert_eq!(decoded_parts(&text), decoded_parts(&token));
                    }
                }
            }
        });
    }

    fn prop_assert_ok(service: &TokenService, token: &str) {
        assert!(service.check(token).is_ok());
    }

    fn decoded_parts(token: &str) -> Vec<Vec<u8>> {
        token
            .split('.')
            .map(|p| URL_SAFE_NO_PAD.decode(p).unwrap_or_default())
            .collect()
    }
}
