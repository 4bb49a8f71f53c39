//! Throwaway X.509 material for TLS tests, made with the `openssl` command: a CA, an unrelated
//! CA, server certificates for `localhost`/`127.0.0.1` and for another name, and client
//! certificates from each CA. Everything lives in a temporary directory and expires in two days.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory of PEM files (see the module documentation for what it holds).
pub struct TestCerts {
    dir: tempfile::TempDir,
}

/// A certificate and its private key.
#[derive(Clone, Debug)]
pub struct Pair {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

impl TestCerts {
    /// Makes the whole set.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("certificate dir");
        let c = Self { dir };
        c.make_ca("ca", "zopp test CA");
        c.make_ca("other-ca", "unrelated CA");
        c.leaf(
            "server",
            "ca",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        c.leaf(
            "wrong-name",
            "ca",
            "elsewhere.example",
            "subjectAltName=DNS:elsewhere.example\nextendedKeyUsage=serverAuth\n",
        );
        c.leaf(
            "client",
            "ca",
            "zopp client",
            "extendedKeyUsage=clientAuth\n",
        );
        c.leaf(
            "stranger",
            "other-ca",
            "stranger",
            "extendedKeyUsage=clientAuth\n",
        );
        c
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA that signed `server`, `wrong-name` and `client`.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// A CA that signed nothing the server uses (only `stranger`).
    pub fn other_ca(&self) -> PathBuf {
        self.path("other-ca.pem")
    }

    /// The server certificate for `localhost` and `127.0.0.1`.
    pub fn server(&self) -> Pair {
        self.pair("server")
    }

    /// A server certificate for `elsewhere.example` only.
    pub fn wrong_name(&self) -> Pair {
        self.pair("wrong-name")
    }

    /// A client certificate from [`TestCerts::ca`].
    pub fn client(&self) -> Pair {
        self.pair("client")
    }

    /// A client certificate from [`TestCerts::other_ca`].
    pub fn stranger(&self) -> Pair {
        self.pair("stranger")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pair(&self, name: &str) -> Pair {
        Pair {
            cert: self.path(&format!("{name}.pem")),
            key: self.path(&format!("{name}.key")),
        }
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn make_ca(&self, name: &str, cn: &str) {
        let (key, pem, subj) = (
            format!("{name}.key"),
            format!("{name}.pem"),
            format!("/CN={cn}"),
        );
        let mut a = vec!["req", "-x509"];
        a.extend_from_slice(&EC);
        a.extend_from_slice(&["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
        a.extend_from_slice(&["-addext", "basicConstraints=critical,CA:TRUE"]);
        a.extend_from_slice(&["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        self.openssl(&a);
    }

    fn leaf(&self, name: &str, ca: &str, cn: &str, extensions: &str) {
        let (key, csr, pem, ext, subj) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
            format!("/CN={cn}"),
        );
        let mut a = vec!["req"];
        a.extend_from_slice(&EC);
        a.extend_from_slice(&["-keyout", &key, "-out", &csr, "-subj", &subj]);
        self.openssl(&a);
        std::fs::write(
            self.path(&ext),
            format!("basicConstraints=CA:FALSE\n{extensions}"),
        )
        .expect("write extensions");
        let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
}

impl Default for TestCerts {
    fn default() -> Self {
        Self::new()
    }
}
