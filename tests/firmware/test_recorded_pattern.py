"""Recorded pulse patterns: one entropy byte per pulse, mapped from a file (source.pattern:
recorded). The vectorised mapping against its per-pulse reference, the probabilities the mode
accepts, the record's life (mapped, read, deleted by forget) and the frequencies it gives."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_shims import recorded_pattern
from firmware_shims.source_sequencer import (
    RecordThresholds,
    SourceSequencer,
    record_thresholds,
    record_to_pattern,
    record_to_pattern_reference,
)
from satqkd_core.errors import InputError

MICIUS = (0.5, 0.25, 0.25)  # Liao et al. 2017; Jinan-1 flies the same


@st.composite
def thresholds(draw: st.DrawFn) -> RecordThresholds:
    """Any valid thresholds: 0 <= signal <= decoy <= 16, 0 <= basis_x <= 8."""
    low, high = sorted((draw(st.integers(0, 16)), draw(st.integers(0, 16))))
    return RecordThresholds(signal=low, decoy=high, basis_x=draw(st.integers(0, 8)))


@settings(max_examples=200, deadline=None)
@given(record=st.binary(max_size=300), cut=thresholds())
def test_mapping_matches_the_per_pulse_reference(record: bytes, cut: RecordThresholds) -> None:
    data = np.frombuffer(record, dtype=np.uint8)
    pattern = record_to_pattern(data, cut)
    basis, bit, intensity = record_to_pattern_reference(data, cut)
    np.testing.assert_array_equal(pattern.basis, basis)
    np.testing.assert_array_equal(pattern.bit, bit)
    np.testing.assert_array_equal(pattern.intensity, intensity)
    assert pattern.basis.dtype == pattern.bit.dtype == pattern.intensity.dtype == np.uint8


def test_the_layout_of_a_record_byte() -> None:
    """bit 0 key bit; bits 1..3 basis (X below 4 for 1/2); bits 4..7 intensity (signal below
    8, decoy below 12, else vacuum for 1/2, 1/4, 1/4)."""
    cut = record_thresholds(MICIUS, 0.5)
    assert cut == RecordThresholds(signal=8, decoy=12, basis_x=4)
    record = np.array([0b0000_0000, 0b0111_1110, 0b1000_1001, 0b1011_0110, 0b1100_0001],
                      dtype=np.uint8)  # fmt: skip
    pattern = record_to_pattern(record, cut)
    assert pattern.bit.tolist() == [0, 0, 1, 0, 1]
    assert pattern.basis.tolist() == [0, 1, 1, 0, 0]
    assert pattern.intensity.tolist() == [0, 0, 1, 1, 2]


@pytest.mark.parametrize(
    ("probabilities", "basis_x"),
    [((0.6, 0.2, 0.2), 0.5), ((0.5, 0.25, 0.25), 0.3), ((0.7, 0.2, 0.1), 0.9)],
)
def test_probabilities_off_the_byte_grid_are_refused_when_the_mode_is_set_up(
    probabilities: tuple[float, float, float], basis_x: float
) -> None:
    sequencer = SourceSequencer(None, probabilities, basis_x)  # expanded mode: any probability
    with pytest.raises(InputError, match=r"multiples of 1/16.*multiples of 1/8") as caught:
        sequencer.check_recorded_mode()
    assert str(list(probabilities)) in str(caught.value) and str(basis_x) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_eighths_and_sixteenths_are_accepted() -> None:
    assert record_thresholds((0.75, 0.1875, 0.0625), 0.875) == RecordThresholds(12, 15, 7)
    assert SourceSequencer(None, MICIUS, 0.5).check_recorded_mode() == RecordThresholds(8, 12, 4)


def test_a_recorded_pass_is_read_at_its_indices_and_forget_deletes_its_file(
    tmp_path: Path,
) -> None:
    record = os.urandom(100_000)
    path = tmp_path / "xinglong-3.pattern"
    path.write_bytes(record)
    sequencer = SourceSequencer(None, MICIUS, 0.5)
    sequencer.load_recorded_pass(3, path)
    assert sequencer.has_pass(3)
    with pytest.raises(InputError, match="already has a pattern"):
        sequencer.load_recorded_pass(3, path)
    with pytest.raises(InputError, match="already has a pattern"):
        sequencer.load_pass(3, bytes(32))
    index = np.array([99_999, 0, 17, 17, 50_000], dtype=np.int64)
    expected = record_to_pattern(
        np.frombuffer(record, np.uint8)[index], record_thresholds(MICIUS, 0.5)
    )
    sequencer.activate(3)
    for pattern in (sequencer.pattern_of(3, index), sequencer.pattern(index)):
        np.testing.assert_array_equal(pattern.basis, expected.basis)
        np.testing.assert_array_equal(pattern.bit, expected.bit)
        np.testing.assert_array_equal(pattern.intensity, expected.intensity)
    with pytest.raises(InputError, match=r"pulse index 100000 is beyond .*100000 pulses"):
        sequencer.pattern_of(3, np.array([5, 100_000]))
    with pytest.raises(InputError, match=">= 0"):
        sequencer.pattern_of(3, np.array([-1]))
    sequencer.forget(3)
    assert not path.exists() and not sequencer.has_pass(3)
    assert sequencer.active_plan is None
    with pytest.raises(InputError, match="plan 3"):
        sequencer.pattern_of(3, index)
    sequencer.forget(3)  # twice: nothing left to do


def test_loading_a_missing_or_empty_record_is_refused(tmp_path: Path) -> None:
    sequencer = SourceSequencer(None, MICIUS, 0.5)
    with pytest.raises(InputError, match="does not exist"):
        sequencer.load_recorded_pass(1, tmp_path / "none.pattern")
    (tmp_path / "empty.pattern").write_bytes(b"")
    with pytest.raises(InputError, match="is empty"):
        sequencer.load_recorded_pass(1, tmp_path / "empty.pattern")
    assert not sequencer.has_pass(1)
    refused = SourceSequencer(None, (0.6, 0.2, 0.2), 0.5)
    (tmp_path / "some.pattern").write_bytes(b"\x01")
    with pytest.raises(InputError, match="1/16"):
        refused.load_recorded_pass(1, tmp_path / "some.pattern")


def test_small_records_are_overwritten_before_they_are_unlinked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under 64 MiB the file is zeroed first; above, only unlinked (tens of GB: docstring)."""
    written: list[bytes] = []
    original_unlink = Path.unlink

    def spy_unlink(self: Path, missing_ok: bool = False) -> None:
        written.append(self.read_bytes())
        original_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", spy_unlink)
    small = tmp_path / "small.pattern"
    small.write_bytes(b"\xff" * 3_000_000)
    recorded_pattern.erase_record_file(small)
    assert written == [bytes(3_000_000)] and not small.exists()
    monkeypatch.setattr(recorded_pattern, "OVERWRITE_LIMIT_BYTES", 1000)
    large = tmp_path / "large.pattern"
    large.write_bytes(b"\xff" * 2000)
    recorded_pattern.erase_record_file(large)
    assert written[-1] == b"\xff" * 2000 and not large.exists()


def test_frequencies_follow_the_probabilities() -> None:
    """1e6 uniform bytes: each class within 5 sigma of its probability; bit and basis
    independent of the intensity class (the three fields are disjoint bits)."""
    n = 1_000_000
    data = np.frombuffer(np.random.default_rng(2024).bytes(n), dtype=np.uint8)
    for probabilities, basis_x in ((MICIUS, 0.5), ((0.75, 0.125, 0.125), 0.875)):
        pattern = record_to_pattern(data, record_thresholds(probabilities, basis_x))
        for label, p in enumerate(probabilities):
            share = np.mean(pattern.intensity == label)
            assert abs(share - p) < 5 * np.sqrt(p * (1 - p) / n), (label, share, p)
        x = np.mean(pattern.basis == 0)
        assert abs(x - basis_x) < 5 * np.sqrt(basis_x * (1 - basis_x) / n)
        assert abs(np.mean(pattern.bit) - 0.5) < 5 * np.sqrt(0.25 / n)
        signal = pattern.intensity == 0
        assert abs(np.mean(pattern.bit[signal]) - 0.5) < 5 * np.sqrt(0.25 / signal.sum())
