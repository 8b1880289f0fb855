"""A pass with its instruments behind wire-level emulators (the SCPI laser controller and the
TCP time tagger, driven through the bench drivers over loopback sockets) gives the same key as
the in-process path for the same seed."""

from __future__ import annotations

import json
from pathlib import Path

from satqkd.cli import main

REPO = Path(__file__).resolve().parents[2]
CLEAR = REPO / "configs" / "scenarios" / "jinan1-xinglong-clear.yaml"


def _run(out: Path, instruments: str) -> dict:
    status = main(
        [
            "sim", "pass", str(CLEAR), "--seed", "5", "--out", str(out), "--quiet",
            "--start-after-aos-s", "190", "--max-duration-s", "60",
            "--instruments", instruments,
        ]
    )  # fmt: skip
    assert status == 0
    return json.loads((out / "report.json").read_text())


def test_emulated_instruments_give_the_in_process_key(tmp_path: Path) -> None:
    emulated = _run(tmp_path / "emulated", "emulator")
    in_process = _run(tmp_path / "in-process", "in-process")
    assert emulated["key"]["secret_key_bits"] > 0, emulated["key"]["abort_reason"]
    assert emulated["key"]["sha256_ogs"] == emulated["key"]["sha256_payload"]
    assert emulated["key"]["sha256_ogs"] == in_process["key"]["sha256_ogs"]
    assert emulated["quantum"] == in_process["quantum"]
