"""A short pass with the payload's source reached another way gives the same key as the
in-process path for the same seed: through the payload controller (PayloadLink over a pty to the
controller firmware, which drives the source), and with the source as the SCPI laser driver
over pyvisa-sim (directly, or behind the controller)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivers.payload_link_source import PayloadLinkSource
from drivers.scpi import ScpiLaserSource
from satqkd.cli import main
from satqkd.config import Scenario, load_scenario
from satqkd.instruments_config import BenchConfig, validate_instruments
from satqkd.report import build_report
from satqkd.simulation import run_pass, scenario_benches
from sim_backends.instruments import SimPulsedSource

REPO = Path(__file__).resolve().parents[2]
CLEAR = REPO / "configs" / "scenarios" / "jinan1-xinglong-clear.yaml"
SEED = 5


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("in-process")
    status = main(
        [
            "sim", "pass", str(CLEAR), "--seed", str(SEED), "--out", str(out), "--quiet",
            "--start-after-aos-s", "190", "--max-duration-s", "60",
            "--instruments", "in-process",
        ]
    )  # fmt: skip
    assert status == 0
    return json.loads((out / "report.json").read_text())


LASER_SIM = "visa-sim://drivers/sim/laser_source.yaml#TCPIP0::127.0.0.1::5025::SOCKET"


def _scenario() -> Scenario:
    scenario = load_scenario(CLEAR, seed=SEED)
    simulation = scenario.scenario.simulation.model_copy(update={"qkd_start_after_aos_s": 190.0})
    return scenario.model_copy(
        update={"scenario": scenario.scenario.model_copy(update={"simulation": simulation})}
    )


def _benches(scenario: Scenario, source: str, payload_link: str) -> dict[str, BenchConfig]:
    """The scenario's benches with the payload's source reached as asked: the hardware in-process
    or over pyvisa-sim, driven directly or through the payload controller's emulator."""
    benches = scenario_benches(scenario)
    hardware = (
        {"driver": "sim_pulsed_source", "resource": "in-process://source"}
        if source == "in-process"
        else {"driver": "scpi_laser_source", "resource": LASER_SIM}
    )
    if payload_link == "emulator":
        behind = "" if source == "in-process" else "?hardware=laser"
        entries = {
            "source": {
                "driver": "payload_link_source",
                "resource": f"emulator://payload-controller{behind}",
            }
        }
        if source != "in-process":
            entries["laser"] = hardware
    else:
        entries = {"source": hardware}
    benches["payload"] = validate_instruments({"name": "p", "instruments": entries}, "test")
    return benches


@pytest.mark.parametrize(
    ("source", "payload_link", "driver"),
    [
        ("in-process", "emulator", PayloadLinkSource),
        ("visa-sim", "in-process", ScpiLaserSource),
        ("visa-sim", "emulator", PayloadLinkSource),
    ],
)
async def test_the_source_path_does_not_change_the_key(
    in_process: dict, tmp_path: Path, source: str, payload_link: str, driver: type
) -> None:
    scenario = _scenario()
    benches = _benches(scenario, source, payload_link)
    run = await run_pass(scenario, tmp_path, max_duration_s=60.0, benches=benches)
    report = build_report(run)
    assert report["key"]["secret_key_bits"] > 0, report["key"]["abort_reason"]
    assert report["key"]["sha256_ogs"] == report["key"]["sha256_payload"]
    assert report["key"]["sha256_ogs"] == in_process["key"]["sha256_ogs"]
    assert report["quantum"] == in_process["quantum"]
    assert type(run.payload.source) is driver  # the daemon drove the path asked for
    if isinstance(run.payload.source, PayloadLinkSource):
        link_source = run.payload.source
        assert link_source.counters.link_failures == 0
        assert link_source.counters.missed_pings == 0
        housekeeping = link_source.controller_housekeeping
        assert housekeeping["watchdog_trips"] == 0 and housekeeping["tc_failed"] == 0
        assert housekeeping["plan_id"] == run.plan_id
        assert run.payload.counters.controller_safings == 0
    assert not isinstance(run.payload.source, SimPulsedSource)
