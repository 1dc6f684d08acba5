//! Checks on a GraphQL document before the engine sees it, so that no
//! document can cost more than a linear pass to refuse:
//!
//! - a string-aware bracket scan refuses deep nesting (`[[[...`,
//!   `{a:{a:...`) before any parse: the parser recurses on values without a
//!   limit, and a few thousand levels overflow the stack, which kills the
//!   process rather than panicking;
//! - after parsing, the expanded size, depth and nesting of every operation
//!   and fragment are computed once per fragment (memoised), so fragments
//!   that spread each other twice per level (`F22` = 2^22 fields in 900 bytes)
//!   are refused before the engine's own checks, which expand every spread;
//! - root fields are counted by occurrence (async-graphql runs every
//!   occurrence, even two with one response key) through any depth of
//!   inline fragments and through named fragments, so neither nesting nor
//!   fragments can multiply root fields or credential attempts;
//! - a spread of an unknown fragment is refused here: it would cost nothing
//!   in the count yet let the engine's own checks walk every path.
//!
//! Everything here is pure: text in, a prepared document or a refusal out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, FragmentDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::Positioned;

use super::CREDENTIAL_MUTATIONS;
use crate::error::{GRAPHQL_PARSE_FAILED, GRAPHQL_VALIDATION_FAILED};

/// Deepest bracket nesting (`{`, `[`, `(` together) accepted in a document.
/// Far below what overflows a stack, and above what any document within
/// the depth limit needs (GraphiQL's introspection query nests 15 levels).
pub const MAX_BRACKET_NESTING: usize = 64;
/// Deepest selection nesting, counting fields, inline fragments and fragment
/// spreads (the engine's own recursion limit, set to the same value).
pub const MAX_SELECTION_NESTING: usize = 32;

/// The limits of [`crate::config::LimitsConfig`] that apply to documents.
#[derive(Debug, Clone)]
pub struct DocumentLimits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_root_fields: usize,
    pub introspection: bool,
}

/// Why a document was refused; `code` is its `extensions.code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: GRAPHQL_VALIDATION_FAILED,
            message: message.into(),
        }
    }
}

/// One operation of a prepared document.
#[derive(Debug, Clone)]
pub struct OperationSummary {
    pub name: Option<String>,
    pub kind: OperationType,
    /// Metrics label: the sorted, distinct known root fields, or "invalid".
    pub label: String,
}

/// A document that passed every check here, parsed.
#[derive(Debug)]
pub struct PreparedDocument {
    pub document: ExecutableDocument,
    pub operations: Vec<OperationSummary>,
}

impl PreparedDocument {
    /// The operation a request with this `operationName` would run: the
    /// named one, or the only one.
    pub fn operation(&self, name: Option<&str>) -> Option<&OperationSummary> {
        match name {
            Some(name) => self
                .operations
                .iter()
                .find(|op| op.name.as_deref() == Some(name)),
            None if self.operations.len() == 1 => self.operations.first(),
            None => None,
        }
    }

    /// Whether a request with this `operationName` may run a mutation (when
    /// the name selects nothing, whether any operation is one).
    pub fn may_mutate(&self, name: Option<&str>) -> bool {
        match self.operation(name) {
            Some(op) => op.kind == OperationType::Mutation,
            None => self
                .operations
                .iter()
                .any(|op| op.kind == OperationType::Mutation),
        }
    }
}

/// Prepares documents, remembering the verdict by their text: clients send
/// the same few documents over and over (and attackers the same few
/// refusals), and parsing is most of a small request's cost. Bounded:
/// small documents only, emptied when full.
pub struct DocumentGuard {
    limits: DocumentLimits,
    cache: Mutex<HashMap<String, Verdict>>,
}

type Verdict = Result<Arc<PreparedDocument>, Refusal>;

const CACHE_ENTRIES: usize = 512;
const CACHE_MAX_DOCUMENT: usize = 4096;

impl DocumentGuard {
    pub fn new(limits: DocumentLimits) -> Self {
        Self {
            limits,
            cache: Mutex::default(),
        }
    }

    pub fn prepare(&self, query: &str) -> Verdict {
        if let Some(verdict) = lock(&self.cache).get(query) {
            return verdict.clone();
        }
        let verdict = prepare(query, &self.limits).map(Arc::new);
        if query.len() <= CACHE_MAX_DOCUMENT {
            let mut cache = lock(&self.cache);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(query.to_owned(), verdict.clone());
        }
        verdict
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Scans, parses and analyses one document.
pub fn prepare(query: &str, limits: &DocumentLimits) -> Result<PreparedDocument, Refusal> {
    if bracket_nesting(query, MAX_BRACKET_NESTING) > MAX_BRACKET_NESTING {
        return Err(Refusal::invalid(format!(
            "document nested too deeply: more than {MAX_BRACKET_NESTING} levels of brackets"
        )));
    }
    let document = async_graphql::parser::parse_query(query).map_err(|e| match e {
        // Deep selections within the bracket limit: a depth problem, and
        // depth problems are validation failures at every depth.
        async_graphql::parser::Error::RecursionLimitExceeded => {
            Refusal::invalid("document nested too deeply")
        }
        e => Refusal {
            code: GRAPHQL_PARSE_FAILED,
            message: e.to_string(),
        },
    })?;
    let operations = analyze(&document, limits)?;
    Ok(PreparedDocument {
        document,
        operations,
    })
}

/// The deepest nesting of `{`, `[` and `(` outside strings and comments,
/// or the first depth past `stop_above` (the scan ends there). Unbalanced
/// text is scanned all the same (the parser refuses it later).
pub fn bracket_nesting(text: &str, stop_above: usize) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                // Block string: ends at the next unescaped `"""`.
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest > stop_above {
                    return deepest;
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// What executing a selection set costs once every fragment is expanded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cost {
    /// Fields, as the engine counts complexity (one per field).
    fields: u64,
    /// Field depth, as the engine's depth limit counts it.
    depth: usize,
    /// Selection nesting: fields with selections, inline fragments and
    /// spreads, as the engine's recursion limit counts it.
    nesting: usize,
    /// Every selection the engine's checks visit once expanded: fields,
    /// inline fragments and spreads alike.
    visits: u64,
}

/// Expanded selections allowed per allowed field: inline fragments and
/// spreads around fields are visited too, but a document that wraps each
/// field in several of them is not one a client needs.
const VISITS_PER_FIELD: u64 = 4;

#[derive(Clone, Copy)]
enum Visit {
    InProgress,
    Done(Cost),
}

struct Analyzer<'a> {
    doc: &'a ExecutableDocument,
    limits: &'a DocumentLimits,
    costs: HashMap<&'a str, Visit>,
    roots: HashMap<&'a str, Arc<RootTally<'a>>>,
}

/// What a root selection set runs, counted by occurrence: async-graphql
/// runs every occurrence of a field, even two with one response key.
#[derive(Default)]
struct RootTally<'a> {
    fields: u64,
    /// signUp, createToken, refreshToken occurrences.
    attempts: u64,
    /// Distinct field names, for the metrics label and the introspection
    /// switch (bounded by the document's size).
    names: std::collections::BTreeSet<&'a str>,
}

impl<'a> RootTally<'a> {
    fn add(&mut self, other: &RootTally<'a>) {
        self.fields = self.fields.saturating_add(other.fields);
        self.attempts = self.attempts.saturating_add(other.attempts);
        self.names.extend(other.names.iter().copied());
    }
}

fn analyze(
    doc: &ExecutableDocument,
    limits: &DocumentLimits,
) -> Result<Vec<OperationSummary>, Refusal> {
    let mut analyzer = Analyzer {
        doc,
        limits,
        costs: HashMap::new(),
        roots: HashMap::new(),
    };
    // Every fragment, used or not: the engine's rules visit them all.
    for name in doc.fragments.keys() {
        analyzer.fragment_cost(name.as_str(), 0)?;
    }
    let operations: Vec<_> = match &doc.operations {
        DocumentOperations::Single(op) => vec![(None, op)],
        DocumentOperations::Multiple(ops) => ops
            .iter()
            .map(|(name, op)| (Some(name.to_string()), op))
            .collect(),
    };
    let mut summaries = Vec::with_capacity(operations.len());
    for (name, op) in operations {
        let set = &op.node.selection_set;
        let cost = analyzer.set_cost(set, 0)?;
        analyzer.check(cost, "operation")?;
        let roots = analyzer.root_tally(set);
        if roots.fields > limits.max_root_fields as u64 {
            return Err(Refusal::invalid(format!(
                "too many root fields: more than {} per operation, aliases included",
                limits.max_root_fields
            )));
        }
        let names: Vec<&str> = roots.names.iter().copied().collect();
        if !limits.introspection && names.iter().any(|n| matches!(*n, "__schema" | "__type")) {
            return Err(Refusal::invalid("introspection is disabled on this server"));
        }
        if roots.attempts > 1 {
            return Err(Refusal::invalid(
                "at most one of signUp, createToken, refreshToken per document",
            ));
        }
        summaries.push(OperationSummary {
            name,
            kind: op.node.ty,
            label: label_of(&names),
        });
    }
    Ok(summaries)
}

impl<'a> Analyzer<'a> {
    fn check(&self, cost: Cost, what: &str) -> Result<Cost, Refusal> {
        if cost.nesting > MAX_SELECTION_NESTING {
            return Err(Refusal::invalid(format!(
                "{what} nested too deeply: more than {MAX_SELECTION_NESTING} levels of selections and fragments"
            )));
        }
        if cost.depth > self.limits.max_depth {
            return Err(Refusal::invalid(format!(
                "{what} deeper than {} levels",
                self.limits.max_depth
            )));
        }
        if cost.fields > self.limits.max_complexity as u64
            || cost.visits > VISITS_PER_FIELD * self.limits.max_complexity as u64
        {
            return Err(Refusal::invalid(format!(
                "{what} too complex: more than {} fields once fragments are expanded",
                self.limits.max_complexity
            )));
        }
        Ok(cost)
    }

    /// The expanded cost of a fragment, computed once. `chain` counts the
    /// spreads that led here: every spread nests one level, so a chain
    /// longer than the nesting limit is refused without recursing further.
    fn fragment_cost(&mut self, name: &'a str, chain: usize) -> Result<Cost, Refusal> {
        match self.costs.get(name) {
            Some(Visit::Done(cost)) => return Ok(*cost),
            Some(Visit::InProgress) => {
                return Err(Refusal::invalid(format!(
                    "fragment {name} spreads itself (a fragment cycle)"
                )))
            }
            None => {}
        }
        if chain > MAX_SELECTION_NESTING {
            return Err(Refusal::invalid(format!(
                "fragments nested too deeply: more than {MAX_SELECTION_NESTING} levels"
            )));
        }
        let Some(fragment) = self.doc.fragments.get(name) else {
            return Err(Refusal::invalid(format!("unknown fragment {name}")));
        };
        let fragment: &'a Positioned<FragmentDefinition> = fragment;
        self.costs.insert(name, Visit::InProgress);
        let cost = self.set_cost(&fragment.node.selection_set, chain)?;
        let cost = self.check(cost, &format!("fragment {name}"))?;
        self.costs.insert(name, Visit::Done(cost));
        Ok(cost)
    }

    fn set_cost(
        &mut self,
        set: &'a Positioned<SelectionSet>,
        chain: usize,
    ) -> Result<Cost, Refusal> {
        let mut total = Cost::default();
        for item in &set.node.items {
            let (fields, depth, nesting, visits) = match &item.node {
                Selection::Field(field) => {
                    let sub = &field.node.selection_set;
                    if sub.node.items.is_empty() {
                        (1, 1, 0, 1)
                    } else {
                        let inner = self.set_cost(sub, chain)?;
                        (
                            1 + inner.fields,
                            1 + inner.depth,
                            1 + inner.nesting,
                            1 + inner.visits,
                        )
                    }
                }
                Selection::InlineFragment(inline) => {
                    let inner = self.set_cost(&inline.node.selection_set, chain)?;
                    (
                        inner.fields,
                        inner.depth,
                        1 + inner.nesting,
                        1 + inner.visits,
                    )
                }
                Selection::FragmentSpread(spread) => {
                    let inner = self.fragment_cost(&spread.node.fragment_name.node, chain + 1)?;
                    (
                        inner.fields,
                        inner.depth,
                        1 + inner.nesting,
                        1 + inner.visits,
                    )
                }
            };
            total.fields = total.fields.saturating_add(fields);
            total.depth = total.depth.max(depth);
            total.nesting = total.nesting.max(nesting);
            total.visits = total.visits.saturating_add(visits);
        }
        Ok(total)
    }

    /// What a root selection set runs, through inline fragments and
    /// fragment spreads (each fragment tallied once; cycles and unknown
    /// fragments were refused by `fragment_cost`, which ran first).
    fn root_tally(&mut self, set: &'a Positioned<SelectionSet>) -> RootTally<'a> {
        let mut tally = RootTally::default();
        for item in &set.node.items {
            match &item.node {
                Selection::Field(field) => {
                    let name = field.node.name.node.as_str();
                    tally.fields += 1;
                    if CREDENTIAL_MUTATIONS.contains(&name) {
                        tally.attempts += 1;
                    }
                    tally.names.insert(name);
                }
                Selection::InlineFragment(inline) => {
                    let inner = self.root_tally(&inline.node.selection_set);
                    tally.add(&inner);
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    let inner = match self.roots.get(name) {
                        Some(inner) => inner.clone(),
                        None => {
                            let inner = match self.doc.fragments.get(name) {
                                Some(fragment) => {
                                    let fragment: &'a Positioned<FragmentDefinition> = fragment;
                                    self.root_tally(&fragment.node.selection_set)
                                }
                                None => RootTally::default(),
                            };
                            let inner = Arc::new(inner);
                            self.roots.insert(name, inner.clone());
                            inner
                        }
                    };
                    tally.add(&inner);
                }
            }
        }
        tally
    }
}

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

/// A bounded label: the sorted, distinct known root fields, or "invalid".
fn label_of(roots: &[&str]) -> String {
    if roots.is_empty() || roots.iter().any(|r| !KNOWN_ROOT_FIELDS.contains(r)) {
        return "invalid".to_owned();
    }
    let mut names: Vec<&str> = roots.to_vec();
    names.sort_unstable();
    names.dedup();
    names.join(",")
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn limits() -> DocumentLimits {
        DocumentLimits {
            max_depth: 20,
            max_complexity: 500,
            max_root_fields: 20,
            introspection: true,
        }
    }

    fn refused(query: &str) -> Refusal {
        prepare(query, &limits()).expect_err("refused")
    }

    #[test]
    fn brackets_inside_strings_and_comments_do_not_count() {
        assert_eq!(bracket_nesting("{ a { b } }", 100), 2);
        assert_eq!(bracket_nesting(r#"{ a(x: "[[[[") }"#, 100), 2);
        assert_eq!(bracket_nesting(r#"{ a(x: "\"[[[") }"#, 100), 2);
        assert_eq!(
            bracket_nesting("{ a(x: \"\"\"[[[ \\\"\"\" [[\"\"\") }", 100),
            2
        );
        assert_eq!(bracket_nesting("# {{{{\n{ a }", 100), 1);
        assert_eq!(
            bracket_nesting(&"[".repeat(10_000), 64),
            65,
            "stops past the limit"
        );
        assert_eq!(
            bracket_nesting("}}}{", 100),
            1,
            "unbalanced text is still scanned"
        );
    }

    #[test]
    fn deep_values_are_refused_before_parsing() {
        for levels in [2_000, 10_000, 30_000] {
            let list = format!(
                "{{ __typename(a: {}1{}) }}",
                "[".repeat(levels),
                "]".repeat(levels)
            );
            let object = format!(
                "{{ __typename(a: {}1{}) }}",
                "{a:".repeat(levels),
                "}".repeat(levels)
            );
            let default = format!(
                "query($v: [Int] = {}1{}) {{ __typename }}",
                "[".repeat(levels),
                "]".repeat(levels)
            );
            let directive = format!(
                "{{ __typename @skip(if: {}true{}) }}",
                "[".repeat(levels),
                "]".repeat(levels)
            );
            for query in [list, object, default, directive] {
                let started = Instant::now();
                assert_eq!(refused(&query).code, GRAPHQL_VALIDATION_FAILED);
                // Not a speed target: a scan that is not linear takes minutes.
                assert!(started.elapsed().as_secs() < 5, "scan is linear");
            }
        }
    }

    #[test]
    fn depth_is_a_validation_failure_at_every_depth() {
        for depth in [21, 31, 33, 40, 63, 64, 65, 100, 1000] {
            let query = format!("{}{}", "{ me ".repeat(depth), "}".repeat(depth));
            assert_eq!(refused(&query).code, GRAPHQL_VALIDATION_FAILED, "{depth}");
        }
        let ok = format!("{}{}", "{ me ".repeat(20), "}".repeat(20));
        assert!(prepare(&ok, &limits()).is_ok());
    }

    /// `F(i)` spreads `F(i-1)` twice: 2^levels fields in a few hundred bytes.
    fn doubling_fragments(levels: usize) -> String {
        let mut query = format!("{{ ...F{levels} }}\n");
        for i in (1..=levels).rev() {
            query.push_str(&format!(
                "fragment F{i} on Query {{ ...F{} ...F{} }}\n",
                i - 1,
                i - 1
            ));
        }
        query.push_str("fragment F0 on Query { __typename }");
        query
    }

    #[test]
    fn exponential_fragments_are_refused_in_linear_time() {
        for levels in [10, 24, 30, 60, 200] {
            let started = Instant::now();
            let refusal = refused(&doubling_fragments(levels));
            assert_eq!(refusal.code, GRAPHQL_VALIDATION_FAILED, "{levels}");
            // Not a speed target: expanding 2^24 spreads takes seconds, 2^60 forever.
            assert!(started.elapsed().as_secs() < 5, "{levels} levels");
        }
        // Unused fragments count too: the engine's rules visit them.
        let unused = doubling_fragments(24).replacen("{ ...F24 }", "{ __typename }", 1);
        assert_eq!(refused(&unused).code, GRAPHQL_VALIDATION_FAILED);
        // A diamond that stays small passes (16 root fields, each run).
        assert!(prepare(&doubling_fragments(4), &limits()).is_ok());
        assert!(prepare(&doubling_fragments(5), &limits()).is_err());
    }

    #[test]
    fn fragment_cycles_and_long_chains_are_refused() {
        assert_eq!(
            refused("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }").code,
            GRAPHQL_VALIDATION_FAILED
        );
        assert_eq!(
            refused("{ ...A } fragment A on Query { __typename ...A ...A }").code,
            GRAPHQL_VALIDATION_FAILED
        );
        let mut chain = String::from("{ ...F3000 }\n");
        for i in (1..=3000).rev() {
            chain.push_str(&format!("fragment F{i} on Query {{ ...F{} }}\n", i - 1));
        }
        chain.push_str("fragment F0 on Query { __typename }");
        assert_eq!(refused(&chain).code, GRAPHQL_VALIDATION_FAILED);
    }

    #[test]
    fn root_fields_count_through_any_nesting_and_fragments() {
        let aliases: String = (0..21).map(|i| format!("a{i}: me ")).collect();
        let mut nested = aliases.clone();
        for _ in 0..17 {
            nested = format!("... on Query {{ {nested} }}");
        }
        assert!(refused(&format!("{{ {nested} }}"))
            .message
            .contains("root fields"));
        let via_fragment =
            format!("{{ ...A }} fragment A on Query {{ ... on Query {{ {aliases} }} }}");
        assert!(refused(&via_fragment).message.contains("root fields"));
        // async-graphql runs every occurrence, also of one response key.
        let same: String = (0..21).map(|_| "me { id } ").collect();
        assert!(refused(&format!("{{ {same} }}"))
            .message
            .contains("root fields"));
        let twenty: String = (0..20).map(|_| "me { id } ").collect();
        assert!(prepare(&format!("{{ {twenty} }}"), &limits()).is_ok());
    }

    #[test]
    fn credential_attempts_count_through_nesting() {
        let mut attempts = String::from(
            r#"a1: createToken(input: {login: "x", password: "y"}) { accessToken }
               a2: createToken(input: {login: "x", password: "z"}) { accessToken }"#,
        );
        for _ in 0..17 {
            attempts = format!("... on Mutation {{ {attempts} }}");
        }
        assert!(refused(&format!("mutation {{ {attempts} }}"))
            .message
            .contains("at most one"));
        let split = r#"mutation { ...A ...B }
            fragment A on Mutation { signUp(input: {username: "a", password: "b"}) { accessToken } }
            fragment B on Mutation { refreshToken(refreshToken: "x") { accessToken } }"#;
        assert!(refused(split).message.contains("at most one"));
        // One response key, two guesses: both would run.
        let same_key = r#"mutation {
            createToken(input: {login: "x", password: "1"}) { accessToken }
            ... on Mutation { createToken(input: {login: "x", password: "2"}) { accessToken } }
        }"#;
        assert!(refused(same_key).message.contains("at most one"));
        let twice = r#"mutation { ...A ...A }
            fragment A on Mutation { createToken(input: {login: "x", password: "y"}) { accessToken } }"#;
        assert!(refused(twice).message.contains("at most one"));
    }

    #[test]
    fn unknown_fragments_are_refused_before_the_engine_walks_them() {
        // Without a known end, every spread costs nothing in the count, yet
        // the engine's checks would walk 2^30 paths.
        let mut query = String::from("{ ...F30 }");
        for i in (1..=30).rev() {
            query.push_str(&format!(
                " fragment F{i} on Query {{ ...F{} ...F{} }}",
                i - 1,
                i - 1
            ));
        }
        query.push_str(" fragment F0 on Query { ...Missing }");
        assert!(refused(&query).message.contains("unknown fragment"));
        // Wrapping fields in many inline fragments is bounded too.
        let wrapped: String = (0..500)
            .map(|i| format!("... on Query {{ ... on Query {{ ... on Query {{ ... on Query {{ a{i}: __typename }} }} }} }} "))
            .collect();
        assert_eq!(
            refused(&format!("{{ {wrapped} }}")).code,
            GRAPHQL_VALIDATION_FAILED
        );
    }

    #[test]
    fn introspection_off_is_refused_through_fragments() {
        let off = DocumentLimits {
            introspection: false,
            ..limits()
        };
        let query = "{ ...I } fragment I on Query { ... on Query { __schema { types { name } } } }";
        assert!(prepare(query, &off).is_err());
        assert!(prepare(query, &limits()).is_ok());
        assert!(prepare("{ __typename }", &off).is_ok());
    }

    #[test]
    fn labels_and_mutation_detection() {
        let prepared = prepare(
            "query A { me { id } } mutation B { signOutEverywhere }",
            &limits(),
        )
        .expect("ok");
        assert_eq!(
            prepared.operation(Some("A")).map(|o| o.label.as_str()),
            Some("me")
        );
        assert!(prepared.may_mutate(Some("B")));
        assert!(!prepared.may_mutate(Some("A")));
        assert!(prepared.may_mutate(None));
        assert_eq!(label_of(&["me", "__typename"]), "__typename,me");
        assert_eq!(label_of(&["nope"]), "invalid");
    }

    proptest::proptest! {
        /// Random fragment graphs (chains, diamonds, cycles, fan-out): the
        /// analysis always ends, never panics, and what it accepts expands
        /// to no more than the complexity limit.
        #[test]
        fn any_fragment_graph_is_judged_without_expanding_it(
            spreads in proptest::collection::vec(proptest::collection::vec(0usize..40, 0..5), 1..40),
            fields in 0usize..3,
        ) {
            let mut doc = String::from("{ ...F0 }");
            for (i, targets) in spreads.iter().enumerate() {
                doc.push_str(&format!(" fragment F{i} on Query {{ __typename"));
                for f in 0..fields {
                    doc.push_str(&format!(" f{f}: __typename"));
                }
                for t in targets.iter().filter(|t| **t < spreads.len()) {
                    doc.push_str(&format!(" ...F{t}"));
                }
                doc.push_str(" }");
            }
            if let Ok(prepared) = prepare(&doc, &limits()) {
                let mut analyzer = Analyzer {
                    doc: &prepared.document,
                    limits: &limits(),
                    costs: HashMap::new(),
                    roots: HashMap::new(),
                };
                let cost = analyzer.fragment_cost("F0", 0).expect("accepted");
                proptest::prop_assert!(cost.fields <= 500);
            }
        }
    }
}
