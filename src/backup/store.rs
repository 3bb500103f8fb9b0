//! The backup store: a directory laid out as `<store>/<region>/<env>/<release>/<job>.<ext>`,
//! each dump beside a `<job>.json` manifest (its [`BackupRecord`]). Listing, verifying,
//! restoring and retention read the manifests, so a store copied elsewhere still works.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::stream::{decompressed, Hashing};
use super::BackupRecord;

/// The store directory when a job names none, beside the regions directory.
pub const DEFAULT_STORE: &str = "backups";

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

/// The directory of one release's backups.
pub fn release_dir(root: &Path, region: &str, env: &str, release: &str) -> PathBuf {
    root.join(region).join(env).join(release)
}

pub fn manifest_path(root: &Path, id: &str) -> PathBuf {
    root.join(format!("{id}.json"))
}

/// The dump file a manifest describes: beside it, whatever absolute path it was written with.
pub fn dump_path(manifest: &Path, rec: &BackupRecord) -> PathBuf {
    manifest.with_file_name(format!("{}.{}", rec.job, rec.compression.extension()))
}

/// Creates the store root with a `.gitignore` that keeps dumps out of the repository (the
/// default store sits beside the regions directory, inside it).
pub fn prepare_root(root: &Path) -> io::Result<()> {
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
pub fn write_manifest(path: &Path, rec: &BackupRecord) -> io::Result<()> {
    let tmp = path.with_extension("json.partial");
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(rec).map_err(io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads the manifest at `path`, with `path` set to where its dump is now.
pub fn read_manifest(path: &Path) -> io::Result<BackupRecord> {
    let mut rec: BackupRecord =
        serde_json::from_slice(&std::fs::read(path)?).map_err(io::Error::other)?;
    rec.path = dump_path(path, &rec).display().to_string();
    Ok(rec)
}

/// Every backup of `region` (in `env`, or in every environment) under `root`, oldest first.
pub fn scan(root: &Path, region: &str, env: Option<&str>) -> Vec<BackupRecord> {
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
    sort(&mut out);
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

/// Removes one backup (dump and manifest) and its release directory once empty.
pub fn remove(root: &Path, rec: &BackupRecord) -> io::Result<()> {
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

/// Keeps the newest `keep` backups of `job` in `root/region/env` and removes the others.
/// Nothing outside that directory is read or touched. Returns what was removed.
pub fn prune(
    root: &Path,
    region: &str,
    env: &str,
    job: &str,
    keep: usize,
) -> io::Result<Vec<BackupRecord>> {
    let mut mine: Vec<BackupRecord> = scan(root, region, Some(env))
        .into_iter()
        .filter(|r| r.job == job && r.region == region && r.environment == env)
        .collect();
    // Newest first; everything past `keep` goes.
    mine.reverse();
    let old = mine.split_off(keep.min(mine.len()));
    for r in &old {
        remove(root, r)?;
    }
    Ok(old)
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

/// Recomputes both checksums, streaming: of the file as stored, then of the dump it
/// decompresses to (which also proves the compressed stream is whole).
pub fn verify(rec: &BackupRecord) -> io::Result<Verified> {
    let path = Path::new(&rec.path);
    let (stored_sha256, stored_bytes) = hash_file(path)?;
    let mut dump = Hashing::new(io::sink());
    let damaged = decompressed(File::open(path)?, rec.compression)
        .and_then(|mut r| io::copy(&mut r, &mut dump))
        .err()
        .map(|e| e.to_string());
    let (_, sha256, bytes) = dump.finish();
    Ok(Verified {
        stored_sha256,
        stored_bytes,
        sha256,
        bytes,
        damaged,
    })
}

/// What [`verify`] found wrong with `rec`, as sentences (empty when it matches its record).
pub fn check(rec: &BackupRecord) -> Vec<String> {
    match verify(rec) {
        Ok(v) => v.problems(rec),
        Err(e) => vec![format!("cannot read {}: {e}", rec.path)],
    }
}

/// sha256 and size of a whole file.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut h = Hashing::new(io::sink());
    io::copy(&mut File::open(path)?, &mut h)?;
    let (_, sha, n) = h.finish();
    Ok((sha, n))
}

/// The dump of a backup as a reader (decompressed), for restoring.
pub fn open_dump(rec: &BackupRecord) -> io::Result<Box<dyn Read + Send>> {
    decompressed(File::open(&rec.path)?, rec.compression)
}

/// `r12` → 12, so backups sort by release number.
fn release_number(id: &str) -> Option<u64> {
    id.strip_prefix('r')?.parse().ok()
}
