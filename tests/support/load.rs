//! A load loop through HAProxy for the zero-downtime tests: clients with keep-alive
//! connections and clients that open a new connection per request (`Connection: close`), as
//! browsers and scripts do, each kind counting the requests that did not answer 200.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a load client talks to HAProxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One connection kept alive between requests (a new one after an error).
    KeepAlive,
    /// A new connection for every request, `Connection: close`.
    PerRequest,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::KeepAlive, Kind::PerRequest];

    fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::KeepAlive => "keep-alive",
            Kind::PerRequest => "new connection per request",
        }
    }

    /// Client `i` of a load: every second one opens a connection per request.
    fn of_client(i: usize) -> Kind {
        if i % 2 == 1 {
            Kind::PerRequest
        } else {
            Kind::KeepAlive
        }
    }
}

/// The counters of one kind of client.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// A load loop through HAProxy: `threads` clients (keep-alive and per-request ones in turn,
/// so at least one of each from 2 on), bounded by `max` requests and `limit` time.
pub struct Load {
    stop: Arc<AtomicBool>,
    tallies: Arc<[Tally; 2]>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    handles: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    pub fn start(frontend: &str, threads: usize) -> Load {
        assert!(threads >= 2, "a load needs a client of each kind");
        let stop = Arc::new(AtomicBool::new(false));
        let tallies: Arc<[Tally; 2]> = Arc::new(Default::default());
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let limit = Duration::from_secs(120);
        let max_per_thread = 60_000;
        let started = Instant::now();
        let handles = (0..threads)
            .map(|i| {
                let (stop, tallies, errors) = (stop.clone(), tallies.clone(), errors.clone());
                let frontend = frontend.to_string();
                let kind = Kind::of_client(i);
                std::thread::spawn(move || {
                    let tally = &tallies[kind.index()];
                    let mut n = 0;
                    let mut conn: Option<super::HttpConnection> = None;
                    while !stop.load(Ordering::Relaxed)
                        && started.elapsed() < limit
                        && n < max_per_thread
                    {
                        n += 1;
                        let result = match (kind, conn.as_mut()) {
                            (Kind::PerRequest, _) => super::http_request(&frontend, "/version"),
                            (Kind::KeepAlive, Some(c)) => c.get("/version"),
                            (Kind::KeepAlive, None) => super::HttpConnection::open(&frontend)
                                .and_then(|mut c| {
                                    let r = c.get("/version");
                                    conn = Some(c);
                                    r
                                }),
                        };
                        if result.is_err() {
                            conn = None;
                        }
                        let failure = match result {
                            Ok(r) if r.status == 200 => None,
                            Ok(r) => Some(format!("status {}", r.status)),
                            Err(e) => Some(e.to_string()),
                        };
                        match failure {
                            None => {
                                tally.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(why) => {
                                tally.failed.fetch_add(1, Ordering::Relaxed);
                                errors.lock().unwrap().push(format!(
                                    "{} client: {why} at {:?}",
                                    kind.as_str(),
                                    started.elapsed()
                                ));
                            }
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Load {
            stop,
            tallies,
            errors,
            handles,
            started,
        }
    }

    /// Runs `during` with the load on, from half a second before it to half a second after.
    pub fn around<T>(frontend: &str, threads: usize, during: impl FnOnce() -> T) -> (T, Counts) {
        let load = Load::start(frontend, threads);
        std::thread::sleep(Duration::from_millis(500));
        let out = during();
        std::thread::sleep(Duration::from_millis(500));
        (out, load.finish())
    }

    /// Stops the load; returns what it counted.
    pub fn finish(mut self) -> Counts {
        self.stop.store(true, Ordering::Relaxed);
        for h in std::mem::take(&mut self.handles) {
            h.join().unwrap();
        }
        let secs = self.started.elapsed().as_secs_f64();
        let by_kind = Kind::ALL.map(|k| {
            let t = &self.tallies[k.index()];
            (
                t.ok.load(Ordering::Relaxed),
                t.failed.load(Ordering::Relaxed),
            )
        });
        let ok = by_kind.iter().map(|k| k.0).sum();
        let failed = by_kind.iter().map(|k| k.1).sum();
        let errors = self
            .errors
            .lock()
            .unwrap()
            .iter()
            .take(5)
            .cloned()
            .collect();
        Counts {
            ok,
            failed,
            by_kind,
            rps: (ok + failed) as f64 / secs,
            errors,
        }
    }
}

/// A test that fails while its load runs must not leave the clients going: they would load
/// the lane the next test leases (seen: a canary test judged another's traffic).
impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in std::mem::take(&mut self.handles) {
            let _ = h.join();
        }
    }
}

/// What a load run counted: answers 200 and failures in all and per kind of client (the
/// first few failures named), requests per second.
#[derive(Debug)]
pub struct Counts {
    pub ok: u64,
    pub failed: u64,
    /// (ok, failed) per [`Kind`], in the order of [`Kind::ALL`].
    pub by_kind: [(u64, u64); 2],
    pub rps: f64,
    pub errors: Vec<String>,
}

impl Counts {
    /// (ok, failed) of the clients of `kind`.
    pub fn of(&self, kind: Kind) -> (u64, u64) {
        self.by_kind[kind.index()]
    }

    /// "keep-alive 812 ok / 0 failed, new connection per request 640 ok / 0 failed"
    pub fn per_kind(&self) -> String {
        Kind::ALL
            .iter()
            .map(|&k| {
                let (ok, failed) = self.of(k);
                format!("{} {ok} ok / {failed} failed", k.as_str())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Not one request failed during `what`, with keep-alive nor with a new connection per
    /// request, and at least `min_ok` were answered, a quarter of them at least by each kind
    /// of client: a sanity floor, not a benchmark (the load really ran through it, both
    /// ways; a loaded machine makes far fewer requests per second than an idle one, and any
    /// rate will do).
    pub fn assert_none_failed(&self, what: &str, min_ok: u64) {
        let Counts {
            ok, failed, rps, ..
        } = self;
        assert_eq!(
            *failed,
            0,
            "{failed} of {} requests failed during {what} ({}): {:?}",
            ok + failed,
            self.per_kind(),
            self.errors
        );
        assert!(
            *ok >= min_ok,
            "only {ok} requests were made during {what} ({rps:.0}/s; {})",
            self.per_kind()
        );
        for k in Kind::ALL {
            assert!(
                self.of(k).0 >= min_ok / 4,
                "only {} requests of the {} clients during {what} ({})",
                self.of(k).0,
                k.as_str(),
                self.per_kind()
            );
        }
        eprintln!(
            "{what}: {ok} requests at {rps:.0}/s, 0 failed ({})",
            self.per_kind()
        );
    }
}
