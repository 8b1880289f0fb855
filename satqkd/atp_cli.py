"""`satqkd atp calibrate ROUTINE --bench BENCH.yaml [--station STATION.yaml] --out DIR`: one of
the station's ATP calibration routines (satqkd_ogs.calibration), run through the bench's
drivers, writing DIR/calibration.yaml, DIR/summary.json and plots (docs/atp-calibration.md).

A bench whose station instruments are all emulated (`emulator://`, `in-process://`) runs on
simulated time, its emulators closing on a calibration sky with hidden truths: `--truth FILE`
(configs/calibration/sim-truth.yaml by default) says what they are. Any other bench runs on the
real clock against its hardware, and `--truth` is refused.

Exit status: 0 done, 1 a routine or instrument failed, 2 bad input (one line names it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GROUP = "atp"
EXIT_USAGE = 2
EXIT_FAILED = 1
_SLOTS = ("gimbal", "fsm", "beacon", "detectors")
_DEFAULT_TRUTH = Path(__file__).resolve().parent.parent / "configs/calibration/sim-truth.yaml"


#: one line per routine (satqkd_ogs.calibration.ROUTINES, a test holds the two equal); kept
#: here so that building the parser imports nothing heavy
ROUTINE_HELP = {
    "fsm-response": "mirror steps and sine sweeps read on the beacon sensor: gain matrix "
    "(cross-coupling, rotation), bandwidth, settling time, Bode plot",
    "gimbal-pointing-model": "the mount on catalogue stars, offsets nulled on the beacon sensor: "
    "TPOINT-style terms (IA IE CA NPAE AN AW TF RF) with uncertainties, residual sky map",
    "boresight": "count-rate scan over mirror offsets on the source: the quantum channel's "
    "centre against the beacon sensor's null, coupling profile",
    "beacon-sensor-gain": "known mount offsets across the sensor's field: gain, offset, "
    "non-linearity, linear range",
    "tracking-bandwidth": "the station's fine loop closed, a disturbance sine swept into the "
    "mirror command: sensitivity curve and closed-loop bandwidth",
}


def register(sub: Any) -> None:
    """Control: add the `atp` group (calibrate) to the `satqkd` parser."""
    group = sub.add_parser("atp", help="station ATP: calibration routines")
    commands = group.add_subparsers(dest="command", required=True)
    routines = "\n".join(f"  {name:23s} {text}" for name, text in ROUTINE_HELP.items())
    calibrate = commands.add_parser(
        "calibrate",
        help="run one ATP calibration routine on a bench",
        description="Run one ATP calibration routine through the bench's drivers; writes "
        "DIR/calibration.yaml (the station file's atp.calibration), DIR/summary.json and plots.",
        epilog=f"routines:\n{routines}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    calibrate.add_argument(
        "routine",
        choices=list(ROUTINE_HELP),
        metavar="ROUTINE",
        help=f"one of: {', '.join(ROUTINE_HELP)}",
    )
    calibrate.add_argument("--bench", required=True, metavar="BENCH.yaml", help="the bench file")
    calibrate.add_argument(
        "--station",
        metavar="STATION.yaml",
        help="the station profile (location, ATP loop settings, receiver)",
    )
    calibrate.add_argument("--out", required=True, metavar="DIR", help="where the results go")
    calibrate.add_argument(
        "--truth",
        metavar="FILE",
        help="emulated benches only: the hidden truths of the calibration sky",
    )
    calibrate.add_argument(
        "--source-az-deg",
        type=float,
        default=None,
        help="where the bench source is (mount encoder azimuth, deg)",
    )
    calibrate.add_argument(
        "--source-el-deg",
        type=float,
        default=None,
        help="where the bench source is (mount encoder elevation, deg)",
    )
    calibrate.add_argument(
        "--stars", type=int, default=None, help="gimbal-pointing-model: how many stars (default 24)"
    )


def _fail(message: str, status: int) -> int:
    print(f"satqkd: {' '.join(str(message).split())}", file=sys.stderr)
    return status


def run(args: argparse.Namespace) -> int:
    """Run `satqkd atp calibrate` (exit status per the module docstring)."""
    from drivers.interfaces import DeviceError
    from satqkd.assembly import AssemblyError
    from satqkd.config import ConfigError
    from satqkd_core.errors import InputError
    from satqkd_ogs.calibration import CalibrationError

    try:
        plan = _plan(args)
    except (ConfigError, InputError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        result, files = asyncio.run(_calibrate(plan))
    except (ConfigError, InputError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except (CalibrationError, AssemblyError) as exc:
        return _fail(f"{args.routine}: {exc}", EXIT_FAILED)
    except (DeviceError, OSError, TimeoutError) as exc:  # an instrument failed mid-routine
        return _fail(f"{args.routine}: instrument failure: {exc}", EXIT_FAILED)
    for name, fitted in result.fitted.items():
        print(f"{name:26s} {fitted.value:12.5g} +- {fitted.uncertainty:.2g} {fitted.unit}")
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    """Everything the run needs, validated before any instrument is touched."""
    from satqkd.config import ConfigError, StationConfig, load_model
    from satqkd.instruments_config import load_instruments_config, simulated_target
    from satqkd.station_site import station_position
    from satqkd_core.ephemeris import Station
    from satqkd_ogs.calibration import RoutineSettings, load_calibration
    from satqkd_ogs.settings import AtpSettings

    bench = load_instruments_config(args.bench)
    station_cfg, location, atp = None, Station(40.3958, 117.5775, 900.0), AtpSettings()
    if args.station is not None:
        station_file = Path(args.station)
        station_cfg = load_model(StationConfig, station_file)
        place = station_position(station_cfg, station_file)
        if not isinstance(place, Station):
            raise ConfigError(f"{station_file}: a moving station cannot be calibrated on a bench")
        location = place
        atp = AtpSettings(
            **{n: getattr(station_cfg.atp, n) for n in AtpSettings.__pydantic_fields__}
        )
    station_entries = [e for e in bench.instruments.values() if e.kind in _SLOTS]
    if not station_entries:
        raise ConfigError(f"{args.bench}: no gimbal, fsm, beacon or detectors to calibrate")
    simulated = all(simulated_target(e.resource) is not None for e in station_entries)
    if args.truth is not None and not simulated:
        raise ConfigError("--truth is for emulated benches only (this bench has hardware)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    prior = None
    if (out / "calibration.yaml").is_file():
        prior = load_calibration(out / "calibration.yaml")
    elif station_cfg is not None and station_cfg.atp.calibration is not None:
        prior = load_calibration(Path(args.station).parent / station_cfg.atp.calibration)
    if args.stars is not None and not 6 <= args.stars <= 94:
        raise ConfigError(f"--stars must be 6..94, got {args.stars}")
    settings = RoutineSettings(
        source_az_deg=args.source_az_deg,
        source_el_deg=args.source_el_deg,
        stars=args.stars or 24,
        scan_half_width_urad=(station_cfg.receiver.field_of_view_urad if station_cfg else 60.0),
    )
    truth = None
    if simulated:
        from satqkd.atp_calibration_truth import load_truth

        truth = load_truth(
            Path(args.truth) if args.truth else _DEFAULT_TRUTH,
            station_cfg,
            atp,
            Path(args.station) if args.station else None,
        )
        if settings.source_az_deg is None and truth.source is not None:
            settings = _replace(
                settings, source_az_deg=truth.source.az_deg, source_el_deg=truth.source.el_deg
            )
    return {
        "args": args,
        "bench": bench,
        "location": location,
        "atp": atp,
        "prior": prior,
        "settings": settings,
        "truth": truth,
        "out": out,
        "station": station_cfg,
    }


def _replace(settings: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(settings, **changes)


class _LeadingClock:
    """The routine's clock on a simulated bench: its sleeps move simulated time (the routine is
    the only one that waits; the emulators' own ticks follow)."""

    judges_overruns = False

    def __init__(self, clock: Any) -> None:
        self.clock = clock

    def now_unix_s(self) -> float:
        return float(self.clock.now_unix_s())

    async def sleep_until(self, unix_s: float) -> None:
        if unix_s > self.clock.now_unix_s():
            await self.clock.advance_to(unix_s)
        else:
            await asyncio.sleep(0)

    def participating(self, name: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


async def _calibrate(plan: dict[str, Any]) -> tuple[Any, list[Path]]:
    from drivers.registry import BuildContext
    from satqkd.assembly import EmulatorFactory, assemble_node
    from satqkd_ogs.calibration import ROUTINES, CalibrationBench, write_outputs
    from satqkd_runtime.clock import RealClock, SimClock

    args, truth = plan["args"], plan["truth"]
    async with contextlib.AsyncExitStack() as stack:
        if truth is not None:
            from satqkd.atp_calibration_truth import TruthEmulators

            sim_clock = SimClock(truth.start_unix_s)
            factory: EmulatorFactory = TruthEmulators(
                truth, plan["bench"], sim_clock, plan["station"]
            )
            clock: Any = _LeadingClock(sim_clock)
            build_clock: Any = sim_clock
        else:
            clock = build_clock = RealClock()
            factory = EmulatorFactory(build_clock)
        node = await assemble_node(
            plan["bench"],
            "station",
            clock=build_clock,
            stack=stack,
            context=BuildContext(clock=build_clock),
            emulators=factory,
            slots=_SLOTS,
        )
        detectors = node.devices.get("detectors")
        bench = CalibrationBench(
            clock=clock,
            gimbal=node.devices.get("gimbal"),  # type: ignore[arg-type]
            fsm=node.devices.get("fsm"),  # type: ignore[arg-type]
            beacon=node.devices.get("beacon"),  # type: ignore[arg-type]
            detectors=detectors,  # type: ignore[arg-type]
            atp=plan["atp"],
            prior=plan["prior"],
            detector_channels=int(getattr(detectors, "channel_count", 4) or 4),
        )
        if plan["station"] is not None:
            bench.detector_bias_v = plan["station"].detectors.bias_v
            bench.detector_max_temperature_c = plan["station"].detectors.max_temperature_c
        routine = ROUTINES[args.routine]
        if args.routine == "gimbal-pointing-model":
            result = await routine(bench, plan["settings"], plan["location"])  # type: ignore[call-arg]
        else:
            result = await routine(bench, plan["settings"])  # type: ignore[call-arg]
        files = write_outputs(
            result,
            plan["out"],
            bench=plan["bench"].origin,
            instruments=node.station_paths(),
            unix_s=clock.now_unix_s(),
        )
    return result, files


def utc_text(unix_s: float) -> str:
    """Get: an ISO UTC time for messages."""
    return datetime.fromtimestamp(unix_s, UTC).isoformat() if math.isfinite(unix_s) else "?"
