//! Crash durability: the server is killed with SIGKILL in the middle of concurrent signed writes,
//! cycle after cycle (on PostgreSQL the database crashes too, every other cycle), and after every
//! restart:
//!
//! - every write a client saw acknowledged (exit 0) is there, with its value, and verifies when
//!   read back through the real client (`zopp secret export` checks every version signature);
//! - a write that was not acknowledged is either wholly there or wholly absent: each write sets
//!   two secrets in one call, and finding one without the other is a half-visible write;
//! - nothing appears that no client wrote;
//! - `zopp audit verify` passes (the chain, every actor signature and the pinned head), and
//!   every version present has its `secret.write` audit entry and no entry lacks its version.
//!
//! Writers are separate users (their own homes, so no two `zopp` processes share a key file or
//! a pin file) granted write on the environment; the admin reads everything back.
//!
//! The PostgreSQL test owns a private instance ([`PrivateCluster`]) to crash it without
//! disturbing other tests, and runs in the `pg-outage` nextest group, one at a time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zopp_tests::pg::PrivateCluster;
use zopp_tests::{ServerOptions, TestServer, TestUser};

const ENV: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "dev"];
/// Kill cycles per backend.
const CYCLES: usize = 20;
/// Concurrent writers.
const WRITERS: usize = 3;
/// A cycle's kill comes after this many acknowledged writes in the cycle (varied per cycle, so
/// the kill lands at different points of the writers' calls).
const ACKS_BEFORE_KILL: [usize; 4] = [1, 3, 2, 5];
/// Upper bound on one cycle's wait for acknowledgements.
const CYCLE_DEADLINE: Duration = Duration::from_secs(20);

fn with_env<'a>(head: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend_from_slice(&ENV);
    v
}

/// One write: two secrets set in one call, with one value.
struct Attempt {
    names: [String; 2],
    value: String,
    acknowledged: bool,
}

/// Every write attempted so far, acknowledged or not.
#[derive(Default)]
struct Ledger {
    attempts: Mutex<Vec<Attempt>>,
    acks: AtomicUsize,
}

/// Joins a user and grants it write on acme/api/dev, vouched for by fingerprint.
fn writer(server: &TestServer, admin: &TestUser, n: usize) -> TestUser {
    let email = format!("writer{n}@example.com");
    let u = TestUser::joined(server, &email);
    let fp = u.zopp(&["principal", "fingerprint"]);
    let fp = fp.assert_success().stdout().trim().to_owned();
    admin
        .zopp(&with_env(&[
            "permission",
            "set",
            "--user",
            &email,
            "--role",
            "write",
            "--fingerprint",
            &fp,
        ]))
        .assert_success();
    u
}

/// Writes until `stop` is set or a write fails (the server is gone); records every attempt.
fn write_loop(user: &TestUser, w: usize, cycle: usize, ledger: &Ledger, stop: &AtomicBool) {
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let value = format!("c{cycle}-w{w}-{i}-{:016x}", rand::random::<u64>());
        let names = [
            format!("C{cycle}_W{w}_{i}_A"),
            format!("C{cycle}_W{w}_{i}_B"),
        ];
        let a = format!("{}={value}", names[0]);
        let b = format!("{}={value}", names[1]);
        let out = user.zopp(&with_env(&["secret", "set", &a, &b]));
        let acknowledged = out.code() == 0;
        if !acknowledged {
            // The only failure expected is losing the server (or its database).
            assert!(
                [1, 7].contains(&out.code()),
                "a write failed other than by losing the server: {}",
                out.stderr()
            );
        }
        ledger.attempts.lock().expect("ledger").push(Attempt {
            names,
            value,
            acknowledged,
        });
        if !acknowledged {
            return;
        }
        ledger.acks.fetch_add(1, Ordering::SeqCst);
    }
}

/// Everything in acme/api/dev as the admin's client reads and verifies it.
fn read_back(admin: &TestUser) -> BTreeMap<String, String> {
    let out = admin.zopp(&with_env(&["secret", "export", "--format", "json"]));
    let json = out.assert_success().json();
    json.as_object()
        .expect("export is a JSON object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_owned()))
        .collect()
}

/// The checks after a restart; returns (acknowledged, unacknowledged present, absent).
fn check(admin: &TestUser, ledger: &Ledger, cycle: usize) -> (usize, usize, usize) {
    let state = read_back(admin);
    let attempts = ledger.attempts.lock().expect("ledger");
    let (mut acked, mut landed, mut lost) = (0, 0, 0);
    let mut expected = 0;
    for a in attempts.iter() {
        let found: Vec<Option<&String>> = a.names.iter().map(|n| state.get(n)).collect();
        for v in found.iter().flatten() {
            assert_eq!(
                **v, a.value,
                "cycle {cycle}: {} holds a value nobody wrote",
                a.names[0]
            );
        }
        match (found[0].is_some(), found[1].is_some(), a.acknowledged) {
            (true, true, true) => acked += 1,
            (true, true, false) => landed += 1,
            (false, false, false) => lost += 1,
            (false, false, true) => panic!(
                "cycle {cycle}: acknowledged write of {} and {} is missing",
                a.names[0], a.names[1]
            ),
            _ => panic!(
                "cycle {cycle}: half of one write is visible: {} {:?}, {} {:?}",
                a.names[0], found[0], a.names[1], found[1]
            ),
        }
        if found[0].is_some() {
            expected += 2;
        }
    }
    assert_eq!(
        state.len(),
        expected,
        "cycle {cycle}: secrets appeared that no client wrote"
    );
    admin
        .zopp(&["audit", "verify", "-w", "acme"])
        .assert_success();
    // A version and its audit entry commit together: neither survives alone.
    let audit = admin.zopp(&[
        "audit",
        "list",
        "-w",
        "acme",
        "--action",
        "secret.write",
        "--output",
        "json",
    ]);
    let audited = audit
        .assert_success()
        .json()
        .as_array()
        .expect("audit rows")
        .iter()
        .filter(|r| r["result"] == "ok")
        .count();
    assert_eq!(
        audited,
        state.len(),
        "cycle {cycle}: {} secret versions but {audited} audited writes",
        state.len()
    );
    (acked, landed, lost)
}

/// Runs the cycles; `crash` kills the server (and, on PostgreSQL, the database) and `recover`
/// brings everything back.
fn cycles(
    server: &mut TestServer,
    admin: &TestUser,
    writers: &[TestUser],
    mut crash: impl FnMut(&mut TestServer, usize),
    mut recover: impl FnMut(&mut TestServer),
) {
    let ledger = Ledger::default();
    let started = Instant::now();
    for cycle in 0..CYCLES {
        let stop = AtomicBool::new(false);
        let acks_at_start = ledger.acks.load(Ordering::SeqCst);
        let want = ACKS_BEFORE_KILL[cycle % ACKS_BEFORE_KILL.len()];
        let enough = std::thread::scope(|s| {
            for (w, user) in writers.iter().enumerate() {
                let (ledger, stop) = (&ledger, &stop);
                s.spawn(move || write_loop(user, w, cycle, ledger, stop));
            }
            let deadline = Instant::now() + CYCLE_DEADLINE;
            let mut enough = true;
            while ledger.acks.load(Ordering::SeqCst) < acks_at_start + want {
                if Instant::now() > deadline {
                    enough = false;
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            // Writers are mid-call now: some requests are in flight, some committing.
            crash(server, cycle);
            stop.store(true, Ordering::SeqCst);
            enough
        });
        assert!(
            enough,
            "cycle {cycle}: fewer than {want} acknowledged writes within {CYCLE_DEADLINE:?}; server log:\n{}",
            server.logs()
        );
        recover(server);
        let (acked, landed, lost) = check(admin, &ledger, cycle);
        eprintln!(
            "cycle {cycle}: {acked} acknowledged writes intact, {landed} unacknowledged landed whole, {lost} absent ({:?})",
            started.elapsed()
        );
    }
    let total = ledger.attempts.lock().expect("ledger").len();
    assert!(
        ledger.acks.load(Ordering::SeqCst) >= CYCLES,
        "{total} attempts"
    );
}

/// Whether the private cluster accepts connections.
fn db_up(cluster: &PrivateCluster) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", cluster.port())).is_ok()
}

/// SIGKILL by system call: no drain, no destructor, no flush.
fn sigkill(server: &TestServer) {
    let pid = server.pid().expect("server running");
    zopp_tests::signal(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL the server");
}

fn setup(server: &TestServer) -> (TestUser, Vec<TestUser>) {
    let admin = TestUser::joined(server, "admin@example.com");
    admin.scaffold("acme", "api", "dev");
    let writers = (0..WRITERS).map(|n| writer(server, &admin, n)).collect();
    // The admin pins the audit head once before the first crash.
    admin
        .zopp(&["audit", "verify", "-w", "acme"])
        .assert_success();
    (admin, writers)
}

#[test]
fn sqlite_keeps_every_acknowledged_write_across_sigkill() {
    let mut server = TestServer::start();
    let (admin, writers) = setup(&server);
    cycles(
        &mut server,
        &admin,
        &writers,
        |server, _| sigkill(server),
        |server| server.restart(),
    );
}

#[test]
fn postgres_keeps_every_acknowledged_write_across_server_and_database_crashes() {
    let cluster = Arc::new(PrivateCluster::start());
    let mut server = TestServer::start_with(ServerOptions {
        db_url: Some(cluster.url()),
        ..ServerOptions::default()
    });
    let (admin, writers) = setup(&server);
    let db = cluster.clone();
    cycles(
        &mut server,
        &admin,
        &writers,
        // The server dies every cycle; the database every other one, alternating which goes
        // first (the database under a live server, or the server, then the database), so
        // each crash order happens five times within the time budget.
        move |server, cycle| match cycle % 4 {
            0 => {
                db.crash();
                sigkill(server);
            }
            2 => {
                sigkill(server);
                db.crash();
            }
            _ => sigkill(server),
        },
        |server| {
            if !db_up(&cluster) {
                cluster.start_again();
            }
            server.restart();
        },
    );
}
