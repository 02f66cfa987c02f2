//! The state directory: checked, locked for this process, and the names of the files in it.
//!
//! - `lock`: held (flock) while a process uses the directory; holds that process's pid.
//! - `secret`: the session key, made here when the config names none, so cookies outlive a
//!   restart.
//! - `snapshot`: every live session at one moment.
//! - `log.NNNNNNNNNNNN`: what changed since, appended; numbered so that a snapshot taken while
//!   one log is being written covers exactly the older ones, which are then deleted.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the state directory cannot be used. Every message names the directory or the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("session.state_dir {dir}: {why}")]
    Dir { dir: PathBuf, why: String },
    #[error(
        "session.state_dir {dir}: another sessiongate (pid {pid}) is using it; stop it, or give this one a state_dir of its own"
    )]
    Locked { dir: PathBuf, pid: String },
    #[error("{file}: {why}")]
    File { file: PathBuf, why: String },
}

/// A state directory this process has checked and, unless only reading it, locked.
pub struct StateDir {
    path: PathBuf,
    /// Holding this open holds the lock; it is released when the process ends, however.
    _lock: Option<File>,
}

const LOG_PREFIX: &str = "log.";

impl StateDir {
    /// Makes `path` if missing (0700), checks no other user may write to it, and locks it.
    pub fn open(path: &Path) -> Result<StateDir, StateError> {
        Self::locked(path, true)
    }

    /// [`Self::open`] for a directory that must exist already (`sessiongate passkeys`).
    pub fn open_existing(path: &Path) -> Result<StateDir, StateError> {
        Self::locked(path, false)
    }

    /// The directory for reading only, without its lock: the sessiongate holding it may be
    /// writing meanwhile (see `load::load_unlocked`). Never to write to.
    pub fn unlocked(path: &Path) -> Result<StateDir, StateError> {
        check(path, false)?;
        Ok(StateDir {
            path: path.to_path_buf(),
            _lock: None,
        })
    }

    fn locked(path: &Path, create: bool) -> Result<StateDir, StateError> {
        check(path, create)?;
        let lock = lock(path)?;
        Ok(StateDir {
            path: path.to_path_buf(),
            _lock: Some(lock),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn snapshot(&self) -> PathBuf {
        self.path.join("snapshot")
    }

    pub fn snapshot_tmp(&self) -> PathBuf {
        self.path.join("snapshot.tmp")
    }

    pub fn log(&self, n: u64) -> PathBuf {
        self.path.join(format!("{LOG_PREFIX}{n:012}"))
    }

    /// The numbers of the logs in the directory, oldest first.
    pub fn logs(&self) -> Result<Vec<u64>, StateError> {
        let entries = std::fs::read_dir(&self.path).map_err(|e| self.dir_error(e))?;
        let mut logs: Vec<u64> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name();
                let n = name.to_str()?.strip_prefix(LOG_PREFIX)?;
                (n.len() == 12 && n.bytes().all(|b| b.is_ascii_digit())).then(|| n.parse().ok())?
            })
            .collect();
        logs.sort_unstable();
        Ok(logs)
    }

    /// The session key kept in the directory, made (64 random bytes, 0600) on first use.
    pub fn secret(&self) -> Result<Vec<u8>, StateError> {
        let file = self.path.join("secret");
        let err = |why: String| StateError::File {
            file: file.clone(),
            why,
        };
        match File::open(&file) {
            Ok(mut f) => {
                let mut key = Vec::new();
                f.read_to_end(&mut key).map_err(|e| err(e.to_string()))?;
                if key.len() < 32 {
                    return Err(err(format!(
                        "holds {} bytes, fewer than the 32 a session key needs; delete it to make a new one (everyone signs in again)",
                        key.len()
                    )));
                }
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; 64];
                rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut key)
                    .expect("the OS random number generator failed");
                let mut f = create_new(&file).map_err(|e| err(e.to_string()))?;
                f.write_all(&key)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| err(e.to_string()))?;
                sync_dir(&self.path).map_err(|e| self.dir_error(e))?;
                Ok(key)
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    fn dir_error(&self, e: std::io::Error) -> StateError {
        StateError::Dir {
            dir: self.path.clone(),
            why: e.to_string(),
        }
    }
}

/// Creates `path` for writing, 0600, failing if it exists.
pub fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Makes a rename or a new file in `dir` survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether `path` is a directory this process can keep sessions in (made if `create` and
/// missing): not writable by others, who could otherwise plant sessions in it.
pub fn check(path: &Path, create: bool) -> Result<(), StateError> {
    let err = |why: String| StateError::Dir {
        dir: path.to_path_buf(),
        why,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| err(format!("cannot create it: {e}")))?;
            std::fs::metadata(path).map_err(|e| err(e.to_string()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(err(
                "does not exist (sessiongate creates it, 0700, if its parent is writable)".into(),
            ));
        }
        Err(e) => return Err(err(e.to_string())),
    };
    if !meta.is_dir() {
        return Err(err("is not a directory".into()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(err(format!(
            "is writable by every user (mode {:o}), who could plant or remove sessions; run `chmod o-w {}` (0700 is best)",
            mode & 0o777,
            path.display()
        )));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if mode & 0o020 != 0 && meta.uid() != me {
        return Err(err(format!(
            "is owned by uid {} and writable by its group; make it this user's (uid {me}) or `chmod g-w` it",
            meta.uid()
        )));
    }
    Ok(())
}

/// Takes `dir/lock`, writing this process's pid into it; names the holder if another has it.
fn lock(dir: &Path) -> Result<File, StateError> {
    let path = dir.join("lock");
    let file_err = |e: std::io::Error| StateError::File {
        file: path.clone(),
        why: e.to_string(),
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(file_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(StateError::Locked {
                dir: dir.to_path_buf(),
                pid: if pid.is_empty() { "unknown" } else { pid }.to_string(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(file_err(e)),
    }
    file.set_len(0)
        .and_then(|()| file.write_all(std::process::id().to_string().as_bytes()))
        .map_err(file_err)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sessiongate-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_directory_is_made_private_locked_once_and_keeps_its_secret() {
        let path = temp("lock");
        let dir = StateDir::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let again = StateDir::open(&path).err().expect("locked");
        let text = again.to_string();
        assert!(text.contains(&std::process::id().to_string()), "{text}");
        let secret = dir.secret().unwrap();
        assert_eq!(secret.len(), 64);
        assert_eq!(dir.secret().unwrap(), secret);
        let file_mode = std::fs::metadata(path.join("secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(file_mode & 0o777, 0o600);
        drop(dir);
        assert!(
            StateDir::open(&path).is_ok(),
            "the lock goes with the holder"
        );
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn a_world_writable_directory_is_refused_by_name() {
        let path = temp("open");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let text = StateDir::open(&path).err().expect("refused").to_string();
        assert!(
            text.contains("writable by every user") && text.contains(&*path.to_string_lossy()),
            "{text}"
        );
        assert!(check(&temp("missing"), false).is_err());
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn logs_are_listed_oldest_first_and_other_files_ignored() {
        let path = temp("logs");
        let dir = StateDir::open(&path).unwrap();
        for n in [12, 3, 7] {
            create_new(&dir.log(n)).unwrap();
        }
        create_new(&path.join("log.tmp")).unwrap();
        assert_eq!(dir.logs().unwrap(), [3, 7, 12]);
        std::fs::remove_dir_all(&path).unwrap();
    }
}
