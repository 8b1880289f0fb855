"""The streaming QRNG driver against its emulator (pty, TCP, memory) and against a scripted
stream of known bytes: reads give the lengths asked, each 32-byte block is SHA-256 of the next
ceil(320 / H) tested raw bytes after the 1024 start-up bytes, a stuck source trips the
Repetition Count Test and a biased one the Adaptive Proportion Test, and a failed source
refuses every read until it is reconnected."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import numpy as np
import pytest

from drivers.entropy_health import STARTUP_SAMPLES, apt_cutoff, rct_cutoff
from drivers.entropy_qrng import QRNG_ALPHA_EXPONENT, SerialQrng
from drivers.interfaces import DeviceDisconnected, DeviceTimeout, EntropyFailure
from drivers.registry import DRIVERS, build_driver
from drivers.transport import ScriptedTransport, open_transport
from satqkd.config import ConfigError
from satqkd.instruments_config import validate_instruments
from satqkd_core.errors import InputError
from sim_backends.emulators.qrng import QrngEmulator

H = 7.0
PER_BLOCK = 46  # ceil(320 / 7)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["pty", "tcp", "memory"])
async def qrng(request: pytest.FixtureRequest) -> AsyncIterator[tuple[QrngEmulator, SerialQrng]]:
    """A QRNG emulator on each kind of port and the driver connected to it."""
    emulator = QrngEmulator(seed=7)
    if request.param == "memory":
        await emulator.start_memory()
        transport = emulator.memory_transport()
    else:
        await (emulator.start_pty() if request.param == "pty" else emulator.start_tcp())
        transport = open_transport(emulator.resource)
    driver = SerialQrng(
        "qrng", transport, min_entropy_bits_per_byte=H, timeout_s=0.5, pool_bytes=8192
    )
    await driver.connect(timeout_s=5.0)
    try:
        yield emulator, driver
    finally:
        await driver.close()
        await emulator.stop()


async def _read_until_failure(driver: SerialQrng, limit: int = 400) -> EntropyFailure:
    for _ in range(limit):
        try:
            await driver.read(1024, "probe")
        except EntropyFailure as failure:
            return failure
    raise AssertionError("the source never failed")


async def test_reads_give_the_lengths_asked_never_the_same_bytes(qrng) -> None:
    _, driver = qrng
    sizes = [0, 1, 31, 32, 33, 1000, 5000]
    outputs = [await driver.read(n, f"pattern-key/plan {n}") for n in sizes]
    assert [len(out) for out in outputs] == sizes
    assert len({out for out in outputs if out}) == len(sizes) - 1
    assert driver.drawn_bytes == {"pattern-key": sum(sizes)}
    await driver.read(16, "pa-seed")
    assert driver.drawn_bytes == {"pattern-key": sum(sizes), "pa-seed": 16}
    status = await driver.status()
    # the driver's default false-positive rate is 2^-40 (SP 800-90B allows 2^-20 .. 2^-40)
    assert QRNG_ALPHA_EXPONENT == 40
    assert status.healthy and status.detail["rct_cutoff"] == rct_cutoff(7, 40) == 7
    assert status.detail["apt_cutoff"] == apt_cutoff(7, alpha_exponent=40) == 26
    assert driver.health.samples_tested >= STARTUP_SAMPLES + PER_BLOCK * (190 + 1)


async def test_a_stuck_source_trips_the_repetition_count_test_until_reconnected(qrng) -> None:
    emulator, driver = qrng
    await driver.read(64, "before")
    emulator.qrng_faults.stuck = True
    failure = await _read_until_failure(driver)
    assert "repetition count test (SP 800-90B 4.4.1) failed: value 165" in str(failure)
    assert "start-up" not in str(failure)
    for _ in range(3):  # every later read is refused, even after the source recovers
        emulator.qrng_faults.stuck = False
        with pytest.raises(EntropyFailure, match="repetition count test"):
            await driver.read(1, "after")
    status = await driver.status()
    assert status.connected and not status.healthy
    assert "repetition count test" in status.detail["error"]
    await driver.close()
    await driver.connect(timeout_s=5.0)
    assert len(await driver.read(100, "after")) == 100
    assert (await driver.status()).healthy


async def test_a_biased_source_trips_the_adaptive_proportion_test(qrng) -> None:
    emulator, driver = qrng
    emulator.qrng_faults.biased = True
    failure = await _read_until_failure(driver)
    assert "adaptive proportion test (SP 800-90B 4.4.2) failed" in str(failure)
    assert "window of 512 (cutoff 26 for H = 7 bits per sample)" in str(failure)
    with pytest.raises(EntropyFailure, match="adaptive proportion test"):
        await driver.read(32, "after")


async def test_a_source_stuck_from_power_on_fails_its_start_up_test() -> None:
    emulator = QrngEmulator(seed=1)
    emulator.qrng_faults.stuck = True
    await emulator.start_tcp()
    driver = SerialQrng("qrng", open_transport(emulator.resource), min_entropy_bits_per_byte=H)
    try:
        with pytest.raises(EntropyFailure, match="start-up test: repetition count test"):
            await driver.connect(timeout_s=5.0)
        with pytest.raises(EntropyFailure, match="start-up test"):
            await driver.read(1, "never")
    finally:
        await driver.close()
        await emulator.stop()


async def test_a_stalled_stream_fails_the_waiting_read_and_stays_failed(qrng) -> None:
    emulator, driver = qrng
    emulator.faults.silent = True
    await asyncio.sleep(0.05)
    with pytest.raises(EntropyFailure, match=r"stream stalled: no random byte within 0\.5 s"):
        await driver.read(8192, "big")  # needs more raw bytes than the pool holds
    emulator.faults.silent = False
    with pytest.raises(EntropyFailure, match="stalled"):
        await driver.read(1, "after")


async def test_a_dropped_link_fails_the_source() -> None:
    emulator = QrngEmulator(seed=3)
    await emulator.start_tcp()
    driver = SerialQrng(
        "qrng", open_transport(emulator.resource), min_entropy_bits_per_byte=H, pool_bytes=4096
    )
    try:
        await driver.connect(timeout_s=5.0)
        await emulator.disconnect()
        with pytest.raises(EntropyFailure, match="stream lost"):
            for _ in range(50):
                await driver.read(1024, "probe")
    finally:
        await driver.close()
        await emulator.stop()


async def test_conditioning_hashes_ceil_320_over_h_raw_bytes_per_block() -> None:
    """Known raw bytes in, exactly SHA-256 of consecutive 46-byte chunks out, after the 1024
    start-up bytes; the raw bytes are used once, in order."""
    raw = np.random.default_rng(11).integers(0, 256, STARTUP_SAMPLES + 5 * PER_BLOCK + 10)
    raw = raw.astype(np.uint8).tobytes()
    transport = ScriptedTransport([(b"", raw)], name="feed")
    driver = SerialQrng("qrng", transport, min_entropy_bits_per_byte=H, timeout_s=0.2)
    await driver.connect(timeout_s=2.0)
    try:
        chunks = [
            raw[STARTUP_SAMPLES + i * PER_BLOCK : STARTUP_SAMPLES + (i + 1) * PER_BLOCK]
            for i in range(5)
        ]
        digests = [hashlib.sha256(chunk).digest() for chunk in chunks]
        assert await driver.read(40, "a") == (digests[0] + digests[1])[:40]
        assert await driver.read(96, "b") == digests[2] + digests[3] + digests[4]
        # 10 raw bytes left: not enough for one block, and nothing more arrives
        with pytest.raises(EntropyFailure, match="stalled"):
            await driver.read(1, "c")
    finally:
        await driver.close()


async def test_connect_times_out_when_the_start_up_bytes_do_not_arrive() -> None:
    transport = ScriptedTransport([(b"", bytes(range(200)))], name="short")
    driver = SerialQrng("qrng", transport, min_entropy_bits_per_byte=H)
    with pytest.raises(DeviceTimeout, match=r"start-up test needs 1024 bytes, 200 arrived"):
        await driver.connect(timeout_s=0.3)
    with pytest.raises(DeviceDisconnected, match="not connected"):
        await driver.read(1, "x")


async def test_a_full_pool_drops_arriving_bytes_untested(qrng) -> None:
    emulator, driver = qrng
    await asyncio.sleep(0.3)  # 60 kB arrive at 200 kB/s; the pool keeps 8 kB
    assert driver.raw_bytes_dropped > 0
    assert driver.health.samples_tested <= STARTUP_SAMPLES + 8192 + 4096
    assert emulator.bytes_streamed > driver.health.samples_tested


def test_driver_arguments_and_bench_options_are_checked() -> None:
    transport = ScriptedTransport([])
    for bad, message in [
        ({"min_entropy_bits_per_byte": 0}, r"in \(0, 8\]"),
        ({"min_entropy_bits_per_byte": 9}, r"in \(0, 8\]"),
        ({"min_entropy_bits_per_byte": 7, "pool_bytes": 10}, "pool_bytes must be an int in"),
        ({"min_entropy_bits_per_byte": 7, "timeout_s": 0}, "timeout_s must be > 0"),
        ({"min_entropy_bits_per_byte": 7, "alpha_exponent": 50}, "alpha_exponent must be"),
    ]:
        with pytest.raises(InputError, match=message):
            SerialQrng("qrng", transport, **bad)
    spec = DRIVERS["serial_qrng"]
    assert spec.kind == "entropy" and spec.emulator == "qrng" and not spec.in_process_only
    with pytest.raises(InputError, match="min_entropy_bits_per_byte"):
        build_driver("qrng", "serial_qrng", transport, {})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "instruments.rng.options.min_entropy_bits_per_byte: required key"),
        ({"min_entropy_bits_per_byte": 8.5}, "min_entropy_bits_per_byte: Input should be less"),
        ({"min_entropy_bits_per_byte": 7, "h": 7}, "instruments.rng.options.h: unknown key"),
    ],
)
def test_bench_mistakes_name_the_key(options: dict, message: str) -> None:
    entry = {"driver": "serial_qrng", "resource": "serial:///dev/ttyACM1", "options": options}
    with pytest.raises(ConfigError) as raised:
        validate_instruments({"name": "b", "instruments": {"rng": entry}}, "b.yaml")
    assert message in str(raised.value) and "\n" not in str(raised.value)


async def test_emulator_faults_refuse_values_that_are_not_bytes() -> None:
    emulator = QrngEmulator()
    with pytest.raises(InputError, match=r"stuck_value must be an int in 0\.\.255"):
        emulator.qrng_faults.stuck_value = 256
    with pytest.raises(InputError, match="rate_bytes_per_s must be a positive number"):
        QrngEmulator(rate_bytes_per_s=0)
    emulator.qrng_faults.biased = True
    stream = np.frombuffer(emulator.next_bytes(3000), np.uint8)
    assert np.all(stream[::3] == 0) and np.count_nonzero(stream) == 2000  # never two in a row
