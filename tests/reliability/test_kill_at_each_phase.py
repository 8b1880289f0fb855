"""kill -9 of either daemon process at each protocol phase after tagging, then a restart: at
sifting (a chunk's DETECTION_REPORT or SIFT_RESULT mid-window), at parameter estimation, at
error correction (Cascade and LDPC), at verification and privacy amplification, and at each
step of key confirmation. Both ends end the pass in the same stated state: abandoned, no key
of the pass at either end (decision 0021: the restarted daemon abandons the plan it died in,
the survivor destroys whatever it holds of it on the ABORT); no file left behind (no key,
metadata, `.tmp` or quarantined file), no plan open, no session open; both take the next plan.

Real processes on the real clock against a real Mosquitto (standalone_pair.py), the station
reading a real pass's photons from a TT/1 emulator fed by the physics (physics_feed.py). The
victim is started through die_before.py: it SIGKILLs itself just before its COUNT-th publish of
the named message, so the kill lands at that step every run. About a minute a case: slow.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from satqkd_runtime.bus import MessageBus
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.plan_registry import PlanRegistry
from tests.reliability.physics_feed import SEED, PhysicsFeed, mission_file
from tests.reliability.standalone_pair import NODES, DaemonPair, load_plan, observe, until

pytestmark = [pytest.mark.slow, pytest.mark.mosquitto, pytest.mark.timeout(300)]

OTHER = {"payload": "station", "station": "payload"}
SIFT_CHUNK = 10  # of 30: mid-window, the source still emitting
# (phase, reconciliation, victim, it dies before its COUNT-th publish of NAME, COUNT)
CASES = [
    pytest.param("sifting", "cascade", "station", "DETECTION_REPORT", SIFT_CHUNK,
                 id="sifting-station"),
    pytest.param("sifting", "cascade", "payload", "SIFT_RESULT", SIFT_CHUNK, id="sifting-payload"),
    pytest.param("estimation", "cascade", "station", "PE_COUNTS", 1, id="estimation-station"),
    pytest.param("cascade", "cascade", "station", "EC_QUERY", 1, id="cascade-station"),
    pytest.param("cascade", "cascade", "payload", "EC_REPLY", 1, id="cascade-payload"),
    pytest.param("ldpc", "ldpc", "station", "LDPC_START", 1, id="ldpc-station"),
    pytest.param("ldpc", "ldpc", "payload", "LDPC_SYNDROMES", 1, id="ldpc-payload"),
    pytest.param("verification", "cascade", "payload", "VERIFY", 1, id="verify-payload"),
    pytest.param("verification", "cascade", "station", "VERIFY_RESULT", 1, id="verify-station"),
    pytest.param("amplification", "cascade", "payload", "PA_SEED", 1,
                 id="pa-payload-key-pending-at-payload"),
    pytest.param("confirmation", "cascade", "station", "KEY_STORED", 1,
                 id="confirm-station-key-pending-at-both"),
    pytest.param("confirmation", "cascade", "payload", "KEY_CONFIRMED", 1,
                 id="confirm-payload-confirmed-station-pending"),
    pytest.param("confirmation", "cascade", "station", "event:KEY_STORED", 1,
                 id="confirm-station-confirmed-at-both"),
]  # fmt: skip
PLAN_ID = 61
QKD_IN_S = 8.0  # the plan is loaded this long before its window


def _store(pair: DaemonPair, which: str) -> KeyStore:
    return KeyStore(pair.payload_keys / "xinglong" if which == "payload" else pair.ogs_keys)


def _left_files(store: KeyStore) -> list[str]:
    """Get: key, metadata, temporary and quarantined files in a key store directory."""
    names = [p.name for p in store.directory.glob("*") if p.suffix in (".key", ".json", ".tmp")]
    names += [f"quarantine/{p.name}" for p in store.directory.glob("quarantine/*")]
    return sorted(names)


@pytest.mark.parametrize(("phase", "reconciliation", "victim", "before", "count"), CASES)
async def test_kill_at_phase_then_restart_abandons_the_pass_at_both_ends(
    phase: str,
    reconciliation: str,
    victim: str,
    before: str,
    count: int,
    mosquitto_url: str,
    tmp_path: Path,
) -> None:
    survivor = OTHER[victim]
    async with PhysicsFeed(reconciliation) as feed:
        pair = DaemonPair(
            tmp_path,
            mosquitto_url,
            mission_file=mission_file(feed.scenario),
            mission=feed.scenario.mission.name,
        )
        pair.install_keys()
        seeded = ["--insecure-seeded-entropy", "--seed"]
        pair.extra_args = {
            "payload": [*seeded, str(SEED)],
            "station": ["--instruments", str(feed.bench(tmp_path)), *seeded, str(SEED + 1)],
        }
        async with MessageBus(mosquitto_url, "occ-reliability") as occ:
            watcher = asyncio.create_task(observe(occ, pair))
            feeding: asyncio.Task[None] | None = None
            try:
                await asyncio.sleep(0.2)  # subscribed before the daemons start
                for which in NODES:
                    runner = ("-m", "tests.reliability.die_before", before, str(count))
                    pair.start(which, runner if which == victim else ("-m", "satqkd.cli"))
                for which in NODES:
                    await until(lambda w=which: pair.where(w, "HOUSEKEEPING"), f"{which} up", 60)
                await load_plan(occ, pair, feed.plan(PLAN_ID, QKD_IN_S))
                payload = pair.processes["payload"]
                feeding = asyncio.create_task(feed.feed(PLAN_ID, lambda: payload.poll() is None))

                # the victim kills itself at the step (a real SIGKILL: status -9)
                process = pair.processes[victim]
                await until(lambda: process.poll() is not None, f"{victim} dies at {before}", 150)
                assert process.returncode == -9, pair.log(victim)[-2000:]
                killed_at = time.monotonic()
                assert PlanRegistry(_store(pair, victim)).open_ids() == [PLAN_ID]  # died open
                restarted_at = pair.start(victim)

                # the restarted daemon abandons the pass it died in; the survivor ends it too
                abandoned = await until(
                    lambda: pair.where(victim, "PASS_ABANDONED", restarted_at), "abandoned", 60
                )
                assert f"plan {PLAN_ID}" in abandoned[0].envelope.fields["text"]
                summary = "OGS_PASS_SUMMARY" if survivor == "station" else "PAYLOAD_PASS_SUMMARY"
                await until(
                    lambda: pair.where(survivor, summary, plan_id=PLAN_ID), "survivor ended", 60
                )
                for which in NODES:  # and says so in its housekeeping: nothing open
                    await until(
                        lambda w=which: [
                            h for h in pair.where(w, "HOUSEKEEPING", time.monotonic() - 0.5)
                            if h.envelope.fields["passes_open"] == 0
                        ],
                        f"{which}'s housekeeping shows no open pass",
                        30,
                    )  # fmt: skip

                # the stated end state: abandoned at both ends, nothing of the pass left
                for which in NODES:
                    store = _store(pair, which)
                    await until(lambda s=store: PlanRegistry(s).open_ids() == [], "plan closed", 10)
                    await until(lambda s=store: _left_files(s) == [], f"{which} files gone", 10)
                    assert store.total_bits(state=None) == 0 and store.key_ids(state=None) == []
                assert not pair.where(victim, "KEY_STORED", restarted_at)
                ended_s = time.monotonic() - killed_at

                # both take the next plan (and still refuse the old one's id)
                await load_plan(occ, pair, feed.plan(PLAN_ID + 1, 60.0))
                print(
                    f"\n{phase} ({reconciliation}): {victim} killed before {before} #{count}; "
                    f"both ends abandoned the pass, no key, no file left; "
                    f"{ended_s:.1f} s from the kill to both ended and clean "
                    f"({feed.signal_frames} frames of signal fed)"
                )
            except BaseException:
                for which in NODES:
                    print(f"--- {which} log ---\n{pair.log(which)[-4000:]}")
                raise
            finally:
                pair.stop_all()
                if feeding is not None:
                    feeding.cancel()
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
                if feeding is not None:
                    await asyncio.gather(feeding, return_exceptions=True)
