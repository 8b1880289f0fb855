"""A pass's recorded pulse pattern on disk: one entropy byte per pulse, mapped read-only.

In the `recorded` pattern mode (docs/security.md, Randomness) the payload draws every pulse's
byte from its entropy source when the plan is loaded and writes it, as drawn, to a record file
whose size is the pass's pulse count (44 GB for a 437 s pass at 1e8 pulses per second). The
sequencer maps that file with `numpy.memmap` (read-only, so a pass's detected pulses are read
at random without loading the record) and erases it when the pass ends.

Erasing. The bits are secrets. A record under `OVERWRITE_LIMIT_BYTES` is overwritten with
zeros (and synced) before it is unlinked; a larger one, tens of GB for a real pass, is only
unlinked: overwriting it would take minutes of disk bandwidth, and on a journaling or
copy-on-write file system or an SSD an overwrite does not reach the old blocks anyway. The
record directory belongs on an encrypted volume whose key the payload holds, or on a disk
that is itself erased (e.g. ATA secure erase) before it leaves the operator's control.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from satqkd_core.errors import InputError
from satqkd_runtime.keystore import erase_file

__all__ = ["OVERWRITE_LIMIT_BYTES", "RecordedPattern", "erase_record_file"]

#: records below this size are overwritten with zeros before they are unlinked
OVERWRITE_LIMIT_BYTES = 64 << 20


def erase_record_file(path: Path) -> None:
    """Control: delete a record file, overwriting it with zeros first when it is under
    `OVERWRITE_LIMIT_BYTES` (a larger one is only unlinked: see the module); no error if it is
    already gone."""
    erase_file(path, OVERWRITE_LIMIT_BYTES)


class RecordedPattern:
    """One pass's record file, mapped read-only: byte n is pulse n's record byte."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            raise InputError(f"pattern record {self.path} does not exist") from None
        if size == 0:
            raise InputError(f"pattern record {self.path} is empty")
        self._map: np.memmap | None = np.memmap(self.path, dtype=np.uint8, mode="r")

    @property
    def pulses(self) -> int:
        """Get: how many pulses the record holds (its size in bytes); 0 once erased."""
        return 0 if self._map is None else int(self._map.shape[0])

    def read(self, index: np.ndarray) -> np.ndarray:
        """Get: the record bytes of the pulses (int64 >= 0, validated by the caller), as a
        plain uint8 array; InputError naming an index beyond the record."""
        if self._map is None:
            raise InputError(f"pattern record {self.path} was erased")
        if index.size and int(index.max()) >= self._map.shape[0]:
            raise InputError(
                f"pulse index {int(index.max())} is beyond the pattern record "
                f"({self._map.shape[0]} pulses)"
            )
        return np.array(self._map[index], dtype=np.uint8)

    def erase(self) -> None:
        """Control: close the map and delete the file (overwritten first if small)."""
        if self._map is not None:
            mapping = getattr(self._map, "_mmap", None)
            self._map = None
            if mapping is not None:
                with contextlib.suppress(BufferError):  # a view still held: closed when freed
                    mapping.close()
        erase_record_file(self.path)
