"""Running one daemon on its own against a broker, on the real-time clock.

Until lab instrument configs select real drivers, a standalone daemon gets the simulated
instrument backends (a source answering from its sequencer; a tagger that streams nothing
unless fed), which is enough to command it, watch its telemetry and run it beside a
simulation.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from drivers.bus import MessageBus
from drivers.clock import RealClock
from drivers.keystore import KeyStore, KeyStoreError
from drivers.sim import SimPulsedSource, SimTimeTagger
from firmware_shims.source_sequencer import SourceSequencer
from satqkd.config import MissionConfig, StationConfig, load_model
from satqkd.wiring import ogs_settings, payload_settings
from satqkd_core import rng
from satqkd_ogs.daemon import OgsDaemon
from satqkd_payload.daemon import PayloadDaemon

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
    source = SimPulsedSource("source", sequencer.pattern, clock)
    await source.connect()
    key_root = Path(args.keys)
    key_root.mkdir(parents=True, exist_ok=True)
    async with MessageBus(args.broker, f"satqkd-payload-{mission.name}") as bus:
        settings = dataclasses.replace(
            payload_settings(mission), housekeeping_period_s=_period(args)
        )
        daemon = PayloadDaemon(settings, bus, clock, source, key_root, rng.derive_key(entropy, "e"))
        if not daemon.links:
            log.warning("no station key stores with a pre-shared key under %s", key_root)
        await daemon.run()


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
    async with MessageBus(args.broker, f"satqkd-ogs-{station.name}") as bus:
        settings = dataclasses.replace(
            ogs_settings(mission, station, Path(args.config)), housekeeping_period_s=_period(args)
        )
        daemon = OgsDaemon(settings, bus, clock, tagger, store, rng.derive_key(entropy, "e"))
        await daemon.run()


def _period(args: argparse.Namespace) -> float:
    period = float(args.housekeeping_period_s)
    if not 0.05 <= period <= 3600:
        raise ValueError(f"--housekeeping-period-s must be within 0.05..3600 s, got {period:g}")
    return period
