"""The ground link drops mid-pass: Mosquitto is stopped while the payload emits. The payload
daemon keeps running, puts its source in its safe state once the broker has been away for
`ground_link_timeout_s`, reports SOURCE_SAFE_STATE after the broker is back, and the pass ends
on both ends without a key (never with two different keys)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
OUTAGE_FRAME = 30  # the broker stops at the start of this frame (of 45)
TIMEOUT_S = 5.0  # the mission default: the station reports lag its tagging by 1-2 s

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(120)]


def _fast_bus(url: str, client_id: str) -> MessageBus:
    return MessageBus(url, client_id, reconnect_min_s=0.05, reconnect_max_s=0.3)


async def test_broker_outage_mid_pass_safes_the_source_and_ends_the_pass_without_a_key(
    mosquitto_factory: Callable[..., Any], tmp_path: Path
) -> None:
    broker = mosquitto_factory(persistence=True)  # sessions (and queued QoS 1) survive restart
    setup = pass_setup(tmp_path, CLEAR, SEED, max_duration_s=45.0)
    scenario, physics, ogs_store = setup.scenario, setup.physics, setup.ogs_store
    clock, sequencer = setup.clock, setup.sequencer
    mission, station = scenario.mission, scenario.station
    async with contextlib.AsyncExitStack() as stack:
        bench = await in_process_bench(setup, stack)
        payload_bus = await stack.enter_async_context(_fast_bus(broker.url, "payload"))
        ogs_bus = await stack.enter_async_context(_fast_bus(broker.url, "ogs"))
        occ = await stack.enter_async_context(_fast_bus(broker.url, "occ"))
        await occ.subscribe(f"satqkd/{mission.name}/+/tm/#")
        await occ.subscribe(f"satqkd/{mission.name}/payload/evt")
        seen: list[tuple[str, Any]] = []

        async def collect() -> None:
            async for message in occ.messages():
                seen.append((message.topic, decode_envelope(message.payload)))

        collector = asyncio.create_task(collect())
        settings = dataclasses.replace(payload_settings(mission), ground_link_timeout_s=TIMEOUT_S)
        payload, ogs = await daemon_pair(
            tmp_path, scenario, settings, (payload_bus, ogs_bus),
            clock, bench, sequencer, ogs_store, SEED,
        )  # fmt: skip
        daemons = [asyncio.create_task(payload.run()), asyncio.create_task(ogs.run())]
        try:
            await asyncio.sleep(0.1)  # both daemons subscribed
            plan_id = 1 + SEED
            await send_plan(occ, tmp_path, scenario, physics, plan_id)

            def acks() -> list[bool]:
                return [e.fields["accepted"] for t, e in seen if t.endswith("/tm/tc_ack")]

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
            held: list[TagBuffer] = []  # frames that pass while the broker is away
            emitting_by_frame = []
            for k in range(physics.n_frames):
                if k == OUTAGE_FRAME:
                    broker.stop()
                    await until(lambda: not payload_bus.connected, "the payload sees it")
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
                buffer = TagBuffer(channel, timestamp_ps, t0, t0 + physics.frame_s)
                if k >= OUTAGE_FRAME and not broker.running:
                    held.append(buffer)
                    if not emitting:  # safed: the broker comes back for the rest
                        assert not daemons[0].done()  # the payload daemon keeps running
                        assert payload.counters.ground_link_safings == 1
                        broker.start()
                        await until(lambda: payload_bus.connected, "the payload reconnects")
                        for late in held:
                            await bench.feed(late)
                    continue
                await bench.feed(buffer)
                # in real time the station's reports follow its tagging within a frame or so,
                # and the payload answers each (it safes its source when its station is silent)
                await until(
                    lambda k=k: (
                        (
                            plan_id not in ogs.sessions
                            or len(ogs.sessions[plan_id].result.chunks) >= k
                        )
                        and (k >= OUTAGE_FRAME or channel_out.sent_messages - sent_before >= k)
                    ),
                    "the station reports, the payload answers",
                )

            # the source went safe about TIMEOUT_S of simulated time after the broker stopped
            first_dark = emitting_by_frame.index(False)
            assert OUTAGE_FRAME + TIMEOUT_S - 1 <= first_dark <= OUTAGE_FRAME + TIMEOUT_S + 1
            assert not any(emitting_by_frame[first_dark:])

            def event_texts(name: str) -> list[str]:
                event_id = dct.EVENTS[name].id
                return [
                    str(e.fields["text"])
                    for t, e in seen
                    if t.endswith("/payload/evt") and e.fields["event_id"] == event_id
                ]

            await until(lambda: event_texts("SOURCE_SAFE_STATE"), "SOURCE_SAFE_STATE arrives")
            safe_state = event_texts("SOURCE_SAFE_STATE")[0]
            assert safe_state.startswith("ground link lost: broker unreachable for ")
            safed_at = float(safe_state.split("source safed at ")[1].split(";")[0])
            assert safed_at == physics.qkd_start_unix_s + first_dark * physics.frame_s
            assert f"plan {plan_id} with {station.name} ends without a key" in safe_state

            await clock.advance_to(physics.window.los_unix_s)
            await asyncio.wait_for(ogs.pass_done[plan_id].wait(), 60.0)
            await until(
                lambda: payload.outcome(station.name, plan_id) is not None,
                "the payload ends the pass",
            )
            outcome = payload.outcome(station.name, plan_id)
            assert outcome is not None
        finally:
            for task in [*daemons, collector]:
                task.cancel()
            await asyncio.gather(*daemons, collector, return_exceptions=True)

    ogs_result = ogs.results[plan_id]
    assert ogs_result.abort_reason is not None
    assert ogs_result.abort_reason.startswith(
        f"payload aborted: source emission interrupted: ground link lost for {TIMEOUT_S:g} s"
    )
    assert outcome.abort_reason is not None
    assert outcome.abort_reason.startswith("source emission interrupted: ground link")
    assert ogs_result.key_id is None and outcome.key_id is None
    assert ogs_store.total_bits() == 0
    assert KeyStore(tmp_path / "payload" / station.name).total_bits() == 0
    assert payload.counters.ground_link_losses == 1
    assert ogs_result.detections > 0 and len(ogs_result.chunks) == physics.n_frames
