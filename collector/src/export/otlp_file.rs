//! OTLP JSON lines exporter: one export request per line in `DIR/traces.jsonl`,
//! `DIR/metrics.jsonl`, `DIR/logs.jsonl` and `DIR/profiles.jsonl`, in the OTLP JSON encoding,
//! rotated by size ([`super::rotate`]). The default sink when no endpoint is configured.

use std::path::PathBuf;

use super::rotate::{FileStats, RotatingFile, Rotation};
use super::{Batch, EncodedBatch, ExportError, ExportFuture, ExportOutcome, Exporter, Signal};

/// Appends batches as OTLP JSON lines (hex trace and span ids, 64-bit integers as strings,
/// camelCase field names: what `opentelemetry-proto`'s serde support produces, and what the
/// OpenTelemetry Collector's `otlpjsonfile` receiver reads; profiles go through
/// [`super::profiles_json`], which fixes the fields serde gets wrong for them).
///
/// The directory and files are created on first use and appended to, never truncated. Each
/// batch is written with one `write` of the whole line and handed to the operating system
/// before the call returns (no fsync). Files are rotated by size ([`Rotation`]): a line never
/// straddles two files. Writes are synchronous: they briefly block the export worker, which
/// is the only caller. Write failures are permanent errors (retrying could duplicate a partly
/// written line); after one, the next line starts on a fresh line so readers lose only the
/// broken one.
#[derive(Debug)]
pub struct OtlpFileExporter {
    /// The file of each signal, per [`Signal::index`].
    files: [RotatingFile; Signal::ALL.len()],
}

impl OtlpFileExporter {
    /// An exporter writing into `dir`, rotating as `rotation` says and counting rotations in
    /// `stats`. Nothing is touched until the first batch.
    pub fn new(dir: impl Into<PathBuf>, rotation: Rotation, stats: FileStats) -> OtlpFileExporter {
        let dir: PathBuf = dir.into();
        let file = |s| RotatingFile::new(&dir, s, rotation, stats.clone());
        OtlpFileExporter {
            files: Signal::ALL.map(file),
        }
    }

    /// The (active) file `signal` is written to.
    pub fn path(&self, signal: Signal) -> PathBuf {
        self.files[signal.index()].path()
    }

    fn write(&mut self, encoded: &EncodedBatch) -> Result<ExportOutcome, ExportError> {
        let signal = encoded.signal();
        // Queued batches are protobuf; JSON needs the message back. Only this exporter pays
        // for the decode, and it holds one decoded batch at a time.
        let batch = encoded.decode().map_err(|e| {
            ExportError::permanent(format!("decoding the queued {signal} batch: {e}"))
        })?;
        let json = match &batch {
            Batch::Traces(r) => serde_json::to_vec(r),
            Batch::Metrics(r) => serde_json::to_vec(r),
            Batch::Logs(r) => serde_json::to_vec(r),
            Batch::Profiles(r) => super::profiles_json::to_json(r),
        };
        let json = json
            .map_err(|e| ExportError::permanent(format!("encoding {signal} as OTLP JSON: {e}")))?;
        self.files[signal.index()]
            .write_line(&json)
            .map_err(|e| ExportError::permanent(e.to_string()))?;
        Ok(ExportOutcome::default())
    }
}

impl Exporter for OtlpFileExporter {
    fn export<'a>(&'a mut self, batch: &'a EncodedBatch) -> ExportFuture<'a> {
        let result = self.write(batch);
        Box::pin(std::future::ready(result))
    }

    fn name(&self) -> &'static str {
        "otlp_file"
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    use std::fs;
    use std::path::Path;

    use super::super::testdata::{logs, metrics, profiles, traces};
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "kotel-export-{name}-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn batches_round_trip_through_json_lines() {
        let tmp = TempDir::new("roundtrip");
        let dir = tmp.0.join("nested/out");
        let mut e = OtlpFileExporter::new(&dir, Rotation::OFF, FileStats::default());
        assert!(!dir.exists(), "nothing is created before the first batch");

        let sent = [traces(1, 2), traces(2, 3)];
        for b in &sent {
            assert_eq!(e.export(&b.encode()).await, Ok(ExportOutcome::default()));
        }
        e.export(&metrics(1, 2).encode()).await.unwrap();
        e.export(&metrics(2, 1).encode()).await.unwrap();
        e.export(&logs(1, 2).encode()).await.unwrap();
        e.export(&logs(2, 2).encode()).await.unwrap();

        let got: Vec<Batch> = lines(&dir.join("traces.jsonl"))
            .iter()
            .map(|l| Batch::Traces(serde_json::from_str::<ExportTraceServiceRequest>(l).unwrap()))
            .collect();
        assert_eq!(got, sent);
        let got: Vec<Batch> = lines(&dir.join("metrics.jsonl"))
            .iter()
            .map(|l| {
                Batch::Metrics(serde_json::from_str::<ExportMetricsServiceRequest>(l).unwrap())
            })
            .collect();
        assert_eq!(got, [metrics(1, 2), metrics(2, 1)]);
        let got: Vec<Batch> = lines(&dir.join("logs.jsonl"))
            .iter()
            .map(|l| Batch::Logs(serde_json::from_str::<ExportLogsServiceRequest>(l).unwrap()))
            .collect();
        assert_eq!(got, [logs(1, 2), logs(2, 2)]);
    }

    #[tokio::test]
    async fn lines_use_the_otlp_json_encoding() {
        let tmp = TempDir::new("encoding");
        let mut e = OtlpFileExporter::new(&tmp.0, Rotation::OFF, FileStats::default());
        e.export(&traces(1, 1).encode()).await.unwrap();
        let line = &lines(&e.path(Signal::Traces))[0];
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let span = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "00000000000000010000000000000000");
        assert_eq!(span["spanId"], "00000000000003e9");
        assert_eq!(span["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(span["name"], "writev");
    }

    #[tokio::test]
    async fn profiles_go_to_their_own_file_with_hex_ids_and_decode_back() {
        let tmp = TempDir::new("profiles");
        let mut e = OtlpFileExporter::new(&tmp.0, Rotation::OFF, FileStats::default());
        let sent = [profiles(1, 2), profiles(2, 1)];
        for b in &sent {
            assert_eq!(e.export(&b.encode()).await, Ok(ExportOutcome::default()));
        }
        e.export(&traces(1, 1).encode()).await.unwrap();
        let path = e.path(Signal::Profiles);
        assert_eq!(path, tmp.0.join("profiles.jsonl"));
        let lines = lines(&path);
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(
            v["dictionary"]["linkTable"][1]["spanId"], "00000000000003e9",
            "the span id of traces(1, _)'s first span, in hex"
        );
        let got: Vec<Batch> = lines
            .iter()
            .map(|l| Batch::Profiles(crate::export::profiles_json::from_json(l).unwrap()))
            .collect();
        assert_eq!(got, sent);
        assert_eq!(
            super::super::rotate::backups(&tmp.0, Signal::Profiles).len(),
            0
        );
    }

    #[tokio::test]
    async fn appends_to_existing_files() {
        let tmp = TempDir::new("append");
        OtlpFileExporter::new(&tmp.0, Rotation::OFF, FileStats::default())
            .export(&logs(1, 1).encode())
            .await
            .unwrap();
        OtlpFileExporter::new(&tmp.0, Rotation::OFF, FileStats::default())
            .export(&logs(2, 1).encode())
            .await
            .unwrap();
        assert_eq!(lines(&tmp.0.join("logs.jsonl")).len(), 2);
    }

    #[tokio::test]
    async fn unwritable_directory_is_a_permanent_error() {
        let tmp = TempDir::new("unwritable");
        fs::write(&tmp.0, b"a file, not a directory").unwrap();
        let mut e = OtlpFileExporter::new(tmp.0.join("sub"), Rotation::OFF, FileStats::default());
        let err = e.export(&traces(1, 1).encode()).await.unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("sub"), "{err}");
        let _ = fs::remove_file(&tmp.0);
    }

    /// Rotating through a small size, the files kept hold whole OTLP JSON requests: the
    /// newest ones, in order, and the rotations are counted.
    #[tokio::test]
    async fn rotated_files_hold_whole_requests() {
        let tmp = TempDir::new("rotate");
        let stats = FileStats::default();
        let rotation = Rotation {
            max_bytes: 4096,
            max_backups: 2,
        };
        let mut e = OtlpFileExporter::new(&tmp.0, rotation, stats.clone());
        let sent: Vec<Batch> = (1..=40).map(|tag| traces(tag, 3)).collect();
        for b in &sent {
            e.export(&b.encode()).await.unwrap();
        }
        // Oldest first: the backups by time and same-millisecond suffix (`-1` sorts before
        // `.jsonl` by name, but is newer), then the active file.
        let mut backups = crate::export::rotate::backups(&tmp.0, Signal::Traces);
        backups.sort();
        let mut names: Vec<String> = backups.into_iter().map(|(_, name)| name).collect();
        names.push("traces.jsonl".to_string());
        let on_disk = fs::read_dir(&tmp.0).unwrap().count();
        assert_eq!(on_disk, 3, "two backups and the active file: {names:?}");
        assert!(stats.rotated(Signal::Traces) >= 3);
        assert_eq!(
            stats.removed(Signal::Traces),
            stats.rotated(Signal::Traces) - 2
        );
        let got: Vec<Batch> = names
            .iter()
            .flat_map(|n| lines(&tmp.0.join(n)))
            .map(|l| Batch::Traces(serde_json::from_str::<ExportTraceServiceRequest>(&l).unwrap()))
            .collect();
        assert!(!got.is_empty());
        assert_eq!(got, sent[sent.len() - got.len()..]);
    }
}
