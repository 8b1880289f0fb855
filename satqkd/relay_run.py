"""A trusted relay through the satellite, run with the real daemons (issue 14, step e).

After passes with station A and station B the payload holds key_A (shared with A) and key_B
(shared with B). `run_relay` starts the payload daemon and the two station daemons on one
broker (an embedded one on loopback unless `broker_url` is given), as `satqkd sim pass` starts
them for a pass, sends the payload the signed RELAY telecommand and waits until both stations
report RELAY_DONE (filed, or refused with a reason). The payload broadcasts key_A XOR key_B as
one authenticated RELAY_XOR message on each station's QKD channel: the only relay traffic.
Station B recovers key_A; A already holds it; both file it as a block of origin `relay` under
the same key ids in their key management stores (`<station keys>/kms/keys.sqlite`), ready for
ETSI GS QKD 014 delivery (`satqkd kms serve --peer ogs-<other station>`). docs/relay.md.

Interface (for `satqkd sim network` and `satqkd keys relay`):

    from satqkd.relay_run import RelayRequest, RelayResult, run_relay

    result: RelayResult = await run_relay(
        payload_keys,                      # the payload's key root: <station>/ per station
        {"xinglong": DIR_A, "graz": DIR_B},  # each station's key store (ogs run --keys)
        RelayRequest(relay_id=1, station_a="xinglong", station_b="graz", bits=4096),
        mission="jinan1",                  # mission profile name or YAML path
        broker_url=None,                   # None: an embedded broker on loopback
        occ_keys=None,                     # None: <payload_keys>/../occ (as sim pass lays out)
        clock=None,                        # None: real time; a SimClock dates the relay blocks
    )
    result.ok, result.abort_reason       # True / None when both stations filed the key
    result.sha256                        # {"xinglong": hex, "graz": hex}: equal when ok
    result.key_ids                       # the relay keys' ids, the same at both stations
    result.relay_bytes                   # bytes of relay traffic (the RELAY_XOR messages)

`bits` is a positive multiple of the key management key size (256 bits). `blocks_a` /
`blocks_b` name the confirmed keys (key-store key ids, the same at the payload and the station)
the payload may take bits from, in that order; empty: every confirmed key of that link, oldest
first. Every station must have a key store with the pre-shared authentication key of its link
(`keys/ogs-<station>` after `satqkd sim pass`), and the payload root a `<station>/` store for
each; the telecommand key of the payload is installed (fresh, forced) when `occ_keys` holds
none for it. Errors a user can cause (missing stores, bad request) raise RelayError with one
line; a relay the payload or a station refuses returns a RelayResult with `ok` False and the
reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.entropy_os import OsEntropySource
from firmware_shims.source_sequencer import SourceSequencer
from satqkd.broker import EmbeddedBroker
from satqkd.config import (
    ConfigError,
    MissionConfig,
    StationConfig,
    example_configs_root,
    load_model,
)
from satqkd.wiring import ogs_settings, payload_settings
from satqkd_core import dictionary as dct
from satqkd_core.codec import CodecError, decode_envelope
from satqkd_core.trusted_relay import relay_block_id, relay_problem
from satqkd_ogs.daemon import OgsDaemon
from satqkd_ogs.relay import RelayRefused, relay_records
from satqkd_payload.daemon import PayloadDaemon
from satqkd_payload.relay import KEY_SIZE_BITS
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import Clock, RealClock
from satqkd_runtime.key_management import key_id_for
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.telecommand_auth import (
    TelecommandKeyError,
    TelecommandSigner,
    TelecommandVerifier,
    install_telecommand_key,
)
from sim_backends.instruments import SimPulsedSource, SimTimeTagger

__all__ = ["RelayError", "RelayNodes", "RelayRequest", "RelayResult", "relay_nodes", "run_relay"]

log = logging.getLogger("satqkd.relay")


class RelayError(ValueError):
    """A relay that cannot be started as asked (one line for the user)."""


@dataclass(frozen=True)
class RelayRequest:
    """What the control centre asks of a relay (the fields of RELAY_KEYS)."""

    relay_id: int
    station_a: str
    station_b: str
    bits: int
    blocks_a: tuple[str, ...] = ()
    blocks_b: tuple[str, ...] = ()


@dataclass(frozen=True)
class RelayResult:
    """How a relay ended: ids, counts and digests, never key material."""

    relay_id: int
    station_a: str
    station_b: str
    bits: int
    ok: bool
    abort_reason: str | None
    relay_block_id: str
    key_ids: tuple[str, ...]  # the same at both stations
    sha256: dict[str, str] = field(default_factory=dict)  # station -> digest of its relay key
    relay_bytes: int = 0  # bytes of the RELAY_XOR messages (the only relay traffic)
    refusals: dict[str, str] = field(default_factory=dict)  # node -> its reason


def _profile(configs_root: Path | None, folder: str, name: str) -> Path:
    if Path(name).suffix in (".yaml", ".yml"):
        return Path(name)
    root = configs_root or example_configs_root()
    path = None if root is None else root / folder / f"{name}.yaml"
    if path is None or not path.is_file():
        raise RelayError(f"no {folder[:-1]} profile {name!r} (looked in {root}/{folder})")
    return path


def _check_stores(payload_keys: Path, station_keys: Mapping[str, Path]) -> None:
    for station, keys in station_keys.items():
        for where in (keys, payload_keys / station):
            if not (where / "preshared-auth.secret").is_file():  # looked at, not created
                raise RelayError(
                    f"{where}: no pre-shared authentication key of the link with {station} "
                    "(run a pass first, or 'satqkd keys bootstrap')"
                )


def _payload_signer(payload_keys: Path, occ_keys: Path) -> tuple[TelecommandSigner, object]:
    """The control centre's signer for the payload and the payload's verifier: the installed
    key, or a fresh one installed at both."""
    try:
        return TelecommandSigner.for_node(occ_keys, "payload"), TelecommandVerifier.load(
            payload_keys, "payload"
        )
    except (TelecommandKeyError, ValueError):
        install_telecommand_key(payload_keys, occ_keys, "payload", force=True)
        return TelecommandSigner.for_node(occ_keys, "payload"), TelecommandVerifier.load(
            payload_keys, "payload"
        )


def _station_verifier(keys: Path, station: str) -> TelecommandVerifier | None:
    try:
        return TelecommandVerifier.load(keys, dct.ogs_node(station))
    except (TelecommandKeyError, ValueError):
        return None  # a station takes no telecommand in a relay


async def run_relay(
    payload_keys: Path,
    station_keys: Mapping[str, Path],
    relay: RelayRequest,
    *,
    mission: str = "jinan1",
    broker_url: str | None = None,
    occ_keys: Path | None = None,
    configs_root: Path | None = None,
    timeout_s: float = 30.0,
    clock: Clock | None = None,
) -> RelayResult:
    """Control: run one relay with the payload and both station daemons (module docstring);
    RelayError for a relay that cannot be started as asked."""
    _check_request(relay, station_keys)
    async with relay_nodes(
        payload_keys,
        {s: station_keys[s] for s in (relay.station_a, relay.station_b)},
        mission=mission,
        broker_url=broker_url,
        occ_keys=occ_keys,
        configs_root=configs_root,
        timeout_s=timeout_s,
        clock=clock,
    ) as nodes:
        return await nodes.relay(relay, timeout_s)


@dataclass
class RelayNodes:
    """The payload and the station daemons running on one broker, and the control centre's
    bus that commands relays and hears their outcome (from `relay_nodes`)."""

    mission: str
    broker_url: str
    payload: PayloadDaemon
    stations: dict[str, OgsDaemon]
    station_keys: dict[str, Path]
    occ: MessageBus
    signer: TelecommandSigner
    collector: _Collector

    async def relay(self, relay: RelayRequest, timeout_s: float = 30.0) -> RelayResult:
        """Control: send the signed RELAY_KEYS and wait for the payload's acknowledgement and,
        if it accepted, both stations' RELAY_DONE; get the outcome (a silent node is named
        in `refusals`)."""
        _check_request(relay, self.station_keys)
        seq, signed = self.signer.sign("RELAY_KEYS", _fields(relay))
        return await self.send_relay_command(relay, seq, signed, timeout_s)

    async def send_relay_command(
        self, relay: RelayRequest, seq: int, envelope: bytes, timeout_s: float = 30.0
    ) -> RelayResult:
        """Control: publish a RELAY_KEYS envelope as given (signed or not) and wait for its
        outcome as `relay` does."""
        self.collector.begin(relay.relay_id, seq, {relay.station_a, relay.station_b})
        await self.occ.publish(dct.telecommand_topic(self.mission, "payload"), envelope)
        try:
            async with asyncio.timeout(timeout_s):  # not wait_for (issue 13)
                await self.collector.outcome()
        except TimeoutError:
            missing = sorted(self.collector.waiting_for())
            self.collector.refusals.update(
                {n: f"no answer within {timeout_s:g} s" for n in missing}
            )
        return _result(relay, self.mission, self.station_keys, self.collector)


def _check_request(relay: RelayRequest, station_keys: Mapping[str, Path]) -> None:
    problem = relay_problem(
        relay.relay_id, relay.station_a, relay.station_b, relay.bits, KEY_SIZE_BITS
    )
    if problem:
        raise RelayError(problem)
    for station in (relay.station_a, relay.station_b):
        if station not in station_keys:
            raise RelayError(f"no key store given for station {station!r}")


@contextlib.asynccontextmanager
async def relay_nodes(
    payload_keys: Path,
    station_keys: Mapping[str, Path],
    *,
    mission: str = "jinan1",
    broker_url: str | None = None,
    occ_keys: Path | None = None,
    configs_root: Path | None = None,
    timeout_s: float = 30.0,
    clock: Clock | None = None,
) -> AsyncIterator[RelayNodes]:
    """Control: run the payload daemon and one daemon per station of `station_keys` on one
    broker (an embedded one unless `broker_url`) until the context ends, on `clock` (real
    time unless given: a simulation passes its SimClock, which dates the relay blocks); every
    node has reported NODE_STARTED (it listens) when it is entered. RelayError for missing
    stores or profiles."""
    payload_keys = Path(payload_keys)
    keys = {station: Path(path) for station, path in station_keys.items()}
    _check_stores(payload_keys, keys)
    try:
        mission_config = load_model(MissionConfig, _profile(configs_root, "missions", mission))
        station_files = {s: _profile(configs_root, "stations", s) for s in keys}
        configs = {s: load_model(StationConfig, path) for s, path in station_files.items()}
    except ConfigError as exc:
        raise RelayError(str(exc)) from None
    occ_keys = Path(occ_keys) if occ_keys is not None else payload_keys.parent / "occ"
    signer, payload_verifier = _payload_signer(payload_keys, occ_keys)
    name = mission_config.name
    clock = clock or RealClock()
    async with contextlib.AsyncExitStack() as stack:
        if broker_url is None:
            broker_url = (await stack.enter_async_context(EmbeddedBroker())).url
        entropy = OsEntropySource("entropy")  # a relay draws nothing; the daemons need one
        await entropy.connect()
        stack.push_async_callback(entropy.close)
        occ = await stack.enter_async_context(MessageBus(broker_url, f"relay-occ-{name}"))
        for topic in ("evt", "tm/tc_ack", "tm/relay_done"):
            await occ.subscribe(f"satqkd/{name}/+/{topic}")
        sequencer = SourceSequencer(
            None, mission_config.source.probabilities, mission_config.source.basis_x_probability
        )
        source = SimPulsedSource("source", sequencer.pattern, clock)
        await source.connect()
        stack.push_async_callback(source.close)
        bus = await stack.enter_async_context(MessageBus(broker_url, f"relay-payload-{name}"))
        payload = PayloadDaemon(
            payload_settings(mission_config), bus, clock, source, payload_keys, entropy,
            sequencer, tc_verifier=payload_verifier,
        )  # fmt: skip
        stations: dict[str, OgsDaemon] = {}
        for station, config in configs.items():
            tagger = SimTimeTagger("tagger", clock)
            await tagger.connect()
            stack.push_async_callback(tagger.close)
            station_bus = await stack.enter_async_context(
                MessageBus(broker_url, f"relay-ogs-{station}")
            )
            stations[station] = OgsDaemon(
                ogs_settings(mission_config, config, station_files[station]),
                station_bus, clock, tagger, KeyStore(keys[station]), entropy,
                tc_verifier=_station_verifier(keys[station], station),
            )  # fmt: skip
        daemons: list[PayloadDaemon | OgsDaemon] = [payload, *stations.values()]
        tasks = [
            asyncio.create_task(d.run(), name=f"relay daemon {i}") for i, d in enumerate(daemons)
        ]
        stack.push_async_callback(_stop, tasks)
        collector = _Collector(occ)
        nodes = {"payload", *(dct.ogs_node(s) for s in stations)}
        try:
            async with asyncio.timeout(timeout_s):
                await collector.started(nodes)
        except TimeoutError:
            raise RelayError(f"not every daemon started within {timeout_s:g} s") from None
        yield RelayNodes(name, broker_url, payload, stations, keys, occ, signer, collector)


def _fields(relay: RelayRequest) -> dict[str, object]:
    return {
        "relay_id": relay.relay_id,
        "station_a": relay.station_a,
        "station_b": relay.station_b,
        "bits": relay.bits,
        "blocks_a": ",".join(relay.blocks_a),
        "blocks_b": ",".join(relay.blocks_b),
    }


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, Exception):
            log.error("relay: a daemon ended with %r", result)


class _Collector:
    """What the control centre hears: NODE_STARTED of each node, the payload's TC_ACK of a
    relay command and each station's RELAY_DONE."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.up: set[str] = set()
        self.begin(-1, -1, set())

    def begin(self, relay_id: int, seq: int, stations: set[str]) -> None:
        """Control: listen for the outcome of relay `relay_id` commanded with `seq`."""
        self.relay_id, self.seq = relay_id, seq
        self.station_nodes = {dct.ogs_node(s) for s in stations}
        self.ack: tuple[bool, str] | None = None
        self.done: dict[str, dict[str, Any]] = {}  # station node -> RELAY_DONE fields
        self.refusals: dict[str, str] = {}

    def waiting_for(self) -> set[str]:
        """Get: the nodes whose answer about the current relay is still awaited."""
        if self.ack is None:
            return {"payload"}
        return self.station_nodes - set(self.done) if self.ack[0] else set()

    async def started(self, nodes: set[str]) -> None:
        """Wait until every node of `nodes` reported NODE_STARTED (it listens)."""
        await self._listen(lambda: self.up >= nodes)

    async def outcome(self) -> None:
        """Wait for the payload's TC_ACK and, if it accepted, both RELAY_DONEs."""
        await self._listen(lambda: not self.waiting_for())

    async def _listen(self, finished: Callable[[], bool]) -> None:
        if finished():
            return
        async for message in self.bus.messages():
            parts = message.topic.split("/")
            node, kind = parts[2], parts[-1]
            try:
                fields = decode_envelope(message.payload).fields
            except CodecError:
                continue
            if kind == "evt" and fields["event_id"] == dct.EVENTS["NODE_STARTED"].id:
                self.up.add(node)
            elif kind == "tc_ack" and node == "payload" and fields["command_seq"] == self.seq:
                self.ack = (bool(fields["accepted"]), str(fields["reason"]))
                if not fields["accepted"]:
                    self.refusals["payload"] = str(fields["reason"])
            elif kind == "relay_done" and fields["relay_id"] == self.relay_id:
                self.done[node] = fields
                if not fields["filed"]:
                    self.refusals[node] = str(fields["reason"])
            if finished():
                return


def _result(
    relay: RelayRequest, mission: str, station_keys: Mapping[str, Path], seen: _Collector
) -> RelayResult:
    block_id = relay_block_id(mission, relay.relay_id, relay.station_a, relay.station_b)
    digests = {}
    for station in (relay.station_a, relay.station_b):
        try:
            record = relay_records(KeyStore(station_keys[station])).get(str(relay.relay_id), {})
        except RelayRefused as exc:
            seen.refusals.setdefault(dct.ogs_node(station), str(exc))
            continue
        if record.get("filed"):
            digests[station] = str(record["key_sha256"])
    ok = not seen.refusals and len(digests) == 2 and len(set(digests.values())) == 1
    if not seen.refusals and len(set(digests.values())) > 1:
        seen.refusals["relay"] = "the stations filed different keys"
    reason = "; ".join(f"{node}: {why}" for node, why in sorted(seen.refusals.items()))
    count = relay.bits // KEY_SIZE_BITS if ok else 0
    return RelayResult(
        relay_id=relay.relay_id,
        station_a=relay.station_a,
        station_b=relay.station_b,
        bits=relay.bits if ok else 0,
        ok=ok,
        abort_reason=None if ok else reason or "relay not completed",
        relay_block_id=block_id,
        key_ids=tuple(key_id_for(block_id, KEY_SIZE_BITS, i) for i in range(count)),
        sha256=digests,
        relay_bytes=sum(int(d["message_bytes"]) for d in seen.done.values()),
        refusals=dict(seen.refusals),
    )
