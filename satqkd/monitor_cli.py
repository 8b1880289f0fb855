"""`satqkd monitor`: the live pass monitor in a web browser.

    satqkd monitor --broker URL [--mission M] [--station STATION.yaml] [--port P]
    satqkd monitor --replay ARCHIVE [--speed X] [--station STATION.yaml] [--port P]

Serves http://HOST:PORT/ (loopback unless `--host` says otherwise: the page has no login)
showing the sky track with the station's mask, ATP mode and spot, detections and QBER by
basis, counts by intensity, the clock, the key inventory per node and the events
(satqkd.monitor). Runs until interrupted; exit status 0, 1 if the broker fails, 2 a usage
mistake (one line).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

GROUP = "monitor"
EXIT_USAGE = 2
EXIT_FAILED = 1


def register(sub: Any) -> None:
    """Control: add the `monitor` command to the `satqkd` parser."""
    from satqkd.tm_cli import add_broker_arguments

    parser = sub.add_parser(GROUP, help="live pass monitor in a web browser")
    source = parser.add_argument_group("source (one of --broker, --replay)")
    add_broker_arguments(source, required=False)
    source.add_argument("--replay", metavar="ARCHIVE", help="a telemetry archive to play back")
    source.add_argument(
        "--speed", type=float, default=1.0, help="replay this many times faster (default 1)"
    )
    parser.add_argument(
        "--station", metavar="STATION.yaml", help="the station file (its elevation mask is drawn)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="listen port (default 8765)")


def _station(path: str | None) -> tuple[str | None, float | None]:
    if path is None:
        return None, None
    from satqkd.config import StationConfig, load_model

    station = load_model(StationConfig, Path(path))  # ConfigError: one line naming the key
    return station.name, float(station.min_elevation_deg)


def run(args: argparse.Namespace) -> int:
    """`satqkd monitor`: serve the page until interrupted."""
    import asyncio

    from satqkd.monitor.app import ViewFeed, bus_source, replay_source, serve
    from satqkd.monitor.state import PassView
    from satqkd.telemetry_archive import ArchiveError, read_archive
    from satqkd.tm_cli import TmUsageError, reader_tls, topic_filters

    try:
        if (args.broker is None) == (args.replay is None):
            raise TmUsageError("give one source: --broker URL (live) or --replay ARCHIVE")
        if not 1 <= args.port <= 65535:
            raise TmUsageError(f"--port must be in 1..65535, got {args.port}")
        if not (math.isfinite(args.speed) and args.speed > 0):
            raise TmUsageError(f"--speed must be a positive number, got {args.speed:g}")
        name, mask = _station(args.station)
        if args.replay is not None:
            records = read_archive(args.replay)
            label = f"replay of {args.replay}"
            tls = None
        else:
            topic_filters(args.mission, None)  # a bad mission name, before serving
            tls = reader_tls(args)
            label = args.broker
    except (TmUsageError, ArchiveError, ValueError) as exc:
        return _fail(str(exc), EXIT_USAGE)

    async def main() -> None:
        feed = ViewFeed(PassView(label, name, mask))
        if args.replay is not None:
            source = replay_source(feed, records, speed=args.speed)
        else:
            source = bus_source(feed, args.broker, args.mission, tls=tls)

        def started(url: str) -> None:
            print(f"monitor: {url} showing {label}; Ctrl-C to stop", flush=True)

        await serve(feed, source, host=args.host, port=args.port, started=started)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        return 0
    except ConnectionError as exc:
        return _fail(f"broker: {exc}")
    except OSError as exc:
        return _fail(f"--host {args.host} --port {args.port}: {exc.strerror or exc}")
    return 0


def _fail(message: str, status: int = EXIT_FAILED) -> int:
    print(f"satqkd: {message}", file=sys.stderr)
    return status
