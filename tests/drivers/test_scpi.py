"""SCPI laser source and bias supply: byte-exact protocol, pyvisa-sim (right and wrong devices)
and the TCP emulators, also through pyvisa-py as in the lab."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.interfaces import DeviceError
from drivers.scpi import ScpiBiasSupply, ScpiLaserSource
from drivers.transport import ScriptedTransport, open_transport
from satqkd_core.errors import InputError
from satqkd_runtime.clock import SimClock
from sim_backends.emulators.scpi import BiasSupplyEmulator, LaserSourceEmulator

OK = (b"SYST:ERR?\n", b'0,"No error"\n')
LASER_ID = b"SATQKD-LAB,WCP-850,SN00142,2.3.1\n"
BIAS_ID = b"SATQKD-LAB,SPDB-4,SN00077,1.4.0\n"
LASER_SIM = "visa-sim://drivers/sim/laser_source.yaml#TCPIP0::127.0.0.1::{}::SOCKET"
BIAS_SIM = "visa-sim://drivers/sim/bias_supply.yaml#ASRL{}::INSTR"


def _set(command: bytes) -> list[tuple[bytes, bytes]]:
    return [(command, b""), OK]


async def _laser(pairs: list[tuple[bytes, bytes]], **options: object) -> ScpiLaserSource:
    script = ScriptedTransport([(b"*IDN?\n", LASER_ID), *_set(b"*CLS\n"), *pairs], name="scpi")
    laser = ScpiLaserSource("laser", script, timeout_s=0.2, **options)  # type: ignore[arg-type]
    await laser.connect(timeout_s=1.0)
    return laser


async def test_laser_protocol_for_every_control() -> None:
    laser = await _laser(
        [
            *_set(b"PULS:FREQ 100000000.0\n"),
            *_set(b"SOUR:INT:SIGN 0.8000\n"),
            *_set(b"SOUR:INT:DEC 0.1000\n"),
            *_set(b"SOUR:INT:VAC 0.0000\n"),
            (b"SOUR:INT:SIGN?\n", b"0.8000\n"),
            (b"SOUR:INT:DEC?\n", b"0.1000\n"),
            (b"SOUR:INT:VAC?\n", b"0.0000\n"),
            (b"SYST:INTL?\n", b"1\n"),
            *_set(b"PULS:STAR 1700000000.500000\n"),
            *_set(b"OUTP:STAT 1\n"),
            (b"SYST:INTL?\n", b"1\n"),  # status
            (b"OUTP:STAT?\n", b"1\n"),
            (b"PULS:FREQ?\n", b"100000000.0\n"),
            OK,
            *_set(b"OUTP:STAT 0\n"),  # close: the safe state
        ]
    )
    await laser.configure(100e6)
    await laser.set_intensities(0.8, 0.1, 0.0)
    assert await laser.intensities() == (0.8, 0.1, 0.0)
    await laser.enable(1_700_000_000.5)
    assert laser.enabled
    status = await laser.status()
    assert status.healthy and status.identity == LASER_ID.decode().strip()
    assert status.detail["emitting"] is True and status.detail["repetition_rate_hz"] == 100e6
    await laser.close()
    assert not laser.enabled
    laser.transport.assert_all_consumed()  # type: ignore[attr-defined]


async def test_laser_refuses_to_emit_with_interlock_open_and_reports_scpi_errors() -> None:
    laser = await _laser(
        [
            (b"SYST:INTL?\n", b"0\n"),
            (b"PULS:FREQ 50000000.0\n", b""),
            (b"SYST:ERR?\n", b'-222,"Data out of range"\n'),
        ]
    )
    with pytest.raises(DeviceError, match="interlock open"):
        await laser.enable(1.0)
    with pytest.raises(DeviceError, match=r"SCPI error -222, 'Data out of range'"):
        await laser.configure(50e6)
    assert laser.counters.instrument_errors == 2
    with pytest.raises(InputError, match="mu_1 > mu_2 \\+ mu_3"):
        await laser.set_intensities(0.1, 0.1, 0.0)
    with pytest.raises(InputError, match="outside"):
        await laser.configure(1e12)
    with pytest.raises(DeviceError, match="no sequencer pattern source"):
        await laser.read_pattern(np.arange(3))
    laser.transport.assert_all_consumed()  # type: ignore[attr-defined]


async def test_laser_pattern_comes_from_the_sequencer_callable() -> None:
    class Record:
        def __init__(self, index: np.ndarray) -> None:
            self.basis = (index % 2).astype(np.uint8)
            self.bit = (index % 3 == 0).astype(np.uint8)
            self.intensity = np.zeros_like(index, dtype=np.uint8)

    laser = await _laser([], pattern=Record)
    record = await laser.read_pattern(np.array([0, 1, 2, 3]))
    assert record.basis.tolist() == [0, 1, 0, 1] and record.bit.tolist() == [1, 0, 0, 1]


async def test_bias_supply_protocol() -> None:
    script = ScriptedTransport(
        [
            (b"*IDN?\n", BIAS_ID),
            *_set(b"*CLS\n"),
            *_set(b"SOUR2:VOLT 45.500\n"),
            (b"SOUR2:VOLT?\n", b"45.500\n"),
            *_set(b"GATE2:STAT 1\n"),
            (b"GATE2:STAT?\n", b"1\n"),
            (b"MEAS2:TEMP?\n", b"-39.80\n"),
            (b"MEAS2:COUN?\n", b"1234\n"),
            *[pair for ch in (1, 2) for pair in _set(f"GATE{ch}:STAT 0\n".encode())],
        ]
    )
    supply = ScpiBiasSupply("spd", script, channel_count=2, max_bias_v=60.0)
    await supply.connect(timeout_s=1.0)
    await supply.set_bias(2, 45.5)
    assert await supply.bias(2) == 45.5
    await supply.set_gate(2, True)
    assert await supply.gate_enabled(2)
    assert await supply.temperature(2) == -39.8
    assert await supply.count_rate(2) == 1234.0
    with pytest.raises(InputError, match=r"spd bias_v: 70 is outside \[0, 60\]"):
        await supply.set_bias(1, 70)
    with pytest.raises(InputError, match=r"spd channel: 3 is outside \[1, 2\]"):
        await supply.temperature(3)
    await supply.close()
    script.assert_all_consumed()


# --- pyvisa-sim: the YAML beside the driver, right and wrong devices -------------------------


async def test_pyvisa_sim_laser_right_and_wrong_device() -> None:
    laser = ScpiLaserSource("laser", open_transport(LASER_SIM.format(5025)), timeout_s=1.0)
    await laser.connect(timeout_s=5.0)
    await laser.configure(80e6)
    assert await laser.repetition_rate.get() == 80e6
    await laser.enable(1_700_000_000.0)
    assert await laser.output.get() is True
    with pytest.raises(DeviceError, match="SCPI error -100"):  # out of range for the simulator
        await laser.send("PULS:FREQ 1.0")
    await laser.close()

    wrong = ScpiLaserSource("laser-b", open_transport(LASER_SIM.format(5026)), timeout_s=1.0)
    await wrong.connect(timeout_s=5.0)
    with pytest.raises(DeviceError, match="interlock open"):
        await wrong.enable(1_700_000_000.0)
    with pytest.raises(DeviceError, match="garbled reply to 'OUTP:STAT\\?': 'MAYBE'"):
        await wrong.output.get()
    status = await wrong.status()
    assert not status.healthy and "garbled" in status.detail["error"]
    assert wrong.garbled_replies == 2
    await wrong.close()


async def test_pyvisa_sim_bias_supply_right_wrong_and_foreign_device() -> None:
    supply = ScpiBiasSupply("spd", open_transport(BIAS_SIM.format(1)), timeout_s=1.0)
    await supply.connect(timeout_s=5.0)
    await supply.set_bias(3, 42.25)
    assert await supply.bias(3) == 42.25
    status = await supply.status()
    assert status.healthy and status.detail["temperature_c"] == [-40.0] * 4
    assert await supply.count_rate(1) == 850
    await supply.close()

    wrong = ScpiBiasSupply("spd-b", open_transport(BIAS_SIM.format(2)), timeout_s=1.0)
    await wrong.connect(timeout_s=5.0)
    with pytest.raises(DeviceError, match="'TEMP SENSOR FAULT'"):
        await wrong.temperature(1)
    with pytest.raises(DeviceError, match=r"garbled reply to 'GATE2:STAT\?': '2'"):
        await wrong.gate_enabled(2)
    assert wrong.garbled_replies == 2
    assert not (await wrong.status()).healthy
    await wrong.transport.close()

    foreign = ScpiBiasSupply("spd-c", open_transport(BIAS_SIM.format(3)), timeout_s=1.0)
    with pytest.raises(DeviceError, match=r"'ACME INSTRUMENTS,DMM-6,SN1,1\.0' is not the expected"):
        await foreign.connect(timeout_s=5.0)


# --- the TCP emulators: dynamics, and the lab's VISA path through pyvisa-py -------------------


async def test_bias_supply_emulator_cools_and_counts_through_pyvisa_py() -> None:
    clock = SimClock(1_700_000_000.0)
    emulator = BiasSupplyEmulator(clock, seed=7)
    resource = await emulator.start_tcp()
    host, port = resource.removeprefix("tcp://").split(":")
    visa = open_transport(f"visa://TCPIP0::{host}::{port}::SOCKET")
    supply = ScpiBiasSupply("spd", visa, timeout_s=2.0, max_temperature_c=-30.0)
    try:
        await supply.connect(timeout_s=5.0)
        assert "SPDB-4" in supply.identity
        assert await supply.temperature(1) == pytest.approx(22.0)
        assert not (await supply.status()).healthy  # still warm
        await clock.advance_to(clock.now_unix_s() + 300.0)  # ten cooling time constants
        assert await supply.temperature(1) == pytest.approx(-40.0, abs=0.01)
        assert (await supply.status()).healthy
        assert await supply.count_rate(1) == 0.0  # gate off: no counts
        await supply.set_gate(1, True)
        counts = [await supply.count_rate(1) for _ in range(20)]
        assert 60 < float(np.mean(counts)) < 140  # Poisson around 100 cps dark rate
        with pytest.raises(DeviceError, match="SCPI error -222"):
            await supply.send("SOUR1:VOLT 900")
    finally:
        await supply.close()
        await emulator.stop()
    assert emulator.settings["GATE1:STAT"].value == 0  # close disarmed the gate


async def test_laser_emulator_interlock_stops_emission_over_tcp() -> None:
    emulator = LaserSourceEmulator()
    laser = ScpiLaserSource("laser", open_transport(await emulator.start_tcp()), timeout_s=1.0)
    try:
        await laser.connect(timeout_s=2.0)
        await laser.configure(100e6)
        await laser.enable(1_700_000_000.0)
        assert emulator.emitting
        emulator.interlock_closed = False
        assert await laser.output.get() is False
        with pytest.raises(DeviceError, match="interlock open"):
            await laser.enable(1_700_000_001.0)
        with pytest.raises(DeviceError, match="SCPI error -221"):  # the instrument refuses too
            await laser.output.set(True)
    finally:
        await laser.close()
        await emulator.stop()
