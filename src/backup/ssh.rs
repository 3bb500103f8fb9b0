//! A backup store in a directory on a host reached over SSH (`store:
//! ssh://[USER@]HOST[:PORT]/PATH`, usually one of the region's hosts), through the system's
//! `ssh` client as the Docker target uses it (src/ssh.rs: `-F $PACKFY_SSH_CONFIG`, the
//! user's keys and agent, known_hosts checked strictly, one ControlMaster per host per run).
//!
//! The layout is the directory store's under PATH on the host: `<region>/<env>/<release>/
//! <job>.<ext>` beside `<job>.json`, so a backup is named by its store URL and ID alone, and
//! any machine that can log in to the host lists, verifies and restores it.
//!
//! Every operation is one POSIX `sh` command on the host, its paths single-quoted (the store's
//! path and the backup IDs are of plain characters, checked before): no program of ours needs
//! to be installed there. Dumps stream both ways through ssh's stdin/stdout (`cat`), never
//! held in memory here: the upload writes `.<job>.partial` and is renamed in after its
//! manifest is written (as in a local directory, a listed backup always has its dump); a
//! listing reads every manifest of a region in one session.

use std::io::{self, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use tokio::sync::OnceCell;

use super::store::StoreError;
use crate::config::model::KnownHosts;
use crate::ssh::SshHost;

/// ssh's own exit status when it could not log in or lost the connection.
const SSH_FAILED: i32 = 255;

/// A directory on a host.
#[derive(Debug)]
pub struct Remote {
    /// `ssh://[user@]host[:port]/path`, as shown and as recorded.
    pub url: String,
    /// The absolute directory on the host, without a trailing slash.
    root: String,
    /// The host as written (not logged in).
    host: SshHost,
    /// The host once logged in, with its master connection.
    logged_in: OnceCell<SshHost>,
}

impl Remote {
    /// The store at `ssh://[user@]host[:port]` + `root` (as `parse_ssh_url` split it). Nothing
    /// is reached until the first operation.
    pub fn open(endpoint: &str, root: &str) -> Result<Remote, String> {
        let host = SshHost::parse(endpoint, None, KnownHosts::Strict)
            .unwrap_or_else(|| Err(format!("'{endpoint}' is not an ssh:// URL")))?;
        Ok(Remote {
            url: format!("{endpoint}{root}"),
            root: root.to_string(),
            host,
            logged_in: OnceCell::new(),
        })
    }

    /// Logs in once (exit 6 naming the host and quoting ssh when it cannot), then reuses the
    /// master connection.
    pub async fn connect(&self) -> Result<&SshHost, StoreError> {
        self.logged_in
            .get_or_try_init(|| async {
                self.host
                    .clone()
                    .login()
                    .await
                    .map_err(|e| StoreError::Unreachable {
                        store: self.url.clone(),
                        why: e.to_string(),
                    })
            })
            .await
    }

    /// The URL of the file at `rel` (what records show as a backup's path).
    pub fn url_of(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url)
    }

    /// The absolute path on the host of `rel`, single-quoted for `sh`.
    fn at(&self, rel: &str) -> String {
        quote(&format!("{}/{rel}", self.root))
    }

    /// `ssh … HOST SCRIPT` (blocking): the master connection once logged in, a login of its
    /// own before.
    fn command(&self, script: &str) -> Command {
        let host = self.logged_in.get().unwrap_or(&self.host);
        let mut cmd = Command::new("ssh");
        cmd.args(host.args()).arg(script);
        cmd
    }

    /// Runs `script` on the host with `input` on its stdin; its stdout, or `None` when it
    /// exited 1 (the scripts' "no such file").
    async fn run(&self, script: String, input: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
        self.connect().await?;
        let mut cmd = self.command(&script);
        let url = self.url.clone();
        let out = tokio::task::spawn_blocking(move || {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn()?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(&input)?;
            }
            child.wait_with_output()
        })
        .await
        .map_err(|e| StoreError::Io(format!("{url}: {e}")))?
        .map_err(|e| StoreError::Io(format!("{url}: cannot run ssh: {e}")))?;
        match out.status.code() {
            Some(0) => Ok(Some(out.stdout)),
            Some(1) => Ok(None),
            code => Err(self.failed(code, &out.stderr)),
        }
    }

    /// What a failed command means: ssh itself failed (255: the host is out of reach), or the
    /// command on the host did.
    fn failed(&self, code: Option<i32>, stderr: &[u8]) -> StoreError {
        let said = last_line(stderr);
        if code == Some(SSH_FAILED) {
            StoreError::Unreachable {
                store: self.url.clone(),
                why: format!("ssh {} said: {said}", self.host.name()),
            }
        } else {
            StoreError::Io(format!("{} on {}: {said}", self.url, self.host.name()))
        }
    }

    /// Every manifest under `rel` (a region, or a region's environment), read in one session:
    /// (its path relative to the store, its bytes).
    pub async fn manifests(&self, rel: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let depth = if rel.contains('/') { "*/*" } else { "*/*/*" };
        // Each manifest as its relative path, a newline, its bytes, a NUL.
        let script = format!(
            "cd {} 2>/dev/null || exit 0; for f in {}/{depth}.json; do [ -f \"$f\" ] || continue; printf '%s\\n' \"$f\"; cat \"$f\"; printf '\\0'; done",
            quote(&self.root),
            quote(rel),
        );
        let out = self.run(script, Vec::new()).await?.unwrap_or_default();
        Ok(out
            .split(|b| *b == 0)
            .filter_map(|entry| {
                let nl = entry.iter().position(|b| *b == b'\n')?;
                let path = String::from_utf8_lossy(&entry[..nl]).into_owned();
                Some((path, entry[nl + 1..].to_vec()))
            })
            .collect())
    }

    /// The file at `rel` (a manifest), `None` when there is none.
    pub async fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let f = self.at(rel);
        self.run(format!("[ -f {f} ] || exit 1; cat {f}"), Vec::new())
            .await
    }

    /// Writes `body` as the manifest `manifest_rel` (atomically), then renames the dump's
    /// partial file `partial_rel` to `dump_rel`.
    pub async fn commit(
        &self,
        manifest_rel: &str,
        body: Vec<u8>,
        partial_rel: &str,
        dump_rel: &str,
    ) -> Result<(), StoreError> {
        let m = self.at(manifest_rel);
        let script = format!(
            "cat > {m}.partial && mv {m}.partial {m} && mv {} {} || {{ rm -f {m}.partial {m}; exit 2; }}",
            self.at(partial_rel),
            self.at(dump_rel)
        );
        self.run(script, body).await.map(drop)
    }

    /// Removes the files at `rels` and their directory once it is empty; files that are not
    /// there are not an error.
    pub async fn remove(&self, rels: &[&str]) -> Result<(), StoreError> {
        let Some(first) = rels.first() else {
            return Ok(());
        };
        let files: Vec<String> = rels.iter().map(|r| self.at(r)).collect();
        let dir = first.rsplit_once('/').map_or("", |(d, _)| d);
        let script = format!(
            "rm -f {} && {{ rmdir {} 2>/dev/null; true; }}",
            files.join(" "),
            self.at(dir)
        );
        self.run(script, Vec::new()).await.map(drop)
    }

    /// An upload of the dump into `partial_rel` (its directory made first): the compressor
    /// thread writes into ssh's stdin.
    pub fn upload(&self, partial_rel: &str) -> Result<Upload, StoreError> {
        let f = self.at(partial_rel);
        let dir = self.at(partial_rel.rsplit_once('/').map_or("", |(d, _)| d));
        let mut cmd = self.command(&format!("mkdir -p {dir} && cat > {f}"));
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| StoreError::Io(format!("{}: cannot run ssh: {e}", self.url)))?;
        let stdin = child.stdin.take();
        Ok(Upload {
            child,
            stdin,
            what: format!("{} on {}", self.url, self.host.name()),
        })
    }

    /// A blocking reader of the file at `rel`, streamed (for a blocking thread only); the
    /// file is checked first, so a missing one is an error here, not a short read.
    pub async fn reader(&self, rel: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        let f = self.at(rel);
        if self.run(format!("[ -f {f} ]"), Vec::new()).await?.is_none() {
            return Err(StoreError::Io(format!("{} has no file {rel}", self.url)));
        }
        let mut child = self
            .command(&format!("cat {f}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| StoreError::Io(format!("{}: cannot run ssh: {e}", self.url)))?;
        let stdout = child.stdout.take();
        Ok(Box::new(Download {
            child,
            stdout,
            what: self.url_of(rel),
        }))
    }
}

/// A dump being written to the host: `ssh HOST 'cat > FILE'`.
pub struct Upload {
    child: Child,
    stdin: Option<ChildStdin>,
    what: String,
}

impl Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &mut self.stdin {
            Some(s) => s.write(data),
            None => Err(io::Error::other("the upload is closed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stdin.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl super::stream::Sink for Upload {
    /// Ends the stream and waits for the file to be written on the host.
    fn close(mut self: Box<Self>) -> io::Result<()> {
        drop(self.stdin.take());
        let mut err = Vec::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_end(&mut err);
        }
        let status = self.child.wait()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{}: {}",
                self.what,
                last_line(&err)
            )))
        }
    }
}

impl Drop for Upload {
    /// An upload dropped before `close` (a failed job) is cut off.
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A file read from the host: `ssh HOST cat FILE`. Its end is an error when `cat` or ssh
/// failed, so a cut connection never passes as a short dump.
struct Download {
    child: Child,
    stdout: Option<ChildStdout>,
    what: String,
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(out) = &mut self.stdout else {
            return Ok(0);
        };
        let n = out.read(buf)?;
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        self.stdout = None;
        let mut err = Vec::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_end(&mut err);
        }
        let status = self.child.wait()?;
        if status.success() {
            Ok(0)
        } else {
            Err(io::Error::other(format!(
                "reading {} failed: {}",
                self.what,
                last_line(&err)
            )))
        }
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        if self.stdout.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `s` single-quoted for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The last line with something in it, or what ssh's exit means when there is none.
fn last_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(nothing on stderr)")
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting_keeps_a_path_one_word() {
        assert_eq!(super::quote("/srv/b"), "'/srv/b'");
        assert_eq!(super::quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn the_store_url_joins_endpoint_and_directory() {
        let r = super::Remote::open("ssh://deploy@h1.packfy.test:2222", "/var/backups").unwrap();
        assert_eq!(r.url, "ssh://deploy@h1.packfy.test:2222/var/backups");
        assert_eq!(
            r.url_of("cuba/production/r3/db.dump.zst"),
            "ssh://deploy@h1.packfy.test:2222/var/backups/cuba/production/r3/db.dump.zst"
        );
        assert_eq!(r.at("cuba/x"), "'/var/backups/cuba/x'");
    }
}
