"""What a routine leaves in its output directory: `calibration.yaml` (its section merged into
the station's calibration file there), `summary.json` (fitted values with uncertainties,
residuals, the measurements used) and the plots a lab engineer looks at (matplotlib, Agg)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from satqkd_ogs.calibration.bench import RoutineResult
from satqkd_ogs.calibration.calibration_file import merge_section

__all__ = ["SUMMARY_SCHEMA", "write_outputs"]

SUMMARY_SCHEMA = "satqkd.atp-calibration-summary/1"
FIT_METHOD = "numpy.linalg.lstsq; uncertainties s^2 (J^T J)^-1 from the residuals"


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    return value


def write_outputs(
    result: RoutineResult, out_dir: Path, *, bench: str, instruments: dict[str, str], unix_s: float
) -> list[Path]:
    """Control: write calibration.yaml, summary.json and the plots; returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    calibration = out_dir / "calibration.yaml"
    merge_section(calibration, result.section_name, result.section)
    summary = {
        "schema": SUMMARY_SCHEMA,
        "routine": result.routine,
        "bench": bench,
        "instruments": instruments,
        "finished_utc": datetime.fromtimestamp(unix_s, UTC).isoformat(),
        "fit_method": FIT_METHOD,
        "fitted": {name: f.as_dict() for name, f in result.fitted.items()},
        "residual_rms": result.residual_rms,
        "calibration_section": {result.section_name: result.section},
        "measurements": result.measurements,
    }
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(_clean(summary), indent=1) + "\n")
    return [calibration, summary_path, *_plots(result, out_dir)]


def _plots(result: RoutineResult, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawers = {
        "gimbal-pointing-model": _plot_pointing,
        "fsm-response": _plot_mirror,
        "beacon-sensor-gain": _plot_sensor,
        "boresight": _plot_boresight,
        "tracking-bandwidth": _plot_tracking,
    }
    paths = []
    for name, draw in drawers[result.routine](result).items():
        figure = plt.figure(figsize=(9, 4.5))
        draw(figure)
        path = out_dir / f"{name}.png"
        figure.tight_layout()
        figure.savefig(path, dpi=72)
        plt.close(figure)
        paths.append(path)
    return paths


def _plot_pointing(result: RoutineResult) -> dict[str, Any]:
    rows = result.measurements["stars"]
    az = np.radians([r["az_deg"] for r in rows])
    zenith = 90.0 - np.array([r["el_deg"] for r in rows])
    rx = np.array([r["residual_x_urad"] for r in rows])
    ry = np.array([r["residual_y_urad"] for r in rows])
    dx = np.array([r["dx_urad"] for r in rows])
    dy = np.array([r["dy_urad"] for r in rows])

    def draw(figure: Any) -> None:
        sky = figure.add_subplot(1, 2, 1, projection="polar")
        sky.set_theta_zero_location("N")
        sky.set_theta_direction(-1)
        sky.scatter(az, zenith, c=np.hypot(rx, ry), cmap="viridis", s=30)
        sky.quiver(az, zenith, rx, ry, angles="xy", color="tab:red", width=0.004)
        sky.set_title("residuals on the sky (zenith distance, deg)")
        ax = figure.add_subplot(1, 2, 2)
        ax.scatter(dx, dy, label="measured (true - encoder)", s=12)
        ax.scatter(rx, ry, label="after the model", s=12)
        ax.set_xlabel("x (urad)")
        ax.set_ylabel("y (urad)")
        ax.legend(fontsize=7)
        ax.set_title(f"rms after fit {result.residual_rms['pointing_urad']:.2f} urad")

    return {"pointing-residuals": draw}


def _plot_mirror(result: RoutineResult) -> dict[str, Any]:
    steps, sweeps = result.measurements["step_response"], result.measurements["sweep"]

    def bode(figure: Any) -> None:
        mag = figure.add_subplot(2, 1, 1)
        phase = figure.add_subplot(2, 1, 2)
        for axis, points in sweeps.items():
            f = [p["frequency_hz"] for p in points]
            mag.loglog(f, [p["magnitude"] for p in points], "o-", label=f"axis {axis}")
            phase.semilogx(f, [p["phase_deg"] for p in points], "o-")
        mag.axhline(1 / math.sqrt(2), color="grey", lw=0.5)
        mag.set_ylabel("|H|")
        mag.legend(fontsize=7)
        phase.set_ylabel("phase (deg)")
        phase.set_xlabel("frequency (Hz)")

    def step(figure: Any) -> None:
        ax = figure.add_subplot(1, 1, 1)
        for axis, s in steps.items():
            ax.plot(np.array(s["t_s"]) * 1e3, s["response_urad"], ".-", label=f"axis {axis}")
        ax.set_xlabel("time after the step (ms)")
        ax.set_ylabel("spot along the axis (urad)")
        ax.legend(fontsize=7)

    return {"fsm-bode": bode, "fsm-step": step}


def _plot_sensor(result: RoutineResult) -> dict[str, Any]:
    rows = result.measurements["scan"]

    def draw(figure: Any) -> None:
        for k, axis in enumerate(("x", "y")):
            ax = figure.add_subplot(1, 2, k + 1)
            points = [r for r in rows if r["axis"] == axis and r["valid_reads"]]
            offset = [r["spot_offset_urad"] for r in points]
            ax.plot(offset, [r[f"{axis}_urad"] for r in points], "o", ms=3, label="reading")
            ax.plot(offset, offset, "-", lw=0.6, label="unit gain")
            ax.set_xlabel(f"spot moved along {axis} (urad)")
            ax.set_ylabel("sensor reading (urad)")
            ax.legend(fontsize=7)

    return {"beacon-sensor-response": draw}


def _plot_boresight(result: RoutineResult) -> dict[str, Any]:
    rows = result.measurements["scan"]
    xs = sorted({r["dx_urad"] for r in rows})
    ys = sorted({r["dy_urad"] for r in rows})
    grid = np.zeros((len(ys), len(xs)))
    for r in rows:
        grid[ys.index(r["dy_urad"]), xs.index(r["dx_urad"])] = r["counts_per_s"]

    def draw(figure: Any) -> None:
        ax = figure.add_subplot(1, 1, 1)
        image = ax.imshow(grid, origin="lower", extent=(xs[0], xs[-1], ys[0], ys[-1]))
        figure.colorbar(image, label="counts / s")
        centre = result.section["mirror_centre_urad"]
        ax.plot([centre[0]], [centre[1]], "r+", ms=12)
        ax.set_xlabel("mirror offset x (urad)")
        ax.set_ylabel("mirror offset y (urad)")
        ax.set_title("quantum channel coupling around the beacon null")

    return {"boresight-coupling": draw}


def _plot_tracking(result: RoutineResult) -> dict[str, Any]:
    curves = result.measurements["sensitivity"]

    def draw(figure: Any) -> None:
        ax = figure.add_subplot(1, 1, 1)
        for axis, points in curves.items():
            f = [p["frequency_hz"] for p in points]
            ax.loglog(f, [p["magnitude"] for p in points], "o-", label=f"axis {axis}")
        ax.axhline(1 / math.sqrt(2), color="grey", lw=0.5, label="-3 dB")
        ax.set_xlabel("disturbance frequency (Hz)")
        ax.set_ylabel("|S| (rejection)")
        ax.set_title(f"closed-loop bandwidth {result.section['bandwidth_hz']:.3g} Hz")
        ax.legend(fontsize=7)

    return {"tracking-sensitivity": draw}
