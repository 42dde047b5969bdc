"""The helpers written once: the Langevin update and its two forms, a seeded
batch of data, loading an array file, and turning a validation error into a
user's error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import Field

import ebmkit
from ebmkit.data import TensorImages, load_array, random_batch
from ebmkit.errors import ConfigError, DataError, validated
from ebmkit.sampling import langevin_coefficients, langevin_step


def test_langevin_step_by_hand():
    x, g, xi = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 4.0]), torch.tensor([1.0, -1.0])
    # x - step * g + noise * xi = [1 - 0.1*0.5 + 0.2*1, -2 - 0.1*4 - 0.2*1]
    assert torch.allclose(langevin_step(x, g, 0.1, 0.2, xi), torch.tensor([1.15, -2.6]))
    assert torch.allclose(langevin_step(x, g, 0.1, 0.0, xi), torch.tensor([0.95, -2.4]))  # no noise term
    y = x.clone()
    out = langevin_step(y, g, 0.1, 0.2, xi, inplace=True)
    assert out is y and torch.allclose(y, torch.tensor([1.15, -2.6]))
    x = x.clone().requires_grad_(True)
    langevin_step(x, g, 0.1, 0.2, xi).sum().backward()  # differentiable out of place
    assert torch.equal(x.grad, torch.ones(2))


def test_the_epsilon_and_step_rule_is_one_rule():
    assert langevin_coefficients(epsilon=0.1) == pytest.approx((0.005, 0.1))  # coupled: eps^2/2, eps
    assert langevin_coefficients() == (1.0, 0.01)  # langevin's default: the short-run paper's decoupled recipe
    assert langevin_coefficients(step_size=0.5) == (0.5, 0.01)
    assert langevin_coefficients(default_epsilon=0.01) == pytest.approx((5e-5, 0.01))  # mala's default: coupled
    assert langevin_coefficients(step_size=0.5, noise=0.2, default_epsilon=0.01) == (0.5, 0.2)
    lv, mala = ebmkit.create_sampler("langevin", epsilon=0.3), ebmkit.create_sampler("mala", epsilon=0.3)
    assert (lv.step_size, lv.noise) == pytest.approx((0.045, 0.3)) and (mala.step_size, mala.noise) == pytest.approx((0.045, 0.3))
    mala = ebmkit.create_sampler("mala")
    assert (mala.step_size, mala.noise) == pytest.approx((5e-5, 0.01))


def test_mala_proposes_the_langevin_move():
    """With every proposal accepted the MALA chain is the Langevin chain on the same noise."""

    class Flat(ebmkit.Energy):  # U = 0: every Metropolis-Hastings ratio is 1
        def forward(self, x):
            return x.flatten(1).sum(1) * 0.0

    z, noise = torch.randn(3, 2), torch.randn(4, 3, 2)
    mala = ebmkit.create_sampler("mala", steps=4, step_size=0.3, noise=0.2).run(Flat(), z, noise=noise)
    lv = ebmkit.create_sampler("langevin", steps=4, step_size=0.3, noise=0.2).run(Flat(), z, noise=noise)
    assert mala.acceptance == 1.0 and torch.allclose(mala.x, lv.x) and torch.allclose(lv.x, z + 0.2 * noise.sum(0))


def test_random_batch_seeded_or_from_the_global_stream():
    ds = TensorImages(torch.arange(20.0).view(10, 2))
    a = random_batch(ds, 4, generator=torch.Generator().manual_seed(3))
    b = random_batch(ds, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (4, 2)
    torch.manual_seed(5)
    c = random_batch(ds, 4)
    torch.manual_seed(5)
    idx = torch.randperm(10)[:4]
    assert torch.equal(c, ds.data[idx])


def test_load_array_reads_each_format_and_refuses_pickles(tmp_path):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "b.npz", only=x)
    np.savez(tmp_path / "c.npz", one=x, two=x)
    torch.save(torch.from_numpy(x), tmp_path / "d.pt")
    for name in ("a.npy", "b.npz", "d.pt"):
        assert torch.equal(load_array(tmp_path / name), torch.from_numpy(x)), name
    assert torch.equal(load_array(tmp_path / "c.npz", key="two"), torch.from_numpy(x))
    with pytest.raises(DataError, match=r"images: .*c.npz holds \['one', 'two'\]; save exactly one"):
        load_array(tmp_path / "c.npz", what="images")
    with pytest.raises(DataError, match="mask: file not found"):
        load_array(tmp_path / "none.npy", what="mask")
    np.save(tmp_path / "p.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="cannot read .*p.npy: Object arrays cannot be loaded"):
        load_array(tmp_path / "p.npy")
    (tmp_path / "e.txt").write_text("1 2")
    with pytest.raises(DataError, match="is not a .pt, .npy or .npz file"):
        load_array(tmp_path / "e.txt")


def test_validated_names_the_field_under_the_heading():
    class P(ebmkit.Params):
        steps: int = Field(1, ge=0)

    assert validated(P, {"steps": 3}, heading="h").steps == 3
    with pytest.raises(ConfigError) as e:
        validated(P, {"steps": -1, "stpes": 2}, heading="bad parameters for sampler 'x'", prefix="sampler")
    lines = str(e.value).splitlines()
    assert lines[0] == "bad parameters for sampler 'x':"
    assert any(line.startswith("sampler.steps: Input should be greater than or equal to 0") for line in lines)
    assert "sampler.stpes: unknown field (did you mean 'steps'?)" in lines
