//! References between secrets and text templates: `${KEY}` names another secret of the same
//! environment, `${zopp://project/environment/KEY}` a secret of another environment of the same
//! workspace, and `$${` writes a literal `${`.
//!
//! Resolution happens on the client, after decryption: the caller fetches the current
//! environment and every environment [`missing_environments`] asks for, then calls
//! [`resolve_environment`] (for `zopp run`) or [`render_template`] (for `zopp inject`,
//! `zopp preview`, `zopp apply`). Each value is resolved once and remembered, with an explicit
//! stack instead of recursion, so deep chains cannot overflow the stack and shared references
//! cannot blow up exponentially; results are capped at [`MAX_RESOLVED_LEN`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use thiserror::Error;
use zeroize::Zeroizing;

use crate::name::name_problem;
use crate::{Entry, SecretValue};

/// Largest value resolution may produce (the secret value limit, docs/ARCHITECTURE.md).
pub const MAX_RESOLVED_LEN: usize = 1024 * 1024;

/// Largest text [`render_template`] may produce.
pub const MAX_RENDERED_LEN: usize = 64 * 1024 * 1024;

/// Prefix of a reference to another environment.
const REMOTE_SCHEME: &str = "zopp://";

/// An environment of the current workspace, named by project and environment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvironmentPath {
    /// The project's name.
    pub project: String,
    /// The environment's name within the project.
    pub environment: String,
}

impl EnvironmentPath {
    /// Names `environment` of `project`.
    pub fn new(project: impl Into<String>, environment: impl Into<String>) -> Self {
        Self {
            project: project.into(),
            environment: environment.into(),
        }
    }
}

impl fmt::Display for EnvironmentPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.project, self.environment)
    }
}

/// One `${…}` reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    /// `${KEY}`: a secret of the same environment as the text holding the reference.
    Local(String),
    /// `${zopp://project/environment/KEY}`: a secret of another environment.
    Remote {
        /// The project's name.
        project: String,
        /// The environment's name.
        environment: String,
        /// The secret's name (may itself contain `/`).
        key: String,
    },
}

impl Reference {
    /// The environment a remote reference points into; `None` for a local one.
    pub fn environment(&self) -> Option<EnvironmentPath> {
        match self {
            Reference::Local(_) => None,
            Reference::Remote {
                project,
                environment,
                ..
            } => Some(EnvironmentPath::new(project.as_str(), environment.as_str())),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Local(key) => write!(f, "${{{key}}}"),
            Reference::Remote {
                project,
                environment,
                key,
            } => write!(f, "${{{REMOTE_SCHEME}{project}/{environment}/{key}}}"),
        }
    }
}

/// Why references could not be read or resolved. Never holds a value, only names and offsets.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// A `${` has no closing `}`.
    #[error(
        "unterminated reference at byte {offset} of {location} (write a literal `${{` as `$${{`)"
    )]
    Unterminated {
        /// The key holding it, or `the template`.
        location: String,
        /// Byte offset of the `${`.
        offset: usize,
    },
    /// A `${…}` is neither a secret name nor a `zopp://project/environment/KEY` path.
    #[error("invalid reference at byte {offset} of {location}: {problem} (write a literal `${{` as `$${{`)")]
    Invalid {
        /// The key holding it, or `the template`.
        location: String,
        /// Byte offset of the `${`.
        offset: usize,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Values reference each other in a loop.
    #[error("reference cycle: {}", chain.join(" -> "))]
    Cycle {
        /// The keys around the loop, the first repeated at the end.
        chain: Vec<String>,
    },
    /// A reference names a secret that does not exist.
    #[error("unresolved reference {reference} in {location}{}", via(chain))]
    Unresolved {
        /// The reference as written.
        reference: String,
        /// The key holding it, or `the template`.
        location: String,
        /// The keys whose resolution led there, outermost first.
        chain: Vec<String>,
    },
    /// A reference points into an environment the caller did not load.
    #[error("unresolved reference {reference} in {location}{}: environment {environment} was not loaded", via(chain))]
    EnvironmentNotLoaded {
        /// The reference as written.
        reference: String,
        /// The key holding it, or `the template`.
        location: String,
        /// The keys whose resolution led there, outermost first.
        chain: Vec<String>,
        /// The environment that is missing.
        environment: EnvironmentPath,
    },
    /// Resolving makes a value or the rendered text larger than the limit.
    #[error("{location} grows past {limit} bytes once its references are resolved")]
    TooLarge {
        /// The key, or `the template`.
        location: String,
        /// The limit in bytes.
        limit: usize,
    },
}

fn via(chain: &[String]) -> String {
    if chain.len() > 1 {
        format!(" (via {})", chain.join(" -> "))
    } else {
        String::new()
    }
}

/// Name used for the template itself in errors.
const TEMPLATE: &str = "the template";

/// A reference as parsed, borrowing from the text that holds it.
#[derive(Clone, Copy)]
enum Ref<'t> {
    Local(&'t str),
    Remote {
        project: &'t str,
        environment: &'t str,
        key: &'t str,
    },
}

impl Ref<'_> {
    fn to_reference(self) -> Reference {
        match self {
            Ref::Local(key) => Reference::Local(key.to_owned()),
            Ref::Remote {
                project,
                environment,
                key,
            } => Reference::Remote {
                project: project.to_owned(),
                environment: environment.to_owned(),
                key: key.to_owned(),
            },
        }
    }
}

/// A piece of a parsed text.
enum Piece<'t> {
    /// Literal text, copied as is (an escaped `$${` contributes its `${`).
    Text(&'t str),
    /// A reference.
    Ref(Ref<'t>),
}

/// A syntax problem at a byte offset; the caller adds the location.
enum Syntax {
    Unterminated(usize),
    Invalid(usize, &'static str),
}

impl Syntax {
    fn at(self, location: &str) -> TemplateError {
        match self {
            Syntax::Unterminated(offset) => TemplateError::Unterminated {
                location: location.to_owned(),
                offset,
            },
            Syntax::Invalid(offset, problem) => TemplateError::Invalid {
                location: location.to_owned(),
                offset,
                problem,
            },
        }
    }
}

/// Splits `text` into literal pieces and references.
fn pieces(text: &str) -> Result<Vec<Piece<'_>>, Syntax> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut literal_start = 0;
    let mut i = 0;
    while let Some(found) = bytes[i..].iter().position(|&b| b == b'$') {
        let at = i + found;
        let rest = &bytes[at..];
        if rest.starts_with(b"$${") {
            // Keep the text before the escape plus `${`, drop one `$`.
            out.push(Piece::Text(&text[literal_start..at]));
            out.push(Piece::Text(&text[at + 1..at + 3]));
            literal_start = at + 3;
            i = at + 3;
        } else if rest.starts_with(b"${") {
            let body_start = at + 2;
            let Some(len) = bytes[body_start..].iter().position(|&b| b == b'}') else {
                return Err(Syntax::Unterminated(at));
            };
            let body = &text[body_start..body_start + len];
            let reference =
                parse_reference(body).map_err(|problem| Syntax::Invalid(at, problem))?;
            out.push(Piece::Text(&text[literal_start..at]));
            out.push(Piece::Ref(reference));
            literal_start = body_start + len + 1;
            i = literal_start;
        } else {
            i = at + 1;
        }
    }
    out.push(Piece::Text(&text[literal_start..]));
    out.retain(|p| !matches!(p, Piece::Text("")));
    Ok(out)
}

/// Parses what sits between `${` and `}`.
fn parse_reference(body: &str) -> Result<Ref<'_>, &'static str> {
    if body.contains(['{', '$']) {
        return Err("a reference cannot contain `{` or `$`");
    }
    let Some(path) = body.strip_prefix(REMOTE_SCHEME) else {
        return match name_problem(body) {
            None => Ok(Ref::Local(body)),
            Some(_) if body.is_empty() => Err("`${}` names no secret"),
            Some(_) => Err("a reference names a secret: no whitespace, control characters or `=`"),
        };
    };
    let mut parts = path.splitn(3, '/');
    let (Some(project), Some(environment), Some(key)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("expected ${zopp://project/environment/KEY}");
    };
    let scope_ok =
        |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control());
    if !scope_ok(project) || !scope_ok(environment) || name_problem(key).is_some() {
        return Err("expected ${zopp://project/environment/KEY}");
    }
    Ok(Ref::Remote {
        project,
        environment,
        key,
    })
}

/// The distinct references in `text`, in order of first appearance.
///
/// # Errors
/// An unterminated or malformed `${…}`.
pub fn references(text: &str) -> Result<Vec<Reference>, TemplateError> {
    let pieces = pieces(text).map_err(|s| s.at(TEMPLATE))?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for piece in pieces {
        if let Piece::Ref(reference) = piece {
            let reference = reference.to_reference();
            if seen.insert(reference.clone()) {
                out.push(reference);
            }
        }
    }
    Ok(out)
}

/// One fetched environment: its path and its unresolved values.
struct Environment {
    path: EnvironmentPath,
    values: HashMap<String, SecretValue>,
}

/// The other environments' secrets a resolution may draw on, as the caller fetched them.
///
/// For `${zopp://p/e/KEY}` to reach the current environment, add the current environment here
/// too.
#[derive(Default)]
pub struct RemoteEnvironments {
    /// By project, then environment, so lookups need no allocation.
    projects: HashMap<String, HashMap<String, Environment>>,
}

impl fmt::Debug for RemoteEnvironments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paths = self
            .projects
            .values()
            .flat_map(|environments| environments.values().map(|env| &env.path));
        f.debug_set().entries(paths).finish()
    }
}

impl RemoteEnvironments {
    /// No environments.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the unresolved secrets of `environment`.
    pub fn insert(
        &mut self,
        environment: EnvironmentPath,
        entries: impl IntoIterator<Item = Entry>,
    ) {
        let values = entries.into_iter().map(|e| (e.name, e.value)).collect();
        self.projects
            .entry(environment.project.clone())
            .or_default()
            .insert(
                environment.environment.clone(),
                Environment {
                    path: environment,
                    values,
                },
            );
    }

    /// Whether `environment` has been added.
    pub fn contains(&self, environment: &EnvironmentPath) -> bool {
        self.get(&environment.project, &environment.environment)
            .is_some()
    }

    fn get(&self, project: &str, environment: &str) -> Option<&Environment> {
        self.projects.get(project)?.get(environment)
    }
}

/// A secret being resolved: its environment (`None` for the current one) and its name. Both
/// borrow from the caller's maps, so nodes are cheap to copy; environments compare by address.
#[derive(Clone, Copy)]
struct Node<'a> {
    environment: Option<&'a Environment>,
    key: &'a str,
}

impl Node<'_> {
    fn environment_id(&self) -> usize {
        self.environment
            .map_or(0, |env| env as *const Environment as usize)
    }

    fn name(&self) -> String {
        match self.environment {
            None => self.key.to_owned(),
            Some(env) => format!("{REMOTE_SCHEME}{}/{}", env.path, self.key),
        }
    }
}

impl PartialEq for Node<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.environment_id() == other.environment_id() && self.key == other.key
    }
}

impl Eq for Node<'_> {}

impl std::hash::Hash for Node<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.environment_id().hash(state);
        self.key.hash(state);
    }
}

enum State {
    InProgress,
    Done(SecretValue),
}

/// A value whose references are being resolved.
struct Frame<'a> {
    node: Node<'a>,
    pieces: Vec<Piece<'a>>,
    next: usize,
    /// The node each reference seen so far points to, in order.
    targets: Vec<Node<'a>>,
}

/// Resolves nodes on demand and remembers every result.
struct Resolver<'a> {
    local: HashMap<&'a str, &'a SecretValue>,
    remote: &'a RemoteEnvironments,
    states: HashMap<Node<'a>, State>,
}

/// Why a reference has no target, before the chain is known.
enum Missing {
    Key,
    Environment(EnvironmentPath),
}

impl Missing {
    fn error(self, reference: Ref<'_>, location: String, chain: Vec<String>) -> TemplateError {
        let reference = reference.to_reference().to_string();
        match self {
            Missing::Key => TemplateError::Unresolved {
                reference,
                location,
                chain,
            },
            Missing::Environment(environment) => TemplateError::EnvironmentNotLoaded {
                reference,
                location,
                chain,
                environment,
            },
        }
    }
}

impl<'a> Resolver<'a> {
    fn new(values: &'a [Entry], remote: &'a RemoteEnvironments) -> Self {
        Self {
            local: values.iter().map(|e| (e.name.as_str(), &e.value)).collect(),
            remote,
            states: HashMap::new(),
        }
    }

    /// The unresolved value of `node`.
    fn raw(&self, node: Node<'a>) -> Option<&'a SecretValue> {
        match node.environment {
            None => self.local.get(node.key).copied(),
            Some(env) => env.values.get(node.key),
        }
    }

    /// The node `reference`, written in a value of environment `from`, points to.
    fn target(
        &self,
        from: Option<&'a Environment>,
        reference: Ref<'_>,
    ) -> Result<Node<'a>, Missing> {
        let remote: &'a RemoteEnvironments = self.remote;
        let (environment, key) = match reference {
            Ref::Local(key) => (from, key),
            Ref::Remote {
                project,
                environment,
                key,
            } => match remote.get(project, environment) {
                Some(env) => (Some(env), key),
                None => {
                    return Err(Missing::Environment(EnvironmentPath::new(
                        project,
                        environment,
                    )))
                }
            },
        };
        let key: &'a str = match environment {
            None => self.local.get_key_value(key).map(|(k, _)| *k),
            Some(env) => env.values.get_key_value(key).map(|(k, _)| k.as_str()),
        }
        .ok_or(Missing::Key)?;
        Ok(Node { environment, key })
    }

    /// Opens a frame for `node`, which `target` found.
    fn frame(&self, node: Node<'a>) -> Result<Frame<'a>, TemplateError> {
        let raw = self
            .raw(node)
            .expect("frames are only opened for nodes `target` found");
        let pieces = pieces(raw.expose_secret()).map_err(|s| s.at(&node.name()))?;
        Ok(Frame {
            node,
            pieces,
            next: 0,
            targets: Vec::new(),
        })
    }

    /// The resolved value of `root`, resolving it and everything it needs first. `outer` names
    /// what led to `root` (the template), for error chains.
    fn resolve(&mut self, root: Node<'a>, outer: &[String]) -> Result<&SecretValue, TemplateError> {
        if !self.states.contains_key(&root) {
            self.run(root, outer)?;
        }
        match self.states.get(&root) {
            Some(State::Done(value)) => Ok(value),
            _ => unreachable!("run leaves its root resolved or returns an error"),
        }
    }

    /// Depth-first resolution with an explicit stack: a frame stays on the stack until every
    /// reference it holds is resolved, so a reference to a frame still on the stack is a cycle.
    fn run(&mut self, root: Node<'a>, outer: &[String]) -> Result<(), TemplateError> {
        let chain_of = |stack: &[Frame<'a>]| -> Vec<String> {
            outer
                .iter()
                .cloned()
                .chain(stack.iter().map(|f| f.node.name()))
                .collect()
        };
        let first = self.frame(root)?;
        self.states.insert(root, State::InProgress);
        let mut stack = vec![first];
        while let Some(frame) = stack.last_mut() {
            let Some(piece) = frame.pieces.get(frame.next) else {
                let frame = stack
                    .pop()
                    .expect("the loop runs while a frame is on the stack");
                let node = frame.node;
                let value = self.assemble(
                    &frame.pieces,
                    &frame.targets,
                    || node.name(),
                    MAX_RESOLVED_LEN,
                )?;
                self.states.insert(node, State::Done(value));
                continue;
            };
            frame.next += 1;
            let &Piece::Ref(reference) = piece else {
                continue;
            };
            let from = frame.node.environment;
            let target = match self.target(from, reference) {
                Ok(target) => target,
                Err(missing) => {
                    let location = frame.node.name();
                    return Err(missing.error(reference, location, chain_of(&stack)));
                }
            };
            frame.targets.push(target);
            match self.states.get(&target) {
                Some(State::Done(_)) => {}
                Some(State::InProgress) => {
                    let start = stack.iter().position(|f| f.node == target).unwrap_or(0);
                    let mut chain: Vec<String> =
                        stack[start..].iter().map(|f| f.node.name()).collect();
                    chain.push(target.name());
                    return Err(TemplateError::Cycle { chain });
                }
                None => {
                    let next = self.frame(target)?;
                    self.states.insert(target, State::InProgress);
                    stack.push(next);
                }
            }
        }
        Ok(())
    }

    /// Joins `pieces`, whose references are all resolved, in one exact-size allocation (a
    /// growing buffer would leave unzeroized copies behind).
    fn assemble(
        &self,
        pieces: &[Piece<'_>],
        targets: &[Node<'a>],
        location: impl FnOnce() -> String,
        limit: usize,
    ) -> Result<SecretValue, TemplateError> {
        let mut targets = targets.iter();
        let parts: Vec<&str> = pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => text,
                Piece::Ref(_) => {
                    let node = targets.next().expect("one target per reference");
                    match self.states.get(node) {
                        Some(State::Done(value)) => value.expose_secret(),
                        _ => unreachable!("every reference is resolved before assembly"),
                    }
                }
            })
            .collect();
        let len = parts
            .iter()
            .fold(0usize, |len, part| len.saturating_add(part.len()));
        if len > limit {
            return Err(TemplateError::TooLarge {
                location: location(),
                limit,
            });
        }
        let mut out = String::with_capacity(len);
        for part in parts {
            out.push_str(part);
        }
        Ok(SecretValue::new(out))
    }
}

/// Resolves every value of the current environment: `values` are its unresolved secrets,
/// `remote` the other environments they reference. The result keeps `values`' order.
///
/// # Errors
/// A malformed reference, a reference to a missing secret or to an environment not in `remote`,
/// a cycle, or a value that grows past [`MAX_RESOLVED_LEN`]. Errors name the chain of keys.
pub fn resolve_environment(
    values: &[Entry],
    remote: &RemoteEnvironments,
) -> Result<Vec<Entry>, TemplateError> {
    let mut resolver = Resolver::new(values, remote);
    let mut out = Vec::with_capacity(values.len());
    for entry in values {
        let node = Node {
            environment: None,
            key: entry.name.as_str(),
        };
        let value = resolver.resolve(node, &[])?.clone();
        out.push(Entry {
            name: entry.name.clone(),
            value,
        });
    }
    Ok(out)
}

/// Resolves every value of the current environment like [`resolve_environment`], but one
/// value's problem does not stop the others: each entry comes back with its own result, in
/// `values`' order. `zopp run --only K` uses it so that a dangling reference in a secret it
/// does not inject cannot fail the run.
pub fn resolve_each(
    values: &[Entry],
    remote: &RemoteEnvironments,
) -> Vec<(String, Result<SecretValue, TemplateError>)> {
    let mut resolver = Resolver::new(values, remote);
    values
        .iter()
        .map(|entry| {
            let node = Node {
                environment: None,
                key: entry.name.as_str(),
            };
            let result = resolver.resolve(node, &[]).cloned();
            if result.is_err() {
                // A failed run leaves its unfinished frames marked in progress; finished values
                // stay valid for the entries that follow.
                resolver
                    .states
                    .retain(|_, state| matches!(state, State::Done(_)));
            }
            (entry.name.clone(), result)
        })
        .collect()
}

/// Renders `text` (for `zopp inject`, `preview`, `apply`): each `${KEY}` becomes the resolved
/// value of `KEY` in `values`, each `${zopp://p/e/KEY}` the resolved value from `remote`, and
/// each `$${` a literal `${`. Only the secrets the template uses are resolved.
///
/// # Errors
/// As [`resolve_environment`], for the secrets the template reaches; and a result larger than
/// [`MAX_RENDERED_LEN`].
pub fn render_template(
    text: &str,
    values: &[Entry],
    remote: &RemoteEnvironments,
) -> Result<Zeroizing<String>, TemplateError> {
    let pieces = pieces(text).map_err(|s| s.at(TEMPLATE))?;
    let mut resolver = Resolver::new(values, remote);
    let outer = [TEMPLATE.to_owned()];
    let mut targets = Vec::new();
    for piece in &pieces {
        if let &Piece::Ref(reference) = piece {
            let node = resolver
                .target(None, reference)
                .map_err(|missing| missing.error(reference, TEMPLATE.to_owned(), Vec::new()))?;
            resolver.resolve(node, &outer)?;
            targets.push(node);
        }
    }
    let rendered =
        resolver.assemble(&pieces, &targets, || TEMPLATE.to_owned(), MAX_RENDERED_LEN)?;
    Ok(rendered.into_zeroizing())
}

/// The environments a resolution of `values` needs that `remote` does not hold yet.
///
/// Only references reachable from `values` count, through the environments already loaded, so
/// a caller loads exactly what it needs: call this, fetch what it names, add it to `remote`, and
/// repeat until it returns an empty set.
///
/// # Errors
/// A malformed reference in a reachable value.
pub fn missing_environments(
    values: &[Entry],
    remote: &RemoteEnvironments,
) -> Result<BTreeSet<EnvironmentPath>, TemplateError> {
    missing_from(values, remote, true)
}

/// [`missing_environments`] for [`resolve_each`]: a malformed value is skipped (its own
/// resolution reports it) instead of failing the whole search.
pub fn missing_environments_lenient(
    values: &[Entry],
    remote: &RemoteEnvironments,
) -> BTreeSet<EnvironmentPath> {
    missing_from(values, remote, false).unwrap_or_default()
}

fn missing_from(
    values: &[Entry],
    remote: &RemoteEnvironments,
    strict: bool,
) -> Result<BTreeSet<EnvironmentPath>, TemplateError> {
    let resolver = Resolver::new(values, remote);
    let mut missing = BTreeSet::new();
    let mut seen: HashSet<Node<'_>> = HashSet::new();
    let mut queue: Vec<Node<'_>> = values
        .iter()
        .map(|e| Node {
            environment: None,
            key: e.name.as_str(),
        })
        .collect();
    while let Some(node) = queue.pop() {
        if !seen.insert(node) {
            continue;
        }
        let Some(raw) = resolver.raw(node) else {
            continue;
        };
        let parsed = match pieces(raw.expose_secret()) {
            Ok(parsed) => parsed,
            Err(s) if strict => return Err(s.at(&node.name())),
            Err(_) => continue,
        };
        for piece in &parsed {
            if let &Piece::Ref(reference) = piece {
                match resolver.target(node.environment, reference) {
                    Ok(target) => queue.push(target),
                    Err(Missing::Environment(env)) => {
                        missing.insert(env);
                    }
                    // Reported by the resolution itself, with its chain.
                    Err(Missing::Key) => {}
                }
            }
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<Entry> {
        pairs.iter().map(|(k, v)| Entry::new(*k, *v)).collect()
    }

    #[test]
    fn resolve_each_keeps_one_dangling_reference_to_its_own_entry() {
        let values = env(&[
            ("BROKEN", "${NOPE}"),
            ("HOST", "db"),
            ("URL", "pg://${HOST}"),
            ("VIA", "${BROKEN}/x"),
            ("BAD", "${unterminated"),
            ("LOOP_A", "${LOOP_B}"),
            ("LOOP_B", "${LOOP_A}"),
            ("AFTER", "${URL}/${HOST}"),
        ]);
        let remote = RemoteEnvironments::new();
        assert!(missing_environments(&values, &remote).is_err());
        assert!(missing_environments_lenient(&values, &remote).is_empty());
        let out = resolve_each(&values, &remote);
        let ok: Vec<(&str, &str)> = out
            .iter()
            .filter_map(|(k, r)| r.as_ref().ok().map(|v| (k.as_str(), v.expose_secret())))
            .collect();
        assert_eq!(
            ok,
            [("HOST", "db"), ("URL", "pg://db"), ("AFTER", "pg://db/db")]
        );
        let failed: Vec<&str> = out
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(failed, ["BROKEN", "VIA", "BAD", "LOOP_A", "LOOP_B"]);
        assert!(matches!(&out[0].1, Err(TemplateError::Unresolved { .. })));
    }

    fn remote() -> RemoteEnvironments {
        let mut remote = RemoteEnvironments::new();
        remote.insert(
            EnvironmentPath::new("shared", "prod"),
            env(&[
                ("DB_HOST", "db.internal"),
                ("DB_URL", "postgres://${DB_HOST}:5432"),
                ("LOOP", "${zopp://api/dev/BACK}"),
                ("NESTED", "${zopp://infra/prod/REGION}"),
            ]),
        );
        remote.insert(
            EnvironmentPath::new("api", "dev"),
            env(&[("BACK", "${zopp://shared/prod/LOOP}")]),
        );
        remote
    }

    fn resolved(pairs: &[(&str, &str)]) -> Result<Vec<(String, String)>, String> {
        resolve_environment(&env(pairs), &remote())
            .map(|entries| {
                entries
                    .into_iter()
                    .map(|e| (e.name.clone(), e.value.expose_secret().to_owned()))
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    fn value_of(pairs: &[(&str, &str)], key: &str) -> String {
        let all = resolved(pairs).unwrap_or_else(|e| panic!("{e}"));
        all.into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .expect("key present")
    }

    #[rstest]
    #[case::plain(&[("A", "x")], "A", "x")]
    #[case::local(&[("A", "${B}-${B}"), ("B", "b")], "A", "b-b")]
    #[case::chain(&[("A", "<${B}>"), ("B", "[${C}]"), ("C", "c")], "A", "<[c]>")]
    #[case::remote(&[("A", "${zopp://shared/prod/DB_HOST}")], "A", "db.internal")]
    #[case::remote_uses_its_own_locals(&[("A", "${zopp://shared/prod/DB_URL}/app")], "A", "postgres://db.internal:5432/app")]
    #[case::remote_does_not_see_our_locals(&[("DB_HOST", "mine"), ("A", "${zopp://shared/prod/DB_URL}")], "A", "postgres://db.internal:5432")]
    #[case::escape(&[("A", "$${B} and ${B}"), ("B", "b")], "A", "${B} and b")]
    #[case::escape_only(&[("A", "cost: $${x")], "A", "cost: ${x")]
    #[case::escaped_result_not_reinterpreted(&[("A", "${B}"), ("B", "$${C}")], "A", "${C}")]
    #[case::lone_dollars(&[("A", "$ $$ $x $} pa$$word")], "A", "$ $$ $x $} pa$$word")]
    #[case::key_with_slash(&[("A", "${a/b}"), ("a/b", "slash")], "A", "slash")]
    #[case::unicode(&[("A", "ü${B}ü"), ("B", "🔑")], "A", "ü🔑ü")]
    #[case::empty_reference_target(&[("A", "x${B}y"), ("B", "")], "A", "xy")]
    fn resolves(#[case] pairs: &[(&str, &str)], #[case] key: &str, #[case] expected: &str) {
        assert_eq!(value_of(pairs, key), expected);
    }

    #[rstest]
    #[case::self_reference(&[("A", "${A}")], "reference cycle: A -> A")]
    #[case::two_cycle(&[("A", "${B}"), ("B", "${A}")], "reference cycle: A -> B -> A")]
    #[case::cycle_below(&[("A", "${B}"), ("B", "${C}"), ("C", "${B}")], "reference cycle: B -> C -> B")]
    #[case::remote_cycle(&[("A", "${zopp://shared/prod/LOOP}")], "reference cycle: zopp://shared/prod/LOOP -> zopp://api/dev/BACK -> zopp://shared/prod/LOOP")]
    #[case::missing_local(&[("B", "${X}")], "unresolved reference ${X} in B")]
    #[case::missing_deep(&[("A", "${B}"), ("B", "${X}")], "unresolved reference ${X} in B (via A -> B)")]
    #[case::missing_remote_key(&[("A", "${zopp://shared/prod/NOPE}")], "unresolved reference ${zopp://shared/prod/NOPE} in A")]
    #[case::missing_remote_env(&[("A", "${zopp://shared/staging/K}")], "unresolved reference ${zopp://shared/staging/K} in A: environment shared/staging was not loaded")]
    #[case::missing_transitive_env(&[("A", "${zopp://shared/prod/NESTED}")], "unresolved reference ${zopp://infra/prod/REGION} in zopp://shared/prod/NESTED (via A -> zopp://shared/prod/NESTED): environment infra/prod was not loaded")]
    #[case::unterminated(&[("A", "pa${ss")], "unterminated reference at byte 2 of A (write a literal `${` as `$${`)")]
    #[case::empty(&[("A", "${}")], "invalid reference at byte 0 of A: `${}` names no secret (write a literal `${` as `$${`)")]
    #[case::spaces(&[("A", "x${a b}")], "invalid reference at byte 1 of A: a reference names a secret: no whitespace, control characters or `=` (write a literal `${` as `$${`)")]
    #[case::nested(&[("A", "${A${B}}")], "invalid reference at byte 0 of A: a reference cannot contain `{` or `$` (write a literal `${` as `$${`)")]
    #[case::bad_remote(&[("A", "${zopp://only/two}")], "invalid reference at byte 0 of A: expected ${zopp://project/environment/KEY} (write a literal `${` as `$${`)")]
    #[case::bad_in_referenced(&[("A", "${B}"), ("B", "${")], "unterminated reference at byte 0 of B (write a literal `${` as `$${`)")]
    fn errors(#[case] pairs: &[(&str, &str)], #[case] expected: &str) {
        assert_eq!(resolved(pairs).unwrap_err(), expected);
    }

    #[test]
    fn errors_never_show_values() {
        let message = resolved(&[("A", "canary-secret ${MISSING}")]).unwrap_err();
        assert!(!message.contains("canary"), "{message}");
    }

    #[test]
    fn deep_chain_does_not_overflow() {
        let n = 100_000;
        let entries: Vec<Entry> = (0..n)
            .map(|i| {
                let value = if i + 1 == n {
                    String::from("end")
                } else {
                    format!("${{K{}}}", i + 1)
                };
                Entry::new(format!("K{i}"), value)
            })
            .collect();
        let out = resolve_environment(&entries, &RemoteEnvironments::new()).unwrap();
        assert!(out.iter().all(|e| e.value.expose_secret() == "end"));
    }

    #[test]
    fn doubling_graph_is_memoized_and_capped() {
        // K{i} = ${K{i-1}}${K{i-1}}: 2^i bytes without a cap, but only i resolutions.
        let mut entries = vec![Entry::new("K0", "ab")];
        for i in 1..64 {
            entries.push(Entry::new(
                format!("K{i}"),
                format!("${{K{}}}${{K{}}}", i - 1, i - 1),
            ));
        }
        let message = resolve_environment(&entries, &RemoteEnvironments::new())
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "K20 grows past 1048576 bytes once its references are resolved"
        );
        let small = &entries[..19];
        let out = resolve_environment(small, &RemoteEnvironments::new()).unwrap();
        assert_eq!(out[18].value.len(), 2 << 18);
    }

    #[test]
    fn wide_fan_in_resolves_each_value_once() {
        // 300 keys each referencing the same 1,000 keys: each is resolved once.
        let mut entries: Vec<Entry> = (0..1000)
            .map(|i| Entry::new(format!("B{i}"), "v"))
            .collect();
        let all: String = (0..1000).map(|i| format!("${{B{i}}}")).collect();
        for i in 0..300 {
            entries.push(Entry::new(format!("A{i}"), all.as_str()));
        }
        let out = resolve_environment(&entries, &RemoteEnvironments::new()).unwrap();
        assert_eq!(out[1299].value.expose_secret(), "v".repeat(1000));
    }

    #[test]
    fn references_are_listed_once_in_order() {
        let refs = references("${B} $${A} ${zopp://p/e/K/x} ${B} ${C}").unwrap();
        assert_eq!(
            refs,
            vec![
                Reference::Local("B".into()),
                Reference::Remote {
                    project: "p".into(),
                    environment: "e".into(),
                    key: "K/x".into()
                },
                Reference::Local("C".into()),
            ]
        );
        assert_eq!(refs[1].to_string(), "${zopp://p/e/K/x}");
        assert_eq!(refs[1].environment(), Some(EnvironmentPath::new("p", "e")));
        assert_eq!(refs[0].environment(), None);
        assert_eq!(
            references("x ${").unwrap_err().to_string(),
            "unterminated reference at byte 2 of the template (write a literal `${` as `$${`)"
        );
    }

    #[test]
    fn template_rendering() {
        let values = env(&[
            ("USER", "app"),
            ("PASS", "p@ss ${USER}"),
            ("BROKEN", "${NOPE}"),
        ]);
        let out = render_template(
            "user: ${USER}\npass: ${PASS}\nhost: ${zopp://shared/prod/DB_HOST}\nliteral: $${USER}\n",
            &values,
            &remote(),
        )
        .unwrap();
        assert_eq!(
            out.as_str(),
            "user: app\npass: p@ss app\nhost: db.internal\nliteral: ${USER}\n"
        );
    }

    #[rstest]
    #[case("${NOPE}", "unresolved reference ${NOPE} in the template")]
    #[case(
        "${BROKEN}",
        "unresolved reference ${NOPE} in BROKEN (via the template -> BROKEN)"
    )]
    #[case("${CYCLE}", "reference cycle: CYCLE -> CYCLE")]
    #[case(
        "${zopp://x/y/Z}",
        "unresolved reference ${zopp://x/y/Z} in the template: environment x/y was not loaded"
    )]
    fn template_errors(#[case] template: &str, #[case] expected: &str) {
        let values = env(&[("BROKEN", "${NOPE}"), ("CYCLE", "${CYCLE}")]);
        let message = render_template(template, &values, &remote())
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert_eq!(message, expected);
    }

    #[test]
    fn missing_environments_follows_only_reachable_references() {
        let mut remote = RemoteEnvironments::new();
        let values = env(&[
            ("A", "${zopp://shared/prod/NESTED}"),
            ("B", "${zopp://x/y/Z}"),
        ]);
        let first = missing_environments(&values, &remote).unwrap();
        assert_eq!(
            first.into_iter().collect::<Vec<_>>(),
            [
                EnvironmentPath::new("shared", "prod"),
                EnvironmentPath::new("x", "y")
            ]
        );
        remote.insert(
            EnvironmentPath::new("shared", "prod"),
            env(&[
                ("NESTED", "${zopp://infra/prod/REGION}"),
                ("UNUSED", "${zopp://never/used/K}"),
            ]),
        );
        remote.insert(EnvironmentPath::new("x", "y"), env(&[("Z", "z")]));
        let second = missing_environments(&values, &remote).unwrap();
        assert_eq!(
            second.into_iter().collect::<Vec<_>>(),
            [EnvironmentPath::new("infra", "prod")]
        );
        remote.insert(
            EnvironmentPath::new("infra", "prod"),
            env(&[("REGION", "eu")]),
        );
        assert!(missing_environments(&values, &remote).unwrap().is_empty());
        let out = resolve_environment(&values, &remote).unwrap();
        assert_eq!(out[0].value.expose_secret(), "eu");
        assert_eq!(out[1].value.expose_secret(), "z");
    }
}
