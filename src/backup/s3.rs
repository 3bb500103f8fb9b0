//! A backup store in an S3-compatible bucket (`store: s3://BUCKET/PREFIX`), through the
//! `object_store` crate (Apache Arrow's client: SigV4 signing, multipart uploads, streaming
//! GETs, retries) on our reqwest + rustls (ring).
//!
//! The layout is the directory store's, as object keys: `PREFIX/<region>/<env>/<release>/
//! <job>.<ext>` beside `<job>.json`, so a backup is named by its store URL and ID alone and
//! any machine with the credentials can list, verify and restore it.
//!
//! Memory stays bounded both ways:
//! - upload: the compressor thread hands [`CHUNK`]-sized blocks through a channel of
//!   [`CHUNKS_IN_FLIGHT`] to a task that feeds a multipart upload of [`PART_SIZE`] parts, at
//!   most [`PARTS_IN_FLIGHT`] of them sending at once (~5 + 2×5 + 4×1 MiB at the peak);
//! - download: the GET's body streams through a channel of [`CHUNKS_IN_FLIGHT`] into a
//!   blocking reader (the decompressor, or a restore command's stdin).
//!
//! The object appears only when its multipart upload completes; the manifest is written after
//! it, so a listed backup always has its dump (an interrupted upload leaves no object, and a
//! dump without a manifest is never listed).

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart};
use tokio::sync::{mpsc, oneshot};

use super::store::StoreError;
use crate::config::backups::S3Options;
use crate::config::model::EnvValue;

/// Size of each multipart part (S3's minimum for all but the last is 5 MiB).
const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts being sent at once.
const PARTS_IN_FLIGHT: usize = 2;
/// Blocks handed from the compressor thread to the upload, and from a download to its reader.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Size of the blocks the compressor thread hands over.
const CHUNK: usize = 1024 * 1024;
/// Tries after the first for a request that failed in a way worth retrying (a 5xx, a reset
/// connection), and the longest all of them may take: a store that is down is reported in
/// seconds, not after object_store's default three minutes.
const RETRIES: usize = 2;
const RETRY_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One request (a part of 5 MiB at most, a listing, a manifest).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// One bucket and prefix, with the client that reaches it.
#[derive(Clone)]
pub struct Bucket {
    /// `s3://bucket/prefix`, as shown and as recorded.
    pub url: String,
    prefix: String,
    client: Arc<AmazonS3>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// A setting of `s3:`, or else the environment variable the AWS tools read.
fn setting(value: Option<&EnvValue>, what: &str) -> Result<Option<String>, String> {
    match value {
        None => Ok(None),
        Some(EnvValue::Plain(v)) => Ok(Some(crate::config::expand_env(v))),
        Some(EnvValue::Secret { secret }) => crate::secrets::resolve(&secret.0)
            .map(Some)
            .map_err(|why| format!("secret {} for s3.{what} is not available: {why}", secret.0)),
    }
}

impl Bucket {
    /// The client for `s3://bucket/prefix` with `opts` over the `AWS_*` environment. Every
    /// credential read is registered with the secret masker.
    pub fn open(bucket: &str, prefix: &str, opts: Option<&S3Options>) -> Result<Bucket, String> {
        let opts = opts.cloned().unwrap_or_default();
        // object_store's reqwest client takes rustls' process-wide provider (we build reqwest
        // with `rustls-no-provider`): ring, as everywhere else here. Already set is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        for var in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
            if let Ok(v) = std::env::var(var) {
                crate::secrets::register(&v);
            }
        }
        // Client options first: they replace every earlier one (allow_http is one of them).
        let mut b = AmazonS3Builder::from_env()
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_timeout(REQUEST_TIMEOUT),
            )
            .with_retry(RetryConfig {
                max_retries: RETRIES,
                retry_timeout: RETRY_TIMEOUT,
                ..Default::default()
            })
            .with_bucket_name(bucket);
        if let Ok(allow) = std::env::var("AWS_ALLOW_HTTP") {
            b = b.with_allow_http(allow == "true");
        }
        if let Some(endpoint) = opts.endpoint.as_deref().map(crate::config::expand_env) {
            if endpoint.is_empty() {
                return Err(format!(
                    "s3.endpoint '{}' is empty once its variables are replaced",
                    opts.endpoint.as_deref().unwrap_or_default()
                ));
            }
            // Written in the region file, an http:// endpoint is meant (a server on loopback
            // or inside a private network); from the environment, AWS_ALLOW_HTTP decides.
            b = b
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        let region = opts
            .region
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        b = b.with_region(region);
        if let Some(id) = setting(opts.access_key_id.as_ref(), "access_key_id")? {
            b = b.with_access_key_id(id);
        }
        if let Some(key) = setting(opts.secret_access_key.as_ref(), "secret_access_key")? {
            b = b.with_secret_access_key(key);
        }
        let client = b
            .build()
            .map_err(|e| crate::secrets::mask(&e.to_string()).into_owned())?;
        let url = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        Ok(Bucket {
            url,
            prefix: prefix.to_string(),
            client: Arc::new(client),
        })
    }

    fn key(&self, rel: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(rel)
        } else {
            Key::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// The URL of the object at `rel` (what records show as a backup's path).
    pub fn url_of(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url)
    }

    /// What went wrong with a request, sorted by what a person does about it.
    fn error(&self, e: object_store::Error) -> StoreError {
        // The causes too: "builder error" alone does not say which setting was refused.
        let mut why = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let text = c.to_string();
            if !why.contains(&text) {
                why.push_str(&format!(": {text}"));
            }
            cause = c.source();
        }
        let why = crate::secrets::mask(&why).into_owned();
        let store = self.url.clone();
        // A 401 or 403 is `PermissionDenied`/`Unauthenticated` for object requests, but a
        // listing reports it as `Generic` with the status only in its text (the retry error
        // that carries it is private to object_store).
        let refused = matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || why.contains("status code: 403")
            || why.contains("status code: 401");
        if refused {
            StoreError::Denied { store, why }
        } else {
            StoreError::Unreachable { store, why }
        }
    }

    /// The keys (relative to the prefix) of the manifests under `rel/`.
    pub async fn manifests(&self, rel: &str) -> Result<Vec<String>, StoreError> {
        let under = self.key(rel);
        let base = format!("{}/", self.key("").as_ref());
        let mut listing = self.client.list(Some(&under));
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.error(e))?;
            let full = meta.location.as_ref();
            let rel = if self.prefix.is_empty() {
                full
            } else {
                full.strip_prefix(&base).unwrap_or(full)
            };
            if rel.ends_with(".json") {
                out.push(rel.to_string());
            }
        }
        Ok(out)
    }

    /// The whole object at `rel` (a manifest), `None` when there is none.
    pub async fn get(&self, rel: &str) -> Result<Option<Bytes>, StoreError> {
        let got = match self.client.get(&self.key(rel)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        got.bytes().await.map(Some).map_err(|e| self.error(e))
    }

    pub async fn put(&self, rel: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put(&self.key(rel), body.into())
            .await
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Deletes the object at `rel`; one that is not there is not an error.
    pub async fn delete(&self, rel: &str) -> Result<(), StoreError> {
        match self.client.delete(&self.key(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// A blocking reader of the object at `rel`, streamed (for a blocking thread only).
    pub async fn reader(&self, rel: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        let got = self
            .client
            .get(&self.key(rel))
            .await
            .map_err(|e| self.error(e))?;
        let mut body = got.into_stream();
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| io::Error::other(this.error(e).to_string()));
                let stop = chunk.is_err();
                if tx.send(chunk).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Box::new(ChannelReader {
            rx,
            current: Bytes::new(),
        }))
    }

    /// A writer (for the compressor thread) whose bytes become the object at `rel` through a
    /// multipart upload. The object exists once [`Upload::close`] has returned `Ok`.
    pub fn upload(&self, rel: &str) -> Upload {
        // `None` ends the stream; a sender dropped without it (a failed compressor) aborts.
        let (tx, mut rx) = mpsc::channel::<Option<Bytes>>(CHUNKS_IN_FLIGHT);
        let (done_tx, done) = oneshot::channel();
        let this = self.clone();
        let key = self.key(rel);
        tokio::spawn(async move {
            let result = async {
                let upload = this.client.put_multipart(&key).await?;
                let mut parts = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                loop {
                    let chunk = match rx.recv().await {
                        Some(Some(chunk)) => chunk,
                        Some(None) => return parts.finish().await.map(drop),
                        None => {
                            let _ = parts.abort().await;
                            return Err(object_store::Error::Generic {
                                store: "S3",
                                source: "the dump's stream was cut; the upload was aborted".into(),
                            });
                        }
                    };
                    if let Err(e) = parts.wait_for_capacity(PARTS_IN_FLIGHT).await {
                        let _ = parts.abort().await;
                        return Err(e);
                    }
                    parts.put(chunk);
                }
            }
            .await;
            // Closing the receiver first makes a writer still sending see the failure.
            rx.close();
            let _ = done_tx.send(result.map_err(|e| io::Error::other(this.error(e).to_string())));
        });
        Upload {
            tx: Some(tx),
            buf: Vec::with_capacity(CHUNK),
            done: Some(done),
        }
    }
}

/// The writing end of [`Bucket::upload`] (blocking: for the compressor thread).
pub struct Upload {
    tx: Option<mpsc::Sender<Option<Bytes>>>,
    buf: Vec<u8>,
    done: Option<oneshot::Receiver<io::Result<()>>>,
}

impl Upload {
    /// Sends the buffered bytes, or (`end`) the end of the stream.
    fn send(&mut self, end: bool) -> io::Result<()> {
        let msg = if end {
            None
        } else if self.buf.is_empty() {
            return Ok(());
        } else {
            Some(Bytes::from(std::mem::replace(
                &mut self.buf,
                Vec::with_capacity(CHUNK),
            )))
        };
        let sent = self.tx.as_ref().map(|tx| tx.blocking_send(msg));
        match sent {
            Some(Ok(())) => Ok(()),
            // The upload stopped: its own error is the one to report.
            _ => Err(self.wait().err().unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped")
            })),
        }
    }

    fn wait(&mut self) -> io::Result<()> {
        self.tx = None;
        match self.done.take().map(|d| d.blocking_recv()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the upload task ended without a result")),
            None => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the upload already ended",
            )),
        }
    }
}

impl Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl super::stream::Sink for Upload {
    /// Sends what is left and waits for the upload to complete.
    fn close(mut self: Box<Self>) -> io::Result<()> {
        self.send(false)?;
        self.send(true)?;
        self.wait()
    }
}

/// A blocking reader over chunks arriving on a channel.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
