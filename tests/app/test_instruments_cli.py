"""`satqkd instruments check`: bench configs, parallel checks, verdicts and exit status."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from satqkd.config import ConfigError
from satqkd.instruments_cli import (
    InstrumentCheck,
    check_instruments,
    render_checks,
    run_instruments_check,
)
from satqkd.instruments_config import (
    load_instruments_config,
    validate_instruments,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "instruments"


def test_sim_bench_is_all_healthy(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_instruments_check(str(CONFIGS / "sim-bench.yaml")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 8
    names = ("tagger", "gimbal", "fsm", "beacon", "laser", "detectors", "entropy")
    for name, line in zip(names, lines, strict=False):
        assert line.startswith(f"{name}  ") and line.endswith("  OK"), line
    assert "Pan-Tilt Controller" in lines[1] and "az_deg=0" in lines[1]
    assert "TDC1" in lines[0] and "serial://" in lines[0]
    assert "serial_qrng" in lines[6] and "rct_cutoff=7 apt_cutoff=26" in lines[6]
    assert lines[-1] == "7 instrument(s): 7 healthy, 0 not"


def test_lab_bench_config_is_valid() -> None:
    bench = load_instruments_config(CONFIGS / "lab-bench.yaml")
    assert set(bench.instruments) == {
        "tagger", "gimbal", "fsm", "beacon", "laser", "detectors", "entropy"
    }  # fmt: skip
    entropy = bench.instruments["entropy"]
    assert entropy.kind == "entropy" and entropy.path == "hardware"
    assert entropy.driver_options().model_dump()["min_entropy_bits_per_byte"] == 7.0
    gimbal = bench.instruments["gimbal"]
    assert gimbal.kind == "gimbal" and gimbal.path == "hardware"
    assert gimbal.resource.startswith("serial:///dev/serial/by-id/")
    assert gimbal.driver_options().model_dump(exclude_none=True) == {
        "pan_resolution_arcsec": 46.2857,
        "tilt_resolution_arcsec": 46.2857,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: b\ninstruments:\n  g: {driver: ptu_gimbal, resource: 'emulator://fsm'}\n",
            "instruments.g: resource emulator://fsm speaks another protocol than this driver "
            "(use emulator://gimbal)",
        ),
        (
            "name: b\ninstruments:\n  g: {driver: ptu, resource: 'tcp://h:1'}\n",
            "instruments.g.driver: unknown driver (available: ptu_gimbal,",
        ),
        (
            "name: b\ninstruments:\n  g: {driver: ptu_gimbal, resource: 'tcp://h'}\n",
            "instruments.g.resource: 'tcp://h': tcp resource must be tcp://HOST:PORT",
        ),
        (
            "name: b\ninstruments:\n  g: {driver: pi_gcs_mirror, resource: 'tcp://h:1', "
            "options: {axis: [A, B]}}\n",
            "instruments.g.options.axis: unknown key (allowed here: axes, axis_unit_urad)",
        ),
        (
            "name: b\ninstruments:\n  g: {driver: scpi_bias_supply, resource: 'tcp://h:1', "
            "options: {channel_count: 40}}\n",
            "instruments.g.options.channel_count: Input should be less than or equal to 16",
        ),
        ("name: b\ninstruments: {}\n", "instruments: Dictionary should have at least 1 item"),
        ("name: b\ninstruments: [\n", "invalid YAML at line"),
    ],
)
def test_bad_configs_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    assert run_instruments_check(str(path)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"satqkd: {path}: ")
    assert message in captured.err
    assert captured.err.count("\n") == 1


def test_validation_is_reusable_without_a_file() -> None:
    with pytest.raises(ConfigError, match=r"^inline: instruments\.g\.driver: required key"):
        validate_instruments(
            {"name": "b", "instruments": {"g": {"resource": "tcp://h:1"}}}, "inline"
        )


def test_wrong_and_unreachable_instruments_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(
        "name: mixed\ninstruments:\n"
        "  good-supply: {driver: scpi_bias_supply, "
        "resource: 'visa-sim://drivers/sim/bias_supply.yaml#ASRL1::INSTR'}\n"
        "  faulty-supply: {driver: scpi_bias_supply, "
        "resource: 'visa-sim://drivers/sim/bias_supply.yaml#ASRL2::INSTR'}\n"
        "  wrong-box: {driver: scpi_bias_supply, "
        "resource: 'visa-sim://drivers/sim/bias_supply.yaml#ASRL3::INSTR'}\n"
        f"  unplugged: {{driver: quad_cell_beacon, resource: 'serial://{tmp_path}/ttyUSB9'}}\n"
    )
    assert run_instruments_check(str(path)) == 1
    lines = dict(line.split("  ", 1) for line in capsys.readouterr().out.strip().splitlines()[:-1])
    assert lines["good-supply"].endswith("  OK")
    assert (
        "UNHEALTHY (error: " in lines["faulty-supply"]
        and "TEMP SENSOR FAULT" in lines["faulty-supply"]
    )
    assert "FAIL (" in lines["wrong-box"] and "not the expected instrument" in lines["wrong-box"]
    assert (
        "FAIL (unplugged: serial://" in lines["unplugged"] and "cannot open" in lines["unplugged"]
    )


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never answers (a hung instrument)."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def test_a_hung_instrument_fails_alone(silent_port: int) -> None:
    bench = validate_instruments(
        {
            "name": "hung",
            "instruments": {
                "fsm": {
                    "driver": "pi_gcs_mirror",
                    "resource": f"tcp://127.0.0.1:{silent_port}",
                    "timeout_s": 0.2,
                    "connect_timeout_s": 0.5,
                },
                "gimbal": {"driver": "ptu_gimbal", "resource": "emulator://gimbal"},
            },
        },
        "inline",
    )
    fsm, gimbal = await check_instruments(bench)
    assert not fsm.healthy
    assert fsm.verdict.startswith(f"FAIL (fsm (tcp://127.0.0.1:{silent_port}): no reply to '*IDN?'")
    assert gimbal.healthy and gimbal.verdict == "OK"
    assert gimbal.resource.startswith("serial://")


def test_rich_table_on_a_terminal() -> None:
    stream = io.StringIO()
    checks = [
        InstrumentCheck("gimbal", "ptu_gimbal", "serial:///dev/x", "PTU", True, "OK", {"az": 1.5}),
        InstrumentCheck("fsm", "pi_gcs_mirror", "tcp://h:1", "", False, "FAIL (no reply)"),
    ]
    render_checks(checks, stream, tty=True, width=200)
    text = re.sub(r"\x1b\[[0-9;]*m", "", stream.getvalue())  # drop colour codes
    assert "Instruments" in text and "┃" in text
    assert "az=1.5" in text and "FAIL (no reply)" in text
    assert "2 instrument(s): 1 healthy, 1 not" in text
