"""Embedded MQTT broker (amqtt) so one command can run a pass without a deployed Mosquitto."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

# amqtt logs every connection and packet at INFO and some client hang-ups at WARNING; a pass
# run prints its own summary, so only the broker's errors are worth showing.
_QUIET_LOGGERS = ("amqtt", "transitions")
_log = logging.getLogger(__name__)


def _quiet_broker_logging() -> None:
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.ERROR:
            logger.setLevel(logging.ERROR)


class EmbeddedBroker:
    """An amqtt broker on a free loopback port, as an async context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port: must be 0 (pick a free one) or 1..65535, got {port!r}")
        self.host = host
        self._requested_port = port
        self._broker: Any = None
        self._port: int | None = None

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
        await self._shutdown()

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
