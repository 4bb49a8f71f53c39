//! Issue #4, `zopp secret import` and `zopp secret export`, end to end on the real binaries:
//! every import source from the fixtures of `formats/tests/fixtures/`, the one-transaction
//! summary (added/changed/unchanged, `--dry-run`, deleted names coming back), all-or-nothing
//! on an invalid line, byte-for-byte export→import round trips with hostile values, and the
//! export targets' files and refusals.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use serde::Deserialize;
use zopp_formats::{parse, ImportFormat, ImportOptions};
use zopp_tests::{on_both_backends, Backend, TestServer, TestUser};

on_both_backends!(
    every_import_source_lands_as_parsed,
    import_reports_added_changed_unchanged_and_dry_run_changes_nothing,
    an_invalid_dotenv_line_imports_nothing,
    deleted_secrets_come_back_with_the_next_version,
    export_import_round_trips_byte_for_byte,
    export_targets_write_private_files_and_refuse_what_they_cannot_hold,
);

const ENV: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "dev"];

fn with_env<'a>(head: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend_from_slice(&ENV);
    v
}

fn in_env<'a>(head: &[&'a str], env: &'a str) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend_from_slice(&["-w", "acme", "-p", "api", "-e", env]);
    v
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../formats/tests/fixtures")
        .join(name)
}

fn setup(backend: Backend) -> (TestServer, TestUser) {
    let server = TestServer::start_on(backend);
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    (server, alice)
}

/// `zopp secret export --format json` of `env`, as a map.
fn exported(alice: &TestUser, env: &str) -> BTreeMap<String, String> {
    let out = alice.zopp(&in_env(&["secret", "export", "--format", "json"], env));
    serde_json::from_slice(&out.assert_success().output.stdout).expect("export json is a map")
}

/// The `--output json` summary of an import; refuses unknown fields.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Summary {
    added: Vec<String>,
    changed: Vec<String>,
    unchanged: Vec<String>,
}

fn every_import_source_lands_as_parsed(backend: Backend) {
    let (_server, alice) = setup(backend);
    let cases: [(&str, ImportFormat, Option<&str>); 10] = [
        ("app.env", ImportFormat::Dotenv, None),
        ("windows.env", ImportFormat::Dotenv, None),
        ("flat.json", ImportFormat::Json, None),
        ("flat.yaml", ImportFormat::Yaml, None),
        ("1password-item.json", ImportFormat::OnePassword, None),
        ("aws-sm-json.json", ImportFormat::AwsSecretsManager, None),
        (
            "aws-sm-plain.json",
            ImportFormat::AwsSecretsManager,
            Some("GITHUB_DEPLOY_TOKEN"),
        ),
        ("vault-kv2.json", ImportFormat::Vault, None),
        ("vault-kv1.json", ImportFormat::Vault, None),
        ("doppler.json", ImportFormat::Doppler, None),
    ];
    for (i, (name, format, key)) in cases.into_iter().enumerate() {
        let env = format!("src{i}");
        alice
            .zopp(&["environment", "create", &env, "-w", "acme", "-p", "api"])
            .assert_success();
        let path = fixture(name);
        let path_arg = path.to_str().expect("utf-8 path");
        // The format is detected from the content; --key picks the plain AWS string.
        let mut args = in_env(
            &["secret", "import", "-i", path_arg, "--output", "json"],
            &env,
        );
        if let Some(k) = key {
            args.extend_from_slice(&["--key", k]);
        }
        let out = alice.zopp(&args);
        let summary: Summary = serde_json::from_slice(&out.assert_success().output.stdout)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = std::fs::read_to_string(&path).expect("fixture");
        let expected: BTreeMap<String, String> =
            parse(&text, format, &ImportOptions { source: name, key })
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .into_iter()
                .map(|e| (e.name.clone(), e.value.expose_secret().to_owned()))
                .collect();
        assert!(!expected.is_empty(), "{name}");
        let mut added = summary.added.clone();
        added.sort();
        assert_eq!(
            added,
            expected.keys().cloned().collect::<Vec<_>>(),
            "{name}"
        );
        assert_eq!(exported(&alice, &env), expected, "{name}");
    }
    // Piped in with an explicit format works the same.
    let text = std::fs::read(fixture("flat.yaml")).expect("fixture");
    alice
        .zopp_stdin(&with_env(&["secret", "import", "--format", "yaml"]), &text)
        .assert_success();
    assert!(!exported(&alice, "dev").is_empty());
}

fn import_reports_added_changed_unchanged_and_dry_run_changes_nothing(backend: Backend) {
    let (_server, alice) = setup(backend);
    let import_json = |input: &str, extra: &[&str]| -> Summary {
        let mut args = with_env(&["secret", "import", "--format", "dotenv", "--output", "json"]);
        args.extend_from_slice(extra);
        let out = alice.zopp_stdin(&args, input.as_bytes());
        serde_json::from_slice(&out.assert_success().output.stdout).expect("summary")
    };
    let first = import_json("A=1\nB=2\nC=3\n", &[]);
    assert_eq!(
        first,
        Summary {
            added: vec!["A".into(), "B".into(), "C".into()],
            changed: vec![],
            unchanged: vec![],
        }
    );
    // A dry run reports and writes nothing.
    let plan = import_json("A=1\nB=two\nD=4\n", &["--dry-run"]);
    assert_eq!(
        plan,
        Summary {
            added: vec!["D".into()],
            changed: vec!["B".into()],
            unchanged: vec!["A".into()],
        }
    );
    let untouched = exported(&alice, "dev");
    assert_eq!(untouched.get("B").map(String::as_str), Some("2"));
    assert!(!untouched.contains_key("D"));
    // The real thing: one new version per changed key only.
    assert_eq!(import_json("A=1\nB=two\nD=4\n", &[]), plan);
    let versions: BTreeMap<String, u64> = serde_json::from_slice::<Vec<serde_json::Value>>(
        &alice
            .zopp(&with_env(&["secret", "list", "--output", "json"]))
            .assert_success()
            .output
            .stdout,
    )
    .expect("list json")
    .into_iter()
    .map(|r| {
        (
            r["name"].as_str().expect("name").to_owned(),
            r["version"].as_u64().expect("version"),
        )
    })
    .collect();
    assert_eq!(
        versions,
        BTreeMap::from([
            ("A".into(), 1),
            ("B".into(), 2),
            ("C".into(), 1),
            ("D".into(), 1)
        ])
    );
    // The human summary names names, never values.
    let out = alice.zopp_stdin(
        &with_env(&["secret", "import", "--format", "dotenv"]),
        b"A=1\nB=secret-canary-value\n",
    );
    let text = out.assert_success().stdout();
    assert!(text.contains("changed") && text.contains('B'), "{text}");
    assert!(!out.stdout().contains("secret-canary-value"));
    assert!(!out.stderr().contains("secret-canary-value"));
    out.assert_stderr_contains("1 changed, 1 unchanged");
}

fn an_invalid_dotenv_line_imports_nothing(backend: Backend) {
    let (_server, alice) = setup(backend);
    let path = fixture("broken.env");
    let out = alice.zopp(&with_env(&[
        "secret",
        "import",
        "-i",
        path.to_str().expect("utf-8 path"),
    ]));
    out.assert_exit_code(2);
    let err = out.stderr();
    assert!(err.contains("broken.env:4:"), "{err}");
    assert!(!err.contains("fine"), "no value in the message: {err}");
    assert!(exported(&alice, "dev").is_empty(), "nothing imported");
    // An undetectable input asks for --format.
    alice
        .zopp_stdin(&with_env(&["secret", "import"]), b"just some words\n")
        .assert_exit_code(2)
        .assert_stderr_contains("--format");
}

fn deleted_secrets_come_back_with_the_next_version(backend: Backend) {
    let (_server, alice) = setup(backend);
    let import = |input: &[u8]| {
        alice
            .zopp_stdin(
                &with_env(&["secret", "import", "--format", "dotenv"]),
                input,
            )
            .assert_success();
    };
    import(b"A=1\nB=2\n");
    alice
        .zopp(&with_env(&["secret", "delete", "B"]))
        .assert_success();
    // B's history ends in a deletion the live fetch does not show: the import still lands.
    import(b"A=1\nB=back\n");
    let got = alice.zopp(&with_env(&["secret", "get", "B", "--output", "json"]));
    let got = got.assert_success().json();
    assert_eq!(got["value"], "back");
    assert_eq!(got["version"], 3);
}

/// Values no format may bend: quotes, backslashes, `$`, references, line breaks of every
/// kind, tabs, leading and trailing blanks, `#`, unicode, YAML and JSON look-alikes.
const NASTY: [(&str, &str); 16] = [
    ("SINGLE_QUOTE", "it's 'quoted'"),
    ("DOUBLE_QUOTE", "say \"hi\" \\\"escaped\\\""),
    ("BACKSLASHES", "C:\\dir\\new\\table \\n not a newline"),
    ("DOLLARS", "$HOME ${NOT_RESOLVED} $${x} $"),
    ("NEWLINES", "line one\nline two\n"),
    ("CRLF", "dos\r\nline\r\n"),
    ("LONE_CR", "a\rb"),
    ("TABS", "\tindented\tand trailing\t"),
    ("BLANKS", "  padded  "),
    ("HASH", "value # not a comment"),
    ("UNICODE", "こんにちは 🌸 ünïcode"),
    ("YAMLISH", "yes"),
    ("NUMBERISH", "1.50"),
    ("JSONISH", "{\"a\": [1, 2]}"),
    ("EMPTY", ""),
    ("EQUALS", "a=b=c"),
];

fn export_import_round_trips_byte_for_byte(backend: Backend) {
    let (_server, alice) = setup(backend);
    for (k, v) in NASTY {
        alice
            .zopp_stdin(&with_env(&["secret", "set", k, "-"]), v.as_bytes())
            .assert_success();
    }
    for (i, format) in ["dotenv", "json", "yaml"].into_iter().enumerate() {
        let out = alice.zopp(&with_env(&["secret", "export", "--format", format]));
        let first = out.assert_success().output.stdout.clone();
        let env = format!("copy{i}");
        alice
            .zopp(&["environment", "create", &env, "-w", "acme", "-p", "api"])
            .assert_success();
        alice
            .zopp_stdin(
                &in_env(&["secret", "import", "--format", format], &env),
                &first,
            )
            .assert_success();
        for (k, v) in NASTY {
            let got = alice.zopp(&in_env(&["secret", "get", k, "--output", "json"], &env));
            assert_eq!(
                got.assert_success().json()["value"],
                v,
                "{format}: {k} changed on the way"
            );
        }
        // Exporting the copy gives the same bytes again.
        let again = alice.zopp(&in_env(&["secret", "export", "--format", format], &env));
        assert_eq!(again.assert_success().output.stdout, first, "{format}");
    }
}

fn export_targets_write_private_files_and_refuse_what_they_cannot_hold(backend: Backend) {
    let (_server, alice) = setup(backend);
    alice
        .zopp_stdin(
            &with_env(&["secret", "import", "--format", "dotenv"]),
            b"API_KEY=abc123\nDB_URL=postgres://u:p@h/db\n",
        )
        .assert_success();
    let file = alice.cwd.path().join("out.env");
    alice
        .zopp(&with_env(&[
            "secret",
            "export",
            "--format",
            "dotenv",
            "-o",
            file.to_str().expect("utf-8 path"),
        ]))
        .assert_success();
    let mode = std::fs::metadata(&file)
        .expect("written")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        "API_KEY=abc123\nDB_URL=postgres://u:p@h/db\n"
    );
    // A relative -o lands in the working directory.
    alice
        .zopp(&with_env(&[
            "secret", "export", "--format", "shell", "-o", "rel.sh",
        ]))
        .assert_success();
    assert_eq!(
        std::fs::read_to_string(alice.cwd.path().join("rel.sh")).expect("read"),
        "export API_KEY='abc123'\nexport DB_URL='postgres://u:p@h/db'\n"
    );
    // k8s: a v1/Secret with base64 data, named as asked.
    let out = alice.zopp(&with_env(&[
        "secret",
        "export",
        "--format",
        "k8s",
        "--name",
        "api",
        "--namespace",
        "prod",
    ]));
    let manifest = out.assert_success().stdout();
    for needle in [
        "apiVersion: v1",
        "kind: Secret",
        "name: api",
        "namespace: prod",
        "API_KEY: YWJjMTIz",
    ] {
        assert!(manifest.contains(needle), "{needle} in\n{manifest}");
    }
    alice
        .zopp(&with_env(&["secret", "export", "--format", "k8s"]))
        .assert_exit_code(2)
        .assert_stderr_contains("--name");
    // docker: a line break is refused, naming the key, and no file is written.
    alice
        .zopp_stdin(
            &with_env(&["secret", "set", "PEM", "-"]),
            b"-----BEGIN-----\nabc\n",
        )
        .assert_success();
    let docker = alice.cwd.path().join("docker.env");
    let out = alice.zopp(&with_env(&[
        "secret",
        "export",
        "--format",
        "docker",
        "-o",
        docker.to_str().expect("utf-8 path"),
    ]));
    out.assert_exit_code(2).assert_stderr_contains("PEM");
    assert!(!out.stderr().contains("BEGIN"), "no value in the message");
    assert!(!docker.exists());
}
