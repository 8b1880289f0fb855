"""Byte transports under the instrument drivers: serial, TCP, VISA, and a scripted one for tests.

A driver speaks its command set through a `Transport` and cannot tell which one it has, so the
same bytes go to a lab instrument, an emulator on a pty or socket, or a protocol test script.
Every transport is asyncio-native and never blocks the event loop; a read that does not complete
raises `DeviceTimeout` and a lost link raises `DeviceDisconnected`, both naming the resource.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from urllib.parse import parse_qsl, unquote

from drivers.interfaces import DeviceDisconnected, DeviceTimeout
from drivers.transport_base import (
    _PACKAGE_ROOT,
    _READ_CHUNK_BYTES,
    Transport,
    _BufferedTransport,
    _check_timeout,
)
from drivers.transport_serial import SerialTransport
from drivers.transport_visa import VisaTransport
from satqkd_core.errors import InputError

__all__ = [
    "DeviceDisconnected",
    "ScriptedTransport",
    "SerialTransport",
    "TcpTransport",
    "Transport",
    "VisaTransport",
    "open_transport",
]


class TcpTransport(_BufferedTransport):
    """A raw TCP socket (instrument LAN ports, terminal servers) over asyncio streams."""

    def __init__(self, host: str, port: int) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise InputError(f"port must be an int in 1..65535, got {port!r}")
        if not host:
            raise InputError("host must be a non-empty host name or address")
        super().__init__(f"tcp://{host}:{port}")
        self.host = host
        self.port = port
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def open(self, timeout_s: float = 5.0) -> None:
        """Control: connect; DeviceTimeout if the peer does not accept within `timeout_s`."""
        timeout_s = _check_timeout(timeout_s)
        await self.close()
        self._reset_buffer()
        try:
            async with asyncio.timeout(timeout_s):  # not wait_for: see transport_base
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError:
            raise DeviceTimeout(f"{self.name}: no connection within {timeout_s:g} s") from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise DeviceDisconnected(f"{self.name}: cannot connect: {reason}") from None
        self._writer = writer
        self.connected = True
        self._reader_task = asyncio.create_task(self._pump(reader), name=f"read {self.name}")

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await reader.read(_READ_CHUNK_BYTES)
                if not data:
                    self._feed_lost("connection closed by the peer")
                    return
                self._feed(data)
        except OSError as exc:
            self._feed_lost(f"connection lost: {exc.strerror or exc}")

    async def write(self, data: bytes) -> None:
        """Control: send bytes exactly as given."""
        self._raise_if_unusable()
        assert self._writer is not None
        try:
            self._writer.write(bytes(data))
            await self._writer.drain()
        except OSError as exc:
            self._feed_lost(f"write failed: {exc.strerror or exc}")
            raise DeviceDisconnected(f"{self.name}: write failed: {exc.strerror or exc}") from None

    async def close(self) -> None:
        """Control: close the socket (idempotent)."""
        self.connected = False
        caller_cancelled = False
        task, self._reader_task = self._reader_task, None
        if task is not None:
            current = asyncio.current_task()
            cancels_before = current.cancelling() if current is not None else 0
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                # ours ended as asked; a cancel of the caller meanwhile (its timeout) is not
                # ours to swallow: raised again below, once the rest is closed
                caller_cancelled = current is not None and current.cancelling() > cancels_before
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if caller_cancelled:
            raise asyncio.CancelledError


# --- serial ------------------------------------------------------------------------------------


class ScriptedTransport(_BufferedTransport):
    """A transport that plays a protocol script: each step is (bytes the driver must send, reply).

    A step whose expected bytes are empty is a reply the instrument sends unprompted (an
    unsolicited event); it is delivered as soon as the previous step completes. An empty reply
    is a command the instrument does not answer. Any byte the driver sends that differs from the
    script raises AssertionError naming the step.
    """

    def __init__(self, pairs: list[tuple[bytes, bytes]], name: str = "scripted") -> None:
        for index, pair in enumerate(pairs):
            if (
                not isinstance(pair, tuple)
                or len(pair) != 2
                or not all(isinstance(part, bytes) for part in pair)
            ):
                raise InputError(f"pairs[{index}] must be a (bytes, bytes) tuple, got {pair!r}")
        super().__init__(name)
        self.pairs = list(pairs)
        self.step = 0
        self.open_count = 0
        self._pending_sent = bytearray()

    def _describe(self, step: int) -> str:
        return f"{self.name} step {step + 1} of {len(self.pairs)}"

    def _deliver_unprompted(self) -> None:
        while self.step < len(self.pairs) and self.pairs[self.step][0] == b"":
            self._feed(self.pairs[self.step][1])
            self.step += 1

    async def open(self, timeout_s: float = 5.0) -> None:
        """Control: mark the script connected (a reopen keeps the script position)."""
        _check_timeout(timeout_s)
        self.connected = True
        self._lost_reason = None
        self.open_count += 1
        self._deliver_unprompted()

    async def close(self) -> None:
        """Control: mark the script closed."""
        self.connected = False

    async def write(self, data: bytes) -> None:
        """Control: check the bytes against the script and queue the scripted reply."""
        self._raise_if_unusable()
        self._pending_sent += data
        while self._pending_sent:
            if self.step >= len(self.pairs):
                raise AssertionError(
                    f"{self.name}: driver sent {bytes(self._pending_sent)!r} "
                    f"after the script's {len(self.pairs)} steps ended"
                )
            expected, reply = self.pairs[self.step]
            sent = bytes(self._pending_sent[: len(expected)])
            if sent != expected[: len(sent)]:
                raise AssertionError(
                    f"{self._describe(self.step)}: expected the driver to send {expected!r}, "
                    f"it sent {bytes(self._pending_sent)!r}"
                )
            if len(sent) < len(expected):
                return  # the rest of this command is still to come
            del self._pending_sent[: len(expected)]
            self.step += 1
            if reply:
                self._feed(reply)
            self._deliver_unprompted()

    def assert_all_consumed(self) -> None:
        """Measure: raise AssertionError unless every step was sent and every reply was read."""
        problems = []
        if self.step < len(self.pairs):
            expected = self.pairs[self.step][0]
            problems.append(
                f"{len(self.pairs) - self.step} step(s) not reached; next is "
                f"{self._describe(self.step)} expecting {expected!r}"
            )
        if self._pending_sent:
            problems.append(f"a partial command {bytes(self._pending_sent)!r} was left")
        if self._buffer:
            problems.append(f"reply bytes never read: {bytes(self._buffer)!r}")
        if problems:
            raise AssertionError(f"{self.name}: " + "; ".join(problems))


# --- resource strings --------------------------------------------------------------------------

_SERIAL_OPTIONS = {
    "bytesize": int,
    "parity": str,
    "stopbits": float,
    "rtscts": lambda text: text.lower() in ("1", "true", "yes", "on"),
    "xonxoff": lambda text: text.lower() in ("1", "true", "yes", "on"),
    "dsrdtr": lambda text: text.lower() in ("1", "true", "yes", "on"),
}
_RESOURCE_FORMS = (
    "serial:///dev/ttyUSB0?baud=9600, tcp://HOST:PORT, visa://VISA-RESOURCE[?backend=@py], "
    "visa-sim://FILE.yaml#VISA-RESOURCE"
)


def _split_query(text: str) -> tuple[str, dict[str, str]]:
    base, _, query = text.partition("?")
    return base, dict(parse_qsl(query, keep_blank_values=True)) if query else {}


def _serial_transport(resource: str, rest: str) -> SerialTransport:
    path, options = _split_query(rest)
    path = unquote(path)
    if not path:
        raise ValueError(f"{resource!r}: serial resource needs a port, e.g. serial:///dev/ttyUSB0")
    baud_text = options.pop("baud", options.pop("baudrate", "9600"))
    try:
        baudrate = int(baud_text)
        kwargs = {key: _SERIAL_OPTIONS[key](value) for key, value in options.items()}
    except KeyError as exc:
        allowed = ", ".join(["baud", *_SERIAL_OPTIONS])
        raise ValueError(
            f"{resource!r}: unknown serial option {exc} (allowed: {allowed})"
        ) from None
    except ValueError:
        raise ValueError(f"{resource!r}: serial options must be numbers where numeric") from None
    if baudrate <= 0:
        raise ValueError(f"{resource!r}: baud must be positive, got {baudrate}")
    return SerialTransport(path, baudrate, **kwargs)


def _tcp_transport(resource: str, rest: str) -> TcpTransport:
    hostport = rest.rstrip("/")
    host, sep, port_text = hostport.rpartition(":")
    host = host.strip("[]")  # IPv6 literals are written [::1]:5000
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{resource!r}: tcp resource must be tcp://HOST:PORT with PORT 1..65535")
    return TcpTransport(host, int(port_text))


def _visa_sim_path(resource: str, file_text: str) -> Path:
    path = Path(unquote(file_text))
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, _PACKAGE_ROOT / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ValueError(f"{resource!r}: simulation file {file_text!r} not found")


def open_transport(resource: str) -> Transport:
    """Get an (unopened) transport for a resource string; ValueError naming a bad string."""
    if not isinstance(resource, str) or "://" not in resource:
        raise ValueError(f"{resource!r}: not a resource string (expected {_RESOURCE_FORMS})")
    scheme, rest = resource.split("://", 1)
    scheme = scheme.lower()
    try:
        if scheme == "serial":
            return _serial_transport(resource, rest)
        if scheme == "tcp":
            return _tcp_transport(resource, rest)
        if scheme == "visa":
            name, options = _split_query(rest)
            backend = options.pop("backend", "@py")
            if not name or options:
                raise ValueError(
                    f"{resource!r}: visa resource must be visa://RESOURCE[?backend=@py]"
                )
            return VisaTransport(name, backend)
        if scheme == "visa-sim":
            file_text, sep, name = rest.partition("#")
            if not sep or not file_text or not name:
                raise ValueError(f"{resource!r}: visa-sim resource must be FILE.yaml#RESOURCE")
            return VisaTransport(name, f"{_visa_sim_path(resource, file_text)}@sim")
    except InputError as exc:
        raise ValueError(f"{resource!r}: {exc}") from None
    raise ValueError(f"{resource!r}: unknown scheme {scheme!r} (expected {_RESOURCE_FORMS})")
