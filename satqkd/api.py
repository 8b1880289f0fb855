"""The Python API for notebooks and scripts: one simulated pass, synchronously, as a result
object with the report, the per-frame records and ATP samples as pandas DataFrames, the key
digests and plots.

    import satqkd
    result = satqkd.run_pass("configs/scenarios/jinan1-xinglong-clear.yaml", seed=7,
                             start_after_aos_s=190, max_duration_s=60)
    result.report["key"]["secret_key_bits"], result.frames.head(), result.plot("qber")

`satqkd sim pass` runs the same function (`execute_pass`) behind its command line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from satqkd.config import ConfigError, Scenario, load_scenario

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from satqkd.plots import PassData

#: what a simulated pass writes into its output directory (besides plots and their CSV)
RUN_OUTPUTS = ("report.json", "keys", "telemetry.jsonl", "frames.parquet", "atp.parquet")


@dataclass
class PassResult:
    """One simulated pass: `report` (the report.json dict), `frames` (one row per QKD frame)
    and `atp` (one row per station ATP sample) as DataFrames (columns in docs/report.md),
    `keys` (SHA-256 of the key each end stored, None where none), `out` (where it was
    written, None if nowhere) and plots."""

    scenario: Scenario | None
    report: dict[str, Any]
    frames: pd.DataFrame
    atp: pd.DataFrame
    keys: dict[str, str | None]
    out: Path | None = None
    culmination_after_aos_s: float | None = None
    _data: PassData | None = field(default=None, repr=False)

    @property
    def secret_key_bits(self) -> int:
        """Get: bits of final key both ends stored (0: none)."""
        return int(self.report["key"]["secret_key_bits"])

    @property
    def no_key_explanation(self) -> str | None:
        """Get: why there is no key and what to try next, in plain words (None with a key)."""
        from satqkd.report import explain_no_key

        return explain_no_key(self.report, self.culmination_after_aos_s)

    def plot_data(self) -> PassData:
        """Get: what the plots are drawn from (built once)."""
        if self._data is None:
            from satqkd.plots import PassData

            self._data = PassData(self.report, self.frames, self.atp, self.scenario)
        return self._data

    @staticmethod
    def plot_names() -> list[str]:
        """Get: the names `plot` accepts (the PNG stems a pass writes)."""
        from satqkd.plots import all_plots

        return list(all_plots())

    def plot(self, name: str) -> Figure:
        """Get: one plot of the pass as a matplotlib Figure (`plot_names()` lists them)."""
        from satqkd.plots import all_plots

        plots = all_plots()
        if name not in plots:
            raise ValueError(f"no plot {name!r}; one of {', '.join(plots)}")
        figure, _ = plots[name](self.plot_data())
        import matplotlib.pyplot as plt

        plt.close(figure)  # returned, not left open: a notebook shows it once
        return figure

    def plot_table(self, name: str) -> pd.DataFrame:
        """Get: the data one plot is drawn from (what NAME.csv holds)."""
        from satqkd.plots import all_plots

        plots = all_plots()
        if name not in plots:
            raise ValueError(f"no plot {name!r}; one of {', '.join(plots)}")
        figure, table = plots[name](self.plot_data())
        import matplotlib.pyplot as plt

        plt.close(figure)
        return table

    def save_plots(self, out_dir: str | Path) -> list[Path]:
        """Control: write every plot as PNG with its CSV into `out_dir`."""
        from satqkd.plots import write_plots

        directory = Path(out_dir)
        directory.mkdir(parents=True, exist_ok=True)
        return write_plots(self.plot_data(), directory)


def with_start_after_aos(scenario: Scenario, start_after_aos_s: float | None) -> Scenario:
    """Get: the scenario with QKD starting no earlier than `start_after_aos_s` after AOS."""
    if start_after_aos_s is None:
        return scenario
    if not start_after_aos_s >= 0:
        raise ConfigError(f"start_after_aos_s must not be negative, got {start_after_aos_s!r}")
    sc = scenario.scenario
    simulation = sc.simulation.model_copy(update={"qkd_start_after_aos_s": start_after_aos_s})
    return scenario.model_copy(
        update={"scenario": sc.model_copy(update={"simulation": simulation})}
    )


def earlier_run_outputs(out_dir: Path) -> list[str]:
    """Get: what an earlier pass left in `out_dir` (empty: the directory is fit for a run)."""
    return [name for name in RUN_OUTPUTS if (out_dir / name).exists()]


def clear_earlier_run(out_dir: Path) -> list[str]:
    """Control: remove what an earlier pass wrote in `out_dir` (its keys erased first, as
    the key store erases a secret; its plots and their CSV too); return what was removed."""
    import shutil

    from satqkd.plots import all_plots
    from satqkd_runtime.keystore import erase_file

    removed = earlier_run_outputs(out_dir)
    keys = out_dir / "keys"
    if keys.is_dir() and not keys.is_symlink():
        for path in sorted(keys.rglob("*")):
            if path.is_file() and not path.is_symlink():
                erase_file(path, 1 << 20)
        shutil.rmtree(keys)
    elif keys.is_symlink():
        keys.unlink()
    names = [n for n in RUN_OUTPUTS if n != "keys"]
    names += [f"{stem}.{ext}" for stem in all_plots() for ext in ("png", "csv")]
    names += ["frames.csv", "atp.csv"]
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (out_dir / name).unlink()
    return removed


def execute_pass(
    scenario: Scenario,
    out_dir: Path,
    *,
    broker_url: str | None = None,
    progress: Callable[[float, str], None] | None = None,
    max_duration_s: float | None = None,
    instruments: str | None = None,
    csv: bool = False,
    plots: bool = True,
) -> PassResult:
    """Run one simulated pass into `out_dir` (which must hold no earlier run) and write its
    report, telemetry, archives (Parquet, and CSV with `csv`) and plots. Raises
    SimulationError / AssemblyError / ConfigError as `satqkd.simulation.run_pass` does."""
    from satqkd.archives import atp_table, frames_table, pass_timeline, write_archives
    from satqkd.plots import PassData
    from satqkd.report import write_report, write_telemetry
    from satqkd.simulation import run_pass as run_simulated_pass

    run = _run_sync(
        lambda: run_simulated_pass(
            scenario, out_dir, broker_url, progress, max_duration_s, instruments
        )
    )
    write_report(run.report, out_dir)
    write_telemetry(run, out_dir)
    frames, atp = frames_table(run), atp_table(run)
    write_archives(out_dir, frames, atp, csv=csv)
    window = run.physics.window
    result = PassResult(
        scenario=scenario,
        report=run.report,
        frames=frames,
        atp=atp,
        keys={
            "payload": run.report["key"]["sha256_payload"],
            "ogs": run.report["key"]["sha256_ogs"],
        },
        out=out_dir,
        culmination_after_aos_s=window.culmination_unix_s - window.aos_unix_s,
    )
    # the whole pass's truth from the pass the simulation chose (not searched for again)
    timeline = pass_timeline(scenario, run.physics.tle, window, step_s=1.0)
    result._data = PassData(result.report, frames, atp, scenario, timeline)
    if plots:
        result.save_plots(out_dir)
    return result


def run_pass(
    scenario: str | Path | Scenario,
    *,
    seed: int | None = None,
    start_after_aos_s: float | None = None,
    max_duration_s: float | None = None,
    out: str | Path | None = None,
    instruments: str | None = None,
    csv: bool = False,
    plots: bool = False,
) -> PassResult:
    """Run one simulated pass and return its result (synchronous; works inside a notebook's
    running event loop too).

    `scenario`: a scenario YAML path or a loaded `Scenario`; `seed` replaces its seed;
    `start_after_aos_s` starts QKD no earlier than that after AOS; `max_duration_s` caps the
    QKD time; `out`: a new or empty directory to write report.json, telemetry, archives and
    keys into (with `plots`, the plots too; `csv`, the archives as CSV), or None to keep
    nothing on disk (the keys are erased when the pass has been read)."""
    if isinstance(scenario, Scenario):
        loaded = scenario
        if seed is not None:
            data = {**loaded.scenario.model_dump(exclude_unset=True), "seed": seed}
            from satqkd.config import ScenarioConfig, validate_model

            sc = validate_model(ScenarioConfig, data, f"{loaded.path} (with seed)")
            loaded = loaded.model_copy(update={"scenario": sc})
    else:
        loaded = load_scenario(scenario, seed=seed)
    loaded = with_start_after_aos(loaded, start_after_aos_s)
    if max_duration_s is not None and not max_duration_s > 0:
        raise ConfigError(f"max_duration_s must be positive, got {max_duration_s!r}")
    if out is not None:
        out_dir = Path(out)
        earlier = earlier_run_outputs(out_dir)
        if earlier:
            raise ConfigError(f"out {out_dir}: already holds an earlier run ({', '.join(earlier)})")
        out_dir.mkdir(parents=True, exist_ok=True)
        return execute_pass(
            loaded, out_dir, max_duration_s=max_duration_s, instruments=instruments, csv=csv,
            plots=plots,
        )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="satqkd-pass-") as scratch:
        result = execute_pass(
            loaded, Path(scratch), max_duration_s=max_duration_s, instruments=instruments,
            plots=False,
        )  # fmt: skip
        clear_earlier_run(Path(scratch))
    result.out = None
    return result


def load_pass(out: str | Path, scenario: str | Path | Scenario | None = None) -> PassResult:
    """Get: a pass written earlier (its report.json and archives in `out`) as a PassResult;
    the plots of the link model (sky track, link budget, rate against elevation) need its
    `scenario` (a path or a loaded one)."""
    import json

    from satqkd.archives import read_archives

    out_dir = Path(out)
    report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    frames, atp = read_archives(out_dir)
    loaded = load_scenario(scenario) if isinstance(scenario, (str, Path)) else scenario
    key = report["key"]
    return PassResult(
        scenario=loaded,  # type: ignore[arg-type]
        report=report,
        frames=frames,
        atp=atp,
        keys={"payload": key["sha256_payload"], "ogs": key["sha256_ogs"]},
        out=out_dir,
    )


def _run_sync(make: Callable[[], Any]) -> Any:
    """Run a coroutine to its end from synchronous code, in this thread, or in a worker
    thread when this thread already runs an event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()
