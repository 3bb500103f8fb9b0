//! Data backups before deploys, against the real PostgreSQL and Docker engine of the test
//! environment (`make env-up`). Each test deploys its own region (a unique name) with
//! `traffic: none`, dumps its own table, and restores into its own scratch database.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::fixture::{region_name, Backup, Health, RegionFile, RegionsDir, Rollout, Service};
use support::{code, psql, stderr, unique_ident, unique_name, S3Env, TestEnv};

/// A region of its own in a temporary regions directory, with its backup jobs.
struct Region {
    name: String,
    dir: RegionsDir,
    host: String,
    pg_url: String,
    /// The database password: what output must never show.
    pg_password: Option<String>,
    /// Variables every command of this region gets (S3 credentials), and values output must
    /// never show.
    vars: Vec<(String, String)>,
    secrets: Vec<String>,
}

impl Region {
    fn new(env: &TestEnv, backups: &[Backup]) -> Region {
        let r = Region {
            name: region_name("bk", 20),
            dir: RegionsDir::new(),
            host: env.docker_host.clone(),
            pg_url: env.pg_url.clone(),
            pg_password: env.pg_password(),
            vars: Vec::new(),
            secrets: Vec::new(),
        };
        r.write(backups);
        r
    }

    /// The same region (name, host, jobs) in a new, empty working directory: a fresh
    /// checkout on another machine, with nothing the first one wrote.
    fn fresh_checkout(&self, backups: &[Backup]) -> Region {
        let r = Region {
            name: self.name.clone(),
            dir: RegionsDir::new(),
            host: self.host.clone(),
            pg_url: self.pg_url.clone(),
            pg_password: self.pg_password.clone(),
            vars: Vec::new(),
            secrets: self.secrets.clone(),
        };
        r.write(backups);
        r
    }

    /// A region whose `jobs` store to the S3 server: its secret key passed as `s3_job`
    /// references it, and never to be shown.
    fn with_s3(env: &TestEnv, s3: &S3Env, jobs: &[Backup]) -> Region {
        Region::new(env, jobs)
            .var(S3_SECRET_VAR, &s3.secret_access_key)
            .secret(&s3.secret_access_key)
    }

    /// `KEY=value` for every command from now on.
    fn var(mut self, key: &str, value: &str) -> Region {
        self.vars.push((key.into(), value.into()));
        self
    }

    /// A value no output may show.
    fn secret(mut self, value: &str) -> Region {
        self.secrets.push(value.into());
        self
    }

    /// (Re)writes the region file with these backup jobs.
    fn write(&self, backups: &[Backup]) {
        self.write_with(backups, &[]);
    }

    /// (Re)writes the region file with these backup jobs and `service_env` as the
    /// service's variables (a new value changes the containers).
    fn write_with(&self, backups: &[Backup], service_env: &[(&str, &str)]) {
        let mut web = Service::new("web", "packfy-sample")
            .replicas(1)
            .port(8080)
            .health(
                Health::http("/health")
                    .start_period("1s")
                    .interval("500ms")
                    .timeout("500ms")
                    .healthy_threshold(2)
                    .unhealthy_threshold(3)
                    .deadline("30s"),
            )
            .rollout(Rollout::new().bake("1s").drain_timeout("1s"))
            .stop_grace_period("2s");
        for (k, v) in service_env {
            web = web.env(k, v);
        }
        let file = RegionFile::docker(&self.host)
            .currency("USD")
            .keep_releases(2)
            .traffic_none()
            .service(web)
            .backups(backups);
        self.dir.write(&self.name, &file);
    }

    /// The default store: `backups/` beside the regions directory.
    fn default_store(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = support::cli(self.dir.path(), args);
        c.env("PACKFY_PG_URL", &self.pg_url);
        // for `--into psql --dbname URL` with no password in URL (the CLI shows its command)
        if let Some((_, password, _)) = support::pg_url_parts(&self.pg_url) {
            c.env("PGPASSWORD", password);
        }
        // Only what the test gives: never the AWS settings of whoever runs the tests.
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_PROFILE",
        ] {
            c.env_remove(k);
        }
        c.envs(self.vars.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs the command; fails the test if its output shows the database password (in the
    /// URL or alone: only the URL's reference may show) or a panic.
    fn run(&self, args: &[&str]) -> Output {
        let mut secrets = vec![self.pg_url.as_str()];
        secrets.extend(self.pg_password.as_deref());
        secrets.extend(self.secrets.iter().map(String::as_str));
        support::run_cli(&mut self.cmd(args), &secrets)
    }

    fn deploy(&self, version: &str, extra: &[&str]) -> Output {
        let mut args = vec!["deploy", "--region", &self.name, "--version", version];
        args.extend(extra);
        self.run(&args)
    }

    fn list(&self, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["backup", "list", "--region", &self.name, "-o", "json"];
        args.extend(extra);
        let out = self.run(&args);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    }

    /// Deploys `version` as the first release, which must succeed and back up job `db`: its
    /// backup ID.
    fn first_backup(&self, version: &str) -> String {
        let out = self.deploy(version, &[]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let id = format!("{}/production/r1/db", self.name);
        assert!(
            stderr(&out).contains(&format!("Backed up {id}")),
            "{}",
            stderr(&out)
        );
        id
    }

    /// `backup verify ID`, which must pass.
    fn verified(&self, id: &str) {
        let out = self.run(&["backup", "verify", id]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("Verified {id}")),
            "{}",
            stderr(&out)
        );
    }

    /// `backup restore ID [--yes] --into psql --dbname …` into `db` (whatever it exits with).
    fn restore(&self, id: &str, db: &Database, yes: bool) -> Output {
        let mut args = vec!["backup", "restore", id];
        if yes {
            args.push("--yes");
        }
        args.extend([
            "--into",
            "psql",
            "--dbname",
            &db.url_without_password,
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
        ]);
        self.run(&args)
    }

    /// Flips a byte in the middle of `file` (the stored dump of `id`, wherever the store
    /// keeps it): `backup verify` must fail with exit 1.
    fn damaged_fails_verify(&self, id: &str, file: &Path) {
        let mut bytes = std::fs::read(file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(file, bytes).unwrap();
        let out = self.run(&["backup", "verify", id]);
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("backup {id} does not match its record")),
            "{}",
            stderr(&out)
        );
    }

    fn history(&self) -> serde_json::Value {
        let out = self.run(&["history", "--region", &self.name, "-o", "json"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Every container of the region (any state, any environment), sorted IDs.
    fn containers(&self) -> Vec<String> {
        let region = format!("packfy.region={}", self.name);
        support::container_ids(&self.host, &[&region], true)
    }

    fn running_versions(&self) -> Vec<String> {
        support::running_versions(&self.host, &self.name)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // Everything this region created on the engine, whatever the test did.
        support::remove_labelled(&self.host, &format!("packfy.region={}", self.name));
    }
}

/// A table with rows in the test database, dropped at the end.
struct Table<'a> {
    url: &'a str,
    name: String,
}

impl<'a> Table<'a> {
    fn new(url: &'a str, rows: u64) -> Table<'a> {
        let name = unique_ident("bk");
        psql(
            url,
            &format!(
                "CREATE TABLE {name} (id bigint PRIMARY KEY, owner text NOT NULL, amount numeric(12,2), note text);
                 INSERT INTO {name} SELECT g, 'customer-' || g, g * 1.25, md5(g::text)
                   FROM generate_series(1, {rows}) AS g;"
            ),
        );
        Table { url, name }
    }

    /// Rows and a digest of every value, to compare a restored copy with.
    fn fingerprint(&self, url: &str) -> String {
        psql(
            url,
            &format!(
                "SELECT count(*) || ' ' || md5(string_agg(id || ',' || owner || ',' || amount || ',' || note, ';' ORDER BY id)) FROM {}",
                self.name
            ),
        )
    }
}

impl Drop for Table<'_> {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["--dbname", self.url, "-qc"])
            .arg(format!("DROP TABLE IF EXISTS {}", self.name))
            .output();
    }
}

/// A scratch database to restore into, dropped at the end.
struct Database {
    admin_url: String,
    name: String,
    url: String,
    /// `url` without the password (in PGPASSWORD instead): for command lines the CLI shows.
    url_without_password: String,
}

impl Database {
    fn new(url: &str) -> Database {
        let name = unique_ident("scratch");
        psql(url, &format!("CREATE DATABASE {name}"));
        let base = url.rsplit_once('/').unwrap().0;
        let (user, password, _) = support::pg_url_parts(url).unwrap();
        let scratch = format!("{base}/{name}");
        Database {
            admin_url: url.to_string(),
            url_without_password: scratch.replacen(
                &format!("{user}:{password}@"),
                &format!("{user}@"),
                1,
            ),
            url: scratch,
            name,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["--dbname", &self.admin_url, "-qc"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// A `pg_dump` job of one table, the database URL passed as a secret reference.
fn pg_job(name: &str, table: &str) -> Backup {
    Backup::command(
        name,
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

#[test]
fn a_deploy_takes_a_pg_dump_that_verifies_restores_and_is_named_on_rollback() {
    let Some(env) = TestEnv::get() else { return };
    let table = Table::new(&env.pg_url, 5000);
    let r = Region::new(&env, &[pg_job("db", &table.name)]);
    let v1 = format!("v1-{}", r.name);
    let bad = format!("bad-{}", r.name);
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    let _ib = env.build_sample(&r.host, &bad, &[("NEVER_HEALTHY", "1")]);

    let id = r.first_backup(&v1);

    // In the default store, kept out of git, listed and recorded in the release.
    let store = r.default_store();
    assert_eq!(
        std::fs::read_to_string(store.join(".gitignore"))
            .unwrap()
            .lines()
            .last(),
        Some("*")
    );
    let file = store.join(format!("{}/production/r1/db.dump.zst", r.name));
    let listed = r.list(&[]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["path"], file.display().to_string().as_str());
    let dump = zstd::decode_all(std::fs::File::open(&file).unwrap()).unwrap();
    let text = String::from_utf8_lossy(&dump);
    assert!(
        text.contains(&format!("CREATE TABLE public.{}", table.name)),
        "{text:.500}"
    );
    assert_eq!(listed[0]["bytes"], dump.len() as u64);
    let history = r.history();
    assert_eq!(history[0]["backups"][0]["sha256"], listed[0]["sha256"]);
    let table_out = r.run(&["backup", "list", "--region", &r.name]);
    assert!(support::stdout(&table_out)
        .lines()
        .nth(1)
        .unwrap()
        .starts_with(&id));

    r.verified(&id);

    // Off a terminal, restoring needs --yes: refused, nothing done (exit 2).
    let scratch = Database::new(&env.pg_url);
    let out = r.restore(&id, &scratch, false);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refusing to restore"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        psql(
            &scratch.url,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );

    // Restored into the scratch database: the same rows, value for value.
    let out = r.restore(&id, &scratch, true);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        table.fingerprint(&scratch.url),
        table.fingerprint(&env.pg_url)
    );
    assert!(table.fingerprint(&scratch.url).starts_with("5000 "));

    // A release that never turns healthy rolls back; its output names the backup taken
    // before it, which is not restored by itself.
    psql(
        &env.pg_url,
        &format!(
            "INSERT INTO {} VALUES (9999999, 'late', 1, 'after')",
            table.name
        ),
    );
    let out = r.deploy(&bad, &[]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let id2 = format!("{}/production/r2/db", r.name);
    assert!(
        stderr(&out).contains(&format!(
            "data was not restored: the backup taken before r2 is {id2}"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(r.running_versions(), [v1.as_str()]);
    assert!(
        psql(
            &env.pg_url,
            &format!("SELECT owner FROM {} WHERE id = 9999999", table.name)
        ) == "late"
    );

    // A damaged file fails verification with exit 1.
    r.damaged_fails_verify(&id, &file);
}

#[test]
fn a_failing_required_job_stops_the_deploy_before_any_container_changes() {
    let Some(env) = TestEnv::get() else { return };
    let table = Table::new(&env.pg_url, 10);
    let r = Region::new(&env, &[]);
    let (v1, v2) = (format!("v1-{}", r.name), format!("v2-{}", r.name));
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    let _i2 = env.build_sample(&r.host, &v2, &[]);
    assert_eq!(code(&r.deploy(&v1, &[])), 0);
    let before = r.containers();

    // pg_dump of a table that does not exist fails, as a real broken job would.
    let missing = format!("{}_missing", table.name);
    r.write(&[pg_job("db", &missing)]);
    let out = r.deploy(&v2, &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("backup job 'db' failed, so the deploy of {}/production did not start: `pg_dump` exited 1", r.name)),
        "{err}"
    );
    assert!(err.contains("no matching tables were found"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(r.containers(), before, "containers changed:\n{err}");
    assert_eq!(r.running_versions(), [v1.as_str()]);
    let history = r.history();
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    assert!(r.list(&[]).is_empty());
    assert!(!r
        .default_store()
        .join(&r.name)
        .join("production/r2")
        .exists());
    // The lock was released: the next deploy (the job now best effort) goes ahead, warning.
    r.write(&[pg_job("db", &missing).required(false)]);
    let out = r.deploy(&v2, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "backup job 'db' failed (not required; the deploy goes on): `pg_dump` exited 1"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(r.running_versions(), [v2.as_str()]);
    assert!(r.history()[0]["backups"][0]["error"].is_string());
}

#[test]
fn retention_keeps_the_last_n_of_its_own_region_and_environment() {
    let Some(env) = TestEnv::get() else { return };
    let table = Table::new(&env.pg_url, 10);
    let shared = tempfile::tempdir().unwrap();
    let job = pg_job("db", &table.name).keep(2).store(shared.path());
    let a = Region::new(&env, std::slice::from_ref(&job));
    let b = Region::new(&env, std::slice::from_ref(&job));
    let v = format!("v-{}", a.name);
    let _img = env.build_sample(&a.host, &v, &[]);

    // Another region and another environment of the same region, in the same store.
    assert_eq!(code(&b.deploy(&v, &[])), 0);
    assert_eq!(code(&a.deploy(&v, &["--env", "staging"])), 0);
    // Four releases of a/production: each changes the containers (a new variable), so
    // each takes a backup.
    for n in 1..=4 {
        a.write_with(
            std::slice::from_ref(&job),
            &[("GENERATION", &n.to_string())],
        );
        let out = a.deploy(&v, &[]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let ids = |r: &Region, extra: &[&str]| -> Vec<String> {
        r.list(extra)
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(&a, &["--env", "production"]),
        [
            format!("{}/production/r3/db", a.name),
            format!("{}/production/r4/db", a.name)
        ]
    );
    assert_eq!(
        ids(&a, &["--env", "staging"]),
        [format!("{}/staging/r1/db", a.name)]
    );
    assert_eq!(ids(&b, &[]), [format!("{}/production/r1/db", b.name)]);
    // The files are gone too, release directories with them.
    let prod = shared.path().join(&a.name).join("production");
    let mut dirs: Vec<String> = std::fs::read_dir(&prod)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(dirs, ["r3", "r4"]);
}

#[test]
fn an_exec_job_dumps_from_the_running_container() {
    let Some(env) = TestEnv::get() else { return };
    // The sample image is FROM scratch with only its binary: `--version` is a command it
    // can run, and it prints the APP_VERSION of the container it runs in.
    let job =
        |arg: &str| [Backup::exec("version", "web", &["/packfy-sample", arg]).compression("gzip")];
    let r = Region::new(&env, &job("--version"));
    let (v1, v2, v3) = (
        format!("v1-{}", r.name),
        format!("v2-{}", r.name),
        format!("v3-{}", r.name),
    );
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    let _i2 = env.build_sample(&r.host, &v2, &[]);
    let _i3 = env.build_sample(&r.host, &v3, &[]);

    // Nothing runs before the first release: nothing to back up, the deploy goes on.
    let out = r.deploy(&v1, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("backup job 'version' skipped"),
        "{}",
        stderr(&out)
    );

    // The second deploy execs in the v1 container before replacing it.
    let out = r.deploy(&v2, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let listed = r.list(&[]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        listed[0]["id"],
        format!("{}/production/r2/version", r.name).as_str()
    );
    assert_eq!(listed[0]["source"], "exec in web: /packfy-sample --version");
    let path = listed[0]["path"].as_str().unwrap();
    assert!(path.ends_with("version.dump.gz"), "{path}");
    let mut dump = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()),
        &mut dump,
    )
    .unwrap();
    assert_eq!(dump, format!("{v1}\n"));
    assert_eq!(
        code(&r.run(&["backup", "verify", listed[0]["id"].as_str().unwrap()])),
        0
    );

    // A command that fails in the container stops the deploy with its stderr.
    r.write(&job("no-such-subcommand"));
    let before = r.containers();
    let out = r.deploy(&v3, &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`exec in web: /packfy-sample no-such-subcommand` exited 2"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("packfy-sample: unknown argument"),
        "{}",
        stderr(&out)
    );
    assert_eq!(r.containers(), before);
    assert_eq!(r.running_versions(), [v2.as_str()]);
}

/// Peak resident memory of a process, sampled from /proc until it exits: (VmHWM kB, exit).
fn run_measuring(mut cmd: Command) -> (u64, Output, Duration) {
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let watcher = std::thread::spawn(move || {
        let mut peak = 0u64;
        while let Ok(s) = std::fs::read_to_string(&status) {
            if let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
            // A zombie has no memory left to report; the last reading stands.
            if s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    });
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    (watcher.join().unwrap(), out, took)
}

/// The variable the S3 secret key is referenced by in region files (`env:…`).
const S3_SECRET_VAR: &str = "PACKFY_TEST_S3_SECRET";

/// A prefix of the test bucket no other test uses, as the store URL.
fn s3_url(s3: &S3Env) -> String {
    format!("s3://{}/{}", s3.bucket, unique_name("bk"))
}

/// `pg_job` into `url`, with the key ID in the file and the secret key by reference.
fn s3_job(s3: &S3Env, url: &str, table: &str) -> Backup {
    pg_job("db", table).s3_store(
        url,
        &s3.endpoint,
        Some((&s3.access_key_id, &format!("env:{S3_SECRET_VAR}"))),
    )
}

#[test]
fn a_backup_in_an_s3_bucket_is_restored_from_a_fresh_checkout_and_pruned_there() {
    let Some(env) = TestEnv::get() else { return };
    let Some(s3) = S3Env::get() else { return };
    let table = Table::new(&env.pg_url, 2000);
    let url = s3_url(&s3);
    let job = s3_job(&s3, &url, &table.name).keep(2);
    let r = Region::with_s3(&env, &s3, std::slice::from_ref(&job));
    let v1 = format!("v1-{}", r.name);
    let _i1 = env.build_sample(&r.host, &v1, &[]);

    let id = r.first_backup(&v1);
    // In the bucket (the server's own files), and nothing on this machine.
    let prefix = url.strip_prefix(&format!("s3://{}/", s3.bucket)).unwrap();
    let object = s3.object_file(&format!("{prefix}/{id}.dump.zst"));
    let dump = zstd::decode_all(std::fs::File::open(&object).unwrap()).unwrap();
    assert!(
        String::from_utf8_lossy(&dump).contains(&format!("CREATE TABLE public.{}", table.name)),
        "{object:?}"
    );
    assert!(!r.default_store().exists());
    // The release record names the backup by store URL and ID.
    let recorded = &r.history()[0]["backups"][0];
    assert_eq!(recorded["id"], id.as_str());
    assert_eq!(recorded["store"], url.as_str());
    assert_eq!(recorded["path"], format!("{url}/{id}.dump.zst").as_str());
    assert_eq!(recorded["bytes"], dump.len() as u64);

    // Another machine: the same region file, no state, credentials from the AWS variables.
    let fresh = r
        .fresh_checkout(&[pg_job("db", &table.name).s3_store(&url, &s3.endpoint, None)])
        .var("AWS_ACCESS_KEY_ID", &s3.access_key_id)
        .var("AWS_SECRET_ACCESS_KEY", &s3.secret_access_key);
    let listed = fresh.list(&[]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["sha256"], recorded["sha256"]);
    fresh.verified(&id);
    let scratch = Database::new(&env.pg_url);
    let out = fresh.restore(&id, &scratch, true);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        table.fingerprint(&scratch.url),
        table.fingerprint(&env.pg_url)
    );
    assert!(table.fingerprint(&scratch.url).starts_with("2000 "));
    assert!(!fresh.default_store().exists());

    // A checkout whose region files no longer name the bucket: `--store` as the record names
    // it, the endpoint from AWS_ENDPOINT_URL (plain HTTP allowed by AWS_ALLOW_HTTP).
    let bare = r
        .fresh_checkout(&[])
        .var("AWS_ENDPOINT_URL", &s3.endpoint)
        .var("AWS_ALLOW_HTTP", "true")
        .var("AWS_ACCESS_KEY_ID", &s3.access_key_id)
        .var("AWS_SECRET_ACCESS_KEY", &s3.secret_access_key);
    let out = bare.run(&["backup", "verify", &id]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("no backup {id} in")),
        "{}",
        stderr(&out)
    );
    let out = bare.run(&["backup", "verify", &id, "--store", &url]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Retention (keep: 2) removes the objects of older backups from the bucket.
    for n in 2..=3 {
        r.write_with(
            std::slice::from_ref(&job),
            &[("GENERATION", &n.to_string())],
        );
        let out = r.deploy(&v1, &[]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let ids: Vec<String> = fresh
        .list(&[])
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            format!("{}/production/r2/db", r.name),
            format!("{}/production/r3/db", r.name)
        ]
    );
    assert!(!object.exists(), "{object:?} was not pruned");
    assert!(!s3.object_file(&format!("{prefix}/{id}.json")).exists());

    // A damaged object fails verification (exit 1), read back through S3.
    let newest = format!("{}/production/r3/db", r.name);
    fresh.damaged_fails_verify(
        &newest,
        &s3.object_file(&format!("{prefix}/{newest}.dump.zst")),
    );
}

#[test]
fn a_wrong_s3_secret_key_is_refused_clearly_and_never_shown() {
    let Some(env) = TestEnv::get() else { return };
    let Some(s3) = S3Env::get() else { return };
    let table = Table::new(&env.pg_url, 10);
    let url = s3_url(&s3);
    let wrong = format!("{}-wrong-0f3a", s3.secret_access_key);
    let r = Region::new(&env, &[])
        .var(S3_SECRET_VAR, &wrong)
        .secret(&wrong)
        .secret(&s3.secret_access_key);
    let v1 = format!("v1-{}", r.name);
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    assert_eq!(code(&r.deploy(&v1, &[])), 0);
    let before = r.containers();

    // A deploy whose backup cannot be stored does not start (exit 2, nothing changed).
    r.write_with(&[s3_job(&s3, &url, &table.name)], &[("GENERATION", "2")]);
    let out = r.deploy(&v1, &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("backup job 'db' failed, so the deploy of")
            && err.contains(&format!("{url} refused the credentials")),
        "{err}"
    );
    assert_eq!(r.containers(), before);
    assert_eq!(r.history().as_array().unwrap().len(), 1);

    // Listing names the store, the cause and where to look: a configuration error (2).
    let out = r.run(&["backup", "list", "--region", &r.name]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{url} refused the credentials")),
        "{err}"
    );
    assert!(err.contains("s3.secret_access_key"), "{err}");

    // A store that is not there is out of reach (6), not a credentials problem.
    let closed = "http://127.0.0.1:9";
    r.write(&[pg_job("db", &table.name).s3_store(
        &url,
        closed,
        Some((&s3.access_key_id, &format!("env:{S3_SECRET_VAR}"))),
    )]);
    let out = r.run(&["backup", "list", "--region", &r.name]);
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert!(stderr(&out).contains(&url), "{}", stderr(&out));
}

/// Deploys with a ~200 MB `pg_dump` to `store` (the default directory, or an S3 bucket) and
/// measures the CLI's peak memory: the dump must stream.
fn big_dump(store: Option<&S3Env>) {
    let Some(env) = TestEnv::get() else { return };
    // ~200 MB of dump: 1.4 M rows of ~146 bytes, mostly md5 hex of distinct inputs (zstd can
    // halve hex digits, not much more).
    let rows: u64 = std::env::var("PACKFY_BIG_DUMP_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_400_000);
    let table = Table::new(&env.pg_url, 0);
    psql(
        &env.pg_url,
        &format!(
            "INSERT INTO {} SELECT g, md5('a' || g) || md5('b' || g), g, md5('c' || g) || md5('d' || g)
               FROM generate_series(1, {rows}) AS g",
            table.name
        ),
    );
    let r = match store {
        None => Region::new(&env, &[pg_job("db", &table.name)]),
        Some(s3) => Region::with_s3(&env, s3, &[s3_job(s3, &s3_url(s3), &table.name)]),
    };
    let v1 = format!("v1-{}", r.name);
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    let (peak_kb, out, took) =
        run_measuring(r.cmd(&["deploy", "--region", &r.name, "--version", &v1]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Run outside Region::run: its output is checked here.
    let shown = support::text(&out);
    assert!(!shown.contains(&r.pg_url), "{shown}");
    if let Some(password) = &r.pg_password {
        assert!(!shown.contains(password.as_str()), "{shown}");
    }
    let listed = r.list(&[]);
    let dump_bytes = listed[0]["bytes"].as_u64().unwrap();
    let stored_bytes = listed[0]["stored_bytes"].as_u64().unwrap();
    let line = format!(
        "{}: dump {:.1} MB (stored {:.1} MB zstd) in {:.1}s; packfy-deploy peak RSS (VmHWM) {:.1} MB",
        if store.is_some() { "s3 store" } else { "directory store" },
        dump_bytes as f64 / 1e6,
        stored_bytes as f64 / 1e6,
        took.as_secs_f64(),
        peak_kb as f64 / 1024.0
    );
    eprintln!("{line}");
    if let Ok(path) = std::env::var("PACKFY_BENCH_OUT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Path::new(&path))
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
    if rows >= 1_400_000 {
        assert!(dump_bytes > 190_000_000, "{line}");
    }
    // Held in memory, the dump alone would be ~200 MB; streamed, the CLI stays small.
    assert!(peak_kb < 64 * 1024, "{line}");
    let out = r.run(&["backup", "verify", listed[0]["id"].as_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn a_200_mb_dump_streams_with_bounded_memory() {
    big_dump(None);
}

#[test]
fn a_200_mb_dump_streams_to_an_s3_bucket_with_bounded_memory() {
    let Some(s3) = S3Env::get() else { return };
    big_dump(Some(&s3));
}

/// A directory on one of the test hosts (a network namespace of this machine, so the test
/// can look at the files the store wrote there), removed at the end.
struct HostDir {
    path: PathBuf,
}

impl HostDir {
    fn new(env: &TestEnv) -> HostDir {
        HostDir {
            path: env.env_dir.join("ssh-stores").join(unique_name("bk")),
        }
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[test]
fn a_backup_on_a_host_over_ssh_is_restored_from_a_fresh_checkout_and_pruned_there() {
    let Some(env) = TestEnv::get() else { return };
    let Some(hosts) = support::HostsEnv::get(&env) else {
        return;
    };
    let ssh_config = hosts.ssh_config.display().to_string();
    let table = Table::new(&env.pg_url, 2000);
    let dir = HostDir::new(&env);
    let url = format!("{}{}", hosts.endpoint(0), dir.path.display());
    let job = pg_job("db", &table.name).store_url(&url).keep(2);
    let r = Region::new(&env, std::slice::from_ref(&job)).var("PACKFY_SSH_CONFIG", &ssh_config);
    let v1 = format!("v1-{}", r.name);
    let _i1 = env.build_sample(&r.host, &v1, &[]);

    let id = r.first_backup(&v1);
    // On the host (written by ssh's session there), and nothing in the default store here.
    let file = dir.path.join(format!("{id}.dump.zst"));
    let dump = zstd::decode_all(std::fs::File::open(&file).unwrap()).unwrap();
    assert!(
        String::from_utf8_lossy(&dump).contains(&format!("CREATE TABLE public.{}", table.name)),
        "{file:?}"
    );
    assert!(dir.path.join(format!("{id}.json")).is_file());
    assert!(!r.default_store().exists());
    // The release record names the backup by store URL and ID.
    let recorded = &r.history()[0]["backups"][0];
    assert_eq!(recorded["store"], url.as_str());
    assert_eq!(recorded["path"], format!("{url}/{id}.dump.zst").as_str());
    assert_eq!(recorded["bytes"], dump.len() as u64);
    let out = r.run(&["history", "--region", &r.name]);
    assert!(
        stderr(&out).contains(&format!("backup {id} in {url}"))
            || String::from_utf8_lossy(&out.stdout).contains(&format!("backup {id} in {url}")),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );

    // Another machine: the same region file, no state.
    let fresh = r
        .fresh_checkout(std::slice::from_ref(&job))
        .var("PACKFY_SSH_CONFIG", &ssh_config);
    let listed = fresh.list(&[]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["store"], url.as_str());
    assert_eq!(listed[0]["sha256"], recorded["sha256"]);
    fresh.verified(&id);
    let scratch = Database::new(&env.pg_url);
    let out = fresh.restore(&id, &scratch, true);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        table.fingerprint(&scratch.url),
        table.fingerprint(&env.pg_url)
    );
    assert!(table.fingerprint(&scratch.url).starts_with("2000 "));
    assert!(!fresh.default_store().exists());

    // A checkout whose region files no longer name the host: `--store` as the record names it.
    let bare = r.fresh_checkout(&[]).var("PACKFY_SSH_CONFIG", &ssh_config);
    let out = bare.run(&["backup", "verify", &id]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = bare.run(&["backup", "verify", &id, "--store", &url]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Retention (keep: 2) removes the older files from the host.
    for n in 2..=3 {
        r.write_with(
            std::slice::from_ref(&job),
            &[("GENERATION", &n.to_string())],
        );
        let out = r.deploy(&v1, &[]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let ids: Vec<String> = fresh
        .list(&[])
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            format!("{}/production/r2/db", r.name),
            format!("{}/production/r3/db", r.name)
        ]
    );
    assert!(!file.exists(), "{file:?} was not pruned");
    assert!(!dir.path.join(format!("{id}.json")).exists());
    assert!(
        !dir.path.join(format!("{}/production/r1", r.name)).exists(),
        "the pruned release's directory is left"
    );

    // A damaged file fails verification (exit 1), read back over ssh.
    let newest = format!("{}/production/r3/db", r.name);
    fresh.damaged_fails_verify(&newest, &dir.path.join(format!("{newest}.dump.zst")));
}

#[test]
fn a_store_host_out_of_reach_stops_the_deploy_and_is_named() {
    let Some(env) = TestEnv::get() else { return };
    let Some(hosts) = support::HostsEnv::get(&env) else {
        return;
    };
    let ssh_config = hosts.ssh_config.display().to_string();
    let table = Table::new(&env.pg_url, 10);
    let r = Region::new(&env, &[]).var("PACKFY_SSH_CONFIG", &ssh_config);
    let v1 = format!("v1-{}", r.name);
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    assert_eq!(code(&r.deploy(&v1, &[])), 0);
    let before = r.containers();

    // Nothing listens on port 9: the host is out of reach.
    let url = "ssh://root@127.0.0.1:9/srv/packfy-backups";
    r.write_with(
        &[pg_job("db", &table.name).store_url(url)],
        &[("GENERATION", "2")],
    );
    let out = r.deploy(&v1, &[]);
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{url}: cannot reach ssh://root@127.0.0.1:9"))
            && err.contains("Connection refused"),
        "{err}"
    );
    assert_eq!(r.containers(), before);
    assert_eq!(r.history().as_array().unwrap().len(), 1);
    let out = r.run(&["backup", "list", "--region", &r.name]);
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert!(stderr(&out).contains(url), "{}", stderr(&out));

    // A host whose key is not in known_hosts is refused the same way (strict checking).
    let unknown = format!("ssh://root@{}/srv/packfy-backups", hosts.addrs[0]);
    r.write(&[pg_job("db", &table.name).store_url(&unknown)]);
    let out = r.run(&["backup", "list", "--region", &r.name]);
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert!(stderr(&out).contains(&unknown), "{}", stderr(&out));

    // A store URL without a directory is a configuration error naming file:line:col.
    r.write(&[pg_job("db", &table.name).store_url(&hosts.endpoint(0))]);
    let out = r.run(&["validate", &r.name]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("names no directory on the host")
            && stderr(&out).contains(&format!("{}.yaml:", r.name)),
        "{}",
        stderr(&out)
    );
}
