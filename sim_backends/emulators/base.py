"""Wire-level instrument emulators: a line protocol served on a pty, a loopback TCP port, or
straight through memory.

An emulator runs in-process as asyncio tasks. The driver opens it exactly as it would open the
instrument (pyserial on the pty's path, a socket on the TCP port), so the same driver bytes are
exercised. `InMemoryTransport` hands the driver's bytes to the same command handler without any
port: the in-process path of a simulated pass runs the same driver and emulator code and
differs only in the wire.

Dynamics (a slewing gimbal, a settling mirror) take their time from an injected clock; fault
injection (`faults`) makes it stop answering, garble, answer late, or drop the link.

The pty is reached through a stable symlink (like a udev /dev/serial/by-id name): a simulated
disconnect replaces the pty behind it, so a driver that reopens the same path reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import tty
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivers.interfaces import DeviceDisconnected
from drivers.transport_base import _BufferedTransport, _check_timeout
from satqkd_runtime.clock import Clock, RealClock

_log = logging.getLogger(__name__)
_COMMANDS_KEPT = 10_000


@dataclass
class FaultInjection:
    """What the emulator does wrong right now (change fields at any time)."""

    silent: bool = False  # read commands, answer nothing
    garble: bool = False  # answer with corrupted bytes (framing kept)
    reply_delay_s: float = 0.0  # answer this late (real seconds: link latency, not dynamics)


class LineEmulator(ABC):
    """A line-oriented instrument emulator; subclasses map one command line to a reply."""

    #: what ends a command from the driver
    command_terminator: bytes = b"\n"
    #: the serial line rate advertised in the resource string (a pty ignores it)
    baudrate: int = 9600

    def __init__(self, name: str, clock: Clock | None = None, seed: int = 0) -> None:
        self.name = name
        self.clock: Clock = clock if clock is not None else RealClock()
        self.faults = FaultInjection()
        # the most recent commands (trimmed: a pass sends hundreds of thousands) and their count
        self.commands_received: list[bytes] = []
        self.commands_total = 0
        self.connections = 0
        self._rng = np.random.default_rng(seed)
        self._resource: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._commands: asyncio.Queue[bytes] = asyncio.Queue()
        self._inbox = bytearray()
        # pty state
        self._link_dir: Path | None = None
        self._master_fd: int | None = None
        self._slave_fd: int | None = None
        # tcp state
        self._server: asyncio.Server | None = None
        self._client: asyncio.StreamWriter | None = None
        # in-memory state: the transport a driver holds, if one is attached
        self._memory_peer: InMemoryTransport | None = None

    # --- protocol (subclasses) -----------------------------------------------------------------

    @abstractmethod
    def respond(self, command: bytes) -> bytes | None:
        """Get: the reply to one command line (without its terminator), or None for no reply."""

    async def tick(self) -> None:  # noqa: B027 - optional hook, most emulators have no dynamics
        """Control: advance dynamics to the clock's now (called periodically; default none)."""

    tick_period_s: float | None = None

    # --- endpoints -----------------------------------------------------------------------------

    @property
    def resource(self) -> str:
        """Get: the resource string a driver opens to reach this emulator."""
        if self._resource is None:
            raise RuntimeError(f"emulator {self.name} is not started")
        return self._resource

    @property
    def serial_path(self) -> str:
        """Get: the stable path of the emulated serial port."""
        if self._link_dir is None:
            raise RuntimeError(f"emulator {self.name} is not serving a pty")
        return str(self._link_dir / self.name)

    async def start_pty(self) -> str:
        """Control: serve on a new pty; returns the resource string (serial://PATH?baud=N)."""
        self._link_dir = Path(tempfile.mkdtemp(prefix="satqkd-emu-"))
        self._open_pty()
        self._resource = f"serial://{self.serial_path}?baud={self.baudrate}"
        self._start_common()
        return self._resource

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Control: serve on a TCP port (0: any free one); returns tcp://HOST:PORT."""
        self._server = await asyncio.start_server(self._accept, host, port)
        bound = self._server.sockets[0].getsockname()
        self._resource = f"tcp://{bound[0]}:{bound[1]}"
        self._start_common()
        return self._resource

    async def start_memory(self) -> str:
        """Control: serve through memory only (no port); returns memory://NAME. Drivers reach
        the emulator through `memory_transport()`; dynamics tick exactly as on a port."""
        self._resource = f"memory://{self.name}"
        if self.tick_period_s is not None:
            self._tasks.append(asyncio.create_task(self._run_ticks(), name=f"{self.name} tick"))
        return self._resource

    def memory_transport(self) -> InMemoryTransport:
        """Get: a new (unopened) transport wired straight to this emulator's command handler."""
        return InMemoryTransport(self)

    def _start_common(self) -> None:
        self._tasks.append(asyncio.create_task(self._serve_commands(), name=f"{self.name} serve"))
        if self.tick_period_s is not None:
            self._tasks.append(asyncio.create_task(self._run_ticks(), name=f"{self.name} tick"))

    def _open_pty(self) -> None:
        assert self._link_dir is not None
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation before pyserial configures the port
        os.set_blocking(master, False)
        link = self._link_dir / self.name
        staging = self._link_dir / f".{self.name}.new"
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        staging.symlink_to(os.ttyname(slave))
        staging.replace(link)  # atomic: a reconnecting driver never sees a missing path
        self._master_fd, self._slave_fd = master, slave
        self._inbox.clear()
        self.connections += 1
        asyncio.get_running_loop().add_reader(master, self._on_pty_readable)

    def _close_pty(self) -> None:
        if self._master_fd is not None:
            asyncio.get_running_loop().remove_reader(self._master_fd)
            os.close(self._master_fd)
            self._master_fd = None
        if self._slave_fd is not None:
            os.close(self._slave_fd)
            self._slave_fd = None

    def _on_pty_readable(self) -> None:
        assert self._master_fd is not None
        try:
            data = os.read(self._master_fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO while no slave is open: nothing to read
        self._receive(data)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._client is not None:
            self._client.close()  # one controller at a time, like a real instrument port
        self._client = writer
        self._inbox.clear()
        self.connections += 1
        try:
            while data := await reader.read(4096):
                if writer is not self._client:
                    return
                self._receive(data)
        except OSError:
            pass
        finally:
            if writer is self._client:
                self._client = None
            writer.close()

    def _receive(self, data: bytes) -> None:
        self._inbox += data
        while (index := self._inbox.find(self.command_terminator)) >= 0:
            command = bytes(self._inbox[:index])
            del self._inbox[: index + len(self.command_terminator)]
            self._commands.put_nowait(command)

    async def _handle_command(self, command: bytes) -> bytes | None:
        """Get: the reply to one command, or None when nothing goes back (no reply, or the
        instrument is silent); shared by every kind of endpoint."""
        self.commands_total += 1
        self.commands_received.append(command)
        if len(self.commands_received) > 2 * _COMMANDS_KEPT:
            del self.commands_received[:-_COMMANDS_KEPT]
        try:
            if self.tick_period_s is not None:
                await self.tick()
            reply = self.respond(command)
        except Exception:  # an emulator bug must not silently stop all answers
            _log.exception("emulator %s failed on command %r", self.name, command)
            return None
        if self.faults.silent or reply is None:
            return None
        return reply

    def _on_the_wire(self, reply: bytes) -> bytes:
        """Get: the reply as it arrives at the driver (line noise applied if injected now)."""
        return self._garble(reply) if self.faults.garble else reply

    async def _serve_commands(self) -> None:
        while True:
            command = await self._commands.get()
            reply = await self._handle_command(command)
            if reply is None:
                continue
            if self.faults.reply_delay_s > 0:
                await asyncio.sleep(self.faults.reply_delay_s)
            self.send_unsolicited(self._on_the_wire(reply))

    async def _receive_in_memory(self, peer: InMemoryTransport, data: bytes) -> None:
        """Control: take bytes written by an in-memory driver and answer them in order."""
        self._inbox += data
        while (index := self._inbox.find(self.command_terminator)) >= 0:
            command = bytes(self._inbox[:index])
            del self._inbox[: index + len(self.command_terminator)]
            reply = await self._handle_command(command)
            if reply is None:
                continue
            if self.faults.reply_delay_s > 0:
                # a late answer arrives late in real time, as on a port (link latency)
                asyncio.get_running_loop().call_later(
                    self.faults.reply_delay_s, lambda r=reply: peer._deliver(self._on_the_wire(r))
                )
            else:
                peer._deliver(self._on_the_wire(reply))

    async def _run_ticks(self) -> None:
        assert self.tick_period_s is not None
        next_unix_s = self.clock.now_unix_s()
        while True:
            next_unix_s += self.tick_period_s
            await self.clock.sleep_until(next_unix_s)
            await self.tick()
            now = self.clock.now_unix_s()
            if now > next_unix_s + self.tick_period_s:
                next_unix_s = now  # fell behind (a paused clock jumped): do not replay ticks

    def _garble(self, reply: bytes) -> bytes:
        """Get: the reply with its body replaced by line noise (its line ending kept)."""
        body = reply.rstrip(b"\r\n")
        ending = reply[len(body) :]
        noise = self._rng.integers(0x21, 0x7F, size=max(3, len(body))).astype(np.uint8)
        noise[0] = ord("~")  # never a valid first character in any emulated protocol
        return noise.tobytes() + ending

    def send_unsolicited(self, data: bytes) -> None:
        """Control: write bytes to the connected driver now (dropped if none is connected)."""
        if self._memory_peer is not None:
            self._memory_peer._deliver(data)
        elif self._master_fd is not None:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._master_fd, data)
        elif self._client is not None and not self._client.is_closing():
            self._client.write(data)

    # --- faults and life cycle -----------------------------------------------------------------

    async def disconnect(self) -> None:
        """Control: drop the link (TCP: close the connection; pty: replace the pty; memory:
        the driver's transport reports the link lost and may reopen)."""
        if self._memory_peer is not None:
            self._memory_peer._lose("link dropped by the instrument")
        elif self._link_dir is not None:
            old_master, old_slave = self._master_fd, self._slave_fd
            asyncio.get_running_loop().remove_reader(old_master)  # type: ignore[arg-type]
            self._master_fd = self._slave_fd = None
            self._open_pty()
            for fd in (old_master, old_slave):
                if fd is not None:
                    os.close(fd)
        elif self._client is not None:
            client, self._client = self._client, None
            client.close()

    async def stop(self) -> None:
        """Control: stop serving and remove the pty link or close the port."""
        current = asyncio.current_task()
        cancels_before = current.cancelling() if current is not None else 0
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task  # ours end as asked
        # a cancel of the caller meanwhile (its timeout) is not ours to swallow: raised again
        # below, once everything is closed (one from before, a caller tearing down, is handled)
        caller_cancelled = current is not None and current.cancelling() > cancels_before
        self._tasks.clear()
        if self._memory_peer is not None:
            self._memory_peer._lose("instrument switched off")
        if self._link_dir is not None:
            self._close_pty()
            shutil.rmtree(self._link_dir, ignore_errors=True)
            self._link_dir = None
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._resource = None
        if caller_cancelled:
            raise asyncio.CancelledError

    async def __aenter__(self) -> LineEmulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class InMemoryTransport(_BufferedTransport):
    """A transport wired straight to an emulator: written bytes go to its command handler and
    its replies (and unsolicited lines, such as gimbal limit hits) come back, with no port in
    between. Faults behave as on a port: silence times out, late replies arrive late, a dropped
    link raises DeviceDisconnected until the driver reopens it. Reads are the port transports'
    own (`_BufferedTransport`), so timeouts and partial replies behave the same."""

    def __init__(self, emulator: LineEmulator) -> None:
        super().__init__(f"memory://{emulator.name}")
        self.emulator = emulator

    # --- called by the emulator ------------------------------------------------------------

    def _deliver(self, data: bytes) -> None:
        if self.connected and self.emulator._memory_peer is self:
            self._feed(data)

    def _lose(self, reason: str) -> None:
        if self.emulator._memory_peer is self:
            self.emulator._memory_peer = None
        if self.connected:
            self._feed_lost(reason)
        self.connected = False
        self._data_arrived.set()

    # --- Transport -----------------------------------------------------------------------------

    async def open(self, timeout_s: float = 5.0) -> None:
        """Control: attach to the emulator (it serves one controller at a time, like a port)."""
        _check_timeout(timeout_s)
        if self.emulator._resource is None:
            raise DeviceDisconnected(f"{self.name}: emulator is not started")
        previous = self.emulator._memory_peer
        if previous is not None and previous is not self:
            previous._lose("another controller took the port")
        self.emulator._memory_peer = self
        self.emulator._inbox.clear()
        self.emulator.connections += 1
        self._reset_buffer()
        self.connected = True

    async def close(self) -> None:
        """Control: detach from the emulator (idempotent)."""
        if self.emulator._memory_peer is self:
            self.emulator._memory_peer = None
        self.connected = False

    async def write(self, data: bytes) -> None:
        """Control: hand the bytes to the emulator, which answers complete commands at once."""
        self._raise_if_unusable()
        await self.emulator._receive_in_memory(self, bytes(data))
