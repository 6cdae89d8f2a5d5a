//! One typed configuration, read from the environment once per cold start.
//!
//! The Lambda functions and the local server differ only here: Lambda requires every setting
//! (a missing one fails init naming the variable) and may read secrets from Secrets Manager;
//! the local server has defaults for development.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// The local PostgreSQL of a development machine.
pub const DEFAULT_LOCAL_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/tasks";
pub const DEFAULT_PORT: u16 = 8000;
/// 503 comes within 5 s (CONTRACT); 3 s leaves room for the response on a slow network.
pub const DEFAULT_DATABASE_TIMEOUT: Duration = Duration::from_secs(3);
/// CONTRACT 1.2: deletion history is kept at least 30 days by default.
pub const DEFAULT_CHANGES_RETENTION_SECONDS: u64 = 2_592_000;
/// Any positive whole number is accepted; the purge uses at most 1,000 years, so that
/// `now() - retention` stays a PostgreSQL timestamp (nothing that old exists to purge anyway).
const MAX_CHANGES_RETENTION_SECONDS: u64 = 1_000 * 31_557_600;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing configuration: set {0}")]
    Missing(&'static str),
    #[error("missing configuration: set {0} (or {1})")]
    MissingEither(&'static str, &'static str),
    #[error("invalid {var}: {reason}")]
    Invalid { var: &'static str, reason: String },
}

impl ConfigError {
    pub fn invalid(var: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            var,
            reason: reason.into(),
        }
    }
}

/// Where the process runs: decides defaults and what is mandatory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Lambda,
    Local,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// One request at a time per Lambda instance: one connection. Larger locally.
    pub pool_size: usize,
    /// Deadline for checkout + connect + statement; past it the request gets 503.
    pub timeout: Duration,
    /// Extra trusted CA (PEM file) for `sslmode=require`, e.g. a private PostgreSQL's CA.
    pub ca_cert: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub hs256_secret: Option<SecretString>,
    pub jwks_url: Option<String>,
    /// `JWKS_JSON`: the JWKS document itself, so a cold start need not fetch it.
    pub jwks_document: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl AuthSettings {
    pub fn is_configured(&self) -> bool {
        self.hs256_secret.is_some() || self.jwks_url.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: SecretString,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub cors_allowed_origins: Vec<String>,
    pub port: u16,
    /// `CHANGES_RETENTION_SECONDS`: how long deletions are kept for `GET /api/changes`, in
    /// seconds (passed to every write, which purges its user's older ones).
    pub changes_retention_seconds: f64,
}

impl Config {
    /// Reads the configuration through `env` (the process environment, or a map in tests).
    /// Empty values count as unset. Secrets named by `*_ARN` variables must already have been
    /// resolved into `DATABASE_URL` / `JWT_SECRET` (see [`crate::secrets`]).
    pub fn from_lookup(
        env: &dyn Fn(&str) -> Option<String>,
        runtime: Runtime,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let database_url = match (get("DATABASE_URL"), runtime) {
            (Some(url), _) => url,
            (None, Runtime::Local) => DEFAULT_LOCAL_DATABASE_URL.to_owned(),
            (None, Runtime::Lambda) => {
                return Err(ConfigError::MissingEither(
                    "DATABASE_URL",
                    "DATABASE_URL_SECRET_ARN",
                ));
            }
        };
        let pool_size = match get("DATABASE_POOL_SIZE") {
            Some(raw) => parse_in_range("DATABASE_POOL_SIZE", &raw, 1, 256)?,
            None if runtime == Runtime::Lambda => 1,
            None => 16,
        };
        let timeout = match get("DATABASE_TIMEOUT_MS") {
            Some(raw) => {
                let millis = parse_in_range("DATABASE_TIMEOUT_MS", &raw, 50, 60_000)?;
                Duration::from_millis(millis as u64)
            }
            None => DEFAULT_DATABASE_TIMEOUT,
        };
        let auth = AuthSettings {
            hs256_secret: get("JWT_SECRET").map(SecretString::from),
            jwks_url: get("JWKS_URL"),
            jwks_document: get("JWKS_JSON"),
            issuer: get("JWT_ISSUER"),
            audience: get("JWT_AUDIENCE"),
        };
        if let Some(url) = &auth.jwks_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError::invalid("JWKS_URL", "must be an http(s) URL"));
        }
        // Whether the document holds a usable key is `auth`'s to check (`Verifier::new`).
        if auth.jwks_document.is_some() && auth.jwks_url.is_none() {
            return Err(ConfigError::invalid(
                "JWKS_JSON",
                "needs JWKS_URL too (asked for keys the document lacks)",
            ));
        }
        if runtime == Runtime::Lambda && !auth.is_configured() {
            return Err(ConfigError::MissingEither(
                "JWKS_URL",
                "JWT_SECRET / JWT_SECRET_ARN",
            ));
        }
        if let Some(secret) = &auth.hs256_secret
            && secret.expose_secret().len() < 32
        {
            tracing::warn!("JWT_SECRET is shorter than 32 bytes; use a longer random secret");
        }
        let port = match get("PORT") {
            Some(raw) => parse_in_range("PORT", &raw, 1, u16::MAX as usize)? as u16,
            None => DEFAULT_PORT,
        };
        let changes_retention_seconds = match get("CHANGES_RETENTION_SECONDS") {
            Some(raw) => positive_whole_number("CHANGES_RETENTION_SECONDS", &raw)?
                .min(MAX_CHANGES_RETENTION_SECONDS),
            None => DEFAULT_CHANGES_RETENTION_SECONDS,
        } as f64;
        let cors_allowed_origins = get("CORS_ALLOWED_ORIGINS")
            .map(|list| {
                list.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            database_url: SecretString::from(database_url),
            database: DatabaseSettings {
                pool_size,
                timeout,
                ca_cert: get("DATABASE_CA_CERT").or_else(|| get("PGSSLROOTCERT")),
            },
            auth,
            cors_allowed_origins,
            port,
            changes_retention_seconds,
        })
    }
}

/// Digits only, not all zeros; a number too large for `u64` is `u64::MAX`.
fn positive_whole_number(var: &'static str, raw: &str) -> Result<u64, ConfigError> {
    let digits = raw.trim();
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.bytes().all(|b| b == b'0')
    {
        return Err(ConfigError::invalid(var, "must be a positive whole number"));
    }
    Ok(digits.parse().unwrap_or(u64::MAX))
}

fn parse_in_range(
    var: &'static str,
    raw: &str,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    raw.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| ConfigError::invalid(var, format!("must be an integer from {min} to {max}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)], runtime: Runtime) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(&|name| map.get(name).cloned(), runtime)
    }

    #[test]
    fn a_configured_key_set_needs_its_url() {
        let key_set = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        let url = ("JWKS_URL", "https://a/jwks");
        let configured = config(&[url, ("JWKS_JSON", key_set)], Runtime::Local).unwrap();
        assert!(configured.auth.jwks_document.is_some());
        let err = config(&[("JWKS_JSON", key_set)], Runtime::Local).unwrap_err();
        assert!(err.to_string().contains("JWKS_JSON"), "{err}");
        assert!(err.to_string().contains("needs JWKS_URL"), "{err}");
    }

    #[test]
    fn lambda_requires_database_and_a_token_family() {
        let err = config(&[("JWT_SECRET", "s")], Runtime::Lambda).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
        let err = config(&[("DATABASE_URL", "postgres://h/db")], Runtime::Lambda).unwrap_err();
        assert!(err.to_string().contains("JWKS_URL"), "{err}");
        let ok = config(
            &[
                ("DATABASE_URL", "postgres://h/db"),
                ("JWKS_URL", "https://a/jwks"),
            ],
            Runtime::Lambda,
        )
        .unwrap();
        assert_eq!(ok.database.pool_size, 1);
    }

    #[test]
    fn local_has_defaults() {
        let ok = config(&[("PORT", "")], Runtime::Local).unwrap();
        assert_eq!(ok.database_url.expose_secret(), DEFAULT_LOCAL_DATABASE_URL);
        assert_eq!(ok.port, 8000);
        assert!(!ok.auth.is_configured());
        assert!(ok.database.pool_size > 1);
    }

    #[test]
    fn secrets_never_print() {
        let ok = config(
            &[
                ("DATABASE_URL", "postgres://u:hunter2@h/db"),
                ("JWT_SECRET", "topsecretvalue"),
            ],
            Runtime::Local,
        )
        .unwrap();
        let printed = format!("{ok:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("topsecretvalue"),
            "{printed}"
        );
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        for (var, value) in [
            ("PORT", "0"),
            ("DATABASE_POOL_SIZE", "x"),
            ("DATABASE_TIMEOUT_MS", "1"),
            ("CHANGES_RETENTION_SECONDS", "0"),
            ("CHANGES_RETENTION_SECONDS", "-5"),
            ("CHANGES_RETENTION_SECONDS", "1.5"),
            ("CHANGES_RETENTION_SECONDS", "30d"),
        ] {
            let err = config(&[(var, value)], Runtime::Local).unwrap_err();
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn changes_retention_is_any_positive_whole_number() {
        let retention = |vars: &[(&str, &str)]| {
            config(vars, Runtime::Local)
                .unwrap()
                .changes_retention_seconds
        };
        assert_eq!(retention(&[]), 2_592_000.0);
        assert_eq!(retention(&[("CHANGES_RETENTION_SECONDS", "2")]), 2.0);
        let huge = retention(&[("CHANGES_RETENTION_SECONDS", &"9".repeat(40))]);
        assert_eq!(huge, MAX_CHANGES_RETENTION_SECONDS as f64);
    }

    #[test]
    fn cors_origins_are_split_and_normalized() {
        let ok = config(
            &[("CORS_ALLOWED_ORIGINS", "http://a.test/, https://b.test ,")],
            Runtime::Local,
        )
        .unwrap();
        assert_eq!(ok.cors_allowed_origins, ["http://a.test", "https://b.test"]);
    }
}
