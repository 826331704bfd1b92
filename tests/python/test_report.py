"""The report page in a real browser (Debian's headless Chromium through Selenium): the page a
real `kotel run` leaves in `--out` (from file://) and the one the `kotel-render` sidecar serves
at `/` (over HTTP), over a workload that knows its truth. The workload's executable is named
`<img src=x onerror=alert(1)>`: its name must show as text, create no element and fire no
dialog."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver import ActionChains

from conftest import Workload, built_binary, free_port, wait_until
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from otlp_json import read_jsonl
from otlp_receiver import attributes
from report_browser import chromium_missing, driver, errors, table

pytestmark = pytest.mark.bpf

HOSTILE = "<img src=x onerror=alert(1)>"
#: Bounds on waits (not measurements): kotel's interval is one second here.
PAGE_WAIT = 30.0
UNITS = {"ns": 1, "µs": 1e3, "ms": 1e6, "s": 1e9}


@pytest.fixture(autouse=True)
def _chromium():
    why = chromium_missing()
    if why:
        pytest.skip(why)


def ns_of(text: str) -> float:
    """The page's human latency ('850ns', '12.3µs', '4.56ms', '1.20s') in nanoseconds."""
    m = re.fullmatch(r"([0-9.]+)(ns|µs|ms|s)", text)
    assert m, f"not a latency: {text!r}"
    return float(m.group(1)) * UNITS[m.group(2)]


def bytes_text(n: int) -> str:
    """kotel's human byte count, as the terminal summary prints it."""
    if n < 1024:
        return f"{n}B"
    if n < 1048576:
        return f"{n / 1024:.1f}KiB"
    return f"{n / 1048576:.1f}MiB"


def hostile_workload(tmp_path: Path) -> Workload:
    """kotel-workload run from a copy named HOSTILE (its comm is the name's first 15 bytes)."""
    exe = tmp_path / HOSTILE
    shutil.copy(built_binary("kotel-workload"), exe)
    w = Workload(exe)
    w.wait_ready()
    return w


def page_data(d) -> dict | None:
    """The page's embedded data; None while a reload is under way."""
    try:
        text = d.execute_script(
            "const e = document.getElementById('kotel-data');"
            "return document.readyState === 'complete' && e ? e.textContent : null")
    except WebDriverException:
        return None
    return json.loads(text) if text else None


def no_injection(d) -> None:
    """No element from a name, no event handler attribute, no dialog."""
    assert d.execute_script("return document.querySelectorAll('img, [onerror]').length") == 0
    with pytest.raises(NoAlertPresentException):
        d.switch_to.alert.text


def final_histogram(out: Path, pid: int, metric: str):
    """The last cumulative point of `metric` for process `pid` in metrics.jsonl."""
    last = None
    for req in read_jsonl(out / "metrics.jsonl", ExportMetricsServiceRequest):
        for rm in req.resource_metrics:
            if attributes(rm.resource.attributes).get("process.pid") != pid:
                continue
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        last = m.exponential_histogram.data_points[-1]
    assert last is not None, f"no {metric} point for pid {pid}"
    return last


def select_value(d, element_id: str, value: str) -> None:
    d.execute_script(
        "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
        "e.dispatchEvent(new Event(e.tagName === 'SELECT' ? 'change' : 'input'));",
        element_id, value)


def test_report_from_a_real_run_in_chromium(kotel_run, tmp_path):
    out = tmp_path / "out"
    # System-wide, as the README's first command runs: kernel threads are there to be hidden.
    kotel = kotel_run(["--probes", "all", "--span-threshold", "1ms", "--sleep-threshold", "1ms",
                       "--interval", "1s", "--out", out,
                       "--receiver-grpc", "none", "--receiver-http", "none", "--telemetry", "none"])
    w = hostile_workload(tmp_path)
    request_close = w.close
    index = out / "index.html"
    # kotel saw it start (its exec) and read its executable's name while it lives.
    wait_until(lambda: index.is_file() and json.dumps(HOSTILE).replace("<", "\\u003c").replace(">", "\\u003e")
               in index.read_text(), PAGE_WAIT, "the workload's executable named in index.html")
    truth = w.run()
    d = driver()
    try:
        # Live: the page reloads itself and keeps the reader's filter and sort.
        wait_until(lambda: index.is_file() and f'"pid":{w.pid},' in index.read_text(), PAGE_WAIT,
                   "a live index.html with the workload")
        d.get(index.as_uri())
        first = page_data(d)
        assert first["live"] is True
        select_value(d, "probe", "tcp_send")
        d.find_element("css selector", "th button[data-key=count]").click()
        wait_until(lambda: "probe=tcp_send" in d.current_url and "sort=count" in d.current_url,
                   PAGE_WAIT, "the reader's state in the URL")
        # A document this test marks; the next reload replaces it.
        d.execute_script("window.kotelTestMark = true")
        seen = page_data(d) or first
        wait_until(lambda: d.execute_script("return window.kotelTestMark === undefined")
                   and (page_data(d) or seen)["generated_unix_nano"] != seen["generated_unix_nano"],
                   PAGE_WAIT, "the live page reloading with new data")
        assert d.find_element("id", "probe").get_attribute("value") == "tcp_send"
        assert {r["Probe"] for r in table(d)} == {"tcp_send"}
        assert d.find_element("css selector", "th[aria-sort=descending] button").get_attribute("data-key") == "count"
        assert errors(d) == []

        code, stdout, stderr = kotel.interrupt()
        assert code == 0, stderr
        # Final: a static page, loaded fresh (no fragment: the defaults).
        d.get(index.as_uri())
        assert errors(d) == [], "console errors from file://"
        data = page_data(d)
        assert data["live"] is False
        no_injection(d)

        # Order: slowest p99 first, user processes only.
        rows = table(d)
        p99s = [ns_of(r["p99"]) for r in rows]
        assert p99s == sorted(p99s, reverse=True)
        assert not any("kernel thread" in r["Process"] for r in rows)
        kernel_threads = sum(r["kernel_thread"] for r in data["rows"])
        assert kernel_threads > 0, "a system-wide run saw kernel threads"
        d.find_element("id", "kthreads").click()
        assert len(table(d)) == len(rows) + kernel_threads
        d.find_element("id", "kthreads").click()

        # The workload's rows: its name as text, its counts and bytes as it did them, and the
        # same figures as the terminal summary.
        select_value(d, "name", str(w.pid))
        mine = {r["Probe"]: r for r in table(d) if r["PID"] == str(w.pid)}
        name = mine["tcp_send"]["Process"]
        assert name.startswith(HOSTILE[:15]) and HOSTILE in name, name
        tcp = [c for c in truth["tcp"] if c is not None]
        assert mine["tcp_send"]["Count"] == str(sum(c["calls"] for c in tcp))
        assert mine["tcp_send"]["Bytes"] == bytes_text(sum(c["bytes"] for c in tcp))
        assert mine["writev"]["Count"] == str(truth["writev"]["calls"])
        assert mine["writev"]["Bytes"] == bytes_text(truth["writev"]["bytes"])
        # The terminal's rows: PID COMM PROBE STATE COUNT P50 P99 MAX BYTES (COMM may hold spaces).
        terminal = {}
        for line in stdout.splitlines():
            f = line.split()
            if len(f) >= 9 and f[0] == str(w.pid) and f[-6] == "-":
                terminal[f[-7]] = f[-5:]
        for probe in ("tcp_send", "writev"):
            r, t = mine[probe], terminal[probe]
            assert [r["Count"], r["p50"], r["p99"], r["Max"], r["Bytes"]] == t, (r, t)
        no_injection(d)

        # Filter by probe: the rows change to that probe's.
        select_value(d, "name", "")
        select_value(d, "probe", "runqueue")
        probes = {r["Probe"] for r in table(d)}
        assert probes == {"runqueue"}
        select_value(d, "probe", "")

        # Click the workload's tcp_send row: its heatmap. Hover every cell: the tooltips' counts,
        # row by row, are the histogram's buckets in metrics.jsonl.
        select_value(d, "name", str(w.pid))
        d.find_element("css selector", f'tr[data-key="{w.pid}:tcp_send"]').click()
        heading = d.find_element("id", "heat-h").text
        assert f"(pid {w.pid})" in heading and "tcp_send" in heading
        cells = d.find_elements("css selector", "#heatmap rect.cell")
        assert cells, "the heatmap has cells"
        by_row: dict[tuple[int, int], int] = {}
        # The whole heatmap in view once: scrolling under a still pointer would move it.
        d.execute_script("document.querySelector('#heatmap figure').scrollIntoView({block: 'center'})")
        for cell in cells:
            # Hover it; where the exemplar marker covers its centre, focus it (as Tab does).
            on_top = d.execute_script(
                "const b = arguments[0].getBoundingClientRect();"
                "return document.elementFromPoint(b.x + b.width / 2, b.y + b.height / 2) === arguments[0]",
                cell)
            if on_top:
                ActionChains(d).move_to_element(cell).perform()
            else:
                d.execute_script("arguments[0].focus()", cell)
            tip = d.find_element("id", "tip")
            assert tip.is_displayed()
            text = tip.text
            count = int(cell.get_attribute("data-count"))
            assert re.search(rf"· {count} events?$", text), text
            assert re.match(r"\d\d:\d\d:\d\d–\d\d:\d\d:\d\d UTC · latency ", text), text
            key = (int(cell.get_attribute("data-lo")), int(cell.get_attribute("data-hi")))
            by_row[key] = by_row.get(key, 0) + count
        point = final_histogram(out, w.pid, "kotel.tcp.send.duration")
        assert sum(by_row.values()) == point.count == sum(c["calls"] for c in tcp)
        expected: dict[tuple[int, int], int] = {(0, 0): point.zero_count} if point.zero_count else {}
        base = 2 ** (2 ** -point.scale)
        for j, n in enumerate(point.positive.bucket_counts):
            if not n:
                continue
            lo_ns = base ** (point.positive.offset + j) * 1e9
            row = [k for k in by_row if k[0] - 1 <= lo_ns < k[1] - 1]
            assert len(row) == 1, (lo_ns, sorted(by_row))
            expected[row[0]] = expected.get(row[0], 0) + n
        assert by_row == expected
        assert errors(d) == []

        # The flame graph: a search highlights frames (every off-CPU stack passes schedule).
        select_value(d, "flame-search", "schedule")
        assert d.execute_script("return document.querySelectorAll('#flame .frame.match').length") > 0
        assert "matched" in d.find_element("id", "flame-matched").text
        # Click a frame narrower than the graph: it zooms to it (full width, the reset button
        # on). The widest such frame, whichever it is: with user frames under the kernel's, the
        # matched `schedule` frames are spread over many paths and may all be thin.
        target = d.execute_script(
            "const r = [...document.querySelectorAll('#flame .frame rect')]"
            "  .filter((r) => +r.getAttribute('width') > 4 && +r.getAttribute('width') < 1190)"
            "  .sort((a, b) => +b.getAttribute('width') - +a.getAttribute('width'))[0];"
            "if (r) r.scrollIntoView({block: 'center', inline: 'center'});"
            "return r;")
        assert target is not None, "a frame wide enough to click"
        assert d.execute_script(
            "const b = arguments[0].getBoundingClientRect();"
            "const at = document.elementFromPoint(b.x + b.width / 2, b.y + b.height / 2);"
            "return at && at.closest('g') === arguments[0].parentNode;", target), "on top, in view"
        ActionChains(d).move_to_element(target).click().perform()
        assert d.find_element("id", "flame-reset").is_enabled(), "a click zooms"
        assert "zoom=" in d.current_url
        widths = d.execute_script(
            "return [...document.querySelectorAll('#flame .frame:not(.dim) rect')].map((r) => +r.getAttribute('width'))")
        assert max(widths) > 1190, "the zoomed frame spans the graph"
        d.find_element("id", "flame-reset").click()
        assert "zoom=" not in d.current_url
        no_injection(d)
        assert errors(d) == []
    finally:
        d.quit()
        request_close()


def test_sidecar_report_over_http(receiver, kotel_run, tmp_path):
    grpc_port, http_port = free_port(), free_port()
    render = subprocess.Popen(
        [str(built_binary("kotel-render")), "--grpc", f"127.0.0.1:{grpc_port}", "--http",
         f"127.0.0.1:{http_port}", "--store", str(tmp_path / "store")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    d = driver()
    w = None
    try:
        w = hostile_workload(tmp_path)
        kotel = kotel_run(["--pid", w.pid, "--span-threshold", "1ms", "--interval", "1s",
                           "--out", tmp_path / "out", "--otlp-endpoint", receiver.endpoint,
                           "--renderer", f"http://127.0.0.1:{grpc_port}",
                           "--receiver-grpc", "none", "--receiver-http", "none", "--telemetry", "none"])
        w.run()
        url = f"http://127.0.0.1:{http_port}/"

        def workload_row():
            d.get(url)
            return [r for r in table(d) if r["PID"] == str(w.pid)]

        rows = wait_until(workload_row, PAGE_WAIT, "the sidecar's page listing the workload")
        code, _, stderr = kotel.interrupt()
        assert code == 0, stderr
        d.get(url)
        assert errors(d) == [], "console errors over HTTP"
        assert any(HOSTILE[:15] in r["Process"] for r in rows)
        no_injection(d)
        # The heatmap of the first row is drawn and its cells described.
        cell = d.find_element("css selector", "#heatmap rect.cell")
        assert re.search(r"· \d+ events?$", cell.get_attribute("aria-label"))
        links = [a.get_attribute("href") for a in d.find_elements("css selector", "#heatmap .files a")]
        assert links and all(h.startswith(url + "artifacts/") for h in links)
        assert errors(d) == []
    finally:
        d.quit()
        if w is not None:
            w.close()
        render.terminate()
        render.wait(timeout=10)
