"""A short pass with the payload's source reached another way gives the same key as the
in-process path for the same seed: through the payload controller (PayloadLink over a pty to the
controller firmware, which drives the source), and with the source as the SCPI laser driver
over pyvisa-sim behind the controller (directly: tests/app/test_station_atp_pass.py). Through
the controller its laser interlock is active: the request to emit is signed with the emission
key both ends hold, and the controller the assembly builds refuses an unsigned, forged or
replayed one over the pty."""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path

import pytest

from drivers.payload_link import TelecommandError
from drivers.payload_link_source import PayloadLinkSource
from drivers.registry import BuildContext
from firmware_shims.laser_interlock import InterlockSettings, LaserInterlock
from firmware_shims.payload_controller import PayloadController
from satqkd.assembly import AssemblyError, assemble_node
from satqkd.config import Scenario, load_scenario
from satqkd.instruments_config import BenchConfig, load_instruments_config, validate_instruments
from satqkd.report import build_report
from satqkd.simulation import run_pass, scenario_benches
from satqkd_core.payload_icd import FunctionId, InterlockReason, pack_function
from satqkd_runtime.clock import RealClock
from satqkd_runtime.emission_auth import (
    EMISSION_KEY_SECRET,
    EmissionSigner,
    EmissionWatermark,
    install_emission_key,
)
from sim_backends.instruments import SimPulsedSource

REPO = Path(__file__).resolve().parents[2]
CLEAR = REPO / "configs" / "scenarios" / "jinan1-xinglong-clear.yaml"
SEED = 7  # as tests/conftest.py's short_clear_pass, the in-process path's key


@pytest.fixture(scope="module")
def in_process(short_clear_pass: tuple[Path, dict]) -> dict:
    """The report of the in-process path (the clear scenario's own benches, sim-payload and
    sim-station): the session's pass, seed 7, 60 s of QKD from 190 s after AOS."""
    return short_clear_pass[1]


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
        # the SCPI laser over pyvisa-sim driven directly: test_station_atp_pass.py's
        # test_each_instrument_path_is_chosen_on_its_own runs that pass and asserts the same
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
        # the interlock was active: the one request to emit was signed with counter 1, which
        # the controller accepted under the key both ends hold (owner-only) and kept durably
        node_keys, controller_keys = run.key_root / "payload", run.key_root / "payload-controller"
        for directory in (node_keys, controller_keys):
            mode = (directory / f"{EMISSION_KEY_SECRET}.secret").stat().st_mode
            assert stat.S_IMODE(mode) == 0o600
        assert EmissionSigner(node_keys).counter == 1
        assert EmissionWatermark(controller_keys).highest == 1
    assert not isinstance(run.payload.source, SimPulsedSource)


EMULATED_BENCH = REPO / "configs" / "instruments" / "sim-payload-emulated.yaml"


async def test_the_assembled_controller_refuses_unsigned_forged_and_replayed_requests(
    tmp_path: Path,
) -> None:
    node_keys, controller_keys = tmp_path / "payload", tmp_path / "payload" / "payload-controller"
    bench = load_instruments_config(EMULATED_BENCH)
    clock = RealClock()
    context = BuildContext(clock=clock, keys=node_keys, controller_keys=controller_keys)
    async with contextlib.AsyncExitStack() as stack:  # no key installed: one line, the fix
        with pytest.raises(AssemblyError, match="no emission key for the payload controller"):
            await assemble_node(bench, "payload", clock=clock, stack=stack, context=context)
    install_emission_key(node_keys, controller_keys)
    async with contextlib.AsyncExitStack() as stack:
        node = await assemble_node(bench, "payload", clock=clock, stack=stack, context=context)
        controller = node.emulator_of("source")
        assert isinstance(controller, PayloadController) and isinstance(
            node.source, PayloadLinkSource
        )
        link = node.source.link  # the driver's own PayloadLink, over the controller's pty
        now = clock.now_unix_s()
        first = now + 0.2
        await link.load_pass_plan(7, 1, first, now + 60.0, 1e8)
        forged = pack_function(FunctionId.SOURCE_ENABLE_SIGNED, first, 50, bytes(16))
        for name, app_data in (
            ("unsigned", pack_function(FunctionId.SOURCE_ENABLE, first)),
            ("forged", forged),
        ):
            with pytest.raises(TelecommandError, match="unauthenticated emission request"):
                await link.send_telecommand(8, 1, app_data, label=name)
            assert not controller.source_enabled and not node.hardware["laser"].enabled
            assert controller.interlock is not None
            assert controller.interlock.reasons & InterlockReason.UNAUTHENTICATED_REQUEST
        assert controller.interlock.unauthenticated_requests == 2
        # a request the driver signs is accepted, and clears the latch
        signer = link.emission_signer
        assert signer is not None
        await link.enable_source(first)
        assert controller.source_enabled and node.hardware["laser"].enabled
        assert signer.counter == 1 and controller.interlock.reasons == InterlockReason.NONE
        await link.disable_source()
        # a signed request captured on the line and replayed byte for byte: refused
        counter, tag = signer.sign(first)
        captured = pack_function(FunctionId.SOURCE_ENABLE_SIGNED, first, counter, tag)
        await link.send_telecommand(8, 1, captured, label="signed")
        await link.disable_source()
        with pytest.raises(TelecommandError, match="unauthenticated emission request"):
            await link.send_telecommand(8, 1, captured, label="replayed")
        assert not controller.source_enabled and not node.hardware["laser"].enabled
        assert controller.interlock.unauthenticated_requests == 3
    # both ends restarted from their key stores: the replay is still refused, the next is not
    restarted = LaserInterlock(InterlockSettings(), watermark=EmissionWatermark(controller_keys))
    assert not restarted.check_request(FunctionId.SOURCE_ENABLE_SIGNED, (first, counter, tag))
    next_counter, next_tag = EmissionSigner(node_keys).sign(first)
    assert next_counter == counter + 1 == 3
    assert restarted.check_request(FunctionId.SOURCE_ENABLE_SIGNED, (first, 3, next_tag))
    assert EmissionWatermark(controller_keys).highest == 3
