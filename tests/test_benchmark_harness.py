"""The benchmark harness: budgets, resumable cells, tables, the suite registry, the CLI."""

import json

import pytest

from benchmarks import run as run_cli
from benchmarks.comparison import QUICK, plan
from benchmarks.harness import Budget, Cell, RunContext, Table
from benchmarks.suites import get_suite, load_suites, register_suite
from ebmkit.errors import ConfigError


def test_budget_parsing():
    assert Budget.parse("300") == Budget(iterations=300) == Budget.parse("300it")
    assert Budget.parse("90s") == Budget(seconds=90) and Budget.parse("2m").seconds == 120
    assert Budget.parse("100").scaled(0.5) == Budget(iterations=50)
    assert Budget(iterations=3).spent(3, 0.0) and not Budget(iterations=3).spent(2, 1e9)
    assert Budget(seconds=1.0).spent(0, 1.5) and not Budget(seconds=1.0).spent(10**6, 0.5)
    for bad in ("ten", "1.5it", "-3", "0"):
        with pytest.raises(ConfigError, match="budget"):
            Budget.parse(bad)


def test_finished_cells_are_not_run_again(tmp_path):
    calls = []

    def work(cell, ctx):
        calls.append(cell.name)
        return {"value": cell.spec["x"] * 2}

    cells = [Cell("a", {"x": 1}, work), Cell("b", {"x": 2}, work)]
    ctx = RunContext("t", tmp_path, progress=False)
    first = ctx.run_cells(cells)
    assert calls == ["a", "b"] and [r["value"] for r in first.values()] == [2, 4]
    # a run killed after cell a: only b's file is gone, so only b is recomputed
    (tmp_path / "cells" / f"{cells[1].id}.json").unlink()
    again = RunContext("t", tmp_path, progress=False).run_cells(cells)
    assert calls == ["a", "b", "b"] and again == first | {cells[1].id: again[cells[1].id]}
    # a changed setting is a new cell, not a stale result
    changed = Cell("a", {"x": 5}, work)
    assert changed.id != cells[0].id
    assert RunContext("t", tmp_path, progress=False).run_cells([changed])[changed.id]["value"] == 10
    assert RunContext("t", tmp_path, progress=False, fresh=True).run_cells(cells[:1]) and calls[-1] == "a"


def test_table_writes_markdown_csv_json_and_plot(tmp_path):
    def plot(table, path):
        path.write_bytes(b"png")
        return path

    t = Table("table9", "Table 9: demo", ["method", "FID"], [{"method": "x", "FID": 12.345}, {"method": "y", "FID": None}],
              ["a note"], plot)
    md = t.markdown()
    assert "| x | 12.35 |" in md and "| y | n/a |" in md and "a note" in md
    paths = t.save(tmp_path, {"machine": "m"})
    assert [p.name for p in paths] == ["table9.csv", "table9.json", "table9.png"]
    assert (tmp_path / "table9.csv").read_text().splitlines()[1] == "x,12.345"
    assert json.loads((tmp_path / "table9.json").read_text())["meta"] == {"machine": "m"}


def test_suites_are_registered_and_listed(capsys):
    suites = load_suites()
    assert {"quick", "standard", "paper"} <= set(suites)
    assert run_cli.main(["--list"]) == 0
    assert "standard" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="did you mean 'quick'"):
        get_suite("quik")


def test_a_new_suite_is_one_decorated_function(tmp_path):
    seen = {}

    @register_suite("demo-suite", help="a test suite")
    def demo(args):
        seen["out"] = args.out
        return 0

    assert run_cli.main(["demo-suite", "--out", str(tmp_path)]) == 0 and seen["out"] == tmp_path
    with pytest.raises(ConfigError, match="registered twice"):
        register_suite("demo-suite")(lambda args: 1)


def test_plan_merges_the_shared_ebm_cell_and_honours_only():
    s = QUICK.model_copy(update={"ablations": {"table3": [10, 20], "table4": [0.03], "table5": [32]}, "seeds": [0]})
    b = Budget(iterations=5)
    cells = plan(s, b, b, [])
    ebm = [c for c in cells if c.method == "ebm"]
    main = next(c for c in ebm if c.name == "ebm")
    # the K=20 / sigma=0.03 / nf=32 cells of Tables 3-5 are the main EBM cell
    assert set(main.tables) == {"table1", "table2", "speed", "table3", "table4", "table5"}
    assert len(ebm) == 2 and len(cells) == 4
    only = plan(s, b, b, ["table3"])
    assert {c.method for c in only} == {"ebm"} and len(only) == 2 and all(c.spec["recon"] is None for c in only)
    assert {c.method for c in plan(s, b, b, ["table1", "vae"])} == {"vae"}
    # three seeds: a main cell per method and seed; seed 0's EBM cell still serves Tables 3-5
    three = plan(s.model_copy(update={"seeds": [0, 1, 2]}), b, b, [])
    assert len(three) == 3 * 3 + 1
    assert sorted(c.spec["seed"] for c in three if c.method == "vae") == [0, 1, 2]
    shared = next(c for c in three if c.name == "ebm seed 0")
    assert set(shared.tables) == {"table1", "table2", "speed", "table3", "table4", "table5"}


def test_bad_options_are_clear_errors(tmp_path, capsys):
    assert run_cli.main(["quick", "--only", "table7", "--out", str(tmp_path)]) == 2
    assert "--only 'table7'" in capsys.readouterr().err
    assert run_cli.main(["quick", "--budget", "soon", "--out", str(tmp_path)]) == 2


def test_paper_suite_says_what_is_missing_and_exits_non_zero(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EBMKIT_DATA", str(tmp_path / "nothing-here"))
    monkeypatch.delenv("EBMKIT_LSUN_BEDROOM", raising=False)
    code = run_cli.main(["paper", "--out", str(tmp_path / "out"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 2
    assert "cifar10" in out and "celeba" in out and "EBMKIT_LSUN_BEDROOM" in out and "GPU" in out


def test_suite_settings_take_set_overrides_and_name_a_bad_field():
    from benchmarks.harness import settings_with_overrides
    from benchmarks.inpainting import DEFAULT

    s = settings_with_overrides(DEFAULT, ["vae.nf=4", "samples=2"])
    assert type(s) is type(DEFAULT) and s.vae["nf"] == 4 and s.samples == 2 and DEFAULT.samples == 4
    with pytest.raises(ConfigError, match=r"--set: .*samples"):
        settings_with_overrides(DEFAULT, ["samples='many'"])
    with pytest.raises(ConfigError, match=r"--set: .*nope"):
        settings_with_overrides(DEFAULT, ["nope=1"])


def test_the_speed_suite_reads_set_through_the_harness():
    from benchmarks.harness import settings_with_overrides
    from benchmarks.speed import SpeedSettings

    s = settings_with_overrides(SpeedSettings.quick(), ["nf=4,8", "peers=false", "rounds=3"])
    assert s.nf == (4, 8) and s.peers is False and s.rounds == 3 and s.image_size == 8
    assert settings_with_overrides(SpeedSettings(), ["nf=[16]"]).nf == (16,)
    with pytest.raises(ConfigError, match=r"--set: nff: unknown field \(did you mean 'nf'\?\)"):
        settings_with_overrides(SpeedSettings(), ["nff=3"])


def test_shared_harness_pieces_live_outside_the_suites():
    import benchmarks.comparison as comparison
    import benchmarks.cooperative as cooperative
    from benchmarks import harness, plots, realdata

    assert comparison.reference is realdata.reference and cooperative.reference is realdata.reference
    assert comparison.plot_bars is plots.plot_bars and comparison.resolve_device is harness.resolve_device
    assert harness.resolve_device("cpu") == "cpu"
