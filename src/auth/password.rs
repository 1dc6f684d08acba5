//! argon2id hashing and verification, off the async executor.
//!
//! Each hash takes ~19 MiB and tens of milliseconds of one core, so it runs on
//! tokio's blocking pool behind a semaphore sized to the cores: a burst of
//! sign-ins queues here (the wait is measured) instead of starving the
//! executor or oversubscribing the CPU.
//!
//! The 19 MiB work areas are reused: one per permit, kept in a small pool.
//! Allocating a fresh one per hash made the allocator keep one per blocking
//! thread that ever hashed (hundreds of MiB of RSS under load).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use argon2::password_hash::{rand_core::OsRng, Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

use crate::config::PasswordConfig;
use crate::domain::Password;
use crate::error::AuthError;
use crate::metrics::Metrics;

/// The result of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Correct. `needs_rehash`: the stored hash uses other parameters than
    /// the configured ones and should be replaced.
    Yes {
        needs_rehash: bool,
    },
    No,
}

pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    /// Work areas of `params.block_count()` blocks, at most one per permit.
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
    /// Verified against when the login is unknown, so that answer costs as
    /// much as a wrong password.
    dummy_hash: String,
    metrics: Arc<Metrics>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> AuthError {
    AuthError::internal(anyhow::anyhow!("{what}: {e}"))
}

/// argon2id v1.3 with `params`, writing into `memory` (grown if too small).
fn compute(
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut Vec<Block>,
) -> Result<(), AuthError> {
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, salt, out, &mut memory[..])
        .map_err(|e| internal("argon2 failed", e))
}

/// A PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) for `password`.
fn hash_phc(
    params: &Params,
    password: &[u8],
    memory: &mut Vec<Block>,
) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| internal("salt", e))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    compute(params, password, salt_bytes, &mut out, memory)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: params.try_into().map_err(|e| internal("params", e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| internal("output", e))?),
    };
    Ok(phc.to_string())
}

/// Checks `password` against a stored PHC string, in constant time.
fn verify_phc(
    current: &Params,
    password: &[u8],
    phc: &str,
    memory: &mut Vec<Block>,
) -> Result<Verified, AuthError> {
    let parsed = PasswordHash::new(phc).map_err(|e| internal("stored hash unreadable", e))?;
    if parsed.algorithm != Algorithm::Argon2id.ident()
        || parsed
            .version
            .is_some_and(|v| v != u32::from(Version::V0x13))
    {
        return Err(internal(
            "stored hash",
            format!("unsupported algorithm {}", parsed.algorithm),
        ));
    }
    let params = Params::try_from(&parsed).map_err(|e| internal("stored hash params", e))?;
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return Err(internal("stored hash", "no salt or hash"));
    };
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| internal("stored salt", e))?;
    let mut out = vec![0u8; expected.len()];
    compute(&params, password, salt_bytes, &mut out, memory)?;
    let computed = Output::new(&out).map_err(|e| internal("output", e))?;
    // Output's equality is constant-time.
    if computed != *expected {
        return Ok(Verified::No);
    }
    let needs_rehash = params.m_cost() != current.m_cost()
        || params.t_cost() != current.t_cost()
        || params.p_cost() != current.p_cost()
        || parsed.version.is_none();
    Ok(Verified::Yes { needs_rehash })
}

impl PasswordHasher {
    pub fn new(config: &PasswordConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let params = Params::new(
            config.argon2_memory_kib,
            config.argon2_iterations,
            config.argon2_parallelism,
            None,
        )
        .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let concurrency = config
            .hash_concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let mut memory = Vec::new();
        let dummy_hash = hash_phc(&params, b"authql dummy password", &mut memory)
            .map_err(|e| anyhow::anyhow!("argon2 self-test failed: {e}"))?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency)),
            memory: Arc::new(Mutex::new(vec![memory])),
            dummy_hash,
            metrics,
        })
    }

    /// A new PHC string (`$argon2id$v=19$m=...`) with a random salt.
    pub async fn hash(&self, password: &Password) -> Result<String, AuthError> {
        let (params, password) = (self.params.clone(), password.clone());
        self.run_blocking(move |memory| hash_phc(&params, password.expose().as_bytes(), memory))
            .await
    }

    pub async fn verify(&self, password: &Password, phc: &str) -> Result<Verified, AuthError> {
        let (params, password, phc) = (self.params.clone(), password.clone(), phc.to_owned());
        self.run_blocking(move |memory| {
            verify_phc(&params, password.expose().as_bytes(), &phc, memory)
        })
        .await
    }

    /// Spends the time of one verification, for a login that does not exist.
    pub async fn verify_dummy(&self, password: &Password) -> Result<(), AuthError> {
        let dummy = self.dummy_hash.clone();
        self.verify(password, &dummy).await.map(|_| ())
    }

    /// Runs `work` on the blocking pool with a permit and a work area.
    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let queued = Instant::now();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| internal("hash pool closed", e))?;
        self.metrics.observe_hash_wait(queued.elapsed());
        let pool = self.memory.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let mut memory = pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
                .unwrap_or_default();
            let result = span.in_scope(|| work(&mut memory));
            pool.lock().unwrap_or_else(|p| p.into_inner()).push(memory);
            result
        })
        .await
        .map_err(|e| internal("hash task failed", e))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};

    fn hasher(memory_kib: u32, iterations: u32) -> PasswordHasher {
        let config = PasswordConfig {
            argon2_memory_kib: memory_kib,
            argon2_iterations: iterations,
            argon2_parallelism: 1,
            hash_concurrency: Some(2),
            password_context_words: Vec::new(),
        };
        PasswordHasher::new(&config, Arc::new(Metrics::new())).expect("hasher")
    }

    /// Stored hashes stay portable: what we write, the stock `argon2` crate
    /// verifies, and the other way round.
    #[tokio::test]
    async fn hashes_are_interchangeable_with_the_argon2_crate() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let h = hasher(19_456, 2);
        let pw = Password::new("portable password");
        let ours = h.hash(&pw).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("PHC");
        Argon2::default()
            .verify_password(b"portable password", &parsed)
            .expect("the argon2 crate verifies our hash");
        assert!(Argon2::default()
            .verify_password(b"other password", &parsed)
            .is_err());
        let theirs = Argon2::default()
            .hash_password(b"portable password", &SaltString::generate(&mut OsRng))
            .expect("hash")
            .to_string();
        assert_eq!(
            h.verify(&pw, &theirs).await.expect("verify"),
            Verified::Yes {
                needs_rehash: false
            }
        );
        assert_eq!(
            h.verify(&Password::new("other password"), &theirs)
                .await
                .expect("verify"),
            Verified::No
        );
        // A stored hash of another algorithm is an error, not a silent "no".
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::default())
            .hash_password(b"x", &SaltString::generate(&mut OsRng))
            .expect("hash")
            .to_string();
        assert!(h.verify(&pw, &argon2i).await.is_err());
    }

    #[tokio::test]
    async fn hash_verify_and_rehash_detection() {
        let h = hasher(19_456, 2);
        let pw = Password::new("correct horse battery");
        let phc = h.hash(&pw).await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(
            h.verify(&pw, &phc).await.expect("verify"),
            Verified::Yes {
                needs_rehash: false
            }
        );
        assert_eq!(
            h.verify(&Password::new("wrong horse battery"), &phc)
                .await
                .expect("verify"),
            Verified::No
        );
        let stronger = hasher(19_456, 3);
        assert_eq!(
            stronger.verify(&pw, &phc).await.expect("verify"),
            Verified::Yes { needs_rehash: true }
        );
        h.verify_dummy(&pw).await.expect("dummy verify");
    }
}
