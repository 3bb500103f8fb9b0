//! Behaviour switches, read once from the environment.
//!
//! The image's Dockerfile bakes each of them into `ENV` from a build argument, so one image
//! tag is one behaviour. An empty value means "unset".

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// TCP port to listen on (all addresses). `PORT`, default 8080.
    pub port: u16,
    /// Reported by `/version`, `/health` and `/`. `APP_VERSION`, default `dev`.
    pub version: String,
    /// `PACKFY_REGION`, reported by `/`.
    pub region: String,
    /// `PACKFY_CURRENCY`, reported by `/`.
    pub currency: String,
    /// Name of this instance, sent as `X-Packfy-Instance` and in `/`.
    /// `INSTANCE_NAME`, else `HOSTNAME` (the container id under Docker).
    pub instance: String,
    /// `/health` answers 503 until this long after start. `HEALTHY_AFTER_SECS`.
    pub healthy_after: Duration,
    /// `/health` always answers 503. `NEVER_HEALTHY=1`.
    pub never_healthy: bool,
    /// The process exits with code 1 this long after start. `EXIT_AFTER_SECS`.
    pub exit_after: Option<Duration>,
    /// Fraction of requests to `/` answered 500, deterministically spread. `ERROR_RATE`.
    pub error_rate: f64,
    /// Prints the whole environment to stdout at start, one `NAME=value` per line, as many
    /// apps do (and as stack traces print connection strings). `PRINT_ENV=1`.
    pub print_env: bool,
}

impl Config {
    /// Reads the configuration through `get` (normally `std::env::var`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let num = |k: &str| -> Result<Option<f64>, String> {
            match get(k) {
                None => Ok(None),
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .map(Some)
                    .ok_or_else(|| format!("{k}: expected a non-negative number, got {v:?}")),
            }
        };
        let port = match get("PORT") {
            None => 8080,
            Some(v) => v
                .parse()
                .map_err(|_| format!("PORT: expected a port number, got {v:?}"))?,
        };
        let truthy = |k: &str| matches!(get(k).as_deref(), Some("1" | "true" | "yes"));
        let error_rate = num("ERROR_RATE")?.unwrap_or(0.0);
        if error_rate > 1.0 {
            return Err(format!("ERROR_RATE: expected 0..=1, got {error_rate}"));
        }
        Ok(Config {
            port,
            version: get("APP_VERSION").unwrap_or_else(|| "dev".into()),
            region: get("PACKFY_REGION").unwrap_or_default(),
            currency: get("PACKFY_CURRENCY").unwrap_or_default(),
            instance: get("INSTANCE_NAME")
                .or_else(|| get("HOSTNAME"))
                .unwrap_or_default(),
            healthy_after: Duration::from_secs_f64(num("HEALTHY_AFTER_SECS")?.unwrap_or(0.0)),
            never_healthy: truthy("NEVER_HEALTHY"),
            exit_after: num("EXIT_AFTER_SECS")?.map(Duration::from_secs_f64),
            error_rate,
            print_env: truthy("PRINT_ENV"),
        })
    }
}

/// Whether the `n`th request (1-based) to `/` fails: exactly `floor(n * rate)` of the first
/// `n` requests fail, so a rate of 0.2 fails requests 5, 10, 15, …
pub fn nth_request_fails(n: u64, rate: f64) -> bool {
    // The epsilon keeps products such as 0.7 * 10 = 6.999… on the intended side.
    let failed_by = |k: u64| (k as f64 * rate + 1e-9).floor();
    n > 0 && failed_by(n) > failed_by(n - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.version, "dev");
        assert!(!c.never_healthy);
        assert_eq!(c.exit_after, None);
        assert_eq!(c.error_rate, 0.0);
        assert!(!c.print_env);
    }

    #[test]
    fn empty_values_are_unset() {
        let c = cfg(&[("PORT", ""), ("EXIT_AFTER_SECS", " "), ("APP_VERSION", "")]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.exit_after, None);
        assert_eq!(c.version, "dev");
    }

    #[test]
    fn switches() {
        let c = cfg(&[
            ("PORT", "9000"),
            ("APP_VERSION", "v2"),
            ("HEALTHY_AFTER_SECS", "3"),
            ("NEVER_HEALTHY", "1"),
            ("EXIT_AFTER_SECS", "1.5"),
            ("ERROR_RATE", "0.2"),
            ("INSTANCE_NAME", "a"),
            ("HOSTNAME", "b"),
            ("PRINT_ENV", "1"),
        ])
        .unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.version, "v2");
        assert_eq!(c.healthy_after, Duration::from_secs(3));
        assert!(c.never_healthy);
        assert_eq!(c.exit_after, Some(Duration::from_millis(1500)));
        assert_eq!(c.error_rate, 0.2);
        assert_eq!(c.instance, "a");
        assert!(c.print_env);
        assert!(!cfg(&[("PRINT_ENV", "0")]).unwrap().print_env);
    }

    #[test]
    fn bad_values_are_named() {
        assert!(cfg(&[("PORT", "x")]).unwrap_err().starts_with("PORT"));
        assert!(cfg(&[("ERROR_RATE", "2")])
            .unwrap_err()
            .starts_with("ERROR_RATE"));
        assert!(cfg(&[("EXIT_AFTER_SECS", "-1")])
            .unwrap_err()
            .starts_with("EXIT_AFTER_SECS"));
    }

    #[test]
    fn error_rate_is_deterministic_and_exact() {
        let fails: Vec<u64> = (1..=20).filter(|&n| nth_request_fails(n, 0.2)).collect();
        assert_eq!(fails, vec![5, 10, 15, 20]);
        assert_eq!(
            (1..=1000).filter(|&n| nth_request_fails(n, 0.3)).count(),
            300
        );
        assert!((1..=10).all(|n| !nth_request_fails(n, 0.0)));
        assert!((1..=10).all(|n| nth_request_fails(n, 1.0)));
    }
}
