"""The DaemonSet's pod template as podman commands: ``deploy/kubernetes/daemonset.yaml`` and
``configmap.yaml`` turned into ``podman pod create`` and ``podman create`` argument lists, so
the container test (``test_container.py``) runs kotel with exactly the manifest's privileges.

Nothing about privileges is restated here: capabilities, user and group, read-only root,
``allowPrivilegeEscalation``, seccomp, ``hostPID``, mounts, environment, command and resource
limits are read from the manifest and translated field by field. A field this module does not
know stops the translation (``UnknownField``), so a manifest change either changes the test or
breaks it loudly; it is never ignored. Fields that only matter to a cluster (scheduling,
probes, the service account, the rolling update) are listed in ``CLUSTER_ONLY`` with the
reason they are left out.

``podman kube play`` would be the obvious tool, but podman 4.3 (Debian 12) ignores ``hostPID``
without a word, cannot resolve ``spec.nodeName``/``status.podIP`` and has no ulimit setting,
so the pod would run with other privileges than the manifest's.

What the test supplies (``Site``) and Kubernetes would otherwise decide: the image, the pod's
name and network namespace, the node name and pod IP behind the downward API, the directories
behind volumes, the runtime and ulimits, and extra arguments appended to the agent's command
(its flags override the ConfigMap's settings, e.g. the export endpoint).
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: The repository's manifests.
K8S_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"

#: Pod and container fields that mean something only to a cluster, and why each is left out.
CLUSTER_ONLY = {
    "serviceAccountName": "no API server here; kotel's pod-metadata watcher stays off",
    "automountServiceAccountToken": "no API server here",
    "tolerations": "scheduling",
    "terminationGracePeriodSeconds": "translated: --stop-timeout",
    "imagePullPolicy": "the image is built locally",
    "ports": "the test reaches the pod on its own loopback (no port mapping needed)",
    "startupProbe": "the test polls /healthz and /readyz itself",
    "livenessProbe": "the test polls /healthz itself",
    "readinessProbe": "the test polls /readyz itself",
}


class UnknownField(ValueError):
    """A manifest field this translation does not know: teach it, never skip it."""


@dataclass
class Site:
    """What the machine running the pod decides (Kubernetes' kubelet and CNI would)."""

    image: str
    pod_name: str
    node_name: str
    pod_ip: str
    #: Directory under which configMap and emptyDir volumes get their host directories.
    volume_root: Path
    #: Extra arguments appended to the command of the container named ``kotel``.
    agent_args: list[str] = field(default_factory=list)
    #: ``--ulimit`` values (``nofile=N:N``, ...): podman's defaults can exceed the host's.
    ulimits: list[str] = field(default_factory=list)
    #: The pod's network (``none``: its own namespace with only a loopback interface).
    network: str = "none"
    #: The seccomp profile (a file) that ``RuntimeDefault`` stands for; None: podman's own.
    runtime_default_seccomp: Path | None = None


@dataclass
class PodPlan:
    """Commands (podman arguments, without the leading ``podman``) that create the pod."""

    pod_create: list[str]
    #: Per container name, its ``podman create`` arguments.
    containers: dict[str, list[str]]
    #: Host directories to make before creating: path -> mode.
    directories: dict[Path, int]
    #: Files to write before creating: path -> text (the ConfigMap's keys).
    files: dict[Path, str]

    def container_name(self, name: str) -> str:
        """The podman name of the manifest's container ``name``."""
        return self.containers[name][self.containers[name].index("--name") + 1]


def load_manifests(k8s_dir: Path = K8S_DIR) -> tuple[dict, dict]:
    """The DaemonSet and the ConfigMap from ``k8s_dir``."""
    ds = _one(k8s_dir / "daemonset.yaml", "DaemonSet")
    cm = _one(k8s_dir / "configmap.yaml", "ConfigMap")
    return ds, cm


def _one(path: Path, kind: str) -> dict:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == kind]
    if len(docs) != 1:
        raise ValueError(f"{path}: expected one {kind}, found {len(docs)}")
    return docs[0]


# --------------------------------------------------------------------------------------------
# Variants: one privilege taken away
# --------------------------------------------------------------------------------------------


def agent_container(ds: dict) -> dict:
    """The container named ``kotel`` in the DaemonSet's pod template."""
    (c,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "kotel"]
    return c


def added_capabilities(ds: dict) -> list[str]:
    """The capabilities the agent container adds back."""
    return list(agent_container(ds)["securityContext"]["capabilities"].get("add", []))


def agent_mounts(ds: dict) -> list[str]:
    """The names of the agent container's volume mounts."""
    return [m["name"] for m in agent_container(ds).get("volumeMounts", [])]


def without_capability(ds: dict, cap: str) -> dict:
    """A copy of the DaemonSet whose agent container does not add ``cap``."""
    out = copy.deepcopy(ds)
    caps = agent_container(out)["securityContext"]["capabilities"]
    caps["add"] = [c for c in caps["add"] if c != cap]
    return out


def without_mount(ds: dict, volume: str) -> dict:
    """A copy of the DaemonSet whose agent container does not mount ``volume``."""
    out = copy.deepcopy(ds)
    c = agent_container(out)
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != volume]
    return out


# --------------------------------------------------------------------------------------------
# The translation
# --------------------------------------------------------------------------------------------

_POD_KEYS = {
    "containers", "volumes", "securityContext", "hostPID", *CLUSTER_ONLY,
}
_CONTAINER_KEYS = {
    "name", "image", "command", "args", "env", "securityContext", "resources", "volumeMounts",
    *CLUSTER_ONLY,
}
_SECURITY_KEYS = {
    "runAsUser", "runAsGroup", "runAsNonRoot", "privileged", "allowPrivilegeEscalation",
    "readOnlyRootFilesystem", "seccompProfile", "capabilities",
}


def plan(ds: dict, cm: dict, site: Site) -> PodPlan:
    """The podman commands that run ``ds``'s pod template on this machine (see module doc)."""
    pod = ds["spec"]["template"]["spec"]
    _known(pod, _POD_KEYS, "pod spec")
    volumes, directories, files = _volumes(pod.get("volumes", []), cm, site)
    create = ["pod", "create", "--name", site.pod_name, "--hostname", site.pod_name,
              "--network", site.network]
    labels = ds["spec"]["template"].get("metadata", {}).get("labels", {})
    for k, v in labels.items():
        create += ["--label", f"{k}={v}"]
    containers = {}
    for c in pod["containers"]:
        containers[c["name"]] = _container(c, pod, volumes, site)
    return PodPlan(create, containers, directories, files)


def _known(obj: dict, keys: set[str], where: str) -> None:
    unknown = sorted(set(obj) - keys)
    if unknown:
        raise UnknownField(
            f"{where}: {unknown} not translated to podman; teach tests/python/pod_manifest.py"
        )


def _volumes(volumes: list[dict], cm: dict, site: Site):
    """Volume name -> host path (and whether the volume itself is read-only), plus the
    directories and files to make for them."""
    out: dict[str, tuple[str, bool]] = {}
    directories: dict[Path, int] = {}
    files: dict[Path, str] = {}
    for v in volumes:
        name = v["name"]
        kinds = set(v) - {"name"}
        if kinds == {"configMap"}:
            if v["configMap"]["name"] != cm["metadata"]["name"]:
                raise ValueError(f"volume {name}: no ConfigMap {v['configMap']['name']!r}")
            _known(v["configMap"], {"name"}, f"volume {name} configMap")
            d = site.volume_root / name
            directories[d] = 0o755
            for key, text in cm["data"].items():
                files[d / key] = text
            out[name] = (str(d), True)  # configMap volumes are read-only in Kubernetes
        elif kinds == {"emptyDir"}:
            _known(v["emptyDir"], {"sizeLimit", "medium"}, f"volume {name} emptyDir")
            if v["emptyDir"].get("medium"):
                raise UnknownField(f"volume {name}: emptyDir medium not translated")
            d = site.volume_root / name
            directories[d] = 0o777  # the kubelet makes emptyDirs world-writable
            out[name] = (str(d), False)
        elif kinds == {"hostPath"}:
            _known(v["hostPath"], {"path", "type"}, f"volume {name} hostPath")
            path, kind = v["hostPath"]["path"], v["hostPath"].get("type", "")
            if kind == "Directory" and not os.path.isdir(path):
                raise ValueError(f"volume {name}: hostPath {path} is not a directory here")
            if kind not in ("", "Directory"):
                raise UnknownField(f"volume {name}: hostPath type {kind} not translated")
            out[name] = (path, False)
        else:
            raise UnknownField(f"volume {name}: {sorted(kinds)} not translated")
    return out, directories, files


def _container(c: dict, pod: dict, volumes: dict, site: Site) -> list[str]:
    name = c["name"]
    where = f"container {name}"
    _known(c, _CONTAINER_KEYS, where)
    args = ["create", "--pod", site.pod_name, "--name", f"{site.pod_name}-{name}",
            "--restart", "no"]
    if pod.get("hostPID"):
        args += ["--pid", "host"]
    if "terminationGracePeriodSeconds" in pod:
        args += ["--stop-timeout", str(pod["terminationGracePeriodSeconds"])]
    env = _env(c.get("env", []), site, where)
    for k, v in env.items():
        args += ["--env", f"{k}={v}"]
    args += _security(c.get("securityContext", {}), pod.get("securityContext", {}), where)
    seccomp = (c.get("securityContext", {}).get("seccompProfile")
               or pod.get("securityContext", {}).get("seccompProfile") or {})
    if seccomp.get("type", "RuntimeDefault") == "RuntimeDefault" and site.runtime_default_seccomp:
        args += ["--security-opt", f"seccomp={site.runtime_default_seccomp}"]
    args += _resources(c.get("resources", {}), where)
    for m in c.get("volumeMounts", []):
        _known(m, {"name", "mountPath", "readOnly"}, f"{where} volumeMount {m['name']}")
        host, volume_ro = volumes[m["name"]]
        ro = m.get("readOnly", False) or volume_ro
        args += ["--volume", f"{host}:{m['mountPath']}:{'ro' if ro else 'rw'}"]
    for u in site.ulimits:
        args += ["--ulimit", u]
    command = [_expand(a, env) for a in c.get("command", [])]
    cargs = [_expand(a, env) for a in c.get("args", [])]
    if name == "kotel":
        cargs += site.agent_args
    if command:
        args += ["--entrypoint", json.dumps(command)]
    return args + [site.image, *cargs]


def _env(entries: list[dict], site: Site, where: str) -> dict[str, str]:
    """The container's environment, the downward API resolved as the kubelet would."""
    fields = {
        "spec.nodeName": site.node_name,
        "status.podIP": site.pod_ip,
        "metadata.name": site.pod_name,
    }
    env: dict[str, str] = {}
    for e in entries:
        if "value" in e:
            env[e["name"]] = _expand(str(e["value"]), env)
            continue
        ref = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if ref not in fields:
            raise UnknownField(f"{where}: env {e['name']}: {e.get('valueFrom')} not translated")
        env[e["name"]] = fields[ref]
    return env


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command, args and env values (``$$`` escapes)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]),
        text,
    )


def _security(sc: dict, pod_sc: dict, where: str) -> list[str]:
    _known(sc, _SECURITY_KEYS, f"{where} securityContext")
    _known(pod_sc, {"seccompProfile"}, "pod securityContext")
    args = []
    user, group = sc.get("runAsUser"), sc.get("runAsGroup")
    if sc.get("runAsNonRoot") and user in (None, 0):
        raise ValueError(f"{where}: runAsNonRoot with runAsUser {user}: the kubelet refuses it")
    if user is not None:
        args += ["--user", f"{user}:{group}" if group is not None else str(user)]
    if sc.get("privileged"):
        args += ["--privileged"]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if sc.get("readOnlyRootFilesystem"):
        # Kubernetes mounts no tmpfs on a read-only root; podman would add /tmp, /run, ...
        args += ["--read-only", "--read-only-tmpfs=false"]
    seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
    kind = seccomp.get("type", "RuntimeDefault")
    if kind == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    elif kind != "RuntimeDefault":
        raise UnknownField(f"{where}: seccompProfile {seccomp} not translated")
    caps = sc.get("capabilities", {})
    _known(caps, {"add", "drop"}, f"{where} capabilities")
    for cap in caps.get("drop", []):
        args += ["--cap-drop", cap if cap == "ALL" else f"CAP_{cap}"]
    for cap in caps.get("add", []):
        args += ["--cap-add", f"CAP_{cap}"]
    return args


def _resources(res: dict, where: str) -> list[str]:
    _known(res, {"requests", "limits"}, f"{where} resources")
    limits = res.get("limits", {})
    _known(limits, {"cpu", "memory"}, f"{where} resources.limits")
    args = []
    if "memory" in limits:
        args += ["--memory", _bytes(limits["memory"])]
    if "cpu" in limits:
        cpu = str(limits["cpu"])
        args += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
    return args


def _bytes(quantity: str) -> str:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    for suffix, mult in units.items():
        if quantity.endswith(suffix):
            return str(int(quantity[: -len(suffix)]) * mult)
    if quantity.isdigit():
        return quantity
    raise UnknownField(f"memory quantity {quantity!r} not translated")
