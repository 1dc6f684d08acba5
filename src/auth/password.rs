//! argon2id hashing and verification, off the async executor.
//!
//! Each hash takes ~19 MiB and tens of milliseconds of one core, so it runs on
//! tokio's blocking pool behind a semaphore sized to the cores: a burst of
//! sign-ins queues here (the wait is measured) instead of starving the
//! executor or oversubscribing the CPU.

use std::sync::Arc;
use std::time::Instant;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordVerifier as _, Version};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

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
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// Verified against when the login is unknown, so that answer costs as
    /// much as a wrong password.
    dummy_hash: String,
    metrics: Arc<Metrics>,
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
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let concurrency = config
            .hash_concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let salt = SaltString::generate(&mut OsRng);
        let dummy_hash = argon2
            .hash_password(b"authql dummy password", &salt)
            .map_err(|e| anyhow::anyhow!("argon2 self-test failed: {e}"))?
            .to_string();
        Ok(Self {
            argon2,
            permits: Arc::new(Semaphore::new(concurrency)),
            dummy_hash,
            metrics,
        })
    }

    /// A new PHC string (`$argon2id$v=19$m=...`) with a random salt.
    pub async fn hash(&self, password: &Password) -> Result<String, AuthError> {
        let argon2 = self.argon2.clone();
        let password = password.clone();
        self.run_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2
                .hash_password(password.expose().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| AuthError::internal(anyhow::anyhow!("argon2 hash failed: {e}")))
        })
        .await
    }

    pub async fn verify(&self, password: &Password, phc: &str) -> Result<Verified, AuthError> {
        let argon2 = self.argon2.clone();
        let password = password.clone();
        let phc = phc.to_owned();
        self.run_blocking(move || {
            let parsed = PasswordHash::new(&phc)
                .map_err(|e| AuthError::internal(anyhow::anyhow!("stored hash unreadable: {e}")))?;
            match argon2.verify_password(password.expose().as_bytes(), &parsed) {
                Ok(()) => Ok(Verified::Yes {
                    needs_rehash: !uses_params(&parsed, &argon2),
                }),
                Err(argon2::password_hash::Error::Password) => Ok(Verified::No),
                Err(e) => Err(AuthError::internal(anyhow::anyhow!(
                    "argon2 verify failed: {e}"
                ))),
            }
        })
        .await
    }

    /// Spends the time of one verification, for a login that does not exist.
    pub async fn verify_dummy(&self, password: &Password) -> Result<(), AuthError> {
        let dummy = self.dummy_hash.clone();
        self.verify(password, &dummy).await.map(|_| ())
    }

    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let queued = Instant::now();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| AuthError::internal(anyhow::anyhow!("hash pool closed: {e}")))?;
        self.metrics.observe_hash_wait(queued.elapsed());
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(work))
            .instrument(tracing::Span::current())
            .await
            .map_err(|e| AuthError::internal(anyhow::anyhow!("hash task failed: {e}")))?
    }
}

/// Whether the stored hash was made with exactly the configured algorithm,
/// version and parameters.
fn uses_params(hash: &PasswordHash<'_>, argon2: &Argon2<'_>) -> bool {
    let Ok(stored) = Params::try_from(hash) else {
        return false;
    };
    let current = argon2.params();
    hash.algorithm == Algorithm::Argon2id.ident()
        && hash.version == Some(Version::V0x13.into())
        && stored.m_cost() == current.m_cost()
        && stored.t_cost() == current.t_cost()
        && stored.p_cost() == current.p_cost()
}

#[cfg(test)]
mod tests {
    use super::*;

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
