"""The station's instruments in a simulated pass: gimbal, steering mirror, beacon sensor and
detector bias supply, each behind its wire-level emulator (in memory, or on a pty / TCP port,
or the bias supply over pyvisa-sim), driven by the OGS daemon through the real drivers; and the
truth they close on (sim_backends/sky.py), sampled in clock time for the physics.

What the physics takes from here, frame by frame: the coupling of the quantum signal through
the receiver's field stop (how well the station really pointed) and which detector channels
were live (gate armed, bias applied). A gimbal path of `none` leaves the optical ATP out of the
loop (the pass physics' old ATP model then stands alone); detectors `none` count as always on.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivers.beacon import QuadCellBeacon
from drivers.fsm import PiGcsMirror
from drivers.gimbal import PtuGimbal
from drivers.interfaces import DeviceDisconnected
from drivers.scpi import ScpiBiasSupply
from drivers.transport import Transport, open_transport
from satqkd.config import ConfigError, Scenario
from satqkd.pass_physics import PassPhysics, station_geometry
from satqkd_core import rng
from satqkd_core.ephemeris import topocentric
from satqkd_ogs.atp import StationInstruments
from satqkd_runtime.clock import SimClock
from sim_backends.emulators.base import LineEmulator
from sim_backends.emulators.beacon import QuadCellEmulator
from sim_backends.emulators.fsm import GcsMirrorEmulator
from sim_backends.emulators.gimbal import PtuEmulator
from sim_backends.emulators.scpi import BiasSupplyEmulator
from sim_backends.link import (
    Atmosphere,
    Background,
    ReceiverOptics,
    TransmitterOptics,
    link_budget,
)
from sim_backends.sky import (
    ApparentTarget,
    BeaconLink,
    MountModel,
    StationSky,
    TipTiltSeries,
)

__all__ = [
    "MOUNT_RESOLUTION_ARCSEC",
    "STATION_INSTRUMENTS",
    "FrameConditions",
    "StationBench",
    "build_station",
    "station_paths",
]

STATION_INSTRUMENTS = ("gimbal", "fsm", "beacon", "detectors")
# a telescope mount's encoders (0.36 arcsec = 1e-4 deg = 1.75 urad per count); the PTU wire
# protocol carries counts, so the driver is told the same resolution the emulator reports
MOUNT_RESOLUTION_ARCSEC = 0.36
_DEG_COUNTS = 3600.0 / MOUNT_RESOLUTION_ARCSEC
MOUNT_SLEW_DEG_S = 10.0
MOUNT_ACCELERATION_DEG_S2 = 10.0
MOUNT_TICK_S = 0.05  # how soon the mount reports a limit hit unprompted
MIRROR_AXIS_UNIT_URAD = 1000.0  # PiGcsMirror's default: the controller works in mrad
MIRROR_SENSOR_NOISE_URAD = 0.2
BIAS_SUPPLY_SIM_RESOURCE = "visa-sim://drivers/sim/bias_supply.yaml#ASRL1::INSTR"
TIP_TILT_STEP_S = 1e-3
TARGET_STEP_S = 0.02
_EMULATOR_PORTS = {"gimbal": "pty", "fsm": "tcp", "beacon": "pty", "detectors": "tcp"}


def station_paths(scenario: Scenario, override: str | None) -> dict[str, str]:
    """How each station instrument is reached: the scenario's choice, or one path for all
    (`--instruments`; visa-sim applies to the detectors only, the others keep theirs)."""
    chosen = scenario.scenario.simulation.instruments
    paths = {name: str(getattr(chosen, name)) for name in STATION_INSTRUMENTS}
    if override in ("in-process", "emulator"):
        return dict.fromkeys(paths, override)
    if override == "visa-sim":
        paths["detectors"] = "visa-sim"
    return paths


@dataclass(frozen=True)
class FrameConditions:
    """The station's side of one frame: coupling through the field stop (0..1) and which of
    the four detector channels counted."""

    coupling: float
    live_channels: tuple[bool, bool, bool, bool]


class _CommandTap(Transport):
    """A transport that forwards everything and remembers the detector gate and bias settings
    the driver sent: how the physics follows a bias supply simulated by pyvisa-sim, whose state
    lives inside its VISA session (the settings the instrument was told, as a bench scope on the
    control line would see them)."""

    _SETTING = re.compile(r"^(GATE|SOUR)(\d+):(STAT|VOLT)\s+(\S+)$", re.IGNORECASE)

    def __init__(self, inner: Transport, channel_count: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.gates = [False] * channel_count
        self.bias_v = [0.0] * channel_count
        self._pending = b""

    @property  # type: ignore[override]
    def connected(self) -> bool:
        return bool(self.inner.connected)

    def _observe(self, data: bytes) -> None:
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        for raw in lines:
            text = raw.decode("ascii", "replace").strip()
            if text.upper() == "*RST":
                self.gates = [False] * len(self.gates)
                self.bias_v = [0.0] * len(self.bias_v)
                continue
            match = self._SETTING.match(text)
            if match is None:
                continue
            kind, number, _, value = match.groups()
            channel = int(number) - 1
            if not 0 <= channel < len(self.gates):
                continue
            try:
                number_value = float(value)
            except ValueError:
                continue
            if kind.upper() == "GATE":
                self.gates[channel] = number_value != 0.0
            else:
                self.bias_v[channel] = number_value

    def live(self, channel: int) -> bool:
        """Get: whether a channel (from 1) was last told to gate with a bias applied."""
        return self.gates[channel - 1] and self.bias_v[channel - 1] > 0.0

    async def open(self, timeout_s: float = 5.0) -> None:
        """Control: open the inner transport."""
        await self.inner.open(timeout_s)

    async def close(self) -> None:
        """Control: close the inner transport."""
        await self.inner.close()

    async def write(self, data: bytes) -> None:
        """Control: forward the bytes, noting the settings among them."""
        await self.inner.write(data)
        self._observe(bytes(data))

    async def read_until(self, terminator: bytes, timeout_s: float) -> bytes:
        """Measure: bytes up to and including `terminator`."""
        return await self.inner.read_until(terminator, timeout_s)

    async def read_exactly(self, n: int, timeout_s: float) -> bytes:
        """Measure: exactly `n` bytes."""
        return await self.inner.read_exactly(n, timeout_s)

    async def read_available(self, timeout_s: float) -> bytes:
        """Measure: whatever arrives first."""
        return await self.inner.read_available(timeout_s)


@dataclass
class StationBench:
    """The station's simulated instruments, their emulators and the truth behind them."""

    instruments: StationInstruments
    paths: dict[str, str]
    sky: StationSky | None = None
    emulators: dict[str, LineEmulator] = field(default_factory=dict)
    detector_live: Callable[[int], bool] | None = None
    channel_count: int = 4
    frame_coupling: list[float] = field(default_factory=list)
    _live_unix_s: list[float] = field(default_factory=list)
    _live_masks: list[int] = field(default_factory=list)

    @property
    def atp_in_loop(self) -> bool:
        """Get: whether the station's pointing is driven and closes on the sky truth."""
        return self.sky is not None

    def sample(self, unix_s: float) -> None:
        """Control: record the truth now (pointing, detector gates)."""
        if self.sky is not None and self.sky.covers(unix_s):
            self.sky.sample(unix_s)
        if self.detector_live is not None:
            mask = sum(1 << k for k in range(4) if self._channel_live(k + 1))
            self._live_unix_s.append(unix_s)
            self._live_masks.append(mask)

    def _channel_live(self, channel: int) -> bool:
        assert self.detector_live is not None
        return channel <= self.channel_count and self.detector_live(channel)

    def frame_conditions(self, start_unix_s: float, stop_unix_s: float) -> FrameConditions:
        """Get (and remember) the station's side of a frame: the coupling averaged over the
        truth samples in it, and the channels live for most of it."""
        coupling = 1.0
        if self.sky is not None:
            coupling = self.sky.mean_coupling(start_unix_s, stop_unix_s)
        self.frame_coupling.append(coupling)
        live = (True, True, True, True)
        if self.detector_live is not None:
            t = np.asarray(self._live_unix_s)
            lo, hi = np.searchsorted(t, [start_unix_s, stop_unix_s], side="left")
            if hi > lo:
                masks = np.asarray(self._live_masks[lo:hi])
                live = tuple(  # type: ignore[assignment]
                    bool(np.mean((masks >> k) & 1) > 0.5) for k in range(4)
                )
            else:
                live = tuple(self._channel_live(k + 1) for k in range(4))  # type: ignore[assignment]
        return FrameConditions(coupling, live)

    def counters(self) -> dict[str, int]:
        """Get: what the daemon asked of the instruments (commands the emulators served)."""
        counts: dict[str, int] = {}
        if (gimbal := self.emulators.get("gimbal")) is not None:
            counts["gimbal_commands"] = gimbal.commands_total
        if isinstance(fsm := self.emulators.get("fsm"), GcsMirrorEmulator):
            counts["fsm_commands"] = fsm.moves
        if isinstance(beacon := self.emulators.get("beacon"), QuadCellEmulator):
            counts["beacon_reads"] = beacon.spot_reads
        return counts


async def _serve(emulator: LineEmulator, path: str, name: str) -> Transport:
    """Start an emulator on the path's kind of endpoint; the transport a driver opens."""
    if path == "in-process":
        await emulator.start_memory()
        return emulator.memory_transport()
    if _EMULATOR_PORTS[name] == "pty":
        await emulator.start_pty()
    else:
        await emulator.start_tcp()
    return open_transport(emulator.resource)


def _mount_emulator(clock: SimClock, seed: int) -> PtuEmulator:
    """A telescope mount behind the PTU protocol: +-270 deg of azimuth (cable wrap), elevation
    -1..90 deg, parked at the zenith."""
    gimbal = PtuEmulator(
        clock,
        resolution_arcsec=MOUNT_RESOLUTION_ARCSEC,
        pan_limits=(round(-270 * _DEG_COUNTS), round(270 * _DEG_COUNTS)),
        tilt_limits=(round(-1 * _DEG_COUNTS), round(90 * _DEG_COUNTS)),
        max_speed=round(MOUNT_SLEW_DEG_S * _DEG_COUNTS),
        seed=seed,
    )
    for axis in (gimbal.pan, gimbal.tilt):
        axis.slew_speed = round(MOUNT_SLEW_DEG_S * _DEG_COUNTS)
        axis.acceleration = round(MOUNT_ACCELERATION_DEG_S2 * _DEG_COUNTS)
    gimbal.tilt.position = gimbal.tilt.target = float(gimbal.tilt.maximum)
    gimbal.tick_period_s = MOUNT_TICK_S
    return gimbal


def _beacon_link(scenario: Scenario, physics: PassPhysics, stop_unix_s: float) -> BeaconLink:
    """The beacon power at the station's sensor over the pass: the same atmosphere (weather,
    clouds) as the quantum signal, the beacon's own divergence and power."""
    mission, station_cfg, sc = scenario.mission, scenario.station, scenario.scenario
    sky_cfg = sc.simulation.sky
    window = physics.window
    grid = np.arange(math.floor(physics.clock_start_unix_s), math.ceil(stop_unix_s) + 1.0)
    geometry = topocentric(physics.tle[0], physics.tle[1], station_geometry(scenario), grid)
    rx, atm = station_cfg.receiver, station_cfg.atmosphere
    cloud = sc.weather.cloud
    budget = link_budget(
        geometry,
        TransmitterOptics(
            sky_cfg.beacon_wavelength_nm,
            mission.transmitter.aperture_diameter_m,
            sky_cfg.beacon_divergence_urad,
            mission.transmitter.optics_efficiency,
        ),
        ReceiverOptics(
            rx.aperture_diameter_m,
            rx.optics_efficiency,
            rx.field_of_view_urad,
            rx.obscuration_diameter_m,
            rx.filter_bandwidth_nm,
        ),
        Atmosphere(
            zenith_loss_db=atm.zenith_loss_db,
            weather=sc.weather.profile,
            cloud_start_unix_s=window.aos_unix_s + cloud.start_s_after_aos if cloud else None,
            cloud_stop_unix_s=(
                window.aos_unix_s + cloud.start_s_after_aos + cloud.duration_s if cloud else None
            ),
            cloud_extra_loss_db=cloud.extra_loss_db if cloud else 0.0,
        ),
        Background(station_cfg.background.sky, station_cfg.background.radiance_w_m2_sr_nm),
        np.zeros(grid.size),
        None,
    )
    return BeaconLink(
        unix_s=grid,
        power_nw=sky_cfg.beacon_power_mw * 1e6 * budget.transmittance,
        on_unix_s=window.aos_unix_s + sky_cfg.beacon_on_after_aos_s,
        off_unix_s=window.los_unix_s,
    )


def _station_sky(scenario: Scenario, physics: PassPhysics, stop_unix_s: float) -> StationSky:
    seed = scenario.scenario.seed
    sky_cfg = scenario.scenario.simulation.sky
    start = physics.clock_start_unix_s
    target = ApparentTarget.from_tle(
        physics.tle, station_geometry(scenario), start, stop_unix_s, TARGET_STEP_S
    )
    return StationSky(
        target=target,
        mount_model=MountModel.from_seed(
            rng.derive_key(seed, "sky/mount"),
            sky_cfg.mount_zero_point_rms_urad,
            sky_cfg.mount_axis_tilt_urad,
        ),
        tip_tilt=TipTiltSeries.generate(
            rng.derive_key(seed, "sky/tip-tilt"),
            start,
            stop_unix_s - start,
            sky_cfg.tip_tilt_corner_hz,
            TIP_TILT_STEP_S,
        ),
        tip_tilt_rms_urad_zenith=sky_cfg.tip_tilt_rms_urad_zenith,
        beacon=_beacon_link(scenario, physics, stop_unix_s),
        field_of_view_urad=scenario.station.receiver.field_of_view_urad,
        spot_fwhm_urad=sky_cfg.receiver_spot_fwhm_urad,
        receiver_offset_urad=sky_cfg.receiver_offset_urad,
        mirror_axis_unit_urad=MIRROR_AXIS_UNIT_URAD,
    )


async def _connect(driver: Any, stack: contextlib.AsyncExitStack) -> None:
    await driver.connect(timeout_s=10.0)
    stack.push_async_callback(driver.close)


async def _sample_truth(bench: StationBench, clock: SimClock, rate_hz: float, stop: float) -> None:
    """Sample the truth at a fixed rate in clock time, in lockstep (time waits for it)."""
    period = 1.0 / rate_hz
    start = clock.now_unix_s()
    with clock.participating("station truth"):
        k = 0
        while (t := start + k * period) <= stop:
            await clock.sleep_until(t)
            bench.sample(clock.now_unix_s())
            k += 1


async def build_station(
    scenario: Scenario,
    physics: PassPhysics,
    clock: SimClock,
    paths: dict[str, str],
    stack: contextlib.AsyncExitStack,
) -> StationBench:
    """Start the station's emulators on their paths, connect their drivers (closed, then the
    emulators stopped, when `stack` unwinds) and start sampling the truth."""
    for name in STATION_INSTRUMENTS:
        allowed = ("none", "in-process", "emulator") + (
            ("visa-sim",) if name == "detectors" else ()
        )
        if paths.get(name, "none") not in allowed:
            raise ConfigError(
                f"simulation.instruments.{name}: {paths.get(name)!r} not in {allowed}"
            )
    seed = scenario.scenario.seed
    instruments = StationInstruments()
    bench = StationBench(instruments, dict(paths))
    stop_unix_s = physics.window.los_unix_s + 5.0

    def seed_of(name: str) -> int:
        return rng.derive_key(seed, f"emulator/{name}")

    if paths["gimbal"] != "none":
        sky = _station_sky(scenario, physics, stop_unix_s)
        bench.sky = sky
        gimbal_emulator = _mount_emulator(clock, seed_of("gimbal"))
        mirror_emulator: GcsMirrorEmulator | None = None
        if paths["fsm"] != "none":
            mirror_emulator = GcsMirrorEmulator(
                clock,
                sensor_noise=MIRROR_SENSOR_NOISE_URAD / MIRROR_AXIS_UNIT_URAD,
                seed=seed_of("fsm"),
            )
        sky.attach(gimbal_emulator, mirror_emulator)
        emulators: list[tuple[str, LineEmulator]] = [("gimbal", gimbal_emulator)]
        if mirror_emulator is not None:
            emulators.append(("fsm", mirror_emulator))
        if paths["beacon"] != "none":
            beacon_emulator = QuadCellEmulator(
                clock,
                sky=sky.beacon_spot,
                linear_range_urad=scenario.station.atp.acquisition_field_of_view_urad / 2.0,
                seed=seed_of("beacon"),
            )
            emulators.append(("beacon", beacon_emulator))
        for name, emulator in emulators:
            transport = await _serve(emulator, paths[name], name)
            stack.push_async_callback(emulator.stop)
            bench.emulators[name] = emulator
            if name == "gimbal":
                driver: Any = PtuGimbal(
                    "gimbal",
                    transport,
                    pan_resolution_arcsec=MOUNT_RESOLUTION_ARCSEC,
                    tilt_resolution_arcsec=MOUNT_RESOLUTION_ARCSEC,
                )
                instruments.gimbal = driver
            elif name == "fsm":
                driver = PiGcsMirror("fsm", transport, axis_unit_urad=MIRROR_AXIS_UNIT_URAD)
                instruments.fsm = driver
            else:
                driver = QuadCellBeacon("beacon", transport)
                instruments.beacon = driver
            await _connect(driver, stack)
    elif paths["fsm"] != "none" or paths["beacon"] != "none":
        raise ConfigError(
            "simulation.instruments: an fsm or beacon needs the gimbal in the loop "
            "(the line of sight starts at the mount)"
        )

    if paths["detectors"] != "none":
        await _build_detectors(scenario, clock, bench, paths["detectors"], seed_of, stack)

    if bench.sky is not None or bench.detector_live is not None:
        rate = scenario.scenario.simulation.sky.sample_rate_hz
        task = asyncio.create_task(
            _sample_truth(bench, clock, rate, stop_unix_s), name="station truth"
        )
        stack.push_async_callback(_cancel, task)
    return bench


async def _build_detectors(
    scenario: Scenario,
    clock: SimClock,
    bench: StationBench,
    path: str,
    seed_of: Callable[[str], int],
    stack: contextlib.AsyncExitStack,
) -> None:
    detectors_cfg = scenario.station.detectors
    if path == "visa-sim":
        tap = _CommandTap(open_transport(BIAS_SUPPLY_SIM_RESOURCE), 4)
        driver = ScpiBiasSupply("detectors", tap, max_bias_v=max(80.0, detectors_cfg.bias_v))
        bench.detector_live = tap.live
    else:
        # cooled long before the pass: the channels start at the cooler's set-point
        supply = BiasSupplyEmulator(
            clock,
            ambient_c=-40.0,
            cooler_setpoint_c=-40.0,
            dark_rate_at_setpoint_cps=detectors_cfg.dark_count_rate_hz,
            seed=seed_of("detectors"),
        )
        transport = await _serve(supply, path, "detectors")
        stack.push_async_callback(supply.stop)
        bench.emulators["detectors"] = supply
        bench.detector_live = supply.channel_live
        driver = ScpiBiasSupply("detectors", transport, max_bias_v=max(80.0, detectors_cfg.bias_v))
    bench.channel_count = driver.channel_count
    bench.instruments.detectors = driver
    await _connect(driver, stack)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, DeviceDisconnected):
        await task
