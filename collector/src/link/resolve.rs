//! Which host process and thread an application span belongs to: from the `process.pid` on
//! its resource (translated across PID namespaces with the `NSpid` lines of
//! `/proc/<pid>/status`, checked against `container.id`), or from the OTLP connection itself
//! (the peer socket's owner, through `/proc/net/tcp{,6}` and `/proc/<pid>/fd`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::enrich::proc::read_process;

/// How long a connection's resolved sender is trusted.
const PEER_TTL: Duration = Duration::from_secs(30);
/// How long a connection whose owner was not found is left alone.
const PEER_MISS_TTL: Duration = Duration::from_secs(2);
/// Most connections remembered.
const PEER_CACHE: usize = 4096;

/// Which process owns each OTLP connection's far end, remembered per peer address. Shared by
/// the receiver (which resolves while the request is in flight) and the linker. Thread-safe.
#[derive(Debug)]
pub struct PeerCache {
    proc_root: PathBuf,
    peers: Mutex<HashMap<SocketAddr, (Option<u32>, Instant)>>,
}

impl PeerCache {
    /// A cache reading `/proc` at `proc_root`.
    pub fn new(proc_root: PathBuf) -> Self {
        PeerCache {
            proc_root,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// The owner of `peer`, from the cache or from /proc.
    pub fn resolve(&self, peer: SocketAddr) -> Option<u32> {
        if let Ok(map) = self.peers.lock() {
            if let Some((pid, at)) = map.get(&peer) {
                // A miss is remembered briefly: a scan of /proc per request would be costly.
                let ttl = if pid.is_some() {
                    PEER_TTL
                } else {
                    PEER_MISS_TTL
                };
                if at.elapsed() < ttl {
                    return *pid;
                }
            }
        }
        let pid = pid_of_peer(&self.proc_root, peer);
        if let Ok(mut map) = self.peers.lock() {
            if map.len() >= PEER_CACHE {
                map.retain(|_, (_, at)| at.elapsed() < PEER_TTL);
                if map.len() >= PEER_CACHE {
                    map.clear();
                }
            }
            map.insert(peer, (pid, Instant::now()));
        }
        pid
    }
}

/// The `NSpid` list of a task's status file: its ids from the outermost namespace in.
pub fn ns_pids(status_path: &Path) -> Option<Vec<u32>> {
    let text = std::fs::read_to_string(status_path).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().map(|p| p.parse().ok()).collect()
}

fn pids(proc_root: &Path) -> impl Iterator<Item = u32> {
    std::fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
}

/// Why a resource's `process.pid` names no process kotel can link its spans to. Such spans
/// are left unlinked: another process (the connection's owner, say) would be the wrong one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unresolved {
    /// No process calls itself that: it exited before its spans arrived, or runs elsewhere.
    Gone,
    /// More than one process calls itself that (the host's and a container's, or two
    /// containers'), and neither the connection nor `container.id` tells which.
    Ambiguous,
    /// Processes call themselves that, but none is in the resource's `container.id`.
    ContainerMismatch,
    /// `process.pid` is not a pid: not an integer, or outside 1..=[`PID_MAX_LIMIT`].
    Invalid,
}

/// The largest pid Linux can give (`PID_MAX_LIMIT` on 64-bit kernels, 2²²).
pub const PID_MAX_LIMIT: u32 = 1 << 22;

impl Unresolved {
    /// Every reason, in [`Unresolved::index`] order.
    pub const ALL: [Unresolved; 4] = [
        Unresolved::Gone,
        Unresolved::Ambiguous,
        Unresolved::ContainerMismatch,
        Unresolved::Invalid,
    ];

    /// The stable name: the value of `kotel.link.unresolved` and the self-metric's reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Unresolved::Gone => "gone",
            Unresolved::Ambiguous => "ambiguous",
            Unresolved::ContainerMismatch => "container_mismatch",
            Unresolved::Invalid => "invalid",
        }
    }

    /// Its key in `summary.json`, next to the `link_unresolved` total.
    pub fn summary_key(self) -> &'static str {
        match self {
            Unresolved::Gone => "link_unresolved_gone",
            Unresolved::Ambiguous => "link_unresolved_ambiguous",
            Unresolved::ContainerMismatch => "link_unresolved_container_mismatch",
            Unresolved::Invalid => "link_unresolved_invalid",
        }
    }

    /// Its position in [`Unresolved::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The pid a resource's `process.pid` value names, when it can name one.
pub fn valid_pid(value: i64) -> Result<u32, Unresolved> {
    u32::try_from(value)
        .ok()
        .filter(|p| (1..=PID_MAX_LIMIT).contains(p))
        .ok_or(Unresolved::Invalid)
}

/// The host pid of a process that calls itself `reported` in its own PID namespace, or why
/// there is none. `peer_pid`, the process owning the sending connection, settles ambiguity;
/// `container_id` must match when given.
pub fn host_pid(
    proc_root: &Path,
    reported: u32,
    container_id: Option<&str>,
    peer_pid: Option<u32>,
) -> Result<u32, Unresolved> {
    let innermost = |pid: u32| {
        ns_pids(&proc_root.join(pid.to_string()).join("status")).and_then(|v| v.last().copied())
    };
    let container_ok = |pid: u32| match container_id {
        None => true,
        Some(want) => read_process(proc_root, pid)
            .and_then(|f| f.container_id)
            .is_some_and(|c| c == want),
    };
    if let Some(p) = peer_pid {
        if innermost(p) == Some(reported) && container_ok(p) {
            return Ok(p);
        }
    }
    // Every process that calls itself `reported`: the host's own with that pid, and those of
    // nested namespaces. Only an unambiguous answer is taken (a container's `process.pid=1`
    // must not become the host's init).
    let mut named = Vec::new();
    if ns_pids(&proc_root.join(reported.to_string()).join("status")).is_some_and(|ns| ns.len() == 1)
    {
        named.push(reported);
    }
    for pid in pids(proc_root) {
        let Some(ns) = ns_pids(&proc_root.join(pid.to_string()).join("status")) else {
            continue;
        };
        if ns.len() > 1 && ns.last() == Some(&reported) {
            named.push(pid);
        }
    }
    if named.is_empty() {
        return Err(Unresolved::Gone);
    }
    let mut in_container = named.into_iter().filter(|&p| container_ok(p));
    match (in_container.next(), in_container.next()) {
        (Some(p), None) => Ok(p),
        (Some(_), Some(_)) => Err(Unresolved::Ambiguous),
        (None, _) => Err(Unresolved::ContainerMismatch),
    }
}

/// The host tid of thread `reported` (as the process sees it) of host process `pid`: a live
/// thread of that process, or, for a process of the host's own namespace, the id itself.
pub fn host_tid(proc_root: &Path, pid: u32, reported: u32) -> Option<u32> {
    let task = proc_root.join(pid.to_string()).join("task");
    if let Some(ns) = ns_pids(&task.join(reported.to_string()).join("status")) {
        if ns.len() == 1 {
            return Some(reported);
        }
    }
    let found = std::fs::read_dir(&task).ok()?.flatten().find_map(|e| {
        let tid: u32 = e.file_name().to_str()?.parse().ok()?;
        let ns = ns_pids(&e.path().join("status"))?;
        (ns.last() == Some(&reported)).then_some(tid)
    });
    // The thread may have ended before its span arrived: in the host's own namespace its id
    // is still the kernel's, so it still names the right events.
    found.or_else(|| {
        let ns = ns_pids(&proc_root.join(pid.to_string()).join("status"))?;
        (ns.len() == 1).then_some(reported)
    })
}

/// The process owning the local end `peer` of a TCP connection on this host (the sender of an
/// OTLP request, seen from the receiver). `None` when no local socket has that address.
pub fn pid_of_peer(proc_root: &Path, peer: SocketAddr) -> Option<u32> {
    let inode = ["net/tcp", "net/tcp6"]
        .iter()
        .find_map(|f| socket_inode(&std::fs::read_to_string(proc_root.join(f)).ok()?, peer))?;
    let needle = format!("socket:[{inode}]");
    pids(proc_root).find(|pid| {
        std::fs::read_dir(proc_root.join(pid.to_string()).join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == needle.as_str()))
    })
}

/// The inode of the socket whose local address is `addr`, from `/proc/net/tcp{,6}` text.
pub fn socket_inode(table: &str, addr: SocketAddr) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local = parse_hex_addr(f.get(1)?)?;
        (local == addr || same_v4_mapped(local, addr)).then(|| f.get(9)?.parse().ok())?
    })
}

fn same_v4_mapped(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |s: SocketAddr| match s.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(s, |v4| SocketAddr::new(IpAddr::V4(v4), s.port())),
        IpAddr::V4(_) => s,
    };
    canon(a) == canon(b)
}

/// `0100007F:1F90` (IPv4, little-endian words) or the 32-hex-digit IPv6 form, as the kernel
/// prints them.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.swap_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16)
                    .ok()?
                    .swap_bytes();
                chunk.copy_from_slice(&word.to_be_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kotel_testkit::proc_tree::{self, CONTAINER_ID, CONTAINER_NS_PID, CONTAINER_PID, HOST_PID};
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    /// A container id that no fixture process has.
    const OTHER_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// kotel-testkit's fixture `/proc` (a host process, a container's process calling itself
    /// [`CONTAINER_NS_PID`]), in a directory of this test's own, plus `extra` processes:
    /// (host pid, `NSpid` line, container id).
    fn fixture(test: &str, extra: &[(u32, &str, Option<&str>)]) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("kotel-resolve-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        proc_tree::write(&root).unwrap();
        for &(pid, nspid, container) in extra {
            let dir = root.join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("status"), format!("Name:\tapp\nNSpid:\t{nspid}\n")).unwrap();
            let cgroup = container.map_or("0::/user.slice\n".to_string(), |id| {
                format!("0::/system.slice/docker-{id}.scope\n")
            });
            std::fs::write(dir.join("cgroup"), cgroup).unwrap();
        }
        root
    }

    #[test]
    fn a_pid_no_process_calls_itself_is_gone() {
        let root = fixture("gone", &[]);
        assert_eq!(host_pid(&root, 9, None, None), Err(Unresolved::Gone));
        assert_eq!(
            host_pid(&root, 9, None, Some(HOST_PID)),
            Err(Unresolved::Gone),
            "the connection's owner is not the process the resource names"
        );
        std::fs::remove_dir_all(&root).unwrap();

        // A real process, reaped: its pid names nothing any more.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        assert!(child.wait().unwrap().success());
        assert_eq!(
            host_pid(Path::new("/proc"), pid, None, None),
            Err(Unresolved::Gone)
        );
    }

    #[test]
    fn a_process_outside_the_named_container_is_a_mismatch() {
        let root = fixture("container", &[]);
        assert_eq!(
            host_pid(&root, CONTAINER_NS_PID, Some(CONTAINER_ID), None),
            Ok(CONTAINER_PID)
        );
        assert_eq!(
            host_pid(&root, CONTAINER_NS_PID, Some(OTHER_ID), None),
            Err(Unresolved::ContainerMismatch)
        );
        assert_eq!(
            host_pid(&root, HOST_PID, Some(CONTAINER_ID), None),
            Err(Unresolved::ContainerMismatch),
            "a host process is in no container"
        );
        assert_eq!(
            host_pid(&root, CONTAINER_NS_PID, Some(OTHER_ID), Some(CONTAINER_PID)),
            Err(Unresolved::ContainerMismatch),
            "the connection's owner must be in the container too"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn two_processes_calling_themselves_the_same_pid_are_ambiguous() {
        // A second container whose process also calls itself 7.
        let root = fixture("ambiguous", &[(300, "300\t7", Some(OTHER_ID))]);
        assert_eq!(
            host_pid(&root, CONTAINER_NS_PID, None, None),
            Err(Unresolved::Ambiguous)
        );
        assert_eq!(
            host_pid(&root, CONTAINER_NS_PID, Some(CONTAINER_ID), None),
            Ok(CONTAINER_PID),
            "container.id tells them apart"
        );
        assert_eq!(
            host_pid(&root, CONTAINER_NS_PID, Some(OTHER_ID), None),
            Ok(300)
        );
        assert_eq!(
            host_pid(&root, CONTAINER_NS_PID, None, Some(300)),
            Ok(300),
            "so does the connection's owner"
        );
        std::fs::remove_dir_all(&root).unwrap();

        // The host's own process 7 and a container's: a container's `process.pid` must not
        // become a host process.
        let root = fixture("ambiguous-host", &[(7, "7", None)]);
        assert_eq!(
            host_pid(&root, CONTAINER_NS_PID, None, None),
            Err(Unresolved::Ambiguous)
        );
        assert_eq!(
            host_pid(&root, CONTAINER_NS_PID, Some(CONTAINER_ID), None),
            Ok(CONTAINER_PID)
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn only_numbers_a_kernel_can_give_are_pids() {
        for bad in [0, -1, i64::from(PID_MAX_LIMIT) + 1, i64::MAX, i64::MIN] {
            assert_eq!(valid_pid(bad), Err(Unresolved::Invalid), "{bad}");
        }
        assert_eq!(valid_pid(1), Ok(1));
        assert_eq!(valid_pid(i64::from(PID_MAX_LIMIT)), Ok(PID_MAX_LIMIT));
    }

    #[test]
    fn reasons_have_distinct_names_in_index_order() {
        let mut names = std::collections::HashSet::new();
        for (i, why) in Unresolved::ALL.iter().enumerate() {
            assert_eq!(why.index(), i);
            assert!(names.insert(why.as_str()), "{why:?}");
            assert_eq!(
                why.summary_key(),
                format!("link_unresolved_{}", why.as_str())
            );
        }
    }

    #[test]
    fn kernel_address_forms_parse() {
        assert_eq!(
            parse_hex_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_hex_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_hex_addr("zz:1"), None);
    }

    /// A real loopback connection: the client socket's owner is this very process.
    #[test]
    fn the_peer_of_a_local_connection_is_found() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server_side, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(
            pid_of_peer(Path::new("/proc"), peer),
            Some(std::process::id())
        );
        drop(client);
        let mut buf = Vec::new();
        let _ = server_side.read_to_end(&mut buf);
    }

    #[test]
    fn our_own_pid_and_threads_resolve_to_themselves() {
        let me = std::process::id();
        let root = Path::new("/proc");
        assert_eq!(host_pid(root, me, None, None), Ok(me));
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        assert_eq!(host_tid(root, me, tid), Some(tid));
        // A thread that is gone keeps its id in the host namespace.
        assert_eq!(host_tid(root, me, u32::MAX), Some(u32::MAX));
    }
}
