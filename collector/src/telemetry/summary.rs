//! `summary.json`: the final accounting of a `kotel run`, written after the export queue has
//! shut down, so that for each signal `produced == exported + rejected + dropped` holds exactly
//! and every drop is named by its reason. Rendered from [`super::catalog`]: a metric with a
//! signal label goes in its signal's section (`spans`, `metric_points`, `log_records`,
//! `profiles`), the others at the top; each key holds the sum over the other labels, and points
//! with a part of their own (a drop reason) get a key of their own beside it.

use std::path::Path;

use serde_json::{Map, Value};

use super::catalog::{Readings, CATALOG, LABEL_SIGNAL};

/// The section of `summary.json` a signal's counts go in.
fn section(signal: &str) -> &'static str {
    match signal {
        "traces" => "spans",
        "metrics" => "metric_points",
        "profiles" => "profiles",
        _ => "log_records",
    }
}

fn bump(map: &mut Map<String, Value>, key: &str, by: u64) {
    let now = map.get(key).and_then(Value::as_u64).unwrap_or(0);
    map.insert(key.to_string(), Value::from(now.saturating_add(by)));
}

/// The summary as JSON.
pub fn summary_json(r: &Readings) -> Value {
    let mut top = Map::new();
    for def in CATALOG {
        let signal_at = def.labels.iter().position(|k| *k == LABEL_SIGNAL);
        for p in (def.read)(r) {
            let map = match signal_at {
                Some(i) => top
                    .entry(section(&p.labels[i]))
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("sections are objects"),
                None => &mut top,
            };
            bump(map, def.summary, p.value);
            if let Some(part) = p.part {
                bump(map, part, p.value);
            }
        }
    }
    Value::Object(top)
}

/// Writes the summary as pretty JSON to `<dir>/summary.json`.
pub fn write(r: &Readings, dir: &Path) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&summary_json(r)).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("summary.json"), text + "\n")
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::runtime::Handle;

    use kotel_bpf::DropCounts;

    use super::*;
    use crate::export::testdata::{profiles, traces};
    use crate::export::{
        Batch, EncodedBatch, ExportError, ExportFuture, ExportOutcome, ExportQueue, Exporter,
        RetryConfig, Signal,
    };
    use crate::telemetry::{add, SelfStats};

    type Reply = Result<ExportOutcome, ExportError>;

    /// Answers each call from a script keyed by the tag the batch was built with ([`traces`]);
    /// a batch without a script hangs until the shutdown deadline.
    struct ByTag {
        replies: Arc<Mutex<VecDeque<(u64, Reply)>>>,
    }

    fn tag_of(batch: &EncodedBatch) -> u64 {
        match batch.decode().unwrap() {
            Batch::Traces(r) => {
                let id = &r.resource_spans[0].scope_spans[0].spans[0].span_id;
                u64::from_be_bytes(id[..8].try_into().unwrap()) / 1000
            }
            _ => u64::MAX,
        }
    }

    impl Exporter for ByTag {
        fn export<'a>(&'a mut self, batch: &'a EncodedBatch) -> ExportFuture<'a> {
            let tag = tag_of(batch);
            let replies = self.replies.clone();
            Box::pin(async move {
                let reply = {
                    let mut r = replies.lock().unwrap();
                    r.iter()
                        .position(|(t, _)| *t == tag)
                        .and_then(|i| r.remove(i))
                };
                match reply {
                    Some((_, reply)) => reply,
                    None => std::future::pending().await,
                }
            })
        }

        fn name(&self) -> &'static str {
            "by_tag"
        }
    }

    /// Every way a span can end — delivered, rejected, queue full, permanent error, retries
    /// exhausted, shutdown — shows up in the summary under its own name, and the reasons add
    /// up to `dropped`, and the outcomes to `produced`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn summary_names_every_outcome_and_balances() {
        let retryable = || Err(ExportError::retryable("unavailable"));
        let replies: VecDeque<(u64, Reply)> = vec![
            (1, Ok(ExportOutcome::default())),
            (
                2,
                Ok(ExportOutcome {
                    rejected_items: 1,
                    message: None,
                }),
            ),
            (3, Err(ExportError::permanent("invalid argument"))),
        ]
        .into_iter()
        .chain((0..1000).map(|_| (4, retryable())))
        .collect();
        let retry = RetryConfig {
            initial_interval: Duration::from_millis(1),
            multiplier: 2,
            max_interval: Duration::from_millis(2),
            max_elapsed_time: Duration::from_millis(30),
        };
        let one = traces(1, 3).encode().queued_size();
        let queue = ExportQueue::spawn(
            ByTag {
                replies: Arc::new(Mutex::new(replies)),
            },
            one * 5,
            retry,
            &Handle::current(),
        );
        for tag in 1..=4 {
            queue.submit(traces(tag, 3)).unwrap();
        }
        // Tag 5 hangs the worker once it gets there (shutdown drops it); wait until tags 1–4
        // are done so the room they held is free again.
        let stats = queue.stats();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stats.signal(Signal::Traces).queued_items > 0 {
            assert!(std::time::Instant::now() < deadline, "worker stuck");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        queue.submit(traces(5, 3)).unwrap();
        let huge = traces(6, 40);
        assert!(queue.submit(huge).is_err(), "larger than the whole queue");
        queue.shutdown(Duration::from_millis(50)).await;

        let pipeline = SelfStats::default();
        add(&pipeline.spans_produced, 15);
        add(&pipeline.events_received, 15);
        let readings = Readings {
            pipeline: &pipeline,
            drops: DropCounts::default(),
            export: &stats,
            receiver: None,
            pods: None,
            export_tls_failures: 0,
            link_unresolved: [2, 0, 1, 0],
        };
        let dir = std::env::temp_dir().join(format!("kotel-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write(&readings, &dir).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                .unwrap();
        let t = |k: &str| {
            v["spans"][k]
                .as_u64()
                .unwrap_or_else(|| panic!("spans.{k}"))
        };
        assert_eq!(t("produced"), 55);
        assert_eq!((t("exported"), t("rejected")), (3 + 2, 1));
        assert_eq!(t("dropped_queue_full"), 40);
        assert_eq!(t("dropped_permanent"), 3);
        assert_eq!(t("dropped_retries_exhausted"), 3);
        assert_eq!(t("dropped_shutdown"), 3);
        assert_eq!(
            t("dropped"),
            t("dropped_queue_full")
                + t("dropped_permanent")
                + t("dropped_retries_exhausted")
                + t("dropped_shutdown")
        );
        assert_eq!(t("produced"), t("exported") + t("rejected") + t("dropped"));
        assert_eq!(v["kernel_spans"], 15);
        assert_eq!(v["events_received"], 15);
        assert_eq!(v["metric_points"]["produced"], 0);
        // Unlinked application spans: the total, and each reason under its own key.
        assert_eq!(v["link_unresolved"], 3);
        assert_eq!(v["link_unresolved_gone"], 2);
        assert_eq!(v["link_unresolved_container_mismatch"], 1);
        assert_eq!(
            (
                v["link_unresolved_ambiguous"].as_u64(),
                v["link_unresolved_invalid"].as_u64()
            ),
            (Some(0), Some(0))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Says every batch's signal is not taken, as a receiver without the profiles service does.
    struct NoProfiles;

    impl Exporter for NoProfiles {
        fn export<'a>(&'a mut self, _batch: &'a EncodedBatch) -> ExportFuture<'a> {
            Box::pin(std::future::ready(Err(ExportError::Unsupported {
                reason: "gRPC status Unimplemented".into(),
            })))
        }

        fn name(&self) -> &'static str {
            "no_profiles"
        }
    }

    /// Profiles get a section of their own, and profiles a receiver does not take are dropped
    /// under their own reason, in `summary.json` and on the self-metric's reason label alike.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn profiles_have_a_section_and_unsupported_is_a_reason_of_its_own() {
        let queue = ExportQueue::spawn(
            NoProfiles,
            1 << 20,
            RetryConfig::default(),
            &Handle::current(),
        );
        queue.submit(profiles(1, 2)).unwrap();
        let stats = queue.stats();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stats.signal(Signal::Profiles).queued_items > 0 {
            assert!(std::time::Instant::now() < deadline, "worker stuck");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = queue.submit(profiles(2, 3)); // refused at once, counted
        queue.shutdown(Duration::from_secs(1)).await;
        let pipeline = SelfStats::default();
        let readings = Readings {
            pipeline: &pipeline,
            drops: DropCounts::default(),
            export: &stats,
            receiver: None,
            pods: None,
            export_tls_failures: 0,
            link_unresolved: Default::default(),
        };
        let v = summary_json(&readings);
        let p = &v["profiles"];
        assert_eq!(p["produced"], 5, "{v:#}");
        assert_eq!(p["dropped"], 5);
        assert_eq!(p["dropped_unsupported"], 5);
        assert_eq!(p["dropped_permanent"], 0);
        assert_eq!(p["exported"], 0);
        assert_eq!(v["spans"]["dropped_unsupported"], 0);
        let dropped = crate::telemetry::catalog::CATALOG
            .iter()
            .find(|d| d.name == "kotel.export.dropped")
            .unwrap();
        let point = (dropped.read)(&readings)
            .into_iter()
            .find(|p| p.labels == ["profiles", "unsupported"])
            .expect("a profiles/unsupported point");
        assert_eq!(point.value, 5);
    }
}
