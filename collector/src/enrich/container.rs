//! Container ids and Kubernetes pod UIDs recognised in cgroup paths, as pure functions of one
//! `/proc/<pid>/cgroup` line.
//!
//! Both functions accept either a whole line (`0::/docker/<id>`, `4:memory:/kubepods/…`) or a
//! bare path, and scan its segments from the innermost outwards, so a container nested in
//! another (kind, docker-in-docker) yields the innermost one: the same id the application's own
//! OpenTelemetry SDK reports from inside its cgroup namespace.

/// Length of a container id in hex digits.
const CONTAINER_ID_LEN: usize = 64;

/// Prefixes of systemd scope names (and their cgroupfs twins) that wrap a container id.
const SCOPE_PREFIXES: &[&str] = &["docker-", "cri-containerd-", "crio-", "libpod-"];

/// The 64-hex container id in a cgroup line, lowercased.
///
/// Recognises docker (`/docker/<id>`, `/system.slice/docker-<id>.scope`), containerd and CRI
/// (`/kubepods/burstable/pod<uid>/<id>`, `…/cri-containerd-<id>.scope`,
/// `…pod<uid>.slice:cri-containerd:<id>`), cri-o (`crio-<id>.scope`) and podman
/// (`libpod-<id>.scope`), also below further path segments. The cri-o and podman monitor
/// processes (`crio-conmon-<id>.scope`, `libpod-conmon-<id>.scope`) are not in the container and
/// yield `None`, as does anything that is not exactly 64 hex digits.
pub fn container_id_from_cgroup(path: &str) -> Option<String> {
    for piece in pieces(cgroup_path(path)).rev() {
        let name = piece.strip_suffix(".scope").unwrap_or(piece);
        if is_hex(name, CONTAINER_ID_LEN) {
            return Some(name.to_ascii_lowercase());
        }
        for prefix in SCOPE_PREFIXES {
            if let Some(rest) = name.strip_prefix(prefix) {
                if rest.starts_with("conmon-") {
                    return None;
                }
                if is_hex(rest, CONTAINER_ID_LEN) {
                    return Some(rest.to_ascii_lowercase());
                }
            }
        }
    }
    None
}

/// The Kubernetes pod UID in a cgroup line under `kubepods`, lowercased, in its usual dashed
/// form.
///
/// Recognises the cgroupfs driver (`/kubepods/besteffort/pod<uid>/…`, with the UID as is) and
/// the systemd driver (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/…`
/// where the UID's dashes are written as underscores), including a kubelet cgroup root such as
/// kind's `kubelet-kubepods-…`. The UID must have the 8-4-4-4-12 hex shape.
pub fn pod_uid_from_cgroup(path: &str) -> Option<String> {
    let path = cgroup_path(path);
    let mut under_kubepods = false;
    let mut found = None;
    for piece in pieces(path) {
        let name = piece.strip_suffix(".slice").unwrap_or(piece);
        let candidate = if let Some(rest) = name.strip_prefix("pod") {
            under_kubepods.then_some(rest)
        } else {
            // systemd: `kubepods-<qos>-pod<uid>`, `kubepods-pod<uid>`, `kubelet-kubepods-…`.
            name.rfind("-pod")
                .filter(|&at| name[..at].contains("kubepods"))
                .map(|at| &name[at + "-pod".len()..])
        };
        if let Some(uid) = candidate.and_then(normalise_uid) {
            found = Some(uid);
        }
        if name.contains("kubepods") {
            under_kubepods = true;
        }
    }
    found
}

/// The path part of a cgroup line: what follows `<hierarchy-id>:<controllers>:` when the line
/// starts with a hierarchy number, else the input itself.
fn cgroup_path(line: &str) -> &str {
    let line = line.trim();
    let mut fields = line.splitn(3, ':');
    match (fields.next(), fields.next(), fields.next()) {
        (Some(id), Some(_controllers), Some(path))
            if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) =>
        {
            path
        }
        _ => line,
    }
}

/// The non-empty path segments, with a segment such as `x.slice:cri-containerd:<id>` split at
/// its colons, outermost first.
fn pieces(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/')
        .flat_map(|segment| segment.split(':'))
        .filter(|piece| !piece.is_empty())
}

/// Whether `s` is exactly `len` ASCII hex digits.
fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A UID with dashes or (systemd) underscores, checked for the 8-4-4-4-12 hex shape and
/// returned lowercased with dashes.
fn normalise_uid(raw: &str) -> Option<String> {
    let uid: String = raw
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    let groups: Vec<&str> = uid.split('-').collect();
    let shape = [8, 4, 4, 4, 12];
    let valid = groups.len() == shape.len()
        && groups
            .iter()
            .zip(shape)
            .all(|(group, len)| is_hex(group, len));
    valid.then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "0f3a5c9e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19";
    const OTHER: &str = "aaaabbbbccccddddeeeeffff0000111122223333444455556666777788889999";
    const UID: &str = "1f9c2b3a-4d5e-6f70-8192-a3b4c5d6e7f8";
    const UID_SYSTEMD: &str = "1f9c2b3a_4d5e_6f70_8192_a3b4c5d6e7f8";

    fn id(line: &str) -> Option<String> {
        container_id_from_cgroup(line)
    }

    fn uid(line: &str) -> Option<String> {
        pod_uid_from_cgroup(line)
    }

    #[test]
    fn docker_cgroupfs() {
        assert_eq!(id(&format!("/docker/{ID}")).as_deref(), Some(ID));
        assert_eq!(id(&format!("12:memory:/docker/{ID}")).as_deref(), Some(ID));
        assert_eq!(id(&format!("0::/docker/{ID}/")).as_deref(), Some(ID));
    }

    #[test]
    fn docker_systemd() {
        assert_eq!(
            id(&format!("0::/system.slice/docker-{ID}.scope")).as_deref(),
            Some(ID)
        );
        assert_eq!(
            id(&format!("1:name=systemd:/system.slice/docker-{ID}.scope")).as_deref(),
            Some(ID)
        );
        // systemd running inside the container adds its own cgroups below the scope.
        assert_eq!(
            id(&format!("0::/system.slice/docker-{ID}.scope/init.scope")).as_deref(),
            Some(ID)
        );
    }

    #[test]
    fn containerd_cgroupfs_under_kubepods() {
        for qos in ["", "burstable/", "besteffort/"] {
            let line = format!("0::/kubepods/{qos}pod{UID}/{ID}");
            assert_eq!(id(&line).as_deref(), Some(ID), "{line}");
        }
    }

    #[test]
    fn containerd_systemd() {
        let line = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(id(&line).as_deref(), Some(ID));
        // containerd's own systemd form: `<slice>:cri-containerd:<id>`.
        let line = format!(
            "0::/system.slice/containerd.service/kubepods-burstable-pod{UID_SYSTEMD}.slice:cri-containerd:{ID}"
        );
        assert_eq!(id(&line).as_deref(), Some(ID));
    }

    #[test]
    fn crio_and_not_its_monitor() {
        let pod = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice"
        );
        assert_eq!(
            id(&format!("0::{pod}/crio-{ID}.scope")).as_deref(),
            Some(ID)
        );
        assert_eq!(
            id(&format!("0::{pod}/crio-{ID}.scope/container")).as_deref(),
            Some(ID)
        );
        assert_eq!(id(&format!("0::{pod}/crio-conmon-{ID}.scope")), None);
    }

    #[test]
    fn podman_and_not_its_monitor() {
        assert_eq!(
            id(&format!("0::/machine.slice/libpod-{ID}.scope")).as_deref(),
            Some(ID)
        );
        assert_eq!(
            id(&format!("0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container")).as_deref(),
            Some(ID)
        );
        assert_eq!(
            id(&format!("0::/machine.slice/libpod-conmon-{ID}.scope")),
            None
        );
    }

    #[test]
    fn nested_yields_the_innermost() {
        assert_eq!(
            id(&format!("0::/docker/{OTHER}/docker/{ID}")).as_deref(),
            Some(ID)
        );
        let kind = format!(
            "0::/docker/{OTHER}/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(id(&kind).as_deref(), Some(ID));
        assert_eq!(uid(&kind).as_deref(), Some(UID));
    }

    #[test]
    fn uppercase_is_lowercased() {
        let upper = ID.to_ascii_uppercase();
        assert_eq!(id(&format!("/docker/{upper}")).as_deref(), Some(ID));
        assert_eq!(
            uid(&format!("/kubepods/pod{}/x", UID.to_ascii_uppercase())).as_deref(),
            Some(UID)
        );
    }

    #[test]
    fn ids_of_the_wrong_shape_are_rejected() {
        assert_eq!(id(&format!("/docker/{}", &ID[..63])), None);
        assert_eq!(id(&format!("/docker/{ID}0")), None);
        assert_eq!(id(&format!("/docker/{}g", &ID[..63])), None);
        assert_eq!(id(&format!("/system.slice/docker-{ID}0.scope")), None);
        assert_eq!(id(&format!("/system.slice/rkt-{ID}.scope")), None);
        assert_eq!(id("0::/"), None);
        assert_eq!(id("0::/user.slice/user-1000.slice/session-3.scope"), None);
        assert_eq!(id("0::/system.slice/docker.service"), None);
        assert_eq!(id(""), None);
        // A multi-byte character right where an id would end must not confuse slicing.
        assert_eq!(id(&format!("/docker/{}é", &ID[..62])), None);
    }

    #[test]
    fn pod_uid_cgroupfs() {
        for qos in ["", "burstable/", "besteffort/"] {
            let line = format!("4:cpu,cpuacct:/kubepods/{qos}pod{UID}/{ID}");
            assert_eq!(uid(&line).as_deref(), Some(UID), "{line}");
        }
        // The pod cgroup itself (the sandbox's parent).
        assert_eq!(uid(&format!("0::/kubepods/pod{UID}")).as_deref(), Some(UID));
    }

    #[test]
    fn pod_uid_systemd() {
        let burstable = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(uid(&burstable).as_deref(), Some(UID));
        let guaranteed =
            format!("0::/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/crio-{ID}.scope");
        assert_eq!(uid(&guaranteed).as_deref(), Some(UID));
        let containerd = format!(
            "0::/system.slice/containerd.service/kubepods-besteffort-pod{UID_SYSTEMD}.slice:cri-containerd:{ID}"
        );
        assert_eq!(uid(&containerd).as_deref(), Some(UID));
    }

    #[test]
    fn pod_uid_needs_kubepods_and_a_uuid_shape() {
        assert_eq!(uid(&format!("0::/docker/{ID}")), None);
        // `pod<uid>` outside kubepods is not a Kubernetes pod.
        assert_eq!(uid(&format!("0::/somewhere/pod{UID}/{ID}")), None);
        assert_eq!(
            uid(&format!("0::/system.slice/other-pod{UID_SYSTEMD}.slice")),
            None
        );
        // Wrong shapes.
        assert_eq!(uid("0::/kubepods/besteffort/pod1234/x"), None);
        assert_eq!(uid(&format!("0::/kubepods/pod{}/x", &UID[..35])), None);
        assert_eq!(uid(&format!("0::/kubepods/pod{UID}0/x")), None);
        assert_eq!(
            uid(&format!("0::/kubepods/pod{}/x", UID.replace('-', ""))),
            None
        );
        assert_eq!(uid("0::/kubepods/burstable"), None);
        assert_eq!(uid(""), None);
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC*") {
            let _ = container_id_from_cgroup(&s);
            let _ = pod_uid_from_cgroup(&s);
        }

        #[test]
        fn cgroup_shaped_strings_never_panic(
            s in "[0-9]{0,2}:?[a-z,=]{0,8}:?(/[a-z0-9_.:é-]{0,70}){0,6}"
        ) {
            let _ = container_id_from_cgroup(&s);
            let _ = pod_uid_from_cgroup(&s);
        }

        #[test]
        fn any_id_is_found_in_every_form(
            raw in "[0-9a-fA-F]{64}",
            form in 0usize..6,
            below in prop::option::of("[a-z]{1,8}(\\.scope)?"),
        ) {
            let path = match form {
                0 => format!("/docker/{raw}"),
                1 => format!("/system.slice/docker-{raw}.scope"),
                2 => format!("/kubepods/burstable/pod{UID}/{raw}"),
                3 => format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{raw}.scope"),
                4 => format!("/kubepods.slice/crio-{raw}.scope"),
                _ => format!("/machine.slice/libpod-{raw}.scope"),
            };
            let path = match below {
                Some(child) => format!("0::{path}/{child}"),
                None => format!("0::{path}"),
            };
            let expected = raw.to_ascii_lowercase();
            prop_assert_eq!(container_id_from_cgroup(&path), Some(expected));
        }
    }
}
