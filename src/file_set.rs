//! Files that appear together or not at all: a vector's three outputs, an exported GGUF.
//!
//! Each file is first written and synced where no name can see it: on Linux an unnamed
//! `O_TMPFILE` inode that the kernel discards if the process dies, elsewhere a hidden
//! `.<name>.partial-<pid>` sibling. Only when every file is complete are they given their names,
//! and that last step (create the missing directories, link, rename) runs in a forked child in
//! its own session that does nothing but those system calls: a SIGKILL or Ctrl-C of the main
//! process at any moment leaves either the whole set or none of it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One file to write: where it goes and what it holds.
pub struct Entry<'a> {
    pub dest: &'a Path,
    pub bytes: &'a [u8],
}

/// Writes every entry (all in one directory, created with its parents if missing), replacing
/// existing files of the same names. On error nothing of the set is left behind.
pub fn write_all_or_nothing(entries: &[Entry]) -> Result<()> {
    crate::interrupt::uninterrupted(|| write_set(entries))
}

fn write_set(entries: &[Entry]) -> Result<()> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    let dir = parent_of(first.dest);
    for e in entries {
        if parent_of(e.dest) != dir {
            return Err(Error::new("the files of one set must share a directory"));
        }
        if e.dest.is_dir() {
            return Err(Error::new(format!(
                "cannot write `{}`: a directory has that name",
                e.dest.display()
            )));
        }
    }
    let cannot =
        |e: std::io::Error| Error::new(format!("cannot write to `{}`: {e}", dir.display()));
    let missing = missing_dirs(&dir);
    let anchor = anchor(&dir, &missing);
    if !anchor.is_dir() {
        return Err(Error::new(format!(
            "cannot write to `{}`: `{}` is not a directory",
            dir.display(),
            anchor.display()
        )));
    }

    #[cfg(target_os = "linux")]
    if let Some(mut files) = unnamed::create(&anchor, entries.len()).map_err(cannot)? {
        for (f, e) in files.iter_mut().zip(entries) {
            write_synced(f, e.bytes).map_err(cannot)?;
        }
        let plan = commit::Plan::linking(&missing, &files, entries)?;
        return plan
            .run()
            .map_err(|(path, e)| Error::new(format!("cannot write `{}`: {e}", path.display())));
    }

    // Without unnamed files: hidden siblings, removed again on error.
    for d in missing.iter().rev() {
        std::fs::create_dir(d)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })
            .map_err(cannot)?;
    }
    let temps: Vec<PathBuf> = entries.iter().map(|e| hidden_sibling(e.dest)).collect();
    let cleanup = || {
        for t in &temps {
            let _ = std::fs::remove_file(t);
        }
        for d in &missing {
            let _ = std::fs::remove_dir(d);
        }
    };
    for (t, e) in temps.iter().zip(entries) {
        let written = File::create(t).and_then(|mut f| write_synced(&mut f, e.bytes));
        if let Err(err) = written {
            cleanup();
            return Err(Error::new(format!("cannot write `{}`: {err}", t.display())));
        }
    }
    let renamed = rename_all(&temps, entries);
    if renamed.is_err() {
        cleanup();
    }
    renamed
}

/// Whether files can be created in `dir` (or, if it does not exist yet, in its nearest existing
/// ancestor), checked without leaving anything on disk.
pub fn check_writable(dir: &Path) -> std::io::Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(std::io::Error::other("not a directory"));
    }
    let anchor = anchor(dir, &missing_dirs(dir));
    if !anchor.is_dir() {
        return Err(std::io::Error::other(format!(
            "`{}` is not a directory",
            anchor.display()
        )));
    }
    #[cfg(target_os = "linux")]
    if unnamed::create(&anchor, 1)?.is_some() {
        return Ok(());
    }
    let probe = anchor.join(format!(".train-vector-probe-{}", std::process::id()));
    File::create(&probe)?;
    std::fs::remove_file(&probe)
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The directories from `dir` up that do not exist yet, deepest first.
fn missing_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    missing
}

/// The nearest existing directory at or above `dir`, where unnamed files are made: the
/// directories still to be created lie inside it, so on the same filesystem.
fn anchor(dir: &Path, missing: &[PathBuf]) -> PathBuf {
    let a = match missing.last() {
        Some(top) => top.parent().map(Path::to_path_buf).unwrap_or_default(),
        None => dir.to_path_buf(),
    };
    if a.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        a
    }
}

/// A hidden name beside `dest`, so a partial file never carries the final name.
fn hidden_sibling(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Writes the whole file with positional writes (the only ones a run makes, so a test can
/// stop it at exactly these) and syncs it.
fn write_synced(f: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    f.write_all_at(bytes, 0)?;
    f.sync_all()
}

/// Renames complete temporaries into place: in a detached child on Linux, else in turn.
fn rename_all(temps: &[PathBuf], entries: &[Entry]) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        let plan = commit::Plan::renaming(temps, entries)?;
        plan.run()
            .map_err(|(path, e)| Error::new(format!("cannot write `{}`: {e}", path.display())))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut done: Vec<&Path> = Vec::new();
        for (t, e) in temps.iter().zip(entries) {
            if let Err(err) = std::fs::rename(t, e.dest) {
                for d in done {
                    let _ = std::fs::remove_file(d);
                }
                return Err(Error::new(format!(
                    "cannot write `{}`: {err}",
                    e.dest.display()
                )));
            }
            done.push(e.dest);
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
mod unnamed {
    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Path;

    /// `n` unnamed files in `dir`, or `None` where the filesystem has no `O_TMPFILE` or
    /// `/proc` is missing (needed to give them names later).
    pub fn create(dir: &Path, n: usize) -> std::io::Result<Option<Vec<File>>> {
        if !Path::new("/proc/self/fd").is_dir() {
            return Ok(None);
        }
        let mut files = Vec::new();
        for _ in 0..n {
            match OpenOptions::new()
                .read(true)
                .write(true)
                .mode(0o666)
                .custom_flags(libc::O_TMPFILE)
                .open(dir)
            {
                Ok(f) => files.push(f),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Some(files))
    }
}

#[cfg(target_os = "linux")]
mod commit {
    //! The naming step as a list of system calls, run by a child that no signal to the main
    //! process or its process group can stop halfway.

    use std::ffi::CString;
    use std::fs::File;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    use std::path::{Path, PathBuf};

    use super::{hidden_sibling, Entry};
    use crate::error::{Error, Result};

    enum Op {
        Mkdir(CString),
        /// `/proc/self/fd/N` of an unnamed file -> a hidden name.
        Link(CString, CString),
        Rename(CString, CString),
    }

    pub struct Plan {
        ops: Vec<Op>,
        /// The path each op reports on failure.
        paths: Vec<PathBuf>,
        /// Undo on failure: hidden names to unlink, destinations that did not exist, created
        /// directories (deepest first).
        undo_files: Vec<CString>,
        undo_dests: Vec<CString>,
        undo_dirs: Vec<CString>,
        dir: CString,
    }

    fn c(p: &Path) -> Result<CString> {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| Error::new(format!("path `{}` contains a NUL byte", p.display())))
    }

    impl Plan {
        fn new(dir: &Path) -> Result<Plan> {
            Ok(Plan {
                ops: Vec::new(),
                paths: Vec::new(),
                undo_files: Vec::new(),
                undo_dests: Vec::new(),
                undo_dirs: Vec::new(),
                dir: c(dir)?,
            })
        }

        fn renames(&mut self, temps: &[PathBuf], entries: &[Entry]) -> Result<()> {
            for (t, e) in temps.iter().zip(entries) {
                if !e.dest.exists() {
                    self.undo_dests.push(c(e.dest)?);
                }
                self.ops.push(Op::Rename(c(t)?, c(e.dest)?));
                self.paths.push(e.dest.to_path_buf());
            }
            Ok(())
        }

        /// Create `missing` (deepest first), link each unnamed file to a hidden name, rename.
        pub fn linking(missing: &[PathBuf], files: &[File], entries: &[Entry]) -> Result<Plan> {
            let mut plan = Plan::new(&super::parent_of(entries[0].dest))?;
            for d in missing.iter().rev() {
                plan.ops.push(Op::Mkdir(c(d)?));
                plan.paths.push(d.clone());
            }
            for d in missing {
                plan.undo_dirs.push(c(d)?);
            }
            let temps: Vec<PathBuf> = entries.iter().map(|e| hidden_sibling(e.dest)).collect();
            for (f, t) in files.iter().zip(&temps) {
                let fd = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
                plan.ops.push(Op::Link(c(&fd)?, c(t)?));
                plan.paths.push(t.clone());
                plan.undo_files.push(c(t)?);
            }
            plan.renames(&temps, entries)?;
            Ok(plan)
        }

        /// Rename complete hidden files into place.
        pub fn renaming(temps: &[PathBuf], entries: &[Entry]) -> Result<Plan> {
            let mut plan = Plan::new(&super::parent_of(entries[0].dest))?;
            plan.renames(temps, entries)?;
            Ok(plan)
        }

        /// Runs every op, in a detached child where possible; on failure, the path and error.
        pub fn run(&self) -> std::result::Result<(), (PathBuf, std::io::Error)> {
            let mut pipe = [0i32; 2];
            // SAFETY: `pipe` has room for the two descriptors.
            if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                return self.report(self.execute());
            }
            // SAFETY: the child only makes async-signal-safe system calls on memory prepared
            // before the fork, then `_exit`s.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                // No child to be had (memory limits): do it here, with the tiny window that
                // leaves.
                unsafe {
                    libc::close(pipe[0]);
                    libc::close(pipe[1]);
                }
                return self.report(self.execute());
            }
            if pid == 0 {
                unsafe {
                    libc::close(pipe[0]);
                    libc::setsid();
                    let failure = self.execute();
                    let code = match failure {
                        Ok(()) => 0,
                        Err((step, errno)) => {
                            let msg = [step as i32, errno];
                            libc::write(pipe[1], msg.as_ptr().cast(), std::mem::size_of_val(&msg));
                            1
                        }
                    };
                    libc::_exit(code);
                }
            }
            unsafe { libc::close(pipe[1]) };
            let mut status = 0;
            loop {
                // SAFETY: waits for the child forked above.
                let r = unsafe { libc::waitpid(pid, &mut status, 0) };
                if r == pid
                    || (r < 0
                        && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR))
                {
                    break;
                }
            }
            let mut msg = [0i32; 2];
            // SAFETY: reads at most the buffer's size from the pipe's read end.
            let n = unsafe {
                let n = libc::read(
                    pipe[0],
                    msg.as_mut_ptr().cast(),
                    std::mem::size_of_val(&msg),
                );
                libc::close(pipe[0]);
                n
            };
            if n == std::mem::size_of_val(&msg) as isize {
                return self.report(Err((msg[0] as usize, msg[1])));
            }
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                Ok(())
            } else {
                let dir = PathBuf::from(std::ffi::OsStr::from_bytes(self.dir.as_bytes()));
                Err((
                    dir,
                    std::io::Error::other("the step that names the files failed"),
                ))
            }
        }

        fn report(
            &self,
            r: std::result::Result<(), (usize, i32)>,
        ) -> std::result::Result<(), (PathBuf, std::io::Error)> {
            r.map_err(|(step, errno)| {
                (
                    self.paths.get(step).cloned().unwrap_or_default(),
                    std::io::Error::from_raw_os_error(errno),
                )
            })
        }

        /// The system calls; on failure undoes what it can and returns (op index, errno).
        /// Safe to run in a forked child: no allocation, no locks.
        fn execute(&self) -> std::result::Result<(), (usize, i32)> {
            for (i, op) in self.ops.iter().enumerate() {
                // SAFETY: every pointer is a NUL-terminated string owned by `self`.
                let r = unsafe {
                    match op {
                        Op::Mkdir(d) => {
                            let r = libc::mkdir(d.as_ptr(), 0o777);
                            if r != 0 && *libc::__errno_location() == libc::EEXIST {
                                0
                            } else {
                                r
                            }
                        }
                        Op::Link(from, to) => {
                            libc::unlink(to.as_ptr());
                            libc::linkat(
                                libc::AT_FDCWD,
                                from.as_ptr(),
                                libc::AT_FDCWD,
                                to.as_ptr(),
                                libc::AT_SYMLINK_FOLLOW,
                            )
                        }
                        Op::Rename(from, to) => libc::rename(from.as_ptr(), to.as_ptr()),
                    }
                };
                if r != 0 {
                    // SAFETY: reads this thread's errno, then undoes with plain system calls.
                    let errno = unsafe { *libc::__errno_location() };
                    unsafe { self.undo(i) };
                    return Err((i, errno));
                }
            }
            // SAFETY: plain system calls on owned strings.
            unsafe {
                let fd = libc::open(self.dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
                if fd >= 0 {
                    libc::fsync(fd);
                    libc::close(fd);
                }
            }
            Ok(())
        }

        /// Removes what ops before `failed` made, as far as it can be removed.
        unsafe fn undo(&self, failed: usize) {
            for op in self.ops.iter().take(failed) {
                if let Op::Rename(_, to) = op {
                    if self
                        .undo_dests
                        .iter()
                        .any(|d| d.as_bytes() == to.as_bytes())
                    {
                        libc::unlink(to.as_ptr());
                    }
                }
            }
            for f in &self.undo_files {
                libc::unlink(f.as_ptr());
            }
            for d in &self.undo_dirs {
                libc::rmdir(d.as_ptr());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "file-set-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn creates_missing_directories_and_replaces_files() {
        let root = tempdir();
        let dir = root.join("a/b");
        let (x, y) = (dir.join("x"), dir.join("y"));
        let set = |a: &[u8], b: &[u8]| {
            write_all_or_nothing(&[Entry { dest: &x, bytes: a }, Entry { dest: &y, bytes: b }])
        };
        set(b"one", b"two").unwrap();
        assert_eq!(names(&dir), ["x", "y"]);
        set(b"three", b"four").unwrap();
        assert_eq!(std::fs::read(&x).unwrap(), b"three");
        assert_eq!(std::fs::read(&y).unwrap(), b"four");
        assert_eq!(names(&dir), ["x", "y"]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_failure_leaves_nothing_not_even_the_directories() {
        let root = tempdir();
        let dir = root.join("new/deeper");
        let file = dir.join("f");
        // The second destination's name is taken by a directory the set cannot replace.
        let blocked = root.join("blocked");
        std::fs::create_dir_all(blocked.join("g")).unwrap();
        let e = write_all_or_nothing(&[
            Entry {
                dest: &blocked.join("f"),
                bytes: b"1",
            },
            Entry {
                dest: &blocked.join("g"),
                bytes: b"2",
            },
        ])
        .unwrap_err();
        assert!(e.to_string().contains("a directory has that name"), "{e}");
        assert_eq!(names(&blocked), ["g"]);
        // Destinations in different directories are refused before anything is made.
        assert!(write_all_or_nothing(&[
            Entry {
                dest: &file,
                bytes: b"1"
            },
            Entry {
                dest: &root.join("other"),
                bytes: b"2"
            },
        ])
        .is_err());
        assert_eq!(names(&root), ["blocked"]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn writability_is_checked_without_a_trace() {
        let root = tempdir();
        check_writable(&root.join("not/yet")).unwrap();
        check_writable(&root).unwrap();
        assert!(names(&root).is_empty());
        std::fs::write(root.join("file"), b"").unwrap();
        assert!(check_writable(&root.join("file/sub")).is_err());
        assert!(check_writable(&root.join("file")).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
