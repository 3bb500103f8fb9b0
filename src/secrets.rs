//! The secret masker: the one place every resolved secret value is registered, and the one
//! filter all text leaving the process passes through (output, `-o json`, logs, notices,
//! hook and backup output, release records).
//!
//! [`resolve`] reads a secret reference and registers its value; [`register`] adds a value
//! obtained some other way. From then on [`mask`] (text), [`mask_bytes`] (raw output such as
//! container logs), [`mask_json`] (a JSON document, in place) and [`MaskingWriter`] (a
//! `std::io::Write` adapter, also a tracing-subscriber `MakeWriter` through
//! [`MaskingMakeWriter`]) replace the value with [`MASK`] wherever it appears — also in the
//! forms it commonly takes on its way into text, as CI systems do with registered secrets:
//!
//! - percent-encoded, every byte outside RFC 3986's unreserved set (`A-Z a-z 0-9 - . _ ~`)
//!   escaped, with upper- and lower-case hex digits, with a space as `%20` or as `+` (HTML
//!   forms), and with `/` left alone (Python's `quote` default): how a password reaches a
//!   connection string or a URL;
//! - base64, standard and URL-safe alphabets, each with and without padding: how it reaches a
//!   Kubernetes Secret, a basic-auth header of its own or a `| base64` in a script;
//! - JSON-escaped and Rust-`Debug`-escaped (a value with `"`, `\` or a newline);
//! - for a multi-line value (a key, a certificate, a kubeconfig), each line on its own, trimmed,
//!   since output is relayed line by line.
//!
//! Matching is on all occurrences, overlapping ones included, and overlapping or nested matches
//! (two secrets sharing characters, a value and its encodings) are merged into one span, so
//! every byte that belongs to some registered form is masked whatever order forms were
//! registered in.
//!
//! What it cannot catch, like every CI masker: a value split across two separately masked
//! texts, a value whose base64 starts mid-group inside a larger base64 blob (`user:pass` in one
//! basic-auth header), and transformations other than the ones above (hashes are fine: they
//! are not the value).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock};

use aho_corasick::AhoCorasick;

/// A secret that could not be read: names the reference, never a value.
#[derive(Debug, thiserror::Error)]
#[error("secret {reference} for {service}.env.{var} is not available: {why}")]
pub struct SecretError {
    pub service: String,
    pub var: String,
    pub reference: String,
    pub why: String,
}

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Values shorter than this many characters (after trimming surrounding whitespace) are not
/// registered. Masking `1`, `yes` or `443` would replace every occurrence of those in unrelated
/// output (numbers, words, ports) and make it unreadable, while a secret that short protects
/// nothing anyway; CI systems draw the same line (GitLab refuses to mask variables shorter than
/// 8 characters, GitHub Actions skips very short values). Four keeps real short credentials
/// (PINs, 4-letter passwords in tests) masked.
pub const MIN_LEN: usize = 4;

/// A pending partial line longer than this is written out (masked) without waiting for its
/// newline, so a writer never holds unbounded memory.
const MAX_PENDING: usize = 64 * 1024;

/// Set once anything is registered: the fast path of [`mask`] while no secret is known.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static REGISTRY: OnceLock<RwLock<Registry>> = OnceLock::new();

fn registry() -> &'static RwLock<Registry> {
    REGISTRY.get_or_init(|| RwLock::new(Registry::default()))
}

/// Reads a secret reference — `env:NAME` from this process's environment or `file:PATH` from
/// disk (trailing newlines dropped) — and registers the value with the masker before
/// returning it. The error names the reference's parts, never a value.
pub fn resolve(reference: &str) -> Result<String, String> {
    let value = match reference.split_once(':') {
        Some(("env", name)) => {
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
        }
        Some(("file", path)) => std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches('\n').to_string())
            .map_err(|e| format!("cannot read {path}: {e}")),
        _ => Err("unknown kind of reference".into()),
    }?;
    register(&value);
    Ok(value)
}

/// Registers `value` (and its encodings, see the module documentation) with the masker of this
/// process. Values shorter than [`MIN_LEN`] characters are ignored. Thread-safe; registering
/// the same value again is cheap.
pub fn register(value: &str) {
    let mut r = registry().write().unwrap_or_else(PoisonError::into_inner);
    if r.add(value) {
        ACTIVE.store(true, Ordering::Release);
    }
}

/// `text` with every registered form of every registered secret replaced by [`MASK`];
/// borrowed (no allocation) when nothing matched or nothing is registered.
pub fn mask(text: &str) -> Cow<'_, str> {
    if !ACTIVE.load(Ordering::Acquire) {
        return Cow::Borrowed(text);
    }
    registry()
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .mask(text)
}

/// [`mask`] for bytes that may not be UTF-8 (container logs, hook output).
pub fn mask_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    if !ACTIVE.load(Ordering::Acquire) {
        return Cow::Borrowed(bytes);
    }
    registry()
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .mask_bytes(bytes)
}

/// Masks a JSON document in place: every string and every object key. A number whose digits
/// contain a secret becomes the masked string (its type changes; its value must not show).
/// When two keys of one object mask to the same text, the later one's value is kept.
pub fn mask_json(v: &mut serde_json::Value) {
    if !ACTIVE.load(Ordering::Acquire) {
        return;
    }
    let r = registry().read().unwrap_or_else(PoisonError::into_inner);
    r.mask_json(v);
}

/// The registered forms and the automaton that finds them.
#[derive(Default)]
struct Registry {
    forms: BTreeSet<String>,
    matcher: Option<AhoCorasick>,
}

impl Registry {
    /// Adds `value`'s forms; true when something new was added.
    fn add(&mut self, value: &str) -> bool {
        let before = self.forms.len();
        self.forms.extend(forms(value));
        if self.forms.len() == before {
            return false;
        }
        // Standard match semantics, so every (overlapping) occurrence can be found. Building
        // fails only beyond millions of patterns; without an automaton the naive search runs.
        self.matcher = AhoCorasick::new(&self.forms).ok();
        true
    }

    fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match self.mask_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Registered forms are UTF-8 and UTF-8 is self-synchronising: a match in valid
            // UTF-8 starts and ends on character boundaries, so the result is valid too.
            Cow::Owned(b) => Cow::Owned(
                String::from_utf8(b)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
        }
    }

    fn mask_bytes<'t>(&self, text: &'t [u8]) -> Cow<'t, [u8]> {
        let spans = self.spans(text);
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = Vec::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in spans {
            out.extend_from_slice(&text[at..start]);
            out.extend_from_slice(MASK.as_bytes());
            at = end;
        }
        out.extend_from_slice(&text[at..]);
        Cow::Owned(out)
    }

    /// Every occurrence of every form, overlapping ones merged: sorted, disjoint spans.
    fn spans(&self, text: &[u8]) -> Vec<(usize, usize)> {
        if self.forms.is_empty() || text.is_empty() {
            return Vec::new();
        }
        let mut found: Vec<(usize, usize)> = match &self.matcher {
            Some(ac) => ac
                .find_overlapping_iter(text)
                .map(|m| (m.start(), m.end()))
                .collect(),
            None => self
                .forms
                .iter()
                .flat_map(|f| {
                    let f = f.as_bytes();
                    text.windows(f.len())
                        .enumerate()
                        .filter(move |(_, w)| *w == f)
                        .map(move |(i, _)| (i, i + f.len()))
                })
                .collect(),
        };
        if found.is_empty() {
            return found;
        }
        found.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(found.len());
        for (s, e) in found {
            match merged.last_mut() {
                Some(last) if s < last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        merged
    }

    fn mask_json(&self, v: &mut serde_json::Value) {
        use serde_json::Value;
        match v {
            Value::String(s) => {
                if let Cow::Owned(m) = self.mask(s) {
                    *s = m;
                }
            }
            Value::Number(n) => {
                if let Cow::Owned(m) = self.mask(&n.to_string()) {
                    *v = Value::String(m);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.mask_json(i)),
            Value::Object(map) => {
                if map.keys().any(|k| matches!(self.mask(k), Cow::Owned(_))) {
                    // Rebuilt to rename keys; the order of the entries is kept.
                    for (k, mut val) in std::mem::take(map) {
                        self.mask_json(&mut val);
                        map.insert(self.mask(&k).into_owned(), val);
                    }
                } else {
                    map.values_mut().for_each(|val| self.mask_json(val));
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }
}

/// The forms of `value` to mask (none when it is too short to mask meaningfully).
fn forms(value: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if value.trim().chars().count() < MIN_LEN {
        return out;
    }
    encodings(value, &mut out);
    if value.contains(['\n', '\r']) {
        for line in value.lines().map(str::trim) {
            if line.chars().count() >= MIN_LEN {
                encodings(line, &mut out);
            }
        }
    }
    out
}

/// `value` itself and the encodings it commonly takes on its way into text.
fn encodings(value: &str, out: &mut BTreeSet<String>) {
    out.insert(value.to_string());
    for style in [
        Percent::UPPER,
        Percent::LOWER,
        Percent::FORM,
        Percent::KEEP_SLASH,
    ] {
        out.insert(percent_encode(value, style));
    }
    for alphabet in [STANDARD, URL_SAFE] {
        let encoded = base64(value.as_bytes(), alphabet);
        out.insert(encoded.trim_end_matches('=').to_string());
        out.insert(encoded);
    }
    if let Ok(json) = serde_json::to_string(value) {
        out.insert(json[1..json.len() - 1].to_string());
    }
    let debug = format!("{value:?}");
    out.insert(debug[1..debug.len() - 1].to_string());
}

/// How [`percent_encode`] writes a value.
#[derive(Clone, Copy)]
struct Percent {
    lower_hex: bool,
    space_as_plus: bool,
    keep_slash: bool,
}

impl Percent {
    const UPPER: Percent = Percent {
        lower_hex: false,
        space_as_plus: false,
        keep_slash: false,
    };
    const LOWER: Percent = Percent {
        lower_hex: true,
        ..Percent::UPPER
    };
    const FORM: Percent = Percent {
        space_as_plus: true,
        ..Percent::UPPER
    };
    const KEEP_SLASH: Percent = Percent {
        keep_slash: true,
        ..Percent::UPPER
    };
}

/// Every byte outside RFC 3986's unreserved characters as `%XX`.
fn percent_encode(value: &str, style: Percent) -> String {
    let hex: &[u8; 16] = if style.lower_hex {
        b"0123456789abcdef"
    } else {
        b"0123456789ABCDEF"
    };
    let mut out = String::with_capacity(value.len() * 3);
    for &b in value.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' if style.space_as_plus => out.push('+'),
            b'/' if style.keep_slash => out.push('/'),
            _ => {
                out.push('%');
                out.push(hex[usize::from(b >> 4)] as char);
                out.push(hex[usize::from(b & 0xf)] as char);
            }
        }
    }
    out
}

use base64::engine::general_purpose::{STANDARD, URL_SAFE};

/// Base64 (RFC 4648) with padding, in the engine's alphabet.
fn base64(bytes: &[u8], engine: impl base64::Engine) -> String {
    engine.encode(bytes)
}

/// A `std::io::Write` adapter that masks what goes through it, a line at a time: bytes are
/// held until their line is complete, so a secret split across two writes is still masked.
/// The partial last line is written (masked) when the writer is dropped, by
/// [`MaskingWriter::finish`], or once it exceeds 64 KiB; `flush` passes on complete lines
/// only.
///
/// For logs, wrap a tracing-subscriber `MakeWriter` in [`MaskingMakeWriter`]:
/// `tracing_subscriber::fmt().with_writer(MaskingMakeWriter::new(std::io::stderr))`.
pub struct MaskingWriter<W: Write> {
    inner: Option<W>,
    pending: Vec<u8>,
}

impl<W: Write> MaskingWriter<W> {
    pub fn new(inner: W) -> MaskingWriter<W> {
        MaskingWriter {
            inner: Some(inner),
            pending: Vec::new(),
        }
    }

    /// Writes the partial last line too (masked) and returns the inner writer, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        self.emit(self.pending.len())?;
        let mut inner = self
            .inner
            .take()
            .expect("inner writer present until finish");
        inner.flush()?;
        Ok(inner)
    }

    /// Masks and writes the first `n` pending bytes.
    fn emit(&mut self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        let Some(inner) = self.inner.as_mut() else {
            return Ok(());
        };
        let chunk: Vec<u8> = self.pending.drain(..n).collect();
        inner.write_all(&mask_bytes(&chunk))
    }
}

impl<W: Write> Write for MaskingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if let Some(last) = self.pending.iter().rposition(|&b| b == b'\n') {
            self.emit(last + 1)?;
        } else if self.pending.len() > MAX_PENDING {
            self.emit(self.pending.len())?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.inner.as_mut() {
            Some(inner) => inner.flush(),
            None => Ok(()),
        }
    }
}

impl<W: Write> Drop for MaskingWriter<W> {
    fn drop(&mut self) {
        if self.inner.is_some() {
            let _ = self.emit(self.pending.len());
            let _ = self.flush();
        }
    }
}

/// A tracing-subscriber `MakeWriter` whose writers are [`MaskingWriter`]s around the writers
/// of the one it wraps: logs at every verbosity go through the masker.
#[derive(Debug, Clone, Default)]
pub struct MaskingMakeWriter<M>(M);

impl<M> MaskingMakeWriter<M> {
    pub fn new(make: M) -> MaskingMakeWriter<M> {
        MaskingMakeWriter(make)
    }
}

impl<'a, M> tracing_subscriber::fmt::MakeWriter<'a> for MaskingMakeWriter<M>
where
    M: tracing_subscriber::fmt::MakeWriter<'a>,
{
    type Writer = MaskingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        MaskingWriter::new(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        MaskingWriter::new(self.0.make_writer_for(meta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::{Arc, Mutex};

    /// A value no other test registers: `prefix` + a random-looking suffix.
    fn unique(prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let n = N.fetch_add(1, Ordering::SeqCst);
        format!(
            "{prefix}{:08x}{n:x}Q{:x}",
            nanos.wrapping_mul(2_654_435_761),
            std::process::id()
        )
    }

    fn masked(text: &str) -> String {
        mask(text).into_owned()
    }

    #[test]
    fn encoders_match_known_vectors() {
        // RFC 4648 §10.
        for (plain, b64) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes(), STANDARD), b64);
        }
        assert_eq!(base64(&[0xfb, 0xff, 0xfe], STANDARD), "+//+");
        assert_eq!(base64(&[0xfb, 0xff, 0xfe], URL_SAFE), "-__-");
        assert_eq!(
            percent_encode("p@ss w/rd+~é", Percent::UPPER),
            "p%40ss%20w%2Frd%2B~%C3%A9"
        );
        assert_eq!(
            percent_encode("p@ss w/rd+~é", Percent::LOWER),
            "p%40ss%20w%2frd%2b~%c3%a9"
        );
        assert_eq!(
            percent_encode("p@ss w/rd+~é", Percent::FORM),
            "p%40ss+w%2Frd%2B~%C3%A9"
        );
        assert_eq!(
            percent_encode("p@ss w/rd+~é", Percent::KEEP_SLASH),
            "p%40ss%20w/rd%2B~%C3%A9"
        );
    }

    #[test]
    fn the_raw_value_is_masked_everywhere_it_appears() {
        let s = unique("raw-");
        register(&s);
        assert_eq!(
            masked(&format!("token={s} and again:{s}")),
            "token=*** and again:***"
        );
        assert_eq!(masked(&s), MASK);
    }

    #[test]
    fn percent_encoded_forms_are_masked() {
        let s = format!("p@ss:w/rd+{} x&y=%z", unique("pct"));
        register(&s);
        for style in [
            Percent::UPPER,
            Percent::LOWER,
            Percent::FORM,
            Percent::KEEP_SLASH,
        ] {
            let enc = percent_encode(&s, style);
            assert_ne!(enc, s);
            let url = format!("postgres://app:{enc}@db.internal:5432/app?sslmode=require");
            assert_eq!(
                masked(&url),
                "postgres://app:***@db.internal:5432/app?sslmode=require",
                "{url}"
            );
        }
        // A hand-checked form: space as %20, every reserved character escaped.
        let plain = "Zz9!p@ss w:rd/+=?";
        register(plain);
        assert_eq!(masked("u=Zz9%21p%40ss%20w%3Ard%2F%2B%3D%3F;"), "u=***;");
        assert_eq!(masked("u=Zz9%21p%40ss+w%3Ard%2F%2B%3D%3F;"), "u=***;");
    }

    #[test]
    fn base64_in_both_alphabets_with_and_without_padding_is_masked() {
        // Lengths 1 and 2 mod 3 give padding; bytes 0xfb-0xff give `+` `/` vs `-` `_`.
        for tail in ["", "a", "ab"] {
            let s = format!("{}\u{fbff}?>>{tail}", unique("b64"));
            register(&s);
            for alphabet in [STANDARD, URL_SAFE] {
                let padded = base64(s.as_bytes(), alphabet);
                let bare = padded.trim_end_matches('=');
                assert_eq!(masked(&format!("x {padded} y")), "x *** y", "{padded}");
                assert_eq!(masked(&format!("x {bare} y")), "x *** y", "{bare}");
                // Padding is part of what is masked, not left dangling.
                assert!(!masked(&format!("[{padded}]")).contains('='));
            }
        }
        let s = unique("b64-bytes-");
        register(&s);
        let enc = base64(s.as_bytes(), STANDARD);
        assert_eq!(masked(&format!("Basic {enc}")), "Basic ***");
    }

    #[test]
    fn json_and_debug_escaped_forms_are_masked() {
        let s = format!("{}\"quoted\\back\tslash", unique("js"));
        register(&s);
        let json = serde_json::json!({ "error": format!("bad token {s}") }).to_string();
        assert!(!json.contains(&s), "the test needs an escaped form");
        assert_eq!(masked(&json), r#"{"error":"bad token ***"}"#);
        let debug = format!("{:?}", format!("-> {s} <-"));
        assert_eq!(masked(&debug), "\"-> *** <-\"");
    }

    #[test]
    fn each_line_of_a_multi_line_secret_is_masked_alone() {
        let key = format!(
            "-----BEGIN KEY-----\n  {}\r\n{}\n-----END KEY-----",
            unique("MIIEline1"),
            unique("line2AbC")
        );
        register(&key);
        let lines: Vec<&str> = key.lines().map(str::trim).collect();
        // Relayed line by line, with prefixes.
        for line in &lines {
            assert_eq!(masked(&format!("app | {line}")), "app | ***", "{line}");
        }
        // Whole, and JSON-escaped whole.
        assert_eq!(masked(&format!("<{key}>")), "<***>");
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(masked(&json), "\"***\"");
        // Base64 of one line (a script that encodes what it read line by line).
        let b = base64(lines[1].as_bytes(), STANDARD);
        assert_eq!(masked(&b), MASK);
    }

    #[test]
    fn overlapping_and_nested_secrets_are_masked_completely() {
        let a = unique("ovA");
        let b = unique("ovB");
        // `outer` contains `a` whole; `x` and `y` overlap each other.
        let outer = format!("pre-{a}-post");
        register(&a);
        register(&outer);
        assert_eq!(masked(&format!("[{outer}]")), "[***]");
        assert_eq!(masked(&format!("[{a}]")), "[***]");
        let x = format!("{b}-left-shared");
        let y = format!("shared-right-{}", &b[..6]);
        register(&x);
        register(&y);
        // "…-left-shared-right-…": the union of both spans is masked, nothing leaks between.
        let joined = format!("{b}-left-shared-right-{}", &b[..6]);
        assert_eq!(masked(&format!("<{joined}>")), "<***>");
        // Adjacent secrets are each masked.
        assert_eq!(masked(&format!("{a}{a}")), "******");
    }

    #[test]
    fn values_too_short_to_mask_are_ignored() {
        register("Z#q");
        register(" #Z ");
        register("");
        assert!(matches!(mask("xZ#qx #Z "), Cow::Borrowed(_)));
        assert!(forms("a#b").is_empty());
        assert!(forms("  a#  ").is_empty());
        assert!(!forms("a#bc").is_empty());
        // A multi-line value registers its long lines only.
        let f = forms("ok\nlonger-line#1");
        assert!(f.contains("longer-line#1"));
        assert!(!f.contains("ok"));
    }

    #[test]
    fn text_without_secrets_is_borrowed() {
        register(&unique("present-"));
        let text = "an ordinary line: GET /health 503 (region mexico)";
        assert!(matches!(mask(text), Cow::Borrowed(t) if std::ptr::eq(t, text)));
        assert!(matches!(mask(""), Cow::Borrowed("")));
        assert!(matches!(mask_bytes(b"\xff\xfe bytes"), Cow::Borrowed(_)));
        // An empty registry never allocates or matches.
        let empty = Registry::default();
        assert!(matches!(empty.mask(text), Cow::Borrowed(_)));
        assert!(empty.spans(text.as_bytes()).is_empty());
    }

    #[test]
    fn bytes_that_are_not_utf8_are_masked_around_the_secret() {
        let s = unique("bytes-");
        register(&s);
        let mut text = b"\xff\xfe".to_vec();
        text.extend_from_slice(s.as_bytes());
        text.extend_from_slice(b"\xc3");
        assert_eq!(mask_bytes(&text).as_ref(), b"\xff\xfe***\xc3");
    }

    #[test]
    fn json_strings_keys_and_numbers_are_masked_in_place() {
        let s = unique("json-");
        let digits = "90210778312";
        register(&s);
        register(digits);
        let enc = base64(s.as_bytes(), URL_SAFE);
        let mut v = serde_json::json!({
            "event": "failed",
            "error": format!("health check failed\n--- last lines ---\nAPI_TOKEN={s}"),
            "nested": [{"x": format!("b64:{enc}")}, 7, null, true],
            s.clone(): "the key itself",
            "pin": 90210778312u64,
            "after": "order kept",
        });
        mask_json(&mut v);
        let text = v.to_string();
        assert!(!text.contains(&s) && !text.contains(&enc), "{text}");
        assert_eq!(
            v["error"],
            "health check failed\n--- last lines ---\nAPI_TOKEN=***"
        );
        assert_eq!(v["nested"][0]["x"], "b64:***");
        assert_eq!(v["nested"][1], 7);
        assert_eq!(v["***"], "the key itself");
        assert_eq!(v["pin"], "***");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["event", "error", "nested", "***", "pin", "after"]);
    }

    #[test]
    fn the_writer_masks_a_secret_split_across_writes() {
        let s = unique("split-");
        register(&s);
        let (a, b) = s.split_at(s.len() / 2);
        let mut w = MaskingWriter::new(Vec::new());
        w.write_all(b"first line\nsecret=").unwrap();
        w.write_all(a.as_bytes()).unwrap();
        w.flush().unwrap();
        w.write_all(b.as_bytes()).unwrap();
        w.write_all(b" end\nlast ").unwrap();
        w.write_all(s.as_bytes()).unwrap();
        // The partial last line leaves on finish (or drop), masked.
        let out = String::from_utf8(w.finish().unwrap()).unwrap();
        assert_eq!(out, "first line\nsecret=*** end\nlast ***");

        // Byte by byte, and dropped rather than finished.
        let buf = Arc::new(Mutex::new(Vec::new()));
        {
            let mut w = MaskingWriter::new(Shared(buf.clone()));
            for byte in format!("x {s} y\n{s}").bytes() {
                w.write_all(&[byte]).unwrap();
            }
        }
        assert_eq!(&*buf.lock().unwrap(), b"x *** y\n***");
    }

    #[test]
    fn a_long_line_without_a_newline_is_not_held_forever() {
        let mut w = MaskingWriter::new(Vec::new());
        w.write_all(&vec![b'a'; MAX_PENDING + 1]).unwrap();
        assert!(w.pending.is_empty());
        assert_eq!(w.inner.as_ref().unwrap().len(), MAX_PENDING + 1);
    }

    #[derive(Clone)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn logs_through_the_make_writer_are_masked() {
        let s = unique("log-");
        register(&s);
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Shared(buf.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(MaskingMakeWriter::new(move || sink.clone()))
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(url = %format!("https://x:{s}@h/"), "connecting");
            tracing::trace!("body: {}", base64(s.as_bytes(), STANDARD));
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("connecting") && text.contains("body: ***"),
            "{text}"
        );
        assert!(text.contains("https://x:***@h/"), "{text}");
        assert!(!text.contains(&s), "{text}");
    }

    #[test]
    fn resolve_reads_like_before_and_registers_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let s = unique("file-");
        std::fs::write(&file, format!("{s}\n\n")).unwrap();
        let value = resolve(&format!("file:{}", file.display())).unwrap();
        assert_eq!(value, s);
        assert_eq!(masked(&format!("t={s}")), "t=***");

        let s = unique("env-");
        let var = unique("PACKFY_SECRETS_TEST_").to_ascii_uppercase();
        std::env::set_var(&var, &s);
        assert_eq!(resolve(&format!("env:{var}")).unwrap(), s);
        assert_eq!(masked(&s), MASK);

        assert_eq!(
            resolve("env:PACKFY_SECRETS_TEST_UNSET_7f3a").unwrap_err(),
            "environment variable PACKFY_SECRETS_TEST_UNSET_7f3a is not set"
        );
        let missing = dir.path().join("missing");
        assert!(resolve(&format!("file:{}", missing.display()))
            .unwrap_err()
            .starts_with(&format!("cannot read {}: ", missing.display())));
        assert_eq!(resolve("vault:x").unwrap_err(), "unknown kind of reference");
        assert_eq!(
            resolve("no-colon").unwrap_err(),
            "unknown kind of reference"
        );
    }

    #[test]
    fn registration_from_many_threads_is_safe() {
        let values: Vec<String> = (0..8).map(|i| unique(&format!("thr{i}-"))).collect();
        std::thread::scope(|scope| {
            for v in &values {
                scope.spawn(move || {
                    register(v);
                    assert_eq!(masked(&format!("<{v}>")), "<***>");
                });
            }
        });
        for v in &values {
            assert_eq!(masked(v), MASK);
        }
    }
}
