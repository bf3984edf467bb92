//! [`Outputs`]: an output folder written all at once. Files go into a scratch folder inside
//! it first and are moved into place by [`Outputs::commit`]; on any error, on drop and on
//! SIGINT/SIGTERM (see [`crate::files::remove_registered`]) the scratch folder is removed, so
//! a run leaves either every output or none. No output may replace one of the run's inputs.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::files::{check_output, write_atomic, TempPath};

const SCRATCH_PREFIX: &str = ".qforge-partial-";

/// An output folder being written.
pub struct Outputs {
    dir: PathBuf,
    inputs: Vec<PathBuf>,
    files: Vec<String>,
    // Dropped in this order: the scratch folder, then the output folder if this run created
    // it and it is still empty.
    scratch: TempPath,
    created: Option<TempPath>,
}

impl Outputs {
    /// Prepares `dir` (created if missing) for outputs that must not replace any of `inputs`.
    /// Scratch folders left by runs that no longer exist are removed.
    pub fn new(dir: &Path, inputs: &[&Path]) -> Result<Outputs> {
        let io = |action: &'static str, e: std::io::Error| Error::Io {
            action,
            path: dir.display().to_string(),
            message: e.to_string(),
        };
        if dir.exists() && !dir.is_dir() {
            return Err(Error::Io {
                action: "using as the output folder",
                path: dir.display().to_string(),
                message: "it exists and is not a folder".into(),
            });
        }
        let created = (!dir.exists()).then(|| TempPath::empty_dir(dir.to_path_buf()));
        std::fs::create_dir_all(dir).map_err(|e| io("creating", e))?;
        remove_stale_scratch(dir);
        let scratch = TempPath::new(dir.join(format!("{SCRATCH_PREFIX}{}", std::process::id())));
        std::fs::create_dir_all(scratch.path())
            .map_err(|e| io("creating a scratch folder in", e))?;
        Ok(Outputs {
            dir: dir.to_path_buf(),
            inputs: inputs.iter().map(|p| p.to_path_buf()).collect(),
            scratch,
            files: Vec::new(),
            created,
        })
    }

    /// Checks, before any work is done, that `names` can be written into `dir` (a folder or
    /// nothing there yet) without replacing one of `inputs`.
    pub fn check(dir: &Path, names: &[String], inputs: &[&Path]) -> Result<()> {
        if dir.exists() && !dir.is_dir() {
            return Err(Error::Io {
                action: "using as the output folder",
                path: dir.display().to_string(),
                message: "it exists and is not a folder".into(),
            });
        }
        names
            .iter()
            .try_for_each(|n| check_output(&dir.join(n), inputs))
    }

    /// The folder outputs end up in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where to write output `name` now (inside the scratch folder); checked against the
    /// inputs and against what exists at its final place.
    pub fn path(&mut self, name: &str) -> Result<PathBuf> {
        let inputs: Vec<&Path> = self.inputs.iter().map(PathBuf::as_path).collect();
        check_output(&self.dir.join(name), &inputs)?;
        if !self.files.iter().any(|f| f == name) {
            self.files.push(name.to_string());
        }
        Ok(self.scratch.path().join(name))
    }

    /// Writes output `name`.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let p = self.path(name)?;
        write_atomic(&p, bytes)
    }

    /// Moves every written output into the folder; returns their final paths.
    pub fn commit(mut self) -> Result<Vec<PathBuf>> {
        let inputs: Vec<&Path> = self.inputs.iter().map(PathBuf::as_path).collect();
        for f in &self.files {
            check_output(&self.dir.join(f), &inputs)?;
        }
        let mut done = Vec::new();
        for f in &self.files {
            let (from, to) = (self.scratch.path().join(f), self.dir.join(f));
            if !from.exists() {
                continue;
            }
            std::fs::rename(&from, &to).map_err(|e| Error::Io {
                action: "moving into",
                path: to.display().to_string(),
                message: e.to_string(),
            })?;
            done.push(to);
        }
        // The folder now holds outputs: keep it.
        if let Some(c) = self.created.take() {
            c.keep();
        }
        Ok(done)
    }
}

/// Removes `dir/.qforge-partial-PID` folders of processes that are gone (Linux: /proc).
fn remove_stale_scratch(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(SCRATCH_PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id()
            && Path::new("/proc/self").exists()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
