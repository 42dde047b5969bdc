"""The short-run chain as a generator: interpolation, reconstruction,
gradient checkpointing and the super-resolution start (issue 3)."""

import math

import pytest
import torch
from torch import nn

from ebmkit import create_energy, create_initializer, create_sampler
from ebmkit.errors import ConfigError, DataError
from ebmkit.generation.generator import ShortRunGenerator, evenly_spaced_steps, interpolation_weights

SHAPE = (1, 8, 8)


def small_generator(steps=4, noise=0.01, initializer="uniform", **init_kw):
    energy = create_energy("convnet", SHAPE, nf=4)
    sampler = create_sampler("langevin", steps=steps, step_size=0.5, noise=noise)
    init = create_initializer(initializer, SHAPE, **init_kw)
    return ShortRunGenerator(energy, sampler, init, SHAPE)


class LinearEnergy(nn.Module):
    """U(x) = w . x: grad U = w everywhere, so M(z) = z - K * step * w."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


def test_interpolation_endpoints_are_exactly_m_z1_and_m_z2():
    gen = small_generator()
    z1, z2 = gen.sample_z(3, seed=1), gen.sample_z(3, seed=2)
    rhos = [1.0, 0.8, 0.6, 0.0]
    path = gen.interpolate(z1, z2, rhos)
    assert path.shape == (4, 3, *SHAPE)
    assert torch.equal(path[0], gen.map(z1))
    assert torch.equal(path[-1], gen.map(z2))
    # rho = 0.6 -> sqrt(1 - 0.36) = 0.8, by hand
    assert torch.allclose(path[2], gen.map(0.6 * z1 + 0.8 * z2), atol=1e-6)
    assert not torch.allclose(path[1], path[2])


def test_interpolation_with_fixed_noise_keeps_its_endpoints_and_uses_the_noise():
    gen = small_generator(noise=0.5)
    z1, z2 = gen.sample_z(2, seed=1), gen.sample_z(2, seed=2)
    noise = gen.draw_noise(z1, seed=3)
    assert noise.shape == (4, 2, *SHAPE)
    path = gen.interpolate(z1, z2, [1.0, 0.5, 0.0], noise=noise)
    assert torch.equal(path[0], gen.map(z1, noise))
    assert torch.equal(path[-1], gen.map(z2, noise))
    assert not torch.allclose(path[0], gen.map(z1), atol=1e-3)  # the noise really entered the chain
    # Deterministic given (z, noise): the same call twice agrees bit for bit.
    assert torch.equal(gen.map(z1, noise), gen.map(z1, noise))


def test_interpolation_weights_and_bad_rho():
    assert interpolation_weights([1.0, 0.0, 0.6]) == [(1.0, 0.0), (0.0, 1.0), (0.6, pytest.approx(0.8))]
    with pytest.raises(ConfigError, match="rho must lie in"):
        interpolation_weights([1.5])


def test_noise_free_map_is_the_chain_written_out_by_hand():
    w = torch.randn(*SHAPE)
    gen = ShortRunGenerator(LinearEnergy(w), create_sampler("langevin", steps=5, step_size=0.3, noise=0.1),
                            create_initializer("uniform", SHAPE), SHAPE)
    z = gen.sample_z(2, seed=0)
    assert torch.allclose(gen.map(z), z - 5 * 0.3 * w, atol=1e-6)
    noise = gen.draw_noise(z, seed=1)
    assert torch.allclose(gen.map(z, noise), z - 5 * 0.3 * w + 0.1 * noise.sum(0), atol=1e-5)


@pytest.mark.parametrize("every", [1, 3])
def test_checkpointed_gradients_equal_the_plain_graph(every):
    gen = small_generator(steps=5, noise=0.05)
    target = torch.rand(3, *SHAPE) * 2 - 1
    grads = []
    for ck in (0, every):
        z = gen.sample_z(3, seed=0).requires_grad_(True)
        e = gen.draw_noise(z, seed=1).requires_grad_(True)
        loss = (gen.map(z, e, keep_graph=True, checkpoint_every=ck) - target).pow(2).sum()
        loss.backward()
        grads.append((z.grad.clone(), e.grad.clone(), loss.item()))
    (gz0, ge0, l0), (gz1, ge1, l1) = grads
    assert l0 == pytest.approx(l1, rel=1e-6)
    assert gz0.abs().max() > 0 and ge0.abs().max() > 0
    assert torch.allclose(gz0, gz1, atol=1e-6, rtol=1e-5)
    assert torch.allclose(ge0, ge1, atol=1e-6, rtol=1e-5)


def test_checkpointed_reconstruction_follows_the_same_path():
    gen = small_generator(steps=4)
    x = torch.rand(2, *SHAPE) * 2 - 1
    a = gen.reconstruct(x, iterations=5, lr=0.05)
    b = gen.reconstruct(x, iterations=5, lr=0.05, checkpoint_every=2)
    assert torch.allclose(a.x, b.x, atol=1e-5)
    assert a.losses == pytest.approx(b.losses, rel=1e-4)


def test_reconstruction_recovers_z_exactly_for_a_linear_energy():
    w = torch.randn(*SHAPE)
    gen = ShortRunGenerator(LinearEnergy(w), create_sampler("gradient-descent", steps=6, step_size=0.25),
                            create_initializer("uniform", SHAPE), SHAPE)
    z_true = torch.rand(4, *SHAPE) * 2 - 1
    x = gen.map(z_true)
    # M(z) = z - c, loss ||x - M(z)||^2 has gradient 2 (z - z_true): SGD with lr 1/2 lands on z_true in one step.
    rec = gen.reconstruct(x, iterations=3, optimizer="sgd", lr=0.5, record=(0, 1))
    assert torch.allclose(rec.z, z_true, atol=1e-6)
    assert rec.mse_per_pixel < 1e-12
    assert rec.losses[0] > 0.1 and rec.losses[1] < 1e-12
    assert set(rec.path) == {0, 1, 3}
    assert torch.equal(w, gen.energy.w.detach()) and gen.energy.w.grad is None  # the energy is left alone


def test_reconstruction_lowers_the_error_on_a_tiny_trained_model(tiny):
    from ebmkit.config import parse_config
    from ebmkit.experiment import build_experiment, load_dataset
    from ebmkit.training.loop import Trainer

    cfg = parse_config(tiny(training={"iterations": 6}))
    exp = build_experiment(cfg)
    Trainer(exp).fit()
    gen = ShortRunGenerator(exp.energy, exp.sampler, exp.initializer, exp.shape)
    test, _ = load_dataset(cfg, "test")
    x = torch.stack([test[i] for i in range(4)])
    rec = gen.reconstruct(x, iterations=15, lr=0.1)
    assert len(rec.losses) == 16
    assert rec.losses[-1] == pytest.approx(rec.mse_per_pixel)
    assert rec.mse_per_pixel < 0.5 * rec.losses[0]
    # The mean-image baseline for scale: a trained chain must beat a blind start by far.
    assert rec.losses[0] > 0.2


def test_inferring_the_noise_fits_the_per_step_draws():
    gen = small_generator(steps=4, noise=0.2)
    x = torch.rand(2, *SHAPE) * 2 - 1
    plain = gen.reconstruct(x, iterations=8, lr=0.05, seed=3)
    both = gen.reconstruct(x, iterations=8, lr=0.05, seed=3, infer_noise=True, noise_prior=0.0)
    assert both.noise is not None and both.noise.shape == (4, 2, *SHAPE)
    assert both.noise.abs().max() > 0
    assert both.mse_per_pixel < plain.mse_per_pixel
    assert both.losses[0] == pytest.approx(plain.losses[0])  # same start: zero noise is the noise-free chain


def test_bad_reconstruction_parameters_name_the_field():
    gen = small_generator()
    x = torch.zeros(1, *SHAPE)
    with pytest.raises(ConfigError, match="reconstruct.iterations"):
        gen.reconstruct(x, iterations=0)
    with pytest.raises(ConfigError, match="reconstruct.iteratons: unknown field"):
        gen.reconstruct(x, iteratons=3)
    with pytest.raises(ConfigError, match="reconstruct.optimizer"):
        gen.reconstruct(x, optimizer="lbfgs")
    with pytest.raises(DataError, match=r"shape \(N, 1, 8, 8\)"):
        gen.reconstruct(torch.zeros(1, 1, 4, 4))


def test_transition_strip_records_the_chain_from_z_to_x_k():
    gen = small_generator(steps=4)
    steps, strip = gen.transition(3, steps=[0, 2, 4], seed=5)
    assert steps == (0, 2, 4) and strip.shape == (3, 3, *SHAPE)
    assert torch.equal(strip[:, 0], gen.sample_z(3, seed=5))
    assert evenly_spaced_steps(100, 5) == (0, 25, 50, 75, 100)
    assert evenly_spaced_steps(3, 8) == (0, 1, 2, 3)
    with pytest.raises(ConfigError, match="transition steps"):
        gen.transition(2, steps=[0, 9])


def test_generate_is_reproducible_by_seed_and_batched_alike():
    gen = small_generator(steps=3)
    a = gen.generate(5, seed=7)
    assert a.shape == (5, *SHAPE)
    assert torch.equal(a, gen.generate(5, seed=7))
    assert not torch.equal(a, gen.generate(5, seed=8))


# -- super-resolution start -------------------------------------------------------------


def test_lowres_start_matches_hand_computed_block_means_and_repetition():
    init = create_initializer("lowres", (1, 4, 4), size=2)
    x = torch.arange(16.0).view(1, 1, 4, 4) / 16
    z = init.sample(1, data=x)
    # Block means of [[0,1],[4,5]]/16 etc., each repeated over its 2x2 block.
    means = torch.tensor([[2.5, 4.5], [10.5, 12.5]]) / 16
    expected = means.repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert z.shape == (1, 1, 4, 4)
    assert torch.allclose(z[0, 0], expected)
    # Averaging the start back down returns the low-resolution image exactly.
    assert torch.allclose(torch.nn.functional.avg_pool2d(z, 2), means.view(1, 1, 2, 2))


def test_lowres_start_preserves_content_with_noise_on_average_and_bilinear_shape():
    init = create_initializer("lowres", (3, 16, 16), size=4, noise=0.1)
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    z = init.sample(5, data=x)
    assert z.shape == (5, 3, 16, 16)
    low = torch.nn.functional.avg_pool2d(x, 4)
    # Averaging 16 pixels of N(0, 0.1^2) noise leaves sd 0.025 on the block means.
    err = (torch.nn.functional.avg_pool2d(z, 4) - low)
    assert err.std().item() == pytest.approx(0.025, rel=0.2)
    smooth = create_initializer("lowres", (3, 16, 16), size=8, upsample="bilinear").sample(2, data=x)
    assert smooth.shape == (2, 3, 16, 16)
    assert torch.allclose(smooth.mean((2, 3)), x[:2].mean((2, 3)), atol=1e-5)  # bilinear keeps the image mean


def test_lowres_bad_input_is_clear():
    with pytest.raises(ConfigError, match="must divide"):
        create_initializer("lowres", (1, 8, 8), size=3)
    init = create_initializer("lowres", (1, 8, 8), size=4)
    with pytest.raises(ValueError, match="data=images"):
        init.sample(2)
    with pytest.raises(ValueError, match="needs 4 images"):
        init.sample(4, data=torch.zeros(2, 1, 8, 8))


def test_super_resolve_accepts_low_resolution_images_and_varies_with_the_seed():
    energy = create_energy("convnet", SHAPE, nf=4)
    gen = ShortRunGenerator(energy, create_sampler("langevin", steps=3, step_size=0.5, noise=0.05),
                            create_initializer("lowres", SHAPE, size=4, noise=0.1), SHAPE)
    low = torch.rand(2, 1, 4, 4) * 2 - 1
    full = gen.to_full_size(low)
    assert torch.equal(full[:, :, ::2, ::2], low) and torch.equal(full[:, :, 1::2, 1::2], low)
    out = gen.super_resolve(low, seeds=[0, 1])
    assert out.shape == (2, 2, *SHAPE)
    assert not torch.allclose(out[0], out[1])
    assert torch.equal(out, gen.super_resolve(full, seeds=[0, 1]))
    assert torch.equal(gen.low_resolution_start(low), full)
    with pytest.raises(ConfigError, match="lowres"):
        small_generator().super_resolve(low)
    with pytest.raises(DataError, match="does not scale evenly"):
        gen.to_full_size(torch.zeros(1, 1, 3, 3))


def test_sqrt_identity_keeps_unit_variance_for_gaussian_starts():
    # Why the paper's path: for z1, z2 ~ N(0, I) independent, z_rho ~ N(0, I) for every rho.
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(200_000, generator=g), torch.randn(200_000, generator=g)
    for rho, s in interpolation_weights([0.3, 0.7]):
        assert (rho * z1 + s * z2).var().item() == pytest.approx(1.0, abs=0.02)
        assert s == pytest.approx(math.sqrt(1 - rho**2))
