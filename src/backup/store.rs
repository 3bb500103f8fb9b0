//! The backup store: a directory laid out as `<store>/<region>/<env>/<release>/<job>.<ext>`,
//! each dump beside a `<job>.json` manifest (its [`BackupRecord`]), or the same layout as
//! object keys under an S3-compatible bucket's prefix (`s3.rs`), or under a directory on a
//! host reached over SSH (`ssh.rs`). Listing, verifying,
//! restoring and retention read the manifests, so a store copied elsewhere still works, and
//! a backup is found again from its store and ID alone.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;

use super::s3::Bucket;
use super::ssh::Remote;
use super::stream::{self, decompressed, Hashing, ToFile, Writer};
use super::BackupRecord;
use crate::config::backups::Compression;
use crate::error::{Error, ExitCode};

/// The store directory when a job names none, beside the regions directory.
pub const DEFAULT_STORE: &str = "backups";

/// Manifests of a bucket fetched at once by a listing: each is its own small GET, and one by
/// one a region's history of backups costs a round trip each.
const MANIFESTS_IN_FLIGHT: usize = 8;

/// Where backups are kept.
#[derive(Debug, Clone)]
pub enum Store {
    /// A directory on this machine (absolute).
    Dir(PathBuf),
    /// `s3://bucket/prefix`.
    S3(Bucket),
    /// `ssh://[user@]host[:port]/path`.
    Ssh(std::sync::Arc<Remote>),
}

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file of a directory store.
    #[error("{0}")]
    Io(String),
    /// The S3 server refused the credentials (a wrong or missing key, no permission).
    #[error("{store} refused the credentials: {why}")]
    Denied { store: String, why: String },
    /// The S3 server or the SSH host could not be reached, or failed the request.
    #[error("{store}: {why}")]
    Unreachable { store: String, why: String },
}

impl StoreError {
    fn io(what: impl std::fmt::Display, e: io::Error) -> StoreError {
        StoreError::Io(format!("{what}: {e}"))
    }

    /// As a command's error, with the documented exit code: refused credentials are a
    /// configuration error (2), a store out of reach is 6.
    pub fn into_error(self) -> Error {
        match self {
            StoreError::Io(_) => Error::usage(self.to_string()),
            StoreError::Denied { .. } => Error::usage_hint(
                self.to_string(),
                "check the job's s3.access_key_id and s3.secret_access_key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY where they are unset) and the bucket's permissions; secret values are never shown",
            ),
            StoreError::Unreachable { ref store, .. } => {
                let hint = if store.starts_with("ssh://") {
                    "check that the host is up and that this machine logs in to it with ssh as it is (BatchMode, known_hosts checked strictly, -F $PACKFY_SSH_CONFIG when set); nothing was changed"
                } else {
                    "check s3.endpoint (or AWS_ENDPOINT_URL) and that the server is up; nothing was changed"
                };
                Error::failed(ExitCode::Unreachable, anyhow::anyhow!(self.to_string()))
                    .with_hint(hint)
            }
        }
    }
}

/// A dump being written: where it goes until [`Store::commit`] or [`Store::discard`].
pub struct Pending {
    /// The partial file of a directory store (the object key of an S3 store: uploads only
    /// appear once complete).
    partial: PathBuf,
    /// The key (relative to the store) of the dump: `<id>.<ext>`.
    rel: String,
    /// The dump's final place, as records show it.
    pub path: String,
}

impl Store {
    /// The store as written in region files and records: a directory or `s3://bucket/prefix`.
    pub fn describe(&self) -> String {
        match self {
            Store::Dir(root) => root.display().to_string(),
            Store::S3(b) => b.url.clone(),
            Store::Ssh(r) => r.url.clone(),
        }
    }

    /// Reaches the store before anything is written to it: a host over SSH is logged in to
    /// (out of reach: exit 6 naming it); the other stores are reached by their first request.
    pub async fn connect(&self) -> Result<(), StoreError> {
        match self {
            Store::Ssh(r) => r.connect().await.map(drop),
            Store::Dir(_) | Store::S3(_) => Ok(()),
        }
    }

    /// Every backup of `region` (in `env`, or in every environment), oldest first.
    pub async fn scan(
        &self,
        region: &str,
        env: Option<&str>,
    ) -> Result<Vec<BackupRecord>, StoreError> {
        let mut out = match self {
            Store::Dir(root) => scan_dir(root, region, env),
            Store::S3(b) => {
                let under = match env {
                    Some(e) => format!("{region}/{e}"),
                    None => region.to_string(),
                };
                // One GET per manifest, MANIFESTS_IN_FLIGHT at a time (in the listing's order).
                let rels = b.manifests(&under).await?;
                let got: Vec<_> = futures_util::stream::iter(rels.iter())
                    .map(|rel| self.manifest(rel))
                    .buffered(MANIFESTS_IN_FLIGHT)
                    .collect()
                    .await;
                let mut v = Vec::new();
                for rec in got {
                    v.extend(rec?);
                }
                v
            }
            Store::Ssh(r) => {
                let under = match env {
                    Some(e) => format!("{region}/{e}"),
                    None => region.to_string(),
                };
                r.manifests(&under)
                    .await?
                    .into_iter()
                    .filter_map(|(_, body)| {
                        let mut rec = serde_json::from_slice::<BackupRecord>(&body).ok()?;
                        rec.path = r.url_of(&dump_rel(&rec));
                        Some(rec)
                    })
                    .collect()
            }
        };
        for r in &mut out {
            r.store = self.describe();
        }
        sort(&mut out);
        Ok(out)
    }

    /// The backup `id` (a checked `region/env/release/job`), `None` when this store has none.
    pub async fn find(&self, id: &str) -> Result<Option<BackupRecord>, StoreError> {
        let rec = self.manifest(&format!("{id}.json")).await?;
        Ok(rec.map(|r| BackupRecord {
            store: self.describe(),
            ..r
        }))
    }

    /// The manifest at `rel`, with `path` set to where its dump is now. A manifest that does
    /// not parse is no backup (`None`), as in a listing.
    async fn manifest(&self, rel: &str) -> Result<Option<BackupRecord>, StoreError> {
        match self {
            Store::Dir(root) => {
                let path = root.join(rel);
                if !path.exists() {
                    return Ok(None);
                }
                read_manifest(&path)
                    .map(Some)
                    .map_err(|e| StoreError::io(format!("cannot read {}", path.display()), e))
            }
            Store::S3(b) => {
                let Some(body) = b.get(rel).await? else {
                    return Ok(None);
                };
                let Ok(mut rec) = serde_json::from_slice::<BackupRecord>(&body) else {
                    return Ok(None);
                };
                rec.path = b.url_of(&dump_rel(&rec));
                Ok(Some(rec))
            }
            Store::Ssh(r) => {
                let Some(body) = r.get(rel).await? else {
                    return Ok(None);
                };
                let Ok(mut rec) = serde_json::from_slice::<BackupRecord>(&body) else {
                    return Ok(None);
                };
                rec.path = r.url_of(&dump_rel(&rec));
                Ok(Some(rec))
            }
        }
    }

    /// Starts writing the dump of backup `id`: the async end to write it into, the writer
    /// thread, and what [`Store::commit`] or [`Store::discard`] needs.
    pub fn begin(
        &self,
        id: &str,
        job: &str,
        compression: Compression,
    ) -> Result<(ToFile, Writer, Pending), StoreError> {
        let rel = format!("{id}.{}", compression.extension());
        match self {
            Store::Dir(root) => {
                let dir = root
                    .join(id)
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                prepare_root(root)
                    .and_then(|()| std::fs::create_dir_all(&dir))
                    .map_err(|e| StoreError::io(format!("cannot create {}", dir.display()), e))?;
                let partial = dir.join(format!(".{job}.partial"));
                let (to, writer) = stream::to_file(&partial, compression).map_err(|e| {
                    StoreError::io(format!("cannot write {}", partial.display()), e)
                })?;
                let path = root.join(&rel).display().to_string();
                Ok((to, writer, Pending { partial, rel, path }))
            }
            Store::S3(b) => {
                let (to, writer) = stream::to_sink(Box::new(b.upload(&rel)), compression);
                let path = b.url_of(&rel);
                Ok((
                    to,
                    writer,
                    Pending {
                        partial: PathBuf::new(),
                        rel,
                        path,
                    },
                ))
            }
            Store::Ssh(r) => {
                let dir = id.rsplit_once('/').map_or("", |(d, _)| d);
                let partial = format!("{dir}/.{job}.partial");
                let upload = r.upload(&partial)?;
                let (to, writer) = stream::to_sink(Box::new(upload), compression);
                let path = r.url_of(&rel);
                Ok((
                    to,
                    writer,
                    Pending {
                        partial: PathBuf::from(partial),
                        rel,
                        path,
                    },
                ))
            }
        }
    }

    /// Keeps a written dump as the backup `rec`: a backup that is listed has its dump (the
    /// dump is renamed in after its manifest; an upload only exists once complete).
    pub async fn commit(&self, pending: Pending, rec: &BackupRecord) -> Result<(), StoreError> {
        let manifest_rel = format!("{}.json", rec.id);
        match self {
            Store::Dir(root) => {
                let manifest = root.join(&manifest_rel);
                let file = root.join(&pending.rel);
                write_manifest(&manifest, rec)
                    .and_then(|()| std::fs::rename(&pending.partial, &file))
                    .map_err(|e| {
                        let _ = std::fs::remove_file(&pending.partial);
                        let _ = std::fs::remove_file(&manifest);
                        StoreError::io(format!("cannot store {}", file.display()), e)
                    })
            }
            Store::S3(b) => {
                let body = serde_json::to_vec_pretty(rec).expect("a record serializes");
                if let Err(e) = b.put(&manifest_rel, body).await {
                    let _ = b.delete(&pending.rel).await;
                    return Err(e);
                }
                Ok(())
            }
            Store::Ssh(r) => {
                let body = serde_json::to_vec_pretty(rec).expect("a record serializes");
                let partial = pending.partial.display().to_string();
                if let Err(e) = r.commit(&manifest_rel, body, &partial, &pending.rel).await {
                    let _ = r.remove(&[&partial]).await;
                    return Err(e);
                }
                Ok(())
            }
        }
    }

    /// Removes what a failed job wrote.
    pub async fn discard(&self, pending: Pending) {
        match self {
            Store::Dir(_) => {
                let _ = std::fs::remove_file(&pending.partial);
                if let Some(dir) = pending.partial.parent() {
                    let _ = std::fs::remove_dir(dir);
                }
            }
            Store::S3(b) => {
                let _ = b.delete(&pending.rel).await;
            }
            Store::Ssh(r) => {
                let _ = r.remove(&[&pending.partial.display().to_string()]).await;
            }
        }
    }

    /// Removes one backup (dump and manifest; in a directory, its release directory once
    /// empty).
    pub async fn remove(&self, rec: &BackupRecord) -> Result<(), StoreError> {
        match self {
            Store::Dir(root) => remove_dir_backup(root, rec)
                .map_err(|e| StoreError::io(format!("cannot remove {}", rec.id), e)),
            Store::S3(b) => {
                b.delete(&dump_rel(rec)).await?;
                b.delete(&format!("{}.json", rec.id)).await
            }
            Store::Ssh(r) => {
                r.remove(&[&dump_rel(rec), &format!("{}.json", rec.id)])
                    .await
            }
        }
    }

    /// Keeps the newest `keep` backups of `job` in `region/env` and removes the others.
    /// Nothing outside that region and environment is read or touched. Returns what was
    /// removed.
    pub async fn prune(
        &self,
        region: &str,
        env: &str,
        job: &str,
        keep: usize,
    ) -> Result<Vec<BackupRecord>, StoreError> {
        let mut mine: Vec<BackupRecord> = self
            .scan(region, Some(env))
            .await?
            .into_iter()
            .filter(|r| r.job == job && r.region == region && r.environment == env)
            .collect();
        // Newest first; everything past `keep` goes.
        mine.reverse();
        let old = mine.split_off(keep.min(mine.len()));
        for r in &old {
            self.remove(r).await?;
        }
        Ok(old)
    }

    /// The stored (compressed) bytes of `rec`, as a blocking reader: read it on a blocking
    /// thread.
    pub async fn raw(&self, rec: &BackupRecord) -> Result<Box<dyn Read + Send>, StoreError> {
        match self {
            Store::Dir(_) => File::open(&rec.path)
                .map(|f| Box::new(f) as Box<dyn Read + Send>)
                .map_err(|e| StoreError::io(format!("cannot read {}", rec.path), e)),
            Store::S3(b) => b.reader(&dump_rel(rec)).await,
            Store::Ssh(r) => r.reader(&dump_rel(rec)).await,
        }
    }

    /// What is wrong with `rec`'s dump, as sentences (empty when it matches its record):
    /// read once, streaming, on a blocking thread.
    pub async fn check(&self, rec: &BackupRecord) -> Vec<String> {
        let raw = match self.raw(rec).await {
            Ok(raw) => raw,
            Err(e) => return vec![e.to_string()],
        };
        let compression = rec.compression;
        let verified = tokio::task::spawn_blocking(move || verify(raw, compression)).await;
        match verified {
            Ok(Ok(v)) => v.problems(rec),
            Ok(Err(e)) => vec![format!("cannot read {}: {e}", rec.path)],
            Err(e) => vec![format!("cannot read {}: {e}", rec.path)],
        }
    }
}

/// The dump's key relative to its store: `<id>.<ext>`.
fn dump_rel(rec: &BackupRecord) -> String {
    format!("{}.{}", rec.id, rec.compression.extension())
}

/// `region/env/release/job` → its parts, refusing anything that could leave the store.
pub fn parse_id(id: &str) -> Option<[&str; 4]> {
    let parts: Vec<&str> = id.split('/').collect();
    let ok = parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    ok.then(|| [parts[0], parts[1], parts[2], parts[3]])
}

fn manifest_path(root: &Path, id: &str) -> PathBuf {
    root.join(format!("{id}.json"))
}

/// The dump file a manifest describes: beside it, whatever absolute path it was written with.
fn dump_path(manifest: &Path, rec: &BackupRecord) -> PathBuf {
    manifest.with_file_name(format!("{}.{}", rec.job, rec.compression.extension()))
}

/// Creates the store root with a `.gitignore` that keeps dumps out of the repository (the
/// default store sits beside the regions directory, inside it).
fn prepare_root(root: &Path) -> io::Result<()> {
    std::fs::create_dir_all(root)?;
    let ignore = root.join(".gitignore");
    if !ignore.exists() {
        std::fs::write(
            ignore,
            "# Data backups (packfy-deploy): never commit them.\n*\n",
        )?;
    }
    Ok(())
}

/// Writes a manifest atomically (a reader never sees half of one).
fn write_manifest(path: &Path, rec: &BackupRecord) -> io::Result<()> {
    let tmp = path.with_extension("json.partial");
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(rec).map_err(io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads the manifest at `path`, with `path` set to where its dump is now.
fn read_manifest(path: &Path) -> io::Result<BackupRecord> {
    let mut rec: BackupRecord =
        serde_json::from_slice(&std::fs::read(path)?).map_err(io::Error::other)?;
    rec.path = dump_path(path, &rec).display().to_string();
    Ok(rec)
}

/// Every backup of `region` (in `env`, or in every environment) under `root`.
fn scan_dir(root: &Path, region: &str, env: Option<&str>) -> Vec<BackupRecord> {
    let region_dir = root.join(region);
    let envs: Vec<PathBuf> = match env {
        Some(e) => vec![region_dir.join(e)],
        None => subdirs(&region_dir),
    };
    let mut out = Vec::new();
    for env_dir in envs {
        for release_dir in subdirs(&env_dir) {
            let Ok(entries) = std::fs::read_dir(&release_dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "json") {
                    if let Ok(rec) = read_manifest(&p) {
                        out.push(rec);
                    }
                }
            }
        }
    }
    out
}

/// Oldest first: by start time, then release number.
pub fn sort(v: &mut [BackupRecord]) {
    v.sort_by(|a, b| {
        (a.started_at, release_number(&a.release), &a.id).cmp(&(
            b.started_at,
            release_number(&b.release),
            &b.id,
        ))
    });
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Removes one backup (dump and manifest) of a directory store, and its release directory
/// once empty.
fn remove_dir_backup(root: &Path, rec: &BackupRecord) -> io::Result<()> {
    let manifest = manifest_path(root, &rec.id);
    match std::fs::remove_file(dump_path(&manifest, rec)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    match std::fs::remove_file(&manifest) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    if let Some(dir) = manifest.parent() {
        // Only succeeds when empty; other jobs' backups of the release stay.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

/// What a verification found: the checksums recomputed from the file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    pub stored_sha256: String,
    pub stored_bytes: u64,
    pub sha256: String,
    pub bytes: u64,
    /// Why the file could not be decompressed to its end, when it could not.
    pub damaged: Option<String>,
}

impl Verified {
    /// The differences from the record, as sentences (empty when it matches).
    pub fn problems(&self, rec: &BackupRecord) -> Vec<String> {
        let mut out = Vec::new();
        if self.stored_bytes != rec.stored_bytes || self.stored_sha256 != rec.stored_sha256 {
            out.push(format!(
                "the file is {} bytes with sha256 {}; the record says {} bytes with sha256 {}",
                self.stored_bytes, self.stored_sha256, rec.stored_bytes, rec.stored_sha256
            ));
        }
        if let Some(why) = &self.damaged {
            out.push(format!(
                "the file cannot be decompressed past byte {} of the dump: {why}",
                self.bytes
            ));
        } else if self.bytes != rec.bytes || self.sha256 != rec.sha256 {
            out.push(format!(
                "the dump is {} bytes with sha256 {}; the record says {} bytes with sha256 {}",
                self.bytes, self.sha256, rec.bytes, rec.sha256
            ));
        }
        out
    }
}

/// Recomputes both checksums in one streaming pass over the stored bytes: of the file as
/// stored, and of the dump it decompresses to (which also proves the compressed stream is
/// whole).
pub fn verify(raw: Box<dyn Read + Send>, compression: Compression) -> io::Result<Verified> {
    let mut stored = Hashing::new(raw);
    let mut dump = Hashing::new(io::sink());
    let damaged = decompressed(&mut stored, compression)
        .and_then(|mut r| io::copy(&mut r, &mut dump))
        .err()
        .map(|e| e.to_string());
    // Whatever the decompressor left unread (bytes past the end, or past the damage).
    io::copy(&mut stored, &mut io::sink())?;
    let (_, stored_sha256, stored_bytes) = stored.finish();
    let (_, sha256, bytes) = dump.finish();
    Ok(Verified {
        stored_sha256,
        stored_bytes,
        sha256,
        bytes,
        damaged,
    })
}

/// The dump of a backup as a reader (decompressed), from its stored bytes, for restoring.
pub fn open_dump(
    raw: Box<dyn Read + Send>,
    compression: Compression,
) -> io::Result<Box<dyn Read + Send>> {
    decompressed(raw, compression)
}

/// `r12` → 12, so backups sort by release number.
fn release_number(id: &str) -> Option<u64> {
    id.strip_prefix('r')?.parse().ok()
}
