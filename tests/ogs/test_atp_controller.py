"""The station's ATP controller driving the real drivers against their wire-level emulators
(pty for the gimbal and beacon sensor, TCP for the mirror and bias supply) on a SimClock:
program track, fine steering with the contract's sign convention, spiral acquisition, faults,
gimbal limits and the detectors' go/no-go."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from drivers.beacon import QuadCellBeacon
from drivers.fsm import PiGcsMirror
from drivers.gimbal import PtuGimbal
from drivers.scpi import ScpiBiasSupply
from drivers.transport import open_transport
from satqkd_core import dictionary as dct
from satqkd_core.codec import Envelope, decode_envelope
from satqkd_core.ephemeris import SPEED_OF_LIGHT_M_S, Station, topocentric
from satqkd_ogs.atp import AtpSettings, StationAtp, StationInstruments
from satqkd_ogs.pointing import URAD_PER_DEG
from satqkd_ogs.session import PassPlan
from satqkd_runtime.clock import SimClock
from satqkd_runtime.node import NodeRuntime
from sim_backends.emulators import EMULATORS, LineEmulator
from sim_backends.emulators.gimbal import PtuEmulator
from sim_backends.emulators.scpi import BiasSupplyEmulator

pytestmark = pytest.mark.timeout(60)

# A 70-degree pass over Xinglong (configs/scenarios/jinan1-xinglong-clear.yaml, seed 7)
TLE1 = "1 99999U          26335.00000000  .00000000  00000-0  00000+0 0    06"
TLE2 = "2 99999  97.4018  47.3668 0000000   0.0000   0.0000 15.22444802    02"
XINGLONG = Station(40.3958, 117.5775, 900.0)
PASS_AOS = 1796134727.421875
RISING = PASS_AOS + 120.0  # elevation 30 -> 55 deg over the next minute, azimuth 182 -> 201
DRIVERS = {"gimbal": PtuGimbal, "fsm": PiGcsMirror, "beacon": QuadCellBeacon}
DRIVERS["detectors"] = ScpiBiasSupply
SETTINGS = AtpSettings(prepare_lead_s=20.0, acquisition_field_of_view_urad=200.0)


class RecordingBus:
    """The daemon's bus as far as a NodeRuntime uses it: keeps every published message."""

    def __init__(self) -> None:
        self.published: list[tuple[str, Envelope]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.published.append((topic, decode_envelope(payload)))

    def events(self, name: str) -> list[str]:
        """Get: the texts of the events with this name, in order."""
        wanted = dct.EVENTS[name].id
        return [
            e.fields["text"]
            for _, e in self.published
            if e.spec.name == "EVENT" and e.fields["event_id"] == wanted
        ]

    def telemetry(self, name: str) -> list[dict]:
        """Get: the fields of every telemetry packet with this name."""
        return [e.fields for _, e in self.published if e.spec.name == name]


@dataclass
class Bench:
    """Emulators, connected drivers and the runtime an ATP controller reports through."""

    clock: SimClock
    emulators: dict[str, LineEmulator]
    instruments: StationInstruments
    bus: RecordingBus = field(default_factory=RecordingBus)

    def controller(self, plan: PassPlan, settings: AtpSettings = SETTINGS) -> StationAtp:
        runtime = NodeRuntime(self.bus, "jinan1", "ogs-xinglong", self.clock)  # type: ignore[arg-type]
        return StationAtp(
            plan, XINGLONG, settings, self.instruments, self.clock, runtime, tagger_lead_s=1.0
        )


@contextlib.asynccontextmanager
async def bench(
    start_unix_s: float,
    names: tuple[str, ...],
    **factories: Callable[[SimClock], LineEmulator],
) -> AsyncIterator[Bench]:
    """Start the named emulators (default ones, or from `factories`) on their ports on a new
    SimClock and connect their drivers."""
    clock = SimClock(start_unix_s)
    emulators: dict[str, LineEmulator] = {}
    drivers = []
    try:
        for name in names:
            factory, port = EMULATORS[name]
            emulator = factories[name](clock) if name in factories else factory(clock, 11)
            await (emulator.start_pty() if port == "pty" else emulator.start_tcp())
            emulators[name] = emulator
            timeout_s = 0.2 if name == "beacon" else 0.5
            driver = DRIVERS[name](name, open_transport(emulator.resource), timeout_s=timeout_s)
            await driver.connect()
            drivers.append(driver)
        instruments = StationInstruments(**{d.name: d for d in drivers})
        yield Bench(clock, emulators, instruments)
    finally:
        for driver in drivers:
            with contextlib.suppress(Exception):
                await driver.close()
        for emulator in emulators.values():
            await emulator.stop()


def make_plan(aos_unix_s: float, duration_s: float, qkd_after_aos_s: float = 10.0) -> PassPlan:
    qkd_start = float(math.ceil(aos_unix_s + qkd_after_aos_s))
    return PassPlan(
        1, "jinan1", "xinglong", TLE1, TLE2, aos_unix_s, aos_unix_s + duration_s,
        qkd_start, min(qkd_start + 10.0, aos_unix_s + duration_s), 1e8,
    )  # fmt: skip


async def run_pass(
    b: Bench,
    atp: StationAtp,
    hooks: dict[float, Callable[[], object]] | None = None,
) -> None:
    """Run the controller to LOS, calling each hook once the clock reaches its instant."""
    task = asyncio.create_task(atp.run())
    await asyncio.sleep(0)  # the controller reaches its first clock wait before time moves
    for unix_s, hook in sorted((hooks or {}).items()):
        await b.clock.advance_to(unix_s)
        hook()
    await b.clock.advance_to(atp.plan.los_unix_s + 1.0)
    await asyncio.wait_for(task, 30.0)


def mirror_position_urad(emulator: LineEmulator) -> tuple[float, float]:
    """Get: the emulated mirror's true (tip, tilt) in urad (the driver's axis unit is mrad)."""
    emulator.advance()  # type: ignore[attr-defined]
    axes = emulator.axes  # type: ignore[attr-defined]
    return 1000.0 * axes["A"].position, 1000.0 * axes["B"].position


def close_spot_on_mirror(b: Bench, target_urad: tuple[float, float]) -> None:
    """The beacon sees a target at `target_urad` from the boresight through the mirror: the
    spot is what the mirror leaves of it (contract: +command moves the line of sight by +)."""

    def spot(_elapsed_s: float) -> tuple[float, float]:
        tip, tilt = mirror_position_urad(b.emulators["fsm"])
        return target_urad[0] - tip, target_urad[1] - tilt

    b.emulators["beacon"].spot_path = spot  # type: ignore[attr-defined]


def apparent_direction(unix_s: float) -> tuple[float, float]:
    """Get: the satellite's direction computed here from the ephemeris (light time included)."""
    t = np.array([unix_s])
    geometric = topocentric(TLE1, TLE2, XINGLONG, t)
    seen = topocentric(TLE1, TLE2, XINGLONG, t - geometric.range_m / SPEED_OF_LIGHT_M_S)
    return float(seen.azimuth_deg[0]), float(seen.elevation_deg[0])


def gimbal_truth_deg(emulator: LineEmulator) -> tuple[float, float]:
    """Get: where the emulated mount really points (its integrated axes, not the readback)."""
    emulator.advance()  # type: ignore[attr-defined]
    counts_to_deg = emulator.resolution_arcsec / 3600.0  # type: ignore[attr-defined]
    return (
        emulator.pan.position * counts_to_deg,  # type: ignore[attr-defined]
        emulator.tilt.position * counts_to_deg,  # type: ignore[attr-defined]
    )


# --- program track ------------------------------------------------------------------------------


async def test_gimbal_slews_to_aos_then_follows_the_pass_track() -> None:
    plan = make_plan(RISING, 60.0)
    async with bench(RISING - 25.0, ("gimbal",)) as b:
        atp = b.controller(plan)
        errors_urad: list[float] = []
        at_aos: list[float] = []

        def check_aos() -> None:
            az, el = gimbal_truth_deg(b.emulators["gimbal"])
            true_az, true_el = apparent_direction(RISING)
            at_aos.append(math.hypot(((az - true_az + 180) % 360 - 180), el - true_el))

        def sample(t: float) -> Callable[[], None]:
            def hook() -> None:
                az, el = gimbal_truth_deg(b.emulators["gimbal"])
                true_az, true_el = apparent_direction(t)
                dx = ((az - true_az + 180.0) % 360.0 - 180.0) * math.cos(math.radians(el))
                errors_urad.append(math.hypot(dx, el - true_el) * URAD_PER_DEG)

            return hook

        hooks: dict[float, Callable[[], object]] = {RISING: check_aos}
        hooks.update({RISING + k: sample(RISING + k) for k in range(3, 60)})
        await run_pass(b, atp, hooks)

    # the slew (about 170 deg in azimuth) is over before AOS
    assert at_aos[0] < 0.02
    # program track with the PTU's 46.3 arcsec (224 urad) counts: within about one count
    # (measured: max 99 urad, rms 38 urad)
    assert max(errors_urad) < 250.0, errors_urad
    assert float(np.sqrt(np.mean(np.square(errors_urad)))) < 100.0
    assert atp.record.modes()[0] == "slewing" and atp.record.modes()[-1] == "program-track"
    assert len(b.bus.events("GIMBAL_LIMIT")) == 0


async def test_points_outside_the_gimbal_travel_are_skipped_with_an_event() -> None:
    # a mount whose tilt stops at 50 deg, under a pass that culminates at 70 deg
    start = PASS_AOS + 150.0
    plan = make_plan(start, 150.0)
    low = {"gimbal": lambda clock: PtuEmulator(clock, tilt_limits=(-700, 3889), seed=3)}
    async with bench(start - 21.0, ("gimbal",), **low) as b:
        atp = b.controller(plan)
        await run_pass(b, atp)
        elevation_limit = 3889 * b.emulators["gimbal"].resolution_arcsec / 3600.0  # type: ignore[attr-defined]

    record = atp.record
    texts = b.bus.events("GIMBAL_LIMIT")
    assert any("outside travel" in text for text in texts)
    assert record.gimbal_limit_skips > 100  # the top of the pass, at 10 samples per second
    # the loop kept its pace through the excursion and the mount stayed inside its travel
    assert len(record) == round((plan.los_unix_s - atp.start_unix_s) * 10) + 1
    assert np.nanmax(record.column("gimbal_el_deg")) <= elevation_limit + 1e-6
    # once the track is back inside, the mount follows it again
    tail = record.column("unix_s") > plan.los_unix_s - 5.0
    el_error = record.column("gimbal_el_deg")[tail] - record.column("predicted_el_deg")[tail]
    assert np.nanmax(np.abs(el_error)) < 0.04


# --- fine steering and acquisition ---------------------------------------------------------------


async def test_mirror_nulls_a_spot_with_the_contract_sign_convention() -> None:
    plan = make_plan(RISING, 10.0)
    target = (150.0, -80.0)
    async with bench(RISING - 21.0, ("fsm", "beacon")) as b:
        close_spot_on_mirror(b, target)
        atp = b.controller(plan)
        await run_pass(b, atp)
        final = mirror_position_urad(b.emulators["fsm"])

    record = atp.record
    assert record.acquisition_time_s == 0.0  # in the sensor's range from the first sample
    settled = record.column("unix_s") > RISING + 2.0
    spot_radius = np.hypot(record.column("spot_x_urad"), record.column("spot_y_urad"))[settled]
    assert np.max(spot_radius) < 3.0
    # make_safe centred the mirror after LOS; before that it held the target's offset
    assert final == pytest.approx((0.0, 0.0), abs=1e-3)
    tip = record.column("fsm_tip_urad")[settled]
    tilt = record.column("fsm_tilt_urad")[settled]
    assert np.median(tip) == pytest.approx(target[0], abs=2.0)
    assert np.median(tilt) == pytest.approx(target[1], abs=2.0)
    assert set(record.modes()[-5:]) == {"tracking"}


async def test_the_mirror_holds_the_spot_until_los_then_centres() -> None:
    # LOS 0.07 s after the loop's last sample (10 Hz from AOS - 20 s): made safe at that
    # sample, the mirror would be centred while the beacon is still there, and a pass's truth
    # residual counted the park (docs/atp-calibration.md)
    plan = make_plan(RISING, 8.07, qkd_after_aos_s=2.0)
    target = (150.0, -80.0)
    before_los: list[tuple[float, float]] = []
    async with bench(RISING - 21.0, ("fsm", "beacon")) as b:
        close_spot_on_mirror(b, target)
        atp = b.controller(plan)

        def watch() -> None:
            before_los.append(mirror_position_urad(b.emulators["fsm"]))

        await run_pass(b, atp, {plan.los_unix_s - 0.01: watch})
        final = mirror_position_urad(b.emulators["fsm"])

    assert atp.record.column("unix_s")[-1] == pytest.approx(plan.los_unix_s - 0.07, abs=1e-6)
    assert before_los[0] == pytest.approx(target, abs=2.0)
    assert final == pytest.approx((0.0, 0.0), abs=1e-3)


async def test_spiral_scan_acquires_a_spot_outside_the_sensor_range() -> None:
    plan = make_plan(RISING, 40.0)
    target = (700.0, -450.0)  # 830 urad off: the quad cell's linear range is 300 urad
    async with bench(RISING - 21.0, ("fsm", "beacon")) as b:
        close_spot_on_mirror(b, target)
        atp = b.controller(plan)
        await run_pass(b, atp)

    record = atp.record
    assert record.acquisition_time_s is not None
    modes = record.modes()
    after_aos = record.column("unix_s") >= RISING
    first_valid = int(np.argmax((record.column("spot_valid") == 1.0) & after_aos))
    assert set(modes[int(np.argmax(after_aos)) : first_valid]) == {"acquiring"}
    # the spiral from the centre needs several turns to reach 830 urad, less than a cycle
    assert 1.0 < record.acquisition_time_s < 10.0  # measured: 4.9 s
    scan_radius = np.hypot(record.column("fsm_tip_urad"), record.column("fsm_tilt_urad"))
    assert np.all(np.diff(scan_radius[np.argmax(after_aos) : first_valid]) > -1.0)
    assert b.bus.events("ATP_ACQUIRED")[0].startswith("plan 1: acquired")
    assert record.column("fsm_tip_urad")[-1] == pytest.approx(target[0], abs=2.0)
    assert record.column("fsm_tilt_urad")[-1] == pytest.approx(target[1], abs=2.0)


# --- faults --------------------------------------------------------------------------------------


async def test_silent_beacon_degrades_to_program_track_and_is_retried_with_backoff() -> None:
    plan = make_plan(RISING, 30.0)
    target = (120.0, 60.0)
    async with bench(RISING - 21.0, ("gimbal", "fsm", "beacon")) as b:
        close_spot_on_mirror(b, target)
        beacon = b.emulators["beacon"]
        atp = b.controller(plan)
        await run_pass(
            b,
            atp,
            {
                RISING + 5.0: lambda: setattr(beacon.faults, "silent", True),
                RISING + 12.0: lambda: setattr(beacon.faults, "silent", False),
            },
        )

    record = atp.record
    faults = b.bus.events("ATP_INSTRUMENT_FAULT")
    assert faults and all("beacon" in text and "program track only" in text for text in faults)
    # backoff 1, 2, 4 s over a 7 s outage: a handful of attempts, not one per sample
    assert 2 <= record.faults["beacon"] <= 4
    assert len(faults) == record.faults["beacon"]
    assert atp.fault_counters["beacon"] == record.faults["beacon"]
    assert len(b.bus.events("ATP_TRACK_LOST")) == 1
    assert len(b.bus.events("ATP_INSTRUMENT_RECOVERED")) == 1
    assert [t.split(",")[0] for t in b.bus.events("ATP_ACQUIRED")] == [
        "plan 1: acquired 0.0 s after AOS",
        "plan 1: reacquired",
    ]
    # the loop never stalled: one sample per period, the mount read all along
    t = record.column("unix_s")
    assert len(record) == round((plan.los_unix_s - atp.start_unix_s) * 10) + 1
    outage = (t > RISING + 6.0) & (t < RISING + 11.0)
    assert set(np.array(record.modes())[outage]) == {"program-track"}
    assert np.isfinite(record.column("gimbal_az_deg")[outage]).all()
    assert record.modes()[-1] == "tracking"
    assert record.column("fsm_tip_urad")[-1] == pytest.approx(target[0], abs=2.0)


async def test_failed_mirror_hands_fine_steering_to_the_gimbal() -> None:
    plan = make_plan(RISING, 12.0)
    async with bench(RISING - 21.0, ("gimbal", "fsm", "beacon")) as b:
        # a spot 200 urad further in azimuth that the dead mirror cannot take out
        b.emulators["beacon"].spot_path = lambda _t: (200.0, 0.0)  # type: ignore[attr-defined]
        fsm = b.emulators["fsm"]
        atp = b.controller(plan)
        await run_pass(b, atp, {RISING + 2.0: lambda: setattr(fsm.faults, "silent", True)})

    record = atp.record
    assert any("fsm" in text for text in b.bus.events("ATP_INSTRUMENT_FAULT"))
    t = record.column("unix_s")
    late = t > RISING + 6.0
    assert set(np.array(record.modes())[late]) == {"gimbal-tracking"}
    # the mount's pointing moved towards +azimuth, by the spot integrated at 0.5 /s
    biased_az = record.column("predicted_az_deg")
    bias_az = np.array(
        [az - atp.prediction.at(s).az_deg for s, az in zip(t, biased_az, strict=True)]
    )
    assert np.all(np.diff(bias_az[late]) > 0)
    moved_urad = (
        bias_az[-1] * URAD_PER_DEG * math.cos(math.radians(atp.prediction.at(t[-1]).el_deg))
    )
    assert moved_urad > 200.0


# --- detectors ------------------------------------------------------------------------------------


async def test_warm_detectors_make_the_station_refuse_the_pass() -> None:
    plan = make_plan(RISING, 15.0)
    no_cooler = {
        "detectors": lambda clock: BiasSupplyEmulator(clock, cooling_time_constant_s=1e9, seed=2)
    }
    async with bench(RISING - 21.0, ("detectors",), **no_cooler) as b:
        atp = b.controller(plan)
        await run_pass(b, atp)
        stuck = b.emulators["detectors"]
        gates = [stuck.settings[f"GATE{n}:STAT"].value for n in range(1, 5)]  # type: ignore[attr-defined]
        biases = [stuck.settings[f"SOUR{n}:VOLT"].value for n in range(1, 5)]  # type: ignore[attr-defined]

    verdict = atp.detectors_verdict.result()
    assert verdict is not None
    assert verdict.startswith("detectors too warm: channel 1 at 22.0 C")
    assert "channel 4 at 22.0 C (limit -20 C)" in verdict
    assert b.bus.events("DETECTOR_FAULT") == [f"plan 1: pass refused: {verdict}"]
    assert atp.record.detectors_refused == verdict
    assert gates == [0, 0, 0, 0] and biases == [0.0, 0.0, 0.0, 0.0]


async def test_detectors_are_gated_only_once_cold_and_switched_off_after_los() -> None:
    plan = make_plan(RISING, 40.0, qkd_after_aos_s=20.0)
    async with bench(RISING - 25.0, ("detectors",)) as b:
        supply = b.emulators["detectors"]
        seen: list[tuple[bool, float, float]] = []

        def look() -> None:
            supply.advance()  # type: ignore[attr-defined]
            gated = any(supply.settings[f"GATE{n}:STAT"].value for n in range(1, 5))
            warmest = max(c.temperature_c for c in supply.channels)  # type: ignore[attr-defined]
            seen.append((gated, warmest, supply.settings["SOUR1:VOLT"].value))

        atp = b.controller(plan)
        hooks = {RISING - 20.0 + 0.5 * k: look for k in range(120)}
        await run_pass(b, atp, hooks)
        after = [supply.settings[f"GATE{n}:STAT"].value for n in range(1, 5)]
        bias_after = supply.settings["SOUR1:VOLT"].value

    assert atp.detectors_verdict.result() is None
    assert any(gated for gated, _, _ in seen) and not seen[0][0]
    # a gate is never armed on a detector warmer than the limit (polled once a second)
    assert all(warmest <= -20.0 for gated, warmest, _ in seen if gated)
    assert all(bias == 60.0 for gated, _, bias in seen if gated)
    assert after == [0, 0, 0, 0] and bias_after == 0.0
    assert len(b.bus.events("DETECTORS_READY")) == 1
    status = b.bus.telemetry("ATP_STATUS")
    assert 55 <= len(status) <= 65  # about once a second from prepare to LOS
    assert status[-1]["mode"] == "parked"
    assert status[-2]["max_detector_temperature_c"] < -20.0


async def test_stop_request_ends_the_loop_and_leaves_the_instruments_safe() -> None:
    plan = make_plan(RISING, 60.0)
    async with bench(RISING - 21.0, ("gimbal", "fsm", "beacon")) as b:
        close_spot_on_mirror(b, (300.0, 0.0))
        atp = b.controller(plan)
        task = asyncio.create_task(atp.run())
        await asyncio.sleep(0)
        await b.clock.advance_to(RISING + 5.0)
        atp.request_stop()
        await b.clock.advance_to(RISING + 5.5)
        await asyncio.wait_for(task, 10.0)
        mirror = mirror_position_urad(b.emulators["fsm"])
        await b.clock.advance_to(RISING + 20.0)
        parked = gimbal_truth_deg(b.emulators["gimbal"])

    assert atp.record.finished
    assert atp.record.column("unix_s")[-1] <= RISING + 5.0 + 1e-6
    assert mirror == pytest.approx((0.0, 0.0), abs=1e-3)
    assert parked[1] == pytest.approx(90.0, abs=0.05)  # parked at the zenith
