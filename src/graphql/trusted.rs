//! Trusted documents (persisted operations): a manifest of the documents a
//! deployment's own clients were built with, `{ "<sha256 hex>": "<document>" }`
//! as GraphQL Code Generator's client preset writes it
//! (`persistedDocuments: { hashAlgorithm: "sha256" }`).
//!
//! Each document is checked against its hash and prepared by the document
//! guard once, at load, so a request naming one by id skips the parse and
//! the guard's analysis. With `AUTHQL_TRUSTED_DOCUMENTS_ONLY`, documents
//! outside the manifest are refused (introspection too, unless
//! `AUTHQL_INTROSPECTION` is set explicitly).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sha2::{Digest as _, Sha256};

use super::document::{DocumentGuard, PreparedDocument, Refusal};
use crate::error::{BAD_REQUEST, PERSISTED_QUERY_NOT_FOUND, TRUSTED_DOCUMENT_REQUIRED};

/// One trusted document, prepared.
#[derive(Clone)]
pub struct TrustedDocument {
    pub text: Arc<str>,
    pub prepared: Arc<PreparedDocument>,
}

/// A loaded manifest.
#[derive(Default)]
pub struct Manifest {
    by_hash: HashMap<String, TrustedDocument>,
}

/// How a request names its document.
#[derive(Debug, Default, Clone)]
pub struct DocumentRef {
    /// `query`.
    pub text: Option<String>,
    /// `documentId` (`sha256:<hex>`, or the bare hex).
    pub document_id: Option<String>,
    /// Apollo's `extensions.persistedQuery.sha256Hash`.
    pub apq_hash: Option<String>,
}

/// The document a request will run.
pub enum Resolved {
    /// From the manifest, prepared at load.
    Trusted(TrustedDocument),
    /// Text to prepare now.
    Text(String),
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn refusal(code: &'static str, message: &str) -> Refusal {
    Refusal {
        code,
        message: message.to_owned(),
    }
}

impl Manifest {
    /// Reads and prepares a manifest; any entry whose key is not the
    /// SHA-256 of its document, or that the guard refuses, fails the load.
    pub fn load(path: &Path, guard: &DocumentGuard) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let entries: HashMap<String, String> = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a trusted-documents manifest ({{\"<sha256>\": \"<document>\"}}): {e}",
                path.display()
            )
        })?;
        let mut by_hash = HashMap::with_capacity(entries.len());
        for (hash, document) in entries {
            let hash = hash.to_ascii_lowercase();
            if sha256_hex(&document) != hash {
                anyhow::bail!(
                    "{}: the entry {hash} is not the SHA-256 of its document \
                     (generate it with hashAlgorithm: \"sha256\")",
                    path.display()
                );
            }
            let prepared = guard.prepare(&document).map_err(|refusal| {
                anyhow::anyhow!(
                    "{}: the document {hash} is refused: {}",
                    path.display(),
                    refusal.message
                )
            })?;
            by_hash.insert(
                hash,
                TrustedDocument {
                    text: document.into(),
                    prepared,
                },
            );
        }
        Ok(Self { by_hash })
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    fn get(&self, hash: &str) -> Option<&TrustedDocument> {
        self.by_hash.get(&hash.to_ascii_lowercase())
    }

    /// The document `request` names, or why it is refused. `only`: refuse
    /// what is not in the manifest, but text `allowed_untrusted` accepts
    /// (introspection, when explicitly switched on).
    pub fn resolve(
        &self,
        request: DocumentRef,
        only: bool,
        allowed_untrusted: impl Fn(&str) -> bool,
    ) -> Result<Resolved, Refusal> {
        let id = match (&request.document_id, &request.apq_hash) {
            (Some(id), _) => Some(id.strip_prefix("sha256:").unwrap_or(id).to_owned()),
            (None, Some(hash)) => Some(hash.clone()),
            (None, None) => None,
        };
        if let Some(id) = id {
            if let Some(text) = &request.text {
                // A text beside its hash must be that hash's document.
                if sha256_hex(text) != id.to_ascii_lowercase() {
                    return Err(refusal(
                        BAD_REQUEST,
                        "the document's SHA-256 is not the hash the request names",
                    ));
                }
            }
            return match (self.get(&id), request.text) {
                (Some(trusted), _) => Ok(Resolved::Trusted(trusted.clone())),
                // Apollo's protocol: a client that sent the hash alone
                // sends the text next; a trusted-only server never runs it.
                (None, None) => Err(refusal(
                    PERSISTED_QUERY_NOT_FOUND,
                    "PersistedQueryNotFound: no trusted document has this id",
                )),
                (None, Some(text)) if !only => Ok(Resolved::Text(text)),
                (None, Some(_)) => Err(refusal(
                    TRUSTED_DOCUMENT_REQUIRED,
                    "this server runs trusted documents only",
                )),
            };
        }
        let Some(text) = request.text else {
            return Err(refusal(
                BAD_REQUEST,
                "a GraphQL request needs `query` or `documentId`",
            ));
        };
        if !only {
            return Ok(Resolved::Text(text));
        }
        match self.get(&sha256_hex(&text)) {
            Some(trusted) => Ok(Resolved::Trusted(trusted.clone())),
            None if allowed_untrusted(&text) => Ok(Resolved::Text(text)),
            None => Err(refusal(
                TRUSTED_DOCUMENT_REQUIRED,
                "this server runs trusted documents only: send a `documentId` from its manifest",
            )),
        }
    }
}

/// Whether every operation of `text` reads introspection fields alone
/// (`__schema`, `__type`, `__typename`): what GraphiQL and code generators
/// send, allowed beside trusted documents when introspection is on.
pub fn is_introspection_only(guard: &DocumentGuard, text: &str) -> bool {
    guard.prepare(text).is_ok_and(|prepared| {
        !prepared.operations.is_empty()
            && prepared
                .operations
                .iter()
                .all(|op| op.label != "invalid" && op.label.split(',').all(|f| f.starts_with("__")))
    })
}

/// The manifest in force, replaced whole by a reload (SIGHUP).
pub struct TrustedDocuments {
    pub path: Option<PathBuf>,
    pub only: bool,
    current: RwLock<Arc<Manifest>>,
}

impl TrustedDocuments {
    pub fn load(path: Option<PathBuf>, only: bool, guard: &DocumentGuard) -> anyhow::Result<Self> {
        let manifest = match &path {
            Some(path) => Manifest::load(path, guard)?,
            None => Manifest::default(),
        };
        Ok(Self {
            path,
            only,
            current: RwLock::new(Arc::new(manifest)),
        })
    }

    pub fn current(&self) -> Arc<Manifest> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the file again; on any error the manifest in force stays.
    pub fn reload(&self, guard: &DocumentGuard) -> anyhow::Result<usize> {
        let Some(path) = &self.path else {
            return Ok(0);
        };
        let manifest = Manifest::load(path, guard)?;
        let n = manifest.len();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(manifest);
        Ok(n)
    }
}
