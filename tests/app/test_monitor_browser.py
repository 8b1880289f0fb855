"""`satqkd monitor --broker URL` in a real headless Chromium, during a pass.

The telemetry of the session's simulated pass (as the daemons published it) is sent over a
real Mosquitto in two halves; the page must show the pass as it goes (sky track, ATP, frames,
Z-basis QBER, sifted counts by intensity, clock offset and residual, nodes) and then its
outcome (counts by intensity, X-basis QBER, clock, key), with the figures of the pass's own
report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from satqkd.telemetry_archive import read_archive
from tests.app.test_tm_cli import _publish as _publish_here
from tests.conftest import free_tcp_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
INTENSITIES = ("signal", "decoy", "vacuum")


def _require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    reason = "Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must install it")
    pytest.skip(reason)


def _publish(url: str, records: list[dict], *, retain: bool = False) -> None:
    """Publish from a thread of its own (the browser driver holds this thread's event loop)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(_publish_here, url, records, retain=retain).result(60)


def _state(url: str) -> dict:
    with urllib.request.urlopen(url + "api/state", timeout=5) as answer:
        return json.load(answer)


@pytest.fixture
def monitor(mosquitto_url: str, pass_records: list[dict]) -> Iterator[tuple[str, list[dict]]]:
    """`satqkd monitor` on the broker, subscribed (it holds the retained first housekeeping
    of the pass); yields its url and the records still to publish."""
    probe = next(r for r in pass_records if r["name"] == "HOUSEKEEPING")
    _publish(mosquitto_url, [probe], retain=True)
    port = free_tcp_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from satqkd.cli import main; raise SystemExit(main())",
         "monitor", "--broker", mosquitto_url, "--mission", "jinan1", "--port", str(port),
         "--station", str(REPO / "configs" / "stations" / "xinglong.yaml")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        line = process.stdout.readline()
        assert line.startswith(f"monitor: {url} showing {mosquitto_url}"), (
            line + process.stderr.read() if process.poll() is not None else line
        )
        deadline = time.monotonic() + 20
        while _state(url)["messages"] < 1:  # subscribed: the retained probe is in
            assert time.monotonic() < deadline, "the monitor never subscribed"
            time.sleep(0.05)
        yield url, [r for r in pass_records if r is not probe]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert status == 0, process.stderr.read()


@pytest.fixture
def pass_records(short_clear_pass: tuple[Path, dict]) -> list[dict]:
    return read_archive(short_clear_pass[0] / "telemetry.jsonl")


@pytest.fixture
def page() -> Iterator:
    _require_chromium()
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True
        )
        try:
            yield browser.new_page()
        finally:
            browser.close()


def _percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def test_the_page_follows_a_pass_and_shows_its_outcome(
    page,
    monitor: tuple[str, list[dict]],
    mosquitto_url: str,
    short_clear_pass: tuple[Path, dict],
) -> None:
    url, records = monitor
    report = short_clear_pass[1]
    progress = [i for i, r in enumerate(records) if r["name"] == "QKD_PROGRESS"]
    middle = progress[len(progress) // 2]
    first_half, second_half = records[: middle + 1], records[middle + 1 :]

    page.goto(url)
    page.wait_for_function("document.getElementById('connection').textContent === 'live'")
    page.wait_for_function("document.getElementById('messages').textContent === '1'")
    assert page.inner_text("#mask") == "below 10.0° (xinglong)"
    assert page.locator("#sky path.sky-mask").count() == 1  # the station's mask is drawn
    assert page.locator("#sky-track").count() == 0  # nothing tracked yet
    assert page.inner_text("#nodes-body tr[data-node='payload'] td:nth-child(2)") == "idle"
    assert page.inner_text("#chunk") == "-" and page.inner_text("#qber-z") == "-"
    assert page.inner_text("#key-result") == "pass not summarised yet"

    # half the QKD window: the page follows the pass
    _publish(mosquitto_url, first_half)
    chunk = records[middle]["fields"]["chunk"]
    page.wait_for_function(f"document.getElementById('chunk').textContent === '{chunk}'")
    live = records[middle]["fields"]
    assert page.inner_text("#detections") == f"{live['detections']:,}"
    assert page.inner_text("#sifted") == f"{live['sifted_bits']:,}"
    assert page.inner_text("#qber-z") == _percent(live["qber_z"])
    assert page.inner_text("#qber-x") == "-"  # known only after error correction
    atp = next(r for r in reversed(first_half) if r["name"] == "ATP_STATUS")["fields"]
    assert page.inner_text("#atp-mode") == atp["mode"] == "tracking"
    assert page.inner_text("#spot-valid") == "on the sensor"
    assert page.inner_text("#sat-el") == f"{atp['predicted_el_deg']:.1f}"
    assert page.inner_text("#sat-az") == f"{atp['predicted_az_deg'] % 360:.1f}"
    track_points = page.get_attribute("#sky-track", "points").split()
    assert len(track_points) > 50 and page.locator("#sky-sat").count() == 1
    assert page.locator("#frames-plot polyline").count() == 1
    # counts by intensity and the clock, live: the frame's telemetry, not the pass summary
    assert not any(r["name"] == "OGS_PASS_SUMMARY" for r in first_half)
    span_s = live["sifted_span_s"]
    assert sum(live["sifted_by_intensity"]) > 0 and span_s > 0
    for label, sifted in zip(INTENSITIES, live["sifted_by_intensity"], strict=True):
        cells = page.locator(f"#rates-body tr[data-intensity='{label}'] td").all_inner_texts()
        assert cells[:4] == [label, "-", "-", f"{sifted:,}"] and cells[5] == "-"
        assert float(cells[4].replace(",", "")) == pytest.approx(sifted / span_s, abs=0.051)
    assert "so far" in page.inner_text("#rates-note")
    assert page.inner_text("#clock-at") == f"at frame {chunk}"
    assert page.inner_text("#clock-offset") == f"{live['clock_offset_ps']:.1f}"
    assert page.inner_text("#clock-residual") == f"{live['timing_residual_rms_ps']:.1f}"
    assert page.locator("#clock-plot polyline").count() >= 1
    assert page.locator("#residual-plot polyline").count() >= 1
    assert "ATP_ACQUIRED" in page.inner_text("#events")

    # the rest: the pass ends and the page shows its outcome, as the report has it
    _publish(mosquitto_url, second_half)
    page.wait_for_function("document.getElementById('key-result').textContent.includes('key')")
    assert page.inner_text("#key-result") == (
        f"{report['key']['secret_key_bits']:,} secret key bits, confirmed by the payload"
    )
    assert page.inner_text("#detections") == f"{report['quantum']['detections']:,}"
    assert page.inner_text("#qber-x") == _percent(report["quantum"]["qber_by_basis"]["x"])
    for row in report["quantum"]["by_intensity"]:
        cells = page.locator(f"#rates-body tr[data-intensity='{row['label']}'] td")
        assert cells.all_inner_texts()[:4] == [
            row["label"],
            f"{row['mu']:.2f}",
            f"{row['sent']:,}",
            f"{row['detections']:,}",
        ]
    summary = next(r for r in records if r["name"] == "OGS_PASS_SUMMARY")["fields"]
    assert page.inner_text("#clock-at") == "at QKD start"
    assert page.inner_text("#clock-offset") == f"{summary['clock_offset_ps']:.1f}"
    assert page.inner_text("#clock-residual") == f"{summary['timing_residual_rms_ps']:.1f}"
    events = page.inner_text("#events")
    assert "KEY_STORED" in events and "PASS_ENDED" in events
    assert len(page.get_attribute("#sky-track", "points").split()) > len(track_points)
    assert int(page.inner_text("#messages")) == len(records) + 1
