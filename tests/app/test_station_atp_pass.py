"""A pass with the station's ATP instruments and detectors driven by the OGS daemon through
their drivers: the same key whichever wire each instrument sits behind (memory, pty/TCP,
pyvisa-sim), and a station that cannot see the beacon loses the signal it cannot point at."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from firmware_shims.source_sequencer import SourceSequencer
from satqkd.cli import main
from satqkd.config import load_scenario
from satqkd.pass_physics import plan_pass
from satqkd_core import rng
from satqkd_core.errors import InputError

REPO = Path(__file__).resolve().parents[2]
CLEAR = REPO / "configs" / "scenarios" / "jinan1-xinglong-clear.yaml"
# as tests/conftest.py's short_clear_pass: the in-process path is that pass of the session
SHORT = ["--seed", "7", "--quiet", "--start-after-aos-s", "190", "--max-duration-s", "60"]


def _run(out: Path, scenario: Path = CLEAR, *extra: str) -> dict:
    assert (
        main(["sim", "pass", str(scenario), "--out", str(out), "--no-plots", *SHORT, *extra]) == 0
    )
    return json.loads((out / "report.json").read_text())


_RESOURCES = {
    "in-process": "in-process://{}",
    "emulator": "emulator://{}",
    "visa-sim": "visa-sim://drivers/sim/bias_supply.yaml#ASRL1::INSTR",
}


def _scenario_with(
    tmp: Path, instruments: dict[str, str], payload_source: dict[str, str] | None = None
) -> Path:
    """The clear scenario with its own station bench (the shipped in-process one with each named
    slot reached on the path given, or left out for "none") and optionally its own payload
    source entry, in a copy of the configs tree."""
    configs = tmp / "configs"
    for folder in ("missions", "stations", "instruments"):
        shutil.copytree(REPO / "configs" / folder, configs / folder)
    bench = yaml.safe_load((configs / "instruments" / "sim-station.yaml").read_text())
    for slot, path in instruments.items():
        if path == "none":
            del bench["instruments"][slot]
        else:
            bench["instruments"][slot]["resource"] = _RESOURCES[path].format(slot)
    bench["name"] = "station-paths"
    (configs / "instruments" / "station-paths.yaml").write_text(yaml.safe_dump(bench))
    benches = {"station": "station-paths"}
    if payload_source is not None:
        payload = {"name": "payload-paths", "instruments": {"source": payload_source}}
        (configs / "instruments" / "payload-paths.yaml").write_text(yaml.safe_dump(payload))
        benches["payload"] = "payload-paths"
    scenario = yaml.safe_load(CLEAR.read_text())
    scenario["simulation"] = {"benches": benches}
    path = configs / "scenarios" / "station-paths.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(scenario))
    return path


@pytest.fixture(scope="module")
def in_process(short_clear_pass: tuple[Path, dict]) -> dict:
    """The default path: every station instrument behind its emulator, in memory (the clear
    scenario's benches, sim-payload and sim-station, are the `--instruments in-process` ones):
    the session's pass with SHORT's arguments."""
    return short_clear_pass[1]


def test_the_station_instruments_are_in_the_loop_by_default(in_process: dict) -> None:
    assert in_process["key"]["secret_key_bits"] > 0, in_process["key"]["abort_reason"]
    atp = in_process["atp"]
    tracking = atp["station_tracking"]
    assert atp["model"] == "instruments"
    assert tracking["instruments"] == dict.fromkeys(("gimbal", "fsm", "beacon", "detectors"),
                                                    "in-process")  # fmt: skip
    # the daemon drove them all: ~10 Hz from the prepare instant to LOS
    assert tracking["beacon_reads"] > 4000 and tracking["fsm_commands"] > 4000
    assert tracking["gimbal_commands"] > 2 * tracking["beacon_reads"]
    assert tracking["acquired"] and tracking["spot_valid_fraction"] > 0.95
    # the truth: a few urad left at the receiver, so the field stop passes all the signal
    assert 0.5 < atp["tracking_rms_urad"] < 20.0
    assert 0.0 <= atp["acquisition_time_s"] < 30.0
    assert tracking["min_frame_coupling"] > 0.999
    assert atp["station_coupling_loss_db"] < 0.01
    assert atp["mean_pointing_loss_db"] == pytest.approx(
        atp["transmitter_pointing_loss_db"] + atp["station_coupling_loss_db"], abs=2e-4
    )


def test_station_instruments_behind_ports_give_the_in_process_key(
    in_process: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every instrument of both nodes behind its wire-level emulator (the payload's source
    through the controller firmware on a pty, the TT/1 tagger and the station's instruments on
    their ports) gives the in-process key; run through the progress display a terminal gets
    (`--instruments` must reach the pass)."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    out = tmp_path / "emulated"
    loud = [arg for arg in SHORT if arg != "--quiet"]
    assert (
        main(
            [
                "sim",
                "pass",
                str(CLEAR),
                "--out",
                str(out),
                "--no-plots",
                *loud,
                "--instruments",
                "emulator",
            ]
        )
        == 0
    )
    emulated = json.loads((out / "report.json").read_text())
    assert emulated["atp"]["station_tracking"]["instruments"] == dict.fromkeys(
        ("gimbal", "fsm", "beacon", "detectors"), "emulator"
    )
    assert emulated["key"]["secret_key_bits"] > 0, emulated["key"]["abort_reason"]
    assert emulated["simulation"]["instruments"]["source"] == "emulator"  # the controller's
    assert emulated["simulation"]["instruments"]["tagger"] == "emulator"
    assert emulated["simulation"]["benches"]["station"].endswith("sim-station-emulated.yaml")
    assert emulated["key"]["sha256_ogs"] == emulated["key"]["sha256_payload"]
    assert emulated["key"]["sha256_ogs"] == in_process["key"]["sha256_ogs"]
    assert emulated["quantum"] == in_process["quantum"]
    for field in ("acquisition_time_s", "tracking_rms_urad", "mean_pointing_loss_db"):
        assert emulated["atp"][field] == in_process["atp"][field]


def test_each_instrument_path_is_chosen_on_its_own(in_process: dict, tmp_path: Path) -> None:
    """Mixed: each instrument's resource string picks its path, the laser over pyvisa-sim."""
    paths = {"gimbal": "emulator", "fsm": "in-process", "beacon": "emulator",
             "detectors": "visa-sim"}  # fmt: skip
    laser = {
        "driver": "scpi_laser_source",
        "resource": "visa-sim://drivers/sim/laser_source.yaml#TCPIP0::127.0.0.1::5025::SOCKET",
    }
    mixed = _run(tmp_path / "mixed", _scenario_with(tmp_path, paths, laser))
    assert mixed["atp"]["station_tracking"]["instruments"] == paths
    # the payload daemon drove the SCPI laser directly (tests/app/test_payload_link_pass.py
    # takes the source's other paths, through the payload controller)
    assert mixed["simulation"]["instruments"]["source"] == "visa-sim"
    assert mixed["key"]["secret_key_bits"] > 0, mixed["key"]["abort_reason"]
    assert mixed["key"]["sha256_ogs"] == mixed["key"]["sha256_payload"]
    assert mixed["key"]["sha256_ogs"] == in_process["key"]["sha256_ogs"]
    assert mixed["quantum"]["detections"] == in_process["quantum"]["detections"]
    assert mixed["quantum"] == in_process["quantum"]


def test_a_station_without_its_beacon_sensor_loses_the_signal(
    in_process: dict, tmp_path: Path
) -> None:
    blind = _run(tmp_path / "blind", _scenario_with(tmp_path, {"beacon": "none"}))
    atp = blind["atp"]
    # program track alone leaves the mount's pointing error (~100 urad) on the sky: the
    # satellite's image falls outside the 100 urad field of view
    assert atp["tracking_rms_urad"] > 50.0
    assert not atp["station_tracking"]["acquired"]
    assert atp["station_tracking"]["spot_valid_fraction"] == 0.0
    assert atp["station_coupling_loss_db"] > 20.0
    assert blind["quantum"]["detections"] < 0.01 * in_process["quantum"]["detections"]
    assert blind["key"]["secret_key_bits"] < in_process["key"]["secret_key_bits"]


def test_a_frame_takes_the_station_coupling_and_its_live_detectors() -> None:
    scenario = load_scenario(CLEAR, seed=5)
    physics = plan_pass(scenario, max_duration_s=3.0)
    source = scenario.mission.source
    pattern = SourceSequencer(
        rng.derive_key(5, "payload/qrng"), source.probabilities, source.basis_x_probability
    ).pattern
    epoch = physics.qkd_start_unix_s - 1.0
    full_channel, _ = physics.detections_for_frame(1, pattern, epoch)
    # nothing through the field stop: dark and sky counts only (they do not depend on the
    # pointing); a tenth of the signal through it: a tenth of the signal counts on top
    noise = physics.detections_for_frame(1, pattern, epoch, station_coupling=0.0)[0].size
    tenth = physics.detections_for_frame(1, pattern, epoch, station_coupling=0.1)[0].size
    assert 0 < noise < 0.1 * full_channel.size
    assert tenth - noise == pytest.approx(0.1 * (full_channel.size - noise), rel=0.1)
    # detector 2 not gated: its tagger channel records nothing, the others as before
    channel, _ = physics.detections_for_frame(1, pattern, epoch, 1.0, (True, False, True, True))
    assert not np.any(channel == 2)
    assert np.bincount(channel, minlength=5)[[1, 3, 4]].tolist() == (
        np.bincount(full_channel, minlength=5)[[1, 3, 4]].tolist()
    )
    with pytest.raises(InputError, match="station_coupling must be in"):
        physics.detections_for_frame(1, pattern, epoch, station_coupling=1.5)
    with pytest.raises(InputError, match="live_channels must have 4 entries"):
        physics.detections_for_frame(1, pattern, epoch, 1.0, (True, False))
