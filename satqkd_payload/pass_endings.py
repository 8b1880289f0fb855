"""How the payload's passes end, as a part of `PayloadDaemon`: keyless aborts (the station told),
a finished session's end reported (BLOCK_ABORTED or KEY_STORED, PAYLOAD_PASS_SUMMARY) and
released, a station that falls silent abandoned, a late ABORT from the station, and at start-up
what a previous run left (pending keys discarded, open passes abandoned, ABORT sent).

Every report the broker cannot take now goes once it is back, bounded by the session timeout.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from satqkd_payload.key_lifecycle import discard_confirmed_key
from satqkd_payload.pass_summary import payload_pass_summary
from satqkd_payload.session import PayloadPassOutcome, PayloadSession
from satqkd_payload.source_control import SourceControl
from satqkd_runtime.keystore import KeyStore, KeyStoreError
from satqkd_runtime.plan_registry import PlanRegistry
from satqkd_runtime.qkd_channel import ChannelCounts, QkdChannel

log = logging.getLogger("satqkd.payload")


@dataclass
class StationLink:
    """The payload's link with one station: its key store, QKD channel and open sessions."""

    station: str
    keystore: KeyStore
    channel: QkdChannel
    sessions: dict[int, PayloadSession] = field(default_factory=dict)


class PassEndings(SourceControl):
    """Ending, reporting and releasing passes, and the start-up recovery (mixed into
    PayloadDaemon, after SourceControl)."""

    links: dict[str, StationLink]
    ended: dict[tuple[str, int], PayloadPassOutcome]
    passes_abandoned_at_start: int
    _tasks: set[asyncio.Task[None]]
    _channel_at_load: dict[tuple[str, int], ChannelCounts]
    _last_heard: dict[tuple[str, int], float]
    _watchdogs: dict[tuple[str, int], asyncio.Task[None]]

    async def _discard_orphaned_keys(self) -> None:
        """Keys left pending by a previous run were never confirmed by the station: drop them."""
        for link in self.links.values():
            for line in link.keystore.recover().messages():
                await self._emit("KEY_STORE_RECOVERED", f"{link.station}: {line}")
            for key_id in link.keystore.discard_pending():
                await self._emit("KEY_DISCARDED", f"{link.station}: key {key_id} pending at start")
        await self._recover_plan_records()

    async def _recover_plan_records(self) -> None:
        """A plan record that cannot be read is quarantined (so plans are accepted again)."""
        for link in self.links.values():
            line = PlanRegistry(link.keystore).recover()
            if line is not None:
                await self._emit("KEY_STORE_RECOVERED", f"{link.station}: {line}")

    async def _abandon_open_passes(self) -> None:
        """Passes still open in a plan record were running when the previous run died: each
        is ended here without its key (every key it stored destroyed, the source safed) and
        the station is sent ABORT, so it ends the pass keyless too (decision 0021)."""
        for link in self.links.values():
            try:
                abandoned = PlanRegistry(link.keystore).abandon_open()
            except KeyStoreError as exc:  # quarantined just before: only a disk fault is left
                log.error("payload: %s: open passes unknown: %s", link.station, exc)
                continue
            for plan_id, destroyed in abandoned:
                if not self.passes_abandoned_at_start:
                    await self._safe_source("a pass was open when the payload stopped")
                self.passes_abandoned_at_start += 1
                reason = f"payload restarted: plan {plan_id} was open when it stopped"
                self.ended[(link.station, plan_id)] = PayloadPassOutcome(
                    abort_reason=reason, discarded=bool(destroyed)
                )
                await self._emit(
                    "PASS_ABANDONED",
                    f"{link.station} plan {plan_id}: open when the payload stopped; ended "
                    f"without a key ({len(destroyed)} stored key(s) destroyed), ABORT sent",
                )
                self._spawn(self._send_abort(link, plan_id, reason))

    async def _send_abort(self, link: StationLink, plan_id: int, reason: str) -> None:
        """Send ABORT for a plan, after any broker outage (bounded by the session timeout)."""
        sent = await self.runtime.when_connected(
            f"plan {plan_id} ABORT",
            lambda: link.channel.send("ABORT", plan_id=plan_id, reason=reason[:500]),
            within_s=self.settings.session_timeout_s,
        )
        if not sent:
            self.counters.publish_failures += 1

    async def _abort_session(self, session: PayloadSession, reason: str) -> None:
        """End a session keyless and tell the station; an ABORT the broker cannot take now
        goes once it is back (bounded by the session timeout)."""
        try:
            await session.abort(reason)
        except ConnectionError as exc:
            self.counters.publish_failures += 1
            log.warning("payload: plan %d ABORT waits for the broker: %s", session.plan_id, exc)
            self._spawn(self._send_abort(self.links[session.station], session.plan_id, reason))

    async def _end_session(self, link: StationLink, session: PayloadSession) -> None:
        """Report a finished session's end and release it; released even while the broker
        is away (the report then goes once it is back)."""
        try:
            await self._report_session_end(session)
        finally:
            self._release(link, session)

    def _release(self, link: StationLink, session: PayloadSession) -> None:
        """Forget a finished pass: its pattern key, its key material, its session."""
        self.sequencer.forget(session.plan_id)
        session.release()
        link.sessions.pop(session.plan_id, None)
        self._channel_at_load.pop((link.station, session.plan_id), None)
        self._last_heard.pop((link.station, session.plan_id), None)
        # its emission window and interruption were reported with its end: a daemon that
        # flies pass after pass must not keep one entry of each per pass for ever (issue 13)
        self.emissions.pop((link.station, session.plan_id), None)
        self.interrupted.pop((link.station, session.plan_id), None)
        watchdog = self._watchdogs.pop((link.station, session.plan_id), None)
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()
        try:  # ended at this end: a restart no longer needs to abandon it
            PlanRegistry(link.keystore).close(session.plan_id)
        except KeyStoreError as exc:
            log.error("payload: plan %d not closed in the plan record: %s", session.plan_id, exc)
        self.ended[(link.station, session.plan_id)] = session.outcome
        while len(self.ended) > 64:
            del self.ended[next(iter(self.ended))]

    async def _late_abort(self, link: StationLink, plan_id: int, reason: str) -> None:
        """The station gave up a pass this end already finished: drop the key it confirmed
        (the station has none), or count the message if nothing is known of the plan."""
        outcome = self.ended.get((link.station, plan_id))
        if outcome is None:
            try:
                seen = PlanRegistry(link.keystore).seen(plan_id)
            except KeyStoreError:
                seen = False
            if not seen:
                self.runtime.counters.qkd_rejected += 1
                await self.runtime.emit_event(
                    "QKD_MESSAGE_REJECTED", f"{link.station}: ABORT for unknown plan {plan_id}"
                )
                return
            # a plan of an earlier run of this daemon (restarted since): its keys go
            for key_id in link.keystore.discard_plan(plan_id):
                await self._emit("KEY_DISCARDED", f"{link.station} plan {plan_id} key {key_id}")
        elif discard_confirmed_key(link.keystore, outcome, reason):
            await self._emit("KEY_DISCARDED", f"{link.station} plan {plan_id}: {reason}")

    async def _report_session_end(self, session: PayloadSession) -> None:
        """Publish how the pass ended (BLOCK_ABORTED or KEY_STORED, PAYLOAD_PASS_SUMMARY: the
        figures the pass report takes from the payload), made now from the session; what the
        broker cannot take now goes once it is back (bounded by the session timeout)."""
        outcome = session.outcome
        if getattr(session, "_end_reported", False):
            return
        session._end_reported = True  # type: ignore[attr-defined]
        what = f"{session.station} plan {session.plan_id}"
        reports: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        if outcome.abort_reason:
            text = f"{what}: {outcome.abort_reason}"
            reports.append(("BLOCK_ABORTED", functools.partial(self._event, "BLOCK_ABORTED", text)))
        elif outcome.confirmed:
            text = f"{what}: key {outcome.key_id} ({outcome.key_bits} bits)"
            reports.append(("KEY_STORED", functools.partial(self._event, "KEY_STORED", text)))
        key = (session.station, session.plan_id)
        try:
            now, emission = self.clock.now_unix_s(), self.emissions.get(key)
            # the payload controller's fine-tracking figures, when its source is behind one
            tracking = getattr(self.source, "fine_tracking_over", None)
            fields = payload_pass_summary(
                session,
                emission,
                self._channel_at_load.get(key, ChannelCounts(0, 0, 0, 0)),
                now,
                tracking(emission.start_unix_s, emission.stop_at(now))
                if tracking is not None and emission is not None
                else (math.nan, math.nan),
            )
            summary = functools.partial(
                self.runtime.publish_telemetry, "PAYLOAD_PASS_SUMMARY", **fields
            )
            reports.append(("summary", summary))
        except (ValueError, KeyStoreError) as exc:
            log.warning("payload: plan %d summary not made: %s", session.plan_id, exc)
        for index, (name, publish) in enumerate(reports):
            try:
                await publish()
            except ConnectionError as exc:
                log.warning("payload: %s %s waits for the broker: %s", what, name, exc)
                self._spawn(self._report_later(what, reports[index:]))
                return

    async def _event(self, name: str, text: str) -> None:
        await self.runtime.emit_event(name, text)

    async def _report_later(
        self, what: str, reports: list[tuple[str, Callable[[], Awaitable[None]]]]
    ) -> None:
        for name, publish in reports:
            sent = await self.runtime.when_connected(
                f"{what} {name}", publish, within_s=self.settings.session_timeout_s
            )
            if not sent:
                self.counters.publish_failures += 1

    async def _abort_sessions(self, plan_id: int, reason: str) -> None:
        """End the plan's session at once, without a key at either end (the station is told)."""
        for link in self.links.values():
            session = link.sessions.get(plan_id)
            if session is not None:
                self._interrupt((link.station, plan_id), reason)  # never emits after this
                if self._emitting_for == (link.station, plan_id):
                    self._emitting_for = None
                await self._abort_session(session, reason)
                await self._end_session(link, session)

    async def _watch_session(
        self, link: StationLink, session: PayloadSession, end_unix_s: float
    ) -> None:
        """Abandon the session if its station has sent nothing for `session_timeout_s` after
        the plan's end or its last message (a station abort that never arrived, a station
        gone): ended keyless, ABORT sent, its end reported and released like any other (one
        that already ended on its own, e.g. an unconfirmed key expired, is reported and
        released)."""
        key = (link.station, session.plan_id)
        timeout_s = self.settings.session_timeout_s
        while True:
            deadline = max(end_unix_s, self._last_heard.get(key, end_unix_s)) + timeout_s
            if self.clock.now_unix_s() >= deadline:
                break
            await self.clock.sleep_until(deadline)
            if link.sessions.get(session.plan_id) is not session:
                return
        reason = f"station {link.station} silent for {timeout_s:g} s: session abandoned"
        try:
            await self._abort_session(session, reason)  # the key is discarded before ABORT
        finally:
            await self._end_session(link, session)

    async def _watch_station_during_emission(self, link: StationLink, plan: dict[str, Any]) -> None:
        """Safe the source, as a lost broker does, when the station of the pass has sent
        nothing authenticated on the plan for `ground_link_timeout_s` of emission while the
        broker stays connected (with a broker on board, a cut bridge leaves that connection
        up). The station sends a DETECTION_REPORT every frame it tags (empty ones too), so a
        silence that long is a cut link; the pass then ends without a key, as after a lost
        broker. While the broker itself is away its own watchdog decides; the silence is
        counted again from the reconnection."""
        key = (link.station, int(plan["plan_id"]))
        timeout_s = self.settings.ground_link_timeout_s
        start, stop = float(plan["qkd_start_unix_s"]), float(plan["qkd_stop_unix_s"])
        since = start
        while self.clock.now_unix_s() < stop:
            heard = max(since, self._last_heard.get(key, since))
            if self.clock.now_unix_s() < heard + timeout_s:
                await self.clock.sleep_until(min(heard + timeout_s, stop))
                continue
            if self._emitting_for != key:  # not emitting for it (ended, cut, never began)
                return
            if self.ground_link_lost or not self.bus.connected:
                await self.bus.wait_connected()
                since = self.clock.now_unix_s()
                continue
            silent_s = self.clock.now_unix_s() - heard
            self.counters.ground_link_safings += 1
            self._interrupt(key, f"station {link.station} silent for {timeout_s:g} s: source safed")
            self._emitting_for = None
            safed_unix_s = self.clock.now_unix_s()
            confirmed = await self._safe_source(f"station {link.station} silent")
            self.mode = "safe"
            await self._emit(
                "SOURCE_SAFE_STATE",
                f"ground link lost: nothing authenticated from {link.station} for "
                f"{silent_s:.1f} s with the broker connected (timeout {timeout_s:g} s); source "
                f"{'safed' if confirmed else 'NOT confirmed safe'} at {safed_unix_s:.3f}; "
                f"plan {key[1]} with {key[0]} ends without a key",
            )
            return

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
