"""The contracts declared once: the table of component kinds and what is made
from it, the registry handed down to nested builds, validated parameters kept,
cached hook answers, and the fields samplers and objectives declare."""

from __future__ import annotations

import argparse
import csv
from types import SimpleNamespace

import pytest
import torch
from pydantic import field_validator

import ebmkit
import ebmkit.hookspecs
from ebmkit.config import SECTIONS, ExperimentConfig, parse_config
from ebmkit.experiment import build_experiment
from ebmkit.interfaces import KINDS, PARTS, ObjectiveOutput
from ebmkit.registry import BASES, HOOKS, Registry
from ebmkit.training.loop import Trainer


# -- one table of kinds ------------------------------------------------------------------------


def test_everything_about_a_kind_comes_from_the_table():
    names = [k.name for k in KINDS]
    assert names == ["dataset", "energy", "initializer", "sampler", "objective", "mask"]
    assert HOOKS == {k.name: k.hook for k in KINDS} and BASES == {k.name: k.base for k in KINDS}
    assert all(callable(getattr(ebmkit.hookspecs, k.hook)) for k in KINDS)  # one hook specification each
    assert SECTIONS == {"data": "dataset", "energy": "energy", "initializer": "initializer", "sampler": "sampler",
                        "objective": "objective"}
    assert list(ExperimentConfig.model_fields)[:5] == list(SECTIONS)  # the config's component sections, in table order
    assert ExperimentConfig().sampler.name == "langevin" and ExperimentConfig().data.name == "mnist5k"  # table defaults
    assert PARTS == ("energy", "initializer", "sampler", "objective")
    from ebmkit.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["plugins"]
    assert next(a for a in sub._actions if a.dest == "kind").choices == names


def test_a_new_kind_in_the_table_is_a_registry_kind(monkeypatch):
    reg = Registry(load_entry_points=False)
    with pytest.raises(ebmkit.errors.ConfigError, match="unknown component kind 'widget'; kinds: dataset, energy"):
        reg.components("widget")


# -- the registry ------------------------------------------------------------------------------


class _Counting:
    calls = 0

    @ebmkit.hookimpl
    def ebmkit_samplers(self):
        _Counting.calls += 1
        from ebmkit_plugins.langevin import LangevinSampler

        return {"counted": LangevinSampler}


def test_hook_answers_are_cached_until_the_next_register():
    reg = Registry(load_entry_points=False)
    _Counting.calls = 0
    reg.register(_Counting(), name="counting")
    for _ in range(3):
        assert "counted" in reg.components("sampler")
        reg.build("sampler", "counted", {"steps": 1})
    assert _Counting.calls == 1  # not once per lookup
    reg.components("sampler").clear()  # a caller's copy: the cache is untouched
    assert "counted" in reg.components("sampler")

    class Another:
        @ebmkit.hookimpl
        def ebmkit_samplers(self):
            from ebmkit_plugins.langevin import GradientDescentSampler

            return {"later": GradientDescentSampler}

    reg.register(Another(), name="another")
    assert {"counted", "later"} <= set(reg.components("sampler")) and _Counting.calls == 2


def _private_registry():
    """A registry whose sampler 'private-langevin' the default registry does not know."""
    from ebmkit_plugins import clamped_sampler, conditional_init, conditional_vae, langevin, masks

    class Private:
        @ebmkit.hookimpl
        def ebmkit_samplers(self):
            return {"private-langevin": langevin.LangevinSampler}

        @ebmkit.hookimpl
        def ebmkit_masks(self):
            return {"private-centre": masks.CentreBlock}

    reg = Registry(load_entry_points=False)
    for module in (langevin, clamped_sampler, masks, conditional_init, conditional_vae):
        reg.register(module)
    reg.register(Private(), name="private")
    return reg


def test_nested_builds_use_the_registry_passed_in():
    reg = _private_registry()
    assert "private-langevin" not in ebmkit.default_registry().components("sampler")
    clamped = reg.build("sampler", "clamped", {"inner": {"name": "private-langevin", "steps": 3}})
    assert clamped.inner.steps == 3 and clamped.inner.ebmkit_spec["name"] == "private-langevin"
    ctx = ebmkit.BuildContext(shape=(1, 8, 8))
    masked = reg.build("initializer", "masked", {"mask": {"name": "private-centre"}}, ctx)
    assert type(masked.masks).__name__ == "CentreBlock"
    cvae = reg.build("initializer", "conditional-vae", {"condition": {"name": "masked", "mask": "private-centre"}}, ctx)
    assert type(cvae.source.masks).__name__ == "CentreBlock"
    with pytest.raises(ebmkit.errors.ConfigError, match="sampler.inner: unknown sampler 'private-langevin'"):
        ebmkit.create_sampler("clamped", inner={"name": "private-langevin"})  # the default registry does not know it


def test_checked_parameters_are_kept_and_not_validated_again(tmp_path, tiny):
    from ebmkit_plugins.langevin import LangevinParams, LangevinSampler

    seen = []

    class CountingParams(LangevinParams):
        @field_validator("steps")
        @classmethod
        def _count(cls, v):
            seen.append(v)
            return v

    class CountingSampler(LangevinSampler):
        Params = CountingParams

    class Plugin:
        @ebmkit.hookimpl
        def ebmkit_samplers(self):
            return {"counting": CountingSampler}

    reg = Registry()
    reg.register(Plugin(), name="counting-plugin")
    cfg = parse_config(tiny(sampler={"name": "counting", "steps": 2, "step_size": 1.0, "noise": 0.01}), registry=reg)
    assert seen == [2]  # checked once, at load time
    exp = build_experiment(cfg, registry=reg)
    assert seen == [2] and exp.sampler.steps == 2 and exp.registry is reg  # built from the kept parameters
    cfg.sampler.steps = 3  # parameters changed after the check: validated again, never stale
    assert build_experiment(cfg, registry=reg).sampler.steps == 3 and seen == [2, 3]


# -- declared fields -------------------------------------------------------------------------


def test_a_sampler_declares_its_step_and_noise_and_clamped_passes_on_its_inner_ones():
    lv = ebmkit.create_sampler("langevin", epsilon=0.1)
    assert lv.step_size == pytest.approx(0.005) and lv.noise == 0.1
    clamped = ebmkit.create_sampler("clamped", inner={"name": "langevin", "step_size": 0.5, "noise": 0.02})
    assert (clamped.step_size, clamped.noise) == (0.5, 0.02)
    assert ebmkit.Sampler.step_size is None and ebmkit.Sampler.noise is None  # another kind of chain says so


def test_r_t_is_recorded_with_the_clamped_sampler(tmp_path):
    from ebmkit.training.diagnostics import Diagnostics

    clamped = ebmkit.create_sampler("clamped", inner={"name": "langevin", "step_size": 0.5, "noise": 0.02})
    trainer = SimpleNamespace(run_dir=tmp_path, is_main=True, iteration=0, objective=ebmkit.create_objective(
        "maximum-likelihood", epsilon_scale=0.1), sampler=clamped)
    cb = Diagnostics()
    cb.on_train_start(trainer)
    trainer.iteration = 1
    cb.on_step_end(trainer, {"iteration": 1, "gap": 0.25, "chain_grad_norm": 4.0})
    row = next(csv.DictReader(open(tmp_path / "diagnostics.csv")))
    assert float(row["r_t"]) == pytest.approx(0.5 * 4.0)  # step x chain gradient norm (blank before)
    assert float(row["d_st"]) == pytest.approx(2 / 0.1**2 * 0.25)  # the objective's declared loss_scale x gap


class GapOnly(ebmkit.Objective):
    """An objective that declares its gap but does not log it."""

    def __call__(self, energy, positive, negative):
        gap = energy(positive).mean() - energy(negative).mean()
        return ObjectiveOutput(loss=gap * 1e6, gap=float(gap.detach()) * 1e6)


def _gap_only_trainer(tmp_path, tiny, divergence):
    class Plugin:
        @ebmkit.hookimpl
        def ebmkit_objectives(self):
            return {"gap-only": GapOnly}

    reg = Registry()
    reg.register(Plugin(), name="gap-only-plugin")
    cfg = parse_config({**tiny(training={"divergence": divergence}), "objective": {"name": "gap-only"}}, registry=reg)
    return Trainer(build_experiment(cfg, registry=reg), run_dir=tmp_path / "run")


def test_the_gap_rule_reads_the_declared_gap(tmp_path, tiny):
    trainer = _gap_only_trainer(tmp_path, tiny, {"max_gap": 1e-9})
    with pytest.raises(ebmkit.errors.DivergenceError, match="energy gap exploded"):
        trainer.iterate(next(trainer.batches()))  # before: silently unchecked, the objective logs no "gap"
    assert trainer.iteration == 0


def test_the_declared_gap_is_logged(tmp_path, tiny):
    trainer = _gap_only_trainer(tmp_path, tiny, {"max_gap": None, "gap_factor": None})
    logs = trainer.iterate(next(trainer.batches()))
    assert "gap" in logs and trainer.iteration == 1


def test_a_component_declares_its_spec():
    assert ebmkit.Component.ebmkit_spec is None
    assert ebmkit.create_sampler("langevin", steps=7).ebmkit_spec["steps"] == 7
    with torch.no_grad():
        assert ebmkit.create_energy("mlp", (2,)).ebmkit_spec["name"] == "mlp"
