//! Bounded load through HAProxy that counts the answers by body (the version answering,
//! `5xx`, `error: …`): the share of each release in a window, and the failed requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bounded load through HAProxy: keep-alive clients and one that opens a connection per
/// request, counting answers by body (the version, or `5xx`/`error: …`).
pub struct Answers {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<HashMap<String, u64>>>,
    errors: Arc<Mutex<Vec<String>>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Answers {
    /// `path`: `/version` (answers the version) or `/` (the sample app's `ERROR_RATE`).
    pub fn start(frontend: &str, path: &'static str) -> Answers {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let handles = (0..3)
            .map(|i| {
                let (stop, seen, errors) = (stop.clone(), seen.clone(), errors.clone());
                let frontend = frontend.to_string();
                let keep_alive = i > 0;
                std::thread::spawn(move || {
                    let mut conn: Option<super::HttpConnection> = None;
                    let mut n = 0u32;
                    while !stop.load(Ordering::Relaxed)
                        && started.elapsed() < Duration::from_secs(150)
                        && n < 100_000
                    {
                        n += 1;
                        let r = match (keep_alive, conn.as_mut()) {
                            (true, Some(c)) => c.get(path),
                            _ => super::HttpConnection::open(&frontend).and_then(|mut c| {
                                let r = c.get(path);
                                if keep_alive {
                                    conn = Some(c);
                                }
                                r
                            }),
                        };
                        let key = match r {
                            Ok(r) if r.status == 200 && path == "/version" => {
                                r.body.trim().to_string()
                            }
                            Ok(r) if r.status == 200 => "200".to_string(),
                            Ok(r) if r.status >= 500 => {
                                if path == "/version" {
                                    errors.lock().unwrap().push(format!("status {}", r.status));
                                }
                                "5xx".to_string()
                            }
                            Ok(r) => format!("status {}", r.status),
                            Err(e) => {
                                conn = None;
                                errors.lock().unwrap().push(e.to_string());
                                "error".to_string()
                            }
                        };
                        *seen.lock().unwrap().entry(key).or_default() += 1;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
            })
            .collect();
        Answers {
            stop,
            seen,
            errors,
            handles,
        }
    }

    pub fn snapshot(&self) -> HashMap<String, u64> {
        self.seen.lock().unwrap().clone()
    }

    /// The answers counted between two snapshots.
    pub fn between(a: &HashMap<String, u64>, b: &HashMap<String, u64>) -> HashMap<String, u64> {
        b.iter()
            .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0)))
            .collect()
    }

    /// Waits until `n` more answers came, then returns them.
    pub fn window(&self, n: u64) -> HashMap<String, u64> {
        let a = self.snapshot();
        let t0 = Instant::now();
        loop {
            let b = self.snapshot();
            let got: u64 = Self::between(&a, &b).values().sum();
            if got >= n || t0.elapsed() > Duration::from_secs(60) {
                return Self::between(&a, &b);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it; returns every answer counted and the first errors.
    pub fn finish(mut self) -> (HashMap<String, u64>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for h in std::mem::take(&mut self.handles) {
            h.join().unwrap();
        }
        let seen = self.seen.lock().unwrap().clone();
        let errors = self
            .errors
            .lock()
            .unwrap()
            .iter()
            .take(5)
            .cloned()
            .collect();
        (seen, errors)
    }
}

/// A test that fails while its load runs must not leave the clients going: they would load
/// the lane the next test leases (seen: a canary test judged another's traffic).
impl Drop for Answers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in std::mem::take(&mut self.handles) {
            let _ = h.join();
        }
    }
}

/// Answers that were neither a 200 from one of `versions` (a failed request).
pub fn failed(all: &HashMap<String, u64>, versions: &[&String]) -> u64 {
    all.iter()
        .filter(|(k, _)| !versions.contains(k))
        .map(|(_, n)| n)
        .sum()
}

pub fn share(counts: &HashMap<String, u64>, version: &str) -> f64 {
    let total: u64 = counts.values().sum();
    100.0 * counts.get(version).copied().unwrap_or(0) as f64 / total.max(1) as f64
}
