"""The emulators of a simulated pass and the truth the station's instruments close on.

The instruments themselves are assembled from the scenario's bench files by
`satqkd.assembly.assemble_node`, as for a lab; `ScenarioEmulators` is the emulator factory that
ties the station's gimbal, steering mirror and beacon sensor to the sky (sim_backends/sky.py)
and starts the detectors cooled. `build_station` then samples the truth in clock time for the
physics: frame by frame, the coupling of the quantum signal through the receiver's field stop
(how well the station really pointed) and which detector channels were live (gate armed, bias
applied). A station bench without a gimbal leaves the optical ATP out of the loop (the pass
physics' ATP model then stands alone); one without detectors counts them as always on.
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

from drivers.interfaces import Device, DeviceDisconnected
from drivers.scpi import ScpiBiasSupply
from drivers.transport import Transport
from satqkd.assembly import EmulatorFactory, NodeInstruments, node_entries
from satqkd.config import ConfigError, Scenario
from satqkd.instruments_config import BenchConfig, BenchEntry
from satqkd.pass_physics import PassPhysics, station_geometry, weather_class
from satqkd_core import rng
from satqkd_core.ephemeris import topocentric
from satqkd_ogs.atp import StationInstruments
from satqkd_runtime.clock import SimClock
from sim_backends.emulators.base import LineEmulator
from sim_backends.emulators.beacon import QuadCellEmulator
from sim_backends.emulators.fsm import GcsMirrorEmulator
from sim_backends.emulators.gimbal import PtuEmulator
from sim_backends.emulators.scpi import BiasSupplyEmulator, LaserSourceEmulator
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
    "FrameConditions",
    "ScenarioEmulators",
    "StationBench",
    "build_station",
]

# a telescope mount's encoders (0.36 arcsec = 1e-4 deg = 1.75 urad per count); the PTU wire
# protocol carries counts, so the driver is told the same resolution the emulator reports
MOUNT_RESOLUTION_ARCSEC = 0.36
MOUNT_SLEW_DEG_S = 10.0
MOUNT_ACCELERATION_DEG_S2 = 10.0
MOUNT_TICK_S = 0.05  # how soon the mount reports a limit hit unprompted
MIRROR_AXIS_UNIT_URAD = 1000.0  # PiGcsMirror's default: the controller works in mrad
MIRROR_SENSOR_NOISE_URAD = 0.2
TIP_TILT_STEP_S = 1e-3
TARGET_STEP_S = 0.02


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


def _mount_emulator(
    clock: SimClock, seed: int, resolution_arcsec: float = MOUNT_RESOLUTION_ARCSEC
) -> PtuEmulator:
    """A telescope mount behind the PTU protocol: +-270 deg of azimuth (cable wrap), elevation
    -1..90 deg, parked at the zenith."""
    deg_counts = 3600.0 / resolution_arcsec
    gimbal = PtuEmulator(
        clock,
        resolution_arcsec=resolution_arcsec,
        pan_limits=(round(-270 * deg_counts), round(270 * deg_counts)),
        tilt_limits=(round(-1 * deg_counts), round(90 * deg_counts)),
        max_speed=round(MOUNT_SLEW_DEG_S * deg_counts),
        seed=seed,
    )
    for axis in (gimbal.pan, gimbal.tilt):
        axis.slew_speed = round(MOUNT_SLEW_DEG_S * deg_counts)
        axis.acceleration = round(MOUNT_ACCELERATION_DEG_S2 * deg_counts)
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
            weather=weather_class(scenario, window),
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


def _station_sky(
    scenario: Scenario, physics: PassPhysics, stop_unix_s: float, mirror_axis_unit_urad: float
) -> StationSky:
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
        mirror_axis_unit_urad=mirror_axis_unit_urad,
    )


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


class ScenarioEmulators(EmulatorFactory):
    """The emulators of a simulated pass, tied to the scenario: the station's mount, mirror and
    beacon sensor close on the sky truth, its detectors start cooled, and the payload's laser
    controller and the time tagger are the stock emulators. A bias supply reached over
    pyvisa-sim is observed through a tap on its control line (its state lives in the VISA
    session)."""

    def __init__(
        self,
        scenario: Scenario,
        physics: PassPhysics,
        clock: SimClock,
        station_bench: BenchConfig,
    ) -> None:
        super().__init__(clock, scenario.scenario.seed)
        self.scenario = scenario
        self.sim_clock = clock
        self.stop_unix_s = physics.window.los_unix_s + 5.0
        self.sky: StationSky | None = None
        self.tap: _CommandTap | None = None
        self._station: dict[str, LineEmulator] = {}
        slots = node_entries(station_bench, "station")
        entries = {slot: station_bench.instruments[name] for slot, name in slots.items()}
        if "gimbal" not in entries:
            if "fsm" in entries or "beacon" in entries:
                raise ConfigError(
                    f"bench {station_bench.name}: an fsm or beacon needs the gimbal in the loop "
                    "(the line of sight starts at the mount)"
                )
            return
        mirror_unit = MIRROR_AXIS_UNIT_URAD
        if "fsm" in entries:
            mirror_unit = entries["fsm"].driver_options().axis_unit_urad  # type: ignore[attr-defined]
        sky = _station_sky(scenario, physics, self.stop_unix_s, mirror_unit)
        self.sky = sky
        gimbal_options = entries["gimbal"].driver_options()
        resolution = gimbal_options.pan_resolution_arcsec or MOUNT_RESOLUTION_ARCSEC  # type: ignore[attr-defined]
        gimbal = _mount_emulator(clock, self._seed_of("gimbal"), resolution)
        self._station["gimbal"] = gimbal
        mirror: GcsMirrorEmulator | None = None
        if "fsm" in entries:
            mirror = GcsMirrorEmulator(
                clock,
                sensor_noise=MIRROR_SENSOR_NOISE_URAD / mirror_unit,
                seed=self._seed_of("fsm"),
            )
            self._station["fsm"] = mirror
        sky.attach(gimbal, mirror)
        if "beacon" in entries:
            self._station["beacon"] = QuadCellEmulator(
                clock,
                sky=sky.beacon_spot,
                linear_range_urad=scenario.station.atp.acquisition_field_of_view_urad / 2.0,
                seed=self._seed_of("beacon"),
            )

    def _seed_of(self, name: str) -> int:
        return rng.derive_key(self.seed, f"emulator/{name}")

    def create(self, entry_name: str, entry: BenchEntry, hardware: Device | None) -> Any:
        """Get: the scenario's emulator for a bench entry."""
        emulator_name = entry.spec.emulator
        if emulator_name in self._station:
            return self._station[emulator_name]
        if emulator_name == "detectors":
            # cooled long before the pass: the channels start at the cooler's set-point
            return BiasSupplyEmulator(
                self.sim_clock,
                ambient_c=-40.0,
                cooler_setpoint_c=-40.0,
                dark_rate_at_setpoint_cps=self.scenario.station.detectors.dark_count_rate_hz,
                seed=self._seed_of("detectors"),
            )
        if emulator_name == "laser":
            return LaserSourceEmulator(self.sim_clock)
        if emulator_name in ("gimbal", "fsm", "beacon"):
            raise ConfigError(
                f"bench entry {entry_name}: the {emulator_name} has no sky to close on"
            )
        return super().create(entry_name, entry, hardware)

    def wrap_transport(self, entry_name: str, entry: BenchEntry, transport: Transport) -> Transport:
        """Get: the transport, tapped when it is a bias supply over pyvisa-sim."""
        if entry.kind == "detectors" and entry.path == "visa-sim":
            channels = entry.driver_options().channel_count  # type: ignore[attr-defined]
            self.tap = _CommandTap(transport, channels)
            return self.tap
        return transport


async def build_station(
    scenario: Scenario,
    node: NodeInstruments,
    emulators: ScenarioEmulators,
    stack: contextlib.AsyncExitStack,
) -> StationBench:
    """The truth behind the station's assembled instruments: the sky its pointing closes on,
    which detector channels are live, sampled in clock time from now on (stopped when `stack`
    unwinds)."""
    bench = StationBench(node.station_instruments(), node.station_paths(), sky=emulators.sky)
    for slot in ("gimbal", "fsm", "beacon", "detectors"):
        emulator = node.emulator_of(slot)
        if emulator is not None:
            bench.emulators[slot] = emulator
    detectors = node.devices.get("detectors")
    if isinstance(detectors, ScpiBiasSupply):
        bench.channel_count = detectors.channel_count
        supply = bench.emulators.get("detectors")
        if isinstance(supply, BiasSupplyEmulator):
            bench.detector_live = supply.channel_live
        elif emulators.tap is not None:
            bench.detector_live = emulators.tap.live
    if bench.sky is not None or bench.detector_live is not None:
        rate = scenario.scenario.simulation.sky.sample_rate_hz
        task = asyncio.create_task(
            _sample_truth(bench, emulators.sim_clock, rate, emulators.stop_unix_s),
            name="station truth",
        )
        stack.push_async_callback(_cancel, task)
    return bench


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, DeviceDisconnected):
        await task
