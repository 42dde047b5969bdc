"""Stopping a run on request without losing the iteration in progress.

SIGINT (Ctrl-C) or SIGTERM (a scheduler's, ``kill``'s) during training asks
the loop to stop: the current iteration finishes, a checkpoint of it is
written, and the run ends with :class:`Interrupted`, whose message says how to
resume; the command line exits with 128 + the signal (130 for SIGINT, 143 for
SIGTERM), as a shell expects of a process ended by that signal.

A second signal stops at once (:class:`StopNow`, a ``KeyboardInterrupt``):
nothing is lost that a kill would not lose, since checkpoints are written
atomically (docs/reliability.md).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from .errors import EbmkitError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(EbmkitError):
    """Training stopped on a signal after checkpointing the iteration it had reached."""

    def __init__(self, message: str, *, signum: int, iteration: int, checkpoint: Any = None) -> None:
        super().__init__(message)
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopNow(KeyboardInterrupt):
    """A second signal: stop immediately."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StopRequest:
    """While active (``with StopRequest() as stop:``), SIGINT and SIGTERM set
    ``stop.signum`` instead of ending the process; the loop polls
    ``stop.requested`` between iterations.  Outside the main thread (where
    Python cannot install handlers) it does nothing."""

    def __init__(self, *, announce: bool = True) -> None:
        self.signum: int | None = None
        self.announce = announce
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # the second one: now
            self._restore()
            raise StopNow(signum)
        self.signum = signum
        if self.announce:
            print(f"ebmkit: {signal_name(signum)} received: finishing this iteration and writing a checkpoint "
                  "(send it again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def __exit__(self, *exc: Any) -> None:
        self._restore()
