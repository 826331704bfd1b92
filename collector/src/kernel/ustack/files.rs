//! Where kotel opens a file a process maps. Through `/proc/<pid>/root/<path>` (the file as the
//! process sees it, in its own mount namespace) while that path still names the mapped file.
//! Once the file was deleted or replaced since the process mapped it (its maps line says
//! `(deleted)`), the path names nothing or another file: the program the process runs is then
//! opened through `/proc/<pid>/exe`, which the kernel keeps pointing at the running file. Both
//! need ptrace read access to the process (`CAP_SYS_PTRACE` for other users' processes), which
//! kotel keeps. A deleted shared library has no such link: only `/proc/<pid>/map_files/`
//! reaches it, and the kernel opens those only with `CAP_SYS_ADMIN` (or
//! `CAP_CHECKPOINT_RESTORE`), which kotel drops; its frames keep `module+0xoff` and are
//! counted.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file's identity: device and inode.
pub(super) type FileId = (u64, u64);

/// What one process maps, as far as reaching its files goes; read once per stack.
#[derive(Debug, Default, Clone)]
pub(super) struct ProcessFiles {
    pid: u32,
    /// The program the process runs: its path as the maps name it, and its identity.
    program: Option<(PathBuf, FileId)>,
    /// Paths the maps mark `(deleted)`: the path no longer names the mapped file.
    deleted: HashSet<PathBuf>,
}

/// How a mapped file is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reach {
    /// Open `path`; the file's identity is `id`.
    Open { path: PathBuf, id: FileId },
    /// Deleted or replaced, and not the program: only `map_files` reaches it.
    Deleted,
    /// The path names nothing kotel can open (the process is gone, or access was refused).
    Unreadable,
}

impl ProcessFiles {
    /// Reads what process `pid` maps: its program (`/proc/<pid>/exe`) and which of its mapped
    /// paths are deleted (`/proc/<pid>/maps`). What cannot be read is left out: the files
    /// are then reached through the root alone.
    pub(super) fn read(pid: u32) -> Self {
        let exe = format!("/proc/{pid}/exe");
        let program = std::fs::read_link(&exe).ok().and_then(|link| {
            let meta = std::fs::metadata(&exe).ok()?;
            Some((without_deleted(&link), (meta.dev(), meta.ino())))
        });
        let deleted = std::fs::read(format!("/proc/{pid}/maps"))
            .map(|maps| deleted_paths(&maps))
            .unwrap_or_default();
        ProcessFiles {
            pid,
            program,
            deleted,
        }
    }

    /// The process these are the files of.
    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether `path` (as the maps name it) is the program the process runs.
    pub(super) fn is_program(&self, path: &Path) -> bool {
        self.program.as_ref().is_some_and(|(p, _)| p == path)
    }

    /// How to open `path`, mapped by the process: through its root while that is the mapped
    /// file; the program through `/proc/<pid>/exe` once it is not (deleted, replaced, or a
    /// different file at that path).
    pub(super) fn reach(&self, path: &Path) -> Reach {
        let program = self.program.as_ref().filter(|(p, _)| p == path);
        let through_exe = |id: FileId| Reach::Open {
            path: PathBuf::from(format!("/proc/{}/exe", self.pid)),
            id,
        };
        let rooted = in_root(self.pid, path);
        if self.deleted.contains(path) {
            return match program {
                Some((_, id)) => through_exe(*id),
                None => Reach::Deleted,
            };
        }
        match (std::fs::metadata(&rooted), program) {
            (Ok(meta), Some((_, id))) if (meta.dev(), meta.ino()) != *id => through_exe(*id),
            (Ok(meta), _) => Reach::Open {
                path: rooted,
                id: (meta.dev(), meta.ino()),
            },
            (Err(_), Some((_, id))) => through_exe(*id),
            (Err(_), None) => Reach::Unreadable,
        }
    }
}

/// `path` as process `pid` sees it, through its root.
pub(super) fn in_root(pid: u32, path: &Path) -> PathBuf {
    let rel = path.strip_prefix("/").unwrap_or(path);
    Path::new(&format!("/proc/{pid}/root")).join(rel)
}

/// `link` without the ` (deleted)` the kernel appends to a deleted file's name.
fn without_deleted(link: &Path) -> PathBuf {
    let text = link.to_string_lossy();
    PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(&text))
}

/// The paths of `/proc/<pid>/maps` lines marked ` (deleted)`, without the mark. The path is
/// the sixth field and runs to the end of the line (it may hold spaces).
fn deleted_paths(maps: &[u8]) -> HashSet<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    maps.split(|b| *b == b'\n')
        .filter_map(|line| {
            let path = line.strip_suffix(b" (deleted)")?;
            let start = path.iter().position(|b| *b == b'/')?;
            Some(PathBuf::from(std::ffi::OsStr::from_bytes(&path[start..])))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_paths_are_read_from_the_maps() {
        let maps = b"559c0000-559c1000 r-xp 00001000 fd:01 42 /opt/app bin (deleted)\n\
                     7f000000-7f001000 r-xp 00000000 fd:01 7 /usr/lib/libc.so.6\n\
                     7f100000-7f101000 rw-p 00000000 00:00 0 \n\
                     7f200000-7f201000 r-xp 00000000 fd:01 9 /usr/lib/libold.so (deleted)\n";
        let got = deleted_paths(maps);
        let want: HashSet<PathBuf> = ["/opt/app bin", "/usr/lib/libold.so"]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_program_is_reached_through_exe_once_deleted() {
        let files = ProcessFiles {
            pid: 1,
            program: Some((PathBuf::from("/opt/app"), (3, 4))),
            deleted: [PathBuf::from("/opt/app"), PathBuf::from("/lib/libx.so")]
                .into_iter()
                .collect(),
        };
        assert_eq!(
            files.reach(Path::new("/opt/app")),
            Reach::Open {
                path: PathBuf::from("/proc/1/exe"),
                id: (3, 4)
            }
        );
        assert_eq!(files.reach(Path::new("/lib/libx.so")), Reach::Deleted);
    }

    #[test]
    fn this_process_reaches_its_program_through_its_root() {
        let pid = std::process::id();
        let files = ProcessFiles::read(pid);
        let (path, id) = files.program.clone().expect("this process's program");
        assert!(files.is_program(&path));
        assert_eq!(
            files.reach(&path),
            Reach::Open {
                path: in_root(pid, &path),
                id
            }
        );
    }
}
