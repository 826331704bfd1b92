//! Bounded reads of one process's files under a proc root (`/proc` in production, a fake tree
//! in tests): comm, executable, command line, service name, cgroups and namespace pids.
//!
//! Processes come and go while they are read, and many files are unreadable without
//! privileges (`environ` of other users, `exe` of kernel threads). Every reader therefore
//! returns what it could read — `None` or an empty value otherwise — and never fails.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::container::{container_id_from_cgroup, pod_uid_from_cgroup};
use super::parse_resource_attributes;
use super::semconv::SERVICE_NAME;

/// Most bytes read from `cmdline` or `environ`.
pub const MAX_ARGS_BYTES: usize = 64 * 1024;
/// Most bytes read from `cgroup` and `status`.
const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Most bytes read from `comm` (the kernel keeps 15).
const MAX_COMM_BYTES: usize = 256;

/// What could be read about one process; fields that could not be read are `None` or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcFacts {
    /// `comm`, without the trailing newline.
    pub comm: Option<String>,
    /// Basename of the `exe` link target, without a ` (deleted)` suffix.
    pub exe_name: Option<String>,
    /// `cmdline` with its NUL separators turned into spaces; empty for kernel threads.
    pub command_line: String,
    /// `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, from `environ`.
    pub service_name: Option<String>,
    /// The lines of `cgroup`.
    pub cgroups: Vec<String>,
    /// Container id found in the cgroups.
    pub container_id: Option<String>,
    /// Kubernetes pod UID found in the cgroups.
    pub pod_uid: Option<String>,
    /// The `NSpid` line of `status`: this process's pid in each PID namespace, outermost first.
    pub ns_pids: Vec<u32>,
}

/// Reads what can be read about `pid` under `proc_root`; `None` when the process is gone
/// (its directory does not exist).
pub fn read_process(proc_root: &Path, pid: u32) -> Option<ProcFacts> {
    let dir = proc_root.join(pid.to_string());
    if !dir.is_dir() {
        return None;
    }
    let cgroups = read_cgroups(&dir);
    Some(ProcFacts {
        comm: read_comm(&dir),
        exe_name: read_exe_name(&dir),
        command_line: read_command_line(&dir),
        service_name: read_bounded(&dir.join("environ"), MAX_ARGS_BYTES)
            .ok()
            .and_then(|env| service_name_from_environ(&env, env.len() >= MAX_ARGS_BYTES)),
        container_id: first_match(&cgroups, container_id_from_cgroup),
        pod_uid: first_match(&cgroups, pod_uid_from_cgroup),
        cgroups,
        ns_pids: read_ns_pids(&dir),
    })
}

/// Reads at most `cap` bytes of a file.
fn read_bounded(path: &Path, cap: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.take(cap as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// `comm` of the process directory `dir`.
fn read_comm(dir: &Path) -> Option<String> {
    let raw = read_bounded(&dir.join("comm"), MAX_COMM_BYTES).ok()?;
    let comm = String::from_utf8_lossy(&raw);
    let comm = comm.strip_suffix('\n').unwrap_or(&comm);
    (!comm.is_empty()).then(|| comm.to_owned())
}

/// Basename of the `exe` link target of the process directory `dir`.
fn read_exe_name(dir: &Path) -> Option<String> {
    let target: PathBuf = std::fs::read_link(dir.join("exe")).ok()?;
    exe_name_from_target(&target.to_string_lossy())
}

/// Basename of an `exe` link target, without the ` (deleted)` the kernel appends when the file
/// was replaced or removed after exec.
fn exe_name_from_target(target: &str) -> Option<String> {
    let target = target.strip_suffix(" (deleted)").unwrap_or(target);
    let name = target.rsplit('/').next().unwrap_or(target);
    (!name.is_empty()).then(|| name.to_owned())
}

/// `cmdline` of the process directory `dir`, arguments joined by spaces.
fn read_command_line(dir: &Path) -> String {
    read_bounded(&dir.join("cmdline"), MAX_ARGS_BYTES)
        .map(|raw| command_line_from_cmdline(&raw))
        .unwrap_or_default()
}

/// NUL-separated arguments joined by single spaces; trailing NULs dropped.
fn command_line_from_cmdline(raw: &[u8]) -> String {
    let args: Vec<_> = raw
        .split(|&b| b == 0)
        .map(String::from_utf8_lossy)
        .collect();
    let used = args
        .iter()
        .rposition(|a| !a.is_empty())
        .map_or(0, |i| i + 1);
    args[..used].join(" ")
}

/// The service name a process declares in its environment: `OTEL_SERVICE_NAME`, else
/// `service.name` in `OTEL_RESOURCE_ATTRIBUTES` (ignored when malformed, as the OpenTelemetry
/// SDKs do). Empty values count as absent; as with `getenv`, the first definition wins. When
/// `truncated`, the last entry may be cut short and is ignored.
pub fn service_name_from_environ(environ: &[u8], truncated: bool) -> Option<String> {
    let mut entries: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
    if truncated {
        entries.pop();
    }
    let var = |name: &str| {
        entries.iter().find_map(|entry| {
            let value = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
            Some(String::from_utf8_lossy(value))
        })
    };
    if let Some(name) = var("OTEL_SERVICE_NAME") {
        let name = name.trim();
        if !name.is_empty() {
            return Some(name.to_owned());
        }
    }
    let attrs = parse_resource_attributes(&var("OTEL_RESOURCE_ATTRIBUTES")?).ok()?;
    attrs
        .into_iter()
        .find(|(key, value)| key == SERVICE_NAME && !value.is_empty())
        .map(|(_, value)| value)
}

/// The lines of `cgroup` of the process directory `dir`.
fn read_cgroups(dir: &Path) -> Vec<String> {
    read_bounded(&dir.join("cgroup"), MAX_TEXT_BYTES)
        .map(|raw| {
            String::from_utf8_lossy(&raw)
                .lines()
                .filter(|line| !line.trim().is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The first answer of `find` over the cgroup lines, the unified (v2, `0::`) line first.
fn first_match(lines: &[String], find: fn(&str) -> Option<String>) -> Option<String> {
    let (unified, legacy): (Vec<&String>, Vec<&String>) =
        lines.iter().partition(|line| line.starts_with("0::"));
    unified
        .into_iter()
        .chain(legacy)
        .find_map(|line| find(line))
}

/// The `NSpid` pids in `status` of the process directory `dir`.
fn read_ns_pids(dir: &Path) -> Vec<u32> {
    read_bounded(&dir.join("status"), MAX_TEXT_BYTES)
        .map(|raw| ns_pids_from_status(&String::from_utf8_lossy(&raw)))
        .unwrap_or_default()
}

/// The pids of the `NSpid:` line of a `status` file, outermost namespace first; empty when the
/// line is missing (kernels before 4.1) or malformed.
fn ns_pids_from_status(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .and_then(|rest| {
            rest.split_whitespace()
                .map(|pid| pid.parse::<u32>().ok())
                .collect::<Option<Vec<_>>>()
        })
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const ID: &str = "0f3a5c9e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19";
    const UID: &str = "1f9c2b3a-4d5e-6f70-8192-a3b4c5d6e7f8";

    /// A fake proc root in the temp directory, removed on drop.
    pub(crate) struct FakeProc {
        /// The root, to pass where `/proc` would go.
        pub(crate) root: PathBuf,
    }

    impl FakeProc {
        /// An empty tree with a name unique to this test process and call.
        pub(crate) fn new(name: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let root = std::env::temp_dir().join(format!(
                "kotel-enrich-{}-{name}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&root).expect("create fake proc root");
            FakeProc { root }
        }

        /// Writes `<root>/<pid>/<file>`.
        pub(crate) fn file(&self, pid: u32, file: &str, contents: impl AsRef<[u8]>) -> &Self {
            let dir = self.root.join(pid.to_string());
            std::fs::create_dir_all(&dir).expect("create fake pid dir");
            std::fs::write(dir.join(file), contents).expect("write fake proc file");
            self
        }

        /// Makes `<root>/<pid>/exe` a symlink to `target` (which need not exist).
        pub(crate) fn exe(&self, pid: u32, target: &str) -> &Self {
            let dir = self.root.join(pid.to_string());
            std::fs::create_dir_all(&dir).expect("create fake pid dir");
            std::os::unix::fs::symlink(target, dir.join("exe")).expect("symlink fake exe");
            self
        }

        /// A typical containerised server process.
        pub(crate) fn server(&self, pid: u32) -> &Self {
            self.file(pid, "comm", "server\n")
                .exe(pid, "/usr/local/bin/server")
                .file(pid, "cmdline", b"/usr/local/bin/server\0--port\08080\0")
                .file(pid, "environ", b"PATH=/bin\0OTEL_SERVICE_NAME=checkout\0")
                .file(
                    pid,
                    "cgroup",
                    format!("0::/kubepods/burstable/pod{UID}/{ID}\n"),
                )
                .file(
                    pid,
                    "status",
                    format!("Name:\tserver\nTgid:\t{pid}\nNSpid:\t{pid}\t1\n"),
                )
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn reads_a_complete_process() {
        let fake = FakeProc::new("complete");
        fake.server(4242);
        let facts = read_process(&fake.root, 4242).expect("process exists");
        assert_eq!(facts.comm.as_deref(), Some("server"));
        assert_eq!(facts.exe_name.as_deref(), Some("server"));
        assert_eq!(facts.command_line, "/usr/local/bin/server --port 8080");
        assert_eq!(facts.service_name.as_deref(), Some("checkout"));
        assert_eq!(facts.container_id.as_deref(), Some(ID));
        assert_eq!(facts.pod_uid.as_deref(), Some(UID));
        assert_eq!(facts.ns_pids, vec![4242, 1]);
        assert_eq!(facts.cgroups.len(), 1);
    }

    #[test]
    fn a_vanished_process_is_none() {
        let fake = FakeProc::new("vanished");
        assert_eq!(read_process(&fake.root, 7), None);
    }

    #[test]
    fn a_kernel_thread_has_comm_only() {
        let fake = FakeProc::new("kthread");
        fake.file(2, "comm", "kthreadd\n")
            .file(2, "cmdline", "")
            .file(2, "cgroup", "0::/\n")
            .file(2, "status", "Name:\tkthreadd\nNSpid:\t2\n");
        let facts = read_process(&fake.root, 2).expect("process exists");
        assert_eq!(facts.comm.as_deref(), Some("kthreadd"));
        assert_eq!(facts.exe_name, None);
        assert_eq!(facts.command_line, "");
        assert_eq!(facts.service_name, None);
        assert_eq!(facts.container_id, None);
        assert_eq!(facts.pod_uid, None);
        assert_eq!(facts.ns_pids, vec![2]);
    }

    #[test]
    fn missing_files_give_what_could_be_read() {
        let fake = FakeProc::new("partial");
        fake.file(9, "comm", "lonely\n");
        let facts = read_process(&fake.root, 9).expect("process exists");
        assert_eq!(
            facts,
            ProcFacts {
                comm: Some("lonely".into()),
                ..ProcFacts::default()
            }
        );
        // Even without any file, an existing directory is a process.
        std::fs::create_dir_all(fake.root.join("10")).unwrap();
        assert_eq!(read_process(&fake.root, 10), Some(ProcFacts::default()));
    }

    #[test]
    fn deleted_executables_keep_their_name() {
        let fake = FakeProc::new("deleted");
        fake.exe(5, "/opt/app/bin/app (deleted)");
        let facts = read_process(&fake.root, 5).expect("process exists");
        assert_eq!(facts.exe_name.as_deref(), Some("app"));
        assert_eq!(exe_name_from_target("/"), None);
        assert_eq!(exe_name_from_target("plain").as_deref(), Some("plain"));
    }

    #[test]
    fn oversized_files_are_read_up_to_the_cap() {
        let fake = FakeProc::new("huge");
        let mut cmdline = b"prog\0".to_vec();
        cmdline.extend(std::iter::repeat_n(b'x', 2 * MAX_ARGS_BYTES));
        let mut environ = b"OTEL_SERVICE_NAME=early\0".to_vec();
        environ.extend(std::iter::repeat_n(b'y', 2 * MAX_ARGS_BYTES));
        fake.file(3, "cmdline", &cmdline)
            .file(3, "environ", &environ);
        let facts = read_process(&fake.root, 3).expect("process exists");
        assert_eq!(facts.command_line.len(), MAX_ARGS_BYTES);
        assert!(facts.command_line.starts_with("prog x"));
        assert_eq!(facts.service_name.as_deref(), Some("early"));
    }

    #[test]
    fn a_truncated_environ_drops_its_cut_entry() {
        // The cap cut `OTEL_SERVICE_NAME=checkout-service` short: it must not be half used.
        let env = b"A=1\0OTEL_SERVICE_NAME=check";
        assert_eq!(service_name_from_environ(env, true), None);
        assert_eq!(
            service_name_from_environ(env, false).as_deref(),
            Some("check")
        );
    }

    #[test]
    fn command_lines() {
        assert_eq!(command_line_from_cmdline(b""), "");
        assert_eq!(command_line_from_cmdline(b"a\0b c\0\0d\0"), "a b c  d");
        assert_eq!(command_line_from_cmdline(b"a\0\0\0"), "a");
        // Processes that rewrite their argv (nginx, postgres) leave one spaced string.
        assert_eq!(
            command_line_from_cmdline(b"nginx: master process /usr/sbin/nginx"),
            "nginx: master process /usr/sbin/nginx"
        );
        assert_eq!(command_line_from_cmdline(b"bad\xff\0x"), "bad\u{fffd} x");
    }

    #[test]
    fn service_name_sources() {
        let name = |env: &[u8]| service_name_from_environ(env, false);
        assert_eq!(name(b""), None);
        assert_eq!(name(b"PATH=/bin\0HOME=/root\0"), None);
        assert_eq!(name(b"OTEL_SERVICE_NAME=api\0").as_deref(), Some("api"));
        assert_eq!(
            name(b"OTEL_RESOURCE_ATTRIBUTES=deployment.environment=prod, service.name=my%20api\0")
                .as_deref(),
            Some("my api")
        );
        // OTEL_SERVICE_NAME wins whatever the order.
        assert_eq!(
            name(b"OTEL_RESOURCE_ATTRIBUTES=service.name=fromattrs\0OTEL_SERVICE_NAME=fromname\0")
                .as_deref(),
            Some("fromname")
        );
        // An empty OTEL_SERVICE_NAME is absent.
        assert_eq!(
            name(b"OTEL_SERVICE_NAME=\0OTEL_RESOURCE_ATTRIBUTES=service.name=x\0").as_deref(),
            Some("x")
        );
        // A malformed OTEL_RESOURCE_ATTRIBUTES is ignored as a whole.
        assert_eq!(
            name(b"OTEL_RESOURCE_ATTRIBUTES=service.name=x,oops\0"),
            None
        );
        // Names that merely start alike are other variables.
        assert_eq!(name(b"OTEL_SERVICE_NAMESPACE=ns\0"), None);
        assert_eq!(name(b"MY_OTEL_SERVICE_NAME=no\0"), None);
        // The first definition wins, as with getenv.
        assert_eq!(
            name(b"OTEL_SERVICE_NAME=first\0OTEL_SERVICE_NAME=second\0").as_deref(),
            Some("first")
        );
    }

    #[test]
    fn the_unified_line_is_preferred_but_all_lines_are_scanned() {
        let other = "aaaabbbbccccddddeeeeffff0000111122223333444455556666777788889999";
        let fake = FakeProc::new("cgroups");
        fake.file(
            11,
            "cgroup",
            format!("12:memory:/docker/{other}\n0::/system.slice/docker-{ID}.scope\n"),
        );
        let facts = read_process(&fake.root, 11).expect("process exists");
        assert_eq!(facts.container_id.as_deref(), Some(ID));

        // cgroup v1 only: the legacy lines are enough.
        fake.file(
            12,
            "cgroup",
            format!(
                "12:pids:/kubepods/besteffort/pod{UID}/{ID}\n1:name=systemd:/kubepods/besteffort/pod{UID}/{ID}\n0::/\n"
            ),
        );
        let facts = read_process(&fake.root, 12).expect("process exists");
        assert_eq!(facts.container_id.as_deref(), Some(ID));
        assert_eq!(facts.pod_uid.as_deref(), Some(UID));
        assert_eq!(facts.cgroups.len(), 3);
    }

    #[test]
    fn ns_pid_lines() {
        assert_eq!(
            ns_pids_from_status("Name:\tx\nNSpid:\t100\t20\t1\n"),
            vec![100, 20, 1]
        );
        assert_eq!(ns_pids_from_status("Name:\tx\nNSpid:\t7\n"), vec![7]);
        assert_eq!(
            ns_pids_from_status("Name:\tx\nPid:\t7\n"),
            Vec::<u32>::new()
        );
        assert_eq!(ns_pids_from_status("NSpid:\t7\tx\n"), Vec::<u32>::new());
        assert_eq!(ns_pids_from_status("NSpid:\n"), Vec::<u32>::new());
    }

    proptest! {
        #[test]
        fn arbitrary_file_contents_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = service_name_from_environ(&bytes, false);
            let _ = service_name_from_environ(&bytes, true);
            let _ = command_line_from_cmdline(&bytes);
            let _ = ns_pids_from_status(&String::from_utf8_lossy(&bytes));
            let _ = exe_name_from_target(&String::from_utf8_lossy(&bytes));
        }
    }
}
