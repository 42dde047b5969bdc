"""Run the ``ebmkit`` command line with one fault injected (for test_faults.py).

    python tests/fault_driver.py [options] -- train CONFIG [--resume] ...

--kill-in NAME:K:J   SIGKILL this process at the J-th line executed in
                     ebmkit/checkpoint.py during the K-th call of its function
                     NAME, e.g. ``save_checkpoint:2:60`` (half-way through the
                     second checkpoint write) or ``_delete:1:4`` (an old
                     checkpoint renamed away but not yet deleted).
--kill-at-line N     SIGKILL at the N-th line executed in the training loop
                     (ebmkit/training/loop.py and ebmkit/run_state.py).
--count-to FILE      write, as JSON, the number of lines executed in
                     the training loop and, per call of save_checkpoint, in
                     checkpoint.py (to choose kill points).
--fsize-after-saves K:BYTES
                     once K checkpoints are written, cap the size of any file
                     this process writes at BYTES (RLIMIT_FSIZE, SIGXFSZ
                     ignored): later writes fail with EFBIG, as on a full disk.

The kill is a real SIGKILL of this process by itself: no handler, no flush,
no atexit -- what a user's ``kill -9`` or the OOM killer does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys

CHECKPOINT_PY = os.path.join("ebmkit", "checkpoint.py")
TRAINER_PY = (os.path.join("ebmkit", "training", "loop.py"), os.path.join("ebmkit", "run_state.py"))


class FaultTracer:
    """Counts executed lines of ebmkit's trainer and checkpoint code and
    injects the faults described above (``sys.settrace``; this thread only)."""

    def __init__(self, kill_in: tuple[str, int, int] | None = None, kill_at_line: int | None = None,
                 fsize_after_saves: tuple[int, int] | None = None) -> None:
        self.kill_in = kill_in
        self.kill_at_line = kill_at_line
        self.fsize_after, self.fsize_bytes = fsize_after_saves or (None, None)
        self.watch = {"save_checkpoint"} | ({kill_in[0]} if kill_in else set())
        self.trainer_lines = 0
        self.calls: dict[str, list[int]] = {name: [] for name in self.watch}  # lines executed per call
        self._active: list = []  # (frame, name) of watched calls in progress
        self._saves_done = 0

    def counts(self) -> dict:
        return {"trainer_lines": self.trainer_lines, "saves": list(self.calls["save_checkpoint"])}

    def _local(self, frame, event, arg):
        if event == "line":
            if frame.f_code.co_filename.endswith(TRAINER_PY):
                self.trainer_lines += 1
                if self.trainer_lines == self.kill_at_line:
                    _die()
            else:
                for _, name in self._active:
                    self.calls[name][-1] += 1
                    if self.kill_in and name == self.kill_in[0] and len(self.calls[name]) == self.kill_in[1] \
                            and self.calls[name][-1] == self.kill_in[2]:
                        _die()
        elif event == "return" and self._active and frame is self._active[-1][0]:
            _, name = self._active.pop()
            if name == "save_checkpoint":
                self._saves_done += 1
                if self._saves_done == self.fsize_after:
                    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                    resource.setrlimit(resource.RLIMIT_FSIZE, (self.fsize_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        return self._local

    def _global(self, frame, event, arg):
        filename = frame.f_code.co_filename
        if filename.endswith(CHECKPOINT_PY):
            name = frame.f_code.co_name
            if name in self.watch:
                self._active.append((frame, name))
                self.calls[name].append(0)
            return self._local
        if filename.endswith(TRAINER_PY):
            return self._local
        return None

    def __enter__(self) -> "FaultTracer":
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc) -> None:
        sys.settrace(None)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _ints(text: str | None) -> tuple[int, ...] | None:
    return tuple(int(v) for v in text.split(":")) if text else None


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--")
    p = argparse.ArgumentParser()
    p.add_argument("--kill-in")
    p.add_argument("--kill-at-line", type=int)
    p.add_argument("--count-to")
    p.add_argument("--fsize-after-saves")
    opts = p.parse_args(argv[:split])
    kill_in = None
    if opts.kill_in:
        name, k, j = opts.kill_in.split(":")
        kill_in = (name, int(k), int(j))
    tracer = FaultTracer(kill_in, opts.kill_at_line, _ints(opts.fsize_after_saves))
    try:
        with tracer:
            from ebmkit.cli import main as ebmkit_main

            return ebmkit_main(argv[split + 1 :])
    finally:
        if opts.count_to:
            with open(opts.count_to, "w") as f:
                json.dump(tracer.counts(), f)


if __name__ == "__main__":
    raise SystemExit(main())
