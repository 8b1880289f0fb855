"""ABORT_PASS mid-pass leaves no key at either end (security issue, finding 6).

On a037fab an operator's ABORT_PASS to the station at frame 45 of 60 made it emit BLOCK_ABORTED,
yet both ends went on to store and confirm a key. Now the aborted node tells the other end and
both end the pass keyless; the report says why.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from satqkd.broker import EmbeddedBroker
from satqkd.config import load_scenario
from satqkd.simulation import run_pass
from satqkd_core import dictionary as dct
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.telecommand_auth import TelecommandSigner

CLEAR = Path(__file__).resolve().parents[2] / "configs/scenarios/jinan1-xinglong-clear.yaml"


@pytest.mark.parametrize("node", ["payload", "ogs-xinglong"])
async def test_abort_pass_at_three_quarters_leaves_no_key_at_either_end(
    tmp_path: Path, node: str
) -> None:
    scenario = load_scenario(CLEAR)
    mission = scenario.mission.name
    plan_id = 1 + scenario.scenario.seed % 1_000_000
    sent: list[float] = []
    async with EmbeddedBroker() as broker, MessageBus(broker.url, "operator") as operator:

        async def abort() -> None:
            signer = TelecommandSigner.for_node(tmp_path / "keys" / "occ", node)
            fields = {"plan_id": plan_id, "reason": "operator abort at frame 45 of 60"}
            _, data = signer.sign("ABORT_PASS", fields)
            await operator.publish(dct.telecommand_topic(mission, node), data)

        tasks: list[asyncio.Task[None]] = []

        def progress(fraction: float, _text: str) -> None:
            if fraction >= 0.75 and not sent:
                sent.append(fraction)
                tasks.append(asyncio.get_running_loop().create_task(abort()))

        run = await run_pass(scenario, tmp_path, broker.url, progress, max_duration_s=60.0)
        await asyncio.gather(*tasks)
    assert sent, "the pass never reached three quarters"
    report = run.report
    assert report["key"]["secret_key_bits"] == 0
    assert "abort" in str(report["key"]["abort_reason"]).lower()
    station = scenario.station.name
    for store in (
        KeyStore(tmp_path / "keys" / "payload" / station),
        KeyStore(tmp_path / "keys" / f"ogs-{station}"),
    ):
        assert store.key_ids() == [], f"{store.directory} kept a key of the aborted pass"
    outcome = run.payload.outcome(station, plan_id)
    assert outcome is not None and not outcome.confirmed
    assert run.ogs.results[plan_id].key_id is None
    # both sessions were released: no pattern key, no per-detection arrays kept
    assert run.ogs.sessions == {} and run.payload.links[station].sessions == {}
    assert not run.payload.sequencer.has_pass(plan_id)
    assert all(chunk.x_bits is None for chunk in run.ogs.results[plan_id].chunks)
