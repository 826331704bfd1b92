#!/usr/bin/env python3
"""What `kotel run` with its defaults writes, per second: spans (and how many of them are of
kernel threads, by the PF_KTHREAD flag in /proc/<pid>/stat) and bytes, for this build and,
with KOTEL_BASE_BIN, for another one, rounds interleaved.

Run as root after `cargo build --release -p kotel-collector`:
    python3 scripts/span_volume.py [seconds] [rounds]
    KOTEL_BASE_BIN=/path/to/other/kotel python3 scripts/span_volume.py 10 3
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KOTEL = ROOT / "target" / "release" / "kotel"
PF_KTHREAD = 0x0020_0000


def is_kernel_thread(pid: int) -> bool | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    flags = int(stat[stat.rfind(")") + 1 :].split()[6])
    return bool(flags & PF_KTHREAD)


def one_run(binary: Path, seconds: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [str(binary), "run", "--duration", f"{seconds}s", "--out", out, "--telemetry", "none"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        spans = kthread = 0
        for line in (Path(out) / "traces.jsonl").read_text().splitlines():
            for rs in json.loads(line).get("resourceSpans", []):
                attrs = {a["key"]: a["value"] for a in rs.get("resource", {}).get("attributes", [])}
                pid = int(attrs.get("process.pid", {}).get("intValue", 0))
                n = sum(len(ss.get("spans", [])) for ss in rs.get("scopeSpans", []))
                spans += n
                if is_kernel_thread(pid):
                    kthread += n
        written = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    return {
        "spans_per_s": spans / seconds,
        "kernel_thread_spans_per_s": kthread / seconds,
        "bytes_per_s": written / seconds,
    }


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root (BPF)")
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    builds = {"this": KOTEL}
    if os.environ.get("KOTEL_BASE_BIN"):
        builds = {"base": Path(os.environ["KOTEL_BASE_BIN"]), **builds}
    runs: dict[str, list[dict]] = {name: [] for name in builds}
    for _ in range(rounds):
        for name, binary in builds.items():
            runs[name].append(one_run(binary, seconds))
    result = {
        name: {k: round(statistics.median(r[k] for r in rs), 1) for k in rs[0]}
        for name, rs in runs.items()
    }
    print(json.dumps({"seconds": seconds, "rounds": rounds, "median": result}, indent=2))


if __name__ == "__main__":
    main()
