"""A pass's archives: its per-frame records (`frames.parquet`) and the station's ATP samples
(`atp.parquet`), written beside `report.json`, and as CSV on request (docs/report.md).

Nothing here holds key material: a frame row has counts, rates and the instants of the frame;
an ATP row the pointing state of one loop sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

INTENSITY_LABELS = ("signal", "decoy", "vacuum")
FRAMES_FILE = "frames.parquet"
ATP_FILE = "atp.parquet"


def station_frame_columns(summary: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Get: the per-frame columns of a station's OGS_PASS_SUMMARY (its decoded fields, null
    as NaN), row k for frame k: `clock_offset_ps`, `timing_residual_rms_ps` and
    `{x_sifted,z_sifted,z_errors}_{signal,decoy,vacuum}`; ValueError if the arrays disagree."""

    def array(name: str) -> np.ndarray:
        values = summary.get(name)
        if not isinstance(values, list | tuple | np.ndarray):
            raise ValueError(f"OGS_PASS_SUMMARY: no per-frame {name}")
        return np.array([np.nan if v is None else v for v in values], dtype=float)

    offsets = array("frame_clock_offset_ps")
    n = offsets.size
    columns: dict[str, np.ndarray] = {}
    for kind in ("x_sifted", "z_sifted", "z_errors"):
        values = array(f"frame_{kind}")
        if values.size != 3 * n:
            raise ValueError(
                f"OGS_PASS_SUMMARY: frame_{kind} has {values.size} values, not 3 x {n}"
            )
        for k, label in enumerate(INTENSITY_LABELS):
            columns[f"{kind}_{label}"] = values.reshape(n, 3)[:, k]
    columns["clock_offset_ps"] = offsets
    columns["timing_residual_rms_ps"] = array("frame_timing_residual_rms_ps")
    if columns["timing_residual_rms_ps"].size != n:
        raise ValueError("OGS_PASS_SUMMARY: per-frame arrays of different lengths")
    return columns


def _station_summary(records: Iterable[Mapping[str, Any]], plan_id: int, station: str) -> Any:
    from satqkd.pass_recorder import find_record

    summary = find_record(records, "OGS_PASS_SUMMARY", plan_id, station)
    if summary is None:
        raise ValueError(f"no OGS_PASS_SUMMARY of plan {plan_id} from station {station}")
    return summary["fields"]


def frames_from_telemetry(
    records: Sequence[Mapping[str, Any]], plan_id: int, station: str
) -> pd.DataFrame:
    """Get: one row per QKD frame of a pass from its recorded telemetry alone (a pass on
    hardware, `ogs run --reports`): each frame's QKD_PROGRESS (span, elevation, detections)
    and the station's OGS_PASS_SUMMARY (counts by intensity, clock offset, residual). The
    columns of `frames_table` the station measures, less `tags`; NaN where telemetry lacks
    a figure (a frame whose progress message is missing). ValueError without a summary."""
    import pandas as pd

    summary = _station_summary(records, plan_id, station)
    measured = station_frame_columns(summary)
    n = measured["clock_offset_ps"].size
    progress: dict[int, Mapping[str, Any]] = {}
    for record in records:
        f = record["fields"]
        own = record.get("node") in (None, f"ogs-{station}") and f.get("plan_id") == plan_id
        if own and record.get("name") == "QKD_PROGRESS":
            progress[int(f["chunk"])] = f

    def from_progress(name: str) -> np.ndarray:
        values = [progress[k].get(name) if k in progress else None for k in range(n)]
        return np.array([np.nan if v is None else v for v in values], dtype=float)

    start, stop = from_progress("frame_start_unix_s"), from_progress("frame_stop_unix_s")
    total = from_progress("detections")  # running count: a frame's share needs the one before
    detections = np.diff(np.concatenate(([0.0], total))) if n else total
    detections[1:][np.isnan(total[:-1])] = np.nan
    by_basis = {
        kind: sum(measured[f"{kind}_{label}"] for label in INTENSITY_LABELS)
        for kind in ("x_sifted", "z_sifted", "z_errors")
    }
    span = np.maximum(stop - start, 1e-9)
    aos = summary.get("aos_unix_s")
    columns: dict[str, Any] = {
        "frame": np.arange(n, dtype=np.int64),
        "start_unix_s": start,
        "stop_unix_s": stop,
        "t_after_aos_s": 0.5 * (start + stop) - (np.nan if aos is None else aos),
        "elevation_deg": from_progress("elevation_deg"),
        "detections": detections,
        "sifted_bits": by_basis["x_sifted"] + by_basis["z_sifted"],
        "z_sifted": by_basis["z_sifted"],
        "z_errors": by_basis["z_errors"],
    }
    columns["detections_per_s"] = columns["detections"] / span
    columns["sifted_bits_per_s"] = columns["sifted_bits"] / span
    with np.errstate(invalid="ignore", divide="ignore"):
        columns["qber_z"] = np.where(
            by_basis["z_sifted"] > 0, by_basis["z_errors"] / by_basis["z_sifted"], np.nan
        )
    return pd.DataFrame({**columns, **measured})


def frames_table(run: Any) -> pd.DataFrame:
    """Get: one row per QKD frame of a simulated pass (`satqkd.simulation.PassRun`): what the
    station measured (its per-frame counts by intensity, clock offset and timing residual from
    its recorded OGS_PASS_SUMMARY, as on hardware) and the simulator's truth of the frame
    (range, link loss, expected rates). Missing values are NaN, never 0."""
    import pandas as pd

    from satqkd.pass_physics import detector_model, source_model
    from sim_backends.expected import expected_rates

    physics = run.physics
    result = run.ogs.results[run.plan_id]
    chunks = result.chunks
    n = len(chunks)
    aos = physics.window.aos_unix_s
    start = np.array([c.start_unix_s for c in chunks], dtype=float)
    stop = np.array([c.stop_unix_s for c in chunks], dtype=float)
    mid = 0.5 * (start + stop)
    z_sifted = np.array([c.z_sifted for c in chunks], dtype=float)
    z_errors = np.array([c.z_errors for c in chunks], dtype=float)
    span = np.maximum(stop - start, 1e-9)
    columns: dict[str, Any] = {
        "frame": np.array([c.chunk for c in chunks], dtype=np.int64),
        "start_unix_s": start,
        "stop_unix_s": stop,
        "t_after_aos_s": mid - aos,
        "elevation_deg": np.array([c.elevation_deg for c in chunks], dtype=float),
        "tags": np.array([c.tags for c in chunks], dtype=np.int64),
        "detections": np.array([c.detections for c in chunks], dtype=np.int64),
        "sifted_bits": np.array([c.sifted for c in chunks], dtype=np.int64),
        "z_sifted": z_sifted.astype(np.int64),
        "z_errors": z_errors.astype(np.int64),
    }
    columns["detections_per_s"] = columns["detections"] / span
    columns["sifted_bits_per_s"] = columns["sifted_bits"] / span
    with np.errstate(invalid="ignore", divide="ignore"):
        columns["qber_z"] = np.where(z_sifted > 0, z_errors / z_sifted, np.nan)
    measured = station_frame_columns(
        _station_summary(run.recorded, run.plan_id, run.scenario.station.name)
    )
    frame_index = columns["frame"]
    for name, values in measured.items():  # in the summary, row k is frame k
        known = frame_index < values.size
        picked = values[np.where(known, frame_index, 0)] if values.size else np.full(n, np.nan)
        columns[name] = np.where(known, picked, np.nan)
    # the simulator's truth of each frame: where the satellite was, what the link model expects
    truth_n = physics.n_frames
    frame_of = np.clip(np.round((mid - physics.qkd_start_unix_s) / physics.frame_s - 0.5), 0, None)
    index = frame_of.astype(np.int64)
    valid = index < truth_n
    index = np.where(valid, index, 0)

    def truth(values: np.ndarray) -> np.ndarray:
        return np.where(valid, np.asarray(values, dtype=float)[index], np.nan) if n else values[:0]

    columns["range_km"] = truth(physics.frame_range_m / 1e3)
    columns["total_loss_db"] = truth(physics.frame_total_loss_db)
    columns["transmitter_pointing_loss_db"] = truth(physics.frame_pointing_loss_db)
    scenario = run.scenario
    if scenario.mission.source is None:  # a BBM92 pass: no decoy-BB84 expectation (NaN)
        sifted = tuple(f"sifted_{label}" for label in INTENSITY_LABELS)
        for name in ("detections", "sifted_bits", *sifted):
            columns[f"expected_{name}_per_s"] = np.full(n, np.nan)
        return pd.DataFrame(columns)
    rates = expected_rates(
        source_model(scenario),
        detector_model(scenario),
        physics.frame_transmittance,
        physics.frame_background_cps,
        scenario.mission.protocol.sync_window_ps,
        physics.frame_polarisation_error,
    )
    columns["expected_detections_per_s"] = truth(rates.detections_per_s)
    columns["expected_sifted_bits_per_s"] = truth(rates.sifted_bits_per_s)
    match = np.divide(
        rates.sifted_bits_per_s,
        rates.detections_per_s,
        out=np.zeros_like(rates.detections_per_s),
        where=rates.detections_per_s > 0,
    )
    for k, label in enumerate(INTENSITY_LABELS):
        columns[f"expected_sifted_{label}_per_s"] = truth(rates.counts_per_s[:, k] * match)
    return pd.DataFrame(columns)


def atp_table(run: Any) -> pd.DataFrame:
    """Get: the station's ATP samples of the pass (one row per loop sample: time, mode, beacon
    spot, mirror command, gimbal read-back, prediction); empty when the station's ATP was not
    in the loop."""
    import pandas as pd

    from satqkd_ogs.atp_record import COLUMNS, MODES

    record = run.ogs.atp_records.get(run.plan_id)
    if record is None or len(record) == 0:
        frame = pd.DataFrame({name: np.zeros(0) for name in COLUMNS})
        frame["mode"] = pd.Categorical([], categories=MODES)
        frame.insert(1, "t_after_aos_s", np.zeros(0))
        return frame
    data = {name: record.column(name) for name in COLUMNS}
    data["mode"] = pd.Categorical(record.modes(), categories=MODES)
    data["spot_valid"] = np.where(np.isnan(data["spot_valid"]), np.nan, data["spot_valid"])
    frame = pd.DataFrame(data)
    frame.insert(1, "t_after_aos_s", frame["unix_s"] - run.physics.window.aos_unix_s)
    return frame


def write_archives(
    out_dir: Path, frames: pd.DataFrame, atp: pd.DataFrame, csv: bool = False
) -> list[Path]:
    """Control: write frames.parquet and atp.parquet into `out_dir` (and frames.csv, atp.csv
    with `csv`); return the paths written."""
    written = []
    for table, name in ((frames, FRAMES_FILE), (atp, ATP_FILE)):
        path = out_dir / name
        table.to_parquet(path, index=False)
        written.append(path)
        if csv:
            csv_path = path.with_suffix(".csv")
            table.to_csv(csv_path, index=False)
            written.append(csv_path)
    return written


def read_archives(out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Get: (frames, atp) of a pass directory written by `write_archives`."""
    import pandas as pd

    return pd.read_parquet(out_dir / FRAMES_FILE), pd.read_parquet(out_dir / ATP_FILE)


LOSS_COLUMNS = (
    "geometric_loss_db",
    "pointing_loss_db",
    "atmospheric_loss_db",
    "scintillation_loss_db",
    "transmitter_optics_loss_db",
    "receiver_optics_loss_db",
)


def pass_timeline(
    scenario: Any, tle: tuple[str, str] | None = None, window: Any = None, step_s: float = 2.0
) -> pd.DataFrame:
    """Get: the simulator's truth over the whole pass (AOS to LOS, every `step_s`): where the
    satellite is (azimuth, elevation, range), each loss of the link and what the link model
    expects the station to count. `tle` and `window` as the pass chose them (found again
    from the scenario when not given)."""
    import pandas as pd

    from satqkd.pass_physics import (
        choose_pass,
        detector_model,
        link_timeline,
        source_model,
        station_geometry,
    )
    from satqkd_core.ephemeris import StationTrack
    from sim_backends.expected import expected_rates

    if tle is None or window is None:
        tle, window = choose_pass(scenario)
    start, stop = window.aos_unix_s, window.los_unix_s
    station = station_geometry(scenario)
    if isinstance(station, StationTrack):
        start, stop = max(start, station.start_unix_s), min(stop, station.stop_unix_s)
    times = np.append(np.arange(start, stop, step_s), stop)
    link = link_timeline(scenario, tle, window, times)
    nan = np.full(times.size, np.nan)
    rates = (
        expected_rates(
            source_model(scenario),
            detector_model(scenario),
            link.budget.transmittance,
            link.budget.background_counts_per_s,
            scenario.mission.protocol.sync_window_ps,
            link.polarisation_error,
        )
        if scenario.mission.source is not None
        else None  # a BBM92 pass: no decoy-BB84 expectation (NaN)
    )
    columns: dict[str, Any] = {
        "unix_s": times,
        "t_after_aos_s": times - window.aos_unix_s,
        "azimuth_deg": np.mod(link.geometry.azimuth_deg, 360.0),
        "elevation_deg": link.geometry.elevation_deg,
        "range_km": link.geometry.range_m / 1e3,
    }
    for name in LOSS_COLUMNS:
        columns[name] = getattr(link.budget, name)
    columns["total_loss_db"] = link.budget.total_loss_db
    columns["expected_detections_per_s"] = rates.detections_per_s if rates else nan
    columns["expected_sifted_bits_per_s"] = rates.sifted_bits_per_s if rates else nan
    return pd.DataFrame(columns)
