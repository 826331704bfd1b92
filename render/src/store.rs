//! The content-addressed artifact store: one directory of `<id>.svg` / `<id>.png` files, where
//! `id` is the SHA-256 of the SVG in lowercase hex. A total size cap evicts the oldest files; a
//! TTL removes expired ones on access and on every sweep. Names are validated, so no request
//! can reach a path outside the directory.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The name is not `<64 lowercase hex>.svg|png`.
    #[error("bad artifact name {0:?}: expected 64 lowercase hex digits and .svg or .png")]
    BadName(String),
    /// A file operation failed.
    #[error("artifact store {path}: {op} failed: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// An artifact's file type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ext {
    /// `image/svg+xml`
    Svg,
    /// `image/png`
    Png,
}

impl Ext {
    /// The file extension without the dot.
    pub fn as_str(self) -> &'static str {
        match self {
            Ext::Svg => "svg",
            Ext::Png => "png",
        }
    }

    /// The HTTP media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Ext::Svg => "image/svg+xml",
            Ext::Png => "image/png",
        }
    }
}

/// Whether `id` is exactly 64 lowercase hex digits.
pub fn valid_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Splits `<id>.svg|png` into id and type, refusing anything else (slashes, `..`, NUL,
/// percent-encoding, upper case, other extensions).
pub fn parse_name(name: &str) -> Result<(&str, Ext), StoreError> {
    let bad = || StoreError::BadName(name.chars().take(100).collect());
    let (id, ext) = name.split_once('.').ok_or_else(bad)?;
    let ext = match ext {
        "svg" => Ext::Svg,
        "png" => Ext::Png,
        _ => return Err(bad()),
    };
    if !valid_id(id) {
        return Err(bad());
    }
    Ok((id, ext))
}

/// One stored file, as listed by [`Store::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The artifact id, 64 lowercase hex digits (the renderer's is the SHA-256 of the SVG).
    pub id: String,
    /// Whether the file is the SVG or its PNG.
    pub ext: Ext,
    /// Size in bytes.
    pub size: u64,
    /// Last written or re-stored.
    pub modified: SystemTime,
}

impl Entry {
    /// The file's name in the store directory, `<id>.<ext>`.
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.id, self.ext.as_str())
    }
}

/// Size cap and TTL of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Total bytes kept; the oldest files are evicted above it.
    pub max_bytes: u64,
    /// How long a file lives after it was last stored.
    pub ttl: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_bytes: 256 << 20,
            ttl: Duration::from_secs(3600),
        }
    }
}

/// A content-addressed directory of rendered pictures, `<id>.svg|png`, kept under a size cap
/// and a TTL. Safe to share between threads: writes and sweeps are serialized by a lock;
/// reads go straight to the file system.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    config: StoreConfig,
    lock: Mutex<()>,
    tmp_seq: AtomicU64,
    removed: AtomicU64,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. Fails with [`StoreError::Io`] when the
    /// directory cannot be created.
    pub fn open(dir: impl Into<PathBuf>, config: StoreConfig) -> Result<Store, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            op: "creating the directory",
            path: dir.clone(),
            source,
        })?;
        Ok(Store {
            dir,
            config,
            lock: Mutex::new(()),
            tmp_seq: AtomicU64::new(0),
            removed: AtomicU64::new(0),
        })
    }

    /// The directory the files live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files this store has deleted since it was opened: expired, or evicted by the size cap.
    pub fn removed(&self) -> u64 {
        self.removed.load(Ordering::Relaxed)
    }

    /// The path of `<id>.<ext>`, whether or not it is stored. Fails with
    /// [`StoreError::BadName`] when `id` is not 64 lowercase hex digits.
    pub fn path(&self, id: &str, ext: Ext) -> Result<PathBuf, StoreError> {
        if !valid_id(id) {
            return Err(StoreError::BadName(id.chars().take(100).collect()));
        }
        Ok(self.dir.join(format!("{id}.{}", ext.as_str())))
    }

    /// Stores `bytes` as `<id>.<ext>` (atomically, through a temporary file and a rename),
    /// then sweeps expired files and enforces the size cap. Storing an id that is already
    /// there refreshes its age. Returns the file's path. Fails with [`StoreError::BadName`] for
    /// a bad id and [`StoreError::Io`] when the file cannot be written.
    pub fn put(&self, id: &str, ext: Ext, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let path = self.path(id, ext)?;
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { op, path, source }
        };
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = fs::metadata(&path)
            .map(|m| m.len() == bytes.len() as u64)
            .unwrap_or(false);
        if fresh {
            let f = fs::File::options()
                .write(true)
                .open(&path)
                .map_err(io("opening", &path))?;
            f.set_modified(SystemTime::now())
                .map_err(io("touching", &path))?;
        } else {
            let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
            let tmp = self.dir.join(format!(
                ".tmp-{}-{seq}-{id}.{}",
                std::process::id(),
                ext.as_str()
            ));
            let mut f = fs::File::create(&tmp).map_err(io("creating", &tmp))?;
            f.write_all(bytes).map_err(io("writing", &tmp))?;
            drop(f);
            fs::rename(&tmp, &path).map_err(io("renaming", &tmp))?;
        }
        self.sweep_locked(SystemTime::now());
        Ok(path)
    }

    /// Reads `<id>.<ext>` by file name. `Ok(None)` when it is not there or has expired (an
    /// expired file is removed); `Err(BadName)` for any name that is not a valid artifact name.
    pub fn get(&self, name: &str) -> Result<Option<(Vec<u8>, Ext)>, StoreError> {
        let (id, ext) = parse_name(name)?;
        let path = self.path(id, ext)?;
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    op: "reading metadata",
                    path,
                    source,
                })
            }
        };
        if self.expired(&meta, SystemTime::now()) {
            if fs::remove_file(&path).is_ok() {
                self.removed.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(None);
        }
        match fs::read(&path) {
            Ok(bytes) => Ok(Some((bytes, ext))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                op: "reading",
                path,
                source,
            }),
        }
    }

    /// Whether `<id>.<ext>` is stored and not expired.
    pub fn contains(&self, id: &str, ext: Ext) -> bool {
        let Ok(path) = self.path(id, ext) else {
            return false;
        };
        fs::metadata(path)
            .map(|m| !self.expired(&m, SystemTime::now()))
            .unwrap_or(false)
    }

    /// Live artifacts, newest first (ties by name, so the order is stable).
    pub fn list(&self) -> Vec<Entry> {
        let now = SystemTime::now();
        let mut v: Vec<Entry> = self
            .scan()
            .into_iter()
            .filter(|e| !self.expired_at(e.modified, now))
            .collect();
        v.sort_by(|a, b| b.modified.cmp(&a.modified).then_with(|| a.id.cmp(&b.id)));
        v
    }

    /// Removes expired files, then the oldest files until the total is under the size cap.
    /// Returns how many files were removed.
    pub fn sweep(&self) -> usize {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.sweep_locked(SystemTime::now())
    }

    fn sweep_locked(&self, now: SystemTime) -> usize {
        let mut entries = self.scan();
        entries.sort_by(|a, b| a.modified.cmp(&b.modified).then_with(|| a.id.cmp(&b.id)));
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        let mut removed = 0;
        for e in &entries {
            if self.expired_at(e.modified, now) || total > self.config.max_bytes {
                if fs::remove_file(self.dir.join(e.file_name())).is_ok() {
                    removed += 1;
                    self.removed.fetch_add(1, Ordering::Relaxed);
                }
                total = total.saturating_sub(e.size);
            }
        }
        removed
    }

    fn scan(&self) -> Vec<Entry> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.filter_map(Result::ok)
            .filter_map(|de| {
                let name = de.file_name().into_string().ok()?;
                let (id, ext) = parse_name(&name).ok()?;
                let meta = de.metadata().ok()?;
                meta.is_file().then(|| Entry {
                    id: id.to_string(),
                    ext,
                    size: meta.len(),
                    modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                })
            })
            .collect()
    }

    fn expired(&self, meta: &fs::Metadata, now: SystemTime) -> bool {
        self.expired_at(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), now)
    }

    fn expired_at(&self, modified: SystemTime, now: SystemTime) -> bool {
        now.duration_since(modified)
            .map(|age| age > self.config.ttl)
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn store(cfg: StoreConfig) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().join("store"), cfg).unwrap();
        (dir, s)
    }

    #[test]
    fn names_that_could_escape_are_refused() {
        let (_d, s) = store(StoreConfig::default());
        let good = id('a');
        for name in [
            "../secret.svg".to_string(),
            format!("../{}.svg", &good[3..]),
            format!("/{}.svg", &good[1..]),
            "/etc/passwd".to_string(),
            format!("{}%2F.svg", &good[3..]),
            format!("..%2F{}.svg", &good[5..]),
            format!("{}\0.svg", &good[1..]),
            format!("{good}.svg\0"),
            format!("{}.svg", good.to_uppercase()),
            format!("{good}.svg/"),
            format!("{good}.html"),
            format!("{good}.svg.png"),
            format!("{}.svg", &good[1..]),
            String::new(),
            ".svg".into(),
        ] {
            assert!(
                matches!(s.get(&name), Err(StoreError::BadName(_))),
                "{name:?} was accepted"
            );
        }
        assert!(s.put("../../x", Ext::Svg, b"x").is_err());
        assert!(s.put(&format!("{}/", &good[1..]), Ext::Svg, b"x").is_err());
        assert!(matches!(s.get(&format!("{good}.svg")), Ok(None)));
    }

    #[test]
    fn put_get_list_and_ttl() {
        let (_d, s) = store(StoreConfig {
            max_bytes: 1 << 20,
            ttl: Duration::from_secs(60),
        });
        let a = id('a');
        s.put(&a, Ext::Svg, b"<svg/>").unwrap();
        s.put(&a, Ext::Png, b"png").unwrap();
        assert_eq!(s.get(&format!("{a}.svg")).unwrap().unwrap().0, b"<svg/>");
        assert!(s.contains(&a, Ext::Png));
        assert_eq!(s.list().len(), 2);
        // Age the SVG past the TTL: gone on access.
        let path = s.path(&a, Ext::Svg).unwrap();
        let old = SystemTime::now() - Duration::from_secs(120);
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(!s.contains(&a, Ext::Svg));
        assert!(s.get(&format!("{a}.svg")).unwrap().is_none());
        assert!(!path.exists());
        // And on sweep.
        let png = s.path(&a, Ext::Png).unwrap();
        fs::File::options()
            .write(true)
            .open(&png)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(s.sweep(), 1);
        assert!(s.list().is_empty());
        assert_eq!(s.removed(), 2, "one expired on read, one on sweep");
    }

    #[test]
    fn size_cap_evicts_oldest() {
        let (_d, s) = store(StoreConfig {
            max_bytes: 250,
            ttl: Duration::from_secs(3600),
        });
        let now = SystemTime::now();
        for (k, c) in ['a', 'b', 'c'].into_iter().enumerate() {
            let p = s.put(&id(c), Ext::Png, &[0u8; 100]).unwrap();
            fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(now - Duration::from_secs(10 - k as u64))
                .unwrap();
        }
        s.sweep();
        let left: Vec<String> = s.list().into_iter().map(|e| e.id).collect();
        assert_eq!(left, vec![id('c'), id('b')]);
        assert_eq!(s.removed(), 1);
        // Files that are not artifacts are never touched.
        fs::write(s.dir().join("README"), vec![0u8; 1000]).unwrap();
        s.sweep();
        assert!(s.dir().join("README").exists());
        assert_eq!(s.list().len(), 2);
    }
}
