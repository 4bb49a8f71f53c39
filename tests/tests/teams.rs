//! Teams, end to end on the real binaries (issue #3): an admin, a writer and a reader joined
//! through workspace invites, a service principal used by a CI runner with only `ZOPP_TOKEN`,
//! the escalation rules of DESIGN.md §5, and the cryptographic claims checked against the raw
//! database: a principal granted one environment cannot decrypt its sibling, a substituted key
//! is refused before anything is wrapped to it, a revoked token opens nothing in a later copy of
//! the database, and a removed member cannot read what is written after a rotation.
//!
//! Every test runs on SQLite and on PostgreSQL.

use std::path::Path;
use std::process::Command;

use sqlx::{Connection, Row};
use zopp_crypto::code::{OneTimeCode, INVITE_PREFIX};
use zopp_crypto::envelope::{Envelope, EnvelopeContext, NameDigest, SealKey};
use zopp_crypto::ids::{EnvironmentId, PrincipalId};
use zopp_crypto::keys::{AgreementSecret, PrincipalKeys, ScopeKey, ScopeKind};
use zopp_crypto::token::{combine, KeyShare, PrincipalToken};
use zopp_crypto::wrap::{unwrap_from_recipient, unwrap_under, KeyContext, WrappedKey};
use zopp_tests::{bin, on_both_backends, Backend, TestOutput, TestServer, TestUser};

on_both_backends!(
    three_members_and_a_ci_runner,
    a_prod_reader_cannot_escalate,
    one_environment_grant_decrypts_nothing_else,
    a_substituted_key_is_refused_before_wrapping,
    a_revoked_token_decrypts_nothing_in_a_later_database_copy,
    rotation_locks_removed_members_out_of_what_follows,
    bad_input_is_refused_and_changes_nothing,
    a_second_device_for_the_same_user,
    a_removed_admins_invites_and_tokens_die_with_the_removal,
);

const PROD: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "prod"];
const DEV: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "dev"];

fn with<'a>(head: &[&'a str], scope: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend_from_slice(scope);
    v
}

// ---------- the team ----------

/// An admin with `acme/api/{dev,prod}` holding one secret each.
fn admin(server: &TestServer) -> TestUser {
    let admin = TestUser::joined(server, "admin@example.com");
    admin.scaffold("acme", "api", "dev");
    admin
        .zopp(&["environment", "create", "prod", "-w", "acme", "-p", "api"])
        .assert_success();
    admin
        .zopp(&with(&["secret", "set", "DB_URL", "postgres://dev"], &DEV))
        .assert_success();
    admin
        .zopp(&with(
            &["secret", "set", "DB_URL", "postgres://prod"],
            &PROD,
        ))
        .assert_success();
    admin
}

/// A workspace invite code made by `admin`.
fn invite(admin: &TestUser, role: &str) -> String {
    let out = admin.zopp(&[
        "invite", "create", "-w", "acme", "--role", role, "--output", "json",
    ]);
    out.assert_success();
    out.json()["code"]
        .as_str()
        .expect("invite JSON has a code")
        .to_string()
}

/// A new user who joins with a workspace invite.
fn invited(server: &TestServer, admin: &TestUser, email: &str, role: &str) -> TestUser {
    let u = TestUser::new(server);
    u.zopp(&["join", &invite(admin, role), email])
        .assert_success();
    u
}

/// A user who joined with a server invite and holds read on one environment of `admin`'s
/// workspace (and nothing else), vouched for by fingerprint.
fn env_reader(server: &TestServer, admin: &TestUser, email: &str, scope: &[&str]) -> TestUser {
    let u = TestUser::joined(server, email);
    let fp = u.zopp(&["principal", "fingerprint"]);
    let fp = fp.assert_success().stdout().trim().to_string();
    admin
        .zopp(&with(
            &[
                "permission",
                "set",
                "--user",
                email,
                "--role",
                "read",
                "--fingerprint",
                &fp,
            ],
            scope,
        ))
        .assert_success();
    u
}

fn principal_id(user: &TestUser) -> PrincipalId {
    let text = std::fs::read_to_string(user.home.path().join("config.toml")).expect("config");
    let t: toml::Table = text.parse().expect("toml");
    PrincipalId::try_parse(t["principal_id"].as_str().expect("principal_id")).expect("id")
}

fn private_keys(user: &TestUser) -> PrincipalKeys {
    let bytes = std::fs::read(user.home.path().join("principal.key")).expect("key file");
    zopp_crypto::keyfile::decode(&bytes, None).expect("plain key file")
}

/// A `zopp` command as a CI runner runs it: only `ZOPP_TOKEN` and `ZOPP_SERVER`, an empty
/// `HOME` and working directory, nothing else from the environment.
fn ci(server: &TestServer, token: &str, home: &Path, args: &[&str]) -> TestOutput {
    let mut cmd = Command::new(bin("zopp"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .env("ZOPP_TOKEN", token)
        .env("ZOPP_SERVER", server.url())
        .current_dir(home)
        .args(args);
    TestOutput::run(cmd, None)
}

fn service(admin: &TestUser, name: &str, role: &str, scope: &[&str]) -> (String, String) {
    let out = admin.zopp(&with(
        &[
            "principal",
            "create-service",
            name,
            "--role",
            role,
            "--output",
            "json",
        ],
        scope,
    ));
    let j = out.assert_success().json();
    let obj = j.as_object().expect("object");
    assert_eq!(obj.len(), 2, "exactly principal_id and token: {j}");
    (
        j["principal_id"].as_str().expect("id").to_string(),
        j["token"].as_str().expect("token").to_string(),
    )
}

// ---------- the raw database ----------

/// The server's database, read (and for tests that play the attacker, written) directly.
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

type Rows = Vec<Vec<Option<String>>>;

impl Db {
    fn of(server: &TestServer) -> Self {
        Self {
            url: server.db_url.clone(),
            backend: server.backend(),
        }
    }

    /// A byte column as lowercase hex text.
    fn hex(&self, col: &str) -> String {
        match self.backend {
            // SQLite's hex(NULL) is '', not NULL: keep NULL distinguishable from an empty blob.
            Backend::Sqlite => {
                format!("CASE WHEN {col} IS NULL THEN NULL ELSE lower(hex({col})) END")
            }
            Backend::Postgres => format!("encode({col}, 'hex')"),
        }
    }

    /// Any column as text.
    fn txt(&self, col: &str) -> String {
        match self.backend {
            Backend::Sqlite => format!("CAST({col} AS TEXT)"),
            Backend::Postgres => format!("{col}::text"),
        }
    }

    /// A byte-string literal.
    fn blob(&self, bytes: &[u8]) -> String {
        match self.backend {
            Backend::Sqlite => format!("x'{}'", hex::encode(bytes)),
            Backend::Postgres => format!("'\\x{}'::bytea", hex::encode(bytes)),
        }
    }

    /// Runs `sql`; every column must be text (use [`Db::hex`] and [`Db::txt`]).
    fn rows(&self, sql: &str) -> Rows {
        runtime().block_on(async {
            macro_rules! fetch {
                ($conn:ty) => {{
                    let mut c = <$conn>::connect(&self.url).await.expect("connect");
                    let rows = sqlx::query(sql).fetch_all(&mut c).await.expect(sql);
                    let out: Rows = rows
                        .iter()
                        .map(|r| {
                            (0..r.len())
                                .map(|i| r.try_get::<Option<String>, _>(i).expect("text"))
                                .collect()
                        })
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
        self.rows(&format!("SELECT {} FROM {table}", self.txt("1")))
            .len()
    }

    /// Rows that say who may do what and which keys exist: a bad request must change none.
    fn state(&self) -> Vec<usize> {
        [
            "users",
            "principals",
            "grants",
            "grant_keys",
            "workspace_invites",
            "device_exports",
            "secret_versions",
        ]
        .iter()
        .map(|t| self.count(t))
        .collect()
    }

    /// Every wrapped key and sealed version, as an attacker holding the database sees them.
    fn dump(&self) -> Dump {
        let bytes =
            |v: &Option<String>| hex::decode(v.as_deref().unwrap_or_default()).expect("hex");
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let num = |v: &Option<String>| text(v).parse::<u64>().expect("number");
        let id16 = |v: &Option<String>| uuid_bytes(&text(v));
        let grant_keys = self
            .rows(&format!(
                "SELECT k.principal_id, {}, {}, g.workspace_id, g.project_id, g.environment_id, \
                 {} FROM grant_keys k JOIN grants g ON g.id = k.grant_id",
                self.txt("g.scope_kind"),
                self.txt("k.key_epoch"),
                self.hex("k.wrapped_key"),
            ))
            .iter()
            .map(|r| {
                let kind = match num(&r[1]) {
                    1 => ScopeKind::Workspace,
                    2 => ScopeKind::Project,
                    _ => ScopeKind::Environment,
                };
                let scope_id = match kind {
                    ScopeKind::Workspace => id16(&r[3]),
                    ScopeKind::Project => id16(&r[4]),
                    ScopeKind::Environment => id16(&r[5]),
                };
                let epoch = num(&r[2]) as u32;
                GrantKeyRow {
                    principal: PrincipalId::try_parse(&text(&r[0])).expect("id"),
                    ctx: KeyContext {
                        kind,
                        id: scope_id,
                        epoch: if kind == ScopeKind::Environment {
                            epoch
                        } else {
                            1
                        },
                    },
                    wrapped: bytes(&r[6]),
                }
            })
            .collect();
        let projects = self
            .rows(&format!(
                "SELECT id, workspace_id, {} FROM projects",
                self.hex("wrapped_key")
            ))
            .iter()
            .map(|r| (id16(&r[0]), id16(&r[1]), bytes(&r[2])))
            .collect();
        let environments = self
            .rows(&format!(
                "SELECT id, project_id, {}, {} FROM environments",
                self.txt("key_epoch"),
                self.hex("wrapped_key")
            ))
            .iter()
            .map(|r| (id16(&r[0]), id16(&r[1]), num(&r[2]) as u32, bytes(&r[3])))
            .collect();
        let links = self
            .rows(&format!(
                "SELECT environment_id, {}, {} FROM environment_key_epochs",
                self.txt("epoch"),
                self.hex("wrapped_key")
            ))
            .iter()
            .map(|r| (id16(&r[0]), num(&r[1]) as u32, bytes(&r[2])))
            .collect();
        let versions = self
            .rows(&format!(
                "SELECT environment_id, {}, {}, {}, {} FROM secret_versions WHERE NOT deleted",
                self.hex("name_digest"),
                self.txt("version"),
                self.txt("key_epoch"),
                self.hex("envelope")
            ))
            .iter()
            .map(|r| Version {
                environment: EnvironmentId::try_parse(&text(&r[0])).expect("id"),
                digest: NameDigest::try_from_slice(&bytes(&r[1])).expect("digest"),
                version: num(&r[2]),
                epoch: num(&r[3]) as u32,
                envelope: bytes(&r[4]),
            })
            .collect();
        Dump {
            grant_keys,
            projects,
            environments,
            links,
            versions,
        }
    }

    /// The id of environment `name`.
    fn environment(&self, name: &str) -> EnvironmentId {
        let rows = self.rows(&format!(
            "SELECT id FROM environments WHERE name = '{name}'"
        ));
        EnvironmentId::try_parse(rows[0][0].as_deref().expect("id")).expect("id")
    }
}

/// The 16 bytes of a stored id (any id type: they are all UUIDs).
fn uuid_bytes(text: &str) -> [u8; 16] {
    *EnvironmentId::try_parse(text).expect("uuid").as_bytes()
}

struct GrantKeyRow {
    principal: PrincipalId,
    ctx: KeyContext,
    wrapped: Vec<u8>,
}

struct Version {
    environment: EnvironmentId,
    digest: NameDigest,
    version: u64,
    epoch: u32,
    envelope: Vec<u8>,
}

/// (environment id, project id, current epoch, EK under PK)
type EnvironmentRow = ([u8; 16], [u8; 16], u32, Vec<u8>);

/// What the database holds, keyed the way an attacker would try it.
struct Dump {
    grant_keys: Vec<GrantKeyRow>,
    /// (project id, workspace id, PK under WK)
    projects: Vec<([u8; 16], [u8; 16], Vec<u8>)>,
    environments: Vec<EnvironmentRow>,
    /// (environment id, epoch n, EK(n) under EK(n + 1))
    links: Vec<([u8; 16], u32, Vec<u8>)>,
    versions: Vec<Version>,
}

fn ctx(kind: ScopeKind, id: [u8; 16], epoch: u32) -> KeyContext {
    KeyContext { kind, id, epoch }
}

/// Every scope key reachable from `known` and from the keys wrapped to principal `me`, trying
/// every wrapped key of the dump under every key already found, until nothing new opens.
fn reachable(
    d: &Dump,
    me: PrincipalId,
    secret: &AgreementSecret,
    known: &[(KeyContext, ScopeKey)],
) -> Vec<(KeyContext, ScopeKey)> {
    let mut keys: Vec<(KeyContext, ScopeKey)> = known.to_vec();
    let add = |keys: &mut Vec<(KeyContext, ScopeKey)>, c: KeyContext, k: ScopeKey| {
        if keys.iter().any(|(c2, k2)| *c2 == c && *k2 == k) {
            false
        } else {
            keys.push((c, k));
            true
        }
    };
    for g in &d.grant_keys {
        if g.principal == me {
            let w = WrappedKey::from_bytes(g.wrapped.clone());
            if let Ok(k) = unwrap_from_recipient(&w, &g.ctx, &me, secret) {
                add(&mut keys, g.ctx, k);
            }
        }
    }
    loop {
        let mut grew = false;
        let snapshot = keys.clone();
        for (pid, ws, wrapped) in &d.projects {
            let child = ctx(ScopeKind::Project, *pid, 1);
            for (c, k) in snapshot
                .iter()
                .filter(|(c, _)| c.kind == ScopeKind::Workspace && c.id == *ws)
            {
                if let Ok(pk) = unwrap_under(&WrappedKey::from_bytes(wrapped.clone()), &child, k, c)
                {
                    grew |= add(&mut keys, child, pk);
                }
            }
        }
        for (eid, pid, epoch, wrapped) in &d.environments {
            let child = ctx(ScopeKind::Environment, *eid, *epoch);
            for (c, k) in snapshot
                .iter()
                .filter(|(c, _)| c.kind == ScopeKind::Project && c.id == *pid)
            {
                if let Ok(ek) = unwrap_under(&WrappedKey::from_bytes(wrapped.clone()), &child, k, c)
                {
                    grew |= add(&mut keys, child, ek);
                }
            }
        }
        for (eid, n, wrapped) in &d.links {
            let child = ctx(ScopeKind::Environment, *eid, *n);
            let parent = ctx(ScopeKind::Environment, *eid, n + 1);
            for (_, k) in snapshot.iter().filter(|(c, _)| *c == parent) {
                if let Ok(ek) =
                    unwrap_under(&WrappedKey::from_bytes(wrapped.clone()), &child, k, &parent)
                {
                    grew |= add(&mut keys, child, ek);
                }
            }
        }
        if !grew {
            return keys;
        }
    }
}

/// The `(environment, version)` of every sealed version that opens under one of `keys`.
fn opened(d: &Dump, keys: &[(KeyContext, ScopeKey)]) -> Vec<(EnvironmentId, u64, String)> {
    let mut out = Vec::new();
    for v in &d.versions {
        let ectx = EnvelopeContext {
            environment: v.environment,
            name_digest: v.digest,
            version: v.version,
            key_epoch: v.epoch,
        };
        // Every key is tried, whatever context it was found under: the AAD, not this loop,
        // decides what opens.
        for (_, k) in keys {
            if let Ok(p) = SealKey::derive(k).open(&ectx, &Envelope::from_bytes(v.envelope.clone()))
            {
                out.push((
                    v.environment,
                    v.version,
                    String::from_utf8_lossy(p.expose_secret()).into_owned(),
                ));
                break;
            }
        }
    }
    out
}

// ---------- the journeys ----------

/// An admin, a writer and a reader joined through invites, and a CI runner with a token.
fn three_members_and_a_ci_runner(backend: Backend) {
    let server = TestServer::start_on(backend);
    let admin = admin(&server);
    let writer = invited(&server, &admin, "writer@example.com", "write");
    let reader = invited(&server, &admin, "reader@example.com", "read");

    writer
        .zopp(&with(&["secret", "set", "API_KEY", "from-writer"], &PROD))
        .assert_success();
    let out = reader.zopp(&with(&["secret", "get", "API_KEY"], &PROD));
    assert_eq!(out.assert_success().stdout(), "from-writer\n");
    reader
        .zopp(&with(&["secret", "set", "API_KEY", "nope"], &PROD))
        .assert_exit_code(4)
        .assert_stderr_contains("needs the write role (you have read)");

    // Effective roles and the grant list, as JSON.
    let eff = reader
        .zopp(&with(
            &["permission", "effective", "--output", "json"],
            &PROD,
        ))
        .assert_success()
        .json();
    assert_eq!(eff["role"], "read");
    let list = admin
        .zopp(&["permission", "list", "-w", "acme", "--output", "json"])
        .assert_success()
        .json();
    let users: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|g| g["user"].as_str())
        .collect();
    for u in [
        "admin@example.com",
        "writer@example.com",
        "reader@example.com",
    ] {
        assert!(users.contains(&u), "{u} in {list}");
    }
    reader
        .zopp(&["permission", "list", "-w", "acme"])
        .assert_exit_code(4);

    // A CI runner: a token, an empty home, no config, no prompt, nothing written.
    let (id, token) = service(&admin, "deployer", "read", &PROD);
    let home = tempfile::tempdir().expect("ci home");
    let out = ci(
        &server,
        &token,
        home.path(),
        &with(&["secret", "get", "API_KEY"], &PROD),
    );
    assert_eq!(out.assert_success().stdout(), "from-writer\n");
    let out = ci(
        &server,
        &token,
        home.path(),
        &with(&["secret", "list"], &PROD),
    );
    assert!(out.assert_success().stdout().contains("DB_URL"));
    let out = ci(
        &server,
        &token,
        home.path(),
        &with(&["secret", "export", "--format", "dotenv"], &PROD),
    );
    assert!(out.assert_success().stdout().contains("API_KEY="));
    let out = ci(
        &server,
        &token,
        home.path(),
        &with(&["run"], &PROD)
            .into_iter()
            .chain(["--", "sh", "-c", "printf %s \"$API_KEY\""])
            .collect::<Vec<_>>(),
    );
    assert_eq!(out.assert_success().stdout(), "from-writer");
    // Its scope is prod, read only.
    ci(
        &server,
        &token,
        home.path(),
        &with(&["secret", "get", "DB_URL"], &DEV),
    )
    .assert_exit_code(3);
    ci(
        &server,
        &token,
        home.path(),
        &with(&["secret", "set", "X", "y"], &PROD),
    )
    .assert_exit_code(4);
    let written: Vec<_> = std::fs::read_dir(home.path())
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(written.is_empty(), "token mode wrote to disk: {written:?}");

    // Expired, then revoked: refused with exit 5 saying which.
    let db = Db::of(&server);
    db.exec(&format!(
        "UPDATE principals SET expires_at = 1 WHERE id = '{id}'"
    ));
    ci(
        &server,
        &token,
        home.path(),
        &with(&["secret", "get", "API_KEY"], &PROD),
    )
    .assert_exit_code(5)
    .assert_stderr_contains("principal expired");
    db.exec(&format!(
        "UPDATE principals SET expires_at = NULL WHERE id = '{id}'"
    ));
    admin
        .zopp(&["principal", "revoke", &id, "--no-rotate"])
        .assert_success();
    ci(
        &server,
        &token,
        home.path(),
        &with(&["secret", "get", "API_KEY"], &PROD),
    )
    .assert_exit_code(5)
    .assert_stderr_contains("principal revoked");
    // Every join, grant, read and revocation above sits on the workspace chain, and the chain
    // verifies: hashes, links and each actor's own signature (joins included).
    admin
        .zopp(&["audit", "verify", "-w", "acme"])
        .assert_success();
}

/// A principal that may only read `prod` tries to give more: every attempt is refused with
/// exit 4 naming the admin role it would need, and nothing changes.
fn a_prod_reader_cannot_escalate(backend: Backend) {
    let server = TestServer::start_on(backend);
    let admin = admin(&server);
    let bob = env_reader(&server, &admin, "bob@example.com", &PROD);
    let writer = invited(&server, &admin, "writer@example.com", "write");
    let db = Db::of(&server);
    let before = db.state();

    let attempts: Vec<Vec<&str>> = vec![
        // prod-write for someone else
        with(
            &[
                "permission",
                "set",
                "--user",
                "writer@example.com",
                "--role",
                "write",
            ],
            &PROD,
        ),
        // a write service principal on prod
        with(
            &["principal", "create-service", "ci", "--role", "write"],
            &PROD,
        ),
        // the sibling environment
        with(
            &[
                "permission",
                "set",
                "--user",
                "writer@example.com",
                "--role",
                "read",
            ],
            &DEV,
        ),
        // the project
        vec![
            "permission",
            "set",
            "--user",
            "writer@example.com",
            "--role",
            "read",
            "-w",
            "acme",
            "-p",
            "api",
        ],
        // an invite into the workspace
        vec!["invite", "create", "-w", "acme", "--role", "read"],
    ];
    for args in &attempts {
        bob.zopp(args)
            .assert_exit_code(4)
            .assert_stderr_contains("needs the admin role");
    }
    // A read service principal's token cannot mint a write one either.
    let (_, token) = service(&admin, "reader-ci", "read", &PROD);
    let home = tempfile::tempdir().expect("home");
    ci(
        &server,
        &token,
        home.path(),
        &with(
            &["principal", "create-service", "ci2", "--role", "write"],
            &PROD,
        ),
    )
    .assert_exit_code(4)
    .assert_stderr_contains("needs the admin role");
    // The writer can write but not grant.
    writer
        .zopp(&with(
            &[
                "permission",
                "set",
                "--user",
                "bob@example.com",
                "--role",
                "write",
            ],
            &PROD,
        ))
        .assert_exit_code(4);
    let mut after = db.state();
    // The read service principal made above is the only change.
    after[1] -= 1;
    after[2] -= 1;
    after[3] -= 1;
    assert_eq!(before, after, "a refused request changed the database");
}

/// With the raw database and the private keys of a principal granted only `acme/api/dev`, no
/// combination of keys decrypts anything in `acme/api/prod`.
fn one_environment_grant_decrypts_nothing_else(backend: Backend) {
    let server = TestServer::start_on(backend);
    let admin = admin(&server);
    admin
        .zopp(&with(&["secret", "set", "STRIPE", "sk_prod_canary"], &PROD))
        .assert_success();
    let bob = env_reader(&server, &admin, "bob@example.com", &DEV);
    let out = bob.zopp(&with(&["secret", "get", "DB_URL"], &DEV));
    assert_eq!(out.assert_success().stdout(), "postgres://dev\n");
    bob.zopp(&with(&["secret", "get", "DB_URL"], &PROD))
        .assert_exit_code(3);

    let db = Db::of(&server);
    let dump = db.dump();
    let keys = private_keys(&bob);
    let found = reachable(&dump, principal_id(&bob), &keys.agreement, &[]);
    let dev = db.environment("dev");
    let prod = db.environment("prod");
    assert!(
        found
            .iter()
            .all(|(c, _)| c.kind == ScopeKind::Environment && c.id == *dev.as_bytes()),
        "a dev-only principal reached a key above or beside dev"
    );
    let read = opened(&dump, &found);
    assert!(read
        .iter()
        .any(|(e, _, v)| *e == dev && v == "postgres://dev"));
    assert!(
        read.iter().all(|(e, _, _)| *e != prod),
        "a dev-only principal opened a prod version"
    );
}

/// The server swaps a grantee's X25519 key for its own: the granting client refuses with a
/// clear error, and nothing is wrapped to the swapped key.
fn a_substituted_key_is_refused_before_wrapping(backend: Backend) {
    let server = TestServer::start_on(backend);
    let admin = admin(&server);
    let carol = invited(&server, &admin, "carol@example.com", "read");
    let db = Db::of(&server);
    let server_key = AgreementSecret::from_bytes([0x66; 32]).public_key();
    db.exec(&format!(
        "UPDATE principals SET agreement_key = {} WHERE id = '{}'",
        db.blob(&server_key.to_bytes()),
        principal_id(&carol)
    ));
    let before = db.state();
    let out = admin.zopp(&with(
        &[
            "permission",
            "set",
            "--user",
            "carol@example.com",
            "--role",
            "write",
        ],
        &PROD,
    ));
    out.assert_exit_code(1)
        .assert_stderr_contains("refusing to wrap a key")
        .assert_stderr_contains("its admission signature does not verify");
    assert_eq!(
        db.state(),
        before,
        "a key was wrapped to the substituted key"
    );
    // The same refusal during a rotation: no key goes to the swapped principal there either.
    admin
        .zopp(&["workspace", "rotate-key", "-w", "acme"])
        .assert_exit_code(1)
        .assert_stderr_contains("does not verify");
    assert_eq!(db.state(), before);
}

/// A leaked token plus a database copy taken after revocation decrypts nothing; the same token
/// plus a copy taken before would (that is the documented limit), which shows the test can tell.
fn a_revoked_token_decrypts_nothing_in_a_later_database_copy(backend: Backend) {
    let server = TestServer::start_on(backend);
    let admin = admin(&server);
    let (id, token) = service(&admin, "deployer", "read", &PROD);
    let db = Db::of(&server);
    let t = PrincipalToken::try_parse(&token).expect("token");
    let share_sql = format!(
        "SELECT {} FROM principals WHERE id = '{id}'",
        db.hex("server_key_share")
    );

    let before = db.rows(&share_sql)[0][0]
        .clone()
        .expect("share before revocation");
    let share: [u8; 32] = hex::decode(before)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let secret = combine(&t.share, &KeyShare::from_bytes(share));
    let dump = db.dump();
    let keys = reachable(&dump, t.principal, &secret, &[]);
    assert!(
        opened(&dump, &keys)
            .iter()
            .any(|(_, _, v)| v == "postgres://prod"),
        "token plus the database before revocation opens prod"
    );

    admin
        .zopp(&["principal", "revoke", &id, "--no-rotate"])
        .assert_success();
    assert_eq!(
        db.rows(&share_sql)[0][0],
        None,
        "the server share outlived the revocation"
    );
    let after = db.dump();
    assert!(
        after.grant_keys.iter().all(|g| g.principal != t.principal),
        "keys wrapped to the revoked principal remain"
    );
    // Without the share, the token's half is all the attacker has.
    let half = AgreementSecret::from_bytes(*t.share.expose_secret());
    let keys = reachable(&after, t.principal, &half, &[]);
    assert!(keys.is_empty(), "a revoked token opened a key");
    assert!(opened(&after, &keys).is_empty());
}

/// Revocation destroys the server's key share at rest, not only in the row: afterwards its bytes
/// are nowhere in the SQLite database file or its WAL (secure_delete zeroes the freed cell, a
/// TRUNCATE checkpoint empties the WAL). Before revocation the same search finds them, so the
/// test can tell. (PostgreSQL keeps dead tuples until VACUUM: docs/ci.md says what that means.)
#[test]
fn a_revoked_share_leaves_no_bytes_in_the_sqlite_files() {
    let server = TestServer::start_on(Backend::Sqlite);
    let admin = admin(&server);
    let (id, _token) = service(&admin, "deployer", "read", &PROD);
    let db = Db::of(&server);
    let share_sql = format!(
        "SELECT {} FROM principals WHERE id = '{id}'",
        db.hex("server_key_share")
    );
    let share = hex::decode(
        db.rows(&share_sql)[0][0]
            .clone()
            .expect("share before revocation"),
    )
    .expect("hex");
    let main = server.db_path();
    let wal = std::path::PathBuf::from(format!("{}-wal", main.display()));
    let present = |path: &Path| zopp_tests::file_contains(path, &share);
    assert!(
        present(&main) || present(&wal),
        "the share is on disk before revocation (else this test proves nothing)"
    );

    admin
        .zopp(&["principal", "revoke", &id, "--no-rotate"])
        .assert_success();
    assert!(
        !present(&main),
        "the share's bytes remain in {}",
        main.display()
    );
    assert!(
        !present(&wal),
        "the share's bytes remain in {}",
        wal.display()
    );
}

/// After a member is removed and the keys rotated, current members still read old versions,
/// and versions written afterwards do not open with the removed member's keys plus everything
/// the server stores, whatever keys the member kept from before.
fn rotation_locks_removed_members_out_of_what_follows(backend: Backend) {
    let server = TestServer::start_on(backend);
    let admin = admin(&server);
    let writer = invited(&server, &admin, "writer@example.com", "write");
    let reader = invited(&server, &admin, "reader@example.com", "read");
    let bob = env_reader(&server, &admin, "bob@example.com", &DEV);
    let db = Db::of(&server);

    // What each could derive while still a member: they keep all of it.
    let kept = |u: &TestUser| {
        let keys = private_keys(u);
        let id = principal_id(u);
        (
            id,
            keys,
            reachable(&db.dump(), id, &private_keys(u).agreement, &[]),
        )
    };
    let (reader_id, reader_keys, reader_kept) = kept(&reader);
    let (bob_id, bob_keys, bob_kept) = kept(&bob);
    assert!(!reader_kept.is_empty() && !bob_kept.is_empty());

    // Bob loses dev (an environment rotation); the reader loses the workspace (a workspace
    // rotation, which reaches every key below it).
    let out = admin.zopp(&with(
        &[
            "permission",
            "remove",
            "--user",
            "bob@example.com",
            "--rotate",
            "--output",
            "json",
        ],
        &DEV,
    ));
    let j = out.assert_success().json();
    assert_eq!(j["readable"][0]["environment"], "acme/api/dev");
    assert_eq!(j["readable"][0]["secrets"][0], "DB_URL");
    assert_eq!(j["rotated"][0]["scope"], "acme/api/dev");
    let out = admin.zopp(&[
        "permission",
        "remove",
        "--user",
        "reader@example.com",
        "-w",
        "acme",
        "--rotate",
    ]);
    out.assert_success();
    assert!(
        out.stdout().contains("acme/api/prod: DB_URL"),
        "{}",
        out.stdout()
    );
    reader
        .zopp(&with(&["secret", "get", "DB_URL"], &PROD))
        .assert_exit_code(3);

    // New versions after the rotations.
    admin
        .zopp(&with(
            &["secret", "set", "DB_URL", "postgres://dev-rotated"],
            &DEV,
        ))
        .assert_success();
    writer
        .zopp(&with(
            &["secret", "set", "DB_URL", "postgres://prod-rotated"],
            &PROD,
        ))
        .assert_success();
    // Current members read both the old and the new.
    let out = writer.zopp(&with(&["secret", "get", "DB_URL", "--version", "1"], &PROD));
    assert_eq!(out.assert_success().stdout(), "postgres://prod\n");
    let out = writer.zopp(&with(&["secret", "get", "DB_URL"], &DEV));
    assert_eq!(out.assert_success().stdout(), "postgres://dev-rotated\n");

    let after = db.dump();
    for (who, id, keys, kept) in [
        ("reader", reader_id, &reader_keys, &reader_kept),
        ("bob", bob_id, &bob_keys, &bob_kept),
    ] {
        let found = reachable(&after, id, &keys.agreement, kept);
        let read = opened(&after, &found);
        assert!(
            read.iter().all(|(_, _, v)| !v.contains("rotated")),
            "{who} opened a version written after the rotation: {read:?}"
        );
        assert!(
            !read.is_empty(),
            "{who} still opens what it could read before"
        );
    }
    // Every join, grant, read and revocation above sits on the workspace chain, and the chain
    // verifies: hashes, links and each actor's own signature (joins included).
    admin
        .zopp(&["audit", "verify", "-w", "acme"])
        .assert_success();
}

/// Unknown principal, malformed ids and codes, expired, reused and revoked invites, a
/// malformed token: each a clear error with its exit code, and no change on the server.
fn bad_input_is_refused_and_changes_nothing(backend: Backend) {
    let server = TestServer::start_on(backend);
    let admin = admin(&server);
    let used = invite(&admin, "read");
    TestUser::new(&server)
        .zopp(&["join", &used, "first@example.com"])
        .assert_success();
    let expired = invite(&admin, "read");
    let revoked = invite(&admin, "read");
    let id_of = |code: &str| {
        // The code proper, without the server address that follows its '.'.
        let code = code.split_once('.').map_or(code, |(c, _)| c);
        OneTimeCode::try_parse(INVITE_PREFIX, code)
            .expect("invite code")
            .id()
            .to_string()
    };
    admin
        .zopp(&["invite", "revoke", "-w", "acme", &id_of(&revoked)])
        .assert_success();
    admin
        .zopp(&["invite", "revoke", "-w", "acme", &id_of(&revoked)])
        .assert_exit_code(1)
        .assert_stderr_contains("is already revoked");
    let db = Db::of(&server);
    db.exec(&format!(
        "UPDATE workspace_invites SET expires_at = 1 WHERE id = '{}'",
        id_of(&expired)
    ));
    let before = db.state();

    let fresh = TestUser::new(&server);
    fresh
        .zopp(&["join", &used, "second@example.com"])
        .assert_exit_code(1)
        .assert_stderr_contains("invite already used");
    let codes = admin
        .zopp(&["invite", "list", "-w", "acme", "--output", "json"])
        .json();
    let statuses: Vec<&str> = codes
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|i| i["status"].as_str())
        .collect();
    assert!(
        statuses.contains(&"expired") && statuses.contains(&"revoked"),
        "{codes}"
    );
    for (code, why) in [
        (revoked.as_str(), "invite revoked"),
        (expired.as_str(), "invite expired"),
        ("zwi_AAAA", "malformed"),
    ] {
        let out = fresh.zopp(&["join", code, "third@example.com"]);
        assert_ne!(out.code(), 0);
        out.assert_stderr_contains(why);
    }
    fresh
        .zopp(&["join", "zwi_AAAA", "third@example.com"])
        .assert_exit_code(2);
    assert!(!fresh.home.path().join("principal.key").exists());

    admin
        .zopp(&with(
            &[
                "permission",
                "set",
                "--principal",
                "0190b7e4-8c5e-4cc1-9a1b-2f3e4d5c6b7a",
                "--role",
                "read",
            ],
            &PROD,
        ))
        .assert_exit_code(3)
        .assert_stderr_contains("principal 0190b7e4-8c5e-4cc1-9a1b-2f3e4d5c6b7a not found");
    admin
        .zopp(&with(
            &[
                "permission",
                "set",
                "--principal",
                "not-an-id",
                "--role",
                "read",
            ],
            &PROD,
        ))
        .assert_exit_code(2);
    admin
        .zopp(&with(
            &[
                "permission",
                "set",
                "--user",
                "nobody@example.com",
                "--role",
                "read",
            ],
            &PROD,
        ))
        .assert_exit_code(3)
        .assert_stderr_contains("no user with email 'nobody@example.com'");
    admin
        .zopp(&[
            "permission",
            "remove",
            "--user",
            "admin@example.com",
            "-w",
            "acme",
        ])
        .assert_exit_code(1)
        .assert_stderr_contains("last admin");
    admin
        .zopp(&[
            "principal",
            "revoke",
            "0190b7e4-8c5e-4cc1-9a1b-2f3e4d5c6b7a",
        ])
        .assert_exit_code(3);
    let home = tempfile::tempdir().expect("home");
    ci(
        &server,
        "zopp_not-a-token",
        home.path(),
        &with(&["secret", "get", "DB_URL"], &PROD),
    )
    .assert_exit_code(2)
    .assert_stderr_contains("ZOPP_TOKEN is not a valid principal token");
    assert_eq!(db.state(), before, "bad input changed the database");
}

/// A second device: export on one (passphrase from ZOPP_PASSPHRASE without a terminal),
/// import on the other, list, rename, remove; the code works once.
fn a_second_device_for_the_same_user(backend: Backend) {
    let server = TestServer::start_on(backend);
    let admin = admin(&server);
    let pass = [("ZOPP_PASSPHRASE", "correct horse battery")];
    admin
        .zopp(&["principal", "export"])
        .assert_exit_code(2)
        .assert_stderr_contains("ZOPP_PASSPHRASE");
    let out = admin.zopp_env(
        &[
            "principal",
            "export",
            "--name",
            "laptop-2",
            "--output",
            "json",
        ],
        &pass,
    );
    let code = out.assert_success().json()["code"]
        .as_str()
        .expect("code")
        .to_string();
    let db = Db::of(&server);
    let sealed = db.rows(&format!(
        "SELECT {} FROM device_exports",
        db.hex("sealed_keys")
    ));
    assert_eq!(sealed.len(), 1);

    let laptop = TestUser::new(&server);
    laptop
        .zopp_env(
            &["principal", "import", &code],
            &[("ZOPP_PASSPHRASE", "wrong")],
        )
        .assert_exit_code(2)
        .assert_stderr_contains("passphrase does not open");
    assert!(!laptop.home.path().join("principal.key").exists());
    laptop
        .zopp_env(&["principal", "import", &code], &pass)
        .assert_success();
    let out = laptop.zopp_env(&with(&["secret", "get", "DB_URL"], &PROD), &pass);
    assert_eq!(out.assert_success().stdout(), "postgres://prod\n");
    assert_eq!(
        db.rows(&format!(
            "SELECT {} FROM device_exports",
            db.hex("sealed_keys")
        ))[0][0]
            .as_deref(),
        Some(""),
        "the sealed copy outlived the import"
    );
    let again = TestUser::new(&server);
    again
        .zopp_env(&["principal", "import", &code], &pass)
        .assert_exit_code(1)
        .assert_stderr_contains("already imported");

    // Both devices, each with its own key; a grant made now reaches both.
    let list = admin
        .zopp(&["principal", "list", "--output", "json"])
        .assert_success()
        .json();
    let devices = list.as_array().expect("array");
    assert_eq!(devices.len(), 2);
    let new_id = principal_id(&laptop).to_string();
    assert!(devices
        .iter()
        .any(|d| d["id"] == new_id.as_str() && d["status"] == "active"));
    admin
        .zopp(&["principal", "rename", &new_id, "travel-laptop"])
        .assert_success();
    let fp = laptop.zopp_env(&["principal", "fingerprint"], &pass);
    let fp = fp.assert_success().stdout();
    let seen = admin.zopp(&["principal", "fingerprint", &new_id, "-w", "acme"]);
    assert_eq!(seen.assert_success().stdout(), fp);
    seen.assert_stderr_contains("vouched for by a principal you trust");

    admin
        .zopp(&["principal", "remove", &new_id, "--no-rotate"])
        .assert_success();
    laptop
        .zopp_env(&with(&["secret", "get", "DB_URL"], &PROD), &pass)
        .assert_exit_code(5)
        .assert_stderr_contains("principal revoked");
    // Every join, grant, read and revocation above sits on the workspace chain, and the chain
    // verifies: hashes, links and each actor's own signature (joins included).
    admin
        .zopp(&["audit", "verify", "-w", "acme"])
        .assert_success();
}

/// Removing an admin from the workspace revokes the invite they left unredeemed and the service
/// principal they created (its token stops working), and the report lists both. With
/// `--keep-issued` they are listed and stay valid.
fn a_removed_admins_invites_and_tokens_die_with_the_removal(backend: Backend) {
    let server = TestServer::start_on(backend);
    let admin = admin(&server);
    let bob = invited(&server, &admin, "bob@example.com", "admin");
    let carol = invited(&server, &admin, "carol@example.com", "admin");
    let ci_home = tempfile::tempdir().expect("ci home");
    let read = |token: &str| {
        ci(
            &server,
            token,
            ci_home.path(),
            &with(&["secret", "get", "DB_URL"], &PROD),
        )
    };

    // Bob issues an invite and a CI token, then is removed: both die with him.
    let bob_invite = invite(&bob, "read");
    let (bob_sp, bob_token) = service(&bob, "bob-ci", "read", &PROD);
    read(&bob_token).assert_success();
    let out = admin.zopp(&[
        "permission",
        "remove",
        "--user",
        "bob@example.com",
        "-w",
        "acme",
        "--no-rotate",
        "--output",
        "json",
    ]);
    let j = out.assert_success().json();
    let issued = j["issued"].as_array().expect("issued list");
    assert_eq!(issued.len(), 2, "{j}");
    let sp = issued
        .iter()
        .find(|i| i["kind"] == "service_principal")
        .expect("the service principal is listed");
    assert_eq!(sp["id"], bob_sp.as_str());
    assert_eq!(sp["name"], "bob-ci");
    assert_eq!(sp["revoked"], true);
    let inv = issued
        .iter()
        .find(|i| i["kind"] == "invite")
        .expect("the invite is listed");
    assert_eq!(inv["revoked"], true);
    read(&bob_token)
        .assert_exit_code(5)
        .assert_stderr_contains("revoked");
    let out = TestUser::new(&server).zopp(&["join", &bob_invite, "eve@example.com"]);
    assert_ne!(out.code(), 0);
    out.assert_stderr_contains("invite revoked");

    // Carol's are listed, and kept on request.
    let carol_invite = invite(&carol, "read");
    let (_, carol_token) = service(&carol, "carol-ci", "read", &PROD);
    let out = admin.zopp(&[
        "permission",
        "remove",
        "--user",
        "carol@example.com",
        "-w",
        "acme",
        "--no-rotate",
        "--keep-issued",
    ]);
    out.assert_success();
    assert!(
        out.stdout().contains("service principal 'carol-ci'")
            && out.stdout().contains("still valid"),
        "{}",
        out.stdout()
    );
    read(&carol_token).assert_success();
    TestUser::new(&server)
        .zopp(&["join", &carol_invite, "dave@example.com"])
        .assert_success();
}
