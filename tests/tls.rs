#![forbid(unsafe_code)]
//! Verified TLS to PostgreSQL: a throwaway PostgreSQL with `ssl=on`, SCRAM passwords and a
//! certificate issued (for `localhost` only) by a CA generated for it (`common/tls_cluster.rs`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::tls_cluster::TlsCluster;
use common::tools::find;
use tasks_shared::config::DatabaseSettings;
use tasks_shared::db::{Database, DbError};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
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
    let Some(pg) = TlsCluster::start() else {
        // Loud skip, or a failure in CI (TASKS_REQUIRE_TOOLS=1).
        find("initdb");
        find("pg_ctl");
        return;
    };
    let url = |host: &str, query: &str| pg.url(host, query);

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
