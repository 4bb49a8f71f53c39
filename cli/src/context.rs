//! The validated context every command receives, built once from the parsed flags, the
//! `ZOPP_*` environment and the nearest `zopp.toml`, with zopp's precedence applied
//! (flag > environment variable > zopp.toml > default).

use std::path::{Path, PathBuf};

use zopp_cli::defaults::{self, pick, Defaults};
use zopp_cli::home::{self, ZoppHome};
use zopp_cli::validate::{check_name, NameKind};
use zopp_cli::{Client, EnvRef, ServerConfig, DEFAULT_SERVER};

use crate::args::{GlobalArgs, OutputFormat};
use crate::failure::CliError;

/// Looks up an environment variable; injected so tests need not touch the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What every command works with.
#[derive(Debug)]
pub struct Context {
    /// Output format.
    pub output: OutputFormat,
    /// The zopp home.
    pub home: ZoppHome,
    /// Whether stdin is a terminal (prompts and confirmations are allowed).
    pub interactive: bool,
    server: Option<String>,
    tls_ca: Option<PathBuf>,
    workspace: Option<String>,
    project: Option<String>,
    environment: Option<String>,
    /// Why the nearest zopp.toml could not be used, reported only if a default was needed.
    defaults_error: Option<String>,
    /// `ZOPP_TOKEN`: act as that service principal, with nothing read from or written to disk.
    token: Option<Token>,
    /// The workspace from `-w` or `ZOPP_WORKSPACE`, leaving zopp.toml out.
    workspace_flag_or_env: Option<String>,
}

/// The text of `ZOPP_TOKEN`. Secret: never printed.
struct Token(zeroize::Zeroizing<String>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Environment variable holding a service principal's token.
pub const TOKEN_ENV: &str = "ZOPP_TOKEN";

/// Which scope setting a command is missing.
#[derive(Clone, Copy)]
enum Setting {
    Workspace,
    Project,
    Environment,
}

impl Setting {
    fn flag(self) -> &'static str {
        match self {
            Self::Workspace => "-w/--workspace",
            Self::Project => "-p/--project",
            Self::Environment => "-e/--environment",
        }
    }
    fn var(self) -> &'static str {
        match self {
            Self::Workspace => "ZOPP_WORKSPACE",
            Self::Project => "ZOPP_PROJECT",
            Self::Environment => "ZOPP_ENVIRONMENT",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Self::Workspace => "workspace",
            Self::Project => "project",
            Self::Environment => "environment",
        }
    }
    fn kind(self) -> NameKind {
        match self {
            Self::Workspace => NameKind::Workspace,
            Self::Project => NameKind::Project,
            Self::Environment => NameKind::Environment,
        }
    }
}

impl Context {
    /// Builds the context of this process (real environment, working directory and stdin).
    pub fn from_process(args: &GlobalArgs) -> Result<Self, CliError> {
        use std::io::IsTerminal;
        let env = |k: &str| std::env::var(k).ok();
        let cwd = std::env::current_dir().ok();
        Self::build(args, &env, cwd.as_deref(), std::io::stdin().is_terminal())
    }

    /// Builds a context from explicit sources.
    pub fn build(
        args: &GlobalArgs,
        env: EnvLookup<'_>,
        cwd: Option<&Path>,
        interactive: bool,
    ) -> Result<Self, CliError> {
        let output = match (args.output, env("ZOPP_OUTPUT").filter(|v| !v.is_empty())) {
            (Some(o), _) => o,
            (None, Some(v)) => match v.to_ascii_lowercase().as_str() {
                "human" => OutputFormat::Human,
                "json" => OutputFormat::Json,
                _ => {
                    return Err(CliError::usage(
                        format!("ZOPP_OUTPUT is '{}', not human or json", v.escape_debug()),
                        "set ZOPP_OUTPUT=human or ZOPP_OUTPUT=json, or pass --output",
                    ))
                }
            },
            (None, None) => OutputFormat::Human,
        };
        let token = env(TOKEN_ENV)
            .filter(|v| !v.trim().is_empty())
            .map(|v| Token(zeroize::Zeroizing::new(v)));
        let home = match env(home::HOME_ENV).filter(|v| !v.is_empty()) {
            Some(dir) => ZoppHome::new(dir),
            None => match env("HOME").filter(|v| !v.is_empty()) {
                Some(h) => ZoppHome::new(PathBuf::from(h).join(".zopp")),
                // A principal token needs no home: nothing is read from or written to one.
                None if token.is_some() => ZoppHome::new(PathBuf::new()),
                None => {
                    return Err(CliError::usage(
                        "cannot locate the zopp home",
                        "set ZOPP_HOME (or HOME)",
                    ))
                }
            },
        };
        let (file, defaults_error) = match cwd.map(defaults::find).transpose() {
            Ok(found) => (
                found.flatten().map(|f| f.defaults).unwrap_or_default(),
                None,
            ),
            Err(e) => (Defaults::default(), Some(e.to_string())),
        };
        Ok(Self {
            output,
            home,
            interactive,
            server: pick(args.server.clone(), env("ZOPP_SERVER"), None, None),
            tls_ca: args.tls_ca.clone().or_else(|| {
                env("ZOPP_TLS_CA")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            }),
            workspace: pick(
                args.workspace.clone(),
                env("ZOPP_WORKSPACE"),
                file.workspace,
                None,
            ),
            project: pick(
                args.project.clone(),
                env("ZOPP_PROJECT"),
                file.project,
                None,
            ),
            environment: pick(
                // `zopp diff` takes two; every other command refuses more than one (cmd::dispatch).
                args.environment.first().cloned(),
                env("ZOPP_ENVIRONMENT"),
                file.environment,
                None,
            ),
            defaults_error,
            token,
            workspace_flag_or_env: pick(args.workspace.clone(), env("ZOPP_WORKSPACE"), None, None),
        })
    }

    /// The server: flag or `ZOPP_SERVER`, else the one recorded at join, else the default.
    pub fn server(&self) -> Result<ServerConfig, CliError> {
        let url = match &self.server {
            Some(s) => s.clone(),
            // With a token there is no identity whose recorded server could be read.
            None if self.token.is_some() => DEFAULT_SERVER.to_owned(),
            None => self
                .home
                .configured_server()
                .unwrap_or_else(|| DEFAULT_SERVER.to_owned()),
        };
        Ok(ServerConfig::try_new(&url, self.tls_ca.clone())?)
    }

    /// The server to redeem a code at: `--server`/`ZOPP_SERVER` when given, else the one the
    /// code carries (`zopp_crypto::locator`), else as [`Context::server`]. Returns the code
    /// without its locator.
    pub fn server_for_code<'c>(&self, code: &'c str) -> Result<(ServerConfig, &'c str), CliError> {
        let (inner, locator) = zopp_crypto::locator::Locator::split(code).map_err(|e| {
            CliError::usage(
                e.to_string(),
                "copy the whole code again, or ask for a new one",
            )
        })?;
        let server = match (&self.server, locator) {
            (None, Some(l)) => ServerConfig::try_new(&l.server, self.tls_ca.clone())?,
            _ => self.server()?,
        };
        Ok((server, inner))
    }

    fn setting(&self, which: Setting) -> Result<&str, CliError> {
        let value = match which {
            Setting::Workspace => &self.workspace,
            Setting::Project => &self.project,
            Setting::Environment => &self.environment,
        };
        match value {
            Some(v) => {
                check_name(which.kind(), v)?;
                Ok(v)
            }
            None => Err(match &self.defaults_error {
                Some(e) => CliError::usage(
                    format!("no {} given, and {e}", which.key()),
                    format!("fix zopp.toml, or pass {}", which.flag()),
                ),
                None => CliError::usage(
                    format!("no {} given", which.key()),
                    format!(
                        "pass {}, set {}, or set {} in the [defaults] of a zopp.toml",
                        which.flag(),
                        which.var(),
                        which.key()
                    ),
                ),
            }),
        }
    }

    /// Whether `--output json` (or `ZOPP_OUTPUT=json`) was asked for.
    pub fn output_is_json(&self) -> bool {
        self.output == OutputFormat::Json
    }

    /// Whether commands act as the service principal of `ZOPP_TOKEN`.
    pub fn uses_token(&self) -> bool {
        self.token.is_some()
    }

    /// The identity on disk that `ZOPP_TOKEN` overrides, when both exist: its home and, when
    /// its config is readable, its email. `None` when there is no token or no identity on disk.
    pub fn shadowed_identity(&self) -> Option<(PathBuf, Option<String>)> {
        if self.token.is_none()
            || self.home.dir().as_os_str().is_empty()
            || !self.home.has_identity()
        {
            return None;
        }
        let email = self
            .home
            .read_config()
            .ok()
            .map(|c| c.email)
            .filter(|e| !e.is_empty());
        Some((self.home.dir().to_path_buf(), email))
    }

    /// The one-line note that `ZOPP_TOKEN` wins over the identity on disk, if both exist.
    pub fn token_note(&self) -> Option<String> {
        let (home, email) = self.shadowed_identity()?;
        Some(format!(
            "note: acting as the service principal of ZOPP_TOKEN, not as the identity in {}{}; unset ZOPP_TOKEN to use that one",
            home.display(),
            email.map(|e| format!(" ({e})")).unwrap_or_default()
        ))
    }

    /// The workspace, checked.
    pub fn workspace(&self) -> Result<&str, CliError> {
        self.setting(Setting::Workspace)
    }
    /// The workspace if one is given (flag, environment or zopp.toml), checked; `None` when
    /// none is, for commands that also work without one (`zopp audit`). A zopp.toml that
    /// cannot be read is still an error: it might have named one.
    pub fn workspace_if_given(&self) -> Result<Option<&str>, CliError> {
        if self.workspace.is_none() && self.defaults_error.is_none() {
            return Ok(None);
        }
        self.workspace().map(Some)
    }
    /// The workspace given by `-w` or `ZOPP_WORKSPACE` only, checked; a zopp.toml default does
    /// not count. For `zopp audit`, where no workspace means the server's own chain: a
    /// repository's zopp.toml must not silently turn that into a workspace's.
    pub fn workspace_explicit(&self) -> Result<Option<&str>, CliError> {
        match &self.workspace_flag_or_env {
            Some(w) => {
                check_name(NameKind::Workspace, w)?;
                Ok(Some(w))
            }
            None => Ok(None),
        }
    }

    /// The workspace and project, checked.
    pub fn project(&self) -> Result<(&str, &str), CliError> {
        Ok((self.workspace()?, self.setting(Setting::Project)?))
    }
    /// The full environment reference, checked.
    pub fn env_ref(&self) -> Result<EnvRef, CliError> {
        let (w, p) = self.project()?;
        let e = self.setting(Setting::Environment)?;
        Ok(EnvRef::try_new(w, p, e)?)
    }

    /// Unlocks the identity and connects. Call only after every argument is validated: this is
    /// where prompts and network calls start.
    pub async fn client(&self) -> Result<Client, CliError> {
        let server = self.server()?;
        if let Some(token) = &self.token {
            return Ok(Client::connect_token(server, &token.0).await?);
        }
        let identity = self.home.load_identity(home::unlock_passphrase)?;
        Ok(Client::connect(server, identity, &self.home).await?)
    }

    /// Like [`Context::client`], but a device identity connects on its first call (and
    /// reconnects after a drop), for `zopp run` and its fallback copy. A principal token still
    /// connects at once: without the server's key share it can decrypt nothing.
    pub async fn lazy_client(&self) -> Result<Client, CliError> {
        let server = self.server()?;
        if let Some(token) = &self.token {
            return Ok(Client::connect_token(server, &token.0).await?);
        }
        let identity = self.home.load_identity(home::unlock_passphrase)?;
        Ok(Client::connect_lazy(server, identity, &self.home)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args() -> GlobalArgs {
        GlobalArgs {
            server: None,
            tls_ca: None,
            workspace: None,
            project: None,
            environment: Vec::new(),
            output: None,
            no_header: false,
        }
    }

    fn build(a: &GlobalArgs, vars: &[(&str, &str)], cwd: Option<&Path>) -> Context {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |k: &str| map.get(k).cloned();
        Context::build(a, &env, cwd, false).expect("context")
    }

    const TOML: &str =
        "[defaults]\nworkspace = \"file-ws\"\nproject = \"file-p\"\nenvironment = \"file-e\"\n";

    #[test]
    fn flag_beats_env_beats_zopp_toml() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("zopp.toml"), TOML).expect("write");
        let sub = tmp.path().join("a/b");
        std::fs::create_dir_all(&sub).expect("dirs");
        let base = [("HOME", "/home/u")];

        let ctx = build(&args(), &base, Some(&sub));
        let e = ctx.env_ref().expect("from zopp.toml");
        assert_eq!(e.to_string(), "file-ws/file-p/file-e");

        let vars = [
            ("HOME", "/home/u"),
            ("ZOPP_WORKSPACE", "env-ws"),
            ("ZOPP_ENVIRONMENT", "env-e"),
        ];
        let ctx = build(&args(), &vars, Some(&sub));
        assert_eq!(
            ctx.env_ref().expect("mixed").to_string(),
            "env-ws/file-p/env-e"
        );

        let mut a = args();
        a.environment = vec!["flag-e".into()];
        let ctx = build(&a, &vars, Some(&sub));
        assert_eq!(
            ctx.env_ref().expect("flag wins").to_string(),
            "env-ws/file-p/flag-e"
        );
    }

    #[test]
    fn missing_scope_is_a_usage_error_naming_every_source() {
        let ctx = build(&args(), &[("HOME", "/h")], None);
        let CliError::Usage { message, hint } = ctx.workspace().expect_err("none") else {
            panic!("usage error")
        };
        assert_eq!(message, "no workspace given");
        let hint = hint.expect("hint");
        assert!(
            hint.contains("-w") && hint.contains("ZOPP_WORKSPACE") && hint.contains("zopp.toml")
        );
    }

    #[test]
    fn invalid_scope_names_are_refused() {
        let mut a = args();
        a.workspace = Some("a/b".into());
        let ctx = build(&a, &[("HOME", "/h")], None);
        assert!(matches!(
            ctx.workspace(),
            Err(CliError::Sdk(zopp_cli::Error::InvalidName { .. }))
        ));
    }

    #[test]
    fn broken_zopp_toml_only_matters_when_needed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("zopp.toml"), "[defaults").expect("write");
        let mut a = args();
        a.workspace = Some("w".into());
        let ctx = build(&a, &[("HOME", "/h")], Some(tmp.path()));
        assert_eq!(ctx.workspace().expect("flag given"), "w");
        let err = ctx.project().expect_err("needs the file");
        let CliError::Usage { message, .. } = err else {
            panic!("usage error")
        };
        assert!(message.contains("zopp.toml"), "{message}");
    }

    #[test]
    fn home_output_and_server_precedence() {
        let ctx = build(&args(), &[("HOME", "/home/u")], None);
        assert_eq!(ctx.home.dir(), Path::new("/home/u/.zopp"));
        assert_eq!(ctx.output, OutputFormat::Human);
        assert_eq!(ctx.server().expect("default").url(), DEFAULT_SERVER);

        let vars = [
            ("HOME", "/home/u"),
            ("ZOPP_HOME", "/z"),
            ("ZOPP_OUTPUT", "json"),
            ("ZOPP_SERVER", "http://env:1"),
        ];
        let ctx = build(&args(), &vars, None);
        assert_eq!(ctx.home.dir(), Path::new("/z"));
        assert_eq!(ctx.output, OutputFormat::Json);
        assert_eq!(ctx.server().expect("env").url(), "http://env:1");

        let mut a = args();
        a.server = Some("flag:2".into());
        a.output = Some(OutputFormat::Human);
        let ctx = build(&a, &vars, None);
        assert_eq!(ctx.server().expect("flag").url(), "http://flag:2");
        assert_eq!(ctx.output, OutputFormat::Human);

        let env = |k: &str| (k == "ZOPP_OUTPUT").then(|| "yaml".to_string());
        assert!(matches!(
            Context::build(&args(), &env, None, false),
            Err(CliError::Usage { .. })
        ));
    }

    #[test]
    fn recorded_server_is_used_when_none_is_given() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path().to_str().expect("utf-8 path");
        ZoppHome::new(home)
            .write_config(&zopp_cli::LocalConfig {
                server: "http://recorded:7".into(),
                principal_id: String::new(),
                user_id: String::new(),
                email: String::new(),
                principal_name: String::new(),
            })
            .expect("config");
        let ctx = build(&args(), &[("ZOPP_HOME", home)], None);
        assert_eq!(ctx.server().expect("recorded").url(), "http://recorded:7");
        let ctx = build(
            &args(),
            &[("ZOPP_HOME", home), ("ZOPP_SERVER", "http://env:1")],
            None,
        );
        assert_eq!(ctx.server().expect("env wins").url(), "http://env:1");
    }
}
