//! Platform resources (DESIGN.md §7): kubeconfigs and apps stored exactly like secrets, and the
//! rendering of an app's manifest for `zopp preview` and `zopp apply`.
//!
//! A resource is a secret version whose envelope says [`SecretKind::Kubeconfig`] or
//! [`SecretKind::App`]. Its stored name is `kubeconfig=NAME` or `app=NAME`: no secret name may
//! contain `=`, so a resource never collides with a secret, `secret get` cannot reach one, and
//! the server sees only the name digest as for any secret. Reads, writes, history, rollback and
//! deletion go through the same verified, signed path as secrets (`secrets.rs`).
//!
//! Rendering resolves `${KEY}` and `${zopp://project/environment/KEY}` on this machine. It
//! records which version of each secret it used and produces, beside the real text, a masked
//! text in which every injected value is replaced by `<masked:REFERENCE@vVERSION>`: previews and
//! diffs are computed on that, never on values.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_norway::{Mapping, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;
use zopp_crypto::envelope::{SecretKind, SecretPayload};
use zopp_formats::template::{references, Reference};
use zopp_formats::{render_template, Entry, EnvironmentPath, Masker, RemoteEnvironments};

use zopp_proto::v1 as pb;

use crate::client::{Client, Target};
use crate::error::{Error, Missing, Result};
use crate::scope::EnvRef;
use crate::secrets::{DecryptedEnvironment, SecretRecord, WriteOutcome};
use crate::validate::{check_name, check_value_len, NameKind};

/// Most environments one rendering may read (the one asked for included).
pub const MAX_ENVIRONMENTS: usize = 64;

/// The apply command when an app names none.
pub const DEFAULT_APPLY: [&str; 4] = ["kubectl", "apply", "-f", "-"];

/// What is written in place of an injected value in a masked rendering.
const MASK_OPEN: &str = "<masked:";

/// The two kinds of platform resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    /// A kubeconfig document.
    Kubeconfig,
    /// An app spec.
    App,
    /// The encrypted record of an app's last applies (written by `zopp apply`).
    Applied,
}

impl ResourceKind {
    /// How users call it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Kubeconfig => "kubeconfig",
            Self::App => "app",
            Self::Applied => "apply record",
        }
    }

    /// Prefix of the stored name (ends in `=`, which no secret name holds).
    fn prefix(self) -> &'static str {
        match self {
            Self::Kubeconfig => "kubeconfig=",
            Self::App => "app=",
            Self::Applied => "applied=",
        }
    }

    fn secret_kind(self) -> SecretKind {
        match self {
            Self::Kubeconfig => SecretKind::Kubeconfig,
            Self::App | Self::Applied => SecretKind::App,
        }
    }

    /// The name stored (and digested) for resource `name`.
    pub fn stored(self, name: &str) -> String {
        format!("{}{name}", self.prefix())
    }

    /// The resource name of a stored name of this kind.
    fn strip(self, stored: &str) -> Option<&str> {
        stored.strip_prefix(self.prefix())
    }
}

/// One live resource as `list` shows it.
#[derive(Debug)]
pub struct ResourceRow {
    /// Its name.
    pub name: String,
    /// Its current version.
    pub version: u64,
    /// When that version was written (unix ms).
    pub updated_at_ms: i64,
    /// Who wrote it.
    pub updated_by: String,
}

/// Checks a resource name (the rules of secret names).
///
/// # Errors
/// [`Error::InvalidName`].
pub fn check_resource_name(name: &str) -> Result<()> {
    check_name(NameKind::Secret, name)
}

/// Rewrites "secret 'kubeconfig=x'" errors so they name the resource.
fn renamed(kind: ResourceKind, env: &EnvRef, name: &str, e: Error) -> Error {
    match e {
        Error::NotFound(Missing::Secret { .. }) => Error::NotFound(Missing::Other(format!(
            "{} '{name}' not found in environment '{}'",
            kind.label(),
            env.environment()
        ))),
        Error::NotFound(Missing::Version { version, .. }) => Error::NotFound(Missing::Other(
            format!("{} '{name}' has no version {version}", kind.label()),
        )),
        Error::Verification { .. } => Error::Verification {
            name: format!("{} '{name}'", kind.label()),
        },
        Error::Conflict(m) => Error::Conflict(m.replace(&kind.stored(name), name)),
        Error::InvalidInput(m) => Error::InvalidInput(m.replace(&kind.stored(name), name)),
        other => other,
    }
}

impl Client {
    /// Stores `value` as a new version of resource `name`.
    ///
    /// # Errors
    /// Name and size checks; as [`Client::set_secret`].
    pub async fn set_resource(
        &self,
        env: &EnvRef,
        kind: ResourceKind,
        name: &str,
        value: &[u8],
    ) -> Result<WriteOutcome> {
        check_resource_name(name)?;
        check_value_len(value.len())?;
        let stored = kind.stored(name);
        let payload = SecretPayload::new(
            kind.secret_kind(),
            stored.clone(),
            value.to_vec(),
            Vec::new(),
        );
        let mut done = self
            .set_payload(env, &stored, &payload, None)
            .await
            .map_err(|e| renamed(kind, env, name, e))?;
        done.name = name.to_owned();
        Ok(done)
    }

    /// The latest version (or `version`) of resource `name`, verified and opened.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Verification`] when it is not of this kind; as
    /// [`Client::get_secret`].
    pub async fn get_resource(
        &self,
        env: &EnvRef,
        kind: ResourceKind,
        name: &str,
        version: Option<u64>,
    ) -> Result<SecretRecord> {
        check_resource_name(name)?;
        let mut rec = self
            .get_stored(env, &kind.stored(name), version)
            .await
            .map_err(|e| renamed(kind, env, name, e))?;
        if rec.kind() != Some(kind.secret_kind()) {
            return Err(Error::Verification {
                name: format!("{} '{name}'", kind.label()),
            });
        }
        rec.name = name.to_owned();
        Ok(rec)
    }

    /// Live resources of `kind`, sorted by name (one round trip).
    ///
    /// # Errors
    /// As [`Client::fetch_environment`].
    pub async fn list_resources(
        &self,
        env: &EnvRef,
        kind: ResourceKind,
    ) -> Result<Vec<ResourceRow>> {
        let state = self.fetch_environment(env).await?;
        Ok(resource_rows(&state, kind))
    }

    /// Every version of resource `name`, oldest first (names are the resource's).
    ///
    /// # Errors
    /// As [`Client::secret_history`].
    pub async fn resource_history(
        &self,
        env: &EnvRef,
        kind: ResourceKind,
        name: &str,
    ) -> Result<Vec<SecretRecord>> {
        check_resource_name(name)?;
        let mut history = self
            .history_stored(env, &kind.stored(name))
            .await
            .map_err(|e| renamed(kind, env, name, e))?;
        for r in &mut history {
            r.name = name.to_owned();
        }
        Ok(history)
    }

    /// Deletes resource `name` (a tombstone: history and rollback keep working).
    ///
    /// # Errors
    /// As [`Client::delete_secret`].
    pub async fn delete_resource(
        &self,
        env: &EnvRef,
        kind: ResourceKind,
        name: &str,
    ) -> Result<WriteOutcome> {
        check_resource_name(name)?;
        let mut done = self
            .delete_stored(env, &kind.stored(name))
            .await
            .map_err(|e| renamed(kind, env, name, e))?;
        done.name = name.to_owned();
        Ok(done)
    }

    /// Restores version `to` of resource `name` as a new version.
    ///
    /// # Errors
    /// As [`Client::rollback_secret`].
    pub async fn rollback_resource(
        &self,
        env: &EnvRef,
        kind: ResourceKind,
        name: &str,
        to: u64,
    ) -> Result<WriteOutcome> {
        check_resource_name(name)?;
        let mut done = self
            .rollback_stored(env, &kind.stored(name), to)
            .await
            .map_err(|e| renamed(kind, env, name, e))?;
        done.name = name.to_owned();
        Ok(done)
    }
}

/// The live resources of `kind` in an opened environment.
pub fn resource_rows(state: &DecryptedEnvironment, kind: ResourceKind) -> Vec<ResourceRow> {
    state
        .secrets
        .iter()
        .filter(|s| s.kind() == Some(kind.secret_kind()))
        .filter_map(|s| {
            kind.strip(&s.name).map(|name| ResourceRow {
                name: name.to_owned(),
                version: s.version,
                updated_at_ms: s.created_at_ms,
                updated_by: s.writer.label().to_owned(),
            })
        })
        .collect()
}

// ----- kubeconfigs -----

/// What replaces a credential in a masked kubeconfig.
pub const MASKED: &str = "<masked>";

/// Credential fields of a kubeconfig `user` entry.
const USER_SECRETS: [&str; 4] = [
    "token",
    "client-key-data",
    "client-certificate-data",
    "password",
];

/// Why a document is not a usable kubeconfig.
fn not_kubeconfig(why: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("not a kubeconfig: {why}"))
}

/// Parses a kubeconfig and checks it names a current context that exists.
///
/// # Errors
/// [`Error::InvalidInput`] saying what is wrong (never quoting the document).
pub fn parse_kubeconfig(text: &str) -> Result<Mapping> {
    let doc: Value = serde_norway::from_str(text).map_err(|e| {
        // The parser's message may quote the input; keep only where it failed.
        match e.location() {
            Some(l) => not_kubeconfig(format!(
                "YAML does not parse (line {}, column {})",
                l.line(),
                l.column()
            )),
            None => not_kubeconfig("YAML does not parse"),
        }
    })?;
    let Value::Mapping(map) = doc else {
        return Err(not_kubeconfig("the document is not a YAML mapping"));
    };
    if let Some(kind) = map.get("kind") {
        if kind.as_str() != Some("Config") {
            return Err(not_kubeconfig("`kind` is not `Config`"));
        }
    }
    let current = map
        .get("current-context")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| not_kubeconfig("it has no `current-context`"))?;
    let contexts = map
        .get("contexts")
        .and_then(Value::as_sequence)
        .ok_or_else(|| not_kubeconfig("it has no `contexts` list"))?;
    let found = contexts
        .iter()
        .any(|c| c.get("name").and_then(Value::as_str) == Some(current));
    if !found {
        return Err(not_kubeconfig(format!(
            "its current-context '{}' is not in its `contexts` list",
            current.escape_debug()
        )));
    }
    Ok(map)
}

/// Replaces every credential of a kubeconfig with [`MASKED`]: the `user` fields token,
/// client-key-data, client-certificate-data and password, every exec plugin's `env` values,
/// and every auth-provider `config` value.
pub fn mask_kubeconfig(map: &mut Mapping) {
    let Some(Value::Sequence(users)) = map.get_mut("users") else {
        return;
    };
    for entry in users {
        let Some(user) = entry.get_mut("user").and_then(Value::as_mapping_mut) else {
            continue;
        };
        for field in USER_SECRETS {
            if let Some(v) = user.get_mut(field) {
                *v = Value::String(MASKED.into());
            }
        }
        if let Some(Value::Sequence(envs)) = user.get_mut("exec").and_then(|e| e.get_mut("env")) {
            for e in envs {
                if let Some(v) = e.get_mut("value") {
                    *v = Value::String(MASKED.into());
                }
            }
        }
        if let Some(Value::Mapping(config)) = user
            .get_mut("auth-provider")
            .and_then(|a| a.get_mut("config"))
        {
            for (_, v) in config.iter_mut() {
                *v = Value::String(MASKED.into());
            }
        }
    }
}

/// A kubeconfig printed with its credentials masked.
///
/// # Errors
/// The stored document no longer parses as a kubeconfig.
pub fn masked_kubeconfig(text: &str) -> Result<String> {
    let mut map = parse_kubeconfig(text)?;
    mask_kubeconfig(&mut map);
    serde_norway::to_string(&map)
        .map_err(|e| Error::InvalidInput(format!("cannot print the kubeconfig: {e}")))
}

/// The kubeconfig with its current context's namespace set to `namespace`.
///
/// # Errors
/// The document is not a kubeconfig.
pub fn with_namespace(text: &str, namespace: &str) -> Result<Zeroizing<String>> {
    let mut map = parse_kubeconfig(text)?;
    let current = map
        .get("current-context")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(Value::Sequence(contexts)) = map.get_mut("contexts") {
        for c in contexts {
            if c.get("name").and_then(Value::as_str) == Some(current.as_str()) {
                if let Some(ctx) = c.get_mut("context").and_then(Value::as_mapping_mut) {
                    ctx.insert("namespace".into(), Value::String(namespace.to_owned()));
                }
            }
        }
    }
    serde_norway::to_string(&map)
        .map(Zeroizing::new)
        .map_err(|e| Error::InvalidInput(format!("cannot write the kubeconfig: {e}")))
}

// ----- apps -----

/// An app spec, as `zopp app set -f app.yaml` reads it (docs/platform.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// The kubeconfig (in the same environment) the apply command uses.
    pub kubeconfig: String,
    /// The manifest template, with `${KEY}` / `${zopp://project/environment/KEY}` references.
    pub manifest: String,
    /// The apply command and its arguments (no shell); the manifest arrives on its stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply: Option<Vec<String>>,
    /// Namespace set on the kubeconfig's current context for the apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Descriptive labels, shown by `app get` and `app list`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl AppSpec {
    /// Parses and checks a spec: it parses, names a valid kubeconfig, has a manifest whose
    /// every reference parses, and an apply command that is not empty.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the problem.
    pub fn try_parse(text: &str) -> Result<Self> {
        let spec: AppSpec = serde_norway::from_str(text)
            .map_err(|e| Error::InvalidInput(format!("not an app spec: {e}")))?;
        check_resource_name(&spec.kubeconfig)?;
        if spec.manifest.trim().is_empty() {
            return Err(Error::InvalidInput("the app's `manifest` is empty".into()));
        }
        let refs = references(&spec.manifest)
            .map_err(|e| Error::InvalidInput(format!("the app's manifest: {e}")))?;
        for r in &refs {
            if let Reference::Remote {
                project,
                environment,
                ..
            } = r
            {
                check_name(NameKind::Project, project)?;
                check_name(NameKind::Environment, environment)?;
            }
        }
        if let Some(cmd) = &spec.apply {
            if cmd.first().is_none_or(|p| p.is_empty()) {
                return Err(Error::InvalidInput(
                    "the app's `apply` command is empty; leave it out for `kubectl apply -f -`"
                        .into(),
                ));
            }
        }
        if let Some(ns) = &spec.namespace {
            let valid = !ns.is_empty()
                && ns.len() <= 63
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                return Err(Error::InvalidInput(format!(
                    "the app's namespace '{}' is not a Kubernetes namespace name (lowercase \
                     letters, digits and '-', at most 63)",
                    ns.escape_debug()
                )));
            }
        }
        Ok(spec)
    }

    /// The apply command: the spec's, or `kubectl apply -f -`.
    pub fn apply_command(&self) -> Vec<String> {
        self.apply
            .clone()
            .unwrap_or_else(|| DEFAULT_APPLY.iter().map(|s| (*s).to_owned()).collect())
    }
}

/// One secret a rendering used.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UsedSecret {
    /// The reference as written (`${KEY}` or `${zopp://p/e/KEY}`), or, for a secret reached
    /// through another secret's value, the reference that reached it.
    pub reference: String,
    /// Environment id of the secret.
    pub environment_id: String,
    /// Its name digest (hex), as the server knows it.
    pub name_digest: String,
    /// The version used.
    pub version: u64,
}

/// A rendered manifest: the real text, the masked text and the versions used.
pub struct Rendering {
    /// The manifest with the values.
    ///
    /// # Security
    /// Plaintext: goes only to the apply command's stdin.
    pub text: Zeroizing<String>,
    /// The manifest with every injected value masked.
    pub masked: String,
    /// Every secret the rendering reached, sorted.
    pub used: Vec<UsedSecret>,
    /// Every value injected (resolved) and every raw value reached, for masking output.
    values: Vec<Zeroizing<String>>,
}

impl std::fmt::Debug for Rendering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendering")
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

impl Rendering {
    /// SHA-256 of the real text.
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.text.as_bytes()).into()
    }

    /// A masker that conceals every value this rendering injected.
    pub fn masker(&self) -> Masker {
        Masker::new(self.values.iter().map(|v| v.as_bytes()))
    }
}

/// The environments a rendering read, by path.
struct Loaded {
    own: EnvironmentPath,
    envs: BTreeMap<EnvironmentPath, DecryptedEnvironment>,
}

impl Loaded {
    fn secret(&self, path: &EnvironmentPath, key: &str) -> Option<&SecretRecord> {
        self.envs.get(path).and_then(|s| {
            s.secrets
                .iter()
                .find(|r| r.name == key && r.kind() == Some(SecretKind::Secret))
        })
    }
}

/// Text entries of an environment's plain secrets.
fn text_entries(
    state: &DecryptedEnvironment,
    masked: Option<&dyn Fn(&SecretRecord) -> String>,
) -> Vec<Entry> {
    state
        .secrets
        .iter()
        .filter(|s| s.kind() == Some(SecretKind::Secret))
        .filter_map(|s| match masked {
            Some(f) => Some(Entry::new(s.name.clone(), f(s))),
            None => std::str::from_utf8(s.expose_value())
                .ok()
                .map(|v| Entry::new(s.name.clone(), v)),
        })
        .collect()
}

/// Renders `template` in `env`: fetches the environment and exactly the others its
/// references reach, resolves every reference, and records the version of every secret used.
///
/// # Errors
/// [`Error::Reference`] naming a reference that does not parse or does not resolve (before
/// anything runs); fetch errors.
pub async fn render(client: &Client, env: &EnvRef, template: &str) -> Result<Rendering> {
    let own = EnvironmentPath::new(env.project(), env.environment());
    let mut loaded = Loaded {
        own: own.clone(),
        envs: BTreeMap::new(),
    };
    loaded
        .envs
        .insert(own.clone(), client.fetch_environment(env).await?);
    let reference_error = |message: String| Error::Reference {
        message,
        cause: None,
    };
    let top = references(template).map_err(|e| reference_error(e.to_string()))?;
    // Breadth first over references: each secret reached, in the environment it lives in.
    let mut queue: VecDeque<(EnvironmentPath, Reference, String)> = top
        .into_iter()
        .map(|r| {
            let shown = r.to_string();
            (own.clone(), r, shown)
        })
        .collect();
    let mut seen: BTreeSet<(EnvironmentPath, String)> = BTreeSet::new();
    let mut used = Vec::new();
    let mut values: Vec<Zeroizing<String>> = Vec::new();
    while let Some((from, r, via)) = queue.pop_front() {
        let (path, key) = match &r {
            Reference::Local(k) => (from.clone(), k.clone()),
            Reference::Remote {
                project,
                environment,
                key,
            } => (
                EnvironmentPath::new(project.as_str(), environment.as_str()),
                key.clone(),
            ),
        };
        if !seen.insert((path.clone(), key.clone())) {
            continue;
        }
        if !loaded.envs.contains_key(&path) {
            if loaded.envs.len() >= MAX_ENVIRONMENTS {
                return Err(reference_error(format!(
                    "references of the manifest reach more than {MAX_ENVIRONMENTS} environments"
                )));
            }
            let target = EnvRef::try_new(env.workspace(), &path.project, &path.environment)?;
            let state = client
                .fetch_environment(&target)
                .await
                .map_err(|e| Error::Reference {
                    message: format!("reference {via}: environment {path}: {e}"),
                    cause: Some(Box::new(match e {
                        Error::NotFound(m) => Error::NotFound(m),
                        other => Error::InvalidInput(other.to_string()),
                    })),
                })?;
            loaded.envs.insert(path.clone(), state);
        }
        let Some(rec) = loaded.secret(&path, &key) else {
            return Err(reference_error(format!(
                "reference {via}: secret '{key}' does not exist in {path}"
            )));
        };
        let state = &loaded.envs[&path];
        let digest = client
            .name_digest(&target_ref(env, &path)?, &key)
            .await?
            .to_hex();
        used.push(UsedSecret {
            reference: via.clone(),
            environment_id: state.environment.to_string(),
            name_digest: digest,
            version: rec.version,
        });
        if let Ok(value) = std::str::from_utf8(rec.expose_value()) {
            values.push(Zeroizing::new(value.to_owned()));
            if let Ok(inner) = references(value) {
                for r in inner {
                    queue.push_back((path.clone(), r, via.clone()));
                }
            }
        }
    }
    used.sort();
    used.dedup();

    let (entries, remote) = sources(&loaded, None);
    let text =
        render_template(template, &entries, &remote).map_err(|e| reference_error(e.to_string()))?;
    // Each reference on its own gives the value it injects (references inside values resolved).
    for r in references(template).map_err(|e| reference_error(e.to_string()))? {
        let one = render_template(&r.to_string(), &entries, &remote)
            .map_err(|e| reference_error(e.to_string()))?;
        values.push(one);
    }
    let mask = |s: &SecretRecord| format!("{MASK_OPEN}{}@v{}>", s.name, s.version);
    let (entries, remote) = sources(&loaded, Some(&mask));
    let masked =
        render_template(template, &entries, &remote).map_err(|e| reference_error(e.to_string()))?;
    Ok(Rendering {
        text,
        masked: masked.to_string(),
        used,
        values,
    })
}

fn target_ref(env: &EnvRef, path: &EnvironmentPath) -> Result<EnvRef> {
    EnvRef::try_new(env.workspace(), &path.project, &path.environment)
}

/// The current environment's entries and every loaded environment as remote sources, with
/// values or masks.
fn sources(
    loaded: &Loaded,
    mask: Option<&dyn Fn(&SecretRecord) -> String>,
) -> (Vec<Entry>, RemoteEnvironments) {
    let mut remote = RemoteEnvironments::new();
    let mut current = Vec::new();
    for (path, state) in &loaded.envs {
        let entries = text_entries(state, mask);
        if *path == loaded.own {
            current = entries.clone();
        }
        remote.insert(path.clone(), entries);
    }
    (current, remote)
}

// ----- apply records -----

/// What one apply did, as the encrypted apply record keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyInfo {
    /// Who applied (the principal's label).
    pub by: String,
    /// When the apply started (unix ms).
    pub started_at_ms: i64,
    /// When the apply command ended (unix ms).
    pub finished_at_ms: i64,
    /// The app version applied.
    pub app_version: u64,
    /// The kubeconfig version used.
    pub kubeconfig_version: u64,
    /// The secrets the rendering used.
    pub secrets: Vec<UsedSecret>,
    /// SHA-256 (hex) of the rendered manifest.
    pub rendering_sha256: String,
    /// The apply command's exit code.
    pub exit_code: i32,
    /// The masked rendering (only on successful applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked: Option<String>,
}

/// The encrypted record of an app's applies: the last one, and the last successful one
/// (what `zopp preview` compares against).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyRecord {
    /// The most recent apply.
    pub last: Option<ApplyInfo>,
    /// The most recent apply whose command exited 0.
    pub last_success: Option<ApplyInfo>,
}

impl Client {
    /// The app's apply record, if it was ever applied.
    ///
    /// # Errors
    /// Transport, server and verification errors.
    pub async fn apply_record(&self, env: &EnvRef, app: &str) -> Result<(ApplyRecord, u64)> {
        match self
            .get_resource(env, ResourceKind::Applied, app, None)
            .await
        {
            Ok(rec) => {
                let parsed = serde_json::from_slice(rec.expose_value()).map_err(|e| {
                    Error::InvalidInput(format!(
                        "the apply record of app '{app}' is unreadable: {e}"
                    ))
                })?;
                Ok((parsed, rec.version))
            }
            Err(Error::NotFound(_)) => Ok((ApplyRecord::default(), 0)),
            Err(e) => Err(e),
        }
    }

    /// Appends `info` to the app's apply record.
    ///
    /// # Errors
    /// As [`Client::set_resource`].
    pub async fn record_apply(&self, env: &EnvRef, app: &str, info: ApplyInfo) -> Result<()> {
        let (mut record, _) = self.apply_record(env, app).await?;
        if info.exit_code == 0 {
            record.last_success = Some(info.clone());
        }
        record.last = Some(info);
        let bytes = serde_json::to_vec(&record)
            .map_err(|e| Error::InvalidInput(format!("cannot encode the apply record: {e}")))?;
        self.set_resource(env, ResourceKind::Applied, app, &bytes)
            .await?;
        Ok(())
    }
}

/// Full gRPC method paths of the lease RPCs, as signed (FORMAT.md §4).
pub mod method {
    /// `AcquireAppLease`.
    pub const ACQUIRE_APP_LEASE: &str = "/zopp.v1.Zopp/AcquireAppLease";
    /// `ReleaseAppLease`.
    pub const RELEASE_APP_LEASE: &str = "/zopp.v1.Zopp/ReleaseAppLease";
    /// `GetAppStatus`.
    pub const GET_APP_STATUS: &str = "/zopp.v1.Zopp/GetAppStatus";
}

/// The outcome of asking for an app's lease.
#[derive(Debug)]
pub enum LeaseOutcome {
    /// Taken (or renewed): its id and when it runs out (unix ms).
    Acquired {
        /// Lease id, for renewing and releasing.
        lease_id: String,
        /// Expiry (unix ms).
        expires_at_ms: i64,
    },
    /// Someone else holds a live lease.
    Held {
        /// Who holds it (the most human label).
        by: String,
        /// Since when (unix ms).
        since_ms: i64,
        /// Until when, unless renewed (unix ms).
        expires_at_ms: i64,
    },
}

fn holder_label(h: Option<&pb::AppLeaseHolder>) -> (String, i64, i64) {
    match h {
        Some(h) => {
            let by = h
                .principal
                .as_ref()
                .map(|p| {
                    [&p.user_email, &p.name, &p.principal_id]
                        .into_iter()
                        .find(|s| !s.is_empty())
                        .cloned()
                        .unwrap_or_else(|| "unknown".into())
                })
                .unwrap_or_else(|| "unknown".into());
            (by, h.acquired_at_ms, h.expires_at_ms)
        }
        None => ("unknown".into(), 0, 0),
    }
}

impl Client {
    /// Takes (`lease_id` = `None`) or renews the lease on app `app`.
    ///
    /// # Errors
    /// Transport and server errors (PERMISSION_DENIED without write, or breaking without admin).
    pub async fn acquire_app_lease(
        &self,
        env: &EnvRef,
        app: &str,
        ttl_seconds: u32,
        lease_id: Option<&str>,
        break_lock: bool,
    ) -> Result<LeaseOutcome> {
        let digest = self
            .name_digest(env, &ResourceKind::App.stored(app))
            .await?;
        let req = self.signed(
            method::ACQUIRE_APP_LEASE,
            pb::AcquireAppLeaseRequest {
                env: Some(env.to_proto()),
                app_digest: digest.as_bytes().to_vec(),
                ttl_seconds,
                lease_id: lease_id.unwrap_or_default().to_owned(),
                break_lock,
            },
        );
        let resp = self
            .rpc()
            .acquire_app_lease(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.status_error(s, Target::Environment(env)))?;
        let (by, since_ms, expires_at_ms) = holder_label(resp.holder.as_ref());
        Ok(if resp.acquired {
            LeaseOutcome::Acquired {
                lease_id: resp.lease_id,
                expires_at_ms,
            }
        } else {
            LeaseOutcome::Held {
                by,
                since_ms,
                expires_at_ms,
            }
        })
    }

    /// Releases the lease and records the apply it covered. Returns whether the lease was
    /// still held.
    ///
    /// # Errors
    /// Transport and server errors.
    pub async fn release_app_lease(
        &self,
        env: &EnvRef,
        app: &str,
        lease_id: &str,
        apply: Option<pb::AppApply>,
    ) -> Result<bool> {
        let digest = self
            .name_digest(env, &ResourceKind::App.stored(app))
            .await?;
        let req = self.signed(
            method::RELEASE_APP_LEASE,
            pb::ReleaseAppLeaseRequest {
                env: Some(env.to_proto()),
                app_digest: digest.as_bytes().to_vec(),
                lease_id: lease_id.to_owned(),
                apply,
            },
        );
        self.rpc()
            .release_app_lease(req)
            .await
            .map(|r| r.into_inner().released)
            .map_err(|s| self.status_error(s, Target::Environment(env)))
    }

    /// The live lease holder (label, since, until) and the last apply the server recorded.
    ///
    /// # Errors
    /// Transport and server errors.
    pub async fn app_status(
        &self,
        env: &EnvRef,
        app: &str,
    ) -> Result<(Option<(String, i64, i64)>, Option<pb::AppApply>)> {
        let digest = self
            .name_digest(env, &ResourceKind::App.stored(app))
            .await?;
        let req = self.signed(
            method::GET_APP_STATUS,
            pb::GetAppStatusRequest {
                env: Some(env.to_proto()),
                app_digest: digest.as_bytes().to_vec(),
            },
        );
        let resp = self
            .rpc()
            .get_app_status(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.status_error(s, Target::Environment(env)))?;
        let holder = resp.holder.as_ref().map(|h| holder_label(Some(h)));
        Ok((holder, resp.last_apply))
    }
}

/// The label of who applied, from a server record.
pub fn applied_by(a: &pb::AppApply) -> String {
    a.applied_by
        .as_ref()
        .map(|p| {
            [&p.user_email, &p.name, &p.principal_id]
                .into_iter()
                .find(|s| !s.is_empty())
                .cloned()
                .unwrap_or_else(|| "unknown".into())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// A line diff of two texts (`-` removed, `+` added, ` ` kept), by longest common subsequence.
/// Meant for masked renderings: never give it values.
pub fn diff_lines(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Bounded: renderings larger than this are summarised instead of diffed line by line.
    if a.len().saturating_mul(b.len()) > 25_000_000 {
        return vec![format!(
            "(too large to diff: {} lines before, {} lines now)",
            a.len(),
            b.len()
        )];
    }
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBE: &str = "\
apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:6443
contexts:
- name: dev
  context:
    cluster: c
    user: u
users:
- name: u
  user:
    token: tok-canary
    client-key-data: key-canary
    client-certificate-data: cert-canary
    password: pw-canary
    exec:
      command: helper
      env:
      - name: SECRET
        value: exec-canary
    auth-provider:
      name: oidc
      config:
        id-token: oidc-canary
";

    #[test]
    fn kubeconfig_needs_an_existing_current_context() {
        assert!(parse_kubeconfig(KUBE).is_ok());
        for (bad, why) in [
            ("a: [", "does not parse"),
            ("- 1", "not a YAML mapping"),
            ("kind: Config\ncontexts: []\n", "no `current-context`"),
            ("current-context: x\n", "no `contexts`"),
            (
                "current-context: x\ncontexts:\n- name: y\n",
                "not in its `contexts`",
            ),
            ("kind: Pod\ncurrent-context: x\n", "not `Config`"),
        ] {
            let e = parse_kubeconfig(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn every_credential_is_masked() {
        let shown = masked_kubeconfig(KUBE).expect("mask");
        for canary in [
            "tok-canary",
            "key-canary",
            "cert-canary",
            "pw-canary",
            "exec-canary",
            "oidc-canary",
        ] {
            assert!(!shown.contains(canary), "{canary} in {shown}");
        }
        assert!(shown.contains("server: https://127.0.0.1:6443"));
        assert_eq!(shown.matches(MASKED).count(), 6);
    }

    #[test]
    fn namespace_goes_on_the_current_context() {
        let text = with_namespace(KUBE, "web").expect("namespace");
        let map = parse_kubeconfig(&text).expect("still a kubeconfig");
        let ctx = &map["contexts"][0]["context"];
        assert_eq!(ctx["namespace"].as_str(), Some("web"));
    }

    #[test]
    fn app_specs_are_checked() {
        let ok = "kubeconfig: kc\nmanifest: |\n  a: ${A}\n  b: ${zopp://p/e/B}\n";
        let spec = AppSpec::try_parse(ok).expect("valid");
        assert_eq!(spec.apply_command(), DEFAULT_APPLY);
        for (bad, why) in [
            ("manifest: x\n", "kubeconfig"),
            ("kubeconfig: kc\nmanifest: '${A'\n", "manifest"),
            ("kubeconfig: kc\nmanifest: ''\n", "empty"),
            ("kubeconfig: kc\nmanifest: x\napply: []\n", "apply"),
            (
                "kubeconfig: kc\nmanifest: x\nnamespace: Bad_NS\n",
                "namespace",
            ),
            ("kubeconfig: kc\nmanifest: x\nextra: 1\n", "unknown field"),
        ] {
            let e = AppSpec::try_parse(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn diff_marks_changed_lines() {
        let d = diff_lines("a\nb\nc\n", "a\nB\nc\nd\n");
        assert_eq!(d, vec!["  a", "- b", "+ B", "  c", "+ d"]);
    }
}
