"""The example notebook (examples/pass-from-python.ipynb) runs top to bottom in a real
Jupyter kernel: `satqkd.run_pass` from a notebook's running event loop, DataFrames, plots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "examples" / "pass-from-python.ipynb"


@pytest.mark.slow  # a 20 s pass in a fresh kernel: run by .ci/run with -m slow
def test_example_notebook_runs_and_shows_a_key(tmp_path: Path, monkeypatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("SATQKD_REPO", str(REPO))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env={**os.environ, "SATQKD_REPO": str(REPO)})
    outputs = {
        k: cell.get("outputs", [])
        for k, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
    }
    first = outputs[1][0]["data"]["text/plain"]
    bits = int(first.strip("()").split(",")[0])
    assert bits > 0 and "None" in first  # a key, so no explanation
    printed = "".join(o.get("text", "") for o in outputs[4])
    assert "measured / expected sifted rate" in printed
    images = [o for cell in outputs.values() for o in cell if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the QBER and rate plots were drawn
