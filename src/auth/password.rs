//! argon2id hashing, and verification of argon2id and of the hashes
//! `authql import` takes over (pbkdf2, scrypt, bcrypt), off the async executor.
//!
//! - Engine: `argon2-rust`, a port of the C reference implementation with
//!   runtime-dispatched SIMD; about twice the hash rate of the RustCrypto
//!   `argon2` crate on the same parameters here (bench/run), with the same
//!   PHC strings: a test checks that each verifies the other's hashes, so
//!   stored hashes stay portable either way.
//! - Each hash takes ~19 MiB and milliseconds of one core, so it runs on a
//!   fixed set of hashing threads, one per core by default: a burst of
//!   sign-ins queues here (the wait is measured) instead of starving the
//!   async executor or oversubscribing the CPU. A fixed set also bounds
//!   memory: each thread's allocator reuses its own 19 MiB area, where a
//!   general blocking pool let the allocator keep one per thread that ever
//!   hashed (300+ MiB of RSS under load).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use argon2_rust::{Algorithm, Argon2, Version};
use ipnet::IpNet;
use rand::RngCore as _;
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;

use super::queue::{FairQueue, Full};
use crate::config::PasswordConfig;
use crate::domain::password_hash::{is_unusable, BcryptInput, Prf, StoredHash, UNUSABLE};
use crate::domain::{Client, Password};
use crate::error::AuthError;
use crate::metrics::Metrics;

const SALT_BYTES: usize = 16;
/// What an overloaded queue tells the caller to wait.
const RETRY_WHEN_FULL_SECS: u64 = 1;

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

type Job = Box<dyn FnOnce() + Send>;

/// The queue the hashing threads serve (see [`super::queue`]).
struct Shared {
    queue: Mutex<FairQueue<IpNet, Job>>,
    ready: Condvar,
    stopping: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, FairQueue<IpNet, Job>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct PasswordHasher {
    argon2: Argon2,
    shared: Arc<Shared>,
    /// Verified against when the login is unknown, so that answer costs as
    /// much as a wrong password.
    dummy_hash: String,
    metrics: Arc<Metrics>,
}

/// A reserved place in the hashing queue: taken before anything else a
/// hashing request does, so an overloaded server refuses at once. Dropped
/// unused, the place is given back.
pub struct HashSlot<'a> {
    hasher: &'a PasswordHasher,
    bucket: IpNet,
    used: bool,
}

fn internal(what: &str, e: impl std::fmt::Debug) -> AuthError {
    AuthError::internal(anyhow::anyhow!("{what}: {e:?}"))
}

/// A PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) for `password`.
fn hash_phc(argon2: &Argon2, password: &[u8]) -> Result<String, AuthError> {
    let mut salt = [0u8; SALT_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    argon2
        .hash_encoded(password, &salt)
        .map_err(|e| internal("argon2 hash failed", e))
}

/// Checks `password` against a stored hash of any algorithm
/// [`StoredHash`] reads (constant-time comparisons). A correct password
/// under an imported algorithm always needs a re-hash to argon2id.
fn verify_stored(current: &Argon2, password: &[u8], stored: &str) -> Result<Verified, AuthError> {
    let parsed = StoredHash::parse(stored).map_err(|e| internal("stored hash unreadable", e))?;
    let matched = match parsed {
        StoredHash::Argon2 { phc, argon2i } => {
            return verify_argon2(current, password, &phc, argon2i);
        }
        StoredHash::Pbkdf2 {
            prf,
            iterations,
            salt,
            hash,
        } => {
            let mut out = vec![0u8; hash.len()];
            match prf {
                Prf::Sha1 => {
                    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, &salt, iterations, &mut out)
                }
                Prf::Sha256 => {
                    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, &salt, iterations, &mut out)
                }
                Prf::Sha512 => {
                    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, &salt, iterations, &mut out)
                }
            }
            bool::from(out.ct_eq(&hash))
        }
        StoredHash::Scrypt {
            log_n,
            r,
            p,
            salt,
            hash,
        } => {
            let params = scrypt::Params::new(log_n, r, p)
                .map_err(|e| internal("stored scrypt parameters", e))?;
            let mut out = vec![0u8; hash.len()];
            scrypt::scrypt(password, &salt, &params, &mut out)
                .map_err(|e| internal("scrypt failed", e))?;
            bool::from(out.ct_eq(&hash))
        }
        StoredHash::Bcrypt { mcf, input } => {
            let matched = match input {
                BcryptInput::Password => bcrypt::verify(password, &mcf),
                BcryptInput::DjangoSha256Hex => {
                    let digest = sha2::Sha256::digest(password);
                    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                    bcrypt::verify(hex.as_bytes(), &mcf)
                }
            };
            matched.map_err(|e| internal("bcrypt verify failed", e))?
        }
        StoredHash::Unusable => false,
    };
    Ok(if matched {
        Verified::Yes { needs_rehash: true }
    } else {
        Verified::No
    })
}

/// Checks `password` against an argon2 PHC string; one of other parameters
/// than the configured ones, or of argon2i, needs a re-hash.
fn verify_argon2(
    current: &Argon2,
    password: &[u8],
    phc: &str,
    argon2i: bool,
) -> Result<Verified, AuthError> {
    let algorithm = if argon2i {
        Algorithm::Argon2i
    } else {
        Algorithm::Argon2id
    };
    let stored = argon2_rust::decode_string(phc, algorithm)
        .map_err(|e| internal("stored hash unreadable", e))?;
    // One thread per verify whatever the lanes: the hashing threads are
    // the budget (threads do not change the tag).
    let stored_params = stored
        .params
        .to_builder()
        .threads(1)
        .build()
        .map_err(|e| internal("stored argon2 parameters", e))?;
    match Argon2::new(stored.algorithm, stored.version, stored_params).verify(
        password,
        &stored.salt,
        &stored.hash,
    ) {
        Ok(()) => {
            let now = current.params();
            let needs_rehash = argon2i
                || stored.version != Version::V0x13
                || stored_params.memory_kib() != now.memory_kib()
                || stored_params.passes() != now.passes()
                || stored_params.lanes() != now.lanes();
            Ok(Verified::Yes { needs_rehash })
        }
        Err(argon2_rust::Error::VerifyMismatch) => Ok(Verified::No),
        Err(e) => Err(internal("argon2 verify failed", e)),
    }
}

impl PasswordHasher {
    pub fn new(config: &PasswordConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let params = config.argon2_params().map_err(anyhow::Error::msg)?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = hash_phc(&argon2, b"authql dummy password")
            .map_err(|e| anyhow::anyhow!("argon2 self-test failed: {e}"))?;
        let threads = config
            .hash_concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let shared = Arc::new(Shared {
            queue: Mutex::new(FairQueue::new(
                config.hash_queue,
                config.hash_queue_per_client,
            )),
            ready: Condvar::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
        });
        for i in 0..threads {
            let shared = shared.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("authql-argon2-{i}"))
                .spawn(move || loop {
                    let job = {
                        let mut queue = shared.lock();
                        loop {
                            if let Some(job) = queue.pop() {
                                metrics.set_hash_queue_depth(queue.len());
                                break Some(job);
                            }
                            if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                                break None;
                            }
                            queue = shared.ready.wait(queue).unwrap_or_else(|p| p.into_inner());
                        }
                    };
                    match job {
                        // A panicking job must not take its thread along:
                        // its caller sees its channel closed (an internal
                        // error); the thread serves the next job.
                        Some(job) => {
                            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err()
                            {
                                tracing::error!("a password hashing job panicked");
                            }
                        }
                        // The hasher is gone: stop.
                        None => break,
                    }
                })?;
        }
        Ok(Self {
            argon2,
            shared,
            dummy_hash,
            metrics,
        })
    }

    /// Reserves a place in the queue for `client`, or refuses at once with
    /// RATE_LIMITED when the queue or the client's share of it is full.
    pub fn slot(&self, client: &Client) -> Result<HashSlot<'_>, AuthError> {
        match self.shared.lock().reserve(&client.bucket) {
            Ok(()) => Ok(HashSlot {
                hasher: self,
                bucket: client.bucket,
                used: false,
            }),
            Err(full) => {
                self.metrics.hash_shed(match full {
                    Full::Queue => "queue_full",
                    Full::ClientShare => "client_share",
                });
                Err(AuthError::RateLimited {
                    retry_after_secs: RETRY_WHEN_FULL_SECS,
                })
            }
        }
    }

    /// A new PHC string (`$argon2id$v=19$m=...`) with a random salt.
    pub async fn hash(&self, password: &Password, client: &Client) -> Result<String, AuthError> {
        self.slot(client)?.hash(password).await
    }
}

impl Drop for PasswordHasher {
    fn drop(&mut self) {
        // Under the queue's lock, so no thread is between its check of the
        // flag and its wait when the wake-up is sent.
        let _queue = self.shared.lock();
        self.shared
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.ready.notify_all();
    }
}

impl HashSlot<'_> {
    pub async fn hash(self, password: &Password) -> Result<String, AuthError> {
        let (argon2, password) = (self.hasher.argon2, password.clone());
        self.run(move || hash_phc(&argon2, password.expose().as_bytes()))
            .await
    }

    pub async fn verify(self, password: &Password, phc: &str) -> Result<Verified, AuthError> {
        // An unusable password costs what an unknown login costs (one
        // argon2id verify of the dummy hash), so such accounts do not stand
        // out by answering at once; it never matches.
        // Told from the first byte: the whole hash is read once, on the
        // hashing thread.
        let unusable = is_unusable(phc);
        let phc = if unusable {
            self.hasher.dummy_hash.clone()
        } else {
            phc.to_owned()
        };
        let (argon2, password) = (self.hasher.argon2, password.clone());
        let verified = self
            .run(move || verify_stored(&argon2, password.expose().as_bytes(), &phc))
            .await?;
        Ok(if unusable { Verified::No } else { verified })
    }

    /// Spends the time of one verification, for a login that does not exist.
    pub async fn verify_dummy(self, password: &Password) -> Result<(), AuthError> {
        self.verify(password, UNUSABLE).await.map(|_| ())
    }

    /// Runs `work` on a hashing thread, recording how long it queued. A job
    /// whose caller has gone (the client hung up) is skipped.
    async fn run<T: Send + 'static>(
        mut self,
        work: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let queued = Instant::now();
        let metrics = self.hasher.metrics.clone();
        let span = tracing::Span::current();
        let job: Job = Box::new(move || {
            if done.is_closed() {
                metrics.hash_shed("caller_gone");
                return;
            }
            metrics.observe_hash_wait(queued.elapsed());
            let _ = done.send(span.in_scope(work));
        });
        {
            let mut queue = self.hasher.shared.lock();
            queue.submit(&self.bucket, job);
            self.hasher.metrics.set_hash_queue_depth(queue.len());
        }
        self.used = true;
        self.hasher.shared.ready.notify_one();
        result
            .await
            .map_err(|e| internal("hash job dropped", e.to_string()))?
    }
}

impl Drop for HashSlot<'_> {
    fn drop(&mut self) {
        if !self.used {
            self.hasher.shared.lock().release(&self.bucket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        Client::new("127.0.0.1".parse().expect("ip"), 64)
    }

    fn hasher(memory_kib: u32, iterations: u32) -> PasswordHasher {
        let config = PasswordConfig {
            argon2_memory_kib: memory_kib,
            argon2_iterations: iterations,
            argon2_parallelism: 1,
            hash_concurrency: Some(2),
            hash_queue: 8,
            hash_queue_per_client: 4,
            password_context_words: Vec::new(),
        };
        PasswordHasher::new(&config, Arc::new(Metrics::new())).expect("hasher")
    }

    /// Stored hashes stay portable: what we write, the RustCrypto `argon2`
    /// crate verifies, and the other way round.
    #[tokio::test]
    async fn hashes_are_interchangeable_with_the_rustcrypto_argon2_crate() {
        use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let h = hasher(19_456, 2);
        let pw = Password::new("portable password");
        let ours = h.hash(&pw, &client()).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("PHC");
        argon2::Argon2::default()
            .verify_password(b"portable password", &parsed)
            .expect("the argon2 crate verifies our hash");
        assert!(argon2::Argon2::default()
            .verify_password(b"other password", &parsed)
            .is_err());
        let theirs = argon2::Argon2::default()
            .hash_password(b"portable password", &SaltString::generate(&mut OsRng))
            .expect("hash")
            .to_string();
        assert_eq!(
            h.slot(&client())
                .expect("slot")
                .verify(&pw, &theirs)
                .await
                .expect("verify"),
            Verified::Yes {
                needs_rehash: false
            }
        );
        assert_eq!(
            h.slot(&client())
                .expect("slot")
                .verify(&Password::new("other password"), &theirs)
                .await
                .expect("verify"),
            Verified::No
        );
        // argon2i (older Django) verifies, and asks for a re-hash.
        let argon2i = argon2::Argon2::new(
            argon2::Algorithm::Argon2i,
            argon2::Version::V0x13,
            argon2::Params::default(),
        )
        .hash_password(b"portable password", &SaltString::generate(&mut OsRng))
        .expect("hash")
        .to_string();
        assert_eq!(
            h.slot(&client())
                .expect("slot")
                .verify(&pw, &argon2i)
                .await
                .expect("verify"),
            Verified::Yes { needs_rehash: true }
        );
        // An argon2d hash is no stored form: an error, not a silent "no".
        let argon2d = argon2i.replace("$argon2i$", "$argon2d$");
        assert!(h
            .slot(&client())
            .expect("slot")
            .verify(&pw, &argon2d)
            .await
            .is_err());
    }

    /// Each imported algorithm verifies the right password (asking for a
    /// re-hash) and refuses a wrong one; an unusable password never matches.
    #[tokio::test]
    async fn imported_hashes_verify_with_their_own_algorithm() {
        use crate::domain::password_hash::StoredHash;
        let h = hasher(1024, 1);
        let salt = b"0123456789abcdef".to_vec();
        let mut pbkdf = vec![0u8; 64];
        pbkdf2::pbkdf2_hmac::<sha2::Sha512>(b"right password", &salt, 1000, &mut pbkdf);
        let mut scrypted = vec![0u8; 64];
        scrypt::scrypt(
            b"right password",
            &salt,
            &scrypt::Params::new(10, 8, 1).expect("params"),
            &mut scrypted,
        )
        .expect("scrypt");
        let hex: String = sha2::Sha256::digest(b"right password")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let stored = [
            StoredHash::Pbkdf2 {
                prf: Prf::Sha512,
                iterations: 1000,
                salt: salt.clone(),
                hash: pbkdf,
            }
            .encode(),
            StoredHash::Scrypt {
                log_n: 10,
                r: 8,
                p: 1,
                salt,
                hash: scrypted,
            }
            .encode(),
            bcrypt::hash("right password", 4).expect("bcrypt"),
            format!(
                "$django-bcrypt-sha256{}",
                bcrypt::hash(hex, 4).expect("bcrypt")
            ),
        ];
        for phc in &stored {
            let verify = |password: &'static str| {
                let slot = h.slot(&client()).expect("slot");
                let phc = phc.clone();
                async move { slot.verify(&Password::new(password), &phc).await }
            };
            assert_eq!(
                verify("right password").await.expect("verify"),
                Verified::Yes { needs_rehash: true },
                "{phc}"
            );
            assert_eq!(
                verify("wrong password").await.expect("verify"),
                Verified::No
            );
        }
        assert_eq!(
            h.slot(&client())
                .expect("slot")
                .verify(&Password::new(""), "!")
                .await
                .expect("verify"),
            Verified::No
        );
    }

    /// A full queue or share refuses at once; places come back when the
    /// slots are dropped unused or their jobs have run.
    #[tokio::test]
    async fn the_queue_refuses_past_its_bounds_and_frees_places() {
        let h = hasher(1024, 1);
        let other = Client::new("10.0.0.1".parse().expect("ip"), 64);
        let mine: Vec<_> = (0..4).map(|_| h.slot(&client()).expect("slot")).collect();
        assert!(matches!(
            h.slot(&client()),
            Err(AuthError::RateLimited {
                retry_after_secs: 1
            })
        ));
        let theirs: Vec<_> = (0..4).map(|_| h.slot(&other).expect("slot")).collect();
        let third = Client::new("10.0.0.2".parse().expect("ip"), 64);
        assert!(h.slot(&third).is_err(), "the whole queue is full");
        drop(mine);
        let pw = Password::new("correct horse battery");
        let phc = h
            .slot(&third)
            .expect("freed")
            .hash(&pw)
            .await
            .expect("hash");
        drop(theirs);
        for _ in 0..8 {
            h.slot(&client())
                .expect("slot")
                .verify(&pw, &phc)
                .await
                .expect("verify");
        }
        assert!(
            h.slot(&client()).is_ok(),
            "served jobs give their places back"
        );
    }

    #[tokio::test]
    async fn hash_verify_and_rehash_detection() {
        let h = hasher(19_456, 2);
        let pw = Password::new("correct horse battery");
        let phc = h.hash(&pw, &client()).await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(
            h.slot(&client())
                .expect("slot")
                .verify(&pw, &phc)
                .await
                .expect("verify"),
            Verified::Yes {
                needs_rehash: false
            }
        );
        assert_eq!(
            h.slot(&client())
                .expect("slot")
                .verify(&Password::new("wrong horse battery"), &phc)
                .await
                .expect("verify"),
            Verified::No
        );
        let stronger = hasher(19_456, 3);
        assert_eq!(
            stronger
                .slot(&client())
                .expect("slot")
                .verify(&pw, &phc)
                .await
                .expect("verify"),
            Verified::Yes { needs_rehash: true }
        );
        h.slot(&client())
            .expect("slot")
            .verify_dummy(&pw)
            .await
            .expect("dummy verify");
        assert!(h
            .slot(&client())
            .expect("slot")
            .verify(&pw, "not a hash")
            .await
            .is_err());
    }
}
