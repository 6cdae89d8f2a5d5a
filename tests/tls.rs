//! Verified TLS to PostgreSQL: a throwaway PostgreSQL with `ssl=on`, SCRAM passwords and a
//! certificate issued (for `localhost` only) by a CA generated here.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::tools::{find, free_port};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tasks_shared::config::DatabaseSettings;
use tasks_shared::db::{Database, DbError};

const PASSWORD: &str = "tls-test-password";

struct TlsPostgres {
    data: PathBuf,
    port: u16,
    ca_pem: PathBuf,
    pg_ctl: PathBuf,
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = as_postgres(
            &self.pg_ctl,
            &["-D", path(&self.data), "-m", "immediate", "stop"],
        );
        let _ = std::fs::remove_dir_all(self.data.parent().unwrap());
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// PostgreSQL refuses to run as root: run its tools as the `postgres` user when we are root.
fn as_postgres(program: &Path, args: &[&str]) -> std::process::Output {
    let root = unsafe_is_root();
    let mut command = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.args(args).output().expect("run a PostgreSQL tool")
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

fn pg_bin(tool: &str) -> Option<PathBuf> {
    let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    let mut dirs: Vec<PathBuf> = versions
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .collect();
    dirs.sort();
    dirs.into_iter()
        .rev()
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .or_else(|| find(tool))
}

fn start_tls_postgres() -> Option<TlsPostgres> {
    let (Some(initdb), Some(pg_ctl)) = (pg_bin("initdb"), pg_bin("pg_ctl")) else {
        find("initdb");
        return None;
    };
    let root = std::env::temp_dir().join(format!("tasks-tls-{}", uuid::Uuid::now_v7().simple()));
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
    if unsafe_is_root() {
        Command::new("chown")
            .args(["-R", "postgres", path(&root)])
            .status()
            .unwrap();
    }
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
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        data.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    if unsafe_is_root() {
        Command::new("chown")
            .args(["-R", "postgres", path(&root)])
            .status()
            .unwrap();
    }
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
    Some(TlsPostgres {
        data,
        port,
        ca_pem,
        pg_ctl,
    })
}

fn settings(ca_cert: Option<&Path>) -> DatabaseSettings {
    DatabaseSettings {
        pool_size: 1,
        timeout: Duration::from_secs(3),
        ca_cert: ca_cert.map(|p| path(p).to_owned()),
    }
}

/// Whether the session is encrypted, as the server sees it.
async fn session_ssl(url: &str, ca: Option<&Path>) -> Result<bool, DbError> {
    let db = Database::new(url, &settings(ca)).expect("config");
    let rows = db
        .query(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(rows[0].get(0))
}

#[tokio::test]
async fn verified_tls_accepts_the_trusted_ca_and_refuses_the_rest() {
    let Some(pg) = start_tls_postgres() else {
        return;
    };
    let port = pg.port;
    let url = |host: &str, query: &str| {
        format!("postgres://postgres:{PASSWORD}@{host}:{port}/postgres?{query}")
    };

    // Trusted CA (DATABASE_CA_CERT), right host name, SCRAM with channel binding, as on Neon.
    let neon_like = url("localhost", "sslmode=require&channel_binding=require");
    assert!(session_ssl(&neon_like, Some(&pg.ca_pem)).await.unwrap());
    // The CA named in the URL, libpq style, with verify-full.
    let libpq_style = url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", path(&pg.ca_pem)),
    );
    assert!(session_ssl(&libpq_style, None).await.unwrap());

    // Not trusted: only Mozilla's roots.
    let untrusted = session_ssl(&neon_like, None).await.unwrap_err();
    assert!(matches!(untrusted, DbError::Unavailable(_)), "{untrusted}");
    assert!(
        untrusted.to_string().to_lowercase().contains("certificate"),
        "{untrusted}"
    );

    // Wrong host name: the certificate is for localhost, not 127.0.0.1.
    let wrong_host = url("127.0.0.1", "sslmode=require");
    let refused = session_ssl(&wrong_host, Some(&pg.ca_pem))
        .await
        .unwrap_err();
    assert!(matches!(refused, DbError::Unavailable(_)), "{refused}");

    // Local development: sslmode=disable talks plain text.
    let plain = url("localhost", "sslmode=disable");
    assert!(!session_ssl(&plain, None).await.unwrap());

    // channel_binding=require cannot be met without TLS.
    let no_tls_binding = url("localhost", "sslmode=disable&channel_binding=require");
    assert!(session_ssl(&no_tls_binding, None).await.is_err());
}
