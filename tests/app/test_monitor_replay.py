"""`satqkd monitor --replay ARCHIVE`: the page's data from a recorded pass, its static files,
and the command's mistakes; `PassView` leaves unknown figures unknown."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from satqkd.cli import main
from satqkd.monitor.state import PassView
from satqkd.pass_recorder import load_recorded
from tests.conftest import free_tcp_port

REPO = Path(__file__).resolve().parents[2]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.read()


def test_a_replayed_pass_shows_the_reports_figures(short_clear_pass: tuple[Path, dict]) -> None:
    out, report = short_clear_pass
    port = free_tcp_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from satqkd.cli import main; raise SystemExit(main())",
         "monitor", "--replay", str(out / "telemetry.jsonl"), "--speed", "1000",
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        assert process.stdout.readline().startswith(f"monitor: {url} showing replay of ")
        deadline = time.monotonic() + 20
        while not (state := json.loads(_get(url + "api/state")))["replay_finished"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        page = _get(url).decode()
        assert '<script src="/static/monitor.js">' in page and 'id="sky"' in page
        assert b'new EventSource("/api/stream")' in _get(url + "static/monitor.js")
        with urllib.request.urlopen(url + "api/stream", timeout=5) as stream:
            first = stream.readline().decode()  # the snapshot, pushed at once
        assert json.loads(first.removeprefix("data: "))["messages"] == state["messages"]
    finally:
        process.terminate()
        assert process.wait(15) == 0
    quantum = report["quantum"]
    assert state["messages"] == len((out / "telemetry.jsonl").read_text().splitlines())
    assert state["qber"]["x"] == pytest.approx(quantum["qber_by_basis"]["x"], abs=1e-6)
    assert state["key"]["secret_key_bits"] == report["key"]["secret_key_bits"] > 0
    for row, expected in zip(state["by_intensity"], quantum["by_intensity"], strict=True):
        assert (row["label"], row["sent"], row["detections"], row["errors"]) == (
            expected["label"],
            expected["sent"],
            expected["detections"],
            expected["errors"],
        )
    assert state["station"]["min_elevation_deg"] is None  # no --station: no mask drawn
    assert set(state["nodes"]) == {"payload", "ogs-xinglong"}
    assert state["progress"]["detections"] == quantum["detections"]


def test_unknown_figures_stay_unknown_and_a_new_plan_starts_afresh() -> None:
    view = PassView("test")
    progress = {"plan_id": 1, "chunk": 0, "detections": 40, "sifted_bits": 0, "qber_z": 0.0,
                "elevation_deg": 30.0}  # fmt: skip
    view.add({"name": "QKD_PROGRESS", "node": "ogs-a", "fields": progress})
    snapshot = view.snapshot()
    assert snapshot["qber"] == {"x": None, "z": None}  # no sifted bit yet: no QBER, not 0 %
    assert snapshot["by_intensity"] == [] and snapshot["key"] is None
    assert snapshot["clock"]["offset_ps"] is None
    view.add({"name": "QKD_PROGRESS", "node": "ogs-a",
              "fields": {**progress, "chunk": 1, "detections": 100, "sifted_bits": 30,
                         "qber_z": 0.02}})  # fmt: skip
    assert [f["detections"] for f in view.snapshot()["frames"]] == [40, 60]
    assert view.snapshot()["qber"]["z"] == 0.02
    atp = {"plan_id": 2, "mode": "tracking", "predicted_az_deg": -90.0, "predicted_el_deg": 20.0,
           "gimbal_az_deg": None, "gimbal_el_deg": None, "spot_valid": False}  # fmt: skip
    view.add({"name": "ATP_STATUS", "node": "ogs-a", "fields": atp})
    snapshot = view.snapshot()
    assert snapshot["plan_id"] == 2 and snapshot["frames"] == [] and snapshot["progress"] is None
    assert snapshot["satellite"] == {"az_deg": 270.0, "el_deg": 20.0}
    assert snapshot["mount"] == {"az_deg": None, "el_deg": None} and snapshot["spots"] == []


def test_mid_pass_the_view_shows_counts_by_intensity_and_the_clock_of_each_frame(
    short_clear_pass: tuple[Path, dict],
) -> None:
    records = load_recorded(short_clear_pass[0] / "telemetry.jsonl")
    progress = [i for i, r in enumerate(records) if r["name"] == "QKD_PROGRESS"]
    middle = progress[len(progress) // 2]
    view = PassView("test")
    for record in records[: middle + 1]:
        view.add(record)
    live, state = records[middle]["fields"], view.snapshot()
    assert state["key"] is None and not state["by_intensity_final"]  # not summarised yet
    span_s, sifted = live["sifted_span_s"], live["sifted_by_intensity"]
    first_start = records[progress[0]]["fields"]["frame_start_unix_s"]
    assert 0 < span_s <= live["frame_stop_unix_s"] - first_start
    assert [row["detections"] for row in state["by_intensity"]] == sifted
    assert sifted[0] > sifted[1] > sifted[2] > 0  # signal, decoy, vacuum: the sent mix
    for row, count in zip(state["by_intensity"], sifted, strict=True):
        assert row["rate_hz"] == pytest.approx(count / span_s)
        assert row["mu"] is row["sent"] is row["errors"] is None  # unknown, not 0
    assert state["clock"]["at"] == f"frame {live['chunk']}"
    assert state["clock"]["offset_ps"] == live["clock_offset_ps"] is not None
    assert state["clock"]["residual_rms_ps"] == live["timing_residual_rms_ps"] > 0
    offsets = [f["clock_offset_ps"] for f in state["frames"]]
    assert len(offsets) == len(progress[: len(progress) // 2 + 1]) and None not in offsets
    for record in records[middle + 1 :]:
        view.add(record)
    final = view.snapshot()
    assert final["by_intensity_final"] and final["clock"]["at"] == "QKD start"
    totals = [row["detections"] for row in final["by_intensity"]]
    assert all(t >= s for t, s in zip(totals, sifted, strict=True))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["monitor"], "give one source: --broker URL (live) or --replay ARCHIVE"),
        (["monitor", "--broker", "mqtt://127.0.0.1:9", "--replay", "a.jsonl"], "give one source"),
        (["monitor", "--replay", "missing.jsonl"], "missing.jsonl: cannot read the archive"),
        (["monitor", "--replay", "README.md"], "README.md:1: not JSON"),
        (["monitor", "--replay", "a.jsonl", "--speed", "0"], "--speed must be a positive"),
        (["monitor", "--broker", "mqtt://127.0.0.1:9", "--mission", "A B"], "mission"),
        (["monitor", "--broker", "mqtt://127.0.0.1:9", "--station", "missing.yaml"], "missing"),
    ],
)
def test_monitor_mistakes_are_one_line(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(arguments)
    error = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in error and message in error, error


def test_a_port_in_use_is_one_line(
    short_clear_pass: tuple[Path, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        archive = short_clear_pass[0] / "telemetry.jsonl"
        status = main(["monitor", "--replay", str(archive), "--port", str(port)])
    error = capsys.readouterr().err.strip()
    assert status == 1 and "\n" not in error and f"--port {port}" in error, error
