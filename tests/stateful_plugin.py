"""A third-party-style plug-in with state, for the resume tests.

* ``test-bank``: a persistent bank initializer (an nn.Module buffer that every
  iteration rewrites), as in the anatomy paper's persistent chains.
* ``test-adaptive-langevin``: a Langevin sampler whose step size decays after
  every run; not an nn.Module, its state travels through ``state_dict()``.
* ``test-faulty``: Algorithm 1's objective with a fault injected at a chosen
  iteration (a NaN energy, or energies blown up by a factor), ``times`` times
  in all (so that a rollback can get past it).

Both change every iteration, so a resume that forgot their state would not
reproduce an uninterrupted run.
"""

import torch
from pydantic import Field

import ebmkit
from ebmkit_plugins.langevin import LangevinSampler
from ebmkit_plugins.maximum_likelihood import MaximumLikelihood


class Bank(ebmkit.InitialDistribution):
    """Persistent bank: chains restart where earlier chains ended."""

    class Params(ebmkit.Params):
        size: int = Field(64, gt=0)
        reinit: float = Field(0.05, ge=0.0, le=1.0)

    def __init__(self, shape, size=64, reinit=0.05):
        super().__init__()
        self.register_buffer("bank", torch.rand(size, *shape) * 2 - 1)
        self.reinit = reinit
        self._idx = None

    @classmethod
    def from_params(cls, params, context):
        return cls(context.require_shape("test-bank"), **params.model_dump())

    def sample(self, n, *, data=None):
        self._idx = torch.randint(self.bank.shape[0], (n,), device=self.bank.device)
        x = self.bank[self._idx].clone()
        fresh = torch.rand(n, device=x.device) < self.reinit
        x[fresh] = torch.rand_like(x[fresh]) * 2 - 1
        return x

    def update(self, samples):
        self.bank[self._idx] = samples.detach()
        return {"bank_mean": float(self.bank.mean())}


class AdaptiveLangevin(LangevinSampler):
    """Langevin whose step size shrinks by ``decay`` after every chain."""

    class Params(ebmkit.Params):
        steps: int = Field(5, ge=0)
        step_size: float = Field(1.0, gt=0)
        noise: float = Field(0.01, ge=0)
        decay: float = Field(0.97, gt=0, le=1)

    def __init__(self, steps=5, step_size=1.0, noise=0.01, decay=0.97):
        super().__init__(steps, step_size, noise)
        self.decay, self.runs = decay, 0

    @classmethod
    def from_params(cls, params, context):
        return cls(**params.model_dump())

    def run(self, energy, z, **kw):
        out = super().run(energy, z, **kw)
        self.step_size *= self.decay
        self.runs += 1
        out.stats["step_size"] = self.step_size
        return out

    def state_dict(self):
        return {"step_size": self.step_size, "runs": self.runs}

    def load_state_dict(self, state):
        self.step_size, self.runs = float(state["step_size"]), int(state["runs"])


class Faulty(MaximumLikelihood):
    """Maximum likelihood with a NaN or a blow-up injected at iteration ``at``."""

    class Params(MaximumLikelihood.Params):
        at: int = Field(..., ge=1, description="iteration (from 1) of the fault")
        fault: str = Field("nan", pattern="^(nan|explode)$")
        factor: float = 1e8
        times: int = Field(1, ge=1)

    def __init__(self, at, fault="nan", factor=1e8, times=1, **base):
        super().__init__(**base)  # maximum-likelihood's own parameters, whatever they are
        self.at, self.fault, self.factor, self.left = at, fault, factor, times
        self.iteration = 0

    def set_progress(self, iteration, total):
        self.iteration = iteration + 1
        return {}

    def energies(self, energy, positive, negative):
        u_pos, u_neg = super().energies(energy, positive, negative)
        if self.iteration == self.at and self.left > 0:
            self.left -= 1
            bad = float("nan") if self.fault == "nan" else self.factor
            u_pos, u_neg = u_pos * bad, u_neg * bad
        return u_pos, u_neg


@ebmkit.hookimpl
def ebmkit_objectives():
    return {"test-faulty": Faulty}


@ebmkit.hookimpl
def ebmkit_initializers():
    return {"test-bank": Bank}


@ebmkit.hookimpl
def ebmkit_samplers():
    return {"test-adaptive-langevin": AdaptiveLangevin}
