//! A throwaway PostgreSQL cluster with `ssl=on`, SCRAM-SHA-256 passwords only, and a server
//! certificate for `localhost` (not 127.0.0.1) issued by a CA generated here: either directly by
//! a P-256 CA ([`Chain::Direct`]), or Neon-shaped through a P-384 intermediate that signs with
//! ecdsa-with-SHA384 ([`Chain::Intermediate`]). [`ServerChain`] also serves a TLS test proxy.
//!
//! Used by `tests/tls.rs`, `tests/tls_neon.rs` and, through `#[path]`, by
//! `benches/reconnect.rs`: so it depends on nothing else in `tests/common` (only std, `rcgen`
//! and `uuid`).
#![allow(dead_code)] // each user takes a different part

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, SignatureAlgorithm,
};

/// The `postgres` user's password (the only role; pg_hba asks for SCRAM on 127.0.0.1).
pub const PASSWORD: &str = "tls-test-password";

/// The curve of a generated key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    /// The key type; a certificate's signature algorithm is its *issuer's* (rcgen signs with the
    /// issuer key's algorithm), so a P-384 issuer signs with ecdsa-with-SHA384 whatever the leaf.
    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            Self::P256 => &PKCS_ECDSA_P256_SHA256,
            Self::P384 => &PKCS_ECDSA_P384_SHA384,
        }
    }
}

/// The shape of the server's certificate chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// A P-256 CA signs the leaf (P-256) with ecdsa-with-SHA256: channel binding hashes with
    /// SHA-256.
    Direct,
    /// Neon's public shape: a P-384 root signs a P-384 intermediate, which signs the leaf (key on
    /// `leaf`) with ecdsa-with-SHA384, so tls-server-end-point hashes with SHA-384 (RFC 5929
    /// §4.1). The server sends leaf + intermediate; clients trust only the root.
    Intermediate { leaf: Curve },
}

/// A generated root CA and the server side of a chain below it, for `localhost` only.
pub struct ServerChain {
    /// The root CA (what a client trusts), PEM and DER.
    pub root_pem: String,
    pub root_der: Vec<u8>,
    /// What the server sends: the leaf first, then any intermediate (DER each, and one PEM).
    pub chain_der: Vec<Vec<u8>>,
    pub chain_pem: String,
    /// The leaf's private key: PKCS#8, PEM and DER.
    pub key_pem: String,
    pub key_der: Vec<u8>,
}

impl ServerChain {
    pub fn generate(chain: Chain) -> Self {
        let (root_curve, intermediate) = match chain {
            Chain::Direct => (Curve::P256, None),
            Chain::Intermediate { leaf } => (Curve::P384, Some((Curve::P384, leaf))),
        };
        let root_key = KeyPair::generate_for(root_curve.algorithm()).unwrap();
        let root_params = ca_params("tasks-api test CA", BasicConstraints::Unconstrained);
        let root_cert = root_params.self_signed(&root_key).unwrap();
        let root = Issuer::new(root_params, root_key);
        let leaf_curve = intermediate.map_or(Curve::P256, |(_, leaf)| leaf);
        let leaf_key = KeyPair::generate_for(leaf_curve.algorithm()).unwrap();
        let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let mut chain_der = Vec::new();
        let mut chain_pem = String::new();
        match intermediate {
            None => {
                let leaf = leaf_params.signed_by(&leaf_key, &root).unwrap();
                chain_der.push(leaf.der().to_vec());
                chain_pem.push_str(&leaf.pem());
            }
            Some((intermediate_curve, _)) => {
                let key = KeyPair::generate_for(intermediate_curve.algorithm()).unwrap();
                let params = ca_params(
                    "tasks-api test intermediate",
                    BasicConstraints::Constrained(0),
                );
                let cert = params.signed_by(&key, &root).unwrap();
                let intermediate = Issuer::new(params, key);
                let leaf = leaf_params.signed_by(&leaf_key, &intermediate).unwrap();
                chain_der.push(leaf.der().to_vec());
                chain_der.push(cert.der().to_vec());
                chain_pem.push_str(&leaf.pem());
                chain_pem.push_str(&cert.pem());
            }
        }
        Self {
            root_pem: root_cert.pem(),
            root_der: root_cert.der().to_vec(),
            chain_der,
            chain_pem,
            key_pem: leaf_key.serialize_pem(),
            key_der: leaf_key.serialize_der(),
        }
    }

    /// The leaf certificate (DER), whose hash is the tls-server-end-point channel binding.
    pub fn leaf_der(&self) -> &[u8] {
        &self.chain_der[0]
    }
}

fn ca_params(name: &str, constraints: BasicConstraints) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A running cluster; dropping it stops the server and deletes its directory.
pub struct TlsCluster {
    /// Holds the data directory, the CA, the socket and the log.
    root: PathBuf,
    data: PathBuf,
    pg_ctl: PathBuf,
    /// Listens on 127.0.0.1 only.
    pub port: u16,
    /// The root CA certificate (PEM file), for `DATABASE_CA_CERT` or `sslrootcert`.
    pub ca_pem: PathBuf,
    /// The same CA certificate, DER, for a rustls root store.
    pub ca_der: Vec<u8>,
    /// The server's leaf certificate, DER (what tls-server-end-point hashes).
    pub leaf_der: Vec<u8>,
}

impl TlsCluster {
    /// Starts a cluster with a [`Chain::Direct`] certificate, or `None` when PostgreSQL's server
    /// tools (`initdb`, `pg_ctl`) are not installed. Panics if they are but the cluster does not
    /// start.
    pub fn start() -> Option<Self> {
        Self::start_with(Chain::Direct)
    }

    /// [`TlsCluster::start`] with the certificate chain `chain` (PostgreSQL sends the whole
    /// chain: `ssl_cert_file` holds the leaf, then the intermediate).
    pub fn start_with(chain: Chain) -> Option<Self> {
        let (initdb, pg_ctl) = (pg_bin("initdb")?, pg_bin("pg_ctl")?);
        let root =
            std::env::temp_dir().join(format!("tasks-tls-{}", uuid::Uuid::now_v7().simple()));
        let data = root.join("data");
        std::fs::create_dir_all(&root).unwrap();

        let certs = ServerChain::generate(chain);
        let ca_pem = root.join("ca.pem");
        std::fs::write(&ca_pem, &certs.root_pem).unwrap();
        std::fs::write(root.join("pwfile"), PASSWORD).unwrap();
        chown_to_postgres(&root);
        let out = as_postgres(
            &initdb,
            &[
                "-D",
                path(&data),
                "-U",
                "postgres",
                "--pwfile",
                path(&root.join("pwfile")),
                "-A",
                "scram-sha-256",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(data.join("server.crt"), &certs.chain_pem).unwrap();
        std::fs::write(data.join("server.key"), &certs.key_pem).unwrap();
        let port = free_port();
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            path(&root)
        );
        std::fs::write(data.join("postgresql.auto.conf"), conf).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        chown_to_postgres(&root);
        let log = root.join("log");
        let out = as_postgres(
            &pg_ctl,
            &[
                "-D",
                path(&data),
                "-l",
                path(&log),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Some(Self {
            root,
            data,
            pg_ctl,
            port,
            ca_pem,
            ca_der: certs.root_der.clone(),
            leaf_der: certs.leaf_der().to_vec(),
        })
    }

    /// `postgres://postgres:<password>@<host>:<port>/postgres?<query>`.
    pub fn url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@{host}:{}/postgres?{query}",
            self.port
        )
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = as_postgres(
            &self.pg_ctl,
            &["-D", path(&self.data), "-m", "immediate", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// PostgreSQL's server tools: the newest /usr/lib/postgresql/*/bin (Debian), else PATH.
pub fn pg_bin(tool: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .collect();
    dirs.sort();
    dirs.reverse();
    let path = std::env::var("PATH").unwrap_or_default();
    dirs.into_iter()
        .chain(std::env::split_paths(&path))
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

fn chown_to_postgres(dir: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres", path(dir)])
            .status()
            .unwrap();
        assert!(status.success(), "chown -R postgres {}", dir.display());
    }
}

/// PostgreSQL refuses to run as root: run its tools as the `postgres` user when we are root.
fn as_postgres(program: &Path, args: &[&str]) -> std::process::Output {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.args(args).output().expect("run a PostgreSQL tool")
}

/// A free TCP port on 127.0.0.1 (the OS picks it; the listener is closed before use).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
