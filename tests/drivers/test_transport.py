"""Transports: framing, timeouts and disconnects over real TCP sockets, ptys, VISA and scripts."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import socket
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.interfaces import DeviceDisconnected, DeviceError, DeviceTimeout
from drivers.transport import (
    ScriptedTransport,
    SerialTransport,
    TcpTransport,
    Transport,
    VisaTransport,
    _BufferedTransport,
    open_transport,
)
from satqkd_core.errors import InputError

# --- a loopback TCP peer --------------------------------------------------------------------


class Peer:
    """A loopback TCP server whose test side writes and reads bytes to one client."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connected = asyncio.Event()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connections = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.connections += 1
        self.connected.set()

    async def send(self, data: bytes) -> None:
        await self.connected.wait()
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def drop(self) -> None:
        assert self.writer is not None
        self.writer.close()
        self.connected.clear()

    async def stop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    server = Peer()
    await server.start()
    yield server
    await server.stop()


async def test_tcp_frames_replies_across_chunks(peer: Peer) -> None:
    transport = TcpTransport("127.0.0.1", peer.port)
    await transport.open(timeout_s=2.0)
    assert transport.connected
    await transport.write(b"*IDN?\n")
    await peer.connected.wait()
    assert peer.reader is not None
    assert await peer.reader.readexactly(6) == b"*IDN?\n"
    await peer.send(b"ACME,")
    await peer.send(b"X1\nrest")
    assert await transport.read_until(b"\n", timeout_s=1.0) == b"ACME,X1\n"
    assert await transport.read_exactly(2, timeout_s=1.0) == b"re"
    assert await transport.read_available(timeout_s=1.0) == b"st"
    await transport.close()
    assert not transport.connected


async def test_tcp_timeout_names_resource(peer: Peer) -> None:
    transport = TcpTransport("127.0.0.1", peer.port)
    await transport.open(timeout_s=2.0)
    with pytest.raises(DeviceTimeout, match=rf"tcp://127\.0\.0\.1:{peer.port}.*0\.05 s"):
        await transport.read_until(b"\n", timeout_s=0.05)
    await peer.send(b"late\n")
    assert await transport.read_until(b"\n", timeout_s=1.0) == b"late\n"
    await transport.close()


async def test_tcp_peer_close_is_a_disconnect_after_buffered_bytes(peer: Peer) -> None:
    transport = TcpTransport("127.0.0.1", peer.port)
    await transport.open(timeout_s=2.0)
    await peer.send(b"last words\n")
    await peer.drop()
    assert await transport.read_until(b"\n", timeout_s=1.0) == b"last words\n"
    with pytest.raises(DeviceDisconnected, match="closed by the peer"):
        await transport.read_until(b"\n", timeout_s=1.0)
    assert not transport.connected
    with pytest.raises(DeviceDisconnected):
        await transport.write(b"x")
    await transport.open(timeout_s=2.0)  # reopen after a drop
    await peer.send(b"again\n")
    assert await transport.read_until(b"\n", timeout_s=1.0) == b"again\n"
    assert peer.connections == 2
    await transport.close()


async def test_tcp_refused_is_disconnected_error() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = TcpTransport("127.0.0.1", port)
    with pytest.raises(DeviceDisconnected, match=f"tcp://127.0.0.1:{port}: cannot connect"):
        await transport.open(timeout_s=1.0)


async def test_reads_before_open_fail_cleanly() -> None:
    transport = TcpTransport("127.0.0.1", 5025)
    with pytest.raises(DeviceDisconnected, match="not connected"):
        await transport.read_available(timeout_s=0.01)
    with pytest.raises(InputError, match="timeout_s"):
        await transport.read_available(timeout_s=-1.0)
    with pytest.raises(InputError, match="terminator"):
        await transport.read_until(b"", timeout_s=1.0)
    with pytest.raises(InputError, match="n must be"):
        await transport.read_exactly(-3, timeout_s=1.0)
    with pytest.raises(InputError, match="port"):
        TcpTransport("127.0.0.1", 70000)


# --- serial over a real pty --------------------------------------------------------------------


@pytest.fixture
def pty_pair() -> tuple[int, str]:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)  # pyserial opens the slave by path, as it would a USB adapter
    yield master, path
    with contextlib.suppress(OSError):
        os.close(master)


async def _master_read(master: int, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < n:
        data += await loop.run_in_executor(None, os.read, master, n - len(data))
    return data


async def test_serial_pty_round_trip_and_hangup(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    transport = SerialTransport(path, 115200)
    assert transport.name == f"serial://{path}?baud=115200"
    await transport.open(timeout_s=2.0)
    # raw mode on the slave keeps the line discipline from echoing or translating bytes
    await transport.write(b"PP\n")
    assert await _master_read(master, 3) == b"PP\n"
    os.write(master, b"* 10")
    os.write(master, b"0\r\n")
    assert await transport.read_until(b"\r\n", timeout_s=1.0) == b"* 100\r\n"
    with pytest.raises(DeviceTimeout, match=path):
        await transport.read_available(timeout_s=0.05)
    os.close(master)
    # Linux reports a pty hang-up as EOF or EIO depending on the kernel
    with pytest.raises(DeviceDisconnected, match=r"port closed|read failed"):
        await transport.read_until(b"\r\n", timeout_s=1.0)
    await transport.close()


async def test_serial_missing_port_is_disconnected() -> None:
    transport = SerialTransport("/dev/does-not-exist-satqkd", 9600)
    with pytest.raises(DeviceDisconnected, match="cannot open"):
        await transport.open(timeout_s=2.0)


async def test_serial_url_handler_uses_reader_thread() -> None:
    transport = SerialTransport("loop://", 9600)
    await transport.open(timeout_s=2.0)
    await transport.write(b"hello\r\n")
    assert await transport.read_until(b"\r\n", timeout_s=2.0) == b"hello\r\n"
    await transport.close()


# --- VISA via pyvisa-sim ---------------------------------------------------------------------


async def test_visa_sim_query_and_timeout() -> None:
    transport = VisaTransport("ASRL2::INSTR", "@sim")
    await transport.open(timeout_s=5.0)
    await transport.write(b"*IDN?\r\n")
    assert await transport.read_until(b"\n", timeout_s=2.0) == b"SCPI,MOCK,VERSION_1.0\n"
    with pytest.raises(DeviceTimeout, match="ASRL2::INSTR"):
        await transport.read_until(b"\n", timeout_s=0.05)
    await transport.close()
    with pytest.raises(DeviceDisconnected):
        await transport.write(b"*IDN?\r\n")


async def test_visa_unknown_resource_is_disconnected() -> None:
    transport = VisaTransport("ASRL99::INSTR", "@sim")
    with pytest.raises(DeviceError, match="ASRL99::INSTR"):
        await transport.open(timeout_s=2.0)
    await transport.close()


# --- scripted transport --------------------------------------------------------------------------


async def test_scripted_plays_pairs_and_unprompted_events() -> None:
    script = ScriptedTransport(
        [(b"PP\n", b"* 10\r\n"), (b"", b"!P\r\n"), (b"PP20\n", b""), (b"TP\n", b"* 5\r\n")]
    )
    await script.open()
    await script.write(b"P")
    await script.write(b"P\n")  # a command may arrive in pieces
    assert await script.read_until(b"\r\n", 1.0) == b"* 10\r\n"
    assert await script.read_until(b"\r\n", 1.0) == b"!P\r\n"
    await script.write(b"PP20\nTP\n")  # or several in one write
    assert await script.read_available(1.0) == b"* 5\r\n"
    script.assert_all_consumed()


async def test_scripted_mismatch_names_the_step() -> None:
    script = ScriptedTransport([(b"A\n", b"ok\n"), (b"B\n", b"ok\n")])
    await script.open()
    await script.write(b"A\n")
    with pytest.raises(AssertionError, match=r"step 2 of 2: expected .*b'B\\n'.*b'C\\n'"):
        await script.write(b"C\n")


async def test_scripted_reports_leftovers() -> None:
    script = ScriptedTransport([(b"A\n", b"ok\n"), (b"B\n", b"ok\n")])
    await script.open()
    await script.write(b"A\n")
    with pytest.raises(AssertionError, match=r"not reached.*never read: b'ok\\n'"):
        script.assert_all_consumed()
    await script.read_until(b"\n", 1.0)
    await script.write(b"B\n")
    with pytest.raises(AssertionError, match="never read"):
        script.assert_all_consumed()
    await script.read_exactly(3, 1.0)
    script.assert_all_consumed()
    with pytest.raises(AssertionError, match="after the script"):
        await script.write(b"extra")


async def test_scripted_silent_step_times_out() -> None:
    script = ScriptedTransport([(b"ERR?\n", b"")])
    await script.open()
    await script.write(b"ERR?\n")
    with pytest.raises(DeviceTimeout, match="scripted"):
        await script.read_until(b"\n", 0.02)


async def test_a_read_cancelled_as_its_reply_arrives_is_cancelled_and_keeps_the_reply() -> None:
    # Python 3.11's wait_for returned the reply to a read cancelled in the loop pass the reply
    # landed in: the cancel was lost, and a reader loop told to stop went on reading forever
    script = ScriptedTransport([(b"TP\n", b"* 5\r\n")])
    await script.open()
    read = asyncio.create_task(script.read_available(5.0))
    await asyncio.sleep(0)  # the read waits for bytes
    await script.write(b"TP\n")  # the reply lands...
    read.cancel()  # ...and the reader is told to stop in the same pass
    with pytest.raises(asyncio.CancelledError):
        await read
    assert await script.read_available(0.1) == b"* 5\r\n"  # nothing lost for the next reader


def test_scripted_rejects_malformed_pairs() -> None:
    with pytest.raises(InputError, match=r"pairs\[1\]"):
        ScriptedTransport([(b"a", b"b"), ("x", b"y")])  # type: ignore[list-item]


# --- framing property: any chunking of the stream gives the same frames -----------------------


class _ChunkFed(_BufferedTransport):
    async def open(self, timeout_s: float = 5.0) -> None:
        self.connected = True

    async def close(self) -> None:
        self.connected = False

    async def write(self, data: bytes) -> None:
        raise AssertionError("not used")


@settings(max_examples=100, deadline=None)
@given(
    frames=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r\n", b"")), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=20),
)
def test_read_until_independent_of_chunking(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame + b"\r\n" for frame in frames)
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]

    async def run() -> list[bytes]:
        transport = _ChunkFed("chunked")
        await transport.open()

        async def feeder() -> None:
            for chunk in chunks:
                transport._feed(chunk)
                await asyncio.sleep(0)

        task = asyncio.create_task(feeder())
        got = [await transport.read_until(b"\r\n", 1.0) for _ in frames]
        await task
        return got

    # a frame may itself end in \r and so swallow part of the terminator: compare streams
    got = asyncio.run(run())
    assert b"".join(got) == stream[: sum(len(g) for g in got)]
    assert all(g.endswith(b"\r\n") for g in got)
    assert len(got) == len(frames)


# --- resource strings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "kind", "name"),
    [
        ("serial:///dev/ttyUSB0?baud=9600", SerialTransport, "serial:///dev/ttyUSB0?baud=9600"),
        ("serial:///dev/ttyS1", SerialTransport, "serial:///dev/ttyS1?baud=9600"),
        (
            "serial:///dev/ttyUSB1?baud=19200&parity=E&stopbits=2&rtscts=1",
            SerialTransport,
            "serial:///dev/ttyUSB1?baud=19200",
        ),
        ("tcp://10.0.0.5:50000", TcpTransport, "tcp://10.0.0.5:50000"),
        ("tcp://[::1]:5025", TcpTransport, "tcp://::1:5025"),
        (
            "visa://TCPIP::10.0.0.5::5025::SOCKET",
            VisaTransport,
            "visa://TCPIP::10.0.0.5::5025::SOCKET",
        ),
    ],
)
def test_open_transport_forms(resource: str, kind: type[Transport], name: str) -> None:
    transport = open_transport(resource)
    assert isinstance(transport, kind)
    assert transport.name == name
    assert not transport.connected


def test_open_transport_serial_options() -> None:
    transport = open_transport("serial:///dev/ttyUSB1?baud=19200&parity=E&stopbits=2&rtscts=1")
    assert isinstance(transport, SerialTransport)
    assert transport.baudrate == 19200
    assert transport.serial_kwargs == {"parity": "E", "stopbits": 2.0, "rtscts": True}


def test_open_transport_visa_sim_resolves_against_package(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # not relative to the working directory: to the package
    laser = "TCPIP0::127.0.0.1::5025::SOCKET"
    transport = open_transport(f"visa-sim://drivers/sim/laser_source.yaml#{laser}")
    assert isinstance(transport, VisaTransport)
    assert transport.resource_name == laser
    assert transport.backend.endswith("drivers/sim/laser_source.yaml@sim")
    assert os.path.isabs(transport.backend[: -len("@sim")])


@pytest.mark.parametrize(
    ("resource", "complaint"),
    [
        ("/dev/ttyUSB0", "not a resource string"),
        ("ftp://host/x", "unknown scheme 'ftp'"),
        ("tcp://10.0.0.5", "tcp://HOST:PORT"),
        ("tcp://10.0.0.5:99999", "tcp://HOST:PORT"),
        ("serial://?baud=9600", "needs a port"),
        ("serial:///dev/ttyUSB0?baud=fast", "numbers"),
        ("serial:///dev/ttyUSB0?speed=9600", "unknown serial option 'speed'"),
        ("visa://", "visa://RESOURCE"),
        ("visa-sim://drivers/sim/laser_source.yaml", "FILE.yaml#RESOURCE"),
        ("visa-sim://nowhere.yaml#ASRL1::INSTR", "not found"),
    ],
)
def test_open_transport_rejects_bad_strings(resource: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)) as caught:
        open_transport(resource)
    assert str(caught.value).startswith(repr(resource))
