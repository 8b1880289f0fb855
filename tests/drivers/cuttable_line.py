"""A serial transport for tests of the payload controller link whose transmit wire can be cut."""

from __future__ import annotations

from drivers.transport import SerialTransport


class CuttableLine(SerialTransport):
    """A serial line whose transmit wire can be cut: telecommands are lost, telemetry flows."""

    cut = False

    async def write(self, data: bytes) -> None:
        if not self.cut:
            await super().write(data)
