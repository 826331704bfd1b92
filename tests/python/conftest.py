"""Fixtures for kotel's Python OTLP tests: the built binaries, the real-BPF gate, an OTLP
receiver, the ``kotel-workload`` protocol and a running ``kotel run``.

The Rust end-to-end helpers (``tests/src/lib.rs``) do the same jobs for the Rust tests; these
follow the same conventions:

* binaries come from ``target/debug`` (or ``$CARGO_TARGET_DIR/debug``), built beforehand with
  ``cargo build --workspace --bins``;
* tests marked ``bpf`` need root and ``/sys/kernel/btf/vmlinux``. Without them they print one
  loud ``KOTEL-E2E SKIPPED`` line and skip; with ``KOTEL_REQUIRE_BPF=1`` they fail instead.

Every wait on a child process is bounded, and every child is killed at teardown if a test
left it running.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from otlp_receiver import OtlpReceiver

#: The repository root (this file is tests/python/conftest.py).
REPO_ROOT = Path(__file__).resolve().parents[2]

#: The stderr marker ``kotel run`` logs once its probes are attached.
ATTACHED_MARKER = "kotel.run.attached"

#: How long ``kotel run`` may take to attach, and to exit after SIGINT (it flushes first).
ATTACH_TIMEOUT = 60.0
EXIT_TIMEOUT = 30.0

#: How long the workload may take to print its pid, and to run once told to go.
WORKLOAD_TIMEOUT = 60.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "bpf: runs kotel with real BPF (root and kernel BTF); skips loudly without them, "
        "fails instead when KOTEL_REQUIRE_BPF=1",
    )


# --------------------------------------------------------------------------------------------
# Binaries and the real-BPF gate
# --------------------------------------------------------------------------------------------


def target_dir() -> Path:
    """Cargo's target directory: ``$CARGO_TARGET_DIR`` if set, else ``<repo>/target``."""
    env = os.environ.get("CARGO_TARGET_DIR")
    return Path(env) if env else REPO_ROOT / "target"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def built_binary(name: str) -> Path:
    """``target/debug/<name>``; fails the test, saying how to build it, when missing."""
    path = target_dir() / "debug" / name
    if not path.is_file():
        pytest.fail(
            f"{path} is not built: run `cargo build --workspace --bins` first "
            "(scripts/test.sh does)",
            pytrace=False,
        )
    return path


def bpf_unavailable() -> str | None:
    """Why real BPF cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "not root"
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return "kernel has no BTF at /sys/kernel/btf/vmlinux"
    return None


def _kernel_release() -> str:
    return os.uname().release


@pytest.fixture(autouse=True)
def _real_bpf_gate(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture) -> None:
    """For tests marked ``bpf``: skip with one loud line when real BPF is unavailable (fail
    under ``KOTEL_REQUIRE_BPF=1``). Autouse, so it runs before any other fixture of the test."""
    if request.node.get_closest_marker("bpf") is None:
        return
    test = request.node.nodeid
    why = bpf_unavailable()
    if why is None:
        with capsys.disabled():
            print(f"\nKOTEL-E2E RUNNING {test}: real BPF on kernel {_kernel_release()}")
        return
    if os.environ.get("KOTEL_REQUIRE_BPF") == "1":
        pytest.fail(f"KOTEL_REQUIRE_BPF=1 but real BPF cannot run: {why}", pytrace=False)
    with capsys.disabled():
        print(f"\n!!!!!! KOTEL-E2E SKIPPED {test}: real BPF unavailable ({why}) !!!!!!")
    pytest.skip(f"real BPF unavailable ({why})")


# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------


class LineReader:
    """Reads a child's pipe line by line on a thread, so waits on it can be bounded."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next_line(self, timeout: float) -> str | None:
        """The next line, or None at end of stream. Raises queue.Empty on timeout."""
        line = self._queue.get(timeout=timeout)
        if line is not None:
            self.lines.append(line)
        else:
            self._queue.put(None)  # end of stream stays visible to later calls
        return line

    def rest(self, timeout: float = 5.0) -> str:
        """Everything read so far plus what remains until end of stream (bounded)."""
        self._thread.join(timeout)
        while True:
            try:
                if self.next_line(timeout=0) is None:
                    break
            except queue.Empty:
                break
        return "\n".join(self.lines)


def _stop_child(proc: subprocess.Popen) -> None:
    """Kills a child still running and reaps it."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _child_env() -> dict[str, str]:
    """The test's environment without OTEL_* variables, so neither kotel nor the workload picks
    up an exporter configuration or service name from whoever runs the tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


class Workload:
    """``kotel-workload``, started and waiting for "go" (see tests/src/bin/kotel-workload.rs).

    Protocol: it prints ``{"pid": N}``, waits for a line on stdin, runs, prints its truth as
    one JSON line and exits. The truth holds ``writev`` {tid, calls, bytes}, ``tcp`` (a list of
    {tid, calls, bytes, local, peer} per connection, null where that family was unavailable),
    ``sleeper`` {tid, sleeps: [{requested_ns, elapsed_ns}]} and ``spinners`` {cpu, threads:
    [{tid, wall_ns, cpu_ns}]}.
    """

    def __init__(self, binary: Path) -> None:
        self.proc = subprocess.Popen(
            [str(binary)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_child_env(),
        )
        self._stdout = LineReader(self.proc.stdout)
        self.pid: int = 0

    def wait_ready(self) -> None:
        """Reads the ``{"pid": N}`` line (bounded)."""
        self.pid = json.loads(self._line("its pid"))["pid"]

    def _line(self, what: str) -> str:
        try:
            line = self._stdout.next_line(timeout=WORKLOAD_TIMEOUT)
        except queue.Empty:
            pytest.fail(
                f"kotel-workload did not print {what} within {WORKLOAD_TIMEOUT} s", pytrace=False
            )
        if line is None:
            code = self.proc.wait(timeout=10)
            pytest.fail(f"kotel-workload exited ({code}) before printing {what}", pytrace=False)
        return line

    def run(self) -> dict:
        """Lets it run; returns the truth it reports once it has exited successfully."""
        self.proc.stdin.write("go\n")
        self.proc.stdin.close()
        truth = json.loads(self._line("its truth"))
        code = self.proc.wait(timeout=WORKLOAD_TIMEOUT)
        assert code == 0, f"kotel-workload failed with exit code {code}"
        return truth

    def close(self) -> None:
        _stop_child(self.proc)


class KotelRun:
    """A running ``kotel run``, attached and collecting."""

    def __init__(
        self, binary: Path, args: list[str], cwd: Path, env: dict[str, str] | None = None
    ) -> None:
        self.args = ["run", *args]
        self.proc = subprocess.Popen(
            [str(binary), *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env={**_child_env(), "KOTEL_LOG": "info", **(env or {})},
        )
        self._stdout = LineReader(self.proc.stdout)
        self._stderr = LineReader(self.proc.stderr)

    def wait_attached(self) -> None:
        """Waits (bounded) for the stderr line containing ``kotel.run.attached``."""
        deadline = time.monotonic() + ATTACH_TIMEOUT
        while True:
            try:
                line = self._stderr.next_line(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                self.close()
                pytest.fail(
                    f"kotel {' '.join(self.args)} did not log {ATTACHED_MARKER} within "
                    f"{ATTACH_TIMEOUT} s; stderr:\n" + "\n".join(self._stderr.lines),
                    pytrace=False,
                )
            if line is None:
                code = self.proc.wait(timeout=10)
                pytest.fail(
                    f"kotel {' '.join(self.args)} exited with {code} before attaching; "
                    "stderr:\n" + "\n".join(self._stderr.lines),
                    pytrace=False,
                )
            if ATTACHED_MARKER in line:
                return

    def wait_for_log(self, *parts: str, timeout: float = ATTACH_TIMEOUT) -> str:
        """Waits (bounded) for kotel's next stderr line holding every one of ``parts``, read on
        from the last line an earlier wait took, and returns it. The lines stay in what
        ``interrupt`` returns."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._stderr.next_line(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                pytest.fail(
                    f"kotel did not log {parts} within {timeout} s; stderr:\n"
                    + "\n".join(self._stderr.lines),
                    pytrace=False,
                )
            if line is None:
                code = self.proc.wait(timeout=10)
                pytest.fail(
                    f"kotel exited with {code} before logging {parts}; stderr:\n"
                    + "\n".join(self._stderr.lines),
                    pytrace=False,
                )
            if all(p in line for p in parts):
                return line

    def interrupt(self, timeout: float = EXIT_TIMEOUT) -> tuple[int, str, str]:
        """Sends SIGINT (as Ctrl-C would) and waits up to ``timeout`` seconds for kotel to
        flush and exit. Returns (returncode, stdout, stderr)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.close()
            pytest.fail(
                f"kotel did not exit within {timeout} s of SIGINT; stderr:\n" + self._stderr.rest(),
                pytrace=False,
            )
        return code, self._stdout.rest(), self._stderr.rest()

    def close(self) -> None:
        _stop_child(self.proc)


# --------------------------------------------------------------------------------------------
# Waiting on a real signal
# --------------------------------------------------------------------------------------------


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Polls ``condition()`` every 100 ms until it is truthy and returns that value; fails the
    test, naming ``what``, once ``timeout`` seconds have passed without it."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not within {timeout} s", pytrace=False)
        time.sleep(0.1)


def scrape(port: int) -> str:
    """kotel's ``/metrics`` text, from its telemetry listener on 127.0.0.1:``port``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def prometheus_value(text: str, name: str, labels: str = "") -> int | None:
    """The value of sample ``name{labels}`` (``labels`` as rendered, e.g.
    ``signal="traces"``) in a ``/metrics`` text, or None when it is not there."""
    series = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == series:
            return int(value)
    return None


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> OtlpReceiver:
    """An OTLP/gRPC receiver on 127.0.0.1 (port chosen by the kernel), stopped after the test."""
    r = OtlpReceiver()
    r.start()
    yield r
    r.stop(grace=None)


@pytest.fixture
def workload() -> Callable[[], Workload]:
    """Starts ``kotel-workload`` processes: ``w = workload()``, then ``w.pid``, ``w.run()``."""
    started: list[Workload] = []

    def start() -> Workload:
        w = Workload(built_binary("kotel-workload"))
        started.append(w)
        w.wait_ready()
        return w

    yield start
    for w in started:
        w.close()


@pytest.fixture
def kotel_run(tmp_path: Path) -> Callable[[list[str]], KotelRun]:
    """Starts ``kotel run <args>`` (with extra environment variables ``env``, if given) and
    returns once it logged ``kotel.run.attached``; then ``.interrupt()`` → (returncode, stdout,
    stderr). kotel's working directory is a temporary directory, so a default ``./kotel-out``
    never lands in the repository."""
    started: list[KotelRun] = []
    cwd = tmp_path / "kotel-cwd"
    cwd.mkdir()

    def start(args: list[str], env: dict[str, str] | None = None) -> KotelRun:
        k = KotelRun(built_binary("kotel"), [str(a) for a in args], cwd, env)
        started.append(k)
        k.wait_attached()
        return k

    yield start
    for k in started:
        k.close()
