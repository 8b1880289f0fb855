"""Serial transport (pyserial) that never blocks the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from typing import Any

from drivers.interfaces import DeviceDisconnected, DeviceTimeout
from drivers.transport_base import _READ_CHUNK_BYTES, _BufferedTransport, _check_timeout
from satqkd_core.errors import InputError


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
            async with asyncio.timeout(timeout_s):  # not wait_for: see transport_base
                port = await asyncio.shield(future)
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
