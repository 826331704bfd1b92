//! Test certificates for the Rust TLS tests, made on the spot by `tests/python/tls_certs.py`
//! (python3 with `cryptography`, from tests/python/requirements.txt). Shared by the render and
//! collector test crates through `#[path]`. Without python3 or `cryptography` a test says so in
//! one loud line and skips.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Makes a fresh PKI in `dir` and returns the paths `tls_certs.py` printed, as JSON (`ca`,
/// `wrong_ca`, and `{cert, key}` pairs such as `server`, `client`, `client_expired`,
/// `wrong_client`); or says loudly why it cannot and returns `None`.
pub fn pki(dir: &Path, test: &str) -> Option<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/tls_certs.py");
    let why = match std::process::Command::new("python3")
        .arg(&script)
        .arg(dir)
        .output()
    {
        Ok(o) if o.status.success() => {
            return Some(serde_json::from_slice(&o.stdout).expect("tls_certs.py JSON"))
        }
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => format!("python3: {e}"),
    };
    // Straight to stderr, past the test harness's capture, so the skip is always visible.
    let _ = writeln!(
        std::io::stderr(),
        "!!!!!! KOTEL-TLS SKIPPED {test}: no test certificates (python3 with cryptography, \
         see tests/python/requirements.txt): {why} !!!!!!"
    );
    None
}

/// A path from the JSON.
#[allow(dead_code)] // not every including test crate needs it
pub fn path(v: &serde_json::Value) -> PathBuf {
    PathBuf::from(v.as_str().expect("a path"))
}
