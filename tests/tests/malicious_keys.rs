//! A malicious server substitutes the keys a client uses (THREAT-MODEL.md §4.2,
//! threat-model/FORMAT.md §13): the database under a running server is rewritten the way an
//! operator who controls it would, and the real `zopp` client must refuse, write nothing, and
//! print no value. Each attack has a control showing the same flow works untampered.
//!
//! Every test runs on SQLite and on PostgreSQL.

use rand::rngs::OsRng;
use sqlx::{Connection, Row};
use zopp_crypto::ids::{EnvironmentId, PrincipalId, ProjectId, WorkspaceId};
use zopp_crypto::keys::{AgreementPublic, ScopeKey, ScopeKind, SigningKey};
use zopp_crypto::statement::{key_commitment, wrap_hash, KeyClaim, KeyStatement, StatementRole};
use zopp_crypto::wrap::{wrap_to_recipient, wrap_under, KeyContext};
use zopp_tests::{on_both_backends, Backend, TestServer, TestUser};

on_both_backends!(
    a_substituted_workspace_key_is_refused_on_read_and_on_write,
    a_substituted_environment_key_is_refused_for_an_environment_grantee,
    statements_the_server_forges_do_not_verify,
);

const PROD: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "prod"];

fn with<'a>(head: &[&'a str], scope: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend_from_slice(scope);
    v
}

/// Direct access to the server's database, as its operator has.
struct Db {
    url: String,
    backend: Backend,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

impl Db {
    fn of(server: &TestServer) -> Self {
        Self {
            url: server.db_url.clone(),
            backend: server.backend(),
        }
    }

    fn blob(&self, bytes: &[u8]) -> String {
        match self.backend {
            Backend::Sqlite => format!("x'{}'", hex::encode(bytes)),
            Backend::Postgres => format!("'\\x{}'::bytea", hex::encode(bytes)),
        }
    }

    /// The first column of every row of `sql`, as text.
    fn texts(&self, sql: &str) -> Vec<String> {
        runtime().block_on(async {
            macro_rules! fetch {
                ($conn:ty) => {{
                    let mut c = <$conn>::connect(&self.url).await.expect("connect");
                    let rows = sqlx::query(sql).fetch_all(&mut c).await.expect(sql);
                    let out: Vec<String> = rows
                        .iter()
                        .map(|r| r.try_get::<String, _>(0).expect("text"))
                        .collect();
                    let _ = c.close().await;
                    out
                }};
            }
            match self.backend {
                Backend::Sqlite => fetch!(sqlx::SqliteConnection),
                Backend::Postgres => fetch!(sqlx::PgConnection),
            }
        })
    }

    /// The first column of the only row of `sql`, as bytes.
    fn bytes(&self, sql: &str) -> Vec<u8> {
        runtime().block_on(async {
            macro_rules! fetch {
                ($conn:ty) => {{
                    let mut c = <$conn>::connect(&self.url).await.expect("connect");
                    let row = sqlx::query(sql).fetch_one(&mut c).await.expect(sql);
                    let out: Vec<u8> = row.try_get(0).expect("bytes");
                    let _ = c.close().await;
                    out
                }};
            }
            match self.backend {
                Backend::Sqlite => fetch!(sqlx::SqliteConnection),
                Backend::Postgres => fetch!(sqlx::PgConnection),
            }
        })
    }

    fn exec(&self, sql: &str) {
        runtime().block_on(async {
            match self.backend {
                Backend::Sqlite => {
                    let mut c = sqlx::SqliteConnection::connect(&self.url)
                        .await
                        .expect("connect");
                    sqlx::query(sql).execute(&mut c).await.expect(sql);
                }
                Backend::Postgres => {
                    let mut c = sqlx::PgConnection::connect(&self.url)
                        .await
                        .expect("connect");
                    sqlx::query(sql).execute(&mut c).await.expect(sql);
                }
            }
        })
    }

    fn count(&self, table: &str) -> usize {
        self.texts(&format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table}"))[0]
            .parse()
            .expect("a count")
    }

    fn id(&self, sql: &str) -> [u8; 16] {
        *WorkspaceId::try_parse(&self.texts(sql)[0])
            .expect("a stored id")
            .as_bytes()
    }
}

fn principal_id(user: &TestUser) -> PrincipalId {
    let text = std::fs::read_to_string(user.home.path().join("config.toml")).expect("config");
    let t: toml::Table = text.parse().expect("toml");
    PrincipalId::try_parse(t["principal_id"].as_str().expect("principal_id")).expect("id")
}

/// The X25519 public key the server holds for `p`: all it needs to wrap a key of its own to p.
fn agreement_key(db: &Db, p: PrincipalId) -> AgreementPublic {
    let b = db.bytes(&format!(
        "SELECT agreement_key FROM principals WHERE id = '{p}'"
    ));
    AgreementPublic::try_from_slice(&b).expect("stored key")
}

fn ctx(kind: ScopeKind, id: [u8; 16], epoch: u32) -> KeyContext {
    KeyContext { kind, id, epoch }
}

struct Ids {
    ws: [u8; 16],
    pr: [u8; 16],
    env: [u8; 16],
}

fn ids(db: &Db) -> Ids {
    Ids {
        ws: db.id("SELECT id FROM workspaces WHERE name = 'acme'"),
        pr: db.id("SELECT id FROM projects WHERE name = 'api'"),
        env: db.id("SELECT id FROM environments WHERE name = 'prod'"),
    }
}

/// A user who joined with a server invite and holds read on `acme/api/prod` only, vouched for
/// by fingerprint.
fn env_reader(server: &TestServer, admin: &TestUser) -> TestUser {
    let u = TestUser::joined(server, "reader@example.com");
    let fp = u.zopp(&["principal", "fingerprint"]);
    let fp = fp.assert_success().stdout().trim().to_string();
    admin
        .zopp(&with(
            &[
                "permission",
                "set",
                "--user",
                "reader@example.com",
                "--role",
                "read",
                "--fingerprint",
                &fp,
            ],
            &PROD,
        ))
        .assert_success();
    u
}

/// An admin with `acme/api/prod` holding `DB_URL`.
fn admin(server: &TestServer) -> TestUser {
    let admin = TestUser::joined(server, "admin@example.com");
    admin.scaffold("acme", "api", "prod");
    admin
        .zopp(&with(
            &["secret", "set", "DB_URL", "postgres://real"],
            &PROD,
        ))
        .assert_success();
    admin
}

/// The server replaces the admin's whole chain with keys of its own: a workspace key wrapped to
/// the admin's public key (which it knows), the project key under it and the environment key
/// under that. Every wrap opens, and the server knows every key. The client refuses on read
/// and on write, and nothing is written under the server's key.
fn a_substituted_workspace_key_is_refused_on_read_and_on_write(backend: Backend) {
    let server = TestServer::start_on(backend);
    let admin = admin(&server);
    // Control: the untampered flow works, and the chain is verified and cached.
    let out = admin.zopp(&with(&["secret", "get", "DB_URL"], &PROD));
    out.assert_success();
    assert_eq!(out.stdout().trim_end(), "postgres://real");

    let db = Db::of(&server);
    let Ids { ws, pr, env } = ids(&db);
    let me = principal_id(&admin);
    let (wk, pk, ek) = (
        ScopeKey::from_bytes([0x5e; 32]),
        ScopeKey::from_bytes([0x5f; 32]),
        ScopeKey::from_bytes([0x60; 32]),
    );
    let ws_ctx = ctx(ScopeKind::Workspace, ws, 1);
    let pr_ctx = ctx(ScopeKind::Project, pr, 1);
    let env_ctx = ctx(ScopeKind::Environment, env, 1);
    let grant = wrap_to_recipient(&wk, &ws_ctx, &me, &agreement_key(&db, me), &mut OsRng)
        .expect("the server can wrap to any public key");
    db.exec(&format!(
        "UPDATE grant_keys SET wrapped_key = {} WHERE principal_id = '{me}'",
        db.blob(grant.as_bytes())
    ));
    db.exec(&format!(
        "UPDATE projects SET wrapped_key = {} WHERE id = '{}'",
        db.blob(wrap_under(&pk, &pr_ctx, &wk, &ws_ctx, &mut OsRng).as_bytes()),
        ProjectId::from_bytes(pr)
    ));
    db.exec(&format!(
        "UPDATE environments SET wrapped_key = {} WHERE id = '{}'",
        db.blob(wrap_under(&ek, &env_ctx, &pk, &pr_ctx, &mut OsRng).as_bytes()),
        EnvironmentId::from_bytes(env)
    ));
    let versions = db.count("secret_versions");

    // Read: refused, no value printed.
    let out = admin.zopp(&with(&["secret", "get", "DB_URL"], &PROD));
    out.assert_exit_code(1)
        .assert_stderr_contains("refusing the keys of environment 'prod'")
        .assert_stderr_contains("the server substituted the key");
    assert!(!out.stdout().contains("postgres"), "{}", out.stdout());
    let out = admin.zopp(&with(&with(&["run"], &PROD), &["--", "printenv", "DB_URL"]));
    out.assert_exit_code(1)
        .assert_stderr_contains("substituted");
    assert!(out.stdout().is_empty(), "{}", out.stdout());

    // Write: refused before anything is sealed under the server's key.
    admin
        .zopp(&with(
            &["secret", "set", "NEW", "written-under-a-server-key"],
            &PROD,
        ))
        .assert_exit_code(1)
        .assert_stderr_contains("substituted");
    assert_eq!(
        db.count("secret_versions"),
        versions,
        "a version was written"
    );
    // A new environment is not created under the server's project key either.
    admin
        .zopp(&[
            "environment",
            "create",
            "staging",
            "-w",
            "acme",
            "-p",
            "api",
        ])
        .assert_exit_code(1)
        .assert_stderr_contains("substituted");
    assert_eq!(
        db.count("environments"),
        1,
        "an environment key was wrapped under the server's key"
    );
}

/// An environment-level grantee: the server wraps an environment key of its own to the
/// grantee. The key decrypts, but its commitment is not the one the admin signed.
fn a_substituted_environment_key_is_refused_for_an_environment_grantee(backend: Backend) {
    let server = TestServer::start_on(backend);
    let admin = admin(&server);
    let reader = env_reader(&server, &admin);
    // Control.
    let out = reader.zopp(&with(&["secret", "get", "DB_URL"], &PROD));
    out.assert_success();
    assert_eq!(out.stdout().trim_end(), "postgres://real");

    let db = Db::of(&server);
    let Ids { env, .. } = ids(&db);
    let them = principal_id(&reader);
    let ek = ScopeKey::from_bytes([0x61; 32]);
    let wrapped = wrap_to_recipient(
        &ek,
        &ctx(ScopeKind::Environment, env, 1),
        &them,
        &agreement_key(&db, them),
        &mut OsRng,
    )
    .expect("wrap");
    db.exec(&format!(
        "UPDATE grant_keys SET wrapped_key = {} WHERE principal_id = '{them}'",
        db.blob(wrapped.as_bytes())
    ));
    let out = reader.zopp(&with(&["secret", "get", "DB_URL"], &PROD));
    out.assert_exit_code(1)
        .assert_stderr_contains("environment key of epoch 1 does not match the commitment");
    assert!(out.stdout().is_empty(), "{}", out.stdout());
    // The admin, whose chain is intact, still reads.
    admin
        .zopp(&with(&["secret", "get", "DB_URL"], &PROD))
        .assert_success();
}

/// The server cannot make a statement: statements it adds in the admin's name, signed with a
/// key of its own, vouch for nothing, and without the real statements a chain is refused even
/// though every key in it is genuine.
fn statements_the_server_forges_do_not_verify(backend: Backend) {
    let server = TestServer::start_on(backend);
    let admin = admin(&server);
    let reader = env_reader(&server, &admin);
    let db = Db::of(&server);
    assert!(db.count("key_statements") >= 6, "statements are stored");

    // The reader's environment key replaced, with statements forged in the admin's name.
    let Ids { ws, env, .. } = ids(&db);
    let them = principal_id(&reader);
    let env_ctx = ctx(ScopeKind::Environment, env, 1);
    let ek = ScopeKey::from_bytes([0x62; 32]);
    let wrapped = wrap_to_recipient(&ek, &env_ctx, &them, &agreement_key(&db, them), &mut OsRng)
        .expect("wrap");
    db.exec(&format!(
        "UPDATE grant_keys SET wrapped_key = {} WHERE principal_id = '{them}'",
        db.blob(wrapped.as_bytes())
    ));
    let forger = SigningKey::from_seed(&[0x0f; 32]);
    let maker = KeyStatement {
        workspace: WorkspaceId::from_bytes(ws),
        signer: principal_id(&admin),
        claim: KeyClaim::ScopeKey {
            context: env_ctx,
            generation: 1,
            commitment: key_commitment(&ek, &env_ctx),
        },
    };
    let grant = KeyStatement {
        claim: KeyClaim::Grant {
            context: env_ctx,
            generation: 1,
            role: StatementRole::Admin,
            recipient: them,
            wrap_hash: wrap_hash(wrapped.as_bytes()),
        },
        ..maker
    };
    for (n, st) in [maker, grant].iter().enumerate() {
        let signed = st.sign(&forger);
        db.exec(&format!(
            "INSERT INTO key_statements (hash, workspace_id, signer_id, subject_id, \
             recipient_id, body, signature, created_at) VALUES ({}, '{}', '{}', '{}', {}, {}, {}, 1)",
            db.blob(&[n as u8 + 1; 32]),
            WorkspaceId::from_bytes(ws),
            principal_id(&admin),
            EnvironmentId::from_bytes(env),
            if n == 1 { format!("'{them}'") } else { "NULL".to_string() },
            db.blob(&signed.body),
            db.blob(&signed.signature),
        ));
    }
    let out = reader.zopp(&with(&["secret", "get", "DB_URL"], &PROD));
    out.assert_exit_code(1)
        .assert_stderr_contains("does not match the commitment signed when it was made");
    assert!(out.stdout().is_empty(), "{}", out.stdout());

    // Without its statements, the admin's genuine chain is refused too once its cache is gone.
    db.exec("DELETE FROM key_statements");
    std::fs::remove_dir_all(admin.home.path().join("cache")).expect("the admin has a cache");
    let out = admin.zopp(&with(&["secret", "get", "DB_URL"], &PROD));
    out.assert_exit_code(1)
        .assert_stderr_contains("refusing the keys of environment 'prod'");
    assert!(out.stdout().is_empty(), "{}", out.stdout());
}
