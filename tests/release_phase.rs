//! Release steps (migrations) against the real targets and PostgreSQL of the test environment:
//! the step runs once in the new image after the data backups and before traffic moves; a
//! failing step changes nothing else (exit 3, `release_failed`, the backup named and
//! restorable); after a one-way step a failed release is not rolled back (exit 4) and rollbacks
//! past it need `--force`.
//!
//! The migration is the sample app's `migrate` mode (tests/sample-app): on a Docker region it
//! connects to the test PostgreSQL at its `DATABASE_URL` (a secret: the database as the
//! container reaches it, the engine's bridge gateway, by SCRAM) and runs `MIGRATE_SQL`
//! statement by statement, then prints its last line `schema N`; a failing statement makes it
//! exit 1 after printing that URL and PostgreSQL's error; `MIGRATE_SLEEP_SECS` makes it hang.
//! The backups are the region's `pg_dump` job, restored with `backup restore`. On Kubernetes
//! (kwok: no container runs) the Job's outcome comes from the image tag (tests/k8s/stages).

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

use sha2::Digest;
use support::fixture::{
    self, region_name, Backup, Health, RegionFile, RegionsDir, Rollout, Service,
};
use support::{code, psql, text, unique_ident, unique_name, KubeEnv, TestEnv};

/// The secret in the Kubernetes Job's `DATABASE_URL` (kwok runs no container: it is never used).
const DB_SECRET: &str = "mig-s3cr3t-do-not-print-9081";

/// `sha256(line)`'s first 12 hex digits, as records keep it.
fn digest(line: &str) -> String {
    hex::encode(&sha2::Sha256::digest(line.as_bytes())[..6])
}

/// A table with rows in the test database, dropped at the end.
struct Table {
    url: String,
    name: String,
}

impl Table {
    fn new(url: &str) -> Table {
        let name = unique_ident("rp");
        psql(
            url,
            &format!(
                "CREATE TABLE {name} (id bigint PRIMARY KEY, note text);
                 INSERT INTO {name} SELECT g, md5(g::text) FROM generate_series(1, 500) AS g;"
            ),
        );
        Table {
            url: url.into(),
            name,
        }
    }

    fn fingerprint(&self) -> String {
        psql(
            &self.url,
            &format!(
                "SELECT count(*) || ' ' || md5(string_agg(id || note, ';' ORDER BY id)) FROM {}",
                self.name
            ),
        )
    }

    fn exists(&self) -> bool {
        table_exists(&self.url, &self.name)
    }

    /// The table a migration of this test creates (dropped at the end too).
    fn created(&self) -> String {
        format!("{}_v42", self.name)
    }
}

fn table_exists(url: &str, name: &str) -> bool {
    psql(url, &format!("SELECT to_regclass('{name}') IS NOT NULL")) == "t"
}

impl Drop for Table {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["--dbname", &self.url, "-qc"])
            .arg(format!(
                "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {}",
                self.name,
                self.created()
            ))
            .output();
    }
}

/// A `pg_dump` job of one table, the database URL a secret reference.
fn pg_job(table: &str) -> Backup {
    Backup::command(
        "db",
        &[
            "pg_dump",
            "--dbname",
            "${PGURL}",
            "--table",
            table,
            "--no-owner",
        ],
    )
    .secret_env("PGURL", "env:PACKFY_PG_URL")
}

/// A region's files and how to run the CLI on them.
struct Cli {
    name: String,
    dir: RegionsDir,
    pg_url: String,
    /// The release step's `DATABASE_URL` (a secret reference to `PACKFY_TEST_DB_URL`).
    db_url: String,
    kubeconfig: Option<PathBuf>,
    secrets: Vec<String>,
}

impl Cli {
    fn new(prefix: &str, env: &TestEnv) -> Cli {
        Cli {
            name: region_name(prefix, 20),
            dir: RegionsDir::new(),
            pg_url: env.pg_url.clone(),
            db_url: format!("postgresql://app:{DB_SECRET}@db:5432/parcels"),
            kubeconfig: None,
            secrets: [DB_SECRET.to_string()]
                .into_iter()
                .chain(env.pg_password())
                .collect(),
        }
    }

    fn write(&self, file: &RegionFile) {
        self.dir.write(&self.name, file);
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = support::cli(self.dir.path(), args);
        c.env("PACKFY_PG_URL", &self.pg_url)
            .env("PACKFY_TEST_DB_URL", &self.db_url);
        if let Some((_, password, _)) = support::pg_url_parts(&self.pg_url) {
            c.env("PGPASSWORD", password);
        }
        if let Some(k) = &self.kubeconfig {
            c.env("KUBECONFIG", k);
        }
        let secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        support::run_cli(&mut c, &secrets)
    }

    fn deploy(&self, version: &str) -> Output {
        self.run(&["deploy", "--region", &self.name, "--version", version])
    }

    fn history(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["history", "--region", &self.name, "-o", "json"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        let mut h: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        h.reverse(); // oldest first
        h
    }

    /// `backup restore ID` into the test database.
    fn restore(&self, id: &str) -> Output {
        let url = &self.pg_url;
        let (user, password, _) = support::pg_url_parts(url).unwrap();
        let without = url.replacen(&format!("{user}:{password}@"), &format!("{user}@"), 1);
        self.run(&[
            "backup",
            "restore",
            id,
            "--yes",
            "--into",
            "psql",
            "--dbname",
            &without,
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
        ])
    }
}

/// The sample app as the region's `web`, its release step `packfy-sample migrate` (the image's
/// entrypoint is the sample binary: the step's argv is its CMD).
fn web(reversible: bool, timeout: &str) -> Service {
    Service::new("web", "packfy-sample")
        .replicas(1)
        .port(8080)
        .env("MIGRATE_SCHEMA", "42")
        .secret_env("DATABASE_URL", "env:PACKFY_TEST_DB_URL")
        .release(&["migrate"], timeout, reversible)
        .health(
            Health::http("/health")
                .start_period("1s")
                .interval("500ms")
                .timeout("500ms")
                .healthy_threshold(2)
                .unhealthy_threshold(3)
                .deadline("8s"),
        )
        .rollout(Rollout::new().bake("1s").drain_timeout("1s"))
        .stop_grace_period("2s")
}

struct DockerRegion {
    cli: Cli,
    host: String,
    table: Table,
}

impl DockerRegion {
    fn new(env: &TestEnv) -> DockerRegion {
        let mut cli = Cli::new("rp", env);
        cli.db_url = env.pg_url_for_containers(&env.docker_host);
        let r = DockerRegion {
            cli,
            host: env.docker_host.clone(),
            table: Table::new(&env.pg_url),
        };
        r.write(r.migration(false, "1m"));
        r
    }

    /// `web` with a real migration: it creates the table [`Table::created`].
    fn migration(&self, reversible: bool, timeout: &str) -> Service {
        web(reversible, timeout).env(
            "MIGRATE_SQL",
            &format!(
                "CREATE TABLE IF NOT EXISTS {} (id bigint PRIMARY KEY, parcel text)",
                self.table.created()
            ),
        )
    }

    fn write(&self, web: Service) {
        let file = RegionFile::docker(&self.host)
            .currency("USD")
            .keep_releases(5)
            .traffic_none()
            .service(web)
            .backup(pg_job(&self.table.name));
        self.cli.write(&file);
    }

    fn running_versions(&self) -> Vec<String> {
        support::running_versions(&self.host, &self.cli.name)
    }

    /// Containers of the region with `label` (any state).
    fn containers(&self, label: &str) -> Vec<String> {
        let region = format!("packfy.region={}", self.cli.name);
        support::container_ids(&self.host, &[&region, label], true)
    }
}

impl Drop for DockerRegion {
    fn drop(&mut self) {
        support::remove_labelled(&self.host, &format!("packfy.region={}", self.cli.name));
    }
}

#[test]
fn a_migration_runs_once_in_the_new_image_before_traffic_and_is_recorded() {
    let Some(env) = TestEnv::get() else { return };
    let r = DockerRegion::new(&env);
    let v1 = format!("v1-{}", r.cli.name);
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    assert!(!table_exists(&r.table.url, &r.table.created()));

    // plan says the step will run, and that it is one-way
    let out = r
        .cli
        .run(&["plan", "--region", &r.cli.name, "--version", &v1]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains("web: release step `migrate` runs once in the new image before traffic moves, timeout 1m (one-way: a later failure stops for a person instead of rolling back)"),
        "{}",
        text(&out)
    );

    let out = r.cli.deploy(&v1);
    let all = text(&out);
    assert_eq!(code(&out), 0, "{all}");
    // after the backup, before the rollout; its output streamed
    let backed = all.find("Backed up").expect("a backup line");
    let released = all
        .find(&format!("{}/web release | schema 42", r.cli.name))
        .expect(&all);
    let rolled = all.find("Deployed").unwrap();
    assert!(backed < released && released < rolled, "{all}");
    assert_eq!(r.running_versions(), [v1.as_str()]);
    // the migration ran against the real database: its table exists
    assert!(
        table_exists(&r.table.url, &r.table.created()),
        "no table {} after the migration: {all}",
        r.table.created()
    );
    // the one-off container is gone
    assert_eq!(
        r.containers("packfy.kind=release-step"),
        Vec::<String>::new()
    );

    let h = r.cli.history();
    let step = &h[0]["release_steps"][0];
    assert_eq!(step["service"], "web");
    assert_eq!(step["command"], "migrate");
    assert_eq!(step["outcome"], "succeeded");
    assert_eq!(step["reversible"], false);
    assert_eq!(step["exit_code"], 0);
    assert_eq!(step["last_line_sha256"], digest("schema 42").as_str());
    assert_eq!(
        step["backups"][0],
        format!("{}/production/r1/db", r.cli.name).as_str()
    );
    let out = r.cli.run(&["history", "--region", &r.cli.name]);
    assert!(
        text(&out).contains("release step web: `migrate`: succeeded in")
            && text(&out).contains(&format!(
                "one-way, last line sha256 {}",
                digest("schema 42")
            )),
        "{}",
        text(&out)
    );
}

#[test]
fn a_failing_migration_changes_nothing_names_its_backup_and_masks_its_output() {
    let Some(env) = TestEnv::get() else { return };
    let r = DockerRegion::new(&env);
    let v1 = format!("v1-{}", r.cli.name);
    let v2 = format!("v2-{}", r.cli.name);
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    let _i2 = env.build_sample(&r.host, &v2, &[]);
    let out = r.cli.deploy(&v1);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let before = r.table.fingerprint();

    // a migration that damages the data, then fails (no transaction, as many tools run)
    let t = &r.table.name;
    r.write(web(false, "1m").env(
        "MIGRATE_SQL",
        &format!("DELETE FROM {t} WHERE id > 250; CREATE TABLE {t} (id bigint)"),
    ));
    let out = r.cli.deploy(&v2);
    let all = text(&out);
    assert_eq!(code(&out), 3, "{all}");
    let backup = format!("{}/production/r2/db", r.cli.name);
    assert!(
        all.contains("release step web: `migrate` exited 1")
            && all.contains(&format!("the backup taken just before it is {backup}")),
        "{all}"
    );
    // its last lines: PostgreSQL's error, the secret URL in them masked (run_cli fails the
    // test on the password itself)
    assert!(
        all.contains(&format!(
            "| error: cannot apply migration 42 on ***: ERROR: relation \"{t}\" already exists"
        )),
        "{all}"
    );
    assert_ne!(
        r.table.fingerprint(),
        before,
        "the migration changed nothing"
    );
    // the old release still serves, nothing of the new one is left
    assert_eq!(r.running_versions(), [v1.as_str()]);
    assert_eq!(r.containers("packfy.release=r2"), Vec::<String>::new());
    let h = r.cli.history();
    assert_eq!(h[1]["outcome"], "release_failed");
    assert_eq!(h[1]["release_steps"][0]["outcome"], "failed");
    assert_eq!(h[1]["release_steps"][0]["exit_code"], 1);
    assert!(
        h[1]["error"].as_str().unwrap().contains(&backup),
        "{}",
        h[1]
    );
    assert!(!h[1].to_string().contains(&r.cli.db_url));

    // the backup it names brings the data back to before the step
    psql(&r.table.url, &format!("DROP TABLE {}", r.table.name));
    assert!(!r.table.exists());
    let out = r.cli.restore(&backup);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.table.fingerprint(), before);
}

#[test]
fn a_hanging_migration_is_stopped_at_its_timeout() {
    let Some(env) = TestEnv::get() else { return };
    let r = DockerRegion::new(&env);
    let v1 = format!("v1-{}", r.cli.name);
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    r.write(r.migration(false, "2s").env("MIGRATE_SLEEP_SECS", "120"));
    let started = std::time::Instant::now();
    let out = r.cli.deploy(&v1);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
    assert!(
        text(&out).contains("release step web: `migrate` was stopped at its timeout (2s)"),
        "{}",
        text(&out)
    );
    assert_eq!(
        r.cli.history()[0]["release_steps"][0]["outcome"],
        "timed_out"
    );
    assert_eq!(
        r.containers("packfy.kind=release-step"),
        Vec::<String>::new()
    );
    assert_eq!(r.running_versions(), Vec::<String>::new());
    assert!(!table_exists(&r.table.url, &r.table.created()));
}

#[test]
fn after_a_one_way_migration_a_failed_release_is_not_rolled_back_past_it() {
    let Some(env) = TestEnv::get() else { return };
    let r = DockerRegion::new(&env);
    let v1 = format!("v1-{}", r.cli.name);
    let bad = format!("bad-{}", r.cli.name);
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    let _ib = env.build_sample(&r.host, &bad, &[("NEVER_HEALTHY", "1")]);
    r.write(r.migration(true, "1m")); // r1's step is reversible
    let out = r.cli.deploy(&v1);
    assert_eq!(code(&out), 0, "{}", text(&out));

    r.write(r.migration(false, "1m"));
    let out = r.cli.deploy(&bad);
    let all = text(&out);
    assert_eq!(code(&out), 4, "{all}");
    let backup = format!("{}/production/r2/db", r.cli.name);
    for want in [
        "the schema moved on; the old version may not read it",
        &format!("the backup taken just before it is {backup}"),
        &format!("packfy-deploy rollback --region {} --force", r.cli.name),
        &format!("packfy-deploy backup restore {backup}"),
    ] {
        assert!(all.contains(want), "{want:?} in {all}");
    }
    assert!(!all.contains("Rolled back"), "{all}");
    assert!(table_exists(&r.table.url, &r.table.created()));
    let h = r.cli.history();
    assert_eq!(h[1]["outcome"], "failed");
    assert_eq!(h[1]["release_steps"][0]["outcome"], "succeeded");

    // going back to r1 needs --force, and says why
    let out = r
        .cli
        .run(&["rollback", "--region", &r.cli.name, "--to", "r1"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("will not roll back")
            && text(&out).contains("one-way release step web: `migrate`")
            && text(&out).contains(&backup),
        "{}",
        text(&out)
    );
    let out = r
        .cli
        .run(&["rollback", "--region", &r.cli.name, "--to", "r1", "--force"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.running_versions(), [v1.as_str()]);
    assert_eq!(r.cli.history()[1]["outcome"], "rolled_back");
}

/// The Kubernetes region: a Job per release step, a local `pg_dump` backup before it.
#[test]
fn on_kubernetes_the_step_is_a_job_after_the_regions_pg_dump() {
    let Some(env) = TestEnv::get() else { return };
    let Some(k) = KubeEnv::get() else { return };
    let table = Table::new(&env.pg_url);
    let mut cli = Cli::new("rk", &env);
    cli.kubeconfig = Some(k.kubeconfig.clone());
    let namespace = unique_name("rp").chars().take(50).collect::<String>();
    let kweb = |reversible: bool| {
        Service::new("web", "sample")
            .replicas(2)
            .port(8080)
            .env("MIGRATE_SCHEMA", "42")
            .secret_env("DATABASE_URL", "env:PACKFY_TEST_DB_URL")
            .release(&["migrate"], "1m", reversible)
            .health(fixture::Health::http("/health"))
            .rollout(Rollout::new().progress_deadline("10s").bake("1s"))
    };
    let file = |reversible| {
        RegionFile::kubernetes(&k.context, &namespace)
            .currency("USD")
            .service(kweb(reversible))
            .backup(pg_job(&table.name))
    };
    cli.write(&file(true));
    let kubectl = |args: &[&str]| {
        let mut all = vec!["-n", namespace.as_str()];
        all.extend_from_slice(args);
        k.kubectl(all)
    };
    let image = || {
        kubectl(&[
            "get",
            "deploy",
            "packfy-web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
    };

    // r1: backup, then the Job (kwok runs its pod to completion), then the rollout
    let out = cli.deploy("v1");
    let all = text(&out);
    assert_eq!(code(&out), 0, "{all}");
    let backed = all
        .find(&format!("Backed up {}/production/r1/db", cli.name))
        .expect(&all);
    let job = all.find("Job/packfy-web-release-r1").expect(&all);
    let applied = all.find("Applied").expect(&all);
    assert!(backed < job && job < applied, "{all}");
    assert_eq!(image(), "sample:v1");
    assert_eq!(
        kubectl(&[
            "get",
            "jobs,secrets",
            "-l",
            "packfy.io/role=release-step",
            "-o",
            "name"
        ]),
        ""
    );
    let h = cli.history();
    assert_eq!(h[0]["release_steps"][0]["outcome"], "succeeded");
    assert_eq!(h[0]["backups"][0]["job"], "db");
    assert!(h[0]["backups"][0]["error"].is_null(), "{}", h[0]);

    // r2: the Job's pod fails: nothing else changes
    let out = cli.deploy("v2-migrate-fails");
    let all = text(&out);
    assert_eq!(code(&out), 3, "{all}");
    assert!(
        all.contains("release step web: `migrate` exited 1")
            && all.contains(&format!(
                "the backup taken just before it is {}/production/r2/db",
                cli.name
            ))
            && all.contains("the node serves none"),
        "{all}"
    );
    assert_eq!(image(), "sample:v1");
    assert_eq!(
        kubectl(&[
            "get",
            "jobs,secrets",
            "-l",
            "packfy.io/role=release-step",
            "-o",
            "name"
        ]),
        ""
    );
    assert_eq!(cli.history()[1]["outcome"], "release_failed");

    // r3: a one-way step runs, then the release never gets ready: exit 4, not rolled back
    cli.write(&file(false));
    let out = cli.deploy("v3-never-ready");
    let all = text(&out);
    assert_eq!(code(&out), 4, "{all}");
    assert!(
        all.contains("the schema moved on; the old version may not read it"),
        "{all}"
    );
    assert_eq!(image(), "sample:v3-never-ready", "not rolled back");
    let out = cli.run(&["rollback", "--region", &cli.name]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("one-way release step web: `migrate`"),
        "{}",
        text(&out)
    );
    let out = cli.run(&["rollback", "--region", &cli.name, "--force"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(image(), "sample:v1");
    let _ = kubectl(&["delete", "namespace", &namespace, "--wait=false"]);
}

/// A Kubernetes release step that never ends (kwok runs the `migrate-hangs` Job's pod and
/// never completes it) is stopped at its timeout: the Job's `activeDeadlineSeconds`.
#[test]
fn on_kubernetes_a_hanging_job_is_stopped_at_its_timeout() {
    let Some(env) = TestEnv::get() else { return };
    let Some(k) = KubeEnv::get() else { return };
    let table = Table::new(&env.pg_url);
    let mut cli = Cli::new("rh", &env);
    cli.kubeconfig = Some(k.kubeconfig.clone());
    let namespace = unique_name("rh").chars().take(50).collect::<String>();
    let service = |timeout: &str| {
        Service::new("web", "sample")
            .replicas(1)
            .port(8080)
            .secret_env("DATABASE_URL", "env:PACKFY_TEST_DB_URL")
            .release(&["migrate"], timeout, false)
            .health(fixture::Health::http("/health"))
            .rollout(Rollout::new().progress_deadline("10s").bake("1s"))
    };
    let file = |timeout: &str| {
        RegionFile::kubernetes(&k.context, &namespace)
            .currency("USD")
            .service(service(timeout))
            .backup(pg_job(&table.name))
    };
    let kubectl = |args: &[&str]| {
        let mut all = vec!["-n", namespace.as_str()];
        all.extend_from_slice(args);
        k.kubectl(all)
    };
    cli.write(&file("1m"));
    let out = cli.deploy("v1");
    assert_eq!(code(&out), 0, "{}", text(&out));

    cli.write(&file("3s"));
    let started = std::time::Instant::now();
    let out = cli.deploy("v2-migrate-hangs");
    let all = text(&out);
    assert_eq!(code(&out), 3, "{all}");
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
    assert!(
        all.contains("release step web: `migrate` was stopped at its timeout (3s)")
            && all.contains(&format!(
                "the backup taken just before it is {}/production/r2/db",
                cli.name
            )),
        "{all}"
    );
    let h = cli.history();
    assert_eq!(h[1]["outcome"], "release_failed");
    assert_eq!(h[1]["release_steps"][0]["outcome"], "timed_out");
    // nothing else changed, and the Job is gone with everything it made
    assert_eq!(
        kubectl(&[
            "get",
            "deploy",
            "packfy-web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ]),
        "sample:v1"
    );
    assert_eq!(
        kubectl(&[
            "get",
            "jobs,secrets",
            "-l",
            "packfy.io/role=release-step",
            "-o",
            "name"
        ]),
        ""
    );
    let _ = kubectl(&["delete", "namespace", &namespace, "--wait=false"]);
}
