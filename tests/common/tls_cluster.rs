//! A throwaway PostgreSQL cluster with `ssl=on`, SCRAM-SHA-256 passwords only, and a server
//! certificate for `localhost` (not 127.0.0.1) issued by a CA generated here.
//!
//! Used by `tests/tls.rs` and, through `#[path]`, by `benches/reconnect.rs`: so it depends on
//! nothing else in `tests/common` (only std, `rcgen` and `uuid`).
#![allow(dead_code)] // each user takes a different part

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// The `postgres` user's password (the only role; pg_hba asks for SCRAM on 127.0.0.1).
pub const PASSWORD: &str = "tls-test-password";

/// A running cluster; dropping it stops the server and deletes its directory.
pub struct TlsCluster {
    /// Holds the data directory, the CA, the socket and the log.
    root: PathBuf,
    data: PathBuf,
    pg_ctl: PathBuf,
    /// Listens on 127.0.0.1 only.
    pub port: u16,
    /// The CA certificate (PEM file), for `DATABASE_CA_CERT` or `sslrootcert`.
    pub ca_pem: PathBuf,
    /// The same CA certificate, DER, for a rustls root store.
    pub ca_der: Vec<u8>,
}

impl TlsCluster {
    /// Starts a cluster, or `None` when PostgreSQL's server tools (`initdb`, `pg_ctl`) are not
    /// installed. Panics if they are but the cluster does not start.
    pub fn start() -> Option<Self> {
        let (initdb, pg_ctl) = (pg_bin("initdb")?, pg_bin("pg_ctl")?);
        let root =
            std::env::temp_dir().join(format!("tasks-tls-{}", uuid::Uuid::now_v7().simple()));
        let data = root.join("data");
        std::fs::create_dir_all(&root).unwrap();

        // A CA, and a server certificate for "localhost" only (not 127.0.0.1).
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tasks-api test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let mut server_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
        let ca_pem = root.join("ca.pem");
        std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
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
        std::fs::write(data.join("server.crt"), server_cert.pem()).unwrap();
        std::fs::write(data.join("server.key"), server_key.serialize_pem()).unwrap();
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
            ca_der: ca_cert.der().to_vec(),
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
