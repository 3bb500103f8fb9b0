//! Names no other test, thread or earlier run uses.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A name no other test (or earlier run) uses: `PREFIX-PID-N-NANOS`, lowercase, valid for
/// containers, image tags, HAProxy servers and SQL identifiers (no `-` there: use
/// [`unique_ident`]).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
    .to_ascii_lowercase()
}

/// [`unique_name`] with `_` instead of `-`: an SQL identifier.
pub fn unique_ident(prefix: &str) -> String {
    unique_name(prefix).replace('-', "_")
}
