//! packfy-sample: the small HTTP service that packfy-deploy's real-environment tests deploy.
//!
//! Endpoints: `/health` (200 `{"status":"ok",…}`, 503 while unhealthy or draining),
//! `/version` (the plain version), `/` (region, currency, version, instance; 500 on the
//! `ERROR_RATE` fraction of requests), `/slow?ms=N` (answers after N ms).
//! With `PRINT_ENV=1` it prints its whole environment at start, like many apps.
//! Behaviour switches are environment variables, see [`config::Config`].
//!
//! On SIGTERM (or SIGINT) it closes its listening socket, serves the requests already
//! accepted or under way (also on keep-alive connections, which are then closed), and exits 0.
//!
//! `packfy-sample migrate` acts as a release step (a migration tool) instead of serving: it
//! prints what it does and, last, `schema N` (`MIGRATE_SCHEMA`, default 1), then exits 0.
//! With `MIGRATE_SQL` it is a real migration: it connects to PostgreSQL at `DATABASE_URL` and
//! runs those statements one by one, outside a transaction (as many migration tools do, so a
//! failure midway leaves the statements before it applied); a failing statement makes it exit
//! 1 after printing the database it was given and PostgreSQL's error, as migration tools'
//! errors do — the URL is the secret a deploy must mask. `MIGRATE_SLEEP_SECS` makes it take
//! that long first (a hanging migration); `MIGRATE_FAIL=1` makes it fail the same way without
//! a database.
//!
//! `packfy-sample healthcheck [HOST:PORT]` asks `/health` of the server on 127.0.0.1:PORT (or
//! HOST:PORT) and exits 0 on 200, 1 otherwise: the image's `HEALTHCHECK` (a `FROM scratch`
//! image has no curl), and a probe from one container to another.

mod config;
mod http;
mod sys;

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use config::Config;
use http::{Head, Request, Response};

/// How often blocked reads and the accept loop look at the shutdown flag.
const TICK: Duration = Duration::from_millis(100);
/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request head must arrive within this long once it has started.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `/slow` accepted.
const MAX_SLOW_MS: u64 = 120_000;
/// After SIGTERM, connections still open after this long are abandoned.
const DRAIN_LIMIT: Duration = Duration::from_secs(150);

struct State {
    cfg: Config,
    started: Instant,
    /// Requests to `/` so far, for the deterministic `ERROR_RATE`.
    root_requests: AtomicU64,
    /// Connections being served.
    open_connections: AtomicUsize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cfg = match Config::from_lookup(|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("packfy-sample: {e}");
            std::process::exit(2);
        }
    };
    match args.get(1).map(String::as_str) {
        None => serve(cfg),
        Some("healthcheck") => {
            let addr = args
                .get(2)
                .cloned()
                .unwrap_or_else(|| format!("127.0.0.1:{}", cfg.port));
            std::process::exit(healthcheck(&addr))
        }
        Some("--version") => println!("{}", cfg.version),
        Some("migrate") => std::process::exit(migrate(&cfg)),
        Some(other) => {
            eprintln!("packfy-sample: unknown argument {other:?} (expected nothing, `healthcheck [HOST:PORT]`, `migrate` or `--version`)");
            std::process::exit(2);
        }
    }
}

/// `packfy-sample migrate`: a migration tool; its exit code.
fn migrate(cfg: &Config) -> i32 {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let schema = env("MIGRATE_SCHEMA").unwrap_or_else(|| "1".into());
    println!(
        "packfy-sample {}: migrating {} to schema {schema}",
        cfg.version, cfg.region
    );
    if let Some(secs) = env("MIGRATE_SLEEP_SECS").and_then(|s| s.parse::<f64>().ok()) {
        println!("packfy-sample: this migration takes {secs}s");
        std::thread::sleep(Duration::from_secs_f64(secs));
    }
    let database = env("DATABASE_URL");
    let fail = |why: &dyn std::fmt::Display| {
        eprintln!(
            "error: cannot apply migration {schema} on {}: {why}",
            database.as_deref().unwrap_or("(no DATABASE_URL)")
        );
        1
    };
    if env("MIGRATE_FAIL").is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes")) {
        return fail(&"relation \"parcels\" already exists");
    }
    if let Some(sql) = env("MIGRATE_SQL") {
        let Some(url) = database.as_deref() else {
            return fail(&"MIGRATE_SQL is set but DATABASE_URL is not");
        };
        if let Err(e) = run_sql(url, &sql) {
            return fail(&e);
        }
    }
    println!("schema {schema}");
    0
}

/// Runs `sql`'s statements (separated by `;`) one by one on the database at `url`, each
/// committed on its own; stops at the first error (PostgreSQL's message, with its detail).
fn run_sql(url: &str, sql: &str) -> Result<(), String> {
    let mut config: postgres::Config = url.parse().map_err(|e| format!("bad DATABASE_URL: {e}"))?;
    config.connect_timeout(Duration::from_secs(10));
    let mut client = config
        .connect(postgres::NoTls)
        .map_err(|e| format!("cannot connect: {}", pg_error(&e)))?;
    for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        println!("packfy-sample: {statement}");
        client.batch_execute(statement).map_err(|e| pg_error(&e))?;
    }
    Ok(())
}

/// A PostgreSQL error as migration tools print it: the server's message, or the cause.
fn pg_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

fn serve(cfg: Config) {
    sys::on_termination_signals();
    let listener = match TcpListener::bind(("0.0.0.0", cfg.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("packfy-sample: cannot listen on port {}: {e}", cfg.port);
            std::process::exit(2);
        }
    };
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    if cfg.print_env {
        print_env();
    }
    println!(
        "packfy-sample {} listening on 0.0.0.0:{} (region {:?}, healthy after {:?}, never healthy {}, exit after {:?}, error rate {})",
        cfg.version, cfg.port, cfg.region, cfg.healthy_after, cfg.never_healthy, cfg.exit_after, cfg.error_rate
    );
    if let Some(after) = cfg.exit_after {
        std::thread::spawn(move || {
            std::thread::sleep(after);
            println!("packfy-sample: EXIT_AFTER_SECS reached, exiting with code 1");
            std::process::exit(1);
        });
    }
    let state = Arc::new(State {
        cfg,
        started: Instant::now(),
        root_requests: AtomicU64::new(0),
        open_connections: AtomicUsize::new(0),
    });

    while !sys::shutting_down() {
        sys::wait_readable(&listener, TICK);
        accept_pending(&listener, &state);
    }
    // Connections the kernel completed before the signal are requests in flight too.
    accept_pending(&listener, &state);
    drop(listener);
    println!(
        "packfy-sample: signal received, draining {} connection(s)",
        state.open_connections.load(Ordering::SeqCst)
    );
    let deadline = Instant::now() + DRAIN_LIMIT;
    while state.open_connections.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("packfy-sample: drained, exiting");
    std::process::exit(0);
}

fn accept_pending(listener: &TcpListener, state: &Arc<State>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                state.open_connections.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(state);
                std::thread::spawn(move || {
                    let _guard = OpenConnection(&state.open_connections);
                    serve_connection(stream, &state);
                });
            }
            Err(e) if http::is_timeout(&e) => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("packfy-sample: accept: {e}");
                return;
            }
        }
    }
}

/// Counts a connection as open until dropped (also if its thread panics).
struct OpenConnection<'a>(&'a AtomicUsize);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve_connection(stream: TcpStream, state: &State) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(TICK));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let idle_since = Instant::now();
        let mut head_started: Option<Instant> = None;
        let head = http::read_head(&mut reader, |started| {
            if started {
                let t = *head_started.get_or_insert_with(Instant::now);
                t.elapsed() > HEAD_TIMEOUT
            } else {
                sys::shutting_down() || idle_since.elapsed() > IDLE_TIMEOUT
            }
        });
        let head = match head {
            Ok(Head::Complete(h)) => h,
            Ok(Head::Closed) | Err(_) => break,
        };
        let req = match Request::parse(&head) {
            Ok(r) => r,
            Err(e) => {
                let _ =
                    Response::text(400, format!("{e}\n")).write_to(&mut writer, false, false, &[]);
                break;
            }
        };
        if http::skip_body(&mut reader, req.content_length).is_err() {
            break;
        }
        let resp = respond(&req, state);
        // Decided after the handler ran: a request that began before SIGTERM is answered,
        // and its connection is closed rather than kept idle.
        let keep_alive = req.keep_alive && !sys::shutting_down();
        let version = state.cfg.version.as_str();
        let instance = state.cfg.instance.as_str();
        let extra = [
            ("X-Packfy-Version", version),
            ("X-Packfy-Instance", instance),
        ];
        let extra = if instance.is_empty() {
            &extra[..1]
        } else {
            &extra[..]
        };
        let written = resp.write_to(&mut writer, req.method == "HEAD", keep_alive, extra);
        println!(
            "{} {}{}{} {}",
            req.method,
            req.path,
            if req.query.is_empty() { "" } else { "?" },
            req.query,
            resp.status
        );
        if written.is_err() || !keep_alive {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Write);
    // Let the peer see our FIN before the socket is dropped, so unread bytes cause no RST.
    let mut sink = [0u8; 512];
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        match reader.get_mut().read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if http::is_timeout(&e) => {}
            Err(_) => break,
        }
    }
}

fn respond(req: &Request, state: &State) -> Response {
    let cfg = &state.cfg;
    let js = http::json_str;
    match req.path.as_str() {
        "/health" => {
            let status = if sys::shutting_down() {
                "draining"
            } else if cfg.never_healthy {
                "unhealthy"
            } else if state.started.elapsed() < cfg.healthy_after {
                "starting"
            } else {
                "ok"
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            Response::json(
                if status == "ok" { 200 } else { 503 },
                format!(
                    "{{\"status\":{},\"version\":{},\"timestamp\":{}}}",
                    js(status),
                    js(&cfg.version),
                    js(&http::rfc3339(now))
                ),
            )
        }
        "/version" => Response::text(200, cfg.version.clone()),
        "/" => {
            let n = state.root_requests.fetch_add(1, Ordering::SeqCst) + 1;
            if config::nth_request_fails(n, cfg.error_rate) {
                return Response::json(
                    500,
                    format!("{{\"error\":\"injected failure\",\"request\":{n}}}"),
                );
            }
            Response::json(
                200,
                format!(
                    "{{\"region\":{},\"currency\":{},\"version\":{},\"instance\":{}}}",
                    js(&cfg.region),
                    js(&cfg.currency),
                    js(&cfg.version),
                    js(&cfg.instance)
                ),
            )
        }
        "/slow" => {
            let ms = match req.query_param("ms").map(str::parse::<u64>) {
                None => 1000,
                Some(Ok(ms)) if ms <= MAX_SLOW_MS => ms,
                Some(_) => {
                    return Response::text(
                        400,
                        format!("ms must be a number of milliseconds up to {MAX_SLOW_MS}\n"),
                    )
                }
            };
            std::thread::sleep(Duration::from_millis(ms));
            Response::json(
                200,
                format!("{{\"slept_ms\":{ms},\"version\":{}}}", js(&cfg.version)),
            )
        }
        _ => Response::text(404, "not found\n"),
    }
}

/// The whole environment on stdout, one `NAME=value` per line in the order the process got
/// it (as `env` prints it): what many apps log at start, secrets included.
fn print_env() {
    let mut out = std::io::stdout().lock();
    for (k, v) in std::env::vars_os() {
        let _ = writeln!(out, "{}={}", k.to_string_lossy(), v.to_string_lossy());
    }
    let _ = out.flush();
}

/// Asks `/health` of the server at `addr` (HOST:PORT); 0 on 200.
fn healthcheck(addr: &str) -> i32 {
    let ask = || -> std::io::Result<bool> {
        let sock = std::net::ToSocketAddrs::to_socket_addrs(addr)?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))?;
        let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /health HTTP/1.0\r\n\r\n")?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        Ok(buf.starts_with(b"HTTP/1.1 200 "))
    };
    match ask() {
        Ok(true) => 0,
        Ok(false) => {
            eprintln!("healthcheck: {addr}/health is not 200");
            1
        }
        Err(e) => {
            eprintln!("healthcheck: {addr}: {e}");
            1
        }
    }
}
