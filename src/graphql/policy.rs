//! Per-request policy as an async-graphql extension:
//! - codes the engine's own errors (`GRAPHQL_PARSE_FAILED`,
//!   `GRAPHQL_VALIDATION_FAILED`);
//! - refuses documents with too many root fields (aliases count) or with
//!   more than one credential attempt (signUp/createToken/refreshToken);
//! - records request count and latency per root operation.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest,
    NextValidation,
};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, Selection, SelectionSet,
};
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Variables};

use super::CREDENTIAL_MUTATIONS;
use crate::error::{with_code, GRAPHQL_PARSE_FAILED, GRAPHQL_VALIDATION_FAILED};
use crate::metrics::Metrics;

/// Root field names that may appear in a metrics label.
const KNOWN_ROOT_FIELDS: [&str; 9] = [
    "me",
    "signOutEverywhere",
    "signUp",
    "createToken",
    "refreshToken",
    "revokeToken",
    "__schema",
    "__type",
    "__typename",
];

pub struct RequestPolicy {
    max_root_fields: usize,
    introspection: bool,
    metrics: Arc<Metrics>,
    documents: Arc<DocumentCache>,
}

/// Parsed documents that passed the checks here, by their text: clients
/// send the same few documents over and over, and parsing is a good part of
/// a small request's cost. Bounded: small documents only, emptied when full.
#[derive(Default)]
struct DocumentCache {
    entries: Mutex<HashMap<String, Arc<Parsed>>>,
}

struct Parsed {
    document: ExecutableDocument,
    /// (operation name, metrics label) of each operation in the document.
    labels: Vec<(Option<String>, String)>,
}

const CACHE_ENTRIES: usize = 512;
const CACHE_MAX_DOCUMENT: usize = 4096;

impl DocumentCache {
    fn get(&self, query: &str) -> Option<Arc<Parsed>> {
        lock(&self.entries).get(query).cloned()
    }

    fn put(&self, query: &str, parsed: Arc<Parsed>) {
        if query.len() > CACHE_MAX_DOCUMENT {
            return;
        }
        let mut entries = lock(&self.entries);
        if entries.len() >= CACHE_ENTRIES {
            entries.clear();
        }
        entries.insert(query.to_owned(), parsed);
    }
}

impl RequestPolicy {
    pub fn new(max_root_fields: usize, introspection: bool, metrics: Arc<Metrics>) -> Self {
        Self {
            max_root_fields,
            introspection,
            metrics,
            documents: Arc::default(),
        }
    }
}

impl ExtensionFactory for RequestPolicy {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PolicyExtension {
            max_root_fields: self.max_root_fields,
            introspection: self.introspection,
            documents: self.documents.clone(),
            metrics: self.metrics.clone(),
            labels: Mutex::new(Vec::new()),
            operation: Mutex::new(None),
        })
    }
}

struct PolicyExtension {
    max_root_fields: usize,
    /// When off, `__schema`/`__type` are refused with an error (the engine
    /// alone would answer them with a silent null).
    introspection: bool,
    documents: Arc<DocumentCache>,
    metrics: Arc<Metrics>,
    /// (operation name, metrics label) of each operation in the document.
    labels: Mutex<Vec<(Option<String>, String)>>,
    /// Label of the operation actually executed.
    operation: Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl Extension for PolicyExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let response = next.run(ctx).await;
        let label = lock(&self.operation)
            .clone()
            .unwrap_or_else(|| "invalid".to_owned());
        self.metrics
            .observe_request(&label, response.errors.is_empty(), started.elapsed());
        response
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if let Some(parsed) = self.documents.get(query) {
            self.remember_labels(parsed.labels.clone());
            return Ok(parsed.document.clone());
        }
        let document = next
            .run(ctx, query, variables)
            .await
            .map_err(|e| with_code(e, GRAPHQL_PARSE_FAILED))?;
        let mut labels = Vec::new();
        for (name, operation) in operations(&document) {
            let mut roots = Vec::new();
            collect_root_fields(
                &document,
                &operation.selection_set.node,
                &mut roots,
                &mut HashSet::new(),
                0,
            );
            if roots.len() > self.max_root_fields {
                return Err(with_code(
                    ServerError::new(
                        format!(
                            "too many root fields: {} (at most {} per operation, aliases included)",
                            roots.len(),
                            self.max_root_fields
                        ),
                        None,
                    ),
                    GRAPHQL_VALIDATION_FAILED,
                ));
            }
            if !self.introspection && roots.iter().any(|r| r == "__schema" || r == "__type") {
                return Err(with_code(
                    ServerError::new("introspection is disabled on this server", None),
                    GRAPHQL_VALIDATION_FAILED,
                ));
            }
            let attempts = roots
                .iter()
                .filter(|f| CREDENTIAL_MUTATIONS.contains(&f.as_str()))
                .count();
            if attempts > 1 {
                return Err(with_code(
                    ServerError::new(
                        "at most one of signUp, createToken, refreshToken per document",
                        None,
                    ),
                    GRAPHQL_VALIDATION_FAILED,
                ));
            }
            labels.push((name, label_of(&roots)));
        }
        self.remember_labels(labels.clone());
        self.documents.put(
            query,
            Arc::new(Parsed {
                document: document.clone(),
                labels,
            }),
        );
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| with_code(e, GRAPHQL_VALIDATION_FAILED))
                .collect()
        })
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let label = lock(&self.labels)
            .iter()
            .find(|(name, _)| name.as_deref() == operation_name)
            .map(|(_, label)| label.clone());
        if label.is_some() {
            *lock(&self.operation) = label;
        }
        next.run(ctx, operation_name).await
    }
}

impl PolicyExtension {
    fn remember_labels(&self, labels: Vec<(Option<String>, String)>) {
        if let [(_, only)] = labels.as_slice() {
            *lock(&self.operation) = Some(only.clone());
        }
        *lock(&self.labels) = labels;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn operations(doc: &ExecutableDocument) -> Vec<(Option<String>, &OperationDefinition)> {
    match &doc.operations {
        DocumentOperations::Single(op) => vec![(None, &op.node)],
        DocumentOperations::Multiple(ops) => ops
            .iter()
            .map(|(name, op)| (Some(name.to_string()), &op.node))
            .collect(),
    }
}

/// Root field names of a selection set, through fragments. Runs before
/// validation, so fragment cycles and absurd nesting are cut off here.
fn collect_root_fields(
    doc: &ExecutableDocument,
    set: &SelectionSet,
    out: &mut Vec<String>,
    seen_fragments: &mut HashSet<String>,
    depth: usize,
) {
    if depth > 16 {
        return;
    }
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => out.push(field.node.name.node.to_string()),
            Selection::InlineFragment(inline) => collect_root_fields(
                doc,
                &inline.node.selection_set.node,
                out,
                seen_fragments,
                depth + 1,
            ),
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.to_string();
                if !seen_fragments.insert(name.clone()) {
                    continue;
                }
                if let Some(fragment) = doc.fragments.get(spread.node.fragment_name.node.as_str()) {
                    collect_root_fields(
                        doc,
                        &fragment.node.selection_set.node,
                        out,
                        seen_fragments,
                        depth + 1,
                    );
                }
            }
        }
    }
}

/// A bounded label: the sorted, distinct known root fields, or "invalid".
fn label_of(roots: &[String]) -> String {
    if roots.is_empty()
        || roots
            .iter()
            .any(|r| !KNOWN_ROOT_FIELDS.contains(&r.as_str()))
    {
        return "invalid".to_owned();
    }
    let mut names: Vec<&str> = roots.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    names.join(",")
}
