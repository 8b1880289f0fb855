"""The pass monitor's web application (Starlette, served by uvicorn) and its data sources.

- `GET /`: the page (static/index.html, monitor.js, monitor.css: no CDN, no build step);
- `GET /api/state`: the current `PassView.snapshot()` as JSON;
- `GET /api/stream`: the same snapshot pushed as Server-Sent Events each time it changes (at
  most `push_interval_s` apart), so the page updates during a pass.

A source feeds the view: `bus_source` (a broker, live: the mission's telemetry and events, as
the control centre reads them) or `replay_source` (an archive or a report's telemetry.jsonl,
at the pace it was recorded, times `speed`). `serve` runs the web server and a source together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from satqkd.monitor.state import PassView

if TYPE_CHECKING:
    from satqkd.pass_recorder import Record
    from satqkd_runtime.bus_tls import BusTls

log = logging.getLogger("satqkd.monitor")

STATIC_DIR = Path(__file__).resolve().parent / "static"
# a gap in a replayed archive longer than this is shortened to it (a night between passes)
MAX_REPLAY_GAP_S = 2.0
# pace of a replayed stream without receive times (telemetry.jsonl of a report)
UNTIMED_REPLAY_INTERVAL_S = 0.02
_KEEPALIVE_S = 15.0


class ViewFeed:
    """A `PassView` and a way for the page's streams to wait until it changed."""

    def __init__(self, view: PassView) -> None:
        self.view = view
        self._changed = asyncio.Event()
        self.finished = False  # a replay has reached the end of its archive

    def add(self, record: Mapping[str, Any]) -> None:
        """Control: fold a record into the view and wake the streams (in the event loop)."""
        self.view.add(record)
        self._wake()

    def finish(self) -> None:
        """Control: mark a replay finished (the page says so) and wake the streams."""
        self.finished = True
        self.view.version += 1
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_changed(self, version: int, timeout_s: float) -> None:
        """Wait until the view's version differs from `version` (or `timeout_s` passed)."""
        changed = self._changed
        if self.view.version != version:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):  # not wait_for (issue 13)
                await changed.wait()


def create_app(feed: ViewFeed, *, push_interval_s: float = 0.25) -> Starlette:
    """Get: the monitor's Starlette application showing `feed`."""

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    async def state(request: Request) -> JSONResponse:
        return JSONResponse(_snapshot(feed))

    async def stream(request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            version = -1
            while True:
                if feed.view.version != version:
                    version = feed.view.version
                    yield f"data: {json.dumps(_snapshot(feed), allow_nan=False)}\n\n"
                    await asyncio.sleep(push_interval_s)  # at most one push per interval
                await feed.wait_changed(version, _KEEPALIVE_S)
                if feed.view.version == version:
                    yield ": keepalive\n\n"

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/state", state),
            Route("/api/stream", stream),
            Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        ]
    )


def _snapshot(feed: ViewFeed) -> dict[str, Any]:
    snapshot = feed.view.snapshot()
    snapshot["replay_finished"] = feed.finished
    return snapshot


async def bus_source(
    feed: ViewFeed,
    broker: str,
    mission: str,
    *,
    tls: BusTls | None = None,
    subscribed: Callable[[], None] | None = None,
) -> None:
    """Control: feed the view from a broker until cancelled (ConnectionError if it fails)."""
    from satqkd.tm_cli import stream_records, topic_filters

    def undecodable(topic: str, reason: str) -> None:
        log.warning("monitor: %s: not a decodable message (%s)", topic, reason)

    await stream_records(
        broker,
        topic_filters(mission, None),
        feed.add,
        tls=tls,
        on_undecodable=undecodable,
        stop=asyncio.Event(),  # never set: runs until cancelled
        on_subscribed=subscribed,
    )


async def replay_source(
    feed: ViewFeed,
    records: list[Record],
    *,
    speed: float = 1.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Control: feed the view with recorded messages at the pace they were received (gaps
    over MAX_REPLAY_GAP_S shortened), `speed` times faster; then mark the replay finished."""
    previous: float | None = None
    for record in records:
        received = record.get("received_unix_s")
        if isinstance(received, int | float):
            gap = 0.0 if previous is None else min(max(received - previous, 0.0), MAX_REPLAY_GAP_S)
            previous = float(received)
        else:
            gap = UNTIMED_REPLAY_INTERVAL_S
        if gap > 0:
            await sleep(gap / speed)
        feed.add(record)
    feed.finish()


async def serve(
    feed: ViewFeed,
    source: Awaitable[None],
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    started: Callable[[str], None] | None = None,
) -> None:
    """Control: serve the page on host:port while `source` feeds it; returns when the server
    stops (SIGINT/SIGTERM in the main thread, or cancellation). A source that fails (a broker
    gone) stops the server with its exception; one that ends (a replay) leaves the page up."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # SIGINT/SIGTERM end the monitor cleanly (exit 0): handled below, not re-raised
            yield

    config = uvicorn.Config(
        create_app(feed),
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = Server(config)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:  # bound here, so a port in use or a bad address is one OSError, before serving
        listener = socket.create_server((host, port), family=family)
    except OSError:
        if asyncio.iscoroutine(source):
            source.close()
        raise
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, setattr, server, "should_exit", True)
            handled.append(signum)
    server_task = asyncio.create_task(server.serve(sockets=[listener]), name="monitor-http")
    source_task = asyncio.ensure_future(source)
    try:
        while not server.started:
            if server_task.done():
                raise OSError(f"the monitor could not serve on {host}:{port}")
            await asyncio.sleep(0.02)
        if started is not None:
            started(f"http://{host}:{port}/")
        done, _ = await asyncio.wait(
            {server_task, source_task}, return_when=asyncio.FIRST_COMPLETED
        )
        if source_task in done and source_task.exception() is not None:
            server.should_exit = True
            await server_task
            raise source_task.exception()  # type: ignore[misc]
        await server_task
    finally:
        listener.close()
        for signum in handled:
            loop.remove_signal_handler(signum)
        for task in (source_task, server_task):
            if not task.done():
                if task is server_task:
                    server.should_exit = True
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
