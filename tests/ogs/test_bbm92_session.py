"""The station's BBM92 session (satqkd_ogs.bbm92_session): its tags go up in timing blocks with
the light time removed, compressed near their entropy; a malformed or mismatched coincidence
reply from the payload is refused, naming what was wrong, and a re-delivered one changes
nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drivers.interfaces import TagBuffer
from satqkd.api import with_start_after_aos
from satqkd.config import load_scenario
from satqkd.pass_physics import choose_pass, station_geometry
from satqkd.sim_bbm92 import bbm92_parameters
from satqkd.wiring import protocol_parameters
from satqkd_core.bbm92 import pack_bits
from satqkd_core.errors import ProtocolError
from satqkd_core.timing_compression import CompressedTiming, decode_timing, timing_entropy_bits
from satqkd_ogs.bbm92_session import Bbm92OgsSession
from satqkd_ogs.session import PassPlan
from satqkd_runtime.keystore import KeyStore
from tests.seeded_entropy import seeded_entropy_now

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "configs" / "scenarios" / "micius2020-bbm92-xinglong.yaml"
RATE_HZ = 2e4  # station tags per second


class RecordingChannel:
    """Stands in for the classical channel: keeps what the session sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    async def send(self, name: str, **fields: object) -> None:
        self.sent.append((name, fields))


@pytest.fixture(scope="module")
def setting():
    scenario = load_scenario(SCENARIO)
    tle, window = choose_pass(scenario)
    start = float(np.ceil(window.culmination_unix_s))
    plan = PassPlan(
        plan_id=3,
        mission=scenario.mission.name,
        station=scenario.station.name,
        tle_line1=tle[0],
        tle_line2=tle[1],
        aos_unix_s=window.aos_unix_s,
        los_unix_s=window.los_unix_s,
        qkd_start_unix_s=start,
        qkd_stop_unix_s=start + 12.0,
        repetition_rate_hz=5e6,
    )
    return with_start_after_aos(scenario, start - window.aos_unix_s), plan


def _session(setting, tmp_path: Path) -> Bbm92OgsSession:
    scenario, plan = setting
    session = Bbm92OgsSession(
        plan,
        station_geometry(scenario),
        RecordingChannel(),  # type: ignore[arg-type]
        KeyStore(tmp_path / "keys"),
        protocol_parameters(scenario.mission),
        entropy=seeded_entropy_now(1),
        sync_window_ps=1000.0,
        cascade_passes=16,
        reply_timeout_s=1.0,
        bbm92=bbm92_parameters(scenario),
    )
    session.tagger_epoch_unix_s = plan.qkd_start_unix_s - 1.0
    return session


async def _feed(session: Bbm92OgsSession, seconds: int) -> None:
    generator = np.random.default_rng(5)
    start = session.plan.qkd_start_unix_s
    for k in range(-1, seconds):  # the tagger runs from a second before QKD start
        n = generator.poisson(RATE_HZ)
        ts = np.sort(generator.integers(0, 10**12, n)) + (k + 1) * 10**12
        channel = generator.integers(1, 5, n).astype(np.uint8)
        await session.process_buffer(TagBuffer(channel, ts, start + k, start + k + 1))


async def test_timing_goes_up_in_blocks_without_the_light_time(setting, tmp_path: Path) -> None:
    session = _session(setting, tmp_path)
    await _feed(session, 12)
    sent = [fields for name, fields in session.channel.sent if name == "BBM92_TIMING"]
    # 12 s of QKD: one whole 10 s block, and the rest at QKD stop
    assert [(f["chunk"], f["block_start_ps"], f["block_stop_ps"]) for f in sent] == [
        (0, 0, 10**13),
        (1, 10**13, 12 * 10**12),
    ]
    b_ps, _basis = decode_timing(CompressedTiming.from_bytes(sent[0]["timing"]))
    # light time (~2 ms at culmination) removed: tags from QKD start on, none before
    assert b_ps[0] >= 0 and b_ps[-1] < 10**13
    assert b_ps.size == pytest.approx(10 * RATE_HZ, rel=0.02)
    entropy_bytes = (timing_entropy_bits(b_ps, 125) + b_ps.size) / 8
    assert len(sent[0]["timing"]) <= 1.10 * entropy_bytes
    assert session.figures.timing_blocks == 2


async def test_a_malformed_coincidence_reply_is_refused(setting, tmp_path: Path) -> None:
    session = _session(setting, tmp_path)
    await _feed(session, 11)  # block 0 complete once 10 s of timeline are in
    tags = session._blocks[0].channel.size

    def reply(index: list[int], basis: list[int], n: int | None = None) -> dict:
        return {
            "plan_id": 3, "chunk": 0, "n": len(index) if n is None else n,
            "index": np.asarray(index, np.uint32), "basis": pack_bits(np.asarray(basis)),
            "offset_ps": 12.0, "drift_ppb": 300.0, "significance": 20.0,
        }  # fmt: skip

    with pytest.raises(ProtocolError, match="block 0: indices malformed"):
        session.on_coincidences(reply([0, tags], [0, 1]))
    with pytest.raises(ProtocolError, match="indices not ascending"):
        session.on_coincidences(reply([5, 2], [0, 1]))
    with pytest.raises(ProtocolError, match="indices malformed"):
        session.on_coincidences(reply([1, 2], [0, 1], n=3))
    with pytest.raises(ProtocolError, match="1 bytes for 9 bits"):
        session.on_coincidences(reply(list(range(9)), [0] * 8))
    with pytest.raises(ProtocolError, match="block 4 never sent"):
        session.on_coincidences({**reply([1], [0]), "chunk": 4})
    session.on_coincidences(reply([1, 2, 3], [0, 0, 1]))
    kept = session._blocks[0].key_bits.size + session._blocks[0].test_bits.size
    session.on_coincidences(reply([4, 5, 6, 7], [0, 0, 1, 1]))  # re-delivered: ignored
    assert session._blocks[0].key_bits.size + session._blocks[0].test_bits.size == kept
    assert session.figures.coincidences == 3
    assert session.result.clock_drift_ppb == -300.0
