//! A load loop through HAProxy: `threads` clients with keep-alive connections, counting
//! the requests that did not answer 200, for the zero-downtime tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A load loop through HAProxy: `threads` clients, bounded by `max` requests and `limit` time.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    handles: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    pub fn start(frontend: &str, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let limit = Duration::from_secs(120);
        let max_per_thread = 60_000;
        let started = Instant::now();
        let handles = (0..threads)
            .map(|_| {
                let (stop, ok, failed, errors) =
                    (stop.clone(), ok.clone(), failed.clone(), errors.clone());
                let frontend = frontend.to_string();
                std::thread::spawn(move || {
                    let mut n = 0;
                    let mut conn: Option<super::HttpConnection> = None;
                    while !stop.load(Ordering::Relaxed)
                        && started.elapsed() < limit
                        && n < max_per_thread
                    {
                        n += 1;
                        // Keep-alive to HAProxy, as browsers do; a new connection after an error.
                        let result = match conn.as_mut() {
                            Some(c) => c.get("/version"),
                            None => super::HttpConnection::open(&frontend).and_then(|mut c| {
                                let r = c.get("/version");
                                conn = Some(c);
                                r
                            }),
                        };
                        if result.is_err() {
                            conn = None;
                        }
                        match result {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.lock().unwrap().push(format!(
                                    "status {} at {:?}",
                                    r.status,
                                    started.elapsed()
                                ));
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors
                                    .lock()
                                    .unwrap()
                                    .push(format!("{e} at {:?}", started.elapsed()));
                            }
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
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
        let ok = self.ok.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
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

/// What a load run counted: answers 200, failures (and the first few), requests per second.
#[derive(Debug)]
pub struct Counts {
    pub ok: u64,
    pub failed: u64,
    pub rps: f64,
    pub errors: Vec<String>,
}

impl Counts {
    /// Not one request failed during `what`, and at least `min_ok` were answered: a sanity
    /// floor, not a benchmark (the load really ran through it; a loaded machine makes far
    /// fewer requests per second than an idle one, and any rate will do).
    pub fn assert_none_failed(&self, what: &str, min_ok: u64) {
        let Counts {
            ok, failed, rps, ..
        } = self;
        assert_eq!(
            *failed,
            0,
            "{failed} of {} requests failed during {what}: {:?}",
            ok + failed,
            self.errors
        );
        assert!(
            *ok >= min_ok,
            "only {ok} requests were made during {what} ({rps:.0}/s)"
        );
        eprintln!("{what}: {ok} requests at {rps:.0}/s, 0 failed");
    }
}
