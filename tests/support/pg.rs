//! PostgreSQL through `psql`, and the test database's password.

use std::process::Command;

use super::{is_ci, run, stdout, TestEnv};

/// `psql URL -c SQL` (stops on the first error); returns unaligned, tuples-only output.
pub fn psql(url: &str, sql: &str) -> String {
    stdout(&run(Command::new("psql").args([
        url,
        "-v",
        "ON_ERROR_STOP=1",
        "-Atq",
        "-c",
        sql,
    ])))
}

/// `(user, password, database)` of `postgresql://USER:PASSWORD@HOST:PORT/DATABASE`.
pub fn pg_url_parts(url: &str) -> Option<(String, String, String)> {
    let rest = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))?;
    let (credentials, location) = rest.rsplit_once('@')?;
    let (user, password) = credentials.split_once(':')?;
    let database = location.split_once('/')?.1;
    let database = database.split('?').next().unwrap_or_default();
    Some((user.into(), password.into(), database.into()))
}

impl TestEnv {
    /// The test database's password (from `PACKFY_PG_URL`): what a test looks for in output
    /// that must never show it.
    ///
    /// `None`, after a note, when it cannot be told apart from the names around it (it is
    /// the user or database name, or part of one, as in environments started before
    /// tests/env/postgres.sh gave it a password of its own): looking for it would find the
    /// app's name. Under CI that panics instead: the check must run there.
    pub fn pg_password(&self) -> Option<String> {
        let (user, password, database) = pg_url_parts(&self.pg_url)
            .unwrap_or_else(|| panic!("PACKFY_PG_URL {:?} has no user:password@", self.pg_url));
        let distinct =
            password.len() >= 6 && !user.contains(&password) && !database.contains(&password);
        if distinct {
            return Some(password);
        }
        let why = "the test database's password is its user or database name, so a leak of it \
                   cannot be told apart; run `make env-down env-up` (tests/env/postgres.sh gives \
                   it a password of its own)";
        if is_ci() {
            panic!("{why}");
        }
        eprintln!("note: not checking output for the database password: {why}");
        None
    }
}

impl TestEnv {
    /// `PACKFY_PG_URL` as a container on the engine `docker_host` reaches it: the host part is
    /// the gateway of the engine's `bridge` network, where tests/env/postgres.sh also listens
    /// (and lets role packfy in by SCRAM from that subnet only).
    pub fn pg_url_for_containers(&self, docker_host: &str) -> String {
        let gateway = super::stdout(&super::docker(
            docker_host,
            [
                "network",
                "inspect",
                "bridge",
                "-f",
                "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
            ],
        ));
        let gateway = gateway
            .split_whitespace()
            .find(|a| !a.contains(':'))
            .unwrap_or_else(|| panic!("{docker_host}'s bridge network has no IPv4 gateway"))
            .to_string();
        assert!(
            self.pg_url.contains("@127.0.0.1:"),
            "PACKFY_PG_URL {:?} is not on 127.0.0.1",
            self.pg_url
        );
        self.pg_url
            .replacen("@127.0.0.1:", &format!("@{gateway}:"), 1)
    }
}
