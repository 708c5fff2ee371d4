//! Ctrl-C (and SIGTERM, SIGHUP): stop at once, with a message and exit status 130.
//!
//! Stopping needs no cleanup, because no output file has its name before it is complete (see
//! [`crate::file_set`]). The one exception is the step that gives finished files their names:
//! a signal during it is held until the step is done, then honoured by [`stop_if_requested`].
//! The handler does its work inside the signal handler itself (an atomic swap, `write`,
//! `_exit`: all async-signal-safe), so no signal is lost to thread scheduling.

use std::sync::atomic::{AtomicU8, Ordering::SeqCst};

const RUNNING: u8 = 0;
const NAMING: u8 = 1;
const STOP_REQUESTED: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(RUNNING);

const MESSAGE: &[u8] = b"\nerror: interrupted; no partial files were written\n";

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() {
    #[cfg(unix)]
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a plain handler and an empty mask is valid; the
        // handler only touches an atomic and makes async-signal-safe calls.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

#[cfg(unix)]
extern "C" fn on_signal(_: libc::c_int) {
    if STATE
        .compare_exchange(NAMING, STOP_REQUESTED, SeqCst, SeqCst)
        .is_ok()
        || STATE.load(SeqCst) == STOP_REQUESTED
    {
        return;
    }
    exit_now();
}

/// Runs `f`, which names finished files, without letting a signal stop it halfway.
pub fn uninterrupted<T>(f: impl FnOnce() -> T) -> T {
    let _ = STATE.compare_exchange(RUNNING, NAMING, SeqCst, SeqCst);
    let r = f();
    let _ = STATE.compare_exchange(NAMING, RUNNING, SeqCst, SeqCst);
    r
}

/// Stops now if a signal arrived while files were being named; call it once their paths have
/// been reported.
pub fn stop_if_requested() {
    if STATE.load(SeqCst) == STOP_REQUESTED {
        exit_now();
    }
}

fn exit_now() -> ! {
    // `_exit` skips atexit handlers, which could wait on work still running on other threads.
    #[cfg(unix)]
    // SAFETY: writing a static buffer to stderr and exiting are async-signal-safe.
    unsafe {
        libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
        libc::_exit(130)
    }
    #[cfg(not(unix))]
    {
        eprint!("{}", String::from_utf8_lossy(MESSAGE));
        std::process::exit(130)
    }
}
