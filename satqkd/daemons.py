"""Running one daemon on its own against a broker, on the real-time clock.

Both daemons build their instruments from a bench file through the one assembly path
(`satqkd.assembly.assemble_node`), exactly as a simulated pass does: `satqkd ogs run
--instruments BENCH.yaml` drives that bench's time tagger, gimbal, fast-steering mirror, beacon
sensor and detector bias supply; `satqkd payload run --instruments BENCH.yaml` its source.
Resources decide the path (hardware, pyvisa-sim, `emulator://`, `in-process://`); emulators are
started in-process. `payload run --link RESOURCE` is short for a bench holding one
`payload_link_source` on that line. A node whose bench lacks an instrument it needs gets the
simulated one (a source answering from its sequencer, a tagger that streams nothing unless
fed), with a warning: enough to command a daemon and watch its telemetry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path

from drivers.entropy import refuse_seeded_in_production
from drivers.entropy_os import OsEntropySource
from drivers.interfaces import DeviceError, EntropySource, PulsedSource, TimeTagger
from drivers.registry import BuildContext
from firmware_shims.source_sequencer import SourceSequencer
from satqkd.assembly import AssemblyError, EmulatorFactory, NodeInstruments, assemble_node
from satqkd.broker_security import daemon_tls, recorder_identity
from satqkd.config import MissionConfig, StationConfig, load_model
from satqkd.instruments_config import BenchConfig, load_instruments_config, validate_instruments
from satqkd.ogs_reports import start_station_reports
from satqkd.wiring import ogs_settings, payload_settings
from satqkd_ogs.daemon import OgsDaemon
from satqkd_payload.daemon import PayloadDaemon
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import Clock, RealClock
from satqkd_runtime.keystore import KeyStore, KeyStoreError
from satqkd_runtime.telecommand_auth import TelecommandVerifier
from sim_backends.entropy import SeededEntropySource
from sim_backends.instruments import SimPulsedSource, SimTimeTagger

log = logging.getLogger("satqkd.daemons")
#: one line at start and per pass, shown without -v (the command line sets it to INFO)
status = logging.getLogger("satqkd.status")
STATUS_PERIOD_S = 1.0
#: where, under the payload's key root, a payload controller emulated in-process keeps its keys
CONTROLLER_KEYS_DIR = "payload-controller"


async def run_payload_daemon(args: argparse.Namespace, entropy: int) -> None:
    """Serve as the payload until SHUTDOWN or a signal."""
    mission = load_model(MissionConfig, Path(args.config))
    clock = RealClock()
    # the payload computer's sequencer: the daemon draws a fresh pattern key for every pass
    sequencer = SourceSequencer(
        None, mission.source.probabilities, mission.source.basis_x_probability
    )
    settings = dataclasses.replace(payload_settings(mission), housekeeping_period_s=_period(args))
    bench = payload_bench(getattr(args, "instruments", None), getattr(args, "link", None))
    key_root = Path(args.keys)
    key_root.mkdir(parents=True, exist_ok=True)
    tc_verifier = TelecommandVerifier.load(key_root, "payload")  # ValueError: how to install
    async with contextlib.AsyncExitStack() as stack:
        try:
            source, bench_entropy = await open_payload_instruments(
                bench, clock, sequencer, stack, seed=entropy, keys=key_root
            )
            random_source = await open_entropy(bench_entropy, args, entropy, stack)
        except AssemblyError as exc:
            link = getattr(args, "link", None)
            raise ValueError(f"--link {link}: {exc}" if link else str(exc)) from None
        bus = await stack.enter_async_context(
            MessageBus(  # over TLS the broker makes the certificate's CN the client id
                args.broker, f"satqkd-payload-{mission.name}", tls=daemon_tls(args, "payload")
            )
        )
        daemon = PayloadDaemon(
            settings, bus, clock, source, key_root, random_source, sequencer,
            tc_verifier=tc_verifier,
        )  # fmt: skip
        if not daemon.links:
            log.warning("no station key stores with a pre-shared key under %s", key_root)
        status.info(
            "payload of %s up: broker %s, stations %s, source %s, entropy %s; keys in %s",
            mission.name, args.broker, ", ".join(sorted(daemon.links)) or "none",
            source.name, random_source.name, key_root,
        )  # fmt: skip
        watcher = asyncio.create_task(_watch_payload_passes(daemon))
        try:
            await daemon.run()
        finally:
            watcher.cancel()


def payload_bench(instruments: str | None, link: str | None) -> BenchConfig | None:
    """Get: the payload's bench: the file given, or one `payload_link_source` on `link`, or
    None (the simulated source); ConfigError naming what was wrong."""
    if instruments is not None and link is not None:
        raise ValueError("--instruments and --link both name the source: give one")
    if instruments is not None:
        return load_instruments_config(instruments)
    if link is None:
        return None
    entry = {"driver": "payload_link_source", "resource": link, "connect_timeout_s": 10.0}
    return validate_instruments({"name": "link", "instruments": {"source": entry}}, "--link")


async def open_entropy(
    bench_entropy: EntropySource | None,
    args: argparse.Namespace,
    seed: int,
    stack: contextlib.AsyncExitStack,
) -> EntropySource:
    """Get: the node's entropy source: the bench's, else the operating system's CSPRNG, or
    with --insecure-seeded-entropy one seeded with `seed`; a seeded source without that flag
    is refused (ValueError naming it)."""
    insecure = bool(getattr(args, "insecure_seeded_entropy", False))
    source = bench_entropy
    if source is None:
        source = SeededEntropySource("entropy", seed) if insecure else OsEntropySource("entropy")
        await source.connect()
        stack.push_async_callback(source.close)
    if insecure and not source.seeded:
        raise ValueError(
            f"--insecure-seeded-entropy, but the bench's entropy source {source.name} is not "
            "seeded: drop the flag or the bench entry"
        )
    refuse_seeded_in_production(source, insecure)
    if insecure:
        log.warning("entropy from a seeded source: every key of this run is predictable")
    return source


async def open_payload_source(
    bench: BenchConfig | None,
    clock: Clock,
    sequencer: SourceSequencer,
    stack: contextlib.AsyncExitStack,
    seed: int = 0,
) -> PulsedSource:
    """Get: the payload's source, connected (made safe and closed when `stack` unwinds): the
    bench's, or a simulated one answering from the sequencer when there is none."""
    source, _ = await open_payload_instruments(bench, clock, sequencer, stack, seed)
    return source


async def open_payload_instruments(
    bench: BenchConfig | None,
    clock: Clock,
    sequencer: SourceSequencer,
    stack: contextlib.AsyncExitStack,
    seed: int = 0,
    keys: Path | None = None,
) -> tuple[PulsedSource, EntropySource | None]:
    """Get: the payload's source (as `open_payload_source`) and its bench's entropy source,
    if the bench has one. `keys`: the payload's key root; a source behind the payload
    controller then signs requests to emit with its emission key, and a controller emulated
    in-process holds the key installed in `keys/payload-controller` (decision 0020)."""
    source: PulsedSource | None = None
    bench_entropy: EntropySource | None = None
    if bench is not None:
        controller_keys = None if keys is None else keys / CONTROLLER_KEYS_DIR
        context = BuildContext(
            clock=clock, pattern=sequencer.pattern, keys=keys, controller_keys=controller_keys
        )
        node = await assemble_node(
            bench, "payload", clock=clock, stack=stack, context=context,
            emulators=EmulatorFactory(clock, seed),
        )  # fmt: skip
        source = node.source
        bench_entropy = node.entropy
    if source is None:
        log.warning("no source in the bench: the payload drives a simulated source")
        source = SimPulsedSource("source", sequencer.pattern, clock)
        await source.connect()
        stack.push_async_callback(_close_quietly, source)
    return source, bench_entropy


async def run_ogs_daemon(args: argparse.Namespace, entropy: int) -> None:
    """Serve as a ground station until SHUTDOWN or a signal."""
    station = load_model(StationConfig, Path(args.config))
    mission = load_model(MissionConfig, Path(args.mission))
    clock = RealClock()
    store = KeyStore(args.keys)
    try:
        store.load_secret("preshared-auth")
    except KeyStoreError:
        raise ValueError(
            f"{args.keys}: no pre-shared authentication key (run 'satqkd keys bootstrap')"
        ) from None
    bench = load_instruments_config(args.instruments) if args.instruments else None
    tc_verifier = TelecommandVerifier.load(args.keys, f"ogs-{station.name}")
    async with contextlib.AsyncExitStack() as stack:
        node = await open_station_instruments(bench, clock, stack, seed=entropy)
        random_source = await open_entropy(node.entropy, args, entropy, stack)
        tagger = node.tagger
        if tagger is None:
            log.warning("no time tagger in the bench: the station reads a simulated one")
            tagger = SimTimeTagger("tagger", clock)
            await tagger.connect()
            stack.push_async_callback(_close_quietly, tagger)
        node_name = f"ogs-{station.name}"  # over TLS the broker makes this CN the client id
        bus = await stack.enter_async_context(
            MessageBus(args.broker, f"satqkd-{node_name}", tls=daemon_tls(args, node_name))
        )
        # a report of each pass, from what the daemons publish (docs/report.md)
        await start_station_reports(
            stack, args.broker, mission.name, station.name, store, getattr(args, "reports", None),
            tls=daemon_tls(args, recorder_identity(station.name), recorder=True), clock=clock,
        )  # fmt: skip
        settings = dataclasses.replace(
            ogs_settings(mission, station, Path(args.config)), housekeeping_period_s=_period(args)
        )
        daemon = OgsDaemon(
            settings,
            bus,
            clock,
            tagger,
            store,
            random_source,
            node.station_instruments(),
            tc_verifier=tc_verifier,
        )
        status.info(
            "station %s up for %s: broker %s, tagger %s, ATP instruments %s, entropy %s; keys "
            "in %s",
            station.name, mission.name, args.broker, tagger.name,
            ", ".join(sorted(node.paths)) or "none", random_source.name, args.keys,
        )  # fmt: skip
        watcher = asyncio.create_task(_watch_station_passes(daemon))
        try:
            await daemon.run()
        finally:
            watcher.cancel()


def _outcome_words(key_bits: int, abort_reason: str | None) -> str:
    return f"{key_bits} key bits stored" if key_bits else f"no key ({abort_reason or 'none'})"


async def _watch_station_passes(daemon: OgsDaemon) -> None:
    """Log one status line when a pass starts at the station and one when it ends. What it
    remembers follows the daemon's own bounded histories (see `_watch_payload_passes`)."""
    started: set[int] = set()
    ended: set[int] = set()
    while True:
        open_now = set(daemon.sessions)
        for plan_id in sorted(open_now - started):
            status.info("pass %d started (plan loaded, tracking until LOS)", plan_id)
        results = dict(daemon.results)
        finished = {plan_id for plan_id, result in results.items() if result.finished}
        for plan_id in sorted(finished - ended):
            result = results[plan_id]
            words = _outcome_words(result.key_bits, result.abort_reason)
            status.info("pass %d ended: %d detections, %s", plan_id, result.detections, words)
        started = open_now | (started & results.keys())
        ended = finished
        await asyncio.sleep(STATUS_PERIOD_S)


async def _watch_payload_passes(daemon: PayloadDaemon) -> None:
    """Log one status line when the payload's source starts a pass and one when it ends.
    What it remembers follows the daemon's own bounded histories (a pass the daemon has
    forgotten is forgotten here too), so a daemon running for months holds no more."""
    started: set[tuple[str, int]] = set()
    ended: set[tuple[str, int]] = set()
    while True:
        emissions = set(daemon.emissions)
        for key in sorted(emissions - started):
            status.info("pass %d for %s started (source on)", key[1], key[0])
        outcomes = dict(daemon.ended)
        for key in sorted(outcomes.keys() - ended):
            words = _outcome_words(outcomes[key].key_bits, outcomes[key].abort_reason)
            status.info("pass %d for %s ended: %s", key[1], key[0], words)
        # a pass that ended was started: once its emission entry is gone, keep it as started
        started = emissions | (started & outcomes.keys())
        ended = set(outcomes)
        await asyncio.sleep(STATUS_PERIOD_S)


async def open_station_instruments(
    bench: BenchConfig | str | Path | None,
    clock: Clock,
    stack: contextlib.AsyncExitStack,
    seed: int = 0,
) -> NodeInstruments:
    """Get: the station's instruments of a bench, connected (emulators started on `clock`);
    each is made safe and closed when `stack` closes. ValueError (one line) if the bench has
    two instruments for one slot or an instrument does not connect."""
    if bench is None:
        return NodeInstruments("station", "none")
    if not isinstance(bench, BenchConfig):
        bench = load_instruments_config(bench)
    return await assemble_node(
        bench, "station", clock=clock, stack=stack, emulators=EmulatorFactory(clock, seed)
    )


async def _close_quietly(device: PulsedSource | TimeTagger) -> None:
    """Control: make an instrument safe and close it; a dead link is logged, not raised."""
    try:
        async with asyncio.timeout(5.0):  # not wait_for (issue 13)
            await device.close()
    except (DeviceError, OSError, TimeoutError) as exc:
        log.warning("closing %s: %s", device.name, exc)


def _period(args: argparse.Namespace) -> float:
    period = float(args.housekeeping_period_s)
    if not 0.05 <= period <= 3600:
        raise ValueError(f"--housekeeping-period-s must be within 0.05..3600 s, got {period:g}")
    return period
