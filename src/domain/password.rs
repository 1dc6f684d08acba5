//! The password policy: length (NIST SP 800-63B: at least 8, long
//! passphrases allowed, capped at 256 so hashing cost cannot be abused), not on
//! the shipped common-password list, not too similar to the user's own data.
//! No composition rules (NIST advises against them).

use std::collections::HashSet;

use super::FieldCode;

pub const MIN_CHARS: usize = 8;
pub const MAX_CHARS: usize = 256;
/// Django's UserAttributeSimilarityValidator default.
const MAX_SIMILARITY: f64 = 0.7;

/// 19,640 common passwords, lower-cased (see data/README.md for the source).
const COMMON_PASSWORDS: &str = include_str!("../../data/common-passwords.txt");

/// A password exactly as the user typed it: never trimmed, never logged.
pub type Password = super::Secret;

pub struct PasswordPolicy {
    common: HashSet<&'static str>,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl PasswordPolicy {
    pub fn new() -> Self {
        let common = COMMON_PASSWORDS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        Self { common }
    }

    pub fn common_list_len(&self) -> usize {
        self.common.len()
    }

    /// Every rule the password breaks, with a message for each. `attributes`
    /// are the user's own data (username, e-mail, names) it must not resemble.
    pub fn check(&self, password: &str, attributes: &[&str]) -> Vec<(FieldCode, String)> {
        let mut broken = Vec::new();
        if password.trim().is_empty() {
            broken.push((FieldCode::FieldMissing, "password is required".to_owned()));
            return broken;
        }
        let chars = password.chars().count();
        if chars < MIN_CHARS {
            broken.push((
                FieldCode::TooShort,
                format!("password must be at least {MIN_CHARS} characters"),
            ));
        }
        if chars > MAX_CHARS {
            broken.push((
                FieldCode::TooLong,
                format!("password must be at most {MAX_CHARS} characters"),
            ));
            // The rules below are pointless (and quadratic) on huge inputs.
            return broken;
        }
        let lowered = password.to_lowercase();
        if self.common.contains(lowered.as_str()) {
            broken.push((
                FieldCode::TooCommon,
                "password is too common; choose a less guessable one".to_owned(),
            ));
        }
        if attributes.iter().any(|a| too_similar(&lowered, a)) {
            broken.push((
                FieldCode::TooSimilar,
                "password is too similar to the username, e-mail or name".to_owned(),
            ));
        }
        broken
    }
}

/// Django's rule: compare with the whole attribute and with each of its parts
/// (split on non-word characters), using difflib's `quick_ratio`.
fn too_similar(password_lower: &str, attribute: &str) -> bool {
    let attribute = attribute.to_lowercase();
    let parts = attribute
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .chain(std::iter::once(attribute.as_str()));
    let password_len = password_lower.chars().count();
    parts.filter(|p| !p.is_empty()).any(|part| {
        let part_len = part.chars().count();
        // A part ten times shorter cannot reach the threshold; skip the work.
        let bound = MAX_SIMILARITY / 2.0 * password_len as f64;
        if password_len >= 10 * part_len && (part_len as f64) < bound {
            return false;
        }
        quick_ratio(password_lower, part) >= MAX_SIMILARITY
    })
}

/// difflib.SequenceMatcher.quick_ratio: 2 * |multiset intersection| / (|a| + |b|).
fn quick_ratio(a: &str, b: &str) -> f64 {
    let mut counts = std::collections::HashMap::<char, i32>::new();
    for c in b.chars() {
        *counts.entry(c).or_default() += 1;
    }
    let mut matches = 0usize;
    for c in a.chars() {
        if let Some(n) = counts.get_mut(&c) {
            if *n > 0 {
                *n -= 1;
                matches += 1;
            }
        }
    }
    let total = a.chars().count() + b.chars().count();
    if total == 0 {
        return 1.0;
    }
    2.0 * matches as f64 / total as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(policy: &PasswordPolicy, pw: &str, attrs: &[&str]) -> Vec<FieldCode> {
        policy
            .check(pw, attrs)
            .into_iter()
            .map(|(c, _)| c)
            .collect()
    }

    #[test]
    fn ships_a_large_common_list() {
        assert!(PasswordPolicy::new().common_list_len() >= 10_000);
    }

    #[test]
    fn rules() {
        let p = PasswordPolicy::new();
        assert_eq!(codes(&p, "", &[]), vec![FieldCode::FieldMissing]);
        assert_eq!(codes(&p, "x7#k", &[]), vec![FieldCode::TooShort]);
        assert_eq!(codes(&p, &"a".repeat(257), &[]), vec![FieldCode::TooLong]);
        assert_eq!(codes(&p, "PassWord1", &[]), vec![FieldCode::TooCommon]);
        assert_eq!(
            codes(&p, "ivanpetrov1", &["ivanpetrov"]),
            vec![FieldCode::TooSimilar]
        );
        assert_eq!(
            codes(&p, "ivanpetrov", &["someone", "ivan.petrov@example.com"]),
            vec![FieldCode::TooSimilar]
        );
        assert!(codes(
            &p,
            "correct horse battery staple",
            &["ivan", "ivan@example.com"]
        )
        .is_empty());
        // 256 characters is allowed, counted as characters, not bytes.
        assert!(codes(&p, &"ж".repeat(256), &[]).is_empty());
    }

    #[test]
    fn debug_is_redacted() {
        assert!(!format!("{:?}", Password::new("hunter2hunter2")).contains("hunter2"));
    }
}
