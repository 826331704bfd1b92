//! One symbolized stack frame, kernel or user, as a value: what it names (function, source
//! file and line), where its code lies (module and offset, with the module's build-id) and
//! whether it was inlined into the frame after it. Spans, `kotel capture` and flame graphs
//! show it as text ([`fmt::Display`]); OTLP profiles take its parts apart.
//!
//! The text forms: a kernel frame is `function+0xoff` (or its address in hex); a user frame is
//! `function (file:line)` where DWARF names the line, `function` where only a symbol names it,
//! `module+0xoff [buildid …]` where nothing names it, and `0x… [unknown]` outside any mapping.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Where a frame's code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// The kernel, on the thread's behalf.
    Kernel,
    /// The process's own code: its program, its libraries, or JIT code a perf map names.
    User,
}

/// A file mapped into a process, as it names frames that have no symbol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Module {
    /// The path the process's maps give (inside its own mount namespace).
    pub path: String,
    /// The GNU build-id in hex, where the file has one.
    pub build_id: Option<String>,
}

impl Module {
    /// The file name of [`Module::path`], for short frame names.
    pub fn file_name(&self) -> &str {
        Path::new(&self.path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(&self.path)
    }
}

/// One frame of a stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Kernel or user.
    pub kind: FrameKind,
    /// The function, demangled, where a symbol or a perf map names it.
    pub function: Option<String>,
    /// The source file, where DWARF names it.
    pub file: Option<String>,
    /// The source line, where DWARF names it.
    pub line: Option<u32>,
    /// The offset from the function's start (kernel frames: the `+0xoff`).
    pub symbol_offset: Option<u64>,
    /// The mapped file the code lies in, where known.
    pub module: Option<Arc<Module>>,
    /// The offset in [`Frame::module`] where there is one, else the instruction address.
    pub address: u64,
    /// This frame's function was inlined into the next frame's (they share the address).
    pub inlined: bool,
}

impl Frame {
    /// A kernel frame: `function` at `offset` past its start, or a bare address.
    pub fn kernel(ip: u64, function: Option<(&str, u64)>) -> Frame {
        Frame {
            kind: FrameKind::Kernel,
            function: function.map(|(name, _)| name.to_string()),
            file: None,
            line: None,
            symbol_offset: function.map(|(_, off)| off),
            module: None,
            address: ip,
            inlined: false,
        }
    }

    /// A user frame nothing names: `offset` in `module`, or a bare address without one.
    pub fn unnamed(module: Option<Arc<Module>>, address: u64) -> Frame {
        Frame {
            kind: FrameKind::User,
            function: None,
            file: None,
            line: None,
            symbol_offset: None,
            module,
            address,
            inlined: false,
        }
    }

    /// What a flame graph box shows: the function alone (an offset or a line would split one
    /// function into many boxes), else `module+0xoff`, else `[unknown]`.
    pub fn flame_name(&self) -> String {
        match (&self.function, &self.module) {
            (Some(f), _) => f.clone(),
            (None, Some(m)) => format!("{}+0x{:x}", m.file_name(), self.address),
            (None, None) if self.kind == FrameKind::Kernel => format!("0x{:x}", self.address),
            (None, None) => "[unknown]".to_string(),
        }
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, &self.function) {
            (FrameKind::Kernel, Some(name)) => {
                write!(f, "{name}+0x{:x}", self.symbol_offset.unwrap_or(0))
            }
            (FrameKind::Kernel, None) => write!(f, "0x{:x}", self.address),
            (FrameKind::User, Some(name)) => match (&self.file, self.line) {
                (Some(file), Some(line)) => write!(f, "{name} ({file}:{line})"),
                (Some(file), None) => write!(f, "{name} ({file})"),
                (None, _) => f.write_str(name),
            },
            (FrameKind::User, None) => match &self.module {
                Some(m) => {
                    write!(f, "{}+0x{:x}", m.file_name(), self.address)?;
                    match &m.build_id {
                        Some(b) => write!(f, " [buildid {b}]"),
                        None => Ok(()),
                    }
                }
                None => write!(f, "0x{:x} [unknown]", self.address),
            },
        }
    }
}

impl serde::Serialize for Frame {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The text form of each frame, innermost first (span attributes).
pub fn texts(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(Frame::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str, file: Option<&str>, line: Option<u32>) -> Frame {
        Frame {
            function: Some(name.into()),
            file: file.map(Into::into),
            line,
            ..Frame::unnamed(None, 0x10)
        }
    }

    #[test]
    fn each_form_reads_as_the_docs_say() {
        let libc = Arc::new(Module {
            path: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
            build_id: Some("ab12".into()),
        });
        assert_eq!(
            Frame::kernel(0xffff_0010, Some(("schedule", 0x42))).to_string(),
            "schedule+0x42"
        );
        assert_eq!(Frame::kernel(0xffff_0010, None).to_string(), "0xffff0010");
        assert_eq!(
            named("block_here", Some("/src/w.c"), Some(12)).to_string(),
            "block_here (/src/w.c:12)"
        );
        assert_eq!(
            named("block_here", Some("/src/w.c"), None).to_string(),
            "block_here (/src/w.c)"
        );
        assert_eq!(
            named("LazyCompile:*f", None, None).to_string(),
            "LazyCompile:*f"
        );
        assert_eq!(
            Frame::unnamed(Some(libc.clone()), 0x1234).to_string(),
            "libc.so.6+0x1234 [buildid ab12]"
        );
        let no_id = Arc::new(Module {
            path: "a.out".into(),
            build_id: None,
        });
        assert_eq!(Frame::unnamed(Some(no_id), 0x9).to_string(), "a.out+0x9");
        assert_eq!(Frame::unnamed(None, 0x77).to_string(), "0x77 [unknown]");
    }

    #[test]
    fn flame_names_keep_the_function_only() {
        let m = Arc::new(Module {
            path: "/x/prog".into(),
            build_id: Some("ff".into()),
        });
        assert_eq!(named("f", Some("a.c"), Some(3)).flame_name(), "f");
        assert_eq!(Frame::unnamed(Some(m), 0x20).flame_name(), "prog+0x20");
        assert_eq!(Frame::unnamed(None, 0x20).flame_name(), "[unknown]");
        assert_eq!(
            Frame::kernel(1, Some(("schedule", 4))).flame_name(),
            "schedule"
        );
    }

    #[test]
    fn frames_serialize_as_their_text() {
        let json = serde_json::to_string(&[Frame::kernel(1, Some(("schedule", 4)))]).unwrap();
        assert_eq!(json, r#"["schedule+0x4"]"#);
    }
}
