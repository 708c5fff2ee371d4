//! Ctrl-C (and SIGTERM, SIGHUP): stop at once, with a message and exit status 130.
//!
//! Stopping needs no cleanup, because no output file has its name before it is complete (see
//! [`crate::file_set`]). The one exception is the step that gives finished files their names:
//! a signal during it is held until the step is done, then honoured by [`stop_if_requested`].

use std::sync::atomic::{AtomicU8, Ordering::SeqCst};

const RUNNING: u8 = 0;
const NAMING: u8 = 1;
const STOP_REQUESTED: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(RUNNING);

/// Installs the handler; later signals stop the process as described above.
pub fn install() {
    // Failing to install (another handler already set) leaves the default: die at once, which
    // is equally safe for the files.
    let _ = ctrlc::set_handler(|| {
        if STATE
            .compare_exchange(NAMING, STOP_REQUESTED, SeqCst, SeqCst)
            .is_err()
            && STATE.load(SeqCst) != STOP_REQUESTED
        {
            exit("interrupted; nothing of the unfinished work was written");
        }
    });
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
        exit("interrupted; the files listed above are complete, nothing else was written");
    }
}

fn exit(message: &str) -> ! {
    eprintln!("\nerror: {message}");
    // `_exit` skips atexit handlers, which could wait on work still running on other threads.
    #[cfg(unix)]
    unsafe {
        libc::_exit(130)
    }
    #[cfg(not(unix))]
    std::process::exit(130)
}
