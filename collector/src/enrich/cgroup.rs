//! Resolves a `--cgroup` directory into the id and depth the kernel filter compares against,
//! refusing anything that is not a cgroup v2 directory.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kotel_bpf::CgroupFilter;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The filter for `path`: its inode number is the cgroup id, and its depth below the cgroup2
/// mount it lives on is its level.
pub fn resolve(path: &Path) -> Result<CgroupFilter, String> {
    let canonical = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = std::fs::metadata(&canonical).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() || !is_cgroup2(&canonical) {
        return Err(format!("{} is not a cgroup v2 directory", path.display()));
    }
    let mount = cgroup2_mounts()
        .into_iter()
        .filter(|m| canonical.starts_with(m))
        .max_by_key(|m| m.components().count())
        .ok_or_else(|| format!("{} is not below a cgroup v2 mount", path.display()))?;
    let level = canonical.components().count() - mount.components().count();
    Ok(CgroupFilter {
        id: meta.ino(),
        level: level as u32,
    })
}

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a struct we own; the path is a valid C string.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC
    }
}

/// Mount points of every cgroup2 filesystem, from /proc/self/mounts.
fn cgroup2_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_directories_are_refused() {
        let err = resolve(Path::new("/tmp")).unwrap_err();
        assert!(err.contains("not a cgroup v2 directory"), "{err}");
        assert!(resolve(Path::new("/nonexistent/x")).is_err());
    }

    #[test]
    fn a_cgroup2_root_has_level_zero() {
        let Some(root) = cgroup2_mounts().into_iter().next() else {
            eprintln!("no cgroup2 mount here; nothing to check");
            return;
        };
        let f = resolve(&root).unwrap();
        assert_eq!(f.level, 0);
    }
}
