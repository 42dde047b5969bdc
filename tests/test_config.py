import json

import pytest
import yaml

from ebmkit.config import ExperimentConfig, apply_overrides, load_config, parse_config
from ebmkit.errors import ConfigError

TOML = """
[data]
name = "digits"
image_size = 8
[energy]
name = "convnet"
nf = 16
[sampler]
name = "langevin"
steps = 10
[training]
iterations = 3
"""


def test_toml_yaml_and_json_give_the_same_config(tmp_path):
    import tomllib

    data = tomllib.loads(TOML)
    (tmp_path / "c.toml").write_text(TOML)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "c.json").write_text(json.dumps(data))
    configs = [load_config(tmp_path / f"c.{ext}") for ext in ("toml", "yaml", "json")]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0].energy.params == {"nf": 16}


def test_bad_top_level_field_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"trainig: unknown field \(did you mean 'training'\?\)"):
        parse_config({"trainig": {}})


def test_bad_nested_field_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"training\.iteratons: unknown field \(did you mean 'iterations'\?\)"):
        parse_config({"training": {"iteratons": 5}})


def test_out_of_range_values_name_the_field():
    with pytest.raises(ConfigError, match=r"training\.batch_size: Input should be greater than 0 \(got 0\)"):
        parse_config({"training": {"batch_size": 0}})
    with pytest.raises(ConfigError, match=r"sampler\.steps: Input should be greater than or equal to 0"):
        parse_config({"sampler": {"name": "langevin", "steps": -3}})


def test_component_parameter_typo_names_the_section():
    with pytest.raises(ConfigError, match=r"energy\.nff: unknown field \(did you mean 'nf'\?\)"):
        parse_config({"energy": {"name": "convnet", "nff": 3}})


def test_unknown_component_names_the_section():
    with pytest.raises(ConfigError, match=r"sampler\.name: unknown sampler 'langvin' \(did you mean 'langevin'\?\)"):
        parse_config({"sampler": "langvin"})


def test_overrides_parse_values():
    data = apply_overrides({}, ["training.iterations=7", "energy.name=mlp", "sampler.step_size=0.5"])
    assert data == {"training": {"iterations": 7}, "energy": {"name": "mlp"}, "sampler": {"step_size": 0.5}}


def test_missing_file_and_bad_syntax(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[data\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_defaults_are_the_paper_recipe():
    cfg = ExperimentConfig()
    assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.betas == (0.9, 0.999)
    assert cfg.training.batch_size == 64 and cfg.initializer.name == "uniform"
