"""CLI conventions: --version, help for every option with its default, outputs under the run folder,
readable grids, aligned listings, export / shipped models accepted everywhere."""

import json
import re

import pytest
from PIL import Image

import ebmkit
from ebmkit.cli import main


def test_version(capsys):
    assert main(["--version"]) == 0  # main turns argparse's exit into a status (issue 16)
    assert ebmkit.__version__ in capsys.readouterr().out


def test_every_option_has_help_and_shows_its_default():
    from ebmkit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert {"train", "sample", "generate", "export", "inpaint"} <= set(sub.choices)
    missing, no_default = [], []
    for verb, p in sub.choices.items():
        options = p.format_help().split("options:", 1)[1]
        # each option's entry: from its line to the next line that starts an option
        entries = re.split(r"\n(?=  -)", options)
        for action in p._actions:
            if action.dest == "help" or not action.option_strings:
                continue
            if not action.help:
                missing.append(f"{verb} {action.option_strings[-1]}")
                continue
            if action.default in (None, False) or action.nargs == 0:
                continue
            entry = next(e for e in entries if re.match(rf"\s*(-\w+, )?{re.escape(action.option_strings[-1])}\b", e.strip()))
            if "default" not in entry:
                no_default.append(f"{verb} {action.option_strings[-1]}")
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"defaults not shown: {no_default}"


def test_presets_listing_is_aligned(capsys):
    assert main(["presets"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    starts = {len(re.match(r"\S+\s+", ln).group(0)) for ln in lines}
    assert len(starts) == 1, "descriptions must start in one column"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import tiny_config

    tmp = tmp_path_factory.mktemp("cli")
    return ebmkit.train(tiny_config(tmp), training={"iterations": 2})


def test_inference_verbs_write_under_the_run_folder(trained, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    run = str(trained.dir)
    assert main(["sample", run, "--n", "4"]) == 0
    assert (trained.dir / "sample" / "samples.png").is_file()
    assert main(["generate", run, "--n", "4", "--chains", "2"]) == 0
    assert (trained.dir / "generate" / "samples.png").is_file()
    assert main(["interpolate", run, "--pairs", "2", "--points", "3"]) == 0
    assert (trained.dir / "interpolate" / "interpolation.png").is_file()
    assert main(["reconstruct", run, "--n", "2", "--iterations", "2"]) == 0
    assert (trained.dir / "reconstruct" / "reconstruction.png").is_file()
    assert not list(tmp_path.iterdir()), "nothing in the current folder"
    assert main(["generate", run, "--n", "4", "--chains", "2", "--out", str(tmp_path / "mine")]) == 0
    assert (tmp_path / "mine" / "samples.png").is_file()


def test_small_images_are_enlarged_in_grids_with_an_option(trained, tmp_path):
    assert main(["sample", str(trained.dir), "--n", "4", "--out", str(tmp_path / "a.png")]) == 0
    assert Image.open(tmp_path / "a.png").size == (70, 70)  # 2 x 2 digits of 8 px enlarged 4x: 2 * (32 + 2) + 2
    assert main(["sample", str(trained.dir), "--n", "4", "--scale", "1", "--out", str(tmp_path / "b.png")]) == 0
    assert Image.open(tmp_path / "b.png").size == (22, 22)


def test_export_verb_and_every_verb_accepts_the_export(trained, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["export", str(trained.dir), str(out)]) == 0
    assert (out / "README.md").is_file() and (out / "energy.safetensors").is_file()
    capsys.readouterr()
    assert main(["generate", str(out), "--n", "4", "--chains", "2"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out / "generate" / "samples.png").is_file() and record["n"] == 4
    assert main(["sample", str(out), "--n", "4"]) == 0
    assert main(["export", str(trained.dir), str(out)]) == 2  # not over an existing export without --overwrite


def test_generate_digits_resolves_the_shipped_model(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "digits", "--n", "16", "--chains", "2"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    from ebmkit import pretrained

    assert record["iteration"] == json.loads((pretrained.root() / "digits" / "state.json").read_text())["iteration"]
    assert (tmp_path / "runs" / "digits" / "generate" / "samples.png").is_file()
