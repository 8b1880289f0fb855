"""Running one daemon on its own against a broker, on the real-time clock.

A station given `--instruments CONFIG` (configs/instruments/*.yaml) drives that bench's gimbal,
fast-steering mirror, beacon sensor and detector bias supply through their drivers (emulated
ones, `emulator://NAME`, are started in-process). The source and the time tagger are still the
simulated backends (a source answering from its sequencer; a tagger that streams nothing unless
fed), which is enough to command a daemon, watch its telemetry and run it beside a simulation.
A payload given `--link RESOURCE` drives its source through the payload controller on that line
(PUS/CCSDS, `drivers.payload_link_source`) instead of the simulated source.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any

from drivers.commands import CommandInstrument
from drivers.interfaces import DeviceError, PulsedSource
from drivers.payload_link import PayloadLink
from drivers.payload_link_source import PayloadLinkSource
from drivers.transport import open_transport
from firmware_shims.source_sequencer import SourceSequencer
from satqkd.config import MissionConfig, StationConfig, load_model
from satqkd.instruments_config import (
    EMULATOR_SCHEME,
    BeaconEntry,
    BiasSupplyEntry,
    GimbalEntry,
    MirrorEntry,
    build_instrument,
    load_instruments_config,
)
from satqkd.wiring import ogs_settings, payload_settings
from satqkd_core import rng
from satqkd_ogs.atp import StationInstruments
from satqkd_ogs.daemon import OgsDaemon
from satqkd_payload.daemon import PayloadDaemon
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import Clock, RealClock
from satqkd_runtime.keystore import KeyStore, KeyStoreError
from sim_backends.emulators import start_emulator
from sim_backends.instruments import SimPulsedSource, SimTimeTagger

log = logging.getLogger("satqkd.daemons")


async def run_payload_daemon(args: argparse.Namespace, entropy: int) -> None:
    """Serve as the payload until SHUTDOWN or a signal."""
    mission = load_model(MissionConfig, Path(args.config))
    clock = RealClock()
    sequencer = SourceSequencer(
        rng.derive_key(entropy, "payload/qrng"),
        mission.source.probabilities,
        mission.source.basis_x_probability,
    )
    settings = dataclasses.replace(payload_settings(mission), housekeeping_period_s=_period(args))
    source = await open_payload_source(
        getattr(args, "link", None), clock, sequencer, settings.controller_keep_alive_s
    )
    key_root = Path(args.keys)
    key_root.mkdir(parents=True, exist_ok=True)
    try:
        async with MessageBus(args.broker, f"satqkd-payload-{mission.name}") as bus:
            daemon = PayloadDaemon(
                settings, bus, clock, source, key_root, rng.derive_key(entropy, "e")
            )
            if not daemon.links:
                log.warning("no station key stores with a pre-shared key under %s", key_root)
            await daemon.run()
    finally:
        try:  # the source's safe state; the controller's own watchdog covers a dead link
            await asyncio.wait_for(source.close(), 10.0)
        except (DeviceError, OSError, TimeoutError) as exc:
            log.warning("closing %s: %s", source.name, exc)


async def open_payload_source(
    link_resource: str | None,
    clock: Clock,
    sequencer: SourceSequencer,
    keep_alive_s: float,
) -> PulsedSource:
    """Get the payload's source, connected: through the payload controller at `link_resource`
    (PUS over that transport), or the simulated source without one. ValueError (one line) if
    the resource is malformed or the controller does not answer."""
    if link_resource is None:
        source: PulsedSource = SimPulsedSource("source", sequencer.pattern, clock)
    else:
        transport = open_transport(link_resource)  # ValueError naming a malformed resource
        source = PayloadLinkSource(
            "source",
            PayloadLink("payload-link", transport),
            clock,
            pattern=sequencer.pattern,
            keep_alive_interval_s=keep_alive_s,
        )
    try:
        await source.connect()
    except (DeviceError, OSError) as exc:
        raise ValueError(f"--link {link_resource}: {exc}") from None
    return source


async def run_ogs_daemon(args: argparse.Namespace, entropy: int) -> None:
    """Serve as a ground station until SHUTDOWN or a signal."""
    station = load_model(StationConfig, Path(args.config))
    mission = load_model(MissionConfig, Path(args.mission))
    clock = RealClock()
    tagger = SimTimeTagger("tagger", clock)
    await tagger.connect()
    store = KeyStore(args.keys)
    try:
        store.load_secret("preshared-auth")
    except KeyStoreError:
        raise ValueError(
            f"{args.keys}: no pre-shared authentication key (run 'satqkd keys bootstrap')"
        ) from None
    async with contextlib.AsyncExitStack() as stack:
        instruments = None
        if getattr(args, "instruments", None):
            instruments = await open_station_instruments(
                Path(args.instruments), clock, stack, seed=entropy
            )
        bus = await stack.enter_async_context(MessageBus(args.broker, f"satqkd-ogs-{station.name}"))
        settings = dataclasses.replace(
            ogs_settings(mission, station, Path(args.config)), housekeeping_period_s=_period(args)
        )
        daemon = OgsDaemon(
            settings, bus, clock, tagger, store, rng.derive_key(entropy, "e"), instruments
        )
        await daemon.run()


# which StationInstruments slot each driver kind fills (the laser source is the payload's)
_STATION_SLOTS = {GimbalEntry: "gimbal", MirrorEntry: "fsm", BeaconEntry: "beacon"}
_STATION_SLOTS[BiasSupplyEntry] = "detectors"
_CLOSE_TIMEOUT_S = 5.0


async def open_station_instruments(
    config_path: Path, clock: Clock, stack: contextlib.AsyncExitStack, seed: int = 0
) -> StationInstruments:
    """Get: the station's instruments of a bench config, connected (emulators started on
    `clock`); each is made safe and closed when `stack` closes. ValueError (one line) if the
    config has two instruments for one slot or an instrument does not connect."""
    bench = load_instruments_config(config_path)
    chosen: dict[str, tuple[str, Any]] = {}
    for name, entry in bench.instruments.items():
        slot = _STATION_SLOTS.get(type(entry))
        if slot is None:
            log.info(
                "%s: %s (%s) is not a station instrument; ignored", config_path, name, entry.driver
            )
            continue
        if slot in chosen:
            raise ValueError(
                f"{config_path}: {chosen[slot][0]} and {name} are both a {slot}; "
                "a station drives one"
            )
        chosen[slot] = (name, entry)
    instruments = StationInstruments()
    for slot, (name, entry) in chosen.items():
        resource = None
        if entry.resource.startswith(EMULATOR_SCHEME):
            emulator = await start_emulator(entry.resource[len(EMULATOR_SCHEME) :], clock, seed)
            stack.push_async_callback(emulator.stop)
            resource = emulator.resource
        device = build_instrument(name, entry, resource)
        try:
            await device.connect(entry.connect_timeout_s)
        except (DeviceError, OSError) as exc:
            raise ValueError(f"{config_path}: instrument {name}: {exc}") from None
        stack.push_async_callback(_close_quietly, device)
        setattr(instruments, slot, device)
    return instruments


async def _close_quietly(device: CommandInstrument) -> None:
    """Control: make an instrument safe and close it; a dead link is logged, not raised."""
    try:
        await asyncio.wait_for(device.close(), _CLOSE_TIMEOUT_S)
    except (DeviceError, OSError, TimeoutError) as exc:
        log.warning("closing %s: %s", device.name, exc)


def _period(args: argparse.Namespace) -> float:
    period = float(args.housekeeping_period_s)
    if not 0.05 <= period <= 3600:
        raise ValueError(f"--housekeeping-period-s must be within 0.05..3600 s, got {period:g}")
    return period
