"""Declared commands: validators, mapping, garble counting, and a walk over every driver."""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import beacon, fsm, gimbal, scpi
from drivers.commands import (
    DOC_PREFIXES,
    CommandInstrument,
    CommandProperty,
    CommandSpec,
    control,
    declared_commands,
    measurement,
    parse_float,
    setting,
    strict_discrete_set,
    strict_int_range,
    strict_range,
)
from drivers.interfaces import DeviceError
from drivers.transport import ScriptedTransport
from satqkd_core.errors import InputError

# --- every driver in the flat namespace -------------------------------------------------------

# Walked through the driver modules: under pytest, tests/drivers/ shadows the package's own
# __init__ (a namespace package named `drivers`), so the flat namespace is checked in a
# subprocess below, as a user's program sees it.
DRIVER_CLASSES = sorted(
    {
        value
        for module in (beacon, fsm, gimbal, scpi)
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, CommandInstrument)
        and not inspect.isabstract(value)
    },
    key=lambda cls: cls.__name__,
)


def test_there_are_drivers_to_walk() -> None:
    names = {cls.__name__ for cls in DRIVER_CLASSES}
    assert names == {
        "PtuGimbal",
        "PiGcsMirror",
        "ScpiLaserSource",
        "ScpiBiasSupply",
        "QuadCellBeacon",
    }


def test_flat_public_namespace() -> None:
    program = (
        "from drivers import (Gimbal, FastSteeringMirror, BeaconSensor, PhotonDetector, "
        "PtuGimbal, PiGcsMirror, QuadCellBeacon, ScpiLaserSource, ScpiBiasSupply, "
        "open_transport, ScriptedTransport, DeviceDisconnected);"
        "assert issubclass(PtuGimbal, Gimbal) and issubclass(PiGcsMirror, FastSteeringMirror);"
        "assert issubclass(QuadCellBeacon, BeaconSensor);"
        "assert issubclass(ScpiBiasSupply, PhotonDetector)"
    )
    subprocess.run([sys.executable, "-c", program], check=True, cwd="/")


@pytest.mark.parametrize("driver", DRIVER_CLASSES, ids=lambda cls: cls.__name__)
def test_declared_command_docstrings_begin_with_a_verb(driver: type) -> None:
    commands = declared_commands(driver)
    assert commands, f"{driver.__name__} declares no commands"
    for name, prop in commands.items():
        assert prop.__doc__ is not None and prop.__doc__.startswith(DOC_PREFIXES), name
        assert prop.name == name


@pytest.mark.parametrize("driver", DRIVER_CLASSES, ids=lambda cls: cls.__name__)
def test_public_methods_docstrings_begin_with_a_verb(driver: type) -> None:
    for name, member in inspect.getmembers(driver):
        if name.startswith("_") or isinstance(member, CommandProperty):
            continue
        if not (inspect.isfunction(member) or isinstance(member, property)):
            continue
        doc = inspect.getdoc(member) or ""
        assert doc.startswith(DOC_PREFIXES), f"{driver.__name__}.{name}: {doc[:40]!r}"


# --- validators ------------------------------------------------------------------------------


def test_validators_name_the_quantity() -> None:
    assert strict_range(2.5, (0, 5), "x") == 2.5
    with pytest.raises(InputError, match=r"x: 7 is outside \[0, 5\]"):
        strict_range(7, (0, 5), "x")
    with pytest.raises(InputError, match="expected a number"):
        strict_range("3", (0, 5), "x")
    with pytest.raises(InputError, match="outside"):
        strict_range(float("nan"), (0, 5), "x")
    assert strict_int_range(4.0, (0, 5), "n") == 4
    with pytest.raises(InputError, match="whole number"):
        strict_int_range(4.5, (0, 5), "n")
    with pytest.raises(InputError, match="whole number"):
        strict_int_range(True, (0, 5), "n")
    with pytest.raises(InputError, match=r"mode: 'x' is not one of \['a', 'b'\]"):
        strict_discrete_set("x", ("a", "b"), "mode")


def test_declaration_rules() -> None:
    with pytest.raises(TypeError, match="must begin with"):
        control("A?", "A {}", "The value of A.")
    with pytest.raises(TypeError, match="needs a get command"):
        CommandProperty(CommandSpec("Get nothing."))


# --- a toy driver exercising the declarations end to end ---------------------------------------


class EchoInstrument(CommandInstrument):
    """A line instrument: 'OK' answers settings, anything else is a value."""

    identity_pattern = "ECHO"
    level = control(
        "LEV?",
        "LEV {:.3f}",
        "Control the level.",
        validator=strict_range,
        values=(-10.0, 10.0),
        get_process=parse_float,
        units="V",
    )
    mode = control(
        "MODE?",
        "MODE {}",
        "Control the mode.",
        map_values={"fast": "F", "slow": "S"},
    )
    channel_gain = control(
        "GAIN{channel}?",
        "GAIN{channel} {}",
        "Control one channel's gain.",
        validator=strict_int_range,
        values=(1, 8),
        get_process=int,
    )
    serial_number = measurement("SN?", "Get the serial number.")
    trigger = setting("TRIG {}", "Set a trigger count.", validator=strict_int_range, values=(1, 9))

    async def _transact(self, command: str, expect_reply: bool) -> str:
        await self.transport.write(command.encode() + b"\n")
        reply = await self._read_line(b"\n", command)
        if expect_reply:
            return reply
        if reply != "OK":
            raise self.instrument_error(command, reply)
        return ""

    async def _handshake(self) -> str:
        return self._check_identity(await self._roundtrip("*IDN?", True))

    async def _make_safe(self) -> None:
        await self.send("LEV 0.000")

    async def _health(self) -> tuple[bool, dict[str, Any]]:
        return True, {"level_v": await self.level.get()}


async def test_declared_commands_end_to_end() -> None:
    script = ScriptedTransport(
        [
            (b"*IDN?\n", b"ECHO 1\n"),
            (b"LEV 1.250\n", b"OK\n"),
            (b"LEV?\n", b"1.250\n"),
            (b"MODE S\n", b"OK\n"),
            (b"MODE?\n", b"F\n"),
            (b"GAIN3 4\n", b"OK\n"),
            (b"GAIN3?\n", b"4\n"),
            (b"SN?\n", b"A-17\n"),
            (b"TRIG 2\n", b"busy\n"),
            (b"MODE?\n", b"Q\n"),
            (b"LEV?\n", b"-0.5\n"),  # status
            (b"LEV 0.000\n", b"OK\n"),  # close
        ]
    )
    device = EchoInstrument("echo", script)
    await device.connect(timeout_s=1.0)
    await device.level.set(1.25)
    assert await device.level.get() == 1.25
    assert device.level.units == "V"
    await device.mode.set("slow")
    assert await device.mode.get() == "fast"
    await device.channel_gain.set(4, channel=3)
    assert await device.channel_gain.get(channel=3) == 4
    assert await device.serial_number.get() == "A-17"
    with pytest.raises(DeviceError, match="'TRIG 2' rejected: busy"):
        await device.trigger.set(2)
    with pytest.raises(DeviceError, match="garbled reply to 'MODE\\?': 'Q'"):
        await device.mode.get()
    with pytest.raises(InputError, match="read-only"):
        await device.serial_number.set("B")
    with pytest.raises(InputError, match="write-only"):
        await device.trigger.get()
    with pytest.raises(InputError, match=r"echo.mode: 'medium' is not one of"):
        await device.mode.set("medium")
    status = await device.status()
    assert status.healthy and status.detail["level_v"] == -0.5
    assert status.detail["counters"]["garbled_replies"] == 1
    assert status.detail["counters"]["instrument_errors"] == 1
    await device.close()
    script.assert_all_consumed()
    device.reset_counters()
    assert device.garbled_replies == 0


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=-10.0, max_value=10.0, allow_nan=False))
def test_encode_then_decode_is_the_value_to_format_precision(level_v: float) -> None:
    device = EchoInstrument("echo", ScriptedTransport([]))
    command = device.level.encode(level_v)
    assert command.startswith("LEV ")
    assert device.level.decode("LEV?", command[4:]) == pytest.approx(level_v, abs=5e-4)
