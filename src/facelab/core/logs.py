"""Logging setup and the metrics log every training run writes (CSV for scripts, TensorBoard for eyes)."""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path

from facelab.core.files import atomic_write_text, disk_errors
from facelab.core.tbevents import EventWriter

log = logging.getLogger("facelab")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")


class MetricsLog:
    """Appends ``step, name=value...`` rows to ``<dir>/<name>.csv`` and to TensorBoard events in ``<dir>/tb``.

    Resuming a run appends to the same CSV. A metric the file has no column for (a run resumed by a newer
    facelab that reports more) widens the header, the older rows left empty there, so no figure is dropped
    and a script still reads one table. A run resumed at ``resume_step`` first drops the CSV rows past it
    (logged after the save it resumes from), so the curve continues cleanly.

    ``enabled=False`` makes a log that writes nothing: what the other processes of a multi-process run
    keep, where the main process alone writes (their values are the same averages).
    """

    def __init__(self, log_dir: str | Path, name: str = "losses", resume_step: int | None = None,
                 enabled: bool = True):
        self.enabled = enabled
        self.dir = Path(log_dir)
        if not enabled:
            return
        self.csv_path = self.dir / f"{name}.csv"
        with disk_errors(self.dir / "tb"):
            self.dir.mkdir(parents=True, exist_ok=True)
            self._tb = EventWriter(self.dir / "tb")
        self._columns: list[str] | None = None
        if self.csv_path.exists() and self.csv_path.stat().st_size:
            with open(self.csv_path, newline="") as fh:
                self._columns = next(csv.reader(fh))[1:]
        if resume_step is not None:
            self.truncate_after(resume_step)

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in values.items()}
        with disk_errors(self.csv_path):
            if self._columns is None:
                self._columns = list(values)
                with open(self.csv_path, "w", newline="") as fh:
                    csv.writer(fh).writerow(["step", *self._columns])
            elif new := [k for k in values if k not in self._columns]:
                self._widen(new)
            with open(self.csv_path, "a", newline="") as fh:
                csv.writer(fh).writerow([step, *(values.get(c, math.nan) for c in self._columns)])
            self._tb.add_scalars(step, values)

    def _widen(self, new: list[str]) -> None:
        """Add columns to the header; the file is replaced atomically, the old rows padded with empty cells."""
        with open(self.csv_path, newline="") as fh:
            rows = list(csv.reader(fh))
        self._columns += new
        text = io.StringIO()
        csv.writer(text).writerows([["step", *self._columns]] + [r + [""] * len(new) for r in rows[1:]])
        atomic_write_text(self.csv_path, text.getvalue())

    def truncate_after(self, step: int) -> None:
        """Drop CSV rows past ``step`` (after resuming from an older save, the curve continues cleanly);
        the file is replaced atomically, so a kill meanwhile leaves the old rows, never a cut file."""
        if not self.csv_path.exists():
            return
        with open(self.csv_path, newline="") as fh:
            rows = list(csv.reader(fh))
        kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
        if len(kept) == len(rows):
            return
        text = io.StringIO()
        csv.writer(text).writerows(kept)
        atomic_write_text(self.csv_path, text.getvalue())

    def close(self) -> None:
        if not self.enabled:
            return
        with disk_errors(self.dir / "tb"):
            self._tb.close()
