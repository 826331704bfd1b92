//! The pictures in-process rendering keeps in the output folder: an SVG and a PNG per picture
//! under a stable name (`heatmap-<pid>-<kind>`, `<kind>-flame`), redrawn in place, at most
//! `render.max_pictures` of them: past it the picture drawn least recently is deleted (those an
//! earlier run left in the folder go first), and [`PictureFiles::drawn`] lists exactly the
//! pictures this run drew that are still there, for the report page (`index.html`, written by
//! [`crate::report`]). Every file deleted is counted.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One picture on disk.
#[derive(Debug)]
struct Kept {
    /// Its caption; `None` for a picture an earlier run left (not listed).
    title: Option<String>,
    /// When it was last drawn, in draws: a smaller number is older.
    drawn: u64,
}

/// The pictures in one folder and the cap on their number. Single-threaded.
#[derive(Debug)]
pub struct PictureFiles {
    dir: PathBuf,
    max: usize,
    kept: BTreeMap<String, Kept>,
    draws: u64,
    removed: u64,
}

/// The extensions a picture is written in.
const EXTENSIONS: [&str; 2] = ["svg", "png"];

impl PictureFiles {
    /// The pictures in `dir`, at most `max` (at least 1). Pictures an earlier run left there
    /// count, oldest (by modification time) first, and are deleted now if they are too many.
    pub fn open(dir: &Path, max: usize) -> PictureFiles {
        let mut p = PictureFiles {
            dir: dir.to_path_buf(),
            max: max.max(1),
            kept: BTreeMap::new(),
            draws: 0,
            removed: 0,
        };
        let mut left = leftovers(dir);
        left.sort();
        for (_, stem) in left {
            p.draws += 1;
            p.kept.insert(
                stem,
                Kept {
                    title: None,
                    drawn: p.draws,
                },
            );
        }
        p.evict();
        p
    }

    /// Writes a picture's files (`(extension, bytes)`, e.g. `("png", …)`) as `<stem>.<ext>`,
    /// records it as drawn now with `title` and deletes the least recently drawn pictures past
    /// the cap. Returns the path of `<stem>.<shown>`. A picture file that cannot be written is
    /// an error (the picture is not recorded).
    pub fn put(
        &mut self,
        stem: &str,
        title: &str,
        files: &[(&str, &[u8])],
        shown: &str,
    ) -> io::Result<PathBuf> {
        for (ext, bytes) in files {
            fs::write(self.dir.join(format!("{stem}.{ext}")), bytes)?;
        }
        self.draws += 1;
        let path = self.dir.join(format!("{stem}.{shown}"));
        self.kept.insert(
            stem.to_string(),
            Kept {
                title: Some(title.to_string()),
                drawn: self.draws,
            },
        );
        self.evict();
        Ok(path)
    }

    /// The pictures this run drew that are still kept, in name order: (stem, title, the
    /// files of it that exist, relative to the folder, SVG first).
    pub fn drawn(&self) -> Vec<(&str, &str, Vec<String>)> {
        self.kept
            .iter()
            .filter_map(|(stem, k)| {
                let title = k.title.as_deref()?;
                let files: Vec<String> = EXTENSIONS
                    .iter()
                    .map(|ext| format!("{stem}.{ext}"))
                    .filter(|f| self.dir.join(f).is_file())
                    .collect();
                Some((stem.as_str(), title, files))
            })
            .collect()
    }

    /// Picture files deleted so far (an SVG and a PNG count two).
    pub fn removed(&self) -> u64 {
        self.removed
    }

    /// Deletes the least recently drawn pictures until at most `max` are left.
    fn evict(&mut self) {
        while self.kept.len() > self.max {
            let Some(stem) = self
                .kept
                .iter()
                .min_by_key(|(_, k)| k.drawn)
                .map(|(s, _)| s.clone())
            else {
                return;
            };
            self.kept.remove(&stem);
            for ext in EXTENSIONS {
                let path = self.dir.join(format!("{stem}.{ext}"));
                match fs::remove_file(&path) {
                    Ok(()) => self.removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(
                        path = %path.display(),
                        error = %e,
                        "kotel.artifact.not_removed"
                    ),
                }
            }
        }
    }
}

/// Whether `stem` is a picture's name: `<kind>-flame` or `heatmap-<pid>-<kind>`.
fn is_picture_stem(stem: &str) -> bool {
    let kind_name =
        |k: &str| !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if stem.strip_suffix("-flame").is_some_and(kind_name) {
        return true;
    }
    let Some((pid, kind)) = stem
        .strip_prefix("heatmap-")
        .and_then(|r| r.split_once('-'))
    else {
        return false;
    };
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && !kind.is_empty()
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// The pictures already in `dir`, each with the newest modification time of its files.
fn leftovers(dir: &Path) -> Vec<(SystemTime, String)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut by_stem: BTreeMap<String, SystemTime> = BTreeMap::new();
    for e in entries.filter_map(Result::ok) {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let Some((stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        if !EXTENSIONS.contains(&ext) || !is_picture_stem(stem) {
            continue;
        }
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let t = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let newest = by_stem.entry(stem.to_string()).or_insert(t);
        *newest = (*newest).max(t);
    }
    by_stem.into_iter().map(|(s, t)| (t, s)).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let d = std::env::temp_dir().join(format!(
                "kotel-pictures-{name}-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn put(p: &mut PictureFiles, stem: &str) {
        let path = p
            .put(
                stem,
                &format!("title of {stem}"),
                &[("svg", b"<svg/>"), ("png", b"png")],
                "png",
            )
            .unwrap();
        assert_eq!(path, p.dir.join(format!("{stem}.png")));
    }

    /// Listed pictures: the last file (the PNG when there is one) of each picture this run
    /// drew.
    fn listed(p: &PictureFiles) -> Vec<String> {
        p.drawn()
            .into_iter()
            .map(|(_, _, f)| f.last().cloned().unwrap_or_default())
            .collect()
    }

    #[test]
    fn keeps_the_most_recently_drawn_and_lists_only_those() {
        let tmp = TempDir::new("cap");
        let mut p = PictureFiles::open(&tmp.0, 3);
        for stem in ["heatmap-1-offcpu", "heatmap-2-offcpu", "offcpu-flame"] {
            put(&mut p, stem);
        }
        // Redrawing the first makes the second the least recently drawn.
        put(&mut p, "heatmap-1-offcpu");
        put(&mut p, "heatmap-3-runqueue");
        assert_eq!(
            names(&tmp.0),
            [
                "heatmap-1-offcpu.png",
                "heatmap-1-offcpu.svg",
                "heatmap-3-runqueue.png",
                "heatmap-3-runqueue.svg",
                "offcpu-flame.png",
                "offcpu-flame.svg",
            ]
        );
        assert_eq!(
            listed(&p),
            [
                "heatmap-1-offcpu.png",
                "heatmap-3-runqueue.png",
                "offcpu-flame.png"
            ]
        );
        assert_eq!(p.removed(), 2);
        put(&mut p, "heatmap-4-runqueue");
        assert_eq!(p.removed(), 4);
        assert_eq!(listed(&p).len(), 3);
    }

    #[test]
    fn an_earlier_runs_pictures_count_and_go_first() {
        let tmp = TempDir::new("earlier");
        let old = SystemTime::now() - Duration::from_secs(3600);
        for (stem, age) in [("heatmap-10-offcpu", 2), ("heatmap-11-offcpu", 1)] {
            for ext in EXTENSIONS {
                let path = tmp.0.join(format!("{stem}.{ext}"));
                fs::write(&path, b"old").unwrap();
                fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_modified(old - Duration::from_secs(age))
                    .unwrap();
            }
        }
        let strangers = ["heatmap-x-offcpu.png", "notes.png", "heatmap-12-OFFCPU.svg"];
        for s in strangers {
            fs::write(tmp.0.join(s), b"keep").unwrap();
        }
        let mut p = PictureFiles::open(&tmp.0, 2);
        assert_eq!(p.removed(), 0, "two pictures fit");
        put(&mut p, "offcpu-flame");
        // The oldest leftover went; the other stays, unlisted (this run did not draw it).
        assert!(!tmp.0.join("heatmap-10-offcpu.svg").exists());
        assert!(tmp.0.join("heatmap-11-offcpu.png").exists());
        assert_eq!(p.removed(), 2);
        assert_eq!(listed(&p), ["offcpu-flame.png"]);
        for s in strangers {
            assert_eq!(fs::read(tmp.0.join(s)).unwrap(), b"keep", "{s}");
        }
        // Too many leftovers for the cap are deleted at once.
        let p = PictureFiles::open(&tmp.0, 1);
        assert_eq!(p.removed(), 2);
        assert!(!tmp.0.join("heatmap-11-offcpu.png").exists());
        assert!(tmp.0.join("offcpu-flame.png").exists());
    }

    #[test]
    fn a_picture_drawn_as_svg_only_lists_its_svg() {
        let tmp = TempDir::new("svg-only");
        let mut p = PictureFiles::open(&tmp.0, 5);
        p.put(
            "heatmap-1-offcpu",
            "</figcaption><script>x</script>",
            &[("svg", b"<svg/>")],
            "svg",
        )
        .unwrap();
        assert_eq!(listed(&p), ["heatmap-1-offcpu.svg"]);
        // The title is kept as given: the report page shows it as text.
        assert_eq!(p.drawn()[0].1, "</figcaption><script>x</script>");
    }

    #[test]
    fn picture_names() {
        for ok in ["offcpu-flame", "heatmap-1-offcpu", "heatmap-42-tcp_send"] {
            assert!(is_picture_stem(ok), "{ok}");
        }
        for no in [
            "heatmap--offcpu",
            "heatmap-1-",
            "heatmap-1",
            "heatmap-a-offcpu",
            "heatmap-1-Offcpu",
            "index",
            "offcpu-flame-1",
        ] {
            assert!(!is_picture_stem(no), "{no}");
        }
    }
}
