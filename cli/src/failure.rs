//! The one place that turns an error into what the user sees: a message (what happened), a
//! hint (what to do next) and an exit code (DESIGN.md §8, docs/ARCHITECTURE.md "Exit codes").

use std::io;

use tonic::Code;
use zopp_cli::{Error, Missing, TlsProblem};

/// Success.
pub const EXIT_OK: u8 = 0;
/// Any other error.
pub const EXIT_ERROR: u8 = 1;
/// Bad usage or input refused before any call.
pub const EXIT_USAGE: u8 = 2;
/// Something named does not exist.
pub const EXIT_NOT_FOUND: u8 = 3;
/// The server refused: no permission.
pub const EXIT_PERMISSION: u8 = 4;
/// Authentication failed (or no identity).
pub const EXIT_AUTH: u8 = 5;
/// Conflict: version, lock or existing name.
pub const EXIT_CONFLICT: u8 = 6;
/// The server cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 7;

/// Everything a command can fail with.
#[derive(Debug)]
pub enum CliError {
    /// An SDK error.
    Sdk(Error),
    /// A usage problem found by the command layer.
    Usage {
        /// What is wrong.
        message: String,
        /// What to do instead.
        hint: Option<String>,
    },
    /// A destructive command needs confirmation but cannot ask.
    NeedsConfirmation {
        /// What would be deleted, e.g. `workspace 'acme'`.
        what: String,
    },
    /// A command that deletes or replaces data needs confirmation but cannot ask.
    NeedsYes {
        /// What it would do, e.g. `restore environment 'dev' (2 removed, 1 changed)`.
        action: String,
    },
    /// The user declined a confirmation.
    Cancelled,
    /// Writing results to stdout failed.
    Stdout(io::Error),
    /// Exit quietly with this code: `zopp run` passing on its child's exit code.
    Exit(u8),
    /// A failure with its own exit code, e.g. 127 when `zopp run` cannot find the command.
    Failed {
        /// What happened.
        message: String,
        /// What to do next.
        hint: Option<String>,
        /// The exit code.
        code: u8,
    },
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        Self::Sdk(e)
    }
}

impl CliError {
    /// A usage error with a hint.
    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Usage {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

/// What to print and how to exit.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    /// The `error:` line.
    pub message: String,
    /// The `hint:` line, if any.
    pub hint: Option<String>,
    /// Process exit code.
    pub code: u8,
}

/// The stable name of an exit code, the `code` of a JSON error.
pub fn code_name(exit_code: u8) -> &'static str {
    match exit_code {
        EXIT_OK => "ok",
        EXIT_USAGE => "usage",
        EXIT_NOT_FOUND => "not_found",
        EXIT_PERMISSION => "permission_denied",
        EXIT_AUTH => "authentication",
        EXIT_CONFLICT => "conflict",
        EXIT_UNREACHABLE => "unreachable",
        // `zopp run`: the command to run is missing (127) or not executable (126).
        126 | 127 => "command_failed",
        _ => "error",
    }
}

/// An error as `--output json` prints it on stderr: one object on one line (docs/ARCHITECTURE.md
/// "Exit codes" documents it).
#[derive(Debug, serde::Serialize)]
pub struct ErrorJson<'a> {
    /// Stable name of the exit code: `usage`, `not_found`, `permission_denied`,
    /// `authentication`, `conflict`, `unreachable`, `command_failed` or `error`.
    pub code: &'static str,
    /// The process exit code.
    pub exit_code: u8,
    /// What happened (the `error:` line).
    pub message: &'a str,
    /// What to do next (the `hint:` line); `null` when there is none.
    pub hint: Option<&'a str>,
}

impl Failure {
    /// This failure as the one-line JSON object `--output json` prints on stderr.
    pub fn to_json(&self) -> String {
        let j = ErrorJson {
            code: code_name(self.code),
            exit_code: self.code,
            message: &self.message,
            hint: self.hint.as_deref(),
        };
        serde_json::to_string(&j).unwrap_or_else(|_| {
            format!(
                "{{\"code\":\"error\",\"exit_code\":{},\"message\":\"\",\"hint\":null}}",
                self.code
            )
        })
    }
}

/// Exit code of a gRPC status code.
pub fn exit_code_for(code: Code) -> u8 {
    match code {
        Code::Ok => EXIT_OK,
        Code::NotFound => EXIT_NOT_FOUND,
        Code::PermissionDenied => EXIT_PERMISSION,
        Code::Unauthenticated => EXIT_AUTH,
        Code::AlreadyExists | Code::Aborted => EXIT_CONFLICT,
        Code::Unavailable => EXIT_UNREACHABLE,
        Code::InvalidArgument => EXIT_USAGE,
        _ => EXIT_ERROR,
    }
}

fn not_found_hint(m: &Missing) -> Option<String> {
    Some(match m {
        Missing::Workspace { .. } => "run `zopp workspace list` to see your workspaces".into(),
        Missing::Project { workspace, .. } => format!("run `zopp project list -w {workspace}`"),
        Missing::Environment {
            workspace, project, ..
        } => format!("run `zopp environment list -w {workspace} -p {project}`"),
        Missing::Secret { .. } => {
            "run `zopp secret list` to see the secrets of this environment".into()
        }
        Missing::Version { name, .. } => format!("run `zopp secret history {name}`"),
        Missing::PointInTime { .. } => {
            "pick a later --at time or --at-version; `zopp environment list --output json` shows each environment's version and the oldest one still kept (history_floor)".into()
        }
        _ => return None,
    })
}

fn refusal_hint(code: Code) -> Option<String> {
    Some(
        match code {
            Code::PermissionDenied => "ask an admin of the workspace to grant you a role",
            Code::Unauthenticated => {
                "check this machine's clock, and that your identity (ZOPP_HOME) is still registered"
            }
            Code::Unimplemented => "the server is older than this client; upgrade zopp-server",
            _ => return None,
        }
        .to_owned(),
    )
}

/// Exit code and hint of a failed TLS handshake: the server's certificate is a reachability
/// problem (7), the client's certificate an authentication one (5).
fn tls_hint(problem: TlsProblem) -> (u8, &'static str) {
    match problem {
        TlsProblem::UnknownIssuer => (
            EXIT_UNREACHABLE,
            "pass --tls-ca FILE (or set ZOPP_TLS_CA) with the CA that signed the server's certificate; `zopp join --tls-ca FILE` remembers it for later commands",
        ),
        TlsProblem::NameMismatch => (
            EXIT_UNREACHABLE,
            "use the host name the server's certificate names in --server/ZOPP_SERVER, or ask its operator for a certificate that names this host",
        ),
        TlsProblem::Expired => (
            EXIT_UNREACHABLE,
            "check this machine's clock; if it is right, ask the server's operator to renew the certificate",
        ),
        TlsProblem::ClientCertificateRequired => (
            EXIT_AUTH,
            "pass --tls-cert FILE --tls-key FILE (or set ZOPP_TLS_CERT and ZOPP_TLS_KEY) with a client certificate from the CA the server trusts",
        ),
        TlsProblem::ClientCertificateRefused => (
            EXIT_AUTH,
            "the server does not accept this client certificate (another CA, or expired): ask its operator for one",
        ),
        TlsProblem::HandshakeClosed => (
            EXIT_AUTH,
            "if the server requires client certificates, pass --tls-cert FILE --tls-key FILE (or set ZOPP_TLS_CERT and ZOPP_TLS_KEY) with one from the CA it trusts; if you did, ask its operator whether it accepts that certificate",
        ),
        TlsProblem::NotTls => (
            EXIT_UNREACHABLE,
            "the server does not speak TLS on this port: check the port, or use http:// if it really serves plaintext",
        ),
        _ => (EXIT_UNREACHABLE, "check --server and the TLS settings (--tls-ca, --tls-cert, --tls-key)"),
    }
}

/// Describes `err` for the user; `None` means exit quietly (a closed pipe on stdout).
pub fn describe(err: &CliError) -> Option<Failure> {
    let f = |code: u8, hint: Option<String>, message: String| Failure {
        message,
        hint,
        code,
    };
    let e =
        match err {
            CliError::Stdout(e) if e.kind() == io::ErrorKind::BrokenPipe => return None,
            CliError::Stdout(e) => {
                return Some(f(EXIT_ERROR, None, format!("cannot write output: {e}")))
            }
            CliError::Usage { message, hint } => {
                return Some(f(EXIT_USAGE, hint.clone(), message.clone()))
            }
            CliError::NeedsConfirmation { what } => {
                return Some(f(
                    EXIT_USAGE,
                    Some("stdin is not a terminal, so pass --yes to confirm".into()),
                    format!("refusing to delete {what} without confirmation"),
                ))
            }
            CliError::NeedsYes { action } => return Some(f(
                EXIT_USAGE,
                Some(
                    "stdin is not a terminal, so pass --yes to confirm (--dry-run shows the plan)"
                        .into(),
                ),
                format!("refusing to {action} without confirmation"),
            )),
            CliError::Cancelled => return Some(f(EXIT_ERROR, None, "cancelled".into())),
            CliError::Exit(_) => return None,
            CliError::Failed {
                message,
                hint,
                code,
            } => return Some(f(*code, hint.clone(), message.clone())),
            CliError::Sdk(e) => e,
        };
    let message = e.to_string();
    Some(match e {
        Error::InvalidName { .. } => f(
            EXIT_USAGE,
            Some("names are 1-256 bytes without whitespace or control characters; secret names have no '=', scope names no '/'".into()),
            message,
        ),
        Error::ValueTooLarge { .. } => f(
            EXIT_USAGE,
            Some("keep large files elsewhere: a secret value holds at most 1 MiB".into()),
            message,
        ),
        Error::InvalidInput(_) => f(EXIT_USAGE, None, message),
        Error::BadServer { .. } => f(
            EXIT_USAGE,
            Some("pass --server http://HOST:PORT (or https://), or set ZOPP_SERVER".into()),
            message,
        ),
        Error::NoIdentity { .. } => f(
            EXIT_AUTH,
            Some("run `zopp join <TOKEN> <EMAIL>` with an invite, or point ZOPP_HOME at an existing identity".into()),
            message,
        ),
        Error::PassphraseRequired { .. } => f(
            EXIT_AUTH,
            Some("set ZOPP_PASSPHRASE, or run zopp in a terminal to be asked".into()),
            message,
        ),
        Error::NewKeyPassphraseRequired { .. } => f(
            EXIT_USAGE,
            Some("set ZOPP_PASSPHRASE to protect the key, or pass --no-passphrase (ZOPP_NO_PASSPHRASE=1) to store it unencrypted".into()),
            message,
        ),
        Error::WrongPassphrase { .. } => f(
            EXIT_AUTH,
            Some("check ZOPP_PASSPHRASE (or what you typed)".into()),
            message,
        ),
        Error::IdentityExists { .. } => f(
            EXIT_CONFLICT,
            Some("zopp never overwrites an identity: set ZOPP_HOME to another directory to join again".into()),
            message,
        ),
        Error::Plaintext { .. } => f(
            EXIT_USAGE,
            Some("use https:// (with --tls-ca if the server's CA is private), or pass --insecure (ZOPP_INSECURE=1) on a network you trust".into()),
            message,
        ),
        Error::Tls { problem, .. } => {
            let (code, hint) = tls_hint(*problem);
            f(code, Some(hint.into()), message)
        }
        Error::Unreachable { .. } => f(
            EXIT_UNREACHABLE,
            Some("is `zopp-server serve` running there? check --server/ZOPP_SERVER".into()),
            message,
        ),
        Error::NotFound(m) => f(EXIT_NOT_FOUND, not_found_hint(m), message),
        Error::AlreadyExists { .. } => f(EXIT_CONFLICT, Some("choose another name".into()), message),
        Error::Conflict(_) => f(
            EXIT_CONFLICT,
            Some("read the current version (`zopp secret get NAME`) and try again".into()),
            message,
        ),
        Error::EnvVersionMismatch {
            workspace, project, ..
        } => f(
            EXIT_CONFLICT,
            Some(format!(
                "`zopp environment list -w {workspace} -p {project}` shows each environment's current version (VERSION); pass that to --if-env-version"
            )),
            message,
        ),
        Error::JoinRefused { code, .. } => f(
            exit_code_for(*code),
            Some("ask for a new invite (`zopp invite create` from a workspace admin, or `zopp-server invite create` from the server's operator)".into()),
            message,
        ),
        Error::Refused { code, .. } => f(exit_code_for(*code), refusal_hint(*code), message),
        Error::RolledBack { .. } => f(
            EXIT_ERROR,
            Some("do not trust this answer: the server's database may have been restored from an old backup or tampered with; tell your zopp administrator".into()),
            message,
        ),
        Error::WriterKeyMismatch { .. } | Error::WriterUnverified { .. } => f(
            EXIT_ERROR,
            Some("nothing was read or written: do not trust this server's answer and tell your zopp administrator".into()),
            message,
        ),
        Error::ScopeSwapped { .. } => f(
            EXIT_ERROR,
            Some("nothing was read or written: do not trust this server's answer and tell your zopp administrator; if the scope was deleted and created again on purpose, delete the `scopes-*.bin` files in $ZOPP_HOME/cache to trust the new one".into()),
            message,
        ),
        Error::EpochRolledBack { .. } => f(
            EXIT_ERROR,
            Some("nothing was read or written: the server is serving a key that a rotation retired (a removed member may still hold it); tell your zopp administrator".into()),
            message,
        ),
        Error::Verification { .. } => f(
            EXIT_ERROR,
            Some("the server sent data its signatures do not vouch for: do not trust it, and tell your zopp administrator".into()),
            message,
        ),
        Error::KeyForged { .. } => f(
            EXIT_ERROR,
            Some("the server sent key material nobody you trust signed for: do not use this server's data, keep it for investigation, and tell your zopp administrator".into()),
            message,
        ),
        Error::KeyChain { .. } => f(
            EXIT_ERROR,
            Some("your grant may have changed: ask an admin to grant access again".into()),
            message,
        ),
        Error::ReferenceNotAllowed { environment } => f(
            EXIT_PERMISSION,
            Some(format!("pass --allow-ref {environment} if values of {environment} may be used here (docs/run.md \"References\")")),
            message,
        ),
        Error::Reference { cause, .. } => {
            let (code, hint) = match cause.as_deref().and_then(|c| describe(&CliError::Sdk(clone_for_exit(c)))) {
                Some(c) => (c.code, c.hint),
                None => (
                    EXIT_ERROR,
                    Some("fix the secret's value (`zopp secret set`); write a literal `${` as `$${`".into()),
                ),
            };
            f(code, hint, message)
        }
        Error::Fallback(_) => f(
            EXIT_ERROR,
            Some("run `zopp run --fallback FILE -- …` once while the server is reachable to write a fresh copy".into()),
            message,
        ),
        Error::Unrepresentable { .. } => f(
            EXIT_ERROR,
            Some("use the default human output, which prints raw bytes".into()),
            message,
        ),
        Error::AuditChain { .. } => f(
            EXIT_ERROR,
            Some("the server's audit trail is not what its hashes, signatures and your last verify vouch for: keep the database and this output, and investigate before trusting the server".into()),
            message,
        ),
        Error::Untrusted { fingerprint, .. } => f(
            EXIT_ERROR,
            Some(match fingerprint {
                Some(fp) => format!("if the owner confirms fingerprint {fp} (they run `zopp principal fingerprint`), pass --fingerprint {fp}"),
                None => "do not grant to this principal: tell your zopp administrator, and compare fingerprints (`zopp principal fingerprint ID`) out of band".into(),
            }),
            message,
        ),
        Error::BadToken(_) => f(
            EXIT_USAGE,
            Some("set ZOPP_TOKEN to the zopp_… token printed by `zopp principal create-service`".into()),
            message,
        ),
        Error::OutdatedToken => f(
            EXIT_AUTH,
            Some("mint a new token with `zopp principal create-service` and revoke the old principal with `zopp principal revoke`".into()),
            message,
        ),
        Error::TokenRefused(_) => f(
            EXIT_AUTH,
            Some("ask a workspace admin for a new token (`zopp principal create-service`)".into()),
            message,
        ),
        _ => f(EXIT_ERROR, None, message),
    })
}

/// The part of an error that decides its exit code and hint (errors are not `Clone`).
fn clone_for_exit(e: &Error) -> Error {
    match e {
        Error::NotFound(m) => Error::NotFound(m.clone()),
        Error::Refused { code, message } => Error::Refused {
            code: *code,
            message: message.clone(),
        },
        Error::InvalidName { kind, name, reason } => Error::InvalidName {
            kind: *kind,
            name: name.clone(),
            reason,
        },
        Error::ReferenceNotAllowed { environment } => Error::ReferenceNotAllowed {
            environment: environment.clone(),
        },
        other => Error::InvalidInput(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::path::PathBuf;

    #[rstest]
    #[case(Code::Ok, 0)]
    #[case(Code::NotFound, 3)]
    #[case(Code::PermissionDenied, 4)]
    #[case(Code::Unauthenticated, 5)]
    #[case(Code::AlreadyExists, 6)]
    #[case(Code::Aborted, 6)]
    #[case(Code::Unavailable, 7)]
    #[case(Code::InvalidArgument, 2)]
    #[case(Code::Internal, 1)]
    #[case(Code::FailedPrecondition, 1)]
    #[case(Code::ResourceExhausted, 1)]
    #[case(Code::DeadlineExceeded, 1)]
    #[case(Code::Unimplemented, 1)]
    fn grpc_codes_map_to_exit_codes(#[case] code: Code, #[case] exit: u8) {
        assert_eq!(exit_code_for(code), exit);
        if code != Code::Ok && code != Code::NotFound && code != Code::Unavailable {
            let e = CliError::Sdk(Error::Refused {
                code,
                message: "m".into(),
            });
            assert_eq!(describe(&e).expect("reported").code, exit);
        }
    }

    fn sdk(e: Error) -> Failure {
        describe(&CliError::Sdk(e)).expect("reported")
    }

    #[rstest]
    #[case::invalid_name(
        Error::InvalidName { kind: zopp_cli::validate::NameKind::Secret, name: "A=B".into(), reason: "must not contain '='" },
        2, "invalid secret name 'A=B': must not contain '='"
    )]
    #[case::too_large(Error::ValueTooLarge { len: 1_048_577 }, 2, "secret value is larger than the 1 MiB limit (1,048,576 bytes)")]
    #[case::no_identity(Error::NoIdentity { home: PathBuf::from("/h") }, 5, "no zopp identity in /h")]
    #[case::exists(Error::IdentityExists { home: PathBuf::from("/h") }, 6, "a zopp identity already exists in /h")]
    #[case::locked(Error::PassphraseRequired { path: PathBuf::from("/h/principal.key") }, 5, "the key in /h/principal.key is passphrase-protected and no passphrase was given")]
    #[case::wrong_pass(Error::WrongPassphrase { path: PathBuf::from("/k") }, 5, "wrong passphrase for /k")]
    #[case::unreachable(Error::Unreachable { server: "http://127.0.0.1:9".into(), detail: "Connection refused (os error 111)".into() }, 7, "cannot reach zopp server at http://127.0.0.1:9 (Connection refused (os error 111))")]
    #[case::workspace(Error::NotFound(Missing::Workspace { name: "nope".into() }), 3, "workspace 'nope' not found")]
    #[case::secret(Error::NotFound(Missing::Secret { environment: "dev".into(), name: "X".into() }), 3, "secret 'X' not found in environment 'dev'")]
    #[case::already(Error::AlreadyExists { what: "workspace 'acme'".into() }, 6, "workspace 'acme' already exists")]
    #[case::conflict(Error::Conflict("secret 'K' is at version 3, not 2".into()), 6, "secret 'K' is at version 3, not 2")]
    #[case::denied(Error::Refused { code: Code::PermissionDenied, message: "read role required".into() }, 4, "permission denied: read role required")]
    #[case::unauth(Error::Refused { code: Code::Unauthenticated, message: "clock skew".into() }, 5, "authentication failed: clock skew")]
    #[case::join_used(Error::JoinRefused { code: Code::FailedPrecondition, message: "invite already used".into() }, 1, "cannot join: invite already used")]
    #[case::join_unknown(Error::JoinRefused { code: Code::NotFound, message: "invite not found".into() }, 3, "cannot join: invite not found")]
    #[case::verification(Error::Verification { name: "X".into() }, 1, "secret 'X' failed verification")]
    #[case::server(Error::BadServer { server: "x".into(), reason: "empty".into() }, 2, "invalid server address 'x': empty")]
    fn sdk_errors_map_to_message_and_exit_code(
        #[case] err: Error,
        #[case] code: u8,
        #[case] message: &str,
    ) {
        let f = sdk(err);
        assert_eq!(f.code, code);
        assert_eq!(f.message, message);
    }

    #[test]
    fn important_errors_carry_hints() {
        let f = sdk(Error::NoIdentity {
            home: PathBuf::from("/h"),
        });
        assert!(f.hint.expect("hint").contains("zopp join"));
        let f = sdk(Error::Unreachable {
            server: "s".into(),
            detail: String::new(),
        });
        let hint = f.hint.expect("hint");
        assert!(hint.contains("zopp-server serve") && hint.contains("ZOPP_SERVER"));
        let f = sdk(Error::NotFound(Missing::Workspace { name: "x".into() }));
        assert!(f.hint.expect("hint").contains("zopp workspace list"));
        let f = sdk(Error::NotFound(Missing::Environment {
            workspace: "w".into(),
            project: "p".into(),
            name: "e".into(),
        }));
        assert_eq!(
            f.hint.as_deref(),
            Some("run `zopp environment list -w w -p p`")
        );
    }

    #[test]
    fn command_layer_errors() {
        let f = describe(&CliError::NeedsConfirmation {
            what: "workspace 'acme'".into(),
        })
        .expect("reported");
        assert_eq!(f.code, 2);
        assert!(f.hint.expect("hint").contains("--yes"));
        assert_eq!(
            describe(&CliError::usage("no workspace given", "pass -w")).map(|f| f.code),
            Some(2)
        );
        assert_eq!(describe(&CliError::Cancelled).map(|f| f.code), Some(1));
        assert_eq!(
            describe(&CliError::Stdout(io::Error::from(
                io::ErrorKind::BrokenPipe
            ))),
            None,
            "a closed pipe exits quietly"
        );
        assert_eq!(
            describe(&CliError::Stdout(io::Error::other("disk full"))).map(|f| f.code),
            Some(1)
        );
    }
}
