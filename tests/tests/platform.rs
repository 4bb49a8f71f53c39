//! Platform resources end to end on the real binaries and the real `kubectl`
//! (docs/platform.md): kubeconfigs stored and printed masked, `zopp run --kubeconfig` and its
//! private file in every way the child or zopp can end, apps previewed masked and applied
//! against a TLS Kubernetes API stub that checks the bearer token and the rendered manifest,
//! app leases under contention and after a SIGKILL, roles, and a canary value that reaches only
//! the apply command's stdin.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use zopp_tests::{bin, file_contains, signal, TestOutput, TestServer, TestUser};

const ENV: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "prod"];
/// The secret value that must reach only the apply command's stdin.
const CANARY: &str = "canary-db-pass-6f1d2a";
/// The cluster token inside the stored kubeconfig.
const TOKEN: &str = "canary-kube-token-93be71";

fn with<'a>(head: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend_from_slice(&ENV);
    v
}

// ---------- a Kubernetes API stub over TLS ----------

/// One request the stub received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

/// Answers what `kubectl apply -f -` asks (version-less discovery, OpenAPI v3 with server-side
/// field validation, GET of each object, POST to create it) and records every request.
struct KubeStub {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn tls_config() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/tests/data/tls");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("server.pem")
        .collect::<Result<_, _>>()
        .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server certificate");
    Arc::new(cfg)
}

impl KubeStub {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cfg = tls_config();
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(tcp) = conn else { break };
                let cfg = cfg.clone();
                let log = log.clone();
                std::thread::spawn(move || serve(tcp, cfg, &log));
            }
        });
        Self { port, seen }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("stub log").clone()
    }
}

fn serve(tcp: TcpStream, cfg: Arc<rustls::ServerConfig>, log: &Mutex<Vec<Seen>>) {
    let Ok(conn) = rustls::ServerConnection::new(cfg) else {
        return;
    };
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    loop {
        let mut line = String::new();
        if tls.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut len = 0usize;
        let mut authorization = None;
        loop {
            let mut h = String::new();
            if tls.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    "authorization" => authorization = Some(v.trim().to_string()),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; len];
        if tls.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let (status, reply) = answer(&method, &path, &body);
        log.lock().expect("stub log").push(Seen {
            method,
            path,
            authorization,
            body,
        });
        let reason = match status {
            200 => "OK",
            201 => "Created",
            _ => "Not Found",
        };
        let out = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
        let stream = tls.get_mut();
        if stream
            .write_all(out.as_bytes())
            .and_then(|()| stream.flush())
            .is_err()
        {
            return;
        }
    }
}

fn answer(method: &str, path: &str, body: &str) -> (u16, String) {
    use serde_json::json;
    let p = path.split('?').next().unwrap_or_default();
    let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "NotFound", "code": 404, "message": "not found"});
    let v = match (method, p) {
        ("GET", "/version") => json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0"}),
        ("GET", "/openapi/v3") => json!({"paths": {
            "api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=1"},
            "apis/apps/v1": {"serverRelativeURL": "/openapi/v3/apis/apps/v1?hash=1"}}}),
        ("GET", gv) if gv.starts_with("/openapi/v3/") => {
            let gv = &gv["/openapi/v3/".len()..];
            let (group, kind, plural) = if gv == "api/v1" {
                ("", "Secret", "secrets")
            } else {
                ("apps", "Deployment", "deployments")
            };
            // Advertising `fieldValidation` makes kubectl validate on the server, so the stub
            // needs no schemas.
            let op = |verb: &str| {
                json!({"x-kubernetes-action": verb,
                    "x-kubernetes-group-version-kind": {"group": group, "version": "v1", "kind": kind},
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                    "responses": {}})
            };
            json!({"openapi": "3.0.0", "info": {"title": "stub", "version": "v1"},
                "paths": {
                    format!("/{gv}/namespaces/{{namespace}}/{plural}/{{name}}"): {"patch": op("patch"), "put": op("put")},
                    format!("/{gv}/namespaces/{{namespace}}/{plural}"): {"post": op("post")}},
                "components": {"schemas": {}}})
        }
        ("GET", "/api") => json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ("GET", "/apis") => {
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{"name": "apps",
            "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]})
        }
        ("GET", "/api/v1") => {
            json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            {"name": "secrets", "singularName": "secret", "namespaced": true, "kind": "Secret",
             "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]},
            {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace",
             "verbs": ["get", "list"]}]})
        }
        ("GET", "/apis/apps/v1") => json!({"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": "apps/v1", "resources": [{"name": "deployments", "singularName": "deployment",
            "namespaced": true, "kind": "Deployment",
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}]}),
        ("POST", _) => {
            let mut obj: serde_json::Value = serde_json::from_str(body).unwrap_or(json!({}));
            obj["metadata"]["uid"] = json!("00000000-0000-0000-0000-000000000001");
            return (201, obj.to_string());
        }
        _ => return (404, not_found.to_string()),
    };
    (200, v.to_string())
}

// ---------- the fixture ----------

fn kubeconfig(port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Config
current-context: stub
clusters:
- name: stub
  cluster:
    server: https://127.0.0.1:{port}
    insecure-skip-tls-verify: true
contexts:
- name: stub
  context:
    cluster: stub
    user: deployer
users:
- name: deployer
  user:
    token: {TOKEN}
"
    )
}

const APP: &str = "\
kubeconfig: kc
namespace: web
labels:
  team: platform
manifest: |
  apiVersion: v1
  kind: Secret
  metadata:
    name: db
  stringData:
    password: ${DB_PASSWORD}
  ---
  apiVersion: apps/v1
  kind: Deployment
  metadata:
    name: web
  spec:
    replicas: 1
    selector:
      matchLabels: {app: web}
    template:
      metadata:
        labels: {app: web}
      spec:
        containers:
        - name: web
          image: nginx
          env:
          - name: DB_HOST
            value: ${DB_HOST}
";

/// A server, alice (admin) with `acme/api/prod`, a kubeconfig `kc` pointing at a stub, secrets
/// `DB_PASSWORD` (the canary) and `DB_HOST`, and app `web`.
struct Platform {
    server: TestServer,
    alice: TestUser,
    stub: KubeStub,
    runtime: tempfile::TempDir,
}

/// Gives `user` a private runtime directory and a home for kubectl's cache.
fn isolate(user: &mut TestUser, runtime: &Path) {
    let home = user.home.path().to_string_lossy().into_owned();
    user.env.push((
        "XDG_RUNTIME_DIR".into(),
        runtime.to_string_lossy().into_owned(),
    ));
    user.env.push(("HOME".into(), home));
}

fn runtime_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("runtime dir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    d
}

impl Platform {
    fn new() -> Self {
        let server = TestServer::start();
        let mut alice = TestUser::joined(&server, "alice@example.com");
        let runtime = runtime_dir();
        isolate(&mut alice, runtime.path());
        alice.scaffold("acme", "api", "prod");
        let stub = KubeStub::start();
        alice
            .zopp_stdin(
                &with(&["kubeconfig", "set", "kc", "-f", "-"]),
                kubeconfig(stub.port).as_bytes(),
            )
            .assert_success();
        alice
            .zopp_stdin(
                &with(&["secret", "set", "DB_PASSWORD", "-"]),
                CANARY.as_bytes(),
            )
            .assert_success();
        alice
            .zopp(&with(&["secret", "set", "DB_HOST", "db.internal"]))
            .assert_success();
        alice
            .zopp_stdin(&with(&["app", "set", "web", "-f", "-"]), APP.as_bytes())
            .assert_success();
        Self {
            server,
            alice,
            stub,
            runtime,
        }
    }

    /// The per-file directories zopp left in the runtime directory.
    fn leftovers(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.runtime.path().join("zopp")) {
            Ok(d) => d.flatten().map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Sets app `name` with apply command `apply` (a shell script) on top of the web spec.
    fn app_with_command(&self, name: &str, script: &str) {
        let spec = format!(
            "kubeconfig: kc\napply: [sh, -c, {}]\nmanifest: |\n  password: ${{DB_PASSWORD}}\n",
            serde_json::to_string(script).expect("quoted")
        );
        self.alice
            .zopp_stdin(&with(&["app", "set", name, "-f", "-"]), spec.as_bytes())
            .assert_success();
    }
}

/// Asserts no output of `out` holds a secret.
fn clean(out: &TestOutput) {
    for needle in [CANARY, TOKEN] {
        assert!(
            !out.stdout().contains(needle) && !out.stderr().contains(needle),
            "{needle} leaked by {}:\n{}\n{}",
            out.command,
            out.stdout(),
            out.stderr()
        );
    }
}

/// Waits up to `limit` for `cond`, checking every 50 ms.
fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A zopp started in the background, stdout piped.
fn spawn(user: &TestUser, args: &[&str]) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut cmd: Command = user.cmd(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn zopp");
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    (child, out)
}

// ---------- kubeconfigs ----------

#[test]
fn kubeconfigs_are_validated_masked_versioned_and_restorable() {
    let p = Platform::new();
    let a = &p.alice;
    // Refusals name the problem and store nothing.
    for (doc, why) in [
        (
            "apiVersion: v1\nkind: Config\ncontexts: []\n",
            "no `current-context`",
        ),
        (
            "kind: Config\ncurrent-context: gone\ncontexts:\n- name: other\n",
            "current-context 'gone' is not in its `contexts` list",
        ),
        ("a: [", "YAML does not parse"),
    ] {
        a.zopp_stdin(
            &with(&["kubeconfig", "set", "bad", "-f", "-"]),
            doc.as_bytes(),
        )
        .assert_exit_code(2)
        .assert_stderr_contains(why);
    }
    // Masked by default: the structure stays, the token does not.
    let got = a.zopp(&with(&["kubeconfig", "get", "kc"]));
    got.assert_success();
    clean(&got);
    assert!(got.stdout().contains("token: <masked>"), "{}", got.stdout());
    assert!(got
        .stdout()
        .contains(&format!("https://127.0.0.1:{}", p.stub.port)));
    // --show for a writer (alice is admin) prints it byte for byte.
    let shown = a.zopp(&with(&["kubeconfig", "get", "kc", "--show"]));
    assert_eq!(shown.assert_success().stdout(), kubeconfig(p.stub.port));
    // A second version, history, rollback, delete.
    let second = kubeconfig(p.stub.port).replace(
        "current-context: stub",
        "current-context: stub\npreferences: {}",
    );
    a.zopp_stdin(
        &with(&["kubeconfig", "set", "kc", "-f", "-"]),
        second.as_bytes(),
    )
    .assert_success();
    let hist = a.zopp(&with(&["kubeconfig", "history", "kc", "--output", "json"]));
    assert_eq!(
        hist.assert_success().json().as_array().expect("rows").len(),
        2
    );
    a.zopp(&with(&["kubeconfig", "rollback", "kc", "--to", "1"]))
        .assert_success();
    let shown = a.zopp(&with(&["kubeconfig", "get", "kc", "--show"]));
    assert_eq!(shown.assert_success().stdout(), kubeconfig(p.stub.port));
    let list = a.zopp(&with(&["kubeconfig", "list", "--output", "json"]));
    let rows = list.assert_success().json();
    assert_eq!(rows[0]["name"], "kc");
    assert_eq!(rows[0]["version"], 3);
    // Kubeconfigs and apps are not secrets: not listed, not fetchable through `secret`.
    let secrets = a.zopp(&with(&["secret", "list"]));
    assert!(!secrets.assert_success().stdout().contains("kc"));
    a.zopp(&with(&["secret", "get", "kubeconfig=kc"]))
        .assert_exit_code(2);
    a.zopp(&with(&["kubeconfig", "delete", "kc"]))
        .assert_success();
    a.zopp(&with(&["kubeconfig", "get", "kc"]))
        .assert_exit_code(3)
        .assert_stderr_contains("kubeconfig 'kc' not found");
}

// ---------- zopp run --kubeconfig ----------

#[test]
fn run_with_kubeconfig_hands_kubectl_a_private_file_removed_however_things_end() {
    let p = Platform::new();
    let a = &p.alice;
    // The real kubectl reads it.
    let ctx = a.zopp(&with(&[
        "run",
        "--kubeconfig",
        "kc",
        "--",
        "kubectl",
        "config",
        "current-context",
    ]));
    assert_eq!(ctx.assert_success().stdout().trim(), "stub");
    let view = a.zopp(&with(&[
        "run",
        "--kubeconfig",
        "kc",
        "--",
        "kubectl",
        "config",
        "view",
        "--minify",
    ]));
    view.assert_success();
    assert!(view
        .stdout()
        .contains(&format!("server: https://127.0.0.1:{}", p.stub.port)));
    assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());

    // 0600 in a 0700 directory; gone after a normal exit, an error exit and a signal death.
    let modes = a.zopp(&with(&[
        "run",
        "--kubeconfig",
        "kc",
        "--",
        "sh",
        "-c",
        "stat -c %a \"$KUBECONFIG\" \"$(dirname \"$KUBECONFIG\")\"",
    ]));
    assert_eq!(modes.assert_success().stdout(), "600\n700\n");
    a.zopp(&with(&[
        "run",
        "--kubeconfig",
        "kc",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]))
    .assert_exit_code(3);
    assert!(p.leftovers().is_empty());
    a.zopp(&with(&[
        "run",
        "--kubeconfig",
        "kc",
        "--",
        "sh",
        "-c",
        "kill -9 $$",
    ]))
    .assert_exit_code(137);
    assert!(p.leftovers().is_empty());

    // SIGTERM to zopp reaches the child; the file goes when it has ended.
    let script = "echo \"$KUBECONFIG\"; exec sleep 30";
    let (mut child, mut out) = spawn(
        a,
        &with(&["run", "--kubeconfig", "kc", "--", "sh", "-c", script]),
    );
    let mut path = String::new();
    out.read_line(&mut path).expect("path");
    let path = PathBuf::from(path.trim());
    assert!(path.exists());
    signal(child.id(), Signal::SIGTERM).expect("SIGTERM");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(143));
    assert!(!path.exists() && p.leftovers().is_empty());

    // SIGKILL leaves it behind; the next run sweeps it away.
    let script = "echo \"$KUBECONFIG $$\"; exec sleep 30";
    let (mut child, mut out) = spawn(
        a,
        &with(&["run", "--kubeconfig", "kc", "--", "sh", "-c", script]),
    );
    let mut line = String::new();
    out.read_line(&mut line).expect("path and pid");
    let (path, pid) = line.trim().rsplit_once(' ').expect("two fields");
    let path = PathBuf::from(path);
    signal(child.id(), Signal::SIGKILL).expect("SIGKILL zopp");
    child.wait().expect("wait");
    signal(pid.parse().expect("pid"), Signal::SIGKILL).expect("SIGKILL orphan");
    assert!(path.exists(), "a SIGKILLed zopp cannot clean up");
    a.zopp(&with(&["run", "--kubeconfig", "kc", "--", "true"]))
        .assert_success();
    assert!(!path.exists(), "the next run swept it");
    assert!(p.leftovers().is_empty());
}

// ---------- preview and apply ----------

#[test]
fn apply_pipes_the_rendered_manifest_to_kubectl_and_only_kubectl_sees_values() {
    let p = Platform::new();
    let a = &p.alice;
    let preview = a.zopp(&with(&["preview", "web"]));
    preview.assert_success();
    clean(&preview);
    assert!(
        preview
            .stdout()
            .contains("password: <masked:DB_PASSWORD@v1>"),
        "{}",
        preview.stdout()
    );
    assert!(preview.stdout().contains("# never applied"));

    // Without a terminal, apply needs --yes; nothing reached the cluster.
    a.zopp(&with(&["apply", "web"]))
        .assert_exit_code(2)
        .assert_stderr_contains("--yes");
    assert!(p.stub.requests().is_empty());

    let applied = a.zopp(&with(&["apply", "web", "--yes"]));
    applied.assert_success();
    clean(&applied);
    assert!(
        applied.stdout().contains("secret/db created"),
        "{}",
        applied.stdout()
    );
    assert!(applied.stdout().contains("deployment.apps/web created"));
    assert!(p.leftovers().is_empty(), "the apply's kubeconfig is gone");

    // kubectl authenticated with the kubeconfig's token and sent the real values, in the
    // namespace the app sets.
    let reqs = p.stub.requests();
    assert!(
        reqs.iter()
            .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))),
        "{reqs:?}"
    );
    let post = reqs
        .iter()
        .find(|r| r.method == "POST" && r.path.starts_with("/api/v1/namespaces/web/secrets"))
        .expect("the Secret was created in namespace web");
    assert!(post.body.contains(CANARY), "{}", post.body);
    let deploy = reqs
        .iter()
        .find(|r| {
            r.method == "POST"
                && r.path
                    .starts_with("/apis/apps/v1/namespaces/web/deployments")
        })
        .expect("the Deployment was created");
    assert!(deploy.body.contains("db.internal"));

    // Status: who, versions, result.
    let status = a.zopp(&with(&["app", "status", "web", "--output", "json"]));
    let s = status.assert_success().json();
    assert_eq!(s["locked_by"], serde_json::Value::Null);
    let last = &s["last_apply"];
    assert_eq!(last["by"], "alice@example.com");
    assert_eq!(last["exit_code"], 0);
    assert_eq!(last["app_version"], 1);
    let used: Vec<(String, u64)> = last["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .map(|s| {
            (
                s["reference"].as_str().expect("ref").to_string(),
                s["version"].as_u64().expect("v"),
            )
        })
        .collect();
    assert_eq!(
        used,
        vec![
            ("${DB_HOST}".to_string(), 1),
            ("${DB_PASSWORD}".to_string(), 1)
        ]
    );

    // A new secret version shows up in the preview as a version change and a masked diff.
    a.zopp_stdin(
        &with(&["secret", "set", "DB_PASSWORD", "-"]),
        format!("{CANARY}-2").as_bytes(),
    )
    .assert_success();
    let preview = a.zopp(&with(&["preview", "web"]));
    preview.assert_success();
    clean(&preview);
    let text = preview.stdout();
    assert!(text.contains("${DB_PASSWORD}: version 1 -> 2"), "{text}");
    assert!(
        text.contains("-   password: <masked:DB_PASSWORD@v1>"),
        "{text}"
    );
    assert!(
        text.contains("+   password: <masked:DB_PASSWORD@v2>"),
        "{text}"
    );

    // An unresolved reference is an error naming it, before anything runs.
    let before = p.stub.requests().len();
    let broken = APP.replace("${DB_HOST}", "${NO_SUCH_KEY}");
    a.zopp_stdin(&with(&["app", "set", "web", "-f", "-"]), broken.as_bytes())
        .assert_success();
    a.zopp(&with(&["preview", "web"]))
        .assert_exit_code(1)
        .assert_stderr_contains("NO_SUCH_KEY");
    a.zopp(&with(&["apply", "web", "--yes"]))
        .assert_exit_code(1)
        .assert_stderr_contains("NO_SUCH_KEY");
    assert_eq!(p.stub.requests().len(), before, "nothing ran");

    // The apply command's exit code is zopp's, and status records the failure.
    p.app_with_command("failing", "cat >/dev/null; echo nope >&2; exit 3");
    a.zopp(&with(&["apply", "failing", "--yes"]))
        .assert_exit_code(3);
    let s = a.zopp(&with(&["app", "status", "failing", "--output", "json"]));
    assert_eq!(s.assert_success().json()["last_apply"]["exit_code"], 3);
    // A command that echoes its input has its output masked.
    p.app_with_command("echo", "cat");
    let echoed = a.zopp(&with(&["apply", "echo", "--yes"]));
    echoed.assert_success();
    clean(&echoed);
    assert!(
        echoed.stdout().contains("<concealed by zopp>"),
        "{}",
        echoed.stdout()
    );

    // The server never saw the values, the token or the names.
    let logs = p.server.logs();
    let db = p.server.db_path();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    for needle in [CANARY, TOKEN, "DB_PASSWORD", "kubeconfig=kc", "app=web"] {
        assert!(!logs.contains(needle), "{needle} in the server logs");
        assert!(
            !file_contains(&db, needle.as_bytes()),
            "{needle} in the database"
        );
        assert!(
            !file_contains(&wal, needle.as_bytes()),
            "{needle} in the WAL"
        );
    }
}

#[test]
fn concurrent_applies_are_refused_with_the_holder_and_a_dead_holders_lease_expires() {
    let p = Platform::new();
    let a = &p.alice;
    let tmp = tempfile::tempdir().expect("tmp");
    let started = tmp.path().join("started");
    let release = tmp.path().join("release");
    p.app_with_command(
        "slow",
        &format!(
            "cat >/dev/null; touch {}; while [ ! -e {} ]; do sleep 0.05; done",
            started.display(),
            release.display()
        ),
    );
    let (mut first, _out) = spawn(a, &with(&["apply", "slow", "--yes"]));
    wait_for(Duration::from_secs(20), "the first apply to start", || {
        started.exists()
    });
    let second = a.zopp(&with(&["apply", "slow", "--yes"]));
    second
        .assert_exit_code(6)
        .assert_stderr_contains("app 'slow' is locked by alice@example.com since ");
    let status = a.zopp(&with(&["app", "status", "slow", "--output", "json"]));
    assert_eq!(
        status.assert_success().json()["locked_by"],
        "alice@example.com"
    );
    std::fs::write(&release, b"").expect("release");
    assert!(first.wait().expect("wait").success());
    std::fs::remove_file(&started).expect("reset");
    a.zopp(&with(&["apply", "slow", "--yes"])).assert_success();

    // A holder killed with SIGKILL keeps the lease only until its TTL runs out.
    std::fs::remove_file(&release).expect("reset");
    std::fs::remove_file(&started).expect("reset");
    let (mut holder, _out) = spawn(a, &with(&["apply", "slow", "--yes", "--lease-ttl", "5s"]));
    wait_for(Duration::from_secs(20), "the holder to start", || {
        started.exists()
    });
    signal(holder.id(), Signal::SIGKILL).expect("SIGKILL");
    holder.wait().expect("wait");
    // Let its orphaned command end.
    std::fs::write(&release, b"").expect("release");
    a.zopp(&with(&["apply", "slow", "--yes"]))
        .assert_exit_code(6)
        .assert_stderr_contains("locked by alice@example.com");
    let killed_at = Instant::now();
    let mut code = 6;
    wait_for(
        Duration::from_secs(30),
        "the dead holder's lease to expire",
        || {
            code = a.zopp(&with(&["apply", "slow", "--yes"])).code();
            code != 6
        },
    );
    assert_eq!(code, 0);
    assert!(killed_at.elapsed() < Duration::from_secs(30));
    assert!(
        p.leftovers().is_empty(),
        "the dead apply's kubeconfig was swept"
    );

    // An admin may break a live lease at once.
    std::fs::remove_file(&release).expect("reset");
    std::fs::remove_file(&started).expect("reset");
    let (mut holder, _out) = spawn(a, &with(&["apply", "slow", "--yes", "--lease-ttl", "10m"]));
    wait_for(Duration::from_secs(20), "the holder to start", || {
        started.exists()
    });
    signal(holder.id(), Signal::SIGKILL).expect("SIGKILL");
    holder.wait().expect("wait");
    std::fs::write(&release, b"").expect("release");
    a.zopp(&with(&["apply", "slow", "--yes"]))
        .assert_exit_code(6);
    a.zopp(&with(&["apply", "slow", "--yes", "--break-lock"]))
        .assert_success();
}

#[test]
fn readers_preview_writers_apply_and_a_ci_token_applies() {
    let p = Platform::new();
    let a = &p.alice;
    let invite = |role: &str| {
        let out = a.zopp(&[
            "invite", "create", "-w", "acme", "--role", role, "--output", "json",
        ]);
        out.assert_success().json()["code"]
            .as_str()
            .expect("code")
            .to_string()
    };
    let mut reader = TestUser::new(&p.server);
    reader
        .zopp(&["join", &invite("read"), "reader@example.com"])
        .assert_success();
    let rt_reader = runtime_dir();
    isolate(&mut reader, rt_reader.path());
    let mut writer = TestUser::new(&p.server);
    writer
        .zopp(&["join", &invite("write"), "writer@example.com"])
        .assert_success();
    let rt_writer = runtime_dir();
    isolate(&mut writer, rt_writer.path());

    // A reader previews and sees masked kubeconfigs, and can do nothing that reveals or writes.
    let preview = reader.zopp(&with(&["preview", "web"]));
    preview.assert_success();
    clean(&preview);
    let masked = reader.zopp(&with(&["kubeconfig", "get", "kc"]));
    masked.assert_success();
    clean(&masked);
    reader
        .zopp(&with(&["kubeconfig", "get", "kc", "--show"]))
        .assert_exit_code(4)
        .assert_stderr_contains("write role");
    reader
        .zopp(&with(&["run", "--kubeconfig", "kc", "--", "true"]))
        .assert_exit_code(4);
    reader
        .zopp(&with(&["apply", "web", "--yes"]))
        .assert_exit_code(4);
    reader
        .zopp_stdin(&with(&["app", "set", "web2", "-f", "-"]), APP.as_bytes())
        .assert_exit_code(4);
    assert!(p.stub.requests().is_empty());

    // A writer applies, but cannot break a lease.
    let applied = writer.zopp(&with(&["apply", "web", "--yes"]));
    applied.assert_success();
    clean(&applied);
    writer
        .zopp(&with(&["apply", "web", "--yes", "--break-lock"]))
        .assert_exit_code(4)
        .assert_stderr_contains("admin");

    // CI: a service principal's token and nothing else.
    let out = a.zopp(&with(&[
        "principal",
        "create-service",
        "ci",
        "--role",
        "write",
        "--output",
        "json",
    ]));
    let token = out.assert_success().json()["token"]
        .as_str()
        .expect("token")
        .to_string();
    let home = tempfile::tempdir().expect("ci home");
    let rt = runtime_dir();
    let mut cmd = Command::new(bin("zopp"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", rt.path())
        .env("ZOPP_TOKEN", &token)
        .env("ZOPP_SERVER", p.server.url())
        .current_dir(home.path())
        .args(with(&["apply", "web", "--yes"]));
    let ci = TestOutput::run(cmd, None);
    ci.assert_success();
    clean(&ci);
    let posts = p
        .stub
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 4, "two objects, applied by the writer and by CI");
}
