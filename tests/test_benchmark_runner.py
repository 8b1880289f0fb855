"""`python -m benchmarks --repeat N`: each figure is the median of its N runs, with its params."""

from __future__ import annotations

import pytest

from benchmarks.__main__ import main, median_figures


def _figure(name: str, value: float, run: int) -> dict:
    return {"name": name, "value": value, "unit": "bit/s", "params": {"run": run}}


def test_each_figure_is_the_run_with_the_median_value_and_keeps_that_runs_params() -> None:
    runs = [
        [_figure("a_per_s", 5.0, 1), _figure("b_per_s", 1.0, 1)],
        [_figure("a_per_s", 3.0, 2), _figure("b_per_s", 9.0, 2)],
        [_figure("a_per_s", 4.0, 3), _figure("b_per_s", 2.0, 3)],
    ]
    merged = median_figures(runs)
    assert [f["value"] for f in merged] == [4.0, 2.0]
    assert [f["params"]["run"] for f in merged] == [3, 3]
    assert merged[0]["params"]["repeat_values"] == [5.0, 3.0, 4.0]
    assert merged[1]["params"]["repeat_values"] == [1.0, 9.0, 2.0]


def test_an_even_count_takes_the_lower_middle_value_that_was_measured() -> None:
    runs = [[_figure("a_per_s", v, i)] for i, v in enumerate((8.0, 2.0, 6.0, 4.0))]
    (figure,) = median_figures(runs)
    assert figure["value"] == 4.0  # not 5.0, which no run measured
    assert figure["params"]["run"] == 3


def test_one_run_is_returned_as_it_is() -> None:
    run = [_figure("a_per_s", 5.0, 1)]
    assert median_figures([run]) == run


def test_runs_that_disagree_on_the_figures_are_refused() -> None:
    runs = [[_figure("a_per_s", 5.0, 1)], [_figure("c_per_s", 5.0, 2)]]
    with pytest.raises(ValueError, match="run 2 gave other figures"):
        median_figures(runs)


def test_a_repeat_below_one_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--repeat", "0", "--only", "no-such-module"])
    assert stopped.value.code == 2
    assert "--repeat must be at least 1" in capsys.readouterr().err
