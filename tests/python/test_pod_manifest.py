"""``pod_manifest``: the DaemonSet's pod template becomes podman flags carrying exactly its
privileges, and a field it does not know stops it. No root, no podman."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

import pod_manifest as pm


def plan(ds: dict, tmp_path: Path, agent_args: list[str] | None = None) -> pm.PodPlan:
    cm = pm.load_manifests()[1]
    site = pm.Site(
        image="localhost/kotel:test", pod_name="p", node_name="node-a", pod_ip="10.1.2.3",
        volume_root=tmp_path, agent_args=agent_args or [], ulimits=["nofile=1024:1024"],
    )
    return pm.plan(ds, cm, site)


def flag_values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]


def test_the_agent_gets_exactly_the_manifests_privileges(tmp_path) -> None:
    ds = pm.load_manifests()[0]
    c = pm.agent_container(ds)
    sc = c["securityContext"]
    args = plan(ds, tmp_path).containers["kotel"]
    assert flag_values(args, "--cap-drop") == ["ALL"]
    assert flag_values(args, "--cap-add") == [f"CAP_{x}" for x in sc["capabilities"]["add"]]
    assert flag_values(args, "--user") == [f"{sc['runAsUser']}:{sc['runAsGroup']}"]
    assert ("--read-only" in args) == sc["readOnlyRootFilesystem"]
    assert "--read-only-tmpfs=false" in args, "no tmpfs a Kubernetes pod would not have"
    assert ("no-new-privileges" in flag_values(args, "--security-opt")) == (
        sc["allowPrivilegeEscalation"] is False
    )
    assert "--privileged" not in args
    assert flag_values(args, "--pid") == (["host"] if ds["spec"]["template"]["spec"]["hostPID"] else [])
    mounts = {v.split(":")[1]: v.split(":")[2] for v in flag_values(args, "--volume")}
    assert mounts == {
        m["mountPath"]: "ro" if m.get("readOnly") or m["name"] == "config" else "rw"
        for m in c["volumeMounts"]
    }
    assert flag_values(args, "--ulimit") == ["nofile=1024:1024"]


def test_the_renderer_runs_unprivileged_and_the_downward_api_is_resolved(tmp_path) -> None:
    ds = pm.load_manifests()[0]
    args = plan(ds, tmp_path).containers["kotel-render"]
    assert flag_values(args, "--user") == ["65532:65532"]
    assert flag_values(args, "--cap-drop") == ["ALL"] and not flag_values(args, "--cap-add")
    assert "--public-url" in args and args[args.index("--public-url") + 1] == "http://10.1.2.3:4321"
    assert "POD_IP=10.1.2.3" in flag_values(args, "--env")


def test_agent_arguments_follow_the_manifests_command(tmp_path) -> None:
    ds = pm.load_manifests()[0]
    args = plan(ds, tmp_path, ["--pid", "7"]).containers["kotel"]
    c = pm.agent_container(ds)
    assert flag_values(args, "--entrypoint") == ['["kotel"]']
    assert args[-len(c["args"]) - 2:] == [*c["args"], "--pid", "7"]
    assert "KOTEL_NODE_NAME=node-a" in flag_values(args, "--env")


def test_the_configmap_lands_in_the_config_volume(tmp_path) -> None:
    ds, cm = pm.load_manifests()
    p = plan(ds, tmp_path)
    assert p.files == {tmp_path / "config" / "kotel.toml": cm["data"]["kotel.toml"]}


def test_variants_take_away_exactly_one_privilege(tmp_path) -> None:
    ds = pm.load_manifests()[0]
    full = plan(ds, tmp_path).containers["kotel"]
    for cap in pm.added_capabilities(ds):
        args = plan(pm.without_capability(ds, cap), tmp_path).containers["kotel"]
        assert set(flag_values(full, "--cap-add")) - set(flag_values(args, "--cap-add")) == {f"CAP_{cap}"}
    for volume in pm.agent_mounts(ds):
        args = plan(pm.without_mount(ds, volume), tmp_path).containers["kotel"]
        assert len(flag_values(full, "--volume")) - len(flag_values(args, "--volume")) == 1
    assert pm.added_capabilities(ds) == pm.added_capabilities(pm.load_manifests()[0]), "copies"


@pytest.mark.parametrize(
    "path, value",
    [
        (("securityContext", "procMount"), "Unmasked"),
        (("securityContext", "seccompProfile"), {"type": "Localhost", "localhostProfile": "x"}),
        (("lifecycle",), {"preStop": {}}),
        (("envFrom",), [{"secretRef": {"name": "s"}}]),
    ],
)
def test_a_field_it_does_not_know_stops_it(tmp_path, path, value) -> None:
    ds = copy.deepcopy(pm.load_manifests()[0])
    obj = pm.agent_container(ds)
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value
    with pytest.raises(pm.UnknownField):
        plan(ds, tmp_path)


def test_an_unknown_pod_field_or_volume_kind_stops_it(tmp_path) -> None:
    ds = copy.deepcopy(pm.load_manifests()[0])
    ds["spec"]["template"]["spec"]["hostNetwork"] = True
    with pytest.raises(pm.UnknownField):
        plan(ds, tmp_path)
    ds = copy.deepcopy(pm.load_manifests()[0])
    ds["spec"]["template"]["spec"]["volumes"].append({"name": "s", "secret": {"secretName": "x"}})
    with pytest.raises(pm.UnknownField):
        plan(ds, tmp_path)
