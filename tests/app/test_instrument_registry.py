"""The instrument registry and the one assembly path: every registered driver is found through
the registry, built from a bench entry against its emulator (or in-process), connects, reports
a healthy status and closes; bench mistakes and assembly mistakes name what was wrong."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest

from drivers.interfaces import (
    BeaconSensor,
    EntropySource,
    FastSteeringMirror,
    Gimbal,
    PairSource,
    PhotonDetector,
    PulsedSource,
    TimeTagger,
)
from drivers.registry import DRIVERS, KINDS, NODE_KINDS, BuildContext, DriverSpec, register_driver
from satqkd.assembly import AssemblyError, assemble_node, node_entries
from satqkd.config import ConfigError
from satqkd.instruments_config import load_instruments_config, validate_instruments
from satqkd_runtime.clock import RealClock
from tests.drivers.test_time_tagger_replay import t2, write_ptu_t2

REPO = Path(__file__).resolve().parents[2]
BENCHES = REPO / "configs" / "instruments"
INTERFACES = {
    "source": PulsedSource,
    "tagger": TimeTagger,
    "gimbal": Gimbal,
    "fsm": FastSteeringMirror,
    "beacon": BeaconSensor,
    "detectors": PhotonDetector,
    "entropy": EntropySource,
    "pair_source": PairSource,  # a BBM92 payload's (decision 0035)
    "onboard_tagger": TimeTagger,
}
#: options a bench must state (no safe default): a QRNG's assessed min-entropy
REQUIRED_OPTIONS = {"serial_qrng": {"min_entropy_bits_per_byte": 7.0}}


def _pattern(index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    zeros = np.zeros(np.shape(index), np.uint8)
    return zeros, zeros, zeros


def test_every_kind_has_an_interface_and_a_node() -> None:
    assert set(INTERFACES) == set(KINDS)
    assert {kind for kinds in NODE_KINDS.values() for kind in kinds} == set(KINDS)


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_every_registered_driver_fits_its_kind(name: str) -> None:
    spec = DRIVERS[name]
    assert issubclass(spec.driver_class, INTERFACES[spec.kind]), name
    # every option has a default (an entry without options is valid) except stated assessments
    spec.options.model_validate(REQUIRED_OPTIONS.get(name, {}))
    assert spec.summary, f"{name}: the registry row says what the driver is for"
    if spec.in_process_only or spec.reads_file:
        assert spec.emulator is None
    else:
        assert spec.emulator is not None, f"{name}: no emulator to test its protocol against"


@pytest.mark.parametrize("name", sorted(DRIVERS))
async def test_every_registered_driver_reaches_its_emulator_through_the_assembly(
    name: str, tmp_path: Path
) -> None:
    """A one-instrument bench for each driver: emulator on its port (the simulated instrument
    in-process, a recording for a replay), built, connected and healthy through the assembly."""
    spec = DRIVERS[name]
    if spec.reads_file:
        recording = write_ptu_t2(tmp_path / "pass.ptu", [t2(0, 0, 100), t2(0, 1, 200)])
        target = f"file://{recording}"
    elif spec.in_process_only:
        target = f"in-process://{spec.kind}"
    else:
        target = f"emulator://{spec.emulator}"
    bench = validate_instruments(
        {
            "name": "one",
            "instruments": {
                "dut": {
                    "driver": name,
                    "resource": target,
                    "connect_timeout_s": 30,
                    "options": REQUIRED_OPTIONS.get(name, {}),
                }
            },
        },
        "one",
    )
    node = next(node for node, kinds in NODE_KINDS.items() if spec.kind in kinds)
    clock = RealClock()
    async with contextlib.AsyncExitStack() as stack:
        built = await assemble_node(
            bench, node, clock=clock, stack=stack, context=BuildContext(clock, _pattern)
        )
        device = built.devices[spec.kind]
        assert type(device) is spec.driver_class
        status = await device.status()
        assert status.connected, status
        expected = "recording" if spec.reads_file else "in-process"
        assert built.paths[spec.kind] == (expected if spec.emulator is None else "emulator")
        if spec.emulator is not None:
            assert built.emulators["dut"] is not None


def test_shipped_benches_are_valid_and_each_node_finds_its_slots() -> None:
    for path in sorted(BENCHES.glob("*.yaml")):
        bench = load_instruments_config(path)
        for node in NODE_KINDS:
            node_entries(bench, node)  # no slot filled twice
    station = load_instruments_config(BENCHES / "sim-station-emulated.yaml")
    assert list(node_entries(station, "station")) == [
        "tagger",
        "gimbal",
        "fsm",
        "beacon",
        "detectors",
    ]
    payload = load_instruments_config(BENCHES / "sim-payload-emulated.yaml")
    # the laser behind the payload controller is its hardware, not a second source
    assert node_entries(payload, "payload") == {"source": "source"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"driver": "replay_time_tagger", "resource": "tcp://h:1"},
         "driver replay_time_tagger replays a recording: its resource is file://PATH"),
        ({"driver": "ptu_gimbal", "resource": "file://pass.ptu"},
         "driver ptu_gimbal does not read recordings (file://)"),
        ({"driver": "sim_time_tagger", "resource": "tcp://h:1"},
         "driver sim_time_tagger is a simulated instrument: its resource is in-process://tagger"),
        ({"driver": "tcp_time_tagger", "resource": "emulator://gimbal"},
         "speaks another protocol than this driver (use emulator://tagger)"),
        ({"driver": "ptu_gimbal", "resource": "emulator://gimbal?port=usb"},
         "port= is for emulator:// and one of ('pty', 'tcp')"),
        ({"driver": "ptu_gimbal", "resource": "emulator://gimbal?speed=9"},
         "unknown option(s) ['speed']"),
        ({"driver": "payload_link_source", "resource": "emulator://payload-controller?hardware=x"},
         "hardware=x must name another source entry of this bench"),
    ],
)  # fmt: skip
def test_bench_mistakes_name_the_key(entry: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_instruments({"name": "b", "instruments": {"e": entry}}, "b.yaml")
    assert str(raised.value).startswith("b.yaml: instruments.e")
    assert message in str(raised.value)


async def test_a_stream_emulator_has_no_memory_path() -> None:
    bench = validate_instruments(
        {"name": "t", "instruments": {"t": {"driver": "tcp_time_tagger", "resource": "in-process://tagger"}}},
        "t.yaml",
    )  # fmt: skip
    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(AssemblyError, match=r"^t.yaml: instrument t: .*use emulator://tagger"):
            await assemble_node(bench, "station", clock=RealClock(), stack=stack)


def test_a_driver_name_cannot_be_taken_twice() -> None:
    spec = DRIVERS["ptu_gimbal"]
    register_driver(spec)  # the same row again is harmless
    other = DriverSpec(
        "ptu_gimbal", "gimbal", DRIVERS["pi_gcs_mirror"].driver_class, spec.options, spec.build
    )
    with pytest.raises(ValueError, match="is taken by PtuGimbal"):
        register_driver(other)
    with pytest.raises(ValueError, match="unknown kind"):
        register_driver(DriverSpec("x", "telescope", spec.driver_class, spec.options, spec.build))
