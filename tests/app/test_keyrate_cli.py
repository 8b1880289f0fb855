"""Tests for satqkd.keyrate_cli: `satqkd keyrate estimate FILE.json`."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from satqkd.cli import main
from satqkd.keyrate_cli import run_keyrate_estimate

REQUEST = {
    "intensities": [0.8, 0.1, 0.0],
    "probabilities": [0.5, 0.25, 0.25],
    "x": {"detections": [5181901, 351981, 32000], "errors": [83180, 19200, 16000]},
    "z": {"detections": [323869, 21999, 2000], "errors": [5199, 1200, 1000]},
    "eps_sec": 1e-9,
    "eps_cor": 1e-15,
    "leak_ec_bits": 958823,
    "bounds": "hoeffding",
}


def _write(tmp_path, content, name="request.json"):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def _single_error_line(capsys):
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("satqkd keyrate estimate: ")
    assert "Traceback" not in captured.err
    return lines[0]


def test_prints_the_result_object(tmp_path, capsys):
    assert run_keyrate_estimate(_write(tmp_path, REQUEST)) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    out = json.loads(captured.out)
    for key in ("s_x0", "s_x1", "s_z1", "v_z1", "phi_x", "key_length_bits", "bounds"):
        assert key in out
    # The same block as the known-answer case of tests/core/test_finite_key.py.
    assert out["key_length_bits"] == 539622
    assert out["bounds"] == "hoeffding"
    assert out["phi_x"] == pytest.approx(0.07406198437, rel=1e-9)
    assert out["n_x"] == 5181901 + 351981 + 32000
    assert out["qber_z"] == pytest.approx((5199 + 1200 + 1000) / (323869 + 21999 + 2000))


def test_no_key_is_a_successful_estimate(tmp_path, capsys):
    request = copy.deepcopy(REQUEST)
    request["leak_ec_bits"] = 10**9
    assert run_keyrate_estimate(_write(tmp_path, request)) == 0
    assert json.loads(capsys.readouterr().out)["key_length_bits"] == 0


def test_missing_file(tmp_path, capsys):
    assert run_keyrate_estimate(str(tmp_path / "absent.json")) == 2
    assert "absent.json: no such file" in _single_error_line(capsys)


def test_directory_instead_of_file(tmp_path, capsys):
    assert run_keyrate_estimate(str(tmp_path)) == 2
    assert "is a directory" in _single_error_line(capsys)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "invalid JSON at line 1 column 2"),
        ("", "invalid JSON at line 1 column 1"),
        ('{"eps_sec": NaN}', "invalid JSON constant NaN"),
        ("[1, 2]", "request: must be a JSON object, got list"),
    ],
)
def test_bad_json(tmp_path, capsys, content, fragment):
    assert run_keyrate_estimate(_write(tmp_path, content)) == 2
    assert fragment in _single_error_line(capsys)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda r: r["x"]["detections"].__setitem__(1, -3),
         "x.detections[1]: must be a non-negative integer, got -3"),
        (lambda r: r.__setitem__("intensities", [0.1, 0.2, 0.0]),
         "intensities: need mu_1 > mu_2 + mu_3 >= 0, got [0.1, 0.2, 0.0]"),
        (lambda r: r.__setitem__("probabilities", [0.5, 0.3, 0.1]),
         "probabilities: must sum to 1 (got 0.9)"),
        (lambda r: r.pop("eps_sec"), "missing field: eps_sec"),
        (lambda r: r["z"].pop("errors"), "missing field: z.errors"),
        (lambda r: r.__setitem__("bounds", "gaussian"), "bounds: must be one of"),
    ],
)  # fmt: skip
def test_bad_fields_exit_2_with_one_line_naming_the_field(tmp_path, capsys, mutate, fragment):
    request = copy.deepcopy(REQUEST)
    mutate(request)
    assert run_keyrate_estimate(_write(tmp_path, request)) == 2
    line = _single_error_line(capsys)
    assert fragment in line


REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "configs" / "keyrate" / "jinan1-clear-pass.json"


def test_shipped_example_gives_the_key_of_its_pass(capsys):
    # The counts of the seed-7 clear Jinan-1 pass (docs/keyrate.md), through the command line.
    assert main(["keyrate", "estimate", str(EXAMPLE)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    out = json.loads(captured.out)
    assert out["key_length_bits"] > 0
    # What that pass itself extracted from these counts and this leak.
    assert out["key_length_bits"] == 382097
    assert out["n_x"] == 2244834 + 140757 + 676
    assert out["bounds"] == "hoeffding"


def test_docs_show_the_shipped_example():
    text = (REPO / "docs" / "keyrate.md").read_text(encoding="utf-8")
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.DOTALL)]
    assert json.loads(EXAMPLE.read_text(encoding="utf-8")) in blocks
