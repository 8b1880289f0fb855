"""Byte transports under the instrument drivers: serial, TCP, VISA, and a scripted one for tests.

A driver speaks its command set through a `Transport` and cannot tell which one it has, so the
same bytes go to a lab instrument, an emulator on a pty or socket, or a protocol test script.
Every transport is asyncio-native and never blocks the event loop; a read that does not complete
raises `DeviceTimeout` and a lost link raises `DeviceDisconnected`, both naming the resource.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from drivers.interfaces import DeviceDisconnected, DeviceTimeout
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

_READ_CHUNK_BYTES = 4096
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _check_timeout(timeout_s: float, name: str = "timeout_s") -> float:
    value = float(timeout_s)
    if not math.isfinite(value) or value < 0.0:
        raise InputError(f"{name} must be a finite number of seconds >= 0, got {timeout_s!r}")
    return value


class Transport(ABC):
    """A byte stream to one instrument: open with a timeout, write, read framed replies, close."""

    name: str
    connected: bool

    @abstractmethod
    async def open(self, timeout_s: float = 5.0) -> None:
        """Control: open the link; DeviceTimeout naming the resource if it does not open in time."""

    @abstractmethod
    async def close(self) -> None:
        """Control: release the link (idempotent)."""

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Control: send bytes exactly as given."""

    @abstractmethod
    async def read_until(self, terminator: bytes, timeout_s: float) -> bytes:
        """Measure: bytes up to and including `terminator`."""

    @abstractmethod
    async def read_exactly(self, n: int, timeout_s: float) -> bytes:
        """Measure: exactly `n` bytes."""

    @abstractmethod
    async def read_available(self, timeout_s: float) -> bytes:
        """Measure: whatever arrives first (at least one byte)."""

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed"
        return f"<{type(self).__name__} {self.name} {state}>"


class _BufferedTransport(Transport):
    """Reads served from a receive buffer that a reader (callback, task or thread) fills."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connected = False
        self._buffer = bytearray()
        self._data_arrived = asyncio.Event()
        self._lost_reason: str | None = None

    def _reset_buffer(self) -> None:
        self._buffer.clear()
        self._data_arrived = asyncio.Event()
        self._lost_reason = None

    def _feed(self, data: bytes) -> None:
        self._buffer += data
        self._data_arrived.set()

    def _feed_lost(self, reason: str) -> None:
        if self._lost_reason is None:
            self._lost_reason = reason
        self.connected = False
        self._data_arrived.set()

    def _raise_if_unusable(self) -> None:
        if self._lost_reason is not None:
            raise DeviceDisconnected(f"{self.name}: {self._lost_reason}")
        if not self.connected:
            raise DeviceDisconnected(f"{self.name}: not connected")

    async def _wait_for_data(self, deadline: float, what: str, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        self._data_arrived.clear()
        remaining = deadline - loop.time()
        if remaining <= 0.0:
            # one pass through the loop so data already signalled by a reader is not missed
            await asyncio.sleep(0)
            if self._data_arrived.is_set():
                return
            raise DeviceTimeout(f"{self.name}: no {what} within {timeout_s:g} s")
        try:
            await asyncio.wait_for(self._data_arrived.wait(), remaining)
        except TimeoutError:
            raise DeviceTimeout(f"{self.name}: no {what} within {timeout_s:g} s") from None

    async def read_until(self, terminator: bytes, timeout_s: float) -> bytes:
        """Measure: bytes up to and including `terminator`."""
        if not isinstance(terminator, bytes | bytearray) or not terminator:
            raise InputError(f"terminator must be non-empty bytes, got {terminator!r}")
        timeout_s = _check_timeout(timeout_s)
        deadline = asyncio.get_running_loop().time() + timeout_s
        searched_from = 0
        while True:
            index = self._buffer.find(terminator, searched_from)
            if index >= 0:
                end = index + len(terminator)
                reply = bytes(self._buffer[:end])
                del self._buffer[:end]
                return reply
            searched_from = max(0, len(self._buffer) - len(terminator) + 1)
            self._raise_if_unusable()
            await self._wait_for_data(deadline, f"reply ending in {bytes(terminator)!r}", timeout_s)

    async def read_exactly(self, n: int, timeout_s: float) -> bytes:
        """Measure: exactly `n` bytes."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InputError(f"n must be an int >= 0, got {n!r}")
        timeout_s = _check_timeout(timeout_s)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(self._buffer) < n:
            self._raise_if_unusable()
            await self._wait_for_data(deadline, f"{n} bytes (have {len(self._buffer)})", timeout_s)
        reply = bytes(self._buffer[:n])
        del self._buffer[:n]
        return reply

    async def read_available(self, timeout_s: float) -> bytes:
        """Measure: whatever arrives first (at least one byte)."""
        timeout_s = _check_timeout(timeout_s)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self._buffer:
            self._raise_if_unusable()
            await self._wait_for_data(deadline, "bytes", timeout_s)
        reply = bytes(self._buffer)
        self._buffer.clear()
        return reply


# --- TCP ---------------------------------------------------------------------------------------


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
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), timeout_s
            )
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
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


# --- serial ------------------------------------------------------------------------------------


class SerialTransport(_BufferedTransport):
    """A serial port via pyserial; reads are event-driven on the file descriptor (or a thread)."""

    def __init__(self, port: str, baudrate: int = 9600, **serial_kwargs: Any) -> None:
        if not port:
            raise InputError("port must be a non-empty device path or pyserial URL")
        if isinstance(baudrate, bool) or not isinstance(baudrate, int) or baudrate <= 0:
            raise InputError(f"baudrate must be a positive int, got {baudrate!r}")
        super().__init__(f"serial://{port}?baud={baudrate}")
        self.port = port
        self.baudrate = baudrate
        self.serial_kwargs = dict(serial_kwargs)
        self._serial: Any = None
        self._fd: int | None = None
        self._thread: threading.Thread | None = None
        self._stop_thread = threading.Event()

    def _open_blocking(self) -> Any:
        import serial  # pyserial; imported here so TCP/VISA users need not load it

        try:
            # timeout=0: reads never block; the event loop tells us when bytes are there
            return serial.serial_for_url(
                self.port, baudrate=self.baudrate, timeout=0, **self.serial_kwargs
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceDisconnected(f"{self.name}: cannot open: {exc}") from None

    async def open(self, timeout_s: float = 5.0) -> None:
        """Control: open the port; DeviceTimeout if the OS does not open it within `timeout_s`."""
        timeout_s = _check_timeout(timeout_s)
        await self.close()
        self._reset_buffer()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self._open_blocking)
        try:
            port = await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            # the open may still complete in its thread: close whatever it returns
            future.add_done_callback(lambda f: f.exception() or f.result().close())
            raise DeviceTimeout(f"{self.name}: port did not open within {timeout_s:g} s") from None
        self._serial = port
        self.connected = True
        fileno = getattr(port, "fileno", None)
        try:
            fd = fileno() if fileno is not None else None
        except Exception:
            fd = None
        if fd is not None and os.name == "posix":
            self._fd = fd
            loop.add_reader(fd, self._on_readable)
        else:
            # URL handlers (loop://, socket://) and Windows ports have no pollable descriptor
            self._stop_thread = threading.Event()
            self._thread = threading.Thread(
                target=self._read_thread, args=(loop, port), name=f"read {self.name}", daemon=True
            )
            self._thread.start()

    def _on_readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, _READ_CHUNK_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:
            # EIO on a pty whose other end closed, ENXIO on an unplugged USB adapter
            self._stop_reader()
            self._feed_lost(f"read failed: {exc.strerror or exc}")
            return
        if not data:
            self._stop_reader()
            self._feed_lost("port closed")
            return
        self._feed(data)

    def _read_thread(self, loop: asyncio.AbstractEventLoop, port: Any) -> None:
        port.timeout = 0.05
        while not self._stop_thread.is_set():
            try:
                data = port.read(max(1, port.in_waiting))
            except Exception as exc:
                if not self._stop_thread.is_set():
                    loop.call_soon_threadsafe(self._feed_lost, f"read failed: {exc}")
                return
            if data:
                loop.call_soon_threadsafe(self._feed, data)

    def _stop_reader(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = None

    async def write(self, data: bytes) -> None:
        """Control: send bytes exactly as given (in a worker thread: a full UART must not block)."""
        self._raise_if_unusable()
        port = self._serial
        try:
            await asyncio.to_thread(port.write, bytes(data))
        except Exception as exc:
            self._stop_reader()
            self._feed_lost(f"write failed: {exc}")
            raise DeviceDisconnected(f"{self.name}: write failed: {exc}") from None

    async def close(self) -> None:
        """Control: close the port (idempotent)."""
        self.connected = False
        self._stop_reader()
        self._stop_thread.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 1.0)
        port, self._serial = self._serial, None
        if port is not None:
            with contextlib.suppress(Exception):
                port.close()


# --- VISA --------------------------------------------------------------------------------------


class VisaTransport(Transport):
    """A VISA resource through pyvisa (`@py` pyvisa-py, `file.yaml@sim` pyvisa-sim, or a vendor
    library); every blocking VISA call runs in one worker thread so calls stay ordered.

    The terminations configure the VISA session (its read termination character); `write` still
    sends bytes exactly as given, so the driver's bytes are identical on every transport.
    """

    def __init__(
        self,
        resource_name: str,
        backend: str = "@py",
        read_termination: str = "\n",
        write_termination: str = "\n",
    ) -> None:
        if not resource_name:
            raise InputError("resource_name must be a non-empty VISA resource name")
        if not read_termination:
            raise InputError("read_termination must be a non-empty string")
        self.resource_name = resource_name
        self.backend = backend
        self.read_termination = read_termination
        self.write_termination = write_termination
        self.name = f"visa://{resource_name}" + ("" if backend == "@py" else f" ({backend})")
        self.connected = False
        self._resource: Any = None
        self._buffer = bytearray()
        self._executor: ThreadPoolExecutor | None = None

    async def _call(self, function: Any, *args: Any, guard_s: float | None = None) -> Any:
        assert self._executor is not None
        future = asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        if guard_s is None:
            return await future
        try:
            # VISA enforces its own timeout; this guard only catches a library that hangs
            return await asyncio.wait_for(future, guard_s)
        except TimeoutError:
            self.connected = False
            raise DeviceTimeout(f"{self.name}: VISA call hung for {guard_s:g} s") from None

    def _open_blocking(self, timeout_s: float) -> Any:
        import pyvisa

        try:
            manager = pyvisa.ResourceManager(self.backend)
            if self.backend.endswith("@sim"):
                # pyvisa-sim opens any name and then never answers: refuse unknown ones here
                available = manager.list_resources("?*")
                wanted = pyvisa.rname.to_canonical_name(self.resource_name)
                if wanted not in available:
                    raise DeviceDisconnected(
                        f"{self.name}: no such simulated resource "
                        f"(available: {', '.join(available)})"
                    )
            resource = manager.open_resource(
                self.resource_name,
                read_termination=self.read_termination,
                write_termination=self.write_termination,
                open_timeout=max(1, int(timeout_s * 1000)),
            )
        except pyvisa.errors.VisaIOError as exc:
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                raise DeviceTimeout(f"{self.name}: did not open within {timeout_s:g} s") from None
            raise DeviceDisconnected(f"{self.name}: cannot open: {exc.description}") from None
        except (OSError, ValueError, LookupError, pyvisa.errors.Error) as exc:
            raise DeviceDisconnected(f"{self.name}: cannot open: {exc}") from None
        return resource

    async def open(self, timeout_s: float = 5.0) -> None:
        """Control: open the VISA session; DeviceTimeout if it does not open within `timeout_s`."""
        timeout_s = _check_timeout(timeout_s)
        await self.close()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="visa")
        self._buffer.clear()
        self._resource = await self._call(self._open_blocking, timeout_s, guard_s=timeout_s + 5.0)
        self.connected = True

    def _io_blocking(self, operation: str, argument: Any, timeout_s: float) -> Any:
        import pyvisa

        resource = self._resource
        try:
            resource.timeout = max(1, round(timeout_s * 1000))
            if operation == "write":
                return resource.write_raw(argument)
            if operation == "read_bytes":
                return resource.read_bytes(argument, break_on_termchar=False)
            return resource.read_raw()
        except pyvisa.errors.VisaIOError as exc:
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                raise DeviceTimeout(f"{self.name}: no reply within {timeout_s:g} s") from None
            self.connected = False
            raise DeviceDisconnected(
                f"{self.name}: {operation} failed: {exc.description}"
            ) from None
        except (OSError, pyvisa.errors.Error) as exc:
            self.connected = False
            raise DeviceDisconnected(f"{self.name}: {operation} failed: {exc}") from None

    def _require_open(self) -> None:
        if not self.connected or self._resource is None:
            raise DeviceDisconnected(f"{self.name}: not connected")

    async def write(self, data: bytes) -> None:
        """Control: send bytes exactly as given."""
        self._require_open()
        await self._call(self._io_blocking, "write", bytes(data), 10.0, guard_s=15.0)

    async def read_until(self, terminator: bytes, timeout_s: float) -> bytes:
        """Measure: bytes up to and including `terminator`."""
        if not isinstance(terminator, bytes | bytearray) or not terminator:
            raise InputError(f"terminator must be non-empty bytes, got {terminator!r}")
        timeout_s = _check_timeout(timeout_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (index := self._buffer.find(terminator)) < 0:
            self._require_open()
            remaining = deadline - loop.time()
            if remaining <= 0.0:
                raise DeviceTimeout(
                    f"{self.name}: no reply ending in {bytes(terminator)!r} within {timeout_s:g} s"
                )
            chunk = await self._call(
                self._io_blocking, "read_raw", None, remaining, guard_s=remaining + 5.0
            )
            self._buffer += chunk
        end = index + len(terminator)
        reply = bytes(self._buffer[:end])
        del self._buffer[:end]
        return reply

    async def read_exactly(self, n: int, timeout_s: float) -> bytes:
        """Measure: exactly `n` bytes."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InputError(f"n must be an int >= 0, got {n!r}")
        timeout_s = _check_timeout(timeout_s)
        missing = n - len(self._buffer)
        if missing > 0:
            self._require_open()
            self._buffer += await self._call(
                self._io_blocking, "read_bytes", missing, timeout_s, guard_s=timeout_s + 5.0
            )
        reply = bytes(self._buffer[:n])
        del self._buffer[:n]
        return reply

    async def read_available(self, timeout_s: float) -> bytes:
        """Measure: whatever arrives first (one VISA read, up to its termination character)."""
        timeout_s = _check_timeout(timeout_s)
        if not self._buffer:
            self._require_open()
            self._buffer += await self._call(
                self._io_blocking, "read_raw", None, timeout_s, guard_s=timeout_s + 5.0
            )
        reply = bytes(self._buffer)
        self._buffer.clear()
        return reply

    async def close(self) -> None:
        """Control: close the VISA session (idempotent); the resource manager stays shared."""
        self.connected = False
        resource, self._resource = self._resource, None
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if resource is not None:
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(executor, resource.close)
        executor.shutdown(wait=False)


# --- scripted (protocol tests) -----------------------------------------------------------------


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
