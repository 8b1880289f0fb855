"""The station falls silent while the payload's own broker stays up (a cut bridge between an
on-board broker and the ground: issue 13): the payload's ground-link watchdog is fed by what
its station sends, authenticated, during emission (a DETECTION_REPORT every frame), so it safes
the source `ground_link_timeout_s` after the station's last message, and the pass ends without
a key at both ends once the station's messages come through again (as a bridge delivers what
it queued). In simulated time, against a real Mosquitto; the station's uplink is held back by
its bus, as a cut bridge holds it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.interfaces import TagBuffer
from satqkd.wiring import payload_settings
from satqkd_core import dictionary as dct
from satqkd_core.codec import decode_envelope
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.keystore import KeyStore
from tests.daemon_pair import daemon_pair, in_process_bench, pass_setup, send_plan, until

REPO = Path(__file__).resolve().parents[2]
CLEAR = REPO / "configs" / "scenarios" / "jinan1-xinglong-clear.yaml"
SEED = 5
CUT_FRAME = 10  # the station's uplink is cut at the start of this frame (of 30)
TIMEOUT_S = 5.0  # the mission's ground_link_timeout_s (payload_settings' default)

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(120)]


class CutUplink(MessageBus):
    """The station's bus: while `cut`, its QKD uplink is held back (a cut bridge queues it)
    and published in order once the cut is over; its connection to the broker stays up."""

    cut = False
    held: list[tuple[str, bytes, int]]

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        if self.cut and "/qkd/" in topic:
            self.held.append((topic, payload, qos))
            return
        await super().publish(topic, payload, qos)

    async def restore(self) -> None:
        while self.held:  # in order: what is published meanwhile queues behind
            topic, payload, qos = self.held.pop(0)
            await super().publish(topic, payload, qos)
        self.cut = False


async def test_a_silent_station_safes_the_source_with_the_broker_up(
    mosquitto_factory: Callable[..., Any], tmp_path: Path
) -> None:
    broker = mosquitto_factory()
    setup = pass_setup(tmp_path, CLEAR, SEED, max_duration_s=30.0)
    scenario, physics, ogs_store = setup.scenario, setup.physics, setup.ogs_store
    clock, sequencer = setup.clock, setup.sequencer
    mission, station = scenario.mission, scenario.station
    settings = payload_settings(mission)
    assert settings.ground_link_timeout_s == TIMEOUT_S
    async with contextlib.AsyncExitStack() as stack:
        bench = await in_process_bench(setup, stack)
        fast = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.3}
        payload_bus = await stack.enter_async_context(MessageBus(broker.url, "payload", **fast))
        ogs_bus = CutUplink(broker.url, "ogs", **fast)
        ogs_bus.held = []
        await stack.enter_async_context(ogs_bus)
        occ = await stack.enter_async_context(MessageBus(broker.url, "occ", **fast))
        await occ.subscribe(f"satqkd/{mission.name}/+/tm/#")
        await occ.subscribe(f"satqkd/{mission.name}/payload/evt")
        seen: list[tuple[str, Any]] = []

        async def collect() -> None:
            async for message in occ.messages():
                seen.append((message.topic, decode_envelope(message.payload)))

        collector = asyncio.create_task(collect())
        payload, ogs = await daemon_pair(
            tmp_path, scenario, settings, (payload_bus, ogs_bus),
            clock, bench, sequencer, ogs_store, SEED,
        )  # fmt: skip
        daemons = [asyncio.create_task(payload.run()), asyncio.create_task(ogs.run())]
        try:
            await asyncio.sleep(0.1)  # both daemons subscribed
            plan_id = 1 + SEED
            await send_plan(occ, tmp_path, scenario, physics, plan_id)
            acks = lambda: [e.fields["accepted"] for t, e in seen if t.endswith("/tm/tc_ack")]  # noqa: E731
            await until(lambda: len(acks()) == 2, "both ends acknowledge the plan")
            assert all(acks())

            await clock.advance_to(physics.qkd_start_unix_s - 1.0)
            await until(bench.tagger_started.is_set, "the station starts its tagger")
            await clock.advance_to(physics.qkd_start_unix_s)
            await until(bench.source_emitting, "the payload enables its source")
            epoch = bench.tagger_epoch()
            assert epoch is not None

            channel_out = payload.links[station.name].channel
            sent_before = channel_out.sent_messages
            emitting_by_frame = []
            for k in range(physics.n_frames):
                if k == CUT_FRAME:  # cut once every report before it has been answered
                    await until(
                        lambda: channel_out.sent_messages - sent_before >= CUT_FRAME, "answers"
                    )
                    ogs_bus.cut = True
                t0 = physics.qkd_start_unix_s + k * physics.frame_s
                emitting = bench.source_emitting()
                emitting_by_frame.append(emitting)
                await clock.advance_to(t0 + physics.frame_s)
                if emitting:
                    channel, timestamp_ps = physics.detections_for_frame(
                        k, sequencer.pattern, epoch
                    )
                else:
                    channel, timestamp_ps = np.zeros(0, np.uint8), np.zeros(0, np.int64)
                await bench.feed(TagBuffer(channel, timestamp_ps, t0, t0 + physics.frame_s))
                # in real time the station's reports follow its tagging within a frame or so,
                # and the payload answers each (SIFT_RESULT): the clock waits for them
                await until(
                    lambda k=k: (
                        (
                            plan_id not in ogs.sessions
                            or len(ogs.sessions[plan_id].result.chunks) >= k
                        )
                        and (k >= CUT_FRAME or channel_out.sent_messages - sent_before >= k)
                    ),
                    "the station reports, the payload answers",
                )
                assert payload_bus.connected and ogs_bus.connected  # the brokers stay up
            # safed TIMEOUT_S after the station's last report reached the payload (that of the
            # frame before the cut, at the cut), and dark from then on
            first_dark = emitting_by_frame.index(False)
            assert CUT_FRAME + TIMEOUT_S <= first_dark <= CUT_FRAME + TIMEOUT_S + 1, first_dark
            assert not any(emitting_by_frame[first_dark:])
            assert payload.counters.ground_link_safings == 1
            assert payload.counters.ground_link_losses == 0  # its broker never went away
            event_id = dct.EVENTS["SOURCE_SAFE_STATE"].id
            safe_states = lambda: [  # noqa: E731
                str(e.fields["text"])
                for t, e in seen
                if t.endswith("/payload/evt") and e.fields["event_id"] == event_id
            ]
            await until(safe_states, "SOURCE_SAFE_STATE arrives")
            text = safe_states()[0]
            assert text.startswith(f"ground link lost: nothing authenticated from {station.name}")
            assert f"plan {plan_id} with {station.name} ends without a key" in text

            await ogs_bus.restore()  # the bridge is back: what it queued goes through
            await clock.advance_to(physics.window.los_unix_s)
            await asyncio.wait_for(ogs.pass_done[plan_id].wait(), 60.0)
            await until(
                lambda: payload.outcome(station.name, plan_id) is not None,
                "the payload ends the pass",
            )
            outcome = payload.outcome(station.name, plan_id)
        finally:
            for task in [*daemons, collector]:
                task.cancel()
            await asyncio.gather(*daemons, collector, return_exceptions=True)

    # both ends ended it aborted, for the same stated reason, and neither holds a key
    interrupted = f"source emission interrupted: station {station.name} silent for 5 s"
    ogs_result = ogs.results[plan_id]
    assert ogs_result.abort_reason is not None
    assert ogs_result.abort_reason.startswith(f"payload aborted: {interrupted}")
    assert outcome is not None and outcome.abort_reason is not None
    assert outcome.abort_reason.startswith(interrupted)
    assert ogs_result.key_id is None and outcome.key_id is None
    assert ogs_store.total_bits() == 0
    assert KeyStore(tmp_path / "payload" / station.name).total_bits() == 0
