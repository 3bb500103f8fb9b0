//! HAProxy through its Runtime API: one-off commands, `show stat` rows, and test lanes (a
//! backend and its frontend leased by one test at a time, [`TestEnv::lease_lane`]).

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{wait_until, TestEnv};

impl TestEnv {
    /// Leases a test lane: an HAProxy backend and its frontend that no other test uses
    /// until the lease is dropped. Waits (up to 3 minutes) while every lane is taken. The
    /// lane starts empty, and its servers are deleted again when the lease is dropped.
    pub fn lease_lane(&self) -> Lane {
        let mut lane = lease_lane(
            &self.lane_backends,
            &self.lane_frontends,
            &self.haproxy_socket,
            &self.env_dir,
        );
        let i = self.lane_backends.iter().position(|b| *b == lane.backend);
        lane.preview_frontend = i.and_then(|i| self.lane_preview_frontends.get(i).cloned());
        lane
    }
}

/// Leases one of the lanes `backends` (frontends alike) of the HAProxy on `socket`: see
/// [`TestEnv::lease_lane`]. The locks are files under `env_dir/locks`, one per backend.
pub fn lease_lane(
    backends: &[String],
    frontends: &[String],
    socket: &Path,
    env_dir: &Path,
) -> Lane {
    assert!(
        !backends.is_empty(),
        "no HAProxy test lanes (PACKFY_HAPROXY_TEST_LANES=0?)"
    );
    let dir = env_dir.join("locks");
    fs::create_dir_all(&dir).expect("create target/test-env/locks");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        for (backend, frontend) in backends.iter().zip(frontends) {
            if let Some(lock) = LaneLock::try_acquire(dir.join(format!("{backend}.lock"))) {
                let lane = Lane {
                    backend: backend.clone(),
                    frontend: frontend.clone(),
                    socket: socket.to_path_buf(),
                    preview_frontend: None,
                    _lock: Some(lock),
                };
                lane.clear();
                return lane;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no HAProxy test lane became free within 3 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends one command to HAProxy's Runtime API on `socket` and returns its answer.
/// Panics when the socket cannot be used.
pub fn haproxy_cmd(socket: &Path, cmd: &str) -> String {
    let talk = || -> io::Result<String> {
        let mut s = UnixStream::connect(socket)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(cmd.as_bytes())?;
        s.write_all(b"\n")?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    };
    talk().unwrap_or_else(|e| panic!("HAProxy runtime API {}: {cmd:?}: {e}", socket.display()))
}

/// One server's row of `show stat`, by column name (`status`, `weight`, `hrsp_5xx`, …).
pub fn haproxy_server_stat(
    socket: &Path,
    backend: &str,
    server: &str,
) -> Option<HashMap<String, String>> {
    haproxy_servers_stat(socket, backend)
        .into_iter()
        .find(|row| row.get("svname").map(String::as_str) == Some(server))
}

/// The rows of `show stat` of `backend`'s servers (not its BACKEND summary), by column name.
pub fn haproxy_servers_stat(socket: &Path, backend: &str) -> Vec<HashMap<String, String>> {
    let text = haproxy_cmd(socket, "show stat");
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let header: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.first() == Some(&backend) && f.get(1).is_some_and(|s| *s != "BACKEND"))
        .map(|fields| {
            header
                .iter()
                .zip(fields)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// An HAProxy backend and its frontend, leased by [`TestEnv::lease_lane`] for one test.
pub struct Lane {
    pub backend: String,
    /// `127.0.0.1:PORT`.
    pub frontend: String,
    pub socket: PathBuf,
    /// The frontend of the lane's blue-green preview backend (`BACKEND_preview`), when the
    /// env has one (`PACKFY_HAPROXY_TEST_PREVIEW_FRONTENDS`).
    pub preview_frontend: Option<String>,
    /// The lease; `None` for a twin on another HAProxy, which its original's lease covers.
    _lock: Option<LaneLock>,
}

impl Lane {
    /// The same backend on another HAProxy with the same configuration (its Runtime API
    /// `socket`, its `frontend`), under this lane's lease; its servers are deleted now and
    /// when it is dropped.
    pub fn twin(&self, socket: &Path, frontend: &str) -> Lane {
        let lane = Lane {
            backend: self.backend.clone(),
            frontend: frontend.to_string(),
            socket: socket.to_path_buf(),
            preview_frontend: None,
            _lock: None,
        };
        lane.clear();
        lane
    }

    /// Runtime API command (see [`haproxy_cmd`]).
    pub fn cmd(&self, cmd: &str) -> String {
        haproxy_cmd(&self.socket, cmd)
    }

    /// Adds server `name` at `addr` with a health check of `GET /health` every second
    /// (down after 3 failures, up after 2 successes), enables it and its check. It serves
    /// once the check has passed: see [`Lane::wait_status`].
    pub fn add_server(&self, name: &str, addr: &str) {
        let be = &self.backend;
        for cmd in [
            format!("add server {be}/{name} {addr} check inter 1s fall 3 rise 2"),
            format!("enable health {be}/{name}"),
            format!("set server {be}/{name} state ready"),
        ] {
            let answer = self.cmd(&cmd);
            let answer = answer.trim();
            assert!(
                answer.is_empty() || answer.contains("New server registered"),
                "HAProxy refused {cmd:?}: {answer}"
            );
        }
    }

    /// The server's `show stat` status (`UP`, `DOWN`, `DRAIN`, `MAINT`, `UP 1/3` …).
    pub fn status(&self, name: &str) -> Option<String> {
        haproxy_server_stat(&self.socket, &self.backend, name)
            .and_then(|s| s.get("status").cloned())
    }

    /// Waits until the server's status is `status`.
    pub fn wait_status(&self, name: &str, status: &str, timeout: Duration) {
        wait_until(
            timeout,
            &format!("{}/{name} to be {status}", self.backend),
            || self.status(name).as_deref() == Some(status),
        );
    }

    /// The lane's blue-green preview backend.
    pub fn preview_backend(&self) -> String {
        format!("{}_preview", self.backend)
    }

    /// Names of the servers in the backend.
    pub fn servers(&self) -> Vec<String> {
        self.servers_of(&self.backend)
    }

    /// Names of the servers in `backend` (none when HAProxy has no such backend).
    pub fn servers_of(&self, backend: &str) -> Vec<String> {
        let text = self.cmd(&format!("show servers state {backend}"));
        // Line 1: format version; line 2: `# be_id be_name srv_id srv_name …`.
        text.lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().nth(3).map(String::from))
            .collect()
    }

    /// Deletes every server of the backend (maintenance, sessions cut, `del server`).
    pub fn clear(&self) {
        for be in [self.backend.clone(), self.preview_backend()] {
            self.clear_backend(&be);
        }
    }

    fn clear_backend(&self, backend: &str) {
        for name in self.servers_of(backend) {
            let s = format!("{backend}/{name}");
            self.cmd(&format!("set server {s} state maint"));
            self.cmd(&format!("shutdown sessions server {s}"));
            let deadline = Instant::now() + Duration::from_secs(5);
            while !self
                .cmd(&format!("del server {s}"))
                .contains("Server deleted")
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // During a panic HAProxy may be what failed: do not panic again.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.clear()));
    }
}

/// A lane lock: `flock(2)` on `target/test-env/locks/BACKEND.lock`, held while this value
/// lives. The kernel releases it when the holder exits, however it exits, so no lock is ever
/// stale and lock files are never deleted (deleting one that another process has open
/// would let two processes hold "the same" lock).
///
/// The file also names the holder's pid while held (and is emptied on release), which keeps
/// it exclusive against copies of the older create-new-file locks (a file naming a live
/// process other than this one counts as held).
pub struct LaneLock {
    file: fs::File,
}

impl LaneLock {
    /// Takes the lock at `path` if it is free; never waits.
    pub fn try_acquire(path: PathBuf) -> Option<LaneLock> {
        use std::os::fd::AsRawFd;
        use std::os::raw::c_int;
        extern "C" {
            fn flock(fd: c_int, operation: c_int) -> c_int;
        }
        const LOCK_EX: c_int = 2;
        const LOCK_NB: c_int = 4;

        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { flock(file.as_raw_fd(), LOCK_EX | LOCK_NB) } != 0 {
            return None;
        }
        let mut content = String::new();
        let _ = file.read_to_string(&mut content);
        let me = std::process::id();
        let other_holder = content
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| pid != me && Path::new(&format!("/proc/{pid}")).exists());
        if other_holder {
            return None; // dropping `file` releases the flock
        }
        let _ = file.set_len(0);
        let _ = file.write_all_at(me.to_string().as_bytes(), 0);
        Some(LaneLock { file })
    }
}

impl Drop for LaneLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        // Closing the file releases the flock.
    }
}
