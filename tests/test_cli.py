import json
import subprocess
import sys

from ebmkit.cli import main


def test_plugins_lists_every_builtin_with_its_source(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for name in ("convnet", "timm", "mlp", "langevin", "gradient-descent", "uniform", "gaussian", "maximum-likelihood", "mnist5k"):
        assert name in out
    assert "built-in" in out


def test_bad_config_exits_nonzero_and_names_the_field(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[training]\niteratons = 3\n')
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "training.iteratons: unknown field (did you mean 'iterations'?)" in err
    assert "Traceback" not in err


def test_unknown_preset_suggests(capsys):
    assert main(["train", "digits-cpo"]) == 2
    assert "did you mean 'digits-cpu'" in capsys.readouterr().err


def test_train_from_the_command_line_and_python_m(tmp_path, tiny):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny(training={"iterations": 2})))
    r = subprocess.run([sys.executable, "-m", "ebmkit", "train", str(cfg), "--out", str(tmp_path / "r")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["iteration"] == 2
