"""kill -9 of either daemon mid-pass, then a restart: the restarted daemon reports the pass that
was open when it died (PASS_ABANDONED, housekeeping `passes_abandoned_at_start`), ends it
without a key and sends ABORT; the other end, still running, ends the same pass keyless at
once (not after its own timeouts), and both ends take the next plan.

Real processes (`satqkd payload run`, `satqkd ogs run`) on the real-time clock against a real
Mosquitto (tests/reliability/standalone_pair.py). Kills happen before QKD start (plan loaded)
and while the station tags; the key-store steps (a key pending or confirmed at one end only)
are killed in-process in test_crash_at_key_steps.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from satqkd_runtime.bus import MessageBus
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.plan_registry import PlanRegistry
from tests.reliability.standalone_pair import (
    NODES,
    DaemonPair,
    key_files,
    load_plan,
    observe,
    plan_fields,
    until,
)

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(150)]

OTHER = {"payload": "station", "station": "payload"}

# the default run kills the station (the in-process default test of
# test_faults_in_simulated_time.py kills the payload); the rest are slow
CASES = [
    pytest.param("station", "tagging", id="station-while-tagging"),
    pytest.param("payload", "tagging", id="payload-while-tagging", marks=pytest.mark.slow),
    pytest.param("payload", "before-qkd", id="payload-before-qkd", marks=pytest.mark.slow),
    pytest.param("station", "before-qkd", id="station-before-qkd", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("victim", "phase"), CASES)
async def test_sigkill_mid_pass_then_restart_ends_the_pass_at_both_ends(
    victim: str, phase: str, mosquitto_url: str, tmp_path: Path, record_property
) -> None:
    pair = DaemonPair(tmp_path, mosquitto_url)
    pair.install_keys()
    survivor = OTHER[victim]
    plan_id = 31
    async with MessageBus(mosquitto_url, "occ-reliability") as occ:
        watcher = asyncio.create_task(observe(occ, pair))
        try:
            await asyncio.sleep(0.2)  # subscribed before the daemons start
            for which in NODES:
                pair.start(which)
            for which in NODES:
                await until(lambda w=which: pair.where(w, "HOUSEKEEPING"), f"{which} up", 60)
            qkd_in_s = 3.0 if phase == "tagging" else 60.0
            await load_plan(occ, pair, plan_fields(plan_id, qkd_in_s))
            if phase == "tagging":
                for which in NODES:
                    await until(lambda w=which: pair.where(w, "PASS_STARTED"), f"{which} on", 20)

            pair.kill(victim)
            killed_at = time.monotonic()
            assert PlanRegistry(_store(pair, victim)).open_ids() == [plan_id]  # died open
            await asyncio.sleep(0.5)  # the survivor goes on with the pass meanwhile
            assert not pair.where(survivor, "BLOCK_ABORTED")
            restarted_at = pair.start(victim)

            # the restarted daemon reports the pass it died in, and abandons it
            abandoned = await until(
                lambda: pair.where(victim, "PASS_ABANDONED", restarted_at), "PASS_ABANDONED", 60
            )
            assert f"plan {plan_id}" in abandoned[0].envelope.fields["text"]
            hk = await until(
                lambda: [
                    h
                    for h in pair.where(victim, "HOUSEKEEPING", restarted_at)
                    if h.envelope.fields["passes_abandoned_at_start"] == 1
                ],
                "housekeeping counts the abandoned pass",
                30,
            )
            assert hk[-1].envelope.fields["passes_open"] == 0

            # the survivor ends the same pass keyless on the ABORT, not on a timeout
            ended = await until(
                lambda: pair.where(survivor, "BLOCK_ABORTED", restarted_at), "survivor ends", 30
            )
            assert "restarted" in ended[0].envelope.fields["text"]
            summary = "OGS_PASS_SUMMARY" if survivor == "station" else "PAYLOAD_PASS_SUMMARY"
            await until(lambda: pair.where(survivor, summary, plan_id=plan_id), "summary", 10)
            resolved_at = ended[0].wall_s
            hk = await until(
                lambda: [
                    h
                    for h in pair.where(survivor, "HOUSEKEEPING", resolved_at)
                    if h.envelope.fields["passes_open"] == 0
                ],
                "survivor's housekeeping shows no open pass",
                10,
            )

            # no key of the pass at either end, nothing left open in either plan record
            for which in NODES:
                store = _store(pair, which)
                await until(lambda s=store: PlanRegistry(s).open_ids() == [], "plan closed", 10)
                assert key_files(store.directory) == [] and store.total_bits(state=None) == 0

            # the next plan is taken by both, and the old id is still refused
            await load_plan(occ, pair, plan_fields(plan_id + 1, 60.0))
            record_property("victim_restart_to_abandoned_s", abandoned[0].wall_s - restarted_at)
            record_property("kill_to_survivor_ended_s", resolved_at - killed_at)
            record_property("restart_to_survivor_ended_s", resolved_at - restarted_at)
            print(
                f"\n{victim} killed {phase}: restart -> PASS_ABANDONED "
                f"{abandoned[0].wall_s - restarted_at:.2f} s, restart -> {survivor} ended "
                f"{resolved_at - restarted_at:.2f} s "
                f"(kill -> ended {resolved_at - killed_at:.2f} s)"
            )
        except BaseException:
            for which in NODES:
                print(f"--- {which} log ---\n{pair.log(which)[-3000:]}")
            raise
        finally:
            pair.stop_all()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


def _store(pair: DaemonPair, which: str) -> KeyStore:
    return KeyStore(pair.payload_keys / "xinglong" if which == "payload" else pair.ogs_keys)
