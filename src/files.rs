//! Writing files safely: atomic writes (a temporary file renamed into place), outputs checked
//! against the inputs they must never replace, and a registry of temporary paths that
//! [`remove_registered`] deletes when the process is interrupted.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Temporary paths to delete if the process is interrupted, in order: (path, whether only an
/// empty folder is removed).
static REGISTERED: Mutex<Vec<(PathBuf, bool)>> = Mutex::new(Vec::new());

/// A temporary path, deleted on drop and by [`remove_registered`] on interruption.
pub struct TempPath {
    path: PathBuf,
    only_if_empty: bool,
}

impl TempPath {
    /// A file or folder (existing or not yet), removed with everything in it.
    pub fn new(path: PathBuf) -> TempPath {
        TempPath::register(path, false)
    }

    /// A folder removed only while it is empty (one a run created for its outputs).
    pub fn empty_dir(path: PathBuf) -> TempPath {
        TempPath::register(path, true)
    }

    fn register(path: PathBuf, only_if_empty: bool) -> TempPath {
        REGISTERED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((path.clone(), only_if_empty));
        TempPath {
            path,
            only_if_empty,
        }
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the path: it is no longer temporary.
    pub fn keep(self) {
        unregister(&self.path);
        std::mem::forget(self);
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        remove(&self.path, self.only_if_empty);
        unregister(&self.path);
    }
}

fn unregister(path: &Path) {
    REGISTERED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(p, _)| p != path);
}

fn remove(p: &Path, only_if_empty: bool) {
    if only_if_empty {
        let _ = std::fs::remove_dir(p);
    } else if p.is_dir() {
        let _ = std::fs::remove_dir_all(p);
    } else {
        let _ = std::fs::remove_file(p);
    }
}

/// Deletes every registered temporary path, newest first (called from a signal handler
/// before exiting).
pub fn remove_registered() {
    // try_lock: the interrupted thread may hold the lock; leaving the files then is better
    // than a deadlock in the handler.
    if let Ok(list) = REGISTERED.try_lock() {
        for (p, only_if_empty) in list.iter().rev() {
            remove(p, *only_if_empty);
        }
    }
}

/// Installs a SIGINT/SIGTERM handler that deletes every registered temporary path, then
/// exits with status 130 (for command-line front ends; a library caller keeps its own).
pub fn remove_registered_on_signal() {
    let installed = ctrlc::set_handler(|| {
        remove_registered();
        eprintln!("interrupted: partial outputs removed");
        std::process::exit(130);
    });
    if let Err(e) = installed {
        log::warn!("no cleanup on interruption: {e}");
    }
}

fn io(action: &'static str, path: &Path, e: impl ToString) -> Error {
    Error::Io {
        action,
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Whether two paths name the same existing file (the same inode: hard links and symlinks
/// included).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                x.dev() == y.dev() && x.ino() == y.ino()
            }
            #[cfg(not(unix))]
            {
                let _ = (x, y);
                matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(p), Ok(q)) if p == q)
            }
        }
        _ => false,
    }
}

/// Checks that writing `output` replaces none of `inputs` and that whatever exists there is a
/// regular file (a device, a FIFO or a folder is never replaced).
pub fn check_output(output: &Path, inputs: &[&Path]) -> Result<()> {
    for i in inputs {
        if same_file(output, i) {
            return Err(Error::Io {
                action: "refusing to write over an input",
                path: output.display().to_string(),
                message: format!(
                    "it is the input '{}'; choose another output path",
                    i.display()
                ),
            });
        }
    }
    match std::fs::symlink_metadata(output) {
        Ok(m) if m.file_type().is_symlink() => match std::fs::metadata(output) {
            Ok(t) if !t.is_file() => Err(io(
                "refusing to write over",
                output,
                "it links to something that is not a regular file",
            )),
            _ => Ok(()),
        },
        Ok(m) if !m.is_file() => Err(io(
            "refusing to write over",
            output,
            if m.is_dir() {
                "it is a folder"
            } else {
                "it is not a regular file (a device, FIFO or socket)"
            },
        )),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` atomically: into a temporary file beside it, then renamed. An
/// existing non-regular file at `path` is refused (see [`check_output`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    check_output(path, &[])?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = TempPath::new(dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|f| f.to_str()).unwrap_or("out"),
        std::process::id()
    )));
    std::fs::write(tmp.path(), bytes).map_err(|e| io("writing", path, e))?;
    std::fs::rename(tmp.path(), path).map_err(|e| io("renaming into", path, e))
}

/// Reads a JSON file this project wrote (a saved table); `what` names it in errors. A file
/// that is not JSON is a config error on its key "(file)".
pub fn read_json(path: &Path, what: &'static str) -> Result<serde_json::Value> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        action: what,
        path: file.clone(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Config {
        file,
        key: "(file)".into(),
        message: format!("not JSON: {e}"),
    })
}
