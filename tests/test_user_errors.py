"""Every command, every kind of user mistake: one line, exit status 2, no
traceback, and nothing on disk changed.

The table runs each command line in its own process (tests/cli_runner.py
forks one per case after importing torch once) against a workspace holding a
small trained run; every file and folder of the workspace is hashed before
and after each case.  An internal error (a bug) still shows its traceback;
that is checked at the end.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ebmkit.cli import main

from conftest import write_distribution

TESTS = Path(__file__).parent
ROOT = TESTS.parent
GPU = torch.cuda.is_available()


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace: a trained run, configs with mistakes, bad data files, a plug-in site."""
    from conftest import tiny_config

    ws = tmp_path_factory.mktemp("ws")
    cfg = tiny_config(ws, training={"iterations": 2}, output={"dir": str(ws / "run")})
    (ws / "c.json").write_text(json.dumps(cfg))
    assert main(["train", str(ws / "c.json")]) == 0

    def variant(name, out, **sections):
        c = tiny_config(ws, output={"dir": str(ws / out)}, **sections)
        (ws / name).write_text(json.dumps(c))

    variant("bool.json", "new-bool", sampler={"steps": True})
    variant("string.json", "new-string", training={"iterations": "5"})
    variant("big-batch.json", "new-big", data={"name": "digits", "image_size": 8, "limit": 10})
    variant("cuda.json", "new-cuda", training={"device": "cuda"})
    variant("noparam.json", "new-noparam")
    c = json.loads((ws / "noparam.json").read_text())
    c["energy"] = {"name": "test-constant"}
    (ws / "noparam.json").write_text(json.dumps(c))
    (ws / "binary.toml").write_bytes(bytes(range(256)) * 4)
    (ws / "latin1.toml").write_bytes("[training]\n# Zürich\niterations = 3\n".encode("latin-1"))
    (ws / "notes").mkdir()
    (ws / "adir").mkdir()

    # a NaN in item 299 of 300: past the items probed at start-up
    x = np.zeros((300, 1, 8, 8), np.float32)
    x[299, 0, 3, 3] = np.nan
    np.save(ws / "nan.npy", x)
    variant("nan.json", "new-nan", data={"name": "array-file", "path": str(ws / "nan.npy"), "test_fraction": 0.01})
    np.save(ws / "u8.npy", np.full((4, 1, 8, 8), 200, np.uint8))

    # an image folder with one corrupt file that has an image extension
    from PIL import Image

    (ws / "images").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(ws / "images" / f"ok{i}.png")
    (ws / "images" / "broken.png").write_bytes(b"this is not a PNG")
    variant("folder.json", "new-folder", data={"name": "image-folder", "root": str(ws / "images"), "image_size": 8,
                                               "channels": 1}, training={"batch_size": 2})

    # a third-party plug-in whose energy has no parameters (the README's first example did that)
    site = ws / "site"
    write_distribution(site, "ebmkit-test-constant", "constant_plugin", """
        import ebmkit

        class Constant(ebmkit.Energy):
            '''U(x) = ||x||^2, nothing to learn.'''
            class Params(ebmkit.Params):
                pass
            def forward(self, x):
                return x.flatten(1).pow(2).sum(1)

        @ebmkit.hookimpl
        def ebmkit_energies():
            return {"test-constant": Constant}
    """, entry="constant", version="0.1")
    return ws


def _cases(ws: Path) -> list[tuple[str, list[str], str]]:
    run, c = str(ws / "run"), str(ws / "c.json")
    o = lambda name: str(ws / name)  # noqa: E731
    cases = [
        # -- train ------------------------------------------------------------------
        ("train: a folder that holds a run", ["train", c],
         f"{run} already holds a run (checkpoints up to iteration 2, metrics.csv with 2 rows, config.json, samples); "
         "nothing was written. Continue it with --resume, train into another folder with --out, or start afresh with "
         "--overwrite"),
        ("train: --iterations 0", ["train", c, "--iterations", "0"], "argument --iterations: must be positive, got 0"),
        ("train: --iterations ten", ["train", c, "--iterations", "ten"], "argument --iterations: expected a whole number, got 'ten'"),
        ("train: --num-processes 0", ["train", c, "--num-processes", "0"], "argument --num-processes: must be positive, got 0"),
        ("train: --resume with --overwrite", ["train", c, "--resume", "--overwrite"], "--resume and --overwrite exclude each other"),
        ("train: --resume with nothing there", ["train", c, "--out", o("nothing-here"), "--resume"],
         f"--resume: there is no run to resume at {o('nothing-here')} (the folder does not exist)"),
        ("train: a folder in use", ["train", c, "--resume"],
         f"{run} is in use by another run: process "),
        ("train: a bool where an int is meant", ["train", o("bool.json")], "sampler.steps: Input should be a valid integer (got True)"),
        ("train: a string where an int is meant", ["train", o("string.json")],
         "training.iterations: Input should be a valid integer (got '5')"),
        ("train: a binary config file", ["train", o("binary.toml")], f"{o('binary.toml')}: not a text file in UTF-8"),
        ("train: a latin-1 config file", ["train", o("latin1.toml")], f"{o('latin1.toml')}: not a text file in UTF-8"),
        ("train: a missing config file", ["train", o("nosuch.toml")], f"config file not found: {o('nosuch.toml')}"),
        ("train: batch larger than the dataset", ["train", o("big-batch.json")],
         "batch size 16 x 1 process(es) is larger than the dataset (9 items)"),
        ("train: --resume with a batch larger than the dataset", ["train", c, "--resume", "--set", "training.batch_size=5000"],
         "batch size 5000 x 1 process(es) is larger than the dataset"),  # the run's metrics.csv and config.json untouched
        ("train: an energy with no parameters", ["train", o("noparam.json")],
         "energy 'test-constant' has no trainable parameters"),
        ("train: NaN in item 299", ["train", o("nan.json")],
         f"dataset 'array-file': item 299 of {ws / 'nan.npy'} has non-finite values (NaN or infinity)"),
        ("train: a corrupt image file", ["train", o("folder.json")],
         f"dataset 'image-folder': cannot read {ws / 'images' / 'broken.png'}"),
        ("train: unknown option", ["train", c, "--bogus"], "ebmkit train: error: unrecognized arguments: --bogus"),
        ("train: --out is a file", ["train", c, "--out", o("c.json")], f"run folder {o('c.json')} is a file, not a folder"),
        # -- sample -------------------------------------------------------------------
        ("sample: negative --steps", ["sample", run, "--steps", "-1", "--out", o("s.png")], "argument --steps: must be at least 0, got -1"),
        ("sample: --n 0", ["sample", run, "--n", "0", "--out", o("s.png")], "argument --n: must be positive, got 0"),
        ("sample: --batch-size 0", ["sample", run, "--batch-size", "0", "--out", o("s.png")], "argument --batch-size: must be positive, got 0"),
        ("sample: --device banana", ["sample", run, "--device", "banana", "--out", o("s.png")], "'banana' is not a device"),
        ("sample: no checkpoint there", ["sample", o("notes"), "--out", o("s.png")], f"no checkpoint found at {o('notes')}"),
        ("sample: --out is a folder", ["sample", run, "--n", "4", "--out", o("adir")], f"--out {o('adir')} is a folder"),
        # -- generate, interpolate, reconstruct, super-resolve ----------------------------
        ("generate: negative --steps", ["generate", run, "--steps", "-2", "--out", o("g")], "argument --steps: must be at least 0, got -2"),
        ("generate: --chains 0", ["generate", run, "--chains", "0", "--out", o("g")], "argument --chains: must be positive, got 0"),
        ("generate: negative transition step", ["generate", run, "--transition-steps", "3", "-1", "--out", o("g")],
         "argument --transition-steps: must be at least 0, got -1"),
        ("generate: no checkpoint", ["generate", o("nothing-here"), "--out", o("g")], f"no checkpoint found at {o('nothing-here')}"),
        ("interpolate: rho above 1", ["interpolate", run, "--rhos", "1.5", "--out", o("i")], "argument --rhos: must be in [0, 1], got 1.5"),
        ("interpolate: --points 0", ["interpolate", run, "--points", "0", "--out", o("i")], "argument --points: must be positive, got 0"),
        ("reconstruct: missing image file", ["reconstruct", run, "--images", o("missing.npy"), "--out", o("r")],
         f"images: file not found: {o('missing.npy')}"),
        ("reconstruct: 8-bit images", ["reconstruct", run, "--images", o("u8.npy"), "--out", o("r"), "--iterations", "1"],
         "images must be scaled to [-1, 1]"),
        ("reconstruct: negative --lr", ["reconstruct", run, "--lr", "-1", "--out", o("r")], "argument --lr: must be above 0, got -1"),
        ("reconstruct: unknown optimiser", ["reconstruct", run, "--optimizer", "lbfgs", "--out", o("r")],
         "argument --optimizer: invalid choice: 'lbfgs'"),
        ("reconstruct: --iterations 0", ["reconstruct", run, "--iterations", "0", "--out", o("r")],
         "argument --iterations: must be positive, got 0"),
        ("super-resolve: no seeds", ["super-resolve", run, "--seeds", "--out", o("sr")], "argument --seeds: expected at least one argument"),
        ("super-resolve: --n 0", ["super-resolve", run, "--n", "0", "--out", o("sr")], "argument --n: must be positive, got 0"),
        # -- inpaint, cooperative-sample ---------------------------------------------------
        ("inpaint: unknown mask", ["inpaint", run, "--mask", "nosuchmask", "--out", o("ip"), "--no-baselines"],
         "--mask: unknown mask 'nosuchmask'"),
        ("inpaint: mask parameter out of range", ["inpaint", run, "--mask", "centre:fraction=2", "--out", o("ip"), "--no-baselines"],
         "--mask.fraction: Input should be less than"),
        ("inpaint: --samples 0", ["inpaint", run, "--samples", "0", "--out", o("ip")], "argument --samples: must be positive, got 0"),
        ("cooperative-sample: not a cooperative checkpoint", ["cooperative-sample", run, "--out", o("cs")], "initializer"),
        ("cooperative-sample: --points 1", ["cooperative-sample", run, "--points", "1", "--out", o("cs")],
         "argument --points: must be at least 2, got 1"),
        ("cooperative-sample: negative --steps", ["cooperative-sample", run, "--steps", "-1", "--out", o("cs")],
         "argument --steps: must be at least 0, got -1"),
        # -- map ------------------------------------------------------------------------------
        ("map: negative --show", ["map", run, "--show", "-1", "--out", o("m")], "argument --show: must be at least 0, got -1"),
        ("map: --device banana", ["map", run, "--device", "banana", "--out", o("m")], "'banana' is not a device"),
        ("map: bad --starts", ["map", run, "--starts", "nowhere:5", "--out", o("m")], "--starts"),
        # -- plugins, presets, benchmarks ---------------------------------------------------
        ("plugins: unknown kind", ["plugins", "--kind", "bogus"], "argument --kind: invalid choice: 'bogus'"),
        ("presets: stray argument", ["presets", "extra"], "ebmkit presets: error: unrecognized arguments: extra"),
        ("benchmarks.run: unknown suite", ["nosuchsuite", "--out", o("bench")], "unknown suite 'nosuchsuite'"),
        ("benchmarks.run: --threads 0", ["quick", "--threads", "0", "--out", o("bench")], "argument --threads: must be positive, got 0"),
        ("benchmarks.run: --n-fid 0", ["quick", "--n-fid", "0", "--out", o("bench")], "argument --n-fid: must be positive, got 0"),
    ]
    device = [] if GPU else [
        ("train: training.device = cuda without a GPU", ["train", o("cuda.json")],
         "training.device = 'cuda' is not available: no CUDA GPU is visible on this machine"),
        ("sample: --device cuda without a GPU", ["sample", run, "--device", "cuda", "--out", o("s.png")],
         "argument --device: 'cuda' is not available: no CUDA GPU is visible on this machine"),
        ("generate: --device cuda without a GPU", ["generate", run, "--device", "cuda", "--out", o("g")],
         "'cuda' is not available"),
        ("inpaint: --device cuda without a GPU", ["inpaint", run, "--device", "cuda", "--out", o("ip")], "'cuda' is not available"),
    ]
    return cases + device


@pytest.fixture(scope="module")
def results(ws, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("runner")
    cases = []
    for i, (name, argv, _) in enumerate(_cases(ws)):
        module = "benchmarks.run" if name.startswith("benchmarks.run") else "ebmkit"
        cases.append({"id": f"case{i:02d}", "name": name, "argv": argv, "module": module, "cwd": str(ws),
                      "sys_path": [str(ws / "site")], "watch": str(ws),
                      "hold_lock": str(ws / "run") if name == "train: a folder in use" else None,
                      "env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}})
    (scratch / "cases.json").write_text(json.dumps(cases))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, str(TESTS / "cli_runner.py"), str(scratch / "cases.json"), str(scratch / "results.json")],
                       env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    return {case["name"]: res for case, res in zip(cases, json.loads((scratch / "results.json").read_text()))}


def _message_lines(stderr: str) -> list[str]:
    """The lines of stderr that are not warnings (a warning may precede the error)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("ebmkit: warning:")]


@pytest.mark.parametrize("name", [c[0] for c in _cases(Path("/ws"))])
def test_a_user_error_is_one_line_exit_2_and_changes_nothing(name, ws, results):
    expected = next(e for n, _, e in _cases(ws) if n == name)
    res = results[name]
    assert "Traceback" not in res["stderr"], res["stderr"]
    assert res["rc"] == 2, res
    lines = _message_lines(res["stderr"])
    assert len(lines) == 1, res["stderr"]
    assert expected in lines[0], lines[0]
    assert res["changed"] == [], res["changed"]


def test_an_internal_error_still_shows_its_traceback(tmp_path):
    """A bug is not a user error: it keeps its traceback (and exit status 1)."""
    code = ("import dataclasses\nimport ebmkit.cli as cli\n"
            "def boom(args):\n    raise ZeroDivisionError('a bug')\n"
            "cli.COMMANDS['presets'] = dataclasses.replace(cli.COMMANDS['presets'], run=boom)\n"
            "raise SystemExit(cli.main(['presets']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 1 and "Traceback" in r.stderr and "ZeroDivisionError: a bug" in r.stderr


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`ebmkit presets | head -1`: the reader goes away; no traceback."""
    r = subprocess.run(f"{sys.executable} -m ebmkit presets | head -1", shell=True, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="0"))
    assert r.stdout.count("\n") == 1 and r.stderr == "", r.stderr
    code = ("import os, sys\nfrom ebmkit.cli import main\n"
            "r, w = os.pipe(); os.close(r); os.dup2(w, 1)\n"
            "sys.exit(main(['plugins']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 141 and r.stderr == "", r.stderr
