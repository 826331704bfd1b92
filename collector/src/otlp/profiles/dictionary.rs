//! The `ProfilesDictionary` of one OTLP profiles request, built as samples are added: every
//! string, mapping, function, location, stack, link and attribute once, each table starting
//! with the zero value the protocol requires at index 0 (`""` for strings).
//!
//! A stack is innermost first, leaf at index 0 as the protocol says; kernel frames come before
//! the user frames that made the system call. Frames inlined into the next one share its
//! location, as its leading lines (`Location.lines`, innermost first).

use std::collections::HashMap;
use std::hash::Hash;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::profiles::v1development::{
    Function, KeyValueAndUnit, Line, Link, Location, Mapping, ProfilesDictionary, Stack,
};

use crate::kernel::frame::{Frame, FrameKind};

/// The mapping kernel frames point at, named as perf names it.
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";
/// A mapping's GNU build-id, in hex (semantic conventions).
pub const BUILD_ID_GNU: &str = "process.executable.build_id.gnu";
/// A location's frame type (semantic conventions): `kernel` or `native`.
pub const FRAME_TYPE: &str = "profile.frame.type";

/// One table of a dictionary: entries once each, by key, in the order first seen.
#[derive(Debug)]
struct Table<K, V> {
    index: HashMap<K, i32>,
    entries: Vec<V>,
}

impl<K: Hash + Eq, V: Default> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            index: HashMap::new(),
            entries: vec![V::default()],
        }
    }
}

impl<K: Hash + Eq, V> Table<K, V> {
    /// The index of `key`, adding `make()` under it when new.
    fn intern(&mut self, key: K, make: impl FnOnce() -> V) -> i32 {
        if let Some(i) = self.index.get(&key) {
            return *i;
        }
        let i = i32::try_from(self.entries.len()).unwrap_or(i32::MAX);
        self.entries.push(make());
        self.index.insert(key, i);
        i
    }
}

/// An attribute's value, as far as kotel's attributes go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AttrValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
}

/// A location's identity: mapping, address, lines (function, line) and frame type.
type LocationKey = (i32, u64, Vec<(i32, i64)>, i32);

/// Builds the dictionary of one request.
#[derive(Debug, Default)]
pub struct Dictionary {
    strings: Table<String, String>,
    mappings: Table<(i32, Option<i32>), Mapping>,
    functions: Table<(i32, i32), Function>,
    locations: Table<LocationKey, Location>,
    stacks: Table<Vec<i32>, Stack>,
    /// Locations by the frames they stand for: a frame seen before costs one lookup.
    by_frames: HashMap<Vec<Frame>, i32>,
    links: Table<([u8; 16], [u8; 8]), Link>,
    attributes: Table<(i32, AttrValue), KeyValueAndUnit>,
}

impl Dictionary {
    /// A dictionary holding only the zero values.
    pub fn new() -> Self {
        let mut d = Dictionary::default();
        d.strings.entries[0] = String::new();
        d.strings.index.insert(String::new(), 0);
        d
    }

    /// The index of `s` in the string table.
    pub fn string(&mut self, s: &str) -> i32 {
        if let Some(i) = self.strings.index.get(s) {
            return *i;
        }
        self.strings.intern(s.to_string(), || s.to_string())
    }

    /// The index of attribute `key` = `value`.
    pub fn attribute(&mut self, key: &str, value: AttrValue) -> i32 {
        let key_strindex = self.string(key);
        self.attributes
            .intern((key_strindex, value.clone()), || KeyValueAndUnit {
                key_strindex,
                value: Some(AnyValue {
                    value: Some(match value {
                        AttrValue::Str(s) => any_value::Value::StringValue(s),
                        AttrValue::Int(i) => any_value::Value::IntValue(i),
                    }),
                }),
                unit_strindex: 0,
            })
    }

    /// The index of the link to span `span_id` in trace `trace_id`.
    pub fn link(&mut self, trace_id: [u8; 16], span_id: [u8; 8]) -> i32 {
        self.links.intern((trace_id, span_id), || Link {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
        })
    }

    /// The index of the stack of `frames` (innermost first).
    pub fn stack(&mut self, frames: impl IntoIterator<Item = impl AsRef<[Frame]>>) -> i32 {
        let mut locations = Vec::new();
        for part in frames {
            let part = part.as_ref();
            let mut start = 0;
            for (i, f) in part.iter().enumerate() {
                // A location ends at its first frame that was not inlined into the next.
                if !f.inlined || i + 1 == part.len() {
                    locations.push(self.location(&part[start..=i]));
                    start = i + 1;
                }
            }
        }
        if let Some(i) = self.stacks.index.get(&locations) {
            return *i;
        }
        self.stacks.intern(locations.clone(), || Stack {
            location_indices: locations,
        })
    }

    /// The location of `frames`: the inlined ones, then the one they were inlined into, all at
    /// the last one's address.
    fn location(&mut self, frames: &[Frame]) -> i32 {
        if let Some(i) = self.by_frames.get(frames) {
            return *i;
        }
        let i = self.new_location(frames);
        self.by_frames.insert(frames.to_vec(), i);
        i
    }

    /// [`Dictionary::location`] for frames not seen before.
    fn new_location(&mut self, frames: &[Frame]) -> i32 {
        let Some(last) = frames.last() else {
            return 0;
        };
        let mapping = self.mapping(last);
        let lines: Vec<(i32, i64)> = frames
            .iter()
            .filter_map(|f| {
                let name = f.function.as_deref()?;
                let function = self.function(name, f.file.as_deref());
                Some((function, f.line.map(i64::from).unwrap_or(0)))
            })
            .collect();
        let frame_type = self.attribute(
            FRAME_TYPE,
            AttrValue::Str(
                match last.kind {
                    FrameKind::Kernel => "kernel",
                    FrameKind::User => "native",
                }
                .into(),
            ),
        );
        let key = (mapping, last.address, lines.clone(), frame_type);
        self.locations.intern(key, || Location {
            mapping_index: mapping,
            address: last.address,
            lines: lines
                .into_iter()
                .map(|(function_index, line)| Line {
                    function_index,
                    line,
                    column: 0,
                })
                .collect(),
            attribute_indices: vec![frame_type],
        })
    }

    /// The mapping of a frame's code: its module (with its build-id), the kernel's, or none.
    fn mapping(&mut self, f: &Frame) -> i32 {
        let (name, build_id) = match (f.kind, &f.module) {
            (FrameKind::Kernel, _) => (KERNEL_MAPPING, None),
            (FrameKind::User, Some(m)) => (m.path.as_str(), m.build_id.as_deref()),
            (FrameKind::User, None) => return 0,
        };
        let filename_strindex = self.string(name);
        let build_id = build_id.map(|b| self.attribute(BUILD_ID_GNU, AttrValue::Str(b.into())));
        self.mappings
            .intern((filename_strindex, build_id), || Mapping {
                filename_strindex,
                attribute_indices: build_id.into_iter().collect(),
                ..Default::default()
            })
    }

    /// The function `name` in source file `file`.
    fn function(&mut self, name: &str, file: Option<&str>) -> i32 {
        let name_strindex = self.string(name);
        let filename_strindex = file.map(|f| self.string(f)).unwrap_or(0);
        self.functions
            .intern((name_strindex, filename_strindex), || Function {
                name_strindex,
                system_name_strindex: name_strindex,
                filename_strindex,
                start_line: 0,
            })
    }

    /// The finished tables.
    pub fn finish(self) -> ProfilesDictionary {
        ProfilesDictionary {
            mapping_table: self.mappings.entries,
            location_table: self.locations.entries,
            function_table: self.functions.entries,
            link_table: self.links.entries,
            string_table: self.strings.entries,
            attribute_table: self.attributes.entries,
            stack_table: self.stacks.entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::kernel::frame::Module;

    fn user(name: &str, inlined: bool, module: &Arc<Module>, address: u64) -> Frame {
        Frame {
            function: Some(name.into()),
            file: Some("/src/a.c".into()),
            line: Some(7),
            inlined,
            module: Some(Arc::clone(module)),
            address,
            ..Frame::unnamed(None, 0)
        }
    }

    #[test]
    fn every_table_starts_with_its_zero_value_and_holds_each_entry_once() {
        let app = Arc::new(Module {
            path: "/opt/app".into(),
            build_id: Some("ab12".into()),
        });
        let kernel = [Frame::kernel(0xffff_0001, Some(("schedule", 1)))];
        let user_frames = [
            user("inner", true, &app, 0x40),
            user("outer", false, &app, 0x40),
            Frame::unnamed(Some(Arc::clone(&app)), 0x99),
            Frame::unnamed(None, 0x7f00),
        ];
        let mut d = Dictionary::new();
        let s1 = d.stack([&kernel[..], &user_frames[..]]);
        let s2 = d.stack([&kernel[..], &user_frames[..]]);
        assert_eq!(s1, s2, "one stack, once");
        let link = d.link([1; 16], [2; 8]);
        let t = d.finish();
        assert_eq!(t.string_table[0], "");
        for (name, len_zero) in [
            ("mapping", t.mapping_table[0] == Mapping::default()),
            ("location", t.location_table[0] == Location::default()),
            ("function", t.function_table[0] == Function::default()),
            ("link", t.link_table[0] == Link::default()),
            (
                "attribute",
                t.attribute_table[0] == KeyValueAndUnit::default(),
            ),
            ("stack", t.stack_table[0] == Stack::default()),
        ] {
            assert!(len_zero, "{name}_table[0] is the zero value");
        }
        assert_eq!(link, 1);
        let stack = &t.stack_table[s1 as usize];
        assert_eq!(stack.location_indices.len(), 4, "inlined frames share one");
        let loc = |i: usize| &t.location_table[stack.location_indices[i] as usize];
        let fname = |l: &Line| {
            let f = &t.function_table[l.function_index as usize];
            t.string_table[f.name_strindex as usize].as_str()
        };
        // The leaf is the kernel's.
        assert_eq!(fname(&loc(0).lines[0]), "schedule");
        let kmap = &t.mapping_table[loc(0).mapping_index as usize];
        assert_eq!(
            t.string_table[kmap.filename_strindex as usize],
            KERNEL_MAPPING
        );
        // Inlined first, then its caller, at one address in the program.
        let names: Vec<&str> = loc(1).lines.iter().map(fname).collect();
        assert_eq!(names, ["inner", "outer"]);
        assert_eq!(loc(1).address, 0x40);
        let map = &t.mapping_table[loc(1).mapping_index as usize];
        assert_eq!(t.string_table[map.filename_strindex as usize], "/opt/app");
        let attr = &t.attribute_table[map.attribute_indices[0] as usize];
        assert_eq!(t.string_table[attr.key_strindex as usize], BUILD_ID_GNU);
        // Unnamed: no lines, its module and offset; unknown: no mapping.
        assert!(loc(2).lines.is_empty());
        assert_eq!(
            (loc(2).mapping_index, loc(2).address),
            (loc(1).mapping_index, 0x99)
        );
        assert_eq!((loc(3).mapping_index, loc(3).address), (0, 0x7f00));
    }
}
