//! Programs a test builds and starts itself: a C source compiled with the flags the test
//! needs, and a child that speaks JSON lines (it prints `{"pid":…}` first, then answers each
//! line the test writes to its stdin with a line of its own truth).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};

use serde_json::Value;

/// Writes `source` to `dir/<file>` and compiles it with `cc <flags>` into `dir/<bin>`.
pub fn compile_c(dir: &Path, file: &str, bin: &str, source: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join(file);
    std::fs::write(&src, source).expect("write the C source");
    let out_bin = dir.join(bin);
    let out = Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(&out_bin)
        .arg(&src)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out_bin
}

/// A running program with piped stdin and stdout, speaking JSON lines.
pub struct JsonChild {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl JsonChild {
    /// Starts `program <args>`.
    pub fn spawn(program: &Path, args: &[&OsStr]) -> JsonChild {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        JsonChild {
            child,
            stdin,
            stdout,
        }
    }

    /// Its next line, as JSON.
    pub fn read_json(&mut self) -> Value {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("a line from the program");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("program line {line:?}: {e}"))
    }

    /// Writes `line` to its stdin.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").unwrap_or_else(|e| panic!("write {line:?}: {e}"));
    }

    /// Closes its stdin and waits for it to exit.
    pub fn wait(mut self) -> ExitStatus {
        drop(self.stdin.take());
        self.child.wait().expect("wait for the program")
    }
}

impl Drop for JsonChild {
    /// A test that panics must not leave its program running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
