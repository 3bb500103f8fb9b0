//! The two libc calls std does not offer (signal handling and poll), declared by hand so the
//! crate has no dependencies.

use std::os::fd::AsRawFd;
use std::os::raw::{c_int, c_short, c_ulong};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;
const POLLIN: c_short = 0x1;

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: c_short,
    revents: c_short,
}

extern "C" {
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
    fn poll(fds: *mut PollFd, nfds: c_ulong, timeout: c_int) -> c_int;
}

extern "C" fn on_signal(_: c_int) {
    // Only an atomic store: async-signal-safe.
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
}

/// Makes SIGTERM and SIGINT set the shutdown flag instead of killing the process.
pub fn on_termination_signals() {
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);
    }
}

/// Whether SIGTERM or SIGINT has arrived.
pub fn shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::SeqCst)
}

/// Waits until `fd` is readable, `timeout` passes or a signal arrives.
pub fn wait_readable(fd: &impl AsRawFd, timeout: Duration) {
    let mut p = PollFd {
        fd: fd.as_raw_fd(),
        events: POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe {
        poll(
            &mut p,
            1,
            timeout.as_millis().min(i32::MAX as u128) as c_int,
        );
    }
}
