#!/usr/bin/env python3
"""What `kotel run` with its defaults writes, per second: spans (how many of them are of
kernel threads, by the PF_KTHREAD flag in /proc/<pid>/stat, and how many are off-CPU spans in
each `kotel.offcpu.state`) and bytes, for this build and, with KOTEL_BASE_BIN, for another one,
and for this build with other flags (KOTEL_VARIANTS), rounds interleaved. For the off-CPU
spans in an interruptible wait it also gives the share at or above 100 ms, 1 s and 10 s: what a
sleep threshold there would keep (measure it with `--sleep-threshold 0`, which reports them
all).

With KOTEL_LOAD=nginx each run happens while wrk (1 thread, 8 connections) loads nginx
(Debian's nginx-light, one worker, a 2 768-byte page) over loopback, as scripts/bench-host.sh
does. The processes with the most spans are listed by name.

Run as root after `cargo build --release -p kotel-collector` (KOTEL_BIN picks another binary,
e.g. target/debug/kotel):
    python3 scripts/span_volume.py [seconds] [rounds]
    KOTEL_BASE_BIN=/path/to/other/kotel python3 scripts/span_volume.py 10 3
    KOTEL_VARIANTS='--sleep-threshold 0;--sleep-threshold off' python3 scripts/span_volume.py
    KOTEL_LOAD=nginx python3 scripts/span_volume.py 10 3
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KOTEL = Path(os.environ.get("KOTEL_BIN", ROOT / "target" / "release" / "kotel"))
PF_KTHREAD = 0x0020_0000
SLEEP_CUTS_NS = {"100ms": 100_000_000, "1s": 1_000_000_000, "10s": 10_000_000_000}


def is_kernel_thread(pid: int) -> bool | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    flags = int(stat[stat.rfind(")") + 1 :].split()[6])
    return bool(flags & PF_KTHREAD)


def span_state(span: dict) -> str | None:
    for a in span.get("attributes", []):
        if a["key"] == "kotel.offcpu.state":
            return a["value"].get("stringValue")
    return None


NGINX_CONF = """worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path {tmp}/body;
  server {{
    listen 127.0.0.1:{port};
    root {tmp}/www;
  }}
}}
"""


@contextlib.contextmanager
def nginx():
    """nginx on a free loopback port; yields the page's URL."""
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install nginx-light wrk")
    with tempfile.TemporaryDirectory() as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        Path(tmp, "www").mkdir()
        Path(tmp, "www", "index.html").write_text(("<p>kotel bench page</p>\n" * 200)[:2768])
        os.chmod(tmp, 0o755)
        os.chmod(Path(tmp, "www"), 0o755)
        conf = Path(tmp, "nginx.conf")
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=port))
        subprocess.run(["nginx", "-c", str(conf), "-e", f"{tmp}/error.log"], check=True)
        try:
            yield f"http://127.0.0.1:{port}/index.html"
        finally:
            pid = Path(tmp, "nginx.pid")
            if pid.exists():
                os.kill(int(pid.read_text()), 3)  # SIGQUIT: graceful


def resource_name(attrs: dict) -> str:
    for key in ("process.executable.name", "service.name"):
        if key in attrs:
            return attrs[key].get("stringValue", "?")
    return "?"


def one_run(binary: Path, extra: list[str], seconds: int, url: str | None) -> dict:
    with tempfile.TemporaryDirectory() as out:
        load = None
        if url:
            load = subprocess.Popen(["wrk", "-t1", "-c8", f"-d{seconds}s", url],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(
            [str(binary), "run", "--duration", f"{seconds}s", "--out", out, "--telemetry", "none",
             *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        if load:
            load.wait()
        spans = kthread = 0
        by_process: collections.Counter[str] = collections.Counter()
        by_state = {"interruptible": 0, "uninterruptible": 0}
        sleeps_ns: list[int] = []
        traces = Path(out) / "traces.jsonl"
        # No span at all (a quiet run): no file.
        lines = traces.read_text().splitlines() if traces.exists() else []
        for line in lines:
            for rs in json.loads(line).get("resourceSpans", []):
                attrs = {a["key"]: a["value"] for a in rs.get("resource", {}).get("attributes", [])}
                pid = int(attrs.get("process.pid", {}).get("intValue", 0))
                mine = [s for ss in rs.get("scopeSpans", []) for s in ss.get("spans", [])]
                spans += len(mine)
                by_process[resource_name(attrs)] += len(mine)
                if is_kernel_thread(pid):
                    kthread += len(mine)
                for s in mine:
                    state = span_state(s)
                    if state in by_state:
                        by_state[state] += 1
                    if state == "interruptible":
                        sleeps_ns.append(int(s["endTimeUnixNano"]) - int(s["startTimeUnixNano"]))
        written = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    result = {
        "spans_per_s": spans / seconds,
        "kernel_thread_spans_per_s": kthread / seconds,
        "offcpu_interruptible_spans_per_s": by_state["interruptible"] / seconds,
        "offcpu_uninterruptible_spans_per_s": by_state["uninterruptible"] / seconds,
        "bytes_per_s": written / seconds,
        "top_processes": dict(by_process.most_common(6)),
    }
    for name, cut in SLEEP_CUTS_NS.items():
        kept = sum(1 for d in sleeps_ns if d >= cut)
        share = kept / len(sleeps_ns) if sleeps_ns else 0.0
        result[f"interruptible_share_at_or_above_{name}"] = share
    return result


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root (BPF)")
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    builds: dict[str, tuple[Path, list[str]]] = {"this": (KOTEL, [])}
    if os.environ.get("KOTEL_BASE_BIN"):
        builds = {"base": (Path(os.environ["KOTEL_BASE_BIN"]), []), **builds}
    for variant in filter(None, os.environ.get("KOTEL_VARIANTS", "").split(";")):
        builds[f"this {variant.strip()}"] = (KOTEL, shlex.split(variant))
    runs: dict[str, list[dict]] = {name: [] for name in builds}
    load = os.environ.get("KOTEL_LOAD", "")
    if load not in ("", "nginx"):
        raise SystemExit(f"KOTEL_LOAD={load!r}: only nginx is known")
    with nginx() if load else contextlib.nullcontext() as url:
        for _ in range(rounds):
            for name, (binary, extra) in builds.items():
                runs[name].append(one_run(binary, extra, seconds, url))
    result = {
        name: {
            k: round(statistics.median(r[k] for r in rs), 3)
            for k in rs[0]
            if k != "top_processes"
        }
        | {"top_processes_last_round": rs[-1]["top_processes"]}
        for name, rs in runs.items()
    }
    print(json.dumps({"seconds": seconds, "rounds": rounds, "load": load or "idle",
                      "median": result}, indent=2))


if __name__ == "__main__":
    main()
