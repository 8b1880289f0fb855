"""The payload and station daemons of one simulated pass, built as `satqkd sim pass` builds
them (seeded entropy, telecommand keys installed), and the signed plan sent to both: for tests
that drive a pass by hand (a link cut, a silent station)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware_shims.source_sequencer import SourceSequencer
from satqkd.config import Scenario, load_scenario, station_path
from satqkd.instruments_config import validate_instruments
from satqkd.pass_physics import PassPhysics, plan_pass
from satqkd.simulation import build_bench, scenario_benches
from satqkd.wiring import ogs_settings, pass_plan_fields, preshared_auth_key
from satqkd_core import dictionary as dct
from satqkd_core import rng
from satqkd_ogs.daemon import OgsDaemon
from satqkd_payload.daemon import PayloadDaemon
from satqkd_payload.settings import PayloadSettings
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.qkd_channel import install_preshared_key
from tests.seeded_entropy import seeded_entropy
from tests.tc_signing import OccSigner, install_tc_key


@dataclasses.dataclass
class PassSetup:
    """What both daemons of a hand-driven pass share: the scenario (QKD from 190 s after AOS),
    its physics, the station's key store, the simulated clock and the payload's sequencer."""

    scenario: Scenario
    physics: PassPhysics
    ogs_store: KeyStore
    clock: SimClock
    sequencer: SourceSequencer


def pass_setup(tmp_path: Path, scenario_path: Path, seed: int, max_duration_s: float) -> PassSetup:
    """Get: the scenario's pass from 190 s after AOS for `max_duration_s`, the pre-shared
    authentication key installed at both ends, the clock at the pass's start."""
    scenario = load_scenario(scenario_path, seed=seed)
    simulation = scenario.scenario.simulation.model_copy(update={"qkd_start_after_aos_s": 190.0})
    scenario = scenario.model_copy(
        update={"scenario": scenario.scenario.model_copy(update={"simulation": simulation})}
    )
    physics = plan_pass(scenario, max_duration_s=max_duration_s)
    mission = scenario.mission
    preshared = preshared_auth_key(seed, 4096)
    install_preshared_key(KeyStore(tmp_path / "payload" / scenario.station.name), preshared)
    ogs_store = KeyStore(tmp_path / "ogs")
    install_preshared_key(ogs_store, preshared)
    sequencer = SourceSequencer(
        rng.derive_key(seed, "payload/qrng"),
        mission.source.probabilities,
        mission.source.basis_x_probability,
    )
    return PassSetup(scenario, physics, ogs_store, SimClock(physics.clock_start_unix_s), sequencer)


async def in_process_bench(setup: PassSetup, stack: contextlib.AsyncExitStack) -> Any:
    """Get: the source and the tagger in-process, the station's ATP out of the loop."""
    tagger = {"driver": "sim_time_tagger", "resource": "in-process://tagger"}
    benches = {
        "payload": scenario_benches(setup.scenario)["payload"],
        "station": validate_instruments({"name": "t", "instruments": {"tagger": tagger}}, "t"),
    }
    bench, _ = await build_bench(
        benches, setup.scenario, setup.physics, setup.clock, setup.sequencer, stack
    )
    return bench


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Wait (wall time) until `condition()` holds; AssertionError naming `what` if it does not."""
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting: {what}") from None


async def daemon_pair(
    tmp_path: Path,
    scenario: Scenario,
    settings: PayloadSettings,
    buses: tuple[Any, Any],
    clock: SimClock,
    bench: Any,
    sequencer: Any,
    ogs_store: KeyStore,
    seed: int,
) -> tuple[PayloadDaemon, OgsDaemon]:
    """Get: the payload daemon (with `settings`) and the station daemon (20 s reply timeout)."""
    mission, station = scenario.mission, scenario.station
    payload = PayloadDaemon(
        settings,
        buses[0],
        clock,
        bench.source,
        tmp_path / "payload",
        await seeded_entropy(rng.derive_key(seed, "payload/entropy")),
        sequencer,
        tc_verifier=install_tc_key(tmp_path / "payload", tmp_path / "occ", "payload"),
    )
    ogs = OgsDaemon(
        dataclasses.replace(
            ogs_settings(mission, station, station_path(scenario)), reply_timeout_s=20.0
        ),
        buses[1],
        clock,
        bench.tagger,
        ogs_store,
        await seeded_entropy(rng.derive_key(seed, "ogs/entropy")),
        tc_verifier=install_tc_key(tmp_path / "ogs", tmp_path / "occ", f"ogs-{station.name}"),
    )
    return payload, ogs


async def send_plan(
    occ: MessageBus, tmp_path: Path, scenario: Scenario, physics: PassPhysics, plan_id: int
) -> None:
    """Sign the pass plan as the control centre and send it to both daemons."""
    plan = pass_plan_fields(plan_id, scenario, physics)
    signer = OccSigner(tmp_path / "occ")
    for node in ("payload", f"ogs-{scenario.station.name}"):
        await occ.publish(
            dct.telecommand_topic(scenario.mission.name, node),
            signer.sign(node, "LOAD_PASS_PLAN", **plan),
        )
