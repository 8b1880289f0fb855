"""Every pass of one payload process has its own pulse pattern (security issue, finding 1).

On a037fab `satqkd payload run` keyed one counter-based generator with 63 bits for the whole
process and restarted the pulse index at 0 every pass: pass A's public sifting messages (the
keep mask against the station's bases, the intensity labels, the test-basis bits) predicted
pass B's basis and intensity at every re-used pulse index with accuracy 1.000. Now the daemon
draws a fresh 256-bit pattern key from its entropy source when each plan is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.interfaces import EntropyFailure
from firmware_shims.source_sequencer import PATTERN_KEY_BYTES, SourceSequencer
from satqkd.config import MissionConfig, load_model
from satqkd.wiring import payload_settings, preshared_auth_key
from satqkd_payload import key_lifecycle as payload_daemon
from satqkd_payload.daemon import PayloadDaemon
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.qkd_channel import install_preshared_key
from sim_backends.instruments import SimPulsedSource
from tests.ogs.test_ldpc_session import LoopbackBus, PayloadBus
from tests.seeded_entropy import seeded_entropy
from tests.tc_signing import OccSigner, install_tc_key

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_796_083_200.0
TLE = (
    "1 99999U 26001A   26335.00000000  .00000000  00000-0  00000-0 0  9990",
    "2 99999  97.4000  30.0000 0001000   0.0000   0.0000 15.20000000    09",
)


def test_the_daemon_and_the_sequencer_agree_on_the_key_length() -> None:
    assert payload_daemon.PATTERN_KEY_BYTES == PATTERN_KEY_BYTES == 32


async def _payload(tmp_path: Path) -> tuple[PayloadDaemon, SourceSequencer, OccSigner, Any]:
    """A payload daemon on a loopback bus with a station link and a telecommand key."""
    mission = load_model(MissionConfig, ROOT / "configs/missions/jinan1.yaml")
    source_config = mission.source
    keys = tmp_path / "keys"
    install_preshared_key(KeyStore(keys / "xinglong"), preshared_auth_key(1, 5000))
    verifier = install_tc_key(keys, tmp_path / "occ", "payload")
    clock = SimClock(T0)
    sequencer = SourceSequencer(
        None, source_config.probabilities, source_config.basis_x_probability
    )
    laser = SimPulsedSource("laser", sequencer.pattern, clock)
    await laser.connect()
    entropy = await seeded_entropy(5)
    daemon = PayloadDaemon(
        payload_settings(mission),
        PayloadBus(LoopbackBus()),  # type: ignore[arg-type]
        clock,
        laser,
        keys,
        entropy,
        sequencer,
        tc_verifier=verifier,
    )
    return daemon, sequencer, OccSigner(tmp_path / "occ"), entropy


async def _load_plan(daemon: PayloadDaemon, occ: OccSigner, plan_id: int) -> None:
    plan = {
        "plan_id": plan_id, "mission": "jinan1", "station": "xinglong",
        "tle_line1": TLE[0], "tle_line2": TLE[1],
        "aos_unix_s": T0 + 1000 * plan_id, "los_unix_s": T0 + 1000 * plan_id + 600,
        "qkd_start_unix_s": T0 + 1000 * plan_id + 100,
        "qkd_stop_unix_s": T0 + 1000 * plan_id + 400,
        "repetition_rate_hz": daemon.settings.repetition_rate_hz,
    }  # fmt: skip
    signed = occ.sign("payload", "LOAD_PASS_PLAN", **plan)
    await daemon._dispatch(daemon.runtime.telecommand_topic, signed)
    assert daemon.session("xinglong", plan_id) is not None


async def test_two_passes_of_one_payload_process_have_independent_patterns(
    tmp_path: Path,
) -> None:
    daemon, sequencer, occ, entropy = await _payload(tmp_path)
    for plan_id in (1, 2):
        await _load_plan(daemon, occ, plan_id)
    # 256 fresh bits per pass, nothing derived from a process-wide seed
    assert entropy.drawn_bytes["pattern-key"] == 2 * PATTERN_KEY_BYTES
    # what an observer learns of pass A (basis, bit, intensity of every pulse: more than the
    # sifting messages disclose) predicts pass B at the same pulse indices by chance only
    index = np.arange(0, 400_000, dtype=np.int64)
    a, b = sequencer.pattern_of(1, index), sequencer.pattern_of(2, index)
    p_x = sequencer.basis_x_probability
    chance_basis = p_x**2 + (1 - p_x) ** 2
    chance_intensity = float(np.sum(np.square(sequencer.intensity_probabilities)))
    assert abs(np.mean(a.basis == b.basis) - chance_basis) < 0.005
    assert abs(np.mean(a.bit == b.bit) - 0.5) < 0.005
    assert abs(np.mean(a.intensity == b.intensity) - chance_intensity) < 0.005
    # the raw key bit of a pulse sent in the key basis in both passes agrees by chance only
    both_x = (a.basis == 0) & (b.basis == 0)
    assert abs(np.mean(a.bit[both_x] == b.bit[both_x]) - 0.5) < 0.01
    for task in list(daemon._tasks):
        task.cancel()


async def test_ended_passes_leave_nothing_behind_but_a_bounded_record(tmp_path: Path) -> None:
    daemon, sequencer, occ, entropy = await _payload(tmp_path)
    for plan_id in range(1, 101):
        await _load_plan(daemon, occ, plan_id)
        await daemon._abort_sessions(plan_id, "operator abort")
    # every session and pattern key released; how the last 64 passes ended is remembered
    assert daemon.links["xinglong"].sessions == {}
    assert not any(sequencer.has_pass(plan_id) for plan_id in range(1, 101))
    assert len(daemon.ended) == 64 and ("xinglong", 100) in daemon.ended
    assert daemon.outcome("xinglong", 100).abort_reason == "operator abort"
    assert entropy.drawn_bytes["pattern-key"] == 100 * PATTERN_KEY_BYTES
    for task in list(daemon._tasks):
        task.cancel()


async def test_a_failed_entropy_source_refuses_the_plan_and_says_so(tmp_path: Path) -> None:
    daemon, sequencer, occ, entropy = await _payload(tmp_path)

    async def failing_read(n_bytes: int, purpose: str) -> bytes:
        raise EntropyFailure("qrng: repetition count test failed")

    entropy.read = failing_read  # type: ignore[method-assign]
    plan_id = 7
    with pytest.raises(AssertionError):  # no session: the plan was refused
        await _load_plan(daemon, occ, plan_id)
    assert daemon.runtime.counters.events.get("ENTROPY_SOURCE_FAILURE") == 1
    assert daemon.runtime.counters.tc_rejected == 1
    assert not sequencer.has_pass(plan_id)
