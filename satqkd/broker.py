"""Embedded MQTT broker (amqtt) so one command can run a pass without a deployed Mosquitto."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from types import TracebackType
from typing import Any

# amqtt logs every connection and packet at INFO and some client hang-ups at WARNING; a pass
# run prints its own summary, so only the broker's errors are worth showing.
_QUIET_LOGGERS = ("amqtt", "transitions")
_log = logging.getLogger(__name__)


def _quiet_broker_logging() -> None:
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.CRITICAL:
            # its ERROR lines are client-side time-outs it recovers from, with tracebacks
            logger.setLevel(logging.CRITICAL)


class EmbeddedBroker:
    """An amqtt broker on a free loopback port, as an async context manager.

    With `own_thread=True` (the default) the broker runs its own event loop in a daemon
    thread, so a client process that keeps its loop busy (numba compiling on first use, a long
    privacy-amplification hash) cannot stall the broker into acknowledgement time-outs.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, own_thread: bool = True) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port: must be 0 (pick a free one) or 1..65535, got {port!r}")
        self.host = host
        self._requested_port = port
        self._broker: Any = None
        self._port: int | None = None
        self._own_thread = own_thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """Get the TCP port the broker listens on (only while running)."""
        if self._port is None:
            raise RuntimeError("EmbeddedBroker is not running")
        return self._port

    @property
    def url(self) -> str:
        """Get the broker url, 'mqtt://127.0.0.1:PORT' (only while running)."""
        return f"mqtt://{self.host}:{self.port}"

    async def __aenter__(self) -> EmbeddedBroker:
        """Start the broker and find the port it bound."""
        if not self._own_thread:
            return await self._start()
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="embedded-mqtt-broker", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._start(), loop))
        except BaseException:
            self._stop_thread()
            raise
        return self

    def _stop_thread(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()

    async def _start(self) -> EmbeddedBroker:
        _quiet_broker_logging()
        from amqtt.broker import Broker  # imported here: amqtt is only needed when embedding

        config = {
            "listeners": {
                "default": {"type": "tcp", "bind": f"{self.host}:{self._requested_port}"},
            },
            # Only anonymous auth: the default plugin set adds packet logging and $SYS topics.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        broker = Broker(config)
        await broker.start()
        self._broker = broker
        try:
            self._port = self._bound_port(broker)
            # accepted connections inherit TCP_NODELAY from the listening socket (Linux);
            # without it every QoS 1 acknowledgement waits for a delayed ACK (~40 ms)
            for sock in broker._servers["default"].instance.sockets:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except Exception:
            await self._shutdown()
            raise
        return self

    @staticmethod
    def _bound_port(broker: Any) -> int:
        # Binding port 0 and reading the port back is race-free, unlike probing for a free port
        # first; amqtt exposes its asyncio servers only through this private mapping.
        server = broker._servers["default"].instance
        return int(server.sockets[0].getsockname()[1])

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the broker and close its port."""
        if self._loop is None:
            await self._shutdown()
            return
        try:
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            )
        finally:
            self._stop_thread()

    async def _shutdown(self) -> None:
        broker, self._broker = self._broker, None
        port, self._port = self._port, None
        if broker is None:
            return
        try:
            await broker.shutdown()
        except Exception:
            # A failed shutdown must not mask the exception that ended the caller's block.
            _log.warning(
                "embedded MQTT broker on port %s did not shut down cleanly", port, exc_info=True
            )
