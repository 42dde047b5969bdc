"""The quick suite end to end, at a tiny budget: every table, grid and plot is written.

Inception on a CPU is slow, so FID here uses 8 samples; the real run is
`python -m benchmarks.run quick`.
"""

import json

import pytest

from benchmarks.comparison import QUICK, EBMSettings, run_comparison
from benchmarks.suites import SuiteArgs
from ebmkit.metrics.inception import InceptionUnavailable, find_weights


TINY = QUICK.model_copy(update=dict(
    budget="2", n_fid=8, n_recon=4, recon_iterations=2, ebm=EBMSettings(nf=4, steps=3), vae={"nz": 4, "nf": 4},
    dcgan={"nz": 4, "nf": 4}, kid_subsets=5, ablations={"table3": [2, 3], "table4": [0.03], "table5": [4]},
    seeds=[0, 1], n_domain=20,
))


@pytest.mark.slow
def test_quick_suite_runs_end_to_end_and_resumes(tmp_path, monkeypatch, capsys):
    try:
        find_weights()
    except InceptionUnavailable:
        pytest.skip("no Inception weights on this machine")
    monkeypatch.setenv("EBMKIT_FID_CACHE", str(tmp_path / "fid-cache"))
    out = tmp_path / "quick"
    assert run_comparison(TINY, SuiteArgs(suite="quick", out=out, progress=False)) == 0
    printed = capsys.readouterr().out
    for key in ("table1", "table2", "table3", "table4", "table5", "speed"):
        for ext in ("csv", "json", "png"):
            assert (out / "tables" / f"{key}.{ext}").is_file(), f"{key}.{ext} missing"
    t1 = json.loads((out / "tables" / "table1.json").read_text())
    assert [r["method"] for r in t1["rows"]] == ["short-run EBM", "VAE", "DCGAN", "held-out real digits", "uniform noise"]
    models, (real, noise) = t1["rows"][:3], t1["rows"][3:]
    assert all(r["FID"] > 0 and r["floor FID"] is not None for r in models)
    assert {"s / iteration", "recognisable", "recognisable sd", "coverage", "domain FD", "FID sd"} <= set(t1["columns"])
    assert all(0 <= r["recognisable"] <= 1 and r["recognisable sd"] is not None and r["s / iteration"] > 0 for r in models)
    assert real["recognisable"] > 0.8 and noise["recognisable"] < 0.05 and noise["domain FD"] > real["domain FD"]
    assert t1["meta"]["budget"]["iterations"] == 2 and "torch" in t1["meta"]["versions"] and t1["meta"]["machine"]["cpu_count"]
    t2 = json.loads((out / "tables" / "table2.json").read_text())
    assert all(0 < r["MSE per pixel"] < 4 for r in t2["rows"])
    t3 = json.loads((out / "tables" / "table3.json").read_text())
    assert [r["K"] for r in t3["rows"]] == [2, 3]
    assert "Table 1: sample quality" in printed and "Table 5" in printed and "floor FID" in printed
    assert "untrained chain" in (out / "tables.md").read_text()  # the reconstruction caveat beside Table 2
    # a grid per cell, a reconstruction grid per main cell (3 methods x 2 seeds)
    assert len(list((out / "samples").glob("*.png"))) == 7 + 6
    assert len(list((out / "cells").glob("*.json"))) == 7  # 3 methods x 2 seeds (seed 0's ebm shared by Tables 3-5), ebm K=2

    # run again: every cell is read back, nothing is trained
    assert run_comparison(TINY, SuiteArgs(suite="quick", out=out, progress=False)) == 0
    assert "7 of 7 cells already finished" in capsys.readouterr().out
