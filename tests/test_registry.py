"""The pluggy registry: entry-point discovery, the factory, and its errors."""

import sys

import pytest

import ebmkit
from ebmkit.errors import ConfigError
from ebmkit.registry import Registry

from conftest import write_distribution

BUILTINS = {
    "energy": {"convnet", "timm", "mlp"},
    "sampler": {"langevin", "gradient-descent"},
    "initializer": {"uniform", "gaussian"},
    "objective": {"maximum-likelihood"},
    "dataset": {"digits", "mnist5k", "patches", "mnist", "fashion-mnist", "cifar10", "celeba", "image-folder"},
}


def test_builtins_are_found_through_the_entry_point_group():
    reg = Registry()
    for kind, names in BUILTINS.items():
        found = reg.components(kind)
        assert names <= set(found), kind
        for name in names:
            assert found[name].source == "built-in"
            assert found[name].plugin.startswith("shortrun-ebm:")


def test_unknown_name_lists_the_known_ones_and_suggests():
    with pytest.raises(ConfigError) as e:
        ebmkit.create("energy", "convnt")
    msg = str(e.value)
    assert "unknown energy 'convnt'" in msg and "did you mean 'convnet'" in msg and "mlp" in msg


def test_bad_parameter_names_the_field():
    with pytest.raises(ConfigError, match=r"sampler\.steps: Input should be greater than or equal to 0"):
        ebmkit.create_sampler("langevin", steps=-1)
    with pytest.raises(ConfigError, match=r"sampler\.stpes: unknown field \(did you mean 'steps'\?\)"):
        ebmkit.create_sampler("langevin", stpes=3)


def test_component_rejecting_its_context_names_the_component():
    with pytest.raises(ConfigError, match="energy 'convnet'.*power-of-two"):
        ebmkit.create_energy("convnet", (1, 12, 12))


THIRD_PARTY = '''
    import torch
    from pydantic import Field
    import ebmkit

    class Shifted(ebmkit.Energy):
        """U(x) = ||x - c||^2: a third-party energy."""

        class Params(ebmkit.Params):
            centre: float = Field(0.5)

        def __init__(self, centre=0.5):
            super().__init__()
            self.centre = centre

        def forward(self, x):
            return (x.flatten(1) - self.centre).pow(2).sum(1)

    @ebmkit.hookimpl
    def ebmkit_energies():
        return {"shifted": Shifted}
'''


def test_third_party_plugin_is_found_through_its_entry_point(tmp_path, monkeypatch):
    write_distribution(tmp_path, "acme-ebm", "acme_ebm_plugin", THIRD_PARTY)
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry()
    found = reg.components("energy")
    assert found["shifted"].source == "acme-ebm 0.3"
    energy = reg.build("energy", "shifted", {"centre": 1.0})
    import torch

    assert energy(torch.ones(2, 3)).tolist() == [0.0, 0.0]
    assert "convnet" in found  # the built-ins are still there
    sys.modules.pop("acme_ebm_plugin", None)


def test_a_plugin_that_fails_to_import_is_named_and_the_rest_work(tmp_path, monkeypatch):
    write_distribution(tmp_path, "broken-ebm", "broken_ebm_plugin", "import not_a_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(RuntimeWarning, match="broken-ebm"):
        reg = Registry()
    assert [f.distribution for f in reg.failures] == ["broken-ebm"]
    assert "broken_ebm_plugin" in str(reg.failures[0]) and "ModuleNotFoundError" in str(reg.failures[0])
    assert "convnet" in reg.components("energy")


def test_duplicate_names_name_both_plugins(tmp_path):
    reg = Registry(load_entry_points=False)

    class A:
        @ebmkit.hookimpl
        def ebmkit_samplers(self):
            return {"same": type("S1", (ebmkit.Sampler,), {})}

    class B:
        @ebmkit.hookimpl
        def ebmkit_samplers(self):
            return {"same": type("S2", (ebmkit.Sampler,), {})}

    reg.register(A(), name="first")
    reg.register(B(), name="second")
    with pytest.raises(ebmkit.errors.PluginError, match="'same' is registered twice: by 'first'.*'second'"):
        reg.components("sampler")


def test_registering_in_code_and_wrong_base_class():
    reg = Registry(load_entry_points=False)

    class Plugin:
        @ebmkit.hookimpl
        def ebmkit_objectives(self):
            return {"not-an-objective": dict}

    reg.register(Plugin(), name="bad")
    with pytest.raises(ebmkit.errors.PluginError, match="not a subclass of ebmkit.Objective"):
        reg.components("objective")
