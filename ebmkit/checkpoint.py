"""Checkpoints: atomic, checksummed, and safe to load.

A checkpoint is a folder ``<run>/checkpoints/iter-00000500/`` holding

* ``<module>.safetensors`` -- weights and buffers (energy, initializer, ...),
* ``<name>.pt`` -- optimiser / scheduler states, loaded with
  ``torch.load(weights_only=True)`` so that nothing in them can run code,
* ``state.json`` -- iteration, config, RNG states of python and numpy, and a
  sha256 of every other file.  It is written last.

The folder is written under a temporary name, every file is fsync'ed, and only
then renamed into place, so a kill at any moment leaves either the complete
checkpoint or none (leftover temporary folders of dead processes are cleaned
up by :func:`recover_interrupted`).  A checkpoint whose files do not match
their checksums is reported and skipped in favour of the previous one.

Nothing read back can run code: weights and RNG states are safetensors,
metadata is JSON, and ``.pt`` files are refused unless
``torch.load(weights_only=True)`` accepts them (tensors and plain containers).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import random
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .errors import CheckpointError

STATE_FILE = "state.json"
PREFIX = "iter-"
FORMAT = 1
"""Version of the checkpoint layout, stored in state.json."""
_LEFTOVER = re.compile(r"^\.(?P<final>" + PREFIX + r"\d+)\.(?P<kind>tmp|old|trash)-(?P<pid>\d+)$")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_file(path: Path, data: bytes) -> str:
    """Write ``data``, fsync it, and return its sha256."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a kill at any moment leaves
    either the old file or the new one (temp file, fsync, rename)."""
    path = Path(path)
    for leftover in path.parent.glob(f".{path.name}.tmp-*"):  # from a writer that was killed
        if leftover.name != f".{path.name}.tmp-{os.getpid()}":
            leftover.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _write_file(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def capture_rng() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """RNG states of python, numpy (JSON) and torch CPU / CUDA (tensors)."""
    py = random.getstate()
    npk, npkeys, nppos, nphas, npcached = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [npk, npkeys.tolist(), int(nppos), int(nphas), float(npcached)],
    }
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    return meta, tensors


def restore_rng(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    if "python" in meta:
        v, state, gauss = meta["python"]
        random.setstate((v, tuple(state), gauss))
    if "numpy" in meta:
        k, keys, pos, has, cached = meta["numpy"]
        np.random.set_state((k, np.asarray(keys, dtype=np.uint32), pos, has, cached))
    if "torch_cpu" in tensors:
        torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _plain_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage: store private copies.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but not ours to signal
        return True
    return True


def recover_interrupted(directory: str | Path) -> list[str]:
    """Tidy up after a writer that was killed: delete its half-written
    temporary folders, and put back a checkpoint that was being replaced
    (``.iter-N.old-PID`` with no ``iter-N`` beside it).  Folders of live
    processes are left alone.  Returns what was done, one line per folder."""
    directory = Path(directory)
    done: list[str] = []
    if not directory.is_dir():
        return done
    for p in sorted(directory.iterdir()):
        m = _LEFTOVER.match(p.name)
        if not m or _pid_alive(int(m["pid"])):
            continue
        final = directory / m["final"]
        if m["kind"] == "old" and not final.exists():
            p.rename(final)
            done.append(f"restored {final.name} (its replacement was interrupted)")
        else:
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed {p.name} (left by an interrupted write)")
    return done


def save_checkpoint(
    directory: str | Path,
    iteration: int,
    *,
    modules: dict[str, dict[str, torch.Tensor]],
    objects: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    keep: int | None = None,
    rng: bool = True,
) -> Path:
    """Write ``directory/iter-XXXXXXXX`` atomically and return its path.

    ``modules``: name -> state dict (saved as safetensors).  ``objects``: name
    -> optimiser-like state dicts of tensors and plain values (torch.save,
    loaded back with weights_only=True).  ``state``: JSON-able metadata.
    ``keep``: delete all but the newest ``keep`` checkpoints afterwards.

    Any write error (a full disk, a read-only folder) raises
    :class:`CheckpointError`; earlier checkpoints are untouched by a failed write.
    """
    directory = Path(directory)
    final = directory / f"{PREFIX}{iteration:08d}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        recover_interrupted(directory)
    except OSError as exc:
        raise CheckpointError(f"cannot create checkpoint folder {directory}: {exc}{_disk_hint(exc)}") from None
    # Serialise in memory first: a failure to serialise is then never a
    # half-written file, and every byte on disk goes through one checked write.
    payload: dict[str, bytes] = {}
    for name, sd in modules.items():
        payload[f"{name}.safetensors"] = safetensors_bytes(_plain_state(sd))
    for name, obj in (objects or {}).items():
        buf = io.BytesIO()
        torch.save(obj, buf)
        payload[f"{name}.pt"] = buf.getvalue()
    meta = dict(state or {})
    meta["format"] = FORMAT
    meta["iteration"] = iteration
    if rng:
        rng_meta, rng_tensors = capture_rng()
        payload["rng.safetensors"] = safetensors_bytes(rng_tensors)
        meta["rng"] = rng_meta

    tmp = directory / f".{final.name}.tmp-{os.getpid()}"
    old = directory / f".{final.name}.old-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        meta["files"] = {fname: _write_file(tmp / fname, data) for fname, data in payload.items()}
        _write_file(tmp / STATE_FILE, json.dumps(meta, indent=1, default=str).encode())  # last: marks a complete folder
        _fsync_dir(tmp)
        if final.exists():  # re-saving an iteration: swap, so that one of the two is always complete
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        _fsync_dir(directory)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            old.rename(final)  # the swap failed half-way: put the previous copy back
        raise CheckpointError(
            f"could not write checkpoint {final}: {exc}{_disk_hint(exc)}; "
            f"earlier checkpoints are untouched: {_newest_name(directory)}"
        ) from None
    if keep:
        for stale in list_checkpoints(directory)[:-keep]:
            _delete(stale)
    return final


def _disk_hint(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return " (the disk is full or a size limit was reached)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return " (the folder is not writable)"
    return ""


def _newest_name(directory: Path) -> str:
    found = list_checkpoints(directory)
    return str(found[-1]) if found else "(none yet)"


def _delete(path: Path) -> None:
    """Remove a checkpoint folder; renamed first so that a kill half-way
    never leaves a half-deleted folder under a checkpoint's name."""
    trash = path.parent / f".{path.name}.trash-{os.getpid()}"
    try:
        path.rename(trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Complete-looking checkpoint folders, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX) :].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


@dataclass
class Checkpoint:
    """A verified checkpoint on disk."""

    path: Path
    state: dict[str, Any]

    @property
    def iteration(self) -> int:
        return int(self.state["iteration"])

    @property
    def config(self) -> dict[str, Any] | None:
        return self.state.get("config")

    def has(self, name: str) -> bool:
        return (self.path / f"{name}.safetensors").exists() or (self.path / f"{name}.pt").exists()

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        f = self.path / f"{name}.safetensors"
        if not f.exists():
            raise CheckpointError(f"checkpoint {self.path} has no '{name}' weights")
        try:
            return load_file(f)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{f} is not a readable safetensors file: {exc}") from None

    def object(self, name: str) -> Any:
        """A ``.pt`` state (optimiser, ...).  Read with ``weights_only=True``:
        anything but tensors and plain containers -- e.g. a pickle that would
        run code -- is refused."""
        f = self.path / f"{name}.pt"
        if not f.exists():
            raise CheckpointError(f"checkpoint {self.path} has no '{name}' state")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # torch's notes on pickle protocols
                return torch.load(f, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"refused to load {f}: it is not a plain state file of tensors and numbers "
                f"(torch.load(weights_only=True) rejected it: {_unpickling_reason(exc).rstrip('.')}). "
                "ebmkit never loads such files with code execution enabled"
            ) from None

    def restore_rng(self) -> None:
        if "rng" in self.state and (self.path / "rng.safetensors").exists():
            try:
                restore_rng(self.state["rng"], self.tensors("rng"))
            except (TypeError, ValueError, RuntimeError) as exc:
                raise CheckpointError(f"checkpoint {self.path}: its RNG state is malformed: {exc}") from None


def _unpickling_reason(exc: Exception) -> str:
    """The specific line of torch's weights-only error (e.g. 'Trying to load
    unsupported GLOBAL posix.system ...'), without its advice to turn the
    safety off."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if ln.strip()]
    skip = ("Weights only load failed", "Check the documentation", "Please file an issue")
    useful = [ln for ln in lines if not ln.startswith(skip) and ln != "WeightsUnpickler error:"]
    return useful[0] if useful else (lines[0] if lines else type(exc).__name__)


def open_checkpoint(path: str | Path, *, verify: bool = True) -> Checkpoint:
    """Open one checkpoint folder, checking that every file matches its checksum."""
    path = Path(path)
    sfile = path / STATE_FILE
    if not sfile.is_file():
        raise CheckpointError(f"{path} is not a checkpoint (no {STATE_FILE})")
    try:
        state = json.loads(sfile.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{sfile} is corrupt: {exc}") from None
    if not isinstance(state, dict) or not isinstance(state.get("iteration"), int) or not isinstance(state.get("files", {}), dict):
        raise CheckpointError(f"{sfile} is malformed: expected an object with an integer 'iteration' and a 'files' table")
    if any(Path(fname).name != fname for fname in state.get("files", {})):
        raise CheckpointError(f"{sfile} is malformed: file names must not contain folders")
    if verify:
        for fname, digest in state.get("files", {}).items():
            f = path / fname
            if not f.is_file():
                raise CheckpointError(f"checkpoint {path} is incomplete: {fname} is missing")
            if _sha256(f) != digest:
                raise CheckpointError(f"checkpoint {path} is corrupt: {fname} does not match its checksum")
    return Checkpoint(path, state)


def find_checkpoint(path: str | Path) -> Checkpoint:
    """Resolve a checkpoint folder, a ``checkpoints`` folder or a run folder
    to its newest *valid* checkpoint; corrupt ones are skipped with a warning.
    An exported model folder (``ebmkit export``) is one checkpoint; the name of
    a model shipped in the package (``digits``) means that model."""
    from . import pretrained

    path = pretrained.resolve(path)
    if (path / STATE_FILE).is_file():
        return open_checkpoint(path)
    for base in (path / "checkpoints", path):
        candidates = list_checkpoints(base)
        for cand in reversed(candidates):
            try:
                return open_checkpoint(cand)
            except CheckpointError as exc:
                warnings.warn(f"{exc}; falling back to the previous checkpoint", RuntimeWarning, stacklevel=2)
        if candidates:
            raise CheckpointError(f"no valid checkpoint under {base}: every one failed its checks")
    shipped = pretrained.names()
    raise CheckpointError(f"no checkpoint found at {path}" + (f" (and no shipped model of that name; shipped: "
                                                              f"{', '.join(shipped)})" if len(path.parts) == 1 and shipped else ""))


def run_folder(checkpoint_path: str | Path) -> Path:
    """Where a command's outputs for this model go by default: the run folder
    of ``RUN/checkpoints/iter-*``; an exported folder itself; for a model
    shipped in the package (read-only there), ``runs/<name>`` here."""
    from . import pretrained

    path = Path(checkpoint_path)
    shipped = pretrained.shipped_name(path)
    if shipped:
        return Path("runs") / shipped
    if path.parent.name == "checkpoints" and path.name.startswith(PREFIX):
        return path.parent.parent
    return path
