//! What a stored password hash is: authql's own argon2id, or one taken over
//! from another system by `authql import`, in one self-describing string.
//!
//! Every stored hash is a PHC or MCF string whose identifier names the
//! algorithm exactly, so the column needs no second "algorithm" field and an
//! export carries hashes verbatim:
//!
//! | stored                                   | from                                   |
//! |------------------------------------------|----------------------------------------|
//! | `$argon2id$v=19$m=..,t=..,p=..$salt$hash` | authql; Django `argon2$`; Keycloak argon2 |
//! | `$argon2i$...`                           | older Django `argon2$argon2i$`          |
//! | `$pbkdf2-sha256$i=N,l=L$salt$hash`       | Django `pbkdf2_sha256$`; Keycloak       |
//! | `$pbkdf2-sha1$...`, `$pbkdf2-sha512$...` | Django `pbkdf2_sha1$`; Keycloak         |
//! | `$scrypt$ln=..,r=..,p=..$salt$hash`      | Django `scrypt$`                        |
//! | `$2a$`, `$2b$`, `$2y$` (bcrypt)           | Supabase; Django `bcrypt$`              |
//! | `$django-bcrypt-sha256$2b$...`           | Django `bcrypt_sha256$` (pre-hashed)    |
//! | `!`                                      | an unusable password (Django `!...`, no password) |
//!
//! Salts and hashes in PHC strings are standard base64 without padding.
//! Parsing also checks each algorithm's cost against bounds, so that no
//! imported hash can make one sign-in take minutes or gigabytes.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use super::import::SkipReason;

/// PHC's base64: standard alphabet, no padding (read with or without).
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The stored form of a password that can never match.
pub const UNUSABLE: &str = "!";

/// Whether a stored hash is an unusable password (`!`, or Django's `!...`),
/// told without reading the rest.
pub fn is_unusable(stored: &str) -> bool {
    stored.starts_with('!')
}

/// Bounds on imported hashes' costs (README, "Moving in"), so that one
/// sign-in against any stored hash takes at most about a second of one
/// hashing thread and 256 MiB.
/// pbkdf2: iterations times output blocks (one block per digest length).
pub const PBKDF2_MAX_WORK: u64 = 2_000_000;
/// scrypt: memory (128 * r * N bytes), and memory times p.
pub const SCRYPT_MAX_MEMORY_BYTES: u64 = 256 << 20;
pub const SCRYPT_MAX_WORK_BYTES: u64 = 256 << 20;
pub const BCRYPT_MAX_COST: u32 = 13;
pub const ARGON2_MAX_MEMORY_KIB: u32 = 256 << 10;
pub const ARGON2_MAX_PASSES: u32 = 16;
pub const ARGON2_MAX_LANES: u32 = 16;
const MAX_SALT_BYTES: usize = 1024;
const MIN_HASH_BYTES: usize = 16;
const MAX_HASH_BYTES: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prf {
    Sha1,
    Sha256,
    Sha512,
}

impl Prf {
    fn name(self) -> &'static str {
        match self {
            Prf::Sha1 => "sha1",
            Prf::Sha256 => "sha256",
            Prf::Sha512 => "sha512",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(Prf::Sha1),
            "sha256" => Some(Prf::Sha256),
            "sha512" => Some(Prf::Sha512),
            _ => None,
        }
    }
}

/// How a bcrypt hash was fed the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BcryptInput {
    /// The password itself (bcrypt reads at most 72 bytes of it).
    Password,
    /// Django's `bcrypt_sha256`: the hex SHA-256 of the password.
    DjangoSha256Hex,
}

/// A stored hash, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredHash {
    /// `$argon2id$` or `$argon2i$`, verified by the argon2 engine as is.
    Argon2 {
        phc: String,
        argon2i: bool,
    },
    Pbkdf2 {
        prf: Prf,
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Scrypt {
        log_n: u8,
        r: u32,
        p: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Bcrypt {
        mcf: String,
        input: BcryptInput,
    },
    Unusable,
}

/// Why a hash string cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("unsupported password hash format{0}")]
    Unsupported(String),
    #[error("malformed {0} hash")]
    Malformed(&'static str),
    #[error("{0} cost out of the accepted bounds")]
    OutOfBounds(&'static str),
}

impl HashError {
    /// The reason an import report gives.
    pub fn reason(&self) -> SkipReason {
        match self {
            HashError::Unsupported(_) => SkipReason::UnsupportedHash,
            HashError::Malformed(_) => SkipReason::MalformedHash,
            HashError::OutOfBounds(_) => SkipReason::HashOutOfBounds,
        }
    }
}

fn unsupported(value: &str) -> HashError {
    // Only an algorithm's name, never hash material, goes into a report:
    // the text before a `$`, if it looks like a name; a value without one
    // (an unsalted MD5 hex, a plaintext password) is not named at all.
    let value = value.strip_prefix('$').unwrap_or(value);
    let name = value.split_once('$').map(|(name, _)| name).filter(|name| {
        (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    });
    HashError::Unsupported(name.map(|n| format!(" ({n})")).unwrap_or_default())
}

impl StoredHash {
    /// Reads a stored hash (what the `password_hash` column and an authql
    /// export hold), checking its costs.
    pub fn parse(stored: &str) -> Result<Self, HashError> {
        if is_unusable(stored) {
            return Ok(StoredHash::Unusable);
        }
        let hash = if let Some(rest) = stored.strip_prefix("$django-bcrypt-sha256") {
            bcrypt(rest, BcryptInput::DjangoSha256Hex)?
        } else if stored.starts_with("$argon2id$") || stored.starts_with("$argon2i$") {
            argon2(stored)?
        } else if let Some(rest) = stored.strip_prefix("$pbkdf2-") {
            parse_pbkdf2_phc(rest)?
        } else if let Some(rest) = stored.strip_prefix("$scrypt$") {
            parse_scrypt_phc(rest)?
        } else if ["$2a$", "$2b$", "$2y$"]
            .iter()
            .any(|p| stored.starts_with(p))
        {
            bcrypt(stored, BcryptInput::Password)?
        } else {
            return Err(unsupported(stored));
        };
        Ok(hash)
    }

    /// The stored form (the inverse of [`StoredHash::parse`]).
    pub fn encode(&self) -> String {
        match self {
            StoredHash::Argon2 { phc, .. } => phc.clone(),
            StoredHash::Pbkdf2 {
                prf,
                iterations,
                salt,
                hash,
            } => format!(
                "$pbkdf2-{}$i={iterations},l={}${}${}",
                prf.name(),
                hash.len(),
                B64.encode(salt),
                B64.encode(hash)
            ),
            StoredHash::Scrypt {
                log_n,
                r,
                p,
                salt,
                hash,
            } => format!(
                "$scrypt$ln={log_n},r={r},p={p}${}${}",
                B64.encode(salt),
                B64.encode(hash)
            ),
            StoredHash::Bcrypt {
                mcf,
                input: BcryptInput::Password,
            } => mcf.clone(),
            StoredHash::Bcrypt {
                mcf,
                input: BcryptInput::DjangoSha256Hex,
            } => format!("$django-bcrypt-sha256{mcf}"),
            StoredHash::Unusable => UNUSABLE.to_owned(),
        }
    }

    /// Whether this is authql's own algorithm (argon2id); anything else is
    /// re-hashed at the next successful sign-in.
    pub fn is_native(&self) -> bool {
        matches!(self, StoredHash::Argon2 { argon2i: false, .. })
    }

    /// A Django `password` field (`algorithm$...`).
    pub fn from_django(encoded: &str) -> Result<Self, HashError> {
        if encoded.is_empty() || encoded.starts_with('!') {
            return Ok(StoredHash::Unusable);
        }
        let (algorithm, rest) = encoded
            .split_once('$')
            .ok_or_else(|| unsupported(encoded))?;
        match algorithm {
            "pbkdf2_sha256" | "pbkdf2_sha1" => {
                let prf = if algorithm == "pbkdf2_sha256" {
                    Prf::Sha256
                } else {
                    Prf::Sha1
                };
                let mut parts = rest.splitn(3, '$');
                let (Some(iterations), Some(salt), Some(hash)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(HashError::Malformed("pbkdf2"));
                };
                pbkdf2(
                    prf,
                    iterations
                        .parse()
                        .map_err(|_| HashError::Malformed("pbkdf2"))?,
                    // Django's salt is text, used as its UTF-8 bytes.
                    salt.as_bytes().to_vec(),
                    decode(hash, "pbkdf2")?,
                )
            }
            // `argon2$argon2id$v=19$m=...`: a PHC string after the prefix.
            "argon2" => argon2(&format!("${rest}")),
            "bcrypt_sha256" => bcrypt(rest, BcryptInput::DjangoSha256Hex),
            "bcrypt" => bcrypt(rest, BcryptInput::Password),
            // `scrypt$N$salt$r$p$hash` with N itself, not its log.
            "scrypt" => {
                let parts: Vec<&str> = rest.split('$').collect();
                let [n, salt, r, p, hash] = parts[..] else {
                    return Err(HashError::Malformed("scrypt"));
                };
                let n: u64 = n.parse().map_err(|_| HashError::Malformed("scrypt"))?;
                if !n.is_power_of_two() || n < 2 {
                    return Err(HashError::Malformed("scrypt"));
                }
                scrypt(
                    n.trailing_zeros() as u8,
                    r.parse().map_err(|_| HashError::Malformed("scrypt"))?,
                    p.parse().map_err(|_| HashError::Malformed("scrypt"))?,
                    salt.as_bytes().to_vec(),
                    decode(hash, "scrypt")?,
                )
            }
            _ => Err(unsupported(encoded)),
        }
    }

    /// A Keycloak password credential: `credentialData` names the algorithm,
    /// iterations and parameters, `secretData` holds the salt and value.
    pub fn from_keycloak(
        algorithm: &str,
        iterations: u32,
        salt_b64: &str,
        value_b64: &str,
        parameter: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, HashError> {
        let salt = decode(salt_b64, "keycloak")?;
        let hash = decode(value_b64, "keycloak")?;
        match algorithm {
            "pbkdf2" => pbkdf2(Prf::Sha1, iterations, salt, hash),
            "pbkdf2-sha256" => pbkdf2(Prf::Sha256, iterations, salt, hash),
            "pbkdf2-sha512" => pbkdf2(Prf::Sha512, iterations, salt, hash),
            "argon2" => {
                let number = |name: &str, default: u32| -> Result<u32, HashError> {
                    parameter(name).map_or(Ok(default), |v| {
                        v.parse().map_err(|_| HashError::Malformed("argon2"))
                    })
                };
                let variant = parameter("type").unwrap_or_else(|| "id".to_owned());
                let version = match parameter("version").as_deref() {
                    None | Some("1.3") => 19,
                    Some("1.0") => 16,
                    Some(_) => return Err(HashError::Malformed("argon2")),
                };
                if variant != "id" && variant != "i" {
                    return Err(unsupported(&format!("argon2{variant}$")));
                }
                let phc = format!(
                    "$argon2{variant}$v={version}$m={},t={iterations},p={}${}${}",
                    number("memory", 7168)?,
                    number("parallelism", 1)?,
                    B64.encode(&salt),
                    B64.encode(&hash)
                );
                argon2(&phc)
            }
            other => Err(unsupported(&format!("{other}$"))),
        }
    }
}

fn decode(b64: &str, what: &'static str) -> Result<Vec<u8>, HashError> {
    B64.decode(b64.trim())
        .map_err(|_| HashError::Malformed(what))
}

fn pbkdf2(
    prf: Prf,
    iterations: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
) -> Result<StoredHash, HashError> {
    if salt.len() > MAX_SALT_BYTES || !(MIN_HASH_BYTES..=MAX_HASH_BYTES).contains(&hash.len()) {
        return Err(HashError::Malformed("pbkdf2"));
    }
    let digest = match prf {
        Prf::Sha1 => 20,
        Prf::Sha256 => 32,
        Prf::Sha512 => 64,
    };
    let blocks = hash.len().div_ceil(digest) as u64;
    if iterations == 0 || u64::from(iterations) * blocks > PBKDF2_MAX_WORK {
        return Err(HashError::OutOfBounds("pbkdf2"));
    }
    Ok(StoredHash::Pbkdf2 {
        prf,
        iterations,
        salt,
        hash,
    })
}

fn scrypt(
    log_n: u8,
    r: u32,
    p: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
) -> Result<StoredHash, HashError> {
    if salt.len() > MAX_SALT_BYTES || !(MIN_HASH_BYTES..=MAX_HASH_BYTES).contains(&hash.len()) {
        return Err(HashError::Malformed("scrypt"));
    }
    // scrypt's memory is 128 * r * N bytes; its time grows with that and p.
    let memory = (1..32)
        .contains(&log_n)
        .then(|| u64::from(r).checked_mul(128)?.checked_mul(1 << log_n))
        .flatten();
    if memory.is_none_or(|m| {
        m > SCRYPT_MAX_MEMORY_BYTES || m.saturating_mul(u64::from(p)) > SCRYPT_MAX_WORK_BYTES
    }) || r == 0
        || p == 0
    {
        return Err(HashError::OutOfBounds("scrypt"));
    }
    Ok(StoredHash::Scrypt {
        log_n,
        r,
        p,
        salt,
        hash,
    })
}

/// `$2b$12$` + 22 salt and 31 hash characters of bcrypt's own base64.
fn bcrypt(mcf: &str, input: BcryptInput) -> Result<StoredHash, HashError> {
    let malformed = HashError::Malformed("bcrypt");
    let parts: Vec<&str> = mcf.split('$').collect();
    let ["", version, cost, rest] = parts[..] else {
        return Err(malformed);
    };
    if !matches!(version, "2a" | "2b" | "2y")
        || cost.len() != 2
        || rest.len() != 53
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    {
        return Err(malformed);
    }
    let cost: u32 = cost.parse().map_err(|_| HashError::Malformed("bcrypt"))?;
    if !(4..=BCRYPT_MAX_COST).contains(&cost) {
        return Err(HashError::OutOfBounds("bcrypt"));
    }
    Ok(StoredHash::Bcrypt {
        mcf: mcf.to_owned(),
        input,
    })
}

/// Checks an argon2 PHC string's shape and costs (the engine decodes it).
fn argon2(phc: &str) -> Result<StoredHash, HashError> {
    let malformed = HashError::Malformed("argon2");
    let parts: Vec<&str> = phc.split('$').collect();
    let ["", variant, version, params, salt, hash] = parts[..] else {
        return Err(malformed);
    };
    let algorithm = match variant {
        "argon2id" => argon2_rust::Algorithm::Argon2id,
        "argon2i" => argon2_rust::Algorithm::Argon2i,
        _ => return Err(unsupported(&format!("{variant}$"))),
    };
    if !matches!(version, "v=19" | "v=16") {
        return Err(malformed);
    }
    let mut costs = (None, None, None);
    for pair in params.split(',') {
        let (key, value) = pair.split_once('=').ok_or(HashError::Malformed("argon2"))?;
        let value: u32 = value.parse().map_err(|_| HashError::Malformed("argon2"))?;
        match key {
            "m" => costs.0 = Some(value),
            "t" => costs.1 = Some(value),
            "p" => costs.2 = Some(value),
            _ => return Err(HashError::Malformed("argon2")),
        }
    }
    let (Some(m), Some(t), Some(p)) = costs else {
        return Err(malformed);
    };
    let (salt, hash) = (decode(salt, "argon2")?, decode(hash, "argon2")?);
    if salt.len() < 8
        || salt.len() > MAX_SALT_BYTES
        || !(MIN_HASH_BYTES..=MAX_HASH_BYTES).contains(&hash.len())
    {
        return Err(malformed);
    }
    if m > ARGON2_MAX_MEMORY_KIB
        || t == 0
        || t > ARGON2_MAX_PASSES
        || p == 0
        || p > ARGON2_MAX_LANES
    {
        return Err(HashError::OutOfBounds("argon2"));
    }
    // What the engine reads at sign-in must read now (parameter order,
    // minimum memory per lane), or the account could never sign in.
    argon2_rust::decode_string(phc, algorithm).map_err(|_| HashError::Malformed("argon2"))?;
    Ok(StoredHash::Argon2 {
        phc: phc.to_owned(),
        argon2i: variant == "argon2i",
    })
}

fn parse_pbkdf2_phc(rest: &str) -> Result<StoredHash, HashError> {
    let malformed = HashError::Malformed("pbkdf2");
    let parts: Vec<&str> = rest.split('$').collect();
    let [prf, params, salt, hash] = parts[..] else {
        return Err(malformed);
    };
    let prf = Prf::from_name(prf).ok_or_else(|| unsupported(&format!("pbkdf2-{prf}")))?;
    let mut iterations = None;
    let mut length = None;
    for pair in params.split(',') {
        match pair.split_once('=') {
            Some(("i", v)) => iterations = v.parse::<u32>().ok(),
            Some(("l", v)) => length = v.parse::<usize>().ok(),
            _ => return Err(malformed),
        }
    }
    let hash = decode(hash, "pbkdf2")?;
    if length.is_some_and(|l| l != hash.len()) {
        return Err(malformed);
    }
    pbkdf2(
        prf,
        iterations.ok_or(HashError::Malformed("pbkdf2"))?,
        decode(salt, "pbkdf2")?,
        hash,
    )
}

fn parse_scrypt_phc(rest: &str) -> Result<StoredHash, HashError> {
    let malformed = HashError::Malformed("scrypt");
    let parts: Vec<&str> = rest.split('$').collect();
    let [params, salt, hash] = parts[..] else {
        return Err(malformed);
    };
    let (mut log_n, mut r, mut p) = (None, None, None);
    for pair in params.split(',') {
        match pair.split_once('=') {
            Some(("ln", v)) => log_n = v.parse::<u8>().ok(),
            Some(("r", v)) => r = v.parse::<u32>().ok(),
            Some(("p", v)) => p = v.parse::<u32>().ok(),
            _ => return Err(malformed),
        }
    }
    let (Some(log_n), Some(r), Some(p)) = (log_n, r, p) else {
        return Err(malformed);
    };
    scrypt(
        log_n,
        r,
        p,
        decode(salt, "scrypt")?,
        decode(hash, "scrypt")?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BCRYPT: &str = "$2b$12$KIXQJw6m8aY0ZbRpFc0ZJeQe4z8Hq3jv4Yb8bYV8c0p3vS6oU9K1e";

    #[test]
    fn django_strings_become_self_describing_stored_hashes_and_read_back() {
        let cases = [
            (
                "pbkdf2_sha256$600000$c2FsdHNhbHQ$QmFzZTY0SGFzaE9mVGhpcnR5VHdvQnl0ZXMxMjM0NTY=",
                "$pbkdf2-sha256$i=600000,l=32$YzJGc2RITmhiSFE$QmFzZTY0SGFzaE9mVGhpcnR5VHdvQnl0ZXMxMjM0NTY",
            ),
            (
                "argon2$argon2id$v=19$m=102400,t=2,p=8$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
                "$argon2id$v=19$m=102400,t=2,p=8$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            ),
        ];
        for (django, stored) in cases {
            let parsed = StoredHash::from_django(django).expect(django);
            assert_eq!(parsed.encode(), stored);
            assert_eq!(StoredHash::parse(stored), Ok(parsed));
        }
        let bcrypt_sha = StoredHash::from_django(&format!("bcrypt_sha256${BCRYPT}")).expect("b");
        assert_eq!(
            bcrypt_sha.encode(),
            format!("$django-bcrypt-sha256{BCRYPT}")
        );
        assert_eq!(StoredHash::parse(&bcrypt_sha.encode()), Ok(bcrypt_sha));
        assert_eq!(
            StoredHash::from_django(&format!("bcrypt${BCRYPT}"))
                .expect("b")
                .encode(),
            BCRYPT
        );
        let scrypt = StoredHash::from_django(
            "scrypt$16384$salt$8$1$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g=",
        )
        .expect("scrypt");
        assert!(scrypt.encode().starts_with("$scrypt$ln=14,r=8,p=1$c2FsdA$"));
        assert_eq!(StoredHash::parse(&scrypt.encode()), Ok(scrypt));
        for unusable in ["!", "!x7Hk2", ""] {
            assert_eq!(StoredHash::from_django(unusable), Ok(StoredHash::Unusable));
        }
    }

    #[test]
    fn unknown_malformed_and_too_costly_hashes_are_refused_with_their_reason() {
        let reason = |s: &str| StoredHash::from_django(s).expect_err(s).reason().as_str();
        assert_eq!(reason("md5$salt$0123"), "unsupported_hash");
        assert_eq!(reason("unsalted_md5$abc"), "unsupported_hash");
        assert_eq!(reason("plaintext"), "unsupported_hash");
        assert_eq!(reason("pbkdf2_sha256$many$salt$aGFzaA=="), "malformed_hash");
        assert_eq!(reason("pbkdf2_sha256$1000$salt$%%%"), "malformed_hash");
        assert_eq!(
            reason("pbkdf2_sha256$99999999$salt$QmFzZTY0SGFzaE9mVGhpcnR5VHdvQnl0ZXMxMjM0NTY="),
            "hash_out_of_bounds"
        );
        // Work counts output blocks: 128 bytes of sha1 are 7 of them.
        let long = B64.encode([0u8; 128]);
        assert_eq!(
            StoredHash::parse(&format!("$pbkdf2-sha1$i=1000000,l=128$c2FsdA${long}"))
                .map_err(|e| e.reason().as_str()),
            Err("hash_out_of_bounds")
        );
        assert_eq!(
            reason("argon2$argon2d$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"),
            "unsupported_hash"
        );
        assert_eq!(
            reason("argon2$argon2id$v=19$t=2,m=65536,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"),
            "malformed_hash",
            "the engine reads m, t, p in that order"
        );
        // No name without a `$`: a bare MD5 hex or a plaintext stays out.
        let bare = StoredHash::from_django("5f4dcc3b5aa765d61d8327deb882cf99").expect_err("md5");
        assert_eq!(bare.to_string(), "unsupported password hash format");
        assert_eq!(
            reason("scrypt$1048576$salt$8$1$aGFzaGhhc2hoYXNoaGFzaA=="),
            "hash_out_of_bounds"
        );
        assert_eq!(
            reason("scrypt$1000$salt$8$1$aGFzaGhhc2hoYXNoaGFzaA=="),
            "malformed_hash"
        );
        assert_eq!(
            reason("bcrypt$$2b$31$KIXQJw6m8aY0ZbRpFc0ZJeQe4z8Hq3jv4Yb8bYV8c0p3vS6oU9K1e"),
            "hash_out_of_bounds"
        );
        assert_eq!(reason("bcrypt$$2b$12$short"), "malformed_hash");
        assert_eq!(
            reason("argon2$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"),
            "hash_out_of_bounds"
        );
        // The report names the algorithm but carries no hash material.
        let err = StoredHash::from_django("md5$secretsalt$secrethash").expect_err("md5");
        assert_eq!(err.to_string(), "unsupported password hash format (md5)");
        assert!(StoredHash::parse("plain text password").is_err());
    }

    #[test]
    fn keycloak_credentials_map_to_pbkdf2_and_argon2() {
        let none = |_: &str| None;
        let sha512 = StoredHash::from_keycloak(
            "pbkdf2-sha512",
            210_000,
            "c2FsdHNhbHRzYWx0c2FsdA==",
            &B64.encode([7u8; 64]),
            none,
        )
        .expect("pbkdf2-sha512");
        assert!(sha512.encode().starts_with("$pbkdf2-sha512$i=210000,l=64$"));
        assert_eq!(StoredHash::parse(&sha512.encode()), Ok(sha512));
        let params = |name: &str| match name {
            "type" => Some("id".to_owned()),
            "memory" => Some("7168".to_owned()),
            _ => None,
        };
        let argon =
            StoredHash::from_keycloak("argon2", 5, "c2FsdHNhbHQ=", &B64.encode([1u8; 32]), params)
                .expect("argon2");
        assert!(argon.is_native());
        assert!(argon.encode().starts_with("$argon2id$v=19$m=7168,t=5,p=1$"));
        assert_eq!(
            StoredHash::from_keycloak("md5", 1, "", "", none).map_err(|e| e.reason().as_str()),
            Err("unsupported_hash")
        );
    }
}
