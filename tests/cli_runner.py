"""Run many command lines, each in its own process, cheaply (for test_user_errors.py).

    python tests/cli_runner.py CASES.json RESULTS.json

Importing torch costs seconds; a table of fifty bad inputs would spend
minutes on it.  This runner imports ebmkit's heavy modules once and then
forks one child per case: the child redirects its stdout / stderr to files,
runs the command's ``main(argv)`` and exits with its status, exactly as the
interpreter would -- including printing the traceback of an uncaught
exception.  Before and after each case the runner snapshots every file and
folder under ``watch`` (path and sha256), so a case that changed anything is
reported.

A case: ``{"id", "argv", "module": "ebmkit" | "benchmarks.run", "cwd", "env",
"sys_path", "watch", "hold_lock"}``; ``hold_lock`` names a run folder whose
lock this runner holds while the case runs (a live run in another process).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402,F401  the heavy imports, once (each child still builds its own registry)
import accelerate  # noqa: E402,F401
import torchvision.transforms.v2  # noqa: E402,F401
import ebmkit.cli  # noqa: E402
import ebmkit.experiment  # noqa: E402,F401
import ebmkit.generation.generator  # noqa: E402,F401
import ebmkit.training.loop  # noqa: E402,F401
import ebmkit_plugins.image_datasets  # noqa: E402,F401
import benchmarks.run  # noqa: E402,F401

TIMEOUT = 240


def snapshot(root: str | None) -> dict[str, str]:
    if not root or not os.path.exists(root):
        return {}
    out = {}
    for base, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(base, d), root) + "/"] = "dir"
        for f in files:
            p = os.path.join(base, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _child(case: dict, out: str, err: str) -> None:
    code = 1
    try:
        os.chdir(case.get("cwd") or os.getcwd())
        os.environ.update(case.get("env") or {})
        sys.path[:0] = case.get("sys_path") or []
        for fd, path in ((1, out), (2, err)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        module = case.get("module", "ebmkit")
        sys.argv = [module, *case["argv"]]
        if module == "benchmarks.run":
            from benchmarks.run import main
        else:
            from ebmkit.cli import main
        try:
            code = main(case["argv"])
        except SystemExit as exc:  # what the interpreter does with it
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # an uncaught exception: the interpreter prints its traceback
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def run_case(case: dict, scratch: Path) -> dict:
    from ebmkit.run_folder import RunLock

    out, err = scratch / f"{case['id']}.out", scratch / f"{case['id']}.err"
    lock = RunLock(case["hold_lock"]).acquire() if case.get("hold_lock") else None
    before = snapshot(case.get("watch"))
    sys.stdout.flush()
    sys.stderr.flush()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(case, str(out), str(err))
    deadline = time.monotonic() + TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = -1
            break
        time.sleep(0.02)
    rc = os.waitstatus_to_exitcode(status) if status != -1 else "timeout"
    after = snapshot(case.get("watch"))
    if lock is not None:
        lock.release()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return {"id": case["id"], "seconds": round(time.monotonic() - t0, 2), "rc": rc, "stdout": out.read_text(errors="replace"), "stderr": err.read_text(errors="replace"),
            "changed": changed}


def main() -> int:
    cases = json.loads(Path(sys.argv[1]).read_text())
    scratch = Path(sys.argv[2]).parent / "cli-runner-logs"
    scratch.mkdir(exist_ok=True)
    results = [run_case(case, scratch) for case in cases]
    Path(sys.argv[2]).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
