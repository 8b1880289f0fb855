"""The payload and station daemons of one simulated pass, built as `satqkd sim pass` builds
them (seeded entropy, telecommand keys installed), and the signed plan sent to both: for tests
that drive a pass by hand (a link cut, a silent station)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from satqkd.config import Scenario, station_path
from satqkd.pass_physics import PassPhysics
from satqkd.wiring import ogs_settings, pass_plan_fields
from satqkd_core import dictionary as dct
from satqkd_core import rng
from satqkd_ogs.daemon import OgsDaemon
from satqkd_payload.daemon import PayloadDaemon
from satqkd_payload.settings import PayloadSettings
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from tests.seeded_entropy import seeded_entropy
from tests.tc_signing import OccSigner, install_tc_key


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
