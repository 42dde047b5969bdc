"""Who may write a run folder, and when.

A run folder (``output.dir``) holds one run: ``config.json``, ``metrics.csv``,
``checkpoints/``, ``samples/``, ``events.jsonl``.  Three rules keep it from
ever mixing two runs or losing one:

* **One writer.**  A live run holds ``RUN/.lock``: a file locked with
  ``fcntl.flock`` for as long as the process lives, holding JSON
  ``{"pid", "host", "started", "command"}`` so that a refusal can say who has
  it.  The kernel drops the lock when the process dies, however it dies, so a
  lock file left by a killed run is recognised as stale, reported, and taken
  over.  (In a data-parallel run only the main process holds it.)
* **No silent reuse.**  A folder that already holds a run is written into
  only with ``--resume`` (continue it) or ``--overwrite`` (move it aside to a
  timestamped sibling, ``RUN.old-YYYYMMDD-HHMMSS``, and start afresh); never
  deleted.
* **Checks first.**  :func:`check_target` only reads, so the CLI calls it
  before loading data; :func:`claim` (lock, re-check, move aside) is called
  once everything else has been validated, right before the first write.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import _pid_alive  # the same liveness test as interrupted checkpoint writes
from .errors import CheckpointError, OutputError

LOCK_FILE = ".lock"
RUN_MARKERS = ("config.json", "metrics.csv", "checkpoints", "samples", "events.jsonl")
"""Entries whose presence means a folder holds a run."""
QUARANTINE = "diverged"
"""Sub-folder of ``checkpoints/`` where the divergence guard sets failed weights aside."""


class RunFolderError(OutputError):
    """The run folder is taken, holds another run, or cannot be claimed."""


# -- what a folder holds ------------------------------------------------------------------


def holds_run(run_dir: str | Path) -> bool:
    """True when ``run_dir`` holds (part of) a run."""
    run_dir = Path(run_dir)
    return run_dir.is_dir() and any((run_dir / m).exists() for m in RUN_MARKERS)


def _iteration_of(name: str) -> int | None:
    digits = name.removeprefix("iter-")
    return int(digits) if name.startswith("iter-") and digits.isdigit() else None


def _metrics_rows(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return max(0, sum(1 for line in f if line.strip()) - 1)
    except OSError:
        return 0


def describe_run(run_dir: str | Path) -> str:
    """What the folder holds, in a few words: 'checkpoints up to iteration 12,
    metrics.csv with 12 rows'."""
    run_dir = Path(run_dir)
    parts = []
    its = sorted(i for p in (run_dir / "checkpoints").glob("iter-*") if (i := _iteration_of(p.name)) is not None)
    if its:
        parts.append(f"checkpoints up to iteration {its[-1]}")
    aside = quarantined(run_dir)
    if aside:
        parts.append(f"{len(aside)} checkpoint(s) set aside after a divergence")
    if (run_dir / "metrics.csv").is_file():
        rows = _metrics_rows(run_dir / "metrics.csv")
        parts.append(f"metrics.csv with {rows} row{'' if rows == 1 else 's'}")
    parts += [name for name in ("config.json", "samples", "events.jsonl") if (run_dir / name).exists()]
    return ", ".join(parts) or "nothing"


def quarantined(run_dir: str | Path) -> list[Path]:
    """Checkpoints the divergence guard set aside, oldest first."""
    found = [p for p in (Path(run_dir) / "checkpoints" / QUARANTINE).glob("iter-*") if _iteration_of(p.name) is not None]
    return sorted(found, key=lambda p: _iteration_of(p.name))


def _last_divergence(run_dir: Path) -> dict[str, Any] | None:
    try:
        lines = (run_dir / "events.jsonl").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in reversed(lines):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("event") == "divergence":
            return event
    return None


def quarantine_note(run_dir: str | Path, newer_than: int = -1) -> str:
    """A sentence naming the checkpoints set aside after a divergence (newer
    than iteration ``newer_than``) and how to continue from one; '' if none."""
    run_dir = Path(run_dir)
    aside = [p for p in quarantined(run_dir) if _iteration_of(p.name) > newer_than]
    if not aside:
        return ""
    newest = aside[-1]
    event = _last_divergence(run_dir)
    why = (f" when training diverged at iteration {event['iteration']} ({event.get('reason', 'see events.jsonl')})"
           if event and event.get("iteration") is not None else " after a divergence")
    names = ", ".join(p.name for p in aside)
    return (f"{run_dir / 'checkpoints' / QUARANTINE} holds {names}, set aside{why}: its weights led to the blow-up. "
            f"To continue from it anyway, move it back (mv {newest} {run_dir / 'checkpoints'}/), change the "
            f"config (e.g. a smaller sampler.step_size or optimizer.lr) and run with --resume again")


# -- read-only checks (before any data is loaded) ------------------------------------------


def check_target(run_dir: str | Path, *, resume: bool, overwrite: bool, checkpoint: bool = True):
    """Refuse, without writing anything, a run folder this command may not use:
    one that holds a run (without ``resume`` / ``overwrite``), one with nothing
    to resume, or one another process is training into.  With ``resume`` (and
    ``checkpoint``) returns the checkpoint the run would continue from."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other: --resume continues the run in "
                             f"{run_dir}, --overwrite moves it aside and starts a new one")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} is a file, not a folder; give --out a folder")
    owner = RunLock(run_dir).holder()
    if owner is not None:
        raise RunFolderError(f"{run_dir} is in use by another run: {owner.describe()}; wait for it to finish, "
                             "or train into another folder with --out")
    if resume:
        return resumable_checkpoint(run_dir) if checkpoint else None
    if not overwrite and holds_run(run_dir):
        raise refusal(run_dir)
    return None


def refusal(run_dir: Path) -> RunFolderError:
    return RunFolderError(
        f"{run_dir} already holds a run ({describe_run(run_dir)}); nothing was written. Continue it with --resume, "
        f"train into another folder with --out, or start afresh with --overwrite (the old run is moved to "
        f"{run_dir.name}.old-<date>-<time> beside it, not deleted)"
    )


def resumable_checkpoint(run_dir: str | Path):
    """The checkpoint ``--resume`` would continue from (read-only: nothing is
    tidied or repaired here).  No valid checkpoint is an error that says what
    the folder holds, and names checkpoints set aside after a divergence."""
    from .checkpoint import find_checkpoint, list_checkpoints

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"--resume: there is no run to resume at {run_dir} (the folder does not exist); "
                              "leave out --resume to start a new run")
    if not list_checkpoints(run_dir / "checkpoints"):
        note = quarantine_note(run_dir)
        found = describe_run(run_dir)
        raise CheckpointError(
            f"--resume: no checkpoint to resume in {run_dir / 'checkpoints'} (the folder holds {found}). "
            + (note + "; or start afresh with --overwrite" if note else
               "Start afresh with --overwrite (moves this run aside) instead of --resume, or in another folder with --out")
        )
    return find_checkpoint(run_dir)  # corrupt ones are skipped with a warning; all corrupt is an error


# -- the lock -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LockInfo:
    pid: int | None
    host: str
    started: str
    command: str = ""

    def describe(self) -> str:
        who = f"process {self.pid} on {self.host}" if self.pid is not None else "an unknown process"
        return who + (f", started {self.started}" if self.started else "") + (f" ({self.command})" if self.command else "")

    @classmethod
    def parse(cls, text: str) -> "LockInfo | None":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        pid = data.get("pid")
        return cls(pid if isinstance(pid, int) else None, str(data.get("host", "?")), str(data.get("started", "")),
                   str(data.get("command", "")))


class RunLock:
    """``RUN/.lock``, held with ``flock`` while the run lives.

    ``acquire`` refuses a lock held by a live process (naming it), and takes
    over, with a warning, one left by a process that is gone.  A lock naming
    another host is refused too: whether that process lives cannot be told
    from here (remove the file by hand if it does not)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> LockInfo | None:
        """Who holds the lock now (None: nobody alive).  Read-only."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return LockInfo.parse(_read(fd)) or LockInfo(None, "?", "")
            fcntl.flock(fd, fcntl.LOCK_UN)
            info = LockInfo.parse(_read(fd))
            if info is not None and info.host != socket.gethostname():
                return info  # another machine's lock: cannot be checked from here
            return None
        finally:
            os.close(fd)

    def acquire(self) -> "RunLock":
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunFolderError(f"cannot create run folder {self.run_dir}: {exc}") from None
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise RunFolderError(f"cannot write {self.path}: {exc}; is the disk full or the run folder read-only?") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = LockInfo.parse(_read(fd))
                os.close(fd)
                raise RunFolderError(
                    f"{self.run_dir} is in use by another run: {info.describe() if info else 'a process that is starting'}; "
                    "wait for it to finish, or train into another folder with --out") from None
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
                    os.close(fd)
                    raise
                # a filesystem without locks: the pid + host check below is all there is
            # A releasing owner unlinks the file before unlocking: make sure the file we
            # locked is still the one at the path, else try again with the new one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover - a storm of competing runs
            raise RunFolderError(f"could not lock {self.path}: other processes keep replacing it")
        previous = LockInfo.parse(_read(fd))
        host = socket.gethostname()
        if previous is not None and previous.host != host:
            os.close(fd)
            raise RunFolderError(
                f"{self.run_dir} is locked by {previous.describe()}; whether that run is alive cannot be told from "
                f"{host}. If it is not, delete {self.path} and try again")
        if previous is not None and previous.pid != os.getpid():
            state = "is no longer running" if previous.pid is None or not _pid_alive(previous.pid) else "no longer holds it"
            warnings.warn(f"{self.path} was left by {previous.describe()}, which {state} (killed?); taking the run "
                          "folder over", RuntimeWarning, stacklevel=2)
        record = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and unlock (in that order: see ``acquire``)."""
        if self._fd is None:
            return
        try:
            if os.path.samestat(os.fstat(self._fd), os.stat(self.path)):
                self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        return ""


# -- claiming the folder (the first write) -----------------------------------------------


def aside_name(run_dir: Path) -> Path:
    """``RUN.old-YYYYMMDD-HHMMSS`` beside the run (``-2``, ``-3``... if taken)."""
    base = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    target, n = base, 1
    while target.exists():
        n += 1
        target = base.with_name(f"{base.name}-{n}")
    return target


def claim(run_dir: str | Path, *, resume: bool, overwrite: bool) -> RunLock:
    """Lock ``run_dir`` for this run and make it ready for the first write.

    Re-checks under the lock what :func:`check_target` checked before (another
    run may have started or finished in between); with ``overwrite`` moves an
    existing run aside to a timestamped sibling.  Returns the held lock; the
    caller releases it when the run ends."""
    import logging

    run_dir = Path(run_dir)
    lock = RunLock(run_dir).acquire()
    try:
        if resume or not holds_run(run_dir):
            return lock
        if not overwrite:
            raise refusal(run_dir)
        target = aside_name(run_dir)
        try:
            os.rename(run_dir, target)
        except OSError as exc:
            raise RunFolderError(f"--overwrite: cannot move the old run {run_dir} aside to {target}: {exc}") from None
    except BaseException:
        lock.release()
        raise
    # The old lock file moved with the folder: drop it there, then lock the new, empty folder.
    lock.path = target / LOCK_FILE
    lock.release()
    logging.getLogger("ebmkit").info("--overwrite: moved the previous run in %s to %s", run_dir, target)
    return RunLock(run_dir).acquire()
