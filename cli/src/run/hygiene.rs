//! What `zopp run` keeps out of its child's environment (docs/run.md "What the command does
//! not get"): zopp's own credentials, which the child has no use for and could leak, and
//! secrets named like the variables that decide which code a program loads or a shell runs
//! before the command's own, which anyone able to write a secret could otherwise use to run
//! code in every process started with that environment.
//!
//! Both lists are fixed here and printed in the docs; a user who really means to pass one on
//! names it with `--allow-env NAME`.

/// zopp's credential variables: removed from the child's environment. A service token or the
/// key file's passphrase in the child's environment would outlive the run in its memory, its
/// crash reports and whatever it starts.
pub const CREDENTIAL_VARIABLES: &[&str] = &["ZOPP_TOKEN", "ZOPP_PASSPHRASE"];

/// Variables a secret may not set (exact names): the dynamic loader, shell start-up and
/// interpreter start-up hooks, and the command search path.
pub const REFUSED_VARIABLES: &[&str] = &[
    // Dynamic loaders (exact names; every LD_* and DYLD_* is refused by prefix too).
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    // glibc loads modules from these.
    "GCONV_PATH",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    // Where commands are found.
    "PATH",
    // Shells: files sourced and code run at start-up, word splitting, options.
    "BASH_ENV",
    "ENV",
    "ZDOTDIR",
    "PROMPT_COMMAND",
    "PS4",
    "IFS",
    "CDPATH",
    "SHELLOPTS",
    "BASHOPTS",
    "GLOBIGNORE",
    // Interpreters: code or modules loaded before the program.
    "PYTHONSTARTUP",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONINSPECT",
    "NODE_OPTIONS",
    "NODE_PATH",
    "PERL5OPT",
    "PERL5LIB",
    "PERLLIB",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    // Git runs these.
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_EXEC_PATH",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
];

/// Prefixes of refused variables: every dynamic-loader setting (`LD_*` for glibc and musl,
/// `DYLD_*` for macOS) and bash's exported functions (`BASH_FUNC_*`).
pub const REFUSED_PREFIXES: &[&str] = &["LD_", "DYLD_", "BASH_FUNC_"];

/// Whether a secret named `name` may not be injected without `--allow-env`.
pub fn is_refused(name: &str) -> bool {
    REFUSED_VARIABLES.contains(&name) || REFUSED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Whether `name` is one of zopp's credential variables.
pub fn is_credential(name: &str) -> bool {
    CREDENTIAL_VARIABLES.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::preload("LD_PRELOAD")]
    #[case::library_path("LD_LIBRARY_PATH")]
    #[case::audit("LD_AUDIT")]
    #[case::other_ld("LD_DEBUG_OUTPUT")]
    #[case::dyld("DYLD_INSERT_LIBRARIES")]
    #[case::bash_env("BASH_ENV")]
    #[case::env("ENV")]
    #[case::path("PATH")]
    #[case::prompt("PROMPT_COMMAND")]
    #[case::ifs("IFS")]
    #[case::python("PYTHONSTARTUP")]
    #[case::node("NODE_OPTIONS")]
    #[case::bash_func("BASH_FUNC_ls%%")]
    fn loader_and_startup_variables_are_refused(#[case] name: &str) {
        assert!(is_refused(name));
    }

    #[rstest]
    #[case::ordinary("DATABASE_URL")]
    #[case::lowercase("ld_preload")]
    #[case::suffix("MY_PATH")]
    #[case::contains("XLD_PRELOAD")]
    #[case::environment("ENVIRONMENT")]
    fn ordinary_names_are_allowed(#[case] name: &str) {
        assert!(!is_refused(name));
    }

    #[test]
    fn credentials_are_zopps_own() {
        assert!(is_credential("ZOPP_TOKEN"));
        assert!(is_credential("ZOPP_PASSPHRASE"));
        assert!(!is_credential("ZOPP_SERVER"));
    }
}
