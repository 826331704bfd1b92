//! OTLP profiles (`opentelemetry.proto.profiles.v1development`, proto 1.10.0) from the slow
//! events that carry stacks: per metrics interval, one profile per process and probe.
//!
//! What goes in: the same events as the flame graphs, those long enough to be spans (children
//! of application spans, spans of their own, and those the span budget skipped), each added
//! once when its span's fate is known. A sample is one stack (kernel frames first, then the
//! user frames that made the call) with the thread's id and name (and, off-CPU, how it
//! waited) and, where the event became a span, a link to it: to the child in the
//! application's trace when linked, else to kotel's own span. An event whose span the budget
//! skipped has no span to link to, and its sample none.
//!
//! Values: one per event, its time in nanoseconds, with the event's start as its timestamp
//! (the protocol's "values with timestamps" shape), so a sample's count of values is how many
//! events it stands for and their sum is the time. Sample types: `off_cpu`/`nanoseconds` as
//! the OpenTelemetry eBPF profiler names off-CPU time; `writev`/`nanoseconds`,
//! `tcp_send`/`nanoseconds` (and `runqueue` if its events carry stacks) for the others.

pub mod dictionary;

use std::collections::HashMap;

use kotel_bpf::Probe;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::profiles::v1development::{
    Profile, ResourceProfiles, Sample, ScopeProfiles, ValueType,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::enrich::semconv::{KOTEL_OFFCPU_STATE, THREAD_ID, THREAD_NAME};
use crate::kernel::Stacks;
use crate::model::{Comm, OffcpuState};
use crate::otlp::ids::IdGenerator;
use crate::otlp::pending::PendingSpan;
use dictionary::{AttrValue, Dictionary};

/// Events one interval's profiles hold at most; past it they are counted and left out.
pub const MAX_OBSERVATIONS: usize = 65_536;

/// One slow event with its stacks, as a profile sample takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The process (host pid).
    pub pid: u32,
    /// The thread (host tid).
    pub tid: u32,
    /// The thread's name.
    pub comm: Comm,
    /// The probe.
    pub kind: Probe,
    /// How the thread waited, off-CPU.
    pub offcpu_state: Option<OffcpuState>,
    /// When the event started (Unix ns).
    pub start_unix_nano: u64,
    /// How long it took.
    pub duration_ns: u64,
    /// Its stacks.
    pub stacks: Stacks,
}

impl Observation {
    /// When the event ended (Unix ns).
    pub fn end(&self) -> u64 {
        self.start_unix_nano.saturating_add(self.duration_ns)
    }
}

impl PendingSpan {
    /// The event and stacks of this span, for its profile sample.
    pub fn observation(&self) -> Observation {
        let ev = &self.event;
        Observation {
            pid: ev.pid,
            tid: ev.tid,
            comm: ev.comm,
            kind: ev.kind,
            offcpu_state: ev.offcpu_state,
            start_unix_nano: ev.start_unix_nano,
            duration_ns: ev.duration_ns,
            stacks: self.stacks.clone(),
        }
    }
}

/// The span an event became: its trace and span id.
pub type SpanLink = ([u8; 16], [u8; 8]);

/// What went into profiles, counted since the last call of [`ProfileBuilder::take_counts`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProfileCounts {
    /// Events added as samples.
    pub observed: u64,
    /// Events left out because the interval held [`MAX_OBSERVATIONS`] already.
    pub dropped: u64,
}

/// Collects one interval's events and builds its profiles request.
#[derive(Debug, Default)]
pub struct ProfileBuilder {
    observed: Vec<(Observation, Option<SpanLink>)>,
    counts: ProfileCounts,
}

/// A sample's identity: its stack, attributes and link.
type SampleKey = (i32, Vec<i32>, i32);

impl ProfileBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the event of a span whose fate is known: `link` is the span it became, `None`
    /// when it became none (the budget skipped it). Events without stacks add nothing.
    pub fn add(&mut self, o: Observation, link: Option<SpanLink>) {
        if o.stacks.kernel.is_none() && o.stacks.user.is_none() {
            return;
        }
        if self.observed.len() >= MAX_OBSERVATIONS {
            self.counts.dropped += 1;
            return;
        }
        self.counts.observed += 1;
        self.observed.push((o, link));
    }

    /// Whether nothing waits to be built.
    pub fn is_empty(&self) -> bool {
        self.observed.is_empty()
    }

    /// The counts since the last call.
    pub fn take_counts(&mut self) -> ProfileCounts {
        std::mem::take(&mut self.counts)
    }

    /// The request of everything added since the last build, one resource per process
    /// (`resource_of`, the same as its metrics'), or `None` when nothing was added.
    pub fn build(
        &mut self,
        resource_of: &mut dyn FnMut(u32) -> Resource,
        ids: &mut IdGenerator,
    ) -> Option<ExportProfilesServiceRequest> {
        if self.observed.is_empty() {
            return None;
        }
        let mut observed = std::mem::take(&mut self.observed);
        observed.sort_by_key(|(o, _)| (o.pid, o.kind.kind(), o.start_unix_nano));
        let mut dict = Dictionary::new();
        let mut resource_profiles: Vec<ResourceProfiles> = Vec::new();
        let mut i = 0;
        while i < observed.len() {
            let pid = observed[i].0.pid;
            let mut profiles = Vec::new();
            while i < observed.len() && observed[i].0.pid == pid {
                let kind = observed[i].0.kind;
                let end = observed[i..]
                    .iter()
                    .position(|(o, _)| o.pid != pid || o.kind != kind)
                    .map_or(observed.len(), |n| i + n);
                profiles.push(profile(&observed[i..end], &mut dict, ids));
                i = end;
            }
            resource_profiles.push(ResourceProfiles {
                resource: Some(resource_of(pid)),
                scope_profiles: vec![ScopeProfiles {
                    scope: Some(super::scope()),
                    profiles,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        Some(ExportProfilesServiceRequest {
            resource_profiles,
            dictionary: Some(dict.finish()),
        })
    }
}

/// The sample type of a probe's profile: (type, unit).
pub fn sample_type(kind: Probe) -> (&'static str, &'static str) {
    match kind {
        Probe::Offcpu => ("off_cpu", "nanoseconds"),
        other => (other.name(), "nanoseconds"),
    }
}

/// One process's profile of one probe, from its events (sorted by start).
fn profile(
    events: &[(Observation, Option<SpanLink>)],
    dict: &mut Dictionary,
    ids: &mut IdGenerator,
) -> Profile {
    let kind = events[0].0.kind;
    let (ty, unit) = sample_type(kind);
    let sample_type = ValueType {
        type_strindex: dict.string(ty),
        unit_strindex: dict.string(unit),
    };
    let mut samples: Vec<Sample> = Vec::new();
    let mut by_key: HashMap<SampleKey, usize> = HashMap::new();
    for (o, link) in events {
        let stack_index = dict.stack(
            [o.stacks.kernel.as_deref(), o.stacks.user.as_deref()]
                .into_iter()
                .flatten(),
        );
        let mut attribute_indices = vec![
            dict.attribute(THREAD_ID, AttrValue::Int(i64::from(o.tid))),
            dict.attribute(THREAD_NAME, AttrValue::Str(o.comm.to_string_lossy())),
        ];
        if let Some(state) = o.offcpu_state {
            attribute_indices
                .push(dict.attribute(KOTEL_OFFCPU_STATE, AttrValue::Str(state.name().into())));
        }
        let link_index = link.map_or(0, |(trace, span)| dict.link(trace, span));
        let at = *by_key
            .entry((stack_index, attribute_indices.clone(), link_index))
            .or_insert_with(|| {
                samples.push(Sample {
                    stack_index,
                    attribute_indices,
                    link_index,
                    ..Default::default()
                });
                samples.len() - 1
            });
        let sample = &mut samples[at];
        sample
            .values
            .push(i64::try_from(o.duration_ns).unwrap_or(i64::MAX));
        sample.timestamps_unix_nano.push(o.start_unix_nano);
    }
    let first = events
        .iter()
        .map(|(o, _)| o.start_unix_nano)
        .min()
        .unwrap_or(0);
    let last = events
        .iter()
        .map(|(o, _)| {
            o.start_unix_nano
                .saturating_add(o.duration_ns)
                .max(o.start_unix_nano.saturating_add(1))
        })
        .max()
        .unwrap_or(first);
    Profile {
        sample_type: Some(sample_type),
        samples,
        time_unix_nano: first,
        duration_nano: last - first,
        profile_id: ids.trace_id().to_vec(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opentelemetry_proto::tonic::common::v1::any_value::Value;

    use super::*;
    use crate::kernel::frame::Frame;

    fn observed(pid: u32, tid: u32, kind: Probe, start: u64, ns: u64, leaf: &str) -> Observation {
        let user = Frame {
            function: Some(leaf.into()),
            ..Frame::unnamed(None, 0x10)
        };
        Observation {
            pid,
            tid,
            comm: Comm::from_kernel(b"worker"),
            kind,
            offcpu_state: (kind == Probe::Offcpu).then_some(OffcpuState::Interruptible),
            start_unix_nano: start,
            duration_ns: ns,
            stacks: Stacks {
                kernel: Some(Arc::from(vec![Frame::kernel(
                    0xffff_0000,
                    Some(("schedule", 4)),
                )])),
                user: Some(Arc::from(vec![user])),
                user_code: None,
            },
        }
    }

    fn resource(pid: u32) -> Resource {
        Resource {
            attributes: vec![crate::otlp::attrs::int("process.pid", i64::from(pid))],
            ..Default::default()
        }
    }

    #[test]
    fn one_profile_per_process_and_probe_whose_values_are_the_events() {
        let mut b = ProfileBuilder::new();
        b.add(observed(7, 8, Probe::Offcpu, 100, 30, "block"), None);
        b.add(observed(7, 8, Probe::Offcpu, 200, 20, "block"), None);
        b.add(
            observed(7, 8, Probe::Offcpu, 300, 50, "block"),
            Some(([3; 16], [4; 8])),
        );
        b.add(observed(7, 8, Probe::Writev, 150, 70, "write_slowly"), None);
        b.add(observed(9, 10, Probe::Offcpu, 120, 5, "other"), None);
        let mut none = observed(9, 10, Probe::Offcpu, 1, 1, "x");
        none.stacks = Stacks::default();
        b.add(none, None);
        assert_eq!(b.take_counts().observed, 5, "no stacks, no sample");
        let req = b
            .build(&mut resource, &mut IdGenerator::default())
            .expect("a request");
        assert!(b.is_empty());
        let dict = req.dictionary.as_ref().unwrap();
        let s = |i: i32| dict.string_table[i as usize].as_str();
        assert_eq!(req.resource_profiles.len(), 2);
        let p7 = &req.resource_profiles[0].scope_profiles[0].profiles;
        assert_eq!(p7.len(), 2, "off-CPU and writev");
        let of_type = |ty: &str| {
            p7.iter()
                .find(|p| s(p.sample_type.unwrap().type_strindex) == ty)
                .unwrap_or_else(|| panic!("a {ty} profile"))
        };
        let off = of_type("off_cpu");
        let st = off.sample_type.unwrap();
        assert_eq!(s(st.unit_strindex), "nanoseconds");
        // Unlinked events of one stack and thread share a sample; the linked one has its own.
        assert_eq!(off.samples.len(), 2);
        assert_eq!(off.samples[0].values, [30, 20]);
        assert_eq!(off.samples[0].timestamps_unix_nano, [100, 200]);
        assert_eq!(off.samples[0].link_index, 0);
        let linked = &off.samples[1];
        assert_eq!(linked.values, [50]);
        let link = &dict.link_table[linked.link_index as usize];
        assert_eq!(
            (&link.trace_id[..], &link.span_id[..]),
            (&[3; 16][..], &[4; 8][..])
        );
        assert_eq!((off.time_unix_nano, off.duration_nano), (100, 250));
        let attrs: Vec<(&str, Option<Value>)> = off.samples[0]
            .attribute_indices
            .iter()
            .map(|i| {
                let a = &dict.attribute_table[*i as usize];
                (s(a.key_strindex), a.value.clone().and_then(|v| v.value))
            })
            .collect();
        assert_eq!(
            attrs,
            [
                (THREAD_ID, Some(Value::IntValue(8))),
                (THREAD_NAME, Some(Value::StringValue("worker".into()))),
                (
                    KOTEL_OFFCPU_STATE,
                    Some(Value::StringValue("interruptible".into()))
                ),
            ]
        );
        assert_eq!(of_type("writev").samples[0].values, [70]);
        assert_ne!(p7[0].profile_id, p7[1].profile_id);
        assert!(b
            .build(&mut resource, &mut IdGenerator::default())
            .is_none());
    }

    #[test]
    fn past_the_cap_events_are_counted_not_kept() {
        let mut b = ProfileBuilder::new();
        for i in 0..MAX_OBSERVATIONS as u64 + 3 {
            b.add(observed(1, 1, Probe::Offcpu, i, 1, "f"), None);
        }
        let c = b.take_counts();
        assert_eq!((c.observed, c.dropped), (MAX_OBSERVATIONS as u64, 3));
    }

    #[test]
    fn hostile_names_are_kept_as_they_are() {
        let mut b = ProfileBuilder::new();
        b.add(
            observed(1, 1, Probe::Offcpu, 1, 1, "</text><script>;\n\"x\""),
            None,
        );
        let req = b.build(&mut resource, &mut IdGenerator::default()).unwrap();
        let dict = req.dictionary.unwrap();
        assert!(dict
            .string_table
            .iter()
            .any(|s| s == "</text><script>;\n\"x\""));
    }
}
