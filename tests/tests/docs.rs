//! Docs that are tested: every ```` ```sh ```` block of README.md and docs/*.md runs, line by
//! line, against a real `zopp-server` in a sandbox, and the test fails naming each command that
//! does not do what the page says. Blocks that cannot run here are marked in the markdown, and
//! the test lists them.
//!
//! # The marking rule (for everyone who writes docs)
//!
//! HTML comments on the lines right before a block's opening fence (blank lines between them
//! are allowed) say how to run it; readers of the rendered page never see them:
//!
//! - `<!-- not-tested: REASON -->` — the block is not run (it needs docker, systemd, a cluster,
//!   helm, a third-party CLI, a second server, a date older than the sandbox…). The test prints
//!   every such block with its reason, so the list stays visible. Use it only for what truly
//!   cannot run in a sandbox; split a block so that the rest still runs.
//! - `<!-- as: NAME -->` — run the block as another person (`bob`), on "their machine": their
//!   own `ZOPP_HOME` and working directory, empty until they `zopp join`.
//! - `<!-- setup: COMMAND -->` — run COMMAND (shell, hidden from readers) before the block, as
//!   the same person; e.g. to create the state an example assumes. Its output is not shown.
//! - `<!-- let: NAME = COMMAND -->` — run COMMAND before the block and use what it prints
//!   (trimmed) for `<NAME>` in the block, e.g. a principal id the example calls `<ID>`.
//! - `<!-- setup bob: … -->`, `<!-- let bob: … -->` — the same, run as another person. All
//!   `let`s run first (each may use the `<NAME>`s before it), then all `setup`s.
//! - `<!-- exit: N -->` — the block's last command is expected to exit with N (an example of
//!   an error); every other command must exit 0.
//!
//! And once per file, anywhere: `<!-- doc-test: bare -->` starts that file with a bare sandbox
//! (a server and nobody joined), for pages that begin with `zopp join`.
//!
//! # The sandbox
//!
//! Each file gets a fresh `zopp-server` (SQLite), and by default `alice@example.com` joined
//! with workspace `acme`, project `api`, environments `dev` and `prod`, and a `zopp.toml` with
//! `[defaults] workspace = "acme", project = "api", environment = "dev"` in her working
//! directory. `zopp` and `zopp-server` on `PATH` are this build's (`zopp-server` bound to the
//! sandbox's database); `./deploy.sh`, `./server`, `./print-config`, `./scripts/deploy.sh`,
//! `./scripts/migrate.sh` and `npm` are stubs that print the names of their environment
//! variables and exit 0. A block runs in one `bash` (so shell variables set in a block live
//! until its end), one command at a time (a line; `\` continues it), with `pipefail`,
//! `ZOPP_SERVER` set, stdin empty and no terminal. `#` lines are comments.
//!
//! Placeholders are filled from what earlier commands of the same file printed: `zwi_…`,
//! `zinv_…`, `zdev_…` and `zopp_…` (a prefix followed by `…`) become the last code or token of
//! that kind printed; `<CODE>` the last `zdev_` code; `<NAME>` a `let:` value; any other
//! `<…ID>` the last UUID printed; and `https://zopp.example.com:50051` the sandbox server's URL.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use zopp_tests::{bin, TestServer};

/// Longest one command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// One fenced shell block and how to run it.
#[derive(Debug, Default)]
struct Block {
    file: String,
    line: usize,
    code: String,
    not_tested: Option<String>,
    as_user: Option<String>,
    /// Hidden commands before the block: (person, or the block's own; command).
    setup: Vec<(Option<String>, String)>,
    /// Placeholder values: (person, or the block's own; name; command printing the value).
    lets: Vec<(Option<String>, String, String)>,
    exit: i32,
}

/// `KEYWORD[ PERSON]: REST` → (person, rest), for `setup` and `let` markers.
fn keyword<'a>(body: &'a str, word: &str) -> Option<(Option<String>, &'a str)> {
    let rest = body.strip_prefix(word)?;
    let (person, rest) = rest.split_once(':')?;
    let person = person.trim();
    if person.contains(char::is_whitespace) {
        return None;
    }
    Some(((!person.is_empty()).then(|| person.to_owned()), rest.trim()))
}

/// Reads the markers on the comment lines before a fence.
fn markers(pending: &[String], b: &mut Block) {
    for c in pending {
        let body = c
            .trim()
            .trim_start_matches("<!--")
            .trim_end_matches("-->")
            .trim();
        if let Some(r) = body.strip_prefix("not-tested:") {
            b.not_tested = Some(r.trim().to_owned());
        } else if let Some(u) = body.strip_prefix("as:") {
            b.as_user = Some(u.trim().to_owned());
        } else if let Some((who, cmd)) = keyword(body, "setup") {
            b.setup.push((who, cmd.to_owned()));
        } else if let Some((who, l)) = keyword(body, "let") {
            let (name, cmd) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("a let marker is NAME = COMMAND: {c}"));
            b.lets
                .push((who, name.trim().to_owned(), cmd.trim().to_owned()));
        } else if let Some(n) = body.strip_prefix("exit:") {
            b.exit = n
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad exit marker {c}"));
        }
    }
}

/// The ```sh blocks of `text`, with their markers.
fn blocks(file: &str, text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let t = line.trim();
        if t.starts_with("<!--") && t.ends_with("-->") {
            pending.push(t.to_owned());
            continue;
        }
        if let Some(lang) = t.strip_prefix("```") {
            let mut code = String::new();
            for (_, l) in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
                code.push_str(l);
                code.push('\n');
            }
            if lang.trim() == "sh" {
                let mut b = Block {
                    file: file.to_owned(),
                    line: i + 1,
                    code,
                    ..Block::default()
                };
                markers(&pending, &mut b);
                out.push(b);
            }
            pending.clear();
            continue;
        }
        if !t.is_empty() {
            pending.clear();
        }
    }
    out
}

/// What earlier blocks printed that later ones refer to.
#[derive(Default)]
struct Seen {
    by_prefix: BTreeMap<&'static str, String>,
    uuid: Option<String>,
}

const PREFIXES: [&str; 4] = ["zwi_", "zinv_", "zdev_", "zopp_"];

fn is_code_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

impl Seen {
    fn scan(&mut self, text: &str) {
        for word in text.split(|c: char| !is_code_char(c)) {
            let word = word.trim_end_matches('.');
            for p in PREFIXES {
                if word.starts_with(p) && word.len() > p.len() + 16 {
                    self.by_prefix.insert(p, word.to_owned());
                }
            }
            for part in word.split(|c: char| !(c.is_ascii_hexdigit() || c == '-')) {
                if part.len() == 36 && part.matches('-').count() == 4 {
                    self.uuid = Some(part.to_owned());
                }
            }
        }
    }

    /// `code` with its placeholders filled.
    fn fill(&self, code: &str, server: &str, lets: &BTreeMap<String, String>) -> String {
        let mut out = code.replace("https://zopp.example.com:50051", server);
        for (name, value) in lets {
            out = out.replace(&format!("<{name}>"), value);
        }
        for p in PREFIXES {
            let mut filled = String::with_capacity(out.len());
            let mut rest = out.as_str();
            while let Some(i) = rest.find(p) {
                filled.push_str(&rest[..i]);
                let word_len = rest[i..]
                    .find(|c: char| !(is_code_char(c) || c == '…'))
                    .unwrap_or(rest.len() - i);
                let word = &rest[i..i + word_len];
                if word.ends_with('…') {
                    match self.by_prefix.get(p) {
                        Some(v) => filled.push_str(v),
                        None => filled.push_str(&format!("{p}NOTHING_PRINTED_YET")),
                    }
                } else {
                    filled.push_str(word);
                }
                rest = &rest[i + word_len..];
            }
            filled.push_str(rest);
            out = filled;
        }
        if let Some(code) = self.by_prefix.get("zdev_") {
            out = out.replace("<CODE>", code);
        }
        if let Some(id) = &self.uuid {
            let mut filled = String::with_capacity(out.len());
            let mut rest = out.as_str();
            while let Some(i) = rest.find('<') {
                filled.push_str(&rest[..i]);
                let end = rest[i..].find('>').map(|e| i + e);
                match end {
                    Some(e)
                        if rest[i + 1..e].ends_with("ID")
                            && rest[i + 1..e]
                                .chars()
                                .all(|c| c.is_ascii_uppercase() || c == '_') =>
                    {
                        filled.push_str(id);
                        rest = &rest[e + 1..];
                    }
                    _ => {
                        filled.push('<');
                        rest = &rest[i + 1..];
                    }
                }
            }
            filled.push_str(rest);
            out = filled;
        }
        out
    }
}

/// A person in the sandbox.
struct Person {
    home: PathBuf,
    cwd: PathBuf,
}

struct Sandbox {
    server: TestServer,
    root: tempfile::TempDir,
    bin: PathBuf,
    people: BTreeMap<String, Person>,
}

const STUB: &str =
    "#!/bin/sh\nenv | cut -d= -f1 | grep -E '^[A-Z_]+$' | sort | tr '\\n' ' '\necho\nexit 0\n";

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("stub dir");
    }
    std::fs::write(path, text).expect("write stub");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

impl Sandbox {
    fn new() -> Self {
        let server = TestServer::start();
        let root = tempfile::tempdir().expect("sandbox");
        let bin_dir = root.path().join("bin");
        std::fs::create_dir_all(&bin_dir).expect("bin");
        std::os::unix::fs::symlink(bin("zopp"), bin_dir.join("zopp")).expect("link zopp");
        write_exec(
            &bin_dir.join("zopp-server"),
            &format!(
                "#!/bin/sh\nZOPP_HOME='{}' ZOPP_DB='{}' exec '{}' \"$@\"\n",
                server.home.path().display(),
                server.db_url,
                bin("zopp-server").display()
            ),
        );
        write_exec(&bin_dir.join("npm"), STUB);
        Self {
            server,
            root,
            bin: bin_dir,
            people: BTreeMap::new(),
        }
    }

    fn person(&mut self, name: &str) -> &Person {
        if !self.people.contains_key(name) {
            let base = self.root.path().join("people").join(name);
            let cwd = base.join("work");
            for stub in [
                "deploy.sh",
                "server",
                "print-config",
                "scripts/deploy.sh",
                "scripts/migrate.sh",
            ] {
                write_exec(&cwd.join(stub), STUB);
            }
            self.people.insert(
                name.to_owned(),
                Person {
                    home: base.join(".zopp"),
                    cwd,
                },
            );
        }
        &self.people[name]
    }

    /// A shell for `who`, in their working directory and environment.
    fn shell(&mut self, who: &str) -> Shell {
        let url = self.server.url();
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let p = self.person(who);
        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc"])
            .current_dir(&p.cwd)
            .env_clear()
            .env("PATH", path)
            .env("HOME", p.home.parent().expect("home has a parent"))
            .env("ZOPP_HOME", &p.home)
            .env("ZOPP_SERVER", &url)
            // The docs' `zopp join` prompts for a passphrase on a terminal; the sandbox has
            // none, so it says the key is stored unencrypted on purpose.
            .env("ZOPP_NO_PASSPHRASE", "1")
            .env("NO_COLOR", "1")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().expect("spawn bash");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sh = Shell { child, lines: rx };
        // Commands' stderr joins stdout so that output reads in order.
        sh.send("exec 2>&1; set -o pipefail");
        sh
    }

    /// Runs `script` (hidden setup) as `who` in a shell of its own.
    fn run(&mut self, who: &str, script: &str) -> (i32, String) {
        let mut sh = self.shell(who);
        sh.command(script)
    }

    /// alice joined, acme/api/{dev,prod}, a zopp.toml.
    fn standard(&mut self) {
        let invite = self.server.invite();
        let script = format!(
            "zopp join '{invite}' alice@example.com >/dev/null 2>&1\n\
             zopp workspace create acme\n\
             zopp project create api -w acme\n\
             zopp environment create dev -w acme -p api\n\
             zopp environment create prod -w acme -p api\n\
             printf '[defaults]\\nworkspace = \"acme\"\\nproject = \"api\"\\nenvironment = \"dev\"\\n' > zopp.toml\n"
        );
        let (code, text) = self.run("alice", &script);
        assert_eq!(code, 0, "sandbox setup failed:\n{text}");
    }
}

/// A running `bash` fed one command at a time.
struct Shell {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

/// Printed after each command, with its exit status: never part of real output.
const SENTINEL: &str = "__zopp_doc_test_exit__";

impl Shell {
    fn send(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        let _ = stdin.write_all(text.as_bytes());
        let _ = stdin.write_all(b"\n");
        let _ = stdin.flush();
    }

    /// Runs one command; returns its exit status (-2 on timeout) and what it printed.
    fn command(&mut self, cmd: &str) -> (i32, String) {
        // A group, so that variables and `export`s stay in this shell; stdin is empty.
        self.send(&format!(
            "{{ {cmd}\n}} </dev/null\nprintf '\\n{SENTINEL} %s\\n' \"$?\""
        ));
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let mut out = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(code) = line.strip_prefix(SENTINEL) {
                        let code = code.trim().parse().unwrap_or(-1);
                        // The sentinel's own leading newline.
                        if out.ends_with('\n') {
                            out.pop();
                        }
                        return (code, out);
                    }
                    out.push_str(&line);
                    out.push('\n');
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return (-3, format!("{out}(the shell exited)"));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = zopp_tests::signal_group(
                        self.child.id(),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    return (-2, format!("{out}(timed out after {COMMAND_TIMEOUT:?})"));
                }
            }
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = zopp_tests::signal_group(self.child.id(), nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The commands of a block: one per line, `\` joining continued lines, comments left out.
fn commands(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in code.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            current.push_str(head.trim_end());
            current.push(' ');
            continue;
        }
        current.push_str(t);
        out.push(std::mem::take(&mut current));
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

/// The markdown files under test: README.md and docs/*.md, in name order.
fn files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    let mut all = vec![root.join("README.md")];
    all.extend(docs);
    all
}

#[test]
fn marking_rule_parses() {
    let md = "text\n\n<!-- not-tested: needs docker -->\n```sh\ndocker run x\n```\n\
              <!-- as: bob -->\n<!-- setup: zopp secret set K v -->\n<!-- let bob: ID = echo x -->\n\n```sh\nzopp join zwi_x… b@e\n```\n\
              ```toml\nx = 1\n```\n<!-- exit: 3 -->\n```sh\nzopp secret get NOPE\n```\n";
    let b = blocks("t.md", md);
    assert_eq!(b.len(), 3);
    assert_eq!(b[0].not_tested.as_deref(), Some("needs docker"));
    assert_eq!(b[0].line, 4);
    assert_eq!(b[1].as_user.as_deref(), Some("bob"));
    assert_eq!(b[1].setup, [(None, "zopp secret set K v".to_owned())]);
    assert_eq!(
        b[1].lets,
        [(Some("bob".to_owned()), "ID".to_owned(), "echo x".to_owned())]
    );
    assert_eq!((b[2].exit, b[2].not_tested.is_none()), (3, true));

    let none = BTreeMap::new();
    let lets = BTreeMap::from([("ID".to_owned(), "the-id".to_owned())]);
    let mut seen = Seen::default();
    seen.scan("zwi_ABCDEFGHIJKLMNOPQRSTUVWXYZ.AQAB\nid 6f1c2a36-6a0b-4c3e-9d0e-2f5b7a1e9c11\n");
    assert_eq!(
        seen.fill("zopp join zwi_TOByhzq1… bob@example.com", "http://s", &none),
        "zopp join zwi_ABCDEFGHIJKLMNOPQRSTUVWXYZ.AQAB bob@example.com"
    );
    assert_eq!(
        seen.fill("zopp invite revoke <INVITE_ID> -w acme", "http://s", &none),
        "zopp invite revoke 6f1c2a36-6a0b-4c3e-9d0e-2f5b7a1e9c11 -w acme"
    );
    assert_eq!(
        seen.fill(
            "export ZOPP_SERVER=https://zopp.example.com:50051",
            "http://s",
            &none
        ),
        "export ZOPP_SERVER=http://s"
    );
    assert_eq!(
        seen.fill(
            "zopp principal rename <ID> laptop < /dev/null",
            "http://s",
            &lets
        ),
        "zopp principal rename the-id laptop < /dev/null"
    );
    assert_eq!(
        commands("# c\nzopp a \\\n  --b\n\nzopp c # d\n"),
        ["zopp a --b", "zopp c # d"]
    );
}

#[test]
fn every_shell_block_of_the_docs_runs() {
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    let mut ran = 0;
    for path in files() {
        let text = std::fs::read_to_string(&path).expect("read markdown");
        let name = path
            .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .unwrap_or(&path)
            .display()
            .to_string();
        let file_blocks = blocks(&name, &text);
        if file_blocks.iter().all(|b| b.not_tested.is_some()) {
            skipped.extend(file_blocks.iter().map(|b| {
                format!(
                    "{}:{}: {}",
                    b.file,
                    b.line,
                    b.not_tested.clone().unwrap_or_default()
                )
            }));
            continue;
        }
        let mut sandbox = Sandbox::new();
        if !text.contains("<!-- doc-test: bare -->") {
            sandbox.standard();
        }
        let mut seen = Seen::default();
        for b in &file_blocks {
            if let Some(reason) = &b.not_tested {
                skipped.push(format!("{}:{}: {reason}", b.file, b.line));
                continue;
            }
            let who = b.as_user.clone().unwrap_or_else(|| "alice".to_owned());
            let url = sandbox.server.url();
            let mut sh = sandbox.shell(&who);
            let mut lets = BTreeMap::new();
            for (person, name, cmd) in &b.lets {
                let cmd = seen.fill(cmd, &url, &lets);
                let (code, out) = match person {
                    Some(p) => sandbox.shell(p).command(&cmd),
                    None => sh.command(&cmd),
                };
                if code != 0 {
                    failures.push(format!(
                        "{}:{}: let {name} = `{cmd}` exited {code}:\n{out}",
                        b.file, b.line
                    ));
                }
                lets.insert(name.clone(), out.trim().to_owned());
            }
            for (person, cmd) in &b.setup {
                let cmd = seen.fill(cmd, &url, &lets);
                let (code, out) = match person {
                    Some(p) => sandbox.shell(p).command(&cmd),
                    None => sh.command(&cmd),
                };
                if code != 0 {
                    failures.push(format!(
                        "{}:{}: setup `{cmd}` exited {code}:\n{out}",
                        b.file, b.line
                    ));
                }
            }
            ran += 1;
            let cmds = commands(&b.code);
            for (i, cmd) in cmds.iter().enumerate() {
                let filled = seen.fill(cmd, &url, &lets);
                let (code, out) = sh.command(&filled);
                seen.scan(&out);
                let want = if i + 1 == cmds.len() { b.exit } else { 0 };
                if code != want {
                    failures.push(format!(
                        "{}:{}: `{filled}` exited {code}, expected {want} (as {who}):\n{out}",
                        b.file, b.line
                    ));
                    break;
                }
            }
        }
    }
    eprintln!("docs: {ran} blocks ran, {} not tested:", skipped.len());
    for s in &skipped {
        eprintln!("  not tested: {s}");
    }
    assert!(
        failures.is_empty(),
        "{} doc block(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
