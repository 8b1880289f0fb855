"""VISA transport (pyvisa with pyvisa-py, or pyvisa-sim), run in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from drivers.interfaces import DeviceDisconnected, DeviceTimeout
from drivers.transport_base import Transport, _check_timeout
from satqkd_core.errors import InputError


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
            async with asyncio.timeout(guard_s):  # not wait_for: see transport_base
                return await future
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
