//! A small `/proc` tree for tests of what kotel reads there (pid namespaces, threads, cgroups,
//! socket owners): two processes, one on the host and one in a container.
//!
//! - pid [`HOST_PID`] in the host's pid namespace, threads [`HOST_PID`] and [`HOST_THREAD`],
//!   cgroup `/user.slice`, owning (as its fd 3) a TCP socket bound to [`PEER`];
//! - pid [`CONTAINER_PID`] in a container: `NSpid` [`CONTAINER_PID`] [`CONTAINER_NS_PID`],
//!   threads [`CONTAINER_PID`] (7 inside) and [`CONTAINER_THREAD`] (8 inside), a docker
//!   cgroup of container [`CONTAINER_ID`].
//!
//! Both are named `app`.

use std::path::Path;

/// The host process.
pub const HOST_PID: u32 = 100;
/// The host process's second thread.
pub const HOST_THREAD: u32 = 101;
/// The container's process, as the host sees it.
pub const CONTAINER_PID: u32 = 200;
/// The container's process's second thread, as the host sees it (8 inside).
pub const CONTAINER_THREAD: u32 = 201;
/// The container's process, as the container sees it.
pub const CONTAINER_NS_PID: u32 = 7;
/// The container id of [`CONTAINER_PID`].
pub const CONTAINER_ID: &str = "4e1f6f4c4b6d2a1f0c9e8d7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f";
/// The local address of [`HOST_PID`]'s TCP socket: the peer a server it is connected to sees,
/// so a lookup of that peer finds the process.
pub const PEER: &str = "127.0.0.1:40000";

/// Writes the tree under `root` (created if missing; files already there are overwritten).
pub fn write(root: &Path) -> std::io::Result<()> {
    let write = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("a path under root has a parent"))?;
        std::fs::write(p, text)
    };
    for (pid, tasks, ns) in [
        (HOST_PID, [(HOST_PID, "100"), (HOST_THREAD, "101")], ""),
        (
            CONTAINER_PID,
            [(CONTAINER_PID, "200\t7"), (CONTAINER_THREAD, "201\t8")],
            "\t7",
        ),
    ] {
        write(
            &format!("{pid}/status"),
            &format!("Name:\tapp\nNSpid:\t{pid}{ns}\n"),
        )?;
        write(&format!("{pid}/comm"), "app\n")?;
        for (tid, nspid) in tasks {
            write(
                &format!("{pid}/task/{tid}/status"),
                &format!("Name:\tapp\nNSpid:\t{nspid}\n"),
            )?;
        }
    }
    write(
        &format!("{CONTAINER_PID}/cgroup"),
        &format!("0::/system.slice/docker-{CONTAINER_ID}.scope\n"),
    )?;
    write(&format!("{HOST_PID}/cgroup"), "0::/user.slice\n")?;
    // From 127.0.0.1:40000 (0x9C40) to 127.0.0.1:4286, established, inode 777.
    write(
        "net/tcp",
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
         0: 0100007F:9C40 0100007F:10BE 01 00000000:00000000 00:00000000 00000000     0        0 777 1\n",
    )?;
    write("net/tcp6", "  sl  local_address\n")?;
    let fd = root.join(format!("{HOST_PID}/fd"));
    std::fs::create_dir_all(&fd)?;
    match std::os::unix::fs::symlink("socket:[777]", fd.join("3")) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_names_both_processes_and_the_socket_owner() {
        let root = std::env::temp_dir().join(format!("kotel-proc-tree-{}", std::process::id()));
        write(&root).unwrap();
        write(&root).unwrap(); // again over itself: fine
        let status = std::fs::read_to_string(root.join("200/status")).unwrap();
        assert!(status.contains("NSpid:\t200\t7"), "{status}");
        let cgroup = std::fs::read_to_string(root.join("200/cgroup")).unwrap();
        assert!(cgroup.contains(CONTAINER_ID), "{cgroup}");
        let link = std::fs::read_link(root.join("100/fd/3")).unwrap();
        assert_eq!(link, Path::new("socket:[777]"));
        let tcp = std::fs::read_to_string(root.join("net/tcp")).unwrap();
        let port = u16::from_str_radix("9C40", 16).unwrap();
        assert_eq!(PEER, format!("127.0.0.1:{port}"));
        assert!(
            tcp.contains("0100007F:9C40") && tcp.contains(" 777 "),
            "{tcp}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
