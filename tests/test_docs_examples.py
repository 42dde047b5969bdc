"""Every code block of README.md and docs/*.md that is meant to run, runs.

One test per document.  Its blocks run in order, in one fresh folder, with
``EBMKIT_DOCS_ITERATIONS`` set so that every training run stops after a few
iterations (the config loader caps ``training.iterations``; reconstruction
caps its optimiser steps).  What each kind of block does here:

* ``python``: executed; the blocks of one document share one namespace, as
  in a notebook.  ``for ... in range(N)`` loops are cut to the same cap.
* ``bash``: each command runs; ``ebmkit ...`` in this process (through
  ``ebmkit.cli.main``, so a failure shows its traceback), anything else in
  ``bash``.  A command that exits non-zero fails the test.  Under the cap, a
  checkpoint folder ``checkpoints/iter-XXXXXXXX`` named in a command means the
  newest one of that run.
* ``toml``: parsed; a config (or a fragment of one) is validated on top of a
  small base config, so a misspelt field fails; ``[project...]`` tables
  (pyproject.toml) are only parsed.

Markers, each an HTML comment on the line before a block (invisible on the
rendered page):

* ``<!-- no-test: why -->`` -- not run (installs, GPUs and clusters,
  benchmarks that take minutes, fragments of your own code);
* ``<!-- file: path -->`` -- written to ``path`` before the document's blocks
  run, and not run itself (a plug-in module, a config the page uses).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CAP = 2
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*(?P<kind>no-test|file)\s*:?\s*(?P<arg>.*?)\s*-->\s*$")


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    body: str
    skip: str | None = None  # the no-test reason
    file: str | None = None

    def __str__(self) -> str:
        return f"{self.doc}:{self.line} ({self.lang})"


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        block = Block(path.name, text[: m.start()].count("\n") + 1, m.group("lang"), m.group("body"))
        if marker and marker.group("kind") == "no-test":
            block.skip = marker.group("arg") or "marked no-test"
        elif marker:
            block.file = marker.group("arg")
        out.append(block)
    return out


def runnable(block: Block) -> bool:
    return block.skip is None and block.file is None and block.lang in ("python", "bash", "toml")


def executed_blocks() -> list[Block]:
    """What this test runs (listed by ``python tests/test_docs_examples.py``)."""
    return [b for doc in DOCS for b in blocks(doc) if runnable(b)]


# -- one kind of block each -----------------------------------------------------------------------------


def run_python(block: Block, namespace: dict) -> None:
    code = re.sub(r"(for\s+\w+\s+in\s+range\()(\d+)\)", lambda m: f"{m.group(1)}{min(int(m.group(2)), CAP)})", block.body)
    exec(compile(code, str(block), "exec"), namespace)


def commands(body: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", body)
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def newest_checkpoint(arg: str) -> str:
    m = re.match(r"(?P<run>.*)/checkpoints/iter-\d{8}$", arg)
    if not m:
        return arg
    found = sorted(Path(m.group("run"), "checkpoints").glob("iter-*"))
    return str(found[-1]) if found else arg


def run_bash(block: Block, tmp: Path) -> None:
    from ebmkit.cli import main

    for command in commands(block.body):
        argv = shlex.split(command, comments=True)
        shell_syntax = any(set(t) <= set("|&;<>") or set(t) & set("$`") for t in argv)
        if argv and argv[0] == "ebmkit" and not shell_syntax:
            threads = torch.get_num_threads()
            try:
                status = main([newest_checkpoint(a) for a in argv[1:]])
            except SystemExit as exc:  # argparse: --help, a bad option
                status = exc.code or 0
            finally:
                torch.set_num_threads(threads)
            assert status == 0, f"{block}: `{command}` exited with {status}"
        else:
            env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
            r = subprocess.run(["bash", "-c", command], cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, f"{block}: `{command}` exited with {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"


BASE = {
    "data": {"name": "digits", "image_size": 8},
    "energy": {"name": "convnet", "nf": 8},
    "sampler": {"name": "langevin", "steps": 5},
}


def run_toml(block: Block) -> None:
    from ebmkit.config import parse_config

    data = tomllib.loads(block.body)
    if "project" in data or "tool" in data or "build-system" in data:
        return  # a pyproject.toml: parsing is the check
    merged = {**BASE, **data}
    parse_config(merged, source=str(block))


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_doc_examples_run(doc, tmp_path, monkeypatch, capsys):
    todo = [b for b in blocks(doc) if runnable(b)]
    files = [b for b in blocks(doc) if b.file]
    if not todo:
        pytest.skip(f"{doc.name} has no runnable blocks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("EBMKIT_DOCS_ITERATIONS", str(CAP))
    monkeypatch.setenv("EBMKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for b in files:
        target = tmp_path / b.file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(b.body)
        if target.suffix == ".py":
            (target.parent / "__init__.py").touch()
    namespace: dict = {"__name__": "__docs__"}
    from ebmkit.registry import default_registry

    default_registry.cache_clear()  # a plug-in a page registers stays on that page
    try:
        for b in todo:
            {"python": lambda: run_python(b, namespace), "bash": lambda: run_bash(b, tmp_path),
             "toml": lambda: run_toml(b)}[b.lang]()
    finally:
        default_registry.cache_clear()
        for name in [m for m in sys.modules if any(str(getattr(sys.modules[m], "__file__", "") or "").startswith(
                str(tmp_path)) for _ in [0])]:
            del sys.modules[name]


def test_markers_are_understood():
    """A typo in a marker would silently run (or skip) a block; every HTML comment before a fence must parse."""
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            if before.lstrip().startswith("<!--"):
                assert MARKER.search(before), f"{doc.name}:{text[:m.start()].count(chr(10)) + 1}: unknown marker {before!r}"


if __name__ == "__main__":  # the list of executed blocks
    for b in executed_blocks():
        print(b)
