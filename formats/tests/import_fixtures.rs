//! Every import source, read from a hand-written fixture in the shape the tool prints.

use std::path::PathBuf;

use zopp_formats::{detect, parse, ImportFormat, ImportOptions};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn import(name: &str, format: ImportFormat, key: Option<&str>) -> Vec<(String, String)> {
    let input = fixture(name);
    let options = ImportOptions { source: name, key };
    parse(&input, format, &options)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|e| (e.name.clone(), e.value.expose_secret().to_owned()))
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn dotenv() {
    assert_eq!(detect(&fixture("app.env")), Some(ImportFormat::Dotenv));
    assert_eq!(
        import("app.env", ImportFormat::Dotenv, None),
        owned(&[
            ("APP_ENV", "development"),
            ("PORT", "8080"),
            ("LOG_LEVEL", "debug"),
            (
                "DATABASE_URL",
                "postgres://checkout:s3cr3t-db-pw@localhost:5432/checkout?sslmode=disable"
            ),
            ("STRIPE_SECRET_KEY", "sk_test_51HqLyjWDarjtT1zdp7dcXt8M$y7"),
            ("GREETING", "Hello, \"world\"!\tTabbed"),
            ("WINDOWS_PATH", "C:\\Program Files\\Checkout"),
            ("LITERAL_BACKSLASHES", "no\\nescapes\\here"),
            ("WITH_HASH", "color #ff0000"),
            ("PASSWORD_WITH_HASH", "abc#123"),
            ("TEMPLATE", "${DATABASE_URL}/replica"),
            (
                "JWT_PRIVATE_KEY",
                "-----BEGIN PRIVATE KEY-----\n\
                 MC4CAQAwBQYDK2VwBCIEIF3yPRKMpM1YxXWDkE9ZKZLLdUyR4rgpMRh0xVXy/9Hh\n\
                 -----END PRIVATE KEY-----"
            ),
            ("EMPTY", ""),
            ("UNICODE_GREETING", "こんにちは 🌸"),
        ])
    );
}

#[test]
fn dotenv_with_crlf_line_endings() {
    assert_eq!(detect(&fixture("windows.env")), Some(ImportFormat::Dotenv));
    assert_eq!(
        import("windows.env", ImportFormat::Dotenv, None),
        owned(&[
            ("API_URL", "https://api.example.com"),
            ("API_TOKEN", "tok\nen"),
            ("MULTI", "line one\nline two"),
        ])
    );
}

#[test]
fn dotenv_with_an_invalid_line_imports_nothing() {
    let input = fixture("broken.env");
    let err = parse(
        &input,
        ImportFormat::Dotenv,
        &ImportOptions::new("broken.env"),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "broken.env:4: expected `=` after `this` (keys use letters, digits, `_`, `.` and `-`)"
    );
}

#[test]
fn flat_json() {
    assert_eq!(detect(&fixture("flat.json")), Some(ImportFormat::Json));
    assert_eq!(
        import("flat.json", ImportFormat::Json, None),
        owned(&[
            ("DATABASE_URL", "postgres://app:p%40ss@db:5432/app"),
            ("REDIS_URL", "redis://cache:6379/0"),
            ("MAX_CONNECTIONS", "25"),
            ("SAMPLE_RATE", "0.250"),
            ("FEATURE_NEW_CHECKOUT", "true"),
            ("MOTD", "line one\nline two \"quoted\" é🚀"),
        ])
    );
}

#[test]
fn flat_yaml() {
    assert_eq!(detect(&fixture("flat.yaml")), Some(ImportFormat::Yaml));
    assert_eq!(
        import("flat.yaml", ImportFormat::Yaml, None),
        owned(&[
            ("DATABASE_URL", "postgres://app:pass@db:5432/app"),
            ("REDIS_URL", "redis://cache:6379/0"),
            ("MAX_CONNECTIONS", "25"),
            ("VERSION", "1.10"),
            ("FEATURE_NEW_CHECKOUT", "yes"),
            ("EMPTY", ""),
            ("SINGLE_QUOTED", "it's here"),
            (
                "TLS_CERT",
                "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2f1\n-----END CERTIFICATE-----\n"
            ),
            ("FOLDED", "one two"),
        ])
    );
}

#[test]
fn one_password() {
    assert_eq!(
        detect(&fixture("1password-item.json")),
        Some(ImportFormat::OnePassword)
    );
    assert_eq!(
        import("1password-item.json", ImportFormat::OnePassword, None),
        owned(&[
            ("username", "billing@example.com"),
            ("credential", "sk_live_51HqLyjWDarjtT1zdp7dcXt8MzyhVGmsG"),
            ("type", "bearer"),
            ("valid_from", "1698883200"),
            (
                "webhook_signing_secret",
                "whsec_7a4b1b5c0e9f4d2a8c3e6f1a0b9d8c7e"
            ),
            (
                "one-time_password",
                "otpauth://totp/Stripe:billing%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=Stripe"
            ),
        ])
    );
}

#[test]
fn aws_secrets_manager_json_object() {
    assert_eq!(
        detect(&fixture("aws-sm-json.json")),
        Some(ImportFormat::AwsSecretsManager)
    );
    assert_eq!(
        import("aws-sm-json.json", ImportFormat::AwsSecretsManager, None),
        owned(&[
            ("username", "orders_app"),
            ("password", "q7#Lp2$wZ9!vR4"),
            ("engine", "postgres"),
            ("host", "orders.cluster-c9xk2p.eu-west-1.rds.amazonaws.com"),
            ("port", "5432"),
            ("dbname", "orders"),
            ("dbInstanceIdentifier", "orders-primary"),
        ])
    );
}

#[test]
fn aws_secrets_manager_plain_string() {
    assert_eq!(
        detect(&fixture("aws-sm-plain.json")),
        Some(ImportFormat::AwsSecretsManager)
    );
    assert_eq!(
        import(
            "aws-sm-plain.json",
            ImportFormat::AwsSecretsManager,
            Some("GITHUB_DEPLOY_TOKEN")
        ),
        owned(&[(
            "GITHUB_DEPLOY_TOKEN",
            "ghp_R4nd0mT0k3nV4lu3F0rD3pl0ym3nt5xYz"
        )])
    );
    let input = fixture("aws-sm-plain.json");
    let err = parse(
        &input,
        ImportFormat::AwsSecretsManager,
        &ImportOptions::new("aws-sm-plain.json"),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "aws-sm-plain.json: .SecretString: holds a plain string, not a JSON object; pass --key \
         NAME to import it as one secret"
    );
    assert!(!err.contains("ghp_"));
}

#[test]
fn vault_kv_v2() {
    assert_eq!(
        detect(&fixture("vault-kv2.json")),
        Some(ImportFormat::Vault)
    );
    assert_eq!(
        import("vault-kv2.json", ImportFormat::Vault, None),
        owned(&[
            ("api_key", "AKIAIOSFODNN7EXAMPLE"),
            ("api_secret", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            ("region", "eu-west-1"),
        ])
    );
}

#[test]
fn vault_kv_v1() {
    assert_eq!(
        detect(&fixture("vault-kv1.json")),
        Some(ImportFormat::Vault)
    );
    assert_eq!(
        import("vault-kv1.json", ImportFormat::Vault, None),
        owned(&[
            ("smtp_host", "smtp.example.com"),
            ("smtp_password", "m4il-Pa55word"),
            ("smtp_port", "587"),
        ])
    );
}

#[test]
fn doppler_leaves_out_its_own_metadata() {
    assert_eq!(
        detect(&fixture("doppler.json")),
        Some(ImportFormat::Doppler)
    );
    assert_eq!(
        import("doppler.json", ImportFormat::Doppler, None),
        owned(&[
            ("ALGOLIA_APP_ID", "latency"),
            ("ALGOLIA_SEARCH_KEY", "6be0576ff61c053d5f9a3225e2a90f76"),
            (
                "SENTRY_DSN",
                "https://f0e1d2c3b4a5@o123456.ingest.sentry.io/7654321"
            ),
            ("SESSION_SECRET", "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"),
        ])
    );
}

#[test]
fn sources_read_with_the_wrong_format_say_so() {
    let vault = fixture("vault-kv2.json");
    let err = parse(
        &vault,
        ImportFormat::Json,
        &ImportOptions::new("vault-kv2.json"),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "vault-kv2.json: .data: value is an object; only flat maps of strings, numbers and \
         booleans can be imported (nested values are not flattened)"
    );
    let flat = fixture("flat.json");
    let err = parse(
        &flat,
        ImportFormat::OnePassword,
        &ImportOptions::new("flat.json"),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "flat.json: .: no `fields` array; is this `op item get ITEM --format json` output?"
    );
}
