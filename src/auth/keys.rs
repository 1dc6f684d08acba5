//! Access-token signing keys: where they come from, which one signs, which
//! ones still verify, and what `/.well-known/jwks.json` publishes.
//!
//! - The bootstrap key of the configured algorithm is `AUTHQL_JWT_SECRET`
//!   (HS256) or generated on first start and kept in `settings`; the first
//!   instance to insert it wins, so every instance reads the same one.
//! - `authql keys rotate` adds a newer key to `signing_keys`. The newest key
//!   of the configured algorithm signs (a configured secret always signs);
//!   older keys keep verifying until every token they signed has expired.
//! - Instances re-read the keys every minute and whenever a token names a kid
//!   they do not know (at most every few seconds), so a rotation made by one
//!   instance or by the CLI reaches all of them without a restart.
//! - `kid` is attacker input: it is only ever looked up in this ring.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rand::RngCore as _;
use sha2::{Digest, Sha256};

use crate::clock::SharedClock;
use crate::config::{JwtAlgorithm, TokenConfig};
use crate::storage::{Store, StoredKey};

/// settings key of the refresh-token derivation key.
const GENERATED_REFRESH_KEY: &str = "refresh_token_key";
const BOOTSTRAP_HS256: &str = "jwt_hs256_key";
const BOOTSTRAP_ED25519: &str = "jwt_ed25519_key";
/// Unknown kids trigger a reload at most this often.
const RELOAD_ON_MISS_EVERY: Duration = Duration::from_secs(5);
/// Keys are re-read this often in any case.
pub const RELOAD_EVERY: Duration = Duration::from_secs(60);

/// One signing key.
pub struct Key {
    pub kid: String,
    pub algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Ed25519 public key (base64url), published in the JWKS.
    public_x: Option<String>,
    created_at: DateTime<Utc>,
}

impl Key {
    pub fn hs256(secret: &[u8], created_at: DateTime<Utc>) -> anyhow::Result<Self> {
        let unusable = |e| anyhow::anyhow!("HS256 key is unusable: {e}");
        Ok(Self {
            kid: format!("hs256-{}", short_hash(b"hs256", secret)),
            algorithm: Algorithm::HS256,
            encoding: EncodingKey::from_secret(secret).map_err(unusable)?,
            decoding: DecodingKey::from_secret(secret).map_err(unusable)?,
            public_x: None,
            created_at,
        })
    }

    pub fn ed25519(pkcs8: &[u8], created_at: DateTime<Utc>) -> anyhow::Result<Self> {
        let pair = SigningKey::from_pkcs8_der(pkcs8)
            .map_err(|e| anyhow::anyhow!("stored Ed25519 key is unreadable: {e}"))?;
        let public = pair.verifying_key().to_bytes();
        let public = public.as_slice();
        Ok(Self {
            kid: format!("ed25519-{}", short_hash(b"ed25519", public)),
            algorithm: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(pkcs8),
            decoding: DecodingKey::from_ed_der(public),
            public_x: Some(URL_SAFE_NO_PAD.encode(public)),
            created_at,
        })
    }

    pub fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }
    pub fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn short_hash(label: &[u8], material: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(b"authql kid v1\0")
        .chain_update(label)
        .chain_update(material)
        .finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The key that derives a refresh token's successor (see [`super::tokens`]):
/// generated on first start, shared by every instance through the database.
pub async fn load_refresh_key(store: &dyn Store) -> anyhow::Result<Vec<u8>> {
    let value = store
        .setting_or_insert(GENERATED_REFRESH_KEY, &random_key_b64())
        .await?;
    decode_key_b64(&value).ok_or_else(|| {
        anyhow::anyhow!(
            "the stored {GENERATED_REFRESH_KEY} is not a base64 key of at least 32 bytes"
        )
    })
}

/// 256 random bits, base64 (for generated keys).
pub fn random_key_b64() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

fn decode_key_b64(value: &str) -> Option<Vec<u8>> {
    STANDARD.decode(value).ok().filter(|k| k.len() >= 32)
}

/// New key material of an algorithm, base64 (the HMAC key or a PKCS#8 document).
pub fn generate_material(algorithm: JwtAlgorithm) -> anyhow::Result<String> {
    match algorithm {
        JwtAlgorithm::Hs256 => Ok(random_key_b64()),
        JwtAlgorithm::EdDsa => {
            let mut seed = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut seed);
            // PKCS#8 v2 (private and public key), as earlier versions stored.
            let doc = SigningKey::from_bytes(&seed)
                .to_pkcs8_der()
                .map_err(|e| anyhow::anyhow!("Ed25519 key encoding failed: {e}"))?;
            Ok(STANDARD.encode(doc.as_bytes()))
        }
    }
}

fn key_from_material(
    algorithm: JwtAlgorithm,
    material: &str,
    created_at: DateTime<Utc>,
) -> anyhow::Result<Key> {
    let name = algorithm.name();
    let bytes = STANDARD
        .decode(material)
        .map_err(|e| anyhow::anyhow!("stored {name} key is not base64: {e}"))?;
    match algorithm {
        JwtAlgorithm::Hs256 if bytes.len() >= 32 => Key::hs256(&bytes, created_at),
        JwtAlgorithm::Hs256 => anyhow::bail!("stored HS256 key is shorter than 32 bytes"),
        JwtAlgorithm::EdDsa => Key::ed25519(&bytes, created_at),
    }
}

/// Adds a new key of `algorithm`; it signs from the next key reload on.
pub async fn rotate(store: &dyn Store, algorithm: JwtAlgorithm) -> anyhow::Result<String> {
    let material = generate_material(algorithm)?;
    let now = Utc::now();
    let key = key_from_material(algorithm, &material, now)?;
    store
        .add_signing_key(&StoredKey {
            kid: key.kid.clone(),
            algorithm,
            material,
            created_at: now,
        })
        .await?;
    Ok(key.kid)
}

struct KeySet {
    current: Arc<Key>,
    verifying: HashMap<String, Arc<Key>>,
}

pub struct KeyRing {
    /// Where rotated keys are read from; none for a fixed key.
    store: Option<Arc<dyn Store>>,
    clock: SharedClock,
    /// The configured secret or the generated key in `settings`: read once,
    /// it never changes, so reloads only re-read `signing_keys`.
    bootstrap: Arc<Key>,
    /// A configured secret always signs; a generated bootstrap key signs only
    /// until a rotated key of the algorithm exists.
    bootstrap_signs: bool,
    algorithm: Algorithm,
    /// How long a retired key keeps verifying.
    overlap: Duration,
    keys: RwLock<Arc<KeySet>>,
    last_reload: Mutex<Option<Instant>>,
}

impl KeyRing {
    pub async fn load(
        store: Arc<dyn Store>,
        config: &TokenConfig,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        let (bootstrap, bootstrap_signs) = match (&config.jwt_secret, config.jwt_algorithm) {
            (Some(secret), JwtAlgorithm::Hs256) => {
                (Key::hs256(secret.expose().as_bytes(), epoch)?, true)
            }
            (Some(_), JwtAlgorithm::EdDsa) => {
                anyhow::bail!("AUTHQL_JWT_SECRET is an HS256 secret; unset it to use AUTHQL_JWT_ALGORITHM=EdDSA")
            }
            (None, algorithm) => {
                let setting = match algorithm {
                    JwtAlgorithm::Hs256 => BOOTSTRAP_HS256,
                    JwtAlgorithm::EdDsa => BOOTSTRAP_ED25519,
                };
                let value = store
                    .setting_or_insert(setting, &generate_material(algorithm)?)
                    .await?;
                (key_from_material(algorithm, &value, epoch)?, false)
            }
        };
        let ring = Self::with(Some(store), bootstrap, bootstrap_signs, config, clock);
        ring.reload().await?;
        Ok(ring)
    }

    /// A ring of one key that never changes (no database: for tests and
    /// tools that verify with a known key).
    pub fn fixed(key: Key, config: &TokenConfig, clock: SharedClock) -> Self {
        Self::with(None, key, true, config, clock)
    }

    fn with(
        store: Option<Arc<dyn Store>>,
        bootstrap: Key,
        bootstrap_signs: bool,
        config: &TokenConfig,
        clock: SharedClock,
    ) -> Self {
        let bootstrap = Arc::new(bootstrap);
        // Until the first read: the bootstrap key alone.
        let initial = KeySet {
            current: bootstrap.clone(),
            verifying: HashMap::from([(bootstrap.kid.clone(), bootstrap.clone())]),
        };
        Self {
            store,
            clock,
            bootstrap,
            bootstrap_signs,
            algorithm: config.jwt_algorithm.jose(),
            overlap: config.access_ttl + config.jwt_leeway + RELOAD_EVERY,
            keys: RwLock::new(Arc::new(initial)),
            last_reload: Mutex::new(None),
        }
    }

    /// The bootstrap key plus the rotated ones: which signs, which verify.
    /// A retired key verifies for one access-token lifetime plus leeway and a
    /// minute of slack for instances that have not reloaded yet.
    async fn read(&self) -> anyhow::Result<KeySet> {
        let mut keys = vec![self.bootstrap.clone()];
        let stored_keys = match &self.store {
            Some(store) => store.signing_keys().await?,
            None => Vec::new(),
        };
        for stored in stored_keys {
            keys.push(Arc::new(key_from_material(
                stored.algorithm,
                &stored.material,
                stored.created_at,
            )?));
        }
        keys.sort_by_key(|k| k.created_at);
        let current = if self.bootstrap_signs {
            self.bootstrap.clone()
        } else {
            keys.iter()
                .rev()
                .find(|k| k.algorithm == self.algorithm)
                .cloned()
                .unwrap_or_else(|| self.bootstrap.clone())
        };
        // A key retires when a newer one appears; it verifies for `overlap` more.
        let now = self.clock.now();
        let overlap = chrono::Duration::from_std(self.overlap).unwrap_or(chrono::Duration::MAX);
        let mut verifying = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            let retired_at = keys.get(i + 1).map(|next| next.created_at);
            let live = Arc::ptr_eq(key, &current)
                || retired_at
                    .is_none_or(|at| at.checked_add_signed(overlap).is_none_or(|end| end > now));
            if live {
                verifying.insert(key.kid.clone(), key.clone());
            }
        }
        Ok(KeySet { current, verifying })
    }

    fn set(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn current(&self) -> Arc<Key> {
        self.set().current.clone()
    }

    pub fn get(&self, kid: &str) -> Option<Arc<Key>> {
        self.set().verifying.get(kid).cloned()
    }

    pub async fn reload(&self) -> anyhow::Result<()> {
        let set = self.read().await?;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(())
    }

    /// Reloads after an unknown kid, unless that happened moments ago.
    /// Returns whether it reloaded.
    pub async fn reload_after_miss(&self) -> bool {
        if self.store.is_none() {
            return false;
        }
        {
            let mut last = self.last_reload.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < RELOAD_ON_MISS_EVERY) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match self.reload().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "signing keys could not be reloaded");
                false
            }
        }
    }

    /// The public keys as a JWK Set (RFC 7517). HMAC keys are never published.
    pub fn jwks(&self) -> serde_json::Value {
        let set = self.set();
        let mut keys: Vec<&Arc<Key>> = set
            .verifying
            .values()
            .filter(|k| k.public_x.is_some())
            .collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.created_at));
        let keys: Vec<serde_json::Value> = keys
            .into_iter()
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
                    "kid": k.kid, "x": k.public_x,
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_material_round_trips() {
        let material = generate_material(JwtAlgorithm::EdDsa).expect("generate");
        let key = key_from_material(JwtAlgorithm::EdDsa, &material, Utc::now()).expect("key");
        assert!(key.kid.starts_with("ed25519-"));
        assert_eq!(key.public_x.as_deref().map(str::len), Some(43));
        let again = key_from_material(JwtAlgorithm::EdDsa, &material, Utc::now()).expect("key");
        assert_eq!(key.kid, again.kid, "kid is derived from the key");
        assert!(key_from_material(JwtAlgorithm::Hs256, "c2hvcnQ=", Utc::now()).is_err());
    }

    /// Keys stored by earlier versions (generated with ring) keep loading:
    /// ring writes a PKCS#8 v2 document (its template, byte for byte, with the
    /// public key as `[1] IMPLICIT`), and the generator now writes the same.
    #[test]
    fn ring_pkcs8_documents_still_load_and_new_ones_share_their_layout() {
        let seed = [7u8; 32];
        let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        let mut ring_doc = vec![
            0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        ring_doc.extend_from_slice(&seed);
        ring_doc.extend_from_slice(&[0x81, 0x21, 0x00]);
        ring_doc.extend_from_slice(&public);
        let key = Key::ed25519(&ring_doc, Utc::now()).expect("ring document loads");
        assert_eq!(key.public_x, Some(URL_SAFE_NO_PAD.encode(public)));

        let ours = STANDARD
            .decode(generate_material(JwtAlgorithm::EdDsa).expect("generate"))
            .expect("base64");
        assert_eq!(ours.len(), ring_doc.len());
        assert_eq!(ours[..16], ring_doc[..16], "same header");
        assert_eq!(ours[48..51], ring_doc[48..51], "public key as [1] IMPLICIT");
    }
}
