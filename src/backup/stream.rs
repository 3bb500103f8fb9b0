//! Streaming a dump to its file without holding it in memory.
//!
//! ```text
//! job stdout ──tokio::io::copy──▶ Hashing (sha256 + size of the dump)
//!            ──bounded channel──▶ compressor on a blocking thread
//!            ──▶ Hashing (sha256 + size of the file) ──▶ Sink (a file, or an upload)
//! ```
//!
//! The channel holds at most [`CHUNKS_IN_FLIGHT`] chunks, so a fast producer waits for the
//! disk instead of growing a buffer, and compression never blocks the async runtime.

use std::fs::File;
use std::future::Future;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

use crate::config::backups::Compression;

/// Chunks queued between the job's output and the compressor (each at most a read's worth,
/// 8 KiB from `tokio::io::copy`, up to ~32 KiB from a Docker exec frame).
const CHUNKS_IN_FLIGHT: usize = 32;
/// zstd level: 3 is zstd's own default, fast enough to keep up with pg_dump.
const ZSTD_LEVEL: i32 = 3;
/// Bytes of stderr kept for a failure report.
const TAIL_BYTES: usize = 8 * 1024;

/// Counts and hashes what is written through it (sync and async).
pub struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The writer, the hex sha256 and the size of everything written.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.bytes)
    }

    /// Accounts for `written`, what the inner writer took.
    fn count(&mut self, written: &[u8]) {
        self.hasher.update(written);
        self.bytes += written.len() as u64;
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reading through it hashes what was read (the stored file, while it is decompressed).
impl<R: io::Read> io::Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count(&buf[..n]);
        Ok(n)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Hashing<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.count(&buf[..n]);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

type Reserve = Pin<
    Box<dyn Future<Output = Result<mpsc::OwnedPermit<Vec<u8>>, mpsc::error::SendError<()>>> + Send>,
>;

/// The async end of the channel to the compressor thread. Shutting it down (or dropping it)
/// ends the file.
pub struct ToFile {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    reserve: Option<Reserve>,
}

impl AsyncWrite for ToFile {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let Some(tx) = &this.tx else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        let reserve = this
            .reserve
            .get_or_insert_with(|| Box::pin(tx.clone().reserve_owned()));
        match reserve.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                this.reserve = None;
                match result {
                    Ok(permit) => {
                        permit.send(buf.to_vec());
                        Poll::Ready(Ok(buf.len()))
                    }
                    // The writer thread stopped (its error is what the caller reports).
                    Err(_) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the backup file writer stopped",
                    ))),
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.reserve = None;
        this.tx = None;
        Poll::Ready(Ok(()))
    }
}

/// What the writer thread reports once the stream has ended.
#[derive(Debug, Clone)]
pub struct Stored {
    pub sha256: String,
    pub bytes: u64,
}

/// Where the compressed stream goes: a file, or an object being uploaded.
pub trait Sink: Write + Send {
    /// Ends the stream durably: the file synced, the upload completed.
    fn close(self: Box<Self>) -> io::Result<()>;
}

impl Sink for File {
    fn close(self: Box<Self>) -> io::Result<()> {
        self.sync_all()
    }
}

/// The writer thread's handle: it reports the stored stream's checksum and size.
pub type Writer = tokio::task::JoinHandle<io::Result<Stored>>;

/// Starts the compressor thread writing `path`; returns the async end to write the dump into
/// and the thread's handle.
pub fn to_file(path: &Path, compression: Compression) -> io::Result<(ToFile, Writer)> {
    Ok(to_sink(Box::new(File::create(path)?), compression))
}

/// Starts the compressor thread writing into `file`; returns the async end to write the
/// dump into and the thread's handle.
pub fn to_sink(file: Box<dyn Sink>, compression: Compression) -> (ToFile, Writer) {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    let handle = tokio::task::spawn_blocking(move || write_file(rx, file, compression));
    (
        ToFile {
            tx: Some(tx),
            reserve: None,
        },
        handle,
    )
}

fn write_file(
    mut rx: mpsc::Receiver<Vec<u8>>,
    file: Box<dyn Sink>,
    compression: Compression,
) -> io::Result<Stored> {
    let mut sink = Hashing::new(BufWriter::with_capacity(256 * 1024, file));
    let mut pump = |w: &mut dyn Write| -> io::Result<()> {
        while let Some(chunk) = rx.blocking_recv() {
            w.write_all(&chunk)?;
        }
        Ok(())
    };
    match compression {
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(&mut sink, ZSTD_LEVEL)?;
            pump(&mut enc)?;
            enc.finish()?;
        }
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(&mut sink, flate2::Compression::default());
            pump(&mut enc)?;
            enc.finish()?;
        }
        Compression::None => pump(&mut sink)?,
    }
    sink.flush()?;
    let (buffered, sha256, bytes) = sink.finish();
    buffered.into_inner().map_err(|e| e.into_error())?.close()?;
    Ok(Stored { sha256, bytes })
}

/// A reader of a stored dump that yields the dump as the job wrote it.
pub fn decompressed<'a>(
    file: impl io::Read + Send + 'a,
    compression: Compression,
) -> io::Result<Box<dyn io::Read + Send + 'a>> {
    let buffered = io::BufReader::with_capacity(256 * 1024, file);
    Ok(match compression {
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::None => Box::new(buffered),
    })
}

/// The last [`TAIL_BYTES`] of a stream (a job's stderr), for failure reports.
#[derive(Debug, Default, Clone)]
pub struct Tail {
    buf: std::collections::VecDeque<u8>,
    dropped: bool,
}

impl Tail {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend(bytes);
        if self.buf.len() > TAIL_BYTES {
            let extra = self.buf.len() - TAIL_BYTES;
            self.buf.drain(..extra);
            self.dropped = true;
        }
    }

    /// The last `n` non-empty lines.
    pub fn lines(&self, n: usize) -> Vec<String> {
        let (a, b) = self.buf.as_slices();
        let text = String::from_utf8_lossy(&[a, b].concat()).into_owned();
        let mut lines: Vec<String> = text
            .lines()
            .map(|l| l.trim_end().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        // A first line cut in the middle is noise.
        if self.dropped && !lines.is_empty() {
            lines.remove(0);
        }
        let skip = lines.len().saturating_sub(n);
        lines.split_off(skip)
    }
}

/// Reads `r` to its end into a [`Tail`] (blocking; for a thread of its own).
pub fn read_tail_blocking(mut r: impl io::Read) -> Tail {
    let mut tail = Tail::default();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        tail.push(&buf[..n]);
    }
    tail
}

/// Reads `r` to its end into a [`Tail`].
pub async fn read_tail<R: tokio::io::AsyncRead + Unpin>(mut r: R) -> Tail {
    use tokio::io::AsyncReadExt;
    let mut tail = Tail::default();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.push(&buf[..n]);
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_through_each_compression_and_hashes_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for c in [Compression::Zstd, Compression::Gzip, Compression::None] {
            let path = dir.path().join(c.extension());
            let (to, handle) = to_file(&path, c).unwrap();
            let mut sink = Hashing::new(to);
            tokio::io::copy(&mut &data[..], &mut sink).await.unwrap();
            tokio::io::AsyncWriteExt::shutdown(&mut sink).await.unwrap();
            let (_, sha, bytes) = sink.finish();
            let stored = handle.await.unwrap().unwrap();
            assert_eq!(bytes, data.len() as u64);
            assert_eq!(sha, hex::encode(Sha256::digest(&data)));
            let on_disk = std::fs::read(&path).unwrap();
            assert_eq!(stored.bytes, on_disk.len() as u64);
            assert_eq!(stored.sha256, hex::encode(Sha256::digest(&on_disk)));
            let mut back = Vec::new();
            decompressed(File::open(&path).unwrap(), c)
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == data, "{c:?} round trip");
        }
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let mut t = Tail::default();
        for i in 0..5000 {
            t.push(format!("line {i}\n").as_bytes());
        }
        assert_eq!(t.lines(2), ["line 4998", "line 4999"]);
        assert!(t.buf.len() <= TAIL_BYTES);
    }
}
