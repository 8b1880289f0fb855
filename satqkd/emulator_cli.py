"""`satqkd sim emulator NAME`: one instrument emulator served on its own, on the real clock.

A lab uses it to try a bench file, a driver or a daemon before the instrument arrives: the
emulator prints the resource string to put in the bench (`serial:///dev/pts/N` for a serial
instrument, `tcp://127.0.0.1:PORT` for a LAN one) and answers until interrupted. A time
tagger emulator served on its own runs free, as an instrument with its detectors dark: while an
acquisition runs it streams a buffer every `FREE_RUN_FRAME_S` of clock time holding each
channel's dark counts (Poisson, `--dark-count-rate-hz` per channel), so a station reading it
sees time pass and finishes its pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
from typing import Any

import numpy as np

from drivers.interfaces import TagBuffer
from satqkd.signals import run_until_signalled
from satqkd_runtime.clock import Clock, RealClock
from sim_backends.emulators import EMULATORS, LineEmulator
from sim_backends.emulators.time_tagger import TimeTaggerEmulator

EXIT_USAGE = 2
NAMES = (*EMULATORS, "tagger")
FREE_RUN_FRAME_S = 0.1
_TAGGERS = ("tagger", "tdc1")


async def free_run(
    tagger: Any, clock: Clock, dark_count_rate_hz: float, seed: int = 0, channels: int = 4
) -> None:
    """Control: while the emulated tagger acquires, feed it one buffer of dark counts per
    frame of clock time (runs until cancelled)."""
    generator = np.random.default_rng(seed)
    while True:
        await tagger.started.wait()
        epoch = tagger.epoch_unix_s
        start = math.floor(clock.now_unix_s() / FREE_RUN_FRAME_S) * FREE_RUN_FRAME_S
        while tagger.started.is_set() and tagger.epoch_unix_s == epoch:
            stop = start + FREE_RUN_FRAME_S
            await clock.sleep_until(stop)
            counts = generator.poisson(dark_count_rate_hz * FREE_RUN_FRAME_S, channels)
            channel = np.repeat(np.arange(1, channels + 1, dtype=np.uint8), counts)
            offset_ps = round((start - epoch) * 1e12)
            times = generator.integers(0, round(FREE_RUN_FRAME_S * 1e12), channel.size)
            order = np.argsort(times, kind="stable")
            buffer = TagBuffer(
                channel[order], offset_ps + times[order].astype(np.int64), start, stop
            )
            if not getattr(tagger, "running", True):
                break
            await tagger.feed(buffer)
            start = stop
        if tagger.epoch_unix_s == epoch:
            await asyncio.sleep(FREE_RUN_FRAME_S)  # stopped: wait for the next acquisition


async def serve_emulator(
    name: str,
    serve_on: str | None,
    port: int,
    ready: Any = None,
    dark_count_rate_hz: float = 100.0,
) -> None:
    """Control: start the named emulator, print its resource, serve until cancelled."""
    clock = RealClock()
    emulator: Any
    if name == "tagger":
        if serve_on == "pty":
            raise ValueError("the tagger emulator serves on TCP only")
        emulator = TimeTaggerEmulator(clock, n_channels=4)
        await emulator.start(port)
        stop = emulator.close
    else:
        factory, default = EMULATORS[name]
        emulator = factory(clock, 0)
        assert isinstance(emulator, LineEmulator)
        if (serve_on or default) == "pty":
            if port:
                raise ValueError(f"--port is for TCP; the {name} emulator serves on a pty")
            await emulator.start_pty()
        else:
            await emulator.start_tcp(port=port)
        stop = emulator.stop
    print(f"{name} emulator: {emulator.resource}", flush=True)
    if ready is not None:
        ready(emulator)
    feeder = None
    if name in _TAGGERS:
        feeder = asyncio.create_task(free_run(emulator, clock, dark_count_rate_hz))
    try:
        await asyncio.Event().wait()
    finally:
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
        await stop()


def run_emulator(
    name: str, serve_on: str | None, port: int, dark_count_rate_hz: float = 100.0
) -> int:
    """Control: the command; returns the exit status."""
    if not (math.isfinite(dark_count_rate_hz) and 0.0 <= dark_count_rate_hz <= 1e7):
        print(f"satqkd: --dark-count-rate-hz must be within 0..1e7, got {dark_count_rate_hz}",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    if name not in NAMES:
        print(f"satqkd: no emulator {name!r} (available: {', '.join(NAMES)})", file=sys.stderr)
        return EXIT_USAGE
    if not 0 <= port <= 65535:
        print(f"satqkd: --port must be within 0..65535, got {port}", file=sys.stderr)
        return EXIT_USAGE

    try:
        serving = serve_emulator(name, serve_on, port, dark_count_rate_hz=dark_count_rate_hz)
        asyncio.run(run_until_signalled(serving))
    except (ValueError, OSError) as exc:
        print(f"satqkd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0
