"""Can this station serve this mission? And can it take this pass plan tonight?

`compatibility_problems` compares what a mission needs (its quantum wavelength and filter,
encoding and bases, detector and tagger channels, time synchronisation, beacons, classical
link, detector jitter) with what the station's `capabilities` provide, and returns every
mismatch, each naming the profile key, what is needed and what the station has. `plan_refusal`
adds the schedule (satqkd_core.station_schedule): a plan for a mission the station cannot
serve, or one that overlaps another plan or leaves less than the slew and reconfiguration gap,
is refused with every reason on one line. Pure functions of loaded profiles (docs/missions.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from satqkd.config import (
    BandConfig,
    MissionProfileConfig,
    StationCapabilitiesConfig,
    StationConfig,
)
from satqkd_core.station_schedule import PlannedPass
from satqkd_ogs.missions import StationMissions, StationProfile
from satqkd_ogs.missions import plan_refusal as station_plan_refusal

# a beacon laser serves a mission whose beacon lies within this distance of it
BEACON_TOLERANCE_NM = 1.0


def _bands(bands: Iterable[BandConfig]) -> str:
    shown = ", ".join(f"{b.low_nm:g}-{b.high_nm:g} nm" for b in bands)
    return shown or "none"


def _covered(bands: Iterable[BandConfig], wavelength_nm: float) -> bool:
    return any(band.covers(wavelength_nm) for band in bands)


def detector_channels_needed(mission: MissionProfileConfig) -> int:
    """Get: the quantum detectors a passive-basis receiver for the mission needs."""
    return mission.station_optics.detector_channels_per_basis * len(mission.encoding.bases)


def tagger_channels_needed(mission: MissionProfileConfig) -> int:
    """Get: the time-tagger inputs: one per quantum detector, one more for a sync laser."""
    return detector_channels_needed(mission) + (1 if mission.wavelengths.sync_nm else 0)


def _optics_problems(station: StationConfig, mission: MissionProfileConfig) -> list[str]:
    caps = station.capabilities
    assert caps is not None
    problems = []
    quantum = mission.quantum_wavelength_nm
    if not _covered(caps.detector_bands, quantum):
        problems.append(
            f"quantum wavelength {quantum:g} nm is outside the detectors' bands "
            f"({_bands(caps.detector_bands)})"
        )
    optics = mission.station_optics
    centre = optics.filter_centre_nm if optics.filter_centre_nm is not None else quantum
    fitting = [
        f
        for f in caps.filters
        if abs(f.centre_nm - centre) <= f.width_nm / 2.0 and f.width_nm <= optics.filter_width_nm
    ]
    if not fitting:
        shown = ", ".join(f"{f.centre_nm:g}/{f.width_nm:g}" for f in caps.filters) or "none"
        problems.append(
            f"no filter passes {centre:g} nm with width <= {optics.filter_width_nm:g} nm "
            f"(filters centre/width: {shown} nm)"
        )
    if mission.encoding.kind not in caps.encodings:
        problems.append(
            f"encoding {mission.encoding.kind} needs an analyser the station lacks "
            f"(it has: {', '.join(caps.encodings) or 'none'})"
        )
    missing = [b for b in mission.encoding.bases if b not in caps.bases]
    if missing:
        problems.append(
            f"bases {', '.join(missing)} are not measured (the station measures "
            f"{', '.join(caps.bases) or 'none'})"
        )
    return problems


def _channel_problems(station: StationConfig, mission: MissionProfileConfig) -> list[str]:
    caps = station.capabilities
    assert caps is not None
    problems = []
    detectors = detector_channels_needed(mission)
    if detectors > caps.detector_channels:
        problems.append(
            f"{detectors} detector channels needed "
            f"({mission.station_optics.detector_channels_per_basis} per basis x "
            f"{len(mission.encoding.bases)} bases), the station has {caps.detector_channels}"
        )
    taggers = tagger_channels_needed(mission)
    if taggers > caps.tagger_channels:
        problems.append(
            f"{taggers} time-tagger channels needed, the station has {caps.tagger_channels}"
        )
    limit = mission.station_optics.max_timing_jitter_ps
    if limit is not None and station.detectors.timing_jitter_ps > limit:
        problems.append(
            f"detector timing jitter {station.detectors.timing_jitter_ps:g} ps rms exceeds "
            f"the mission's {limit:g} ps"
        )
    return problems


def _link_problems(station: StationConfig, mission: MissionProfileConfig) -> list[str]:
    caps = station.capabilities
    assert caps is not None
    problems = []
    if mission.time_sync.method == "cross-correlation" and not caps.clockless:
        problems.append(
            "time sync by cross-correlation (no pulse clock) needs a clockless station "
            "(capabilities.clockless is false)"
        )
    sync = mission.wavelengths.sync_nm
    if sync is not None and not _covered(caps.timing_detector_bands, sync):
        problems.append(
            f"sync laser {sync:g} nm is outside the timing receiver's bands "
            f"({_bands(caps.timing_detector_bands)})"
        )
    down = mission.wavelengths.beacon_down_nm
    if down is not None and not _covered(caps.beacon_camera_bands, down):
        problems.append(
            f"satellite beacon {down:g} nm is outside the beacon camera's bands "
            f"({_bands(caps.beacon_camera_bands)})"
        )
    up = mission.wavelengths.beacon_up_nm
    if up is not None and not any(
        abs(up - laser) <= BEACON_TOLERANCE_NM for laser in caps.beacon_lasers_nm
    ):
        lasers = ", ".join(f"{laser:g}" for laser in caps.beacon_lasers_nm) or "none"
        problems.append(f"no uplink beacon laser at {up:g} nm (the station has: {lasers} nm)")
    link = mission.classical_link
    if link is not None and link.medium is not None and link.medium not in caps.classical_media:
        problems.append(
            f"classical link over {link.medium} is not provided "
            f"(the station has: {', '.join(caps.classical_media) or 'none'})"
        )
    return problems


def compatibility_problems(station: StationConfig, mission: MissionProfileConfig) -> list[str]:
    """Get: every reason the station cannot serve the mission, [] if it can."""
    if station.capabilities is None:
        return [f"station {station.name} declares no capabilities block to check against"]
    return (
        _optics_problems(station, mission)
        + _channel_problems(station, mission)
        + _link_problems(station, mission)
    )


def compatibility_message(station: StationConfig, mission: MissionProfileConfig) -> str | None:
    """Get: one line naming every reason the station cannot serve the mission, None if it can."""
    problems = compatibility_problems(station, mission)
    if not problems:
        return None
    return f"station {station.name} cannot serve mission {mission.name}: " + "; ".join(problems)


def _gaps(station: StationConfig) -> tuple[float, float]:
    caps = station.capabilities
    fields = StationCapabilitiesConfig.model_fields
    slew = caps.slew_gap_s if caps else fields["slew_gap_s"].default
    reconf = caps.reconfiguration_gap_s if caps else fields["reconfiguration_gap_s"].default
    return float(slew), float(reconf)


def plan_refusal(
    station: StationConfig,
    missions: Mapping[str, MissionProfileConfig],
    held: Iterable[PlannedPass],
    candidate: PlannedPass,
) -> str | None:
    """Get: every reason the station refuses the candidate plan on one line (unknown or
    incompatible mission, overlap or too short a gap with a plan it holds), None if it takes
    it. The station daemon's rule (`satqkd_ogs.missions.plan_refusal`) on loaded profiles."""
    incompatible = {}
    mission = missions.get(candidate.mission)
    if mission is not None:
        message = compatibility_message(station, mission)
        if message is not None:
            incompatible[mission.name] = message
    slew, reconf = _gaps(station)
    return station_plan_refusal(missions, incompatible, tuple(held), candidate, slew, reconf)


def station_profile(station: StationConfig, mission: MissionProfileConfig) -> StationProfile:
    """Get: what the station sets up for the mission's passes: the narrowest filter that
    passes its line, the detectors of the first bank whose band holds its wavelength (the
    station's `detector_channels` split evenly between its `detector_bands`, in order), the
    tagger inputs of those detectors (input n takes detector n) plus the last input for a sync
    laser. ValueError naming every reason when the station cannot serve the mission."""
    message = compatibility_message(station, mission)
    if message is not None:
        raise ValueError(message)
    caps = station.capabilities
    assert caps is not None
    optics = mission.station_optics
    quantum = mission.quantum_wavelength_nm
    centre = optics.filter_centre_nm if optics.filter_centre_nm is not None else quantum
    chosen = min(
        (
            f
            for f in caps.filters
            if abs(f.centre_nm - centre) <= f.width_nm / 2.0
            and f.width_nm <= optics.filter_width_nm
        ),
        key=lambda f: (f.width_nm, abs(f.centre_nm - centre)),
    )
    bank = next(i for i, band in enumerate(caps.detector_bands) if band.covers(quantum))
    per_bank = caps.detector_channels // len(caps.detector_bands)
    needed = detector_channels_needed(mission)
    if needed > per_bank:
        raise ValueError(
            f"station {station.name} cannot serve mission {mission.name}: {needed} detector "
            f"channels needed in the bank for {quantum:g} nm, it has {per_bank}"
        )
    detectors = tuple(range(bank * per_bank, bank * per_bank + needed))
    sync = (caps.tagger_channels - 1,) if mission.wavelengths.sync_nm else ()
    return StationProfile(
        mission=mission.name,
        family=mission.protocol.family,
        time_sync=mission.time_sync.method,
        encoding=mission.encoding.kind,
        filter_centre_nm=chosen.centre_nm,
        filter_width_nm=chosen.width_nm,
        detector_channels=detectors,
        tagger_channels=detectors + sync,
    )


def station_missions(
    station: StationConfig, missions: Iterable[MissionProfileConfig]
) -> StationMissions:
    """Get: the multi-mission guard of a station daemon: the profile of every mission it can
    serve and the reason for every one it cannot (its plans are then refused), computed once
    at start."""
    profiles: dict[str, StationProfile] = {}
    incompatible: dict[str, str] = {}
    for mission in missions:
        try:
            profiles[mission.name] = station_profile(station, mission)
        except ValueError as exc:
            incompatible[mission.name] = str(exc)
    slew, reconf = _gaps(station)
    return StationMissions(station.name, profiles, incompatible, slew, reconf)
