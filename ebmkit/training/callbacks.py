"""Hooks into the training loop, and the CSV log they and the loop write.

A callback sees the trainer through its public members only (``iteration``,
``run_dir``, ``is_main``, ``config``, ``experiment``, the parts, ``sample``,
``data_batch``, ``unwrapped_energy``, ``device``): the anatomy diagnostics are
written this way, outside Algorithm 1.
"""

from __future__ import annotations

import csv
import io
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write
from ..errors import OutputError


class Callback:
    """Hooks into the training loop.  Subclass and override what you need;
    pass instances as ``Trainer(..., callbacks=[...])``.  Each hook gets the
    :class:`~ebmkit.training.loop.Trainer` (not named here: the loop imports
    this module, not the other way round)."""

    def on_train_start(self, trainer) -> None:
        pass

    def on_step_end(self, trainer, logs: dict[str, float]) -> None:
        """After iteration ``trainer.iteration`` (counted from 1) has finished."""

    def on_checkpoint(self, trainer, path: Path) -> None:
        pass

    def on_samples(self, trainer, images, path: Path | None) -> None:
        """After a sample grid of ``images`` was written to ``path`` (main process)."""

    def on_train_end(self, trainer) -> None:
        pass


class MetricsLog:
    """metrics.csv, one row per iteration; on resume, rows past the
    checkpoint are dropped so that the file reads as one run."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled
        self.fields: list[str] | None = None

    def truncate_after(self, iteration: int) -> None:
        if not (self.enabled and self.path.exists()):
            return
        text = self.path.read_text()
        if text and not text.endswith("\n"):  # a row cut short by a kill
            text = text[: text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = [r for r in reader if None not in r.values() and None not in r and int(r["iteration"]) <= iteration]
        self._rewrite(rows, list(reader.fieldnames) if reader.fieldnames else None)

    def _rewrite(self, rows: list[dict], fields: list[str] | None) -> None:
        self.fields = fields
        buf = io.StringIO(newline="")
        if fields:
            w = csv.DictWriter(buf, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
        with writing(self.path):
            atomic_write(self.path, buf.getvalue().encode())  # a kill mid-rewrite keeps the old file

    def append(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.fields is None and self.path.exists() and self.path.stat().st_size:
            with open(self.path, newline="") as f:
                self.fields = next(csv.reader(f), None)
        if self.fields is None or set(row) - set(self.fields):
            old = []
            if self.path.exists() and self.fields:
                with open(self.path, newline="") as f:
                    old = list(csv.DictReader(f))
            self._rewrite(old, list(self.fields or []) + [k for k in row if k not in (self.fields or [])])
        with writing(self.path), open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, restval="").writerow(row)


@contextmanager
def writing(path: Path):
    """Turn an OSError (a full disk, a read-only folder) into a clear OutputError."""
    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc}; is the disk full or the run folder read-only?") from None
