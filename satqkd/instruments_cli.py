"""`satqkd instruments check CONFIG`: connect to every instrument of a bench and report health.

All instruments are tried in parallel, each within its own connect timeout; an instrument that
does not answer costs its timeout, not the others'. Emulated instruments (``emulator://NAME``,
``in-process://NAME``) are started for the check; every instrument is built through the same
assembly path as the daemons (`satqkd.assembly`). An entropy source is also asked for a few
bytes (behind a QRNG's, its health tests run on fresh raw bytes). Output is a rich table on a
terminal and plain lines otherwise. Exit status: 0 all healthy, 1 any unhealthy or unreachable,
2 a bad config.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from drivers.interfaces import Device, DeviceError, EntropySource
from drivers.registry import BuildContext
from satqkd.assembly import AssemblyError, EmulatorFactory, open_instrument
from satqkd.config import ConfigError
from satqkd.instruments_config import BenchConfig, load_instruments_config
from satqkd_runtime.clock import RealClock

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
EXIT_BAD_CONFIG = 2
_CLOSE_TIMEOUT_S = 2.0
#: what a check draws from an entropy source: enough to pass the health tests once more
ENTROPY_CHECK_BYTES = 64


@dataclass
class InstrumentCheck:
    """The outcome of checking one instrument."""

    name: str
    driver: str
    resource: str
    identity: str = ""
    healthy: bool = False
    verdict: str = ""
    readings: dict[str, Any] = field(default_factory=dict)


def _reason(detail: dict[str, Any]) -> str:
    for key in ("error", "too_warm_channels", "saturated", "error_code"):
        if detail.get(key):
            return f"{key}: {detail[key]}"
    return "instrument reports a fault"


def _no_pattern(pulse_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A pattern of all zeros: a simulated source under check emits nothing that matters."""
    zeros = np.zeros(np.shape(pulse_index), np.uint8)
    return zeros, zeros, zeros


async def check_instrument(
    bench: BenchConfig, name: str, stack: contextlib.AsyncExitStack
) -> InstrumentCheck:
    """Measure: build one instrument, connect, read its status, close it (never raises for
    it)."""
    entry = bench.instruments[name]
    result = InstrumentCheck(name, entry.driver, entry.resource)
    clock = RealClock()
    try:
        device: Device = await open_instrument(
            bench, name, BuildContext(clock=clock, pattern=_no_pattern), EmulatorFactory(clock),
            stack,
        )  # fmt: skip
    except AssemblyError as exc:
        result.verdict = f"FAIL ({str(exc).split(': ', 2)[-1]})"
        return result
    transport = getattr(device, "transport", None)
    shown = getattr(transport, "name", None) or getattr(getattr(device, "link", None), "name", None)
    if entry.path in ("emulator", "in-process") and shown:
        result.resource = str(shown)
    try:
        await device.connect(entry.connect_timeout_s)
        if isinstance(device, EntropySource):
            await _draw_check_bytes(device, entry.connect_timeout_s)
        async with asyncio.timeout(entry.connect_timeout_s):  # not wait_for (issue 13)
            status = await device.status()
        result.identity = status.identity
        result.readings = {k: v for k, v in status.detail.items() if k != "counters"}
        result.healthy = status.healthy
        result.verdict = "OK" if status.healthy else f"UNHEALTHY ({_reason(status.detail)})"
    except (DeviceError, OSError, TimeoutError) as exc:
        result.verdict = f"FAIL ({exc})"
    finally:
        with contextlib.suppress(DeviceError, OSError, TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await device.close()
    return result


async def _draw_check_bytes(device: EntropySource, timeout_s: float) -> None:
    """Measure: draw a few bytes (a QRNG's health tests run on the raw bytes behind them);
    DeviceError if the source fails or returns the wrong length."""
    async with asyncio.timeout(timeout_s):
        sample = await device.read(ENTROPY_CHECK_BYTES, "instruments-check")
    if len(sample) != ENTROPY_CHECK_BYTES:
        raise DeviceError(f"{device.name}: asked {ENTROPY_CHECK_BYTES} bytes, got {len(sample)}")


async def check_instruments(config: BenchConfig) -> list[InstrumentCheck]:
    """Measure: check every instrument of a bench in parallel (emulators started as needed)."""
    async with contextlib.AsyncExitStack() as stack:
        return list(
            await asyncio.gather(
                *(check_instrument(config, name, stack) for name in config.instruments)
            )
        )


def _format_readings(readings: dict[str, Any]) -> str:
    parts = []
    for key, value in readings.items():
        if isinstance(value, float):
            value = f"{value:g}"
        elif isinstance(value, list):
            value = "/".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        parts.append(f"{key}={value}")
    return " ".join(parts)


def render_checks(
    results: list[InstrumentCheck], stream: TextIO, tty: bool, width: int | None = None
) -> None:
    """Control: print one row per instrument: a rich table on a terminal, plain lines otherwise."""
    healthy = sum(result.healthy for result in results)
    summary = f"{len(results)} instrument(s): {healthy} healthy, {len(results) - healthy} not"
    if tty:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(title="Instruments")
        for column in ("instrument", "driver", "resource", "identity", "status", "verdict"):
            table.add_column(column)
        for result in results:
            # Text cells: an instrument's reply must never be read as rich markup
            table.add_row(
                Text(result.name),
                Text(result.driver),
                Text(result.resource),
                Text(result.identity or "-"),
                Text(_format_readings(result.readings) or "-"),
                Text(result.verdict, style="green" if result.healthy else "red"),
            )
        console = Console(file=stream, force_terminal=True, width=width, highlight=False)
        console.print(table)
        console.print(Text(summary))
        return
    for result in results:
        fields = [
            result.name,
            result.driver,
            result.resource,
            result.identity or "-",
            _format_readings(result.readings) or "-",
            result.verdict,
        ]
        print("  ".join(fields), file=stream)
    print(summary, file=stream)


def run_instruments_check(config: str) -> int:
    """Control: the `satqkd instruments check CONFIG` command; returns the exit status."""
    try:
        bench = load_instruments_config(config)
    except ConfigError as exc:
        print(f"satqkd: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    results = asyncio.run(check_instruments(bench))
    render_checks(results, sys.stdout, tty=sys.stdout.isatty())
    return EXIT_HEALTHY if all(result.healthy for result in results) else EXIT_UNHEALTHY
