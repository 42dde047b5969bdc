"""The Langevin chain made fast on a GPU: low-precision autocast, torch.compile
and CUDA-graph capture of the K-step loop.

A chain needs grad_x U(x) with the weights fixed, K times.  Three things make
that cheaper on a GPU, each optional and each independent of the others:

* **autocast** (``precision = "bf16"`` or ``"fp16"``): only the energy's
  forward pass and its input-gradient pass run in the low precision; the chain
  state x, the gradient handed to the update and the update itself stay fp32.
  fp16 gets *loss scaling*: the backward pass starts from a scale S instead of
  1 (so that small gradients do not underflow) and the gradient is divided by
  S.  S is fixed within a chain (a captured graph reads it from a device
  tensor) and adjusted between chains: a chain whose gradient overflowed is
  run again from the same start and noise with S lowered 16-fold; S doubles
  after a run of clean chains; when even S = 1 overflows, the chain runs in
  fp32.
* **compile** (``compile = True``): the energy's forward pass is
  ``torch.compile``-d; autograd's input gradient then runs the compiled
  backward graph (AOTAutograd), so the input gradient is compiled too.
* **CUDA-graph capture** (``cuda_graph = True``): the K-step loop is captured
  once (static buffers for x, the noise, the gradient norms) and replayed
  for every later chain of the same shape -- one launch instead of thousands.
  Long chains replay a captured block of steps (at most 100) several times.
  Noise is drawn outside the graph, step by step, exactly as the eager chain
  draws it, so a seed gives the same chain captured or not.  Capture is
  declined, with a logged reason (once per reason), for a CPU chain, a
  recorded trajectory, a conditional energy (its condition changes per
  batch), an energy with batch-norm or dropout in training mode, or when the
  capture itself fails (e.g. an energy that synchronises with the CPU); the
  chain then runs eagerly with the other options.

Settings come from ``[performance]`` (``chain_precision``, ``chain_compile``,
``chain_cuda_graph``) through :func:`chain_settings`, which the trainer enters
around its chains; any code can do the same::

    with chain_settings(precision="bf16", cuda_graph=True):
        x = sampler.run(energy, z).x

``auto`` (the default) means off on a CPU -- the CPU chain is exactly the one
before this module existed -- and the measured GPU defaults
(:mod:`ebmkit.gpu_defaults`) on a CUDA device; under an outer autocast (e.g.
``training.mixed_precision``) ``auto`` precision follows it.  The ``langevin``
and ``gradient-descent`` samplers call :func:`accelerated_chain`; when nothing
is switched on it returns ``None`` and the sampler's own loop runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from . import gpu_defaults
from .errors import ConfigError
from .sampling import langevin_step

log = logging.getLogger("ebmkit")

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MAX_GRAPH_BLOCK = 100  # steps per captured block; longer chains replay it several times
MAX_CACHED_GRAPHS = 2  # e.g. the training chain and the sample-grid chain
COMPILE_OPTIONS: dict[str, Any] = {"dynamic": False}  # passed to torch.compile (tests use a cheap backend)


# -- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainSettings:
    """What the chain may use: ``precision`` ("auto", "fp32", "bf16", "fp16"),
    ``compile`` and ``cuda_graph`` (``None``: auto)."""

    precision: str = "auto"
    compile: bool | None = None
    cuda_graph: bool | None = None

    def __post_init__(self) -> None:
        if self.precision not in ("auto", *PRECISIONS):
            raise ConfigError(f"chain precision '{self.precision}' is not one of auto, {', '.join(PRECISIONS)}")

    @classmethod
    def from_config(cls, performance: Any) -> "ChainSettings":
        """From the ``[performance]`` section."""
        return cls(performance.chain_precision, performance.chain_compile, performance.chain_cuda_graph)


_CURRENT: contextvars.ContextVar[ChainSettings] = contextvars.ContextVar("ebmkit_chain_settings", default=ChainSettings())


@contextlib.contextmanager
def chain_settings(settings: ChainSettings | None = None, **overrides: Any) -> Iterator[ChainSettings]:
    """Chains run inside the block use ``settings`` (with ``overrides``)."""
    chosen = dataclasses.replace(settings or ChainSettings(), **overrides)
    token = _CURRENT.set(chosen)
    try:
        yield chosen
    finally:
        _CURRENT.reset(token)


def current_settings() -> ChainSettings:
    return _CURRENT.get()


@dataclass(frozen=True)
class ChainPlan:
    """The settings resolved for one chain on one device."""

    dtype: torch.dtype | None  # autocast dtype of the energy gradient; None: fp32 (autocast off)
    compile: bool
    cuda_graph: bool
    active: bool  # False: the sampler's own loop runs, unchanged


def plan_chain(settings: ChainSettings, device: torch.device) -> ChainPlan:
    """Resolve ``auto``: off on a CPU; the measured GPU defaults on CUDA, where
    an outer autocast (accelerate's mixed precision) decides the precision."""
    cuda = device.type == "cuda"
    outer = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    force_fp32 = False
    if settings.precision == "auto":
        dtype = (outer or PRECISIONS[gpu_defaults.CHAIN_PRECISION]) if cuda else None
    else:
        dtype = PRECISIONS[settings.precision]
        force_fp32 = dtype is None and outer is not None  # fp32 asked for inside an autocast block
    compile_ = settings.compile if settings.compile is not None else cuda and gpu_defaults.CHAIN_COMPILE
    graph = settings.cuda_graph if settings.cuda_graph is not None else cuda and gpu_defaults.CHAIN_CUDA_GRAPH
    return ChainPlan(dtype, bool(compile_), bool(graph), dtype is not None or bool(compile_) or bool(graph) or force_fp32)


# -- logging and counters ------------------------------------------------------------------------

_WARNED: set[str] = set()
STATS: dict[str, Any] = {"captures": 0, "replays": 0, "fallbacks": {}, "fp16_retries": 0, "fp16_fp32_chains": 0}


def _fallback(reason: str) -> None:
    """Count a fallback and log its reason once per process."""
    STATS["fallbacks"][reason] = STATS["fallbacks"].get(reason, 0) + 1
    if reason not in _WARNED:
        _WARNED.add(reason)
        log.warning("ebmkit chain: %s", reason)


# -- the gradient --------------------------------------------------------------------------------


class LossScale:
    """fp16 loss scale of one energy's chains: fixed within a chain (read from
    a device tensor, so a captured graph follows it), halved after a chain
    whose gradient overflowed, doubled after ``growth_interval`` clean chains."""

    def __init__(self, device: torch.device, init: float = 2.0**8, growth_interval: int = 20, backoff: float = 2.0**-4,
                 lowest: float = 1.0, highest: float = 2.0**16):
        self.value, self.clean, self.growth_interval, self.backoff = init, 0, growth_interval, backoff
        self.lowest, self.highest = lowest, highest
        self.tensor = torch.full((), init, device=device)
        self.inverse = torch.full((), 1.0 / init, device=device)

    def _set(self, value: float) -> None:
        self.value = value
        self.tensor.fill_(value)
        self.inverse.fill_(1.0 / value)

    def overflowed(self) -> bool:
        """Lower the scale (x ``backoff``, down to ``lowest``: below 1 the
        values themselves overflow); False when it cannot go lower."""
        self.clean = 0
        if self.value <= self.lowest:
            return False
        self._set(max(self.lowest, self.value * self.backoff))
        return True

    def succeeded(self) -> None:
        self.clean += 1
        if self.clean >= self.growth_interval and self.value < self.highest:
            self._set(self.value * 2)
            self.clean = 0


_SCALES: "weakref.WeakKeyDictionary[nn.Module, LossScale]" = weakref.WeakKeyDictionary()


def loss_scale(energy: nn.Module, device: torch.device) -> LossScale:
    scale = _SCALES.get(energy)
    if scale is None or scale.tensor.device != device:
        scale = _SCALES[energy] = LossScale(device)
    return scale


def _autocast(device_type: str, dtype: torch.dtype | None):
    """Autocast to ``dtype``; ``None``: fp32 (an outer autocast switched off)."""
    if dtype is not None:  # cache off: frozen weights are never cached, and a captured graph must re-cast them
        return torch.autocast(device_type, dtype=dtype, cache_enabled=False)
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _forward(energy: nn.Module, x: Tensor, device_type: str, dtype: torch.dtype | None) -> Tensor:
    with _autocast(device_type, dtype):
        return energy(x)


_COMPILED_FORWARD: Callable[..., Tensor] | None = None


def compiled_forward() -> Callable[..., Tensor]:
    """``_forward`` through torch.compile (one compiled function; Dynamo keeps
    an entry per energy and dtype)."""
    global _COMPILED_FORWARD
    if _COMPILED_FORWARD is None:
        _COMPILED_FORWARD = torch.compile(_forward, **COMPILE_OPTIONS)
    return _COMPILED_FORWARD


def set_compile_options(**options: Any) -> None:
    """Change the torch.compile options (e.g. ``backend="eager"`` for a quick check)."""
    global _COMPILED_FORWARD
    COMPILE_OPTIONS.clear()
    COMPILE_OPTIONS.update({"dynamic": False, **options})
    _COMPILED_FORWARD = None


def chain_gradient(energy: nn.Module, like: Tensor, plan: ChainPlan, *, fast: bool = True,
                   scale: LossScale | None = None) -> Callable[[Tensor], Tensor]:
    """``g(x) = grad_x sum_i U(x_i)`` in fp32 for an fp32 ``x``, with the
    energy evaluated under ``plan``'s autocast (and compiled when asked).
    With ``fast`` and no compile, the energy's own input gradient is used when
    it offers one for this precision (it is asked inside the autocast)."""
    device_type, dtype = like.device.type, plan.dtype
    if fast and not plan.compile and scale is None:
        offer = getattr(energy, "input_grad_fn", None)
        if callable(offer):
            with _autocast(device_type, dtype):
                own = offer(like)
            if own is not None:
                def offered(x: Tensor) -> Tensor:
                    with _autocast(device_type, dtype):
                        return own(x).float()
                return offered
    forward = compiled_forward() if plan.compile else _forward

    def autograd_gradient(x: Tensor) -> Tensor:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            u = forward(energy, x, device_type, dtype)
            if scale is None:
                (g,) = torch.autograd.grad(u, x, grad_outputs=torch.ones_like(u))
                return g
            (g,) = torch.autograd.grad(u, x, grad_outputs=scale.tensor.to(u.dtype).expand(u.shape))
        return g * scale.inverse

    return autograd_gradient


_FP16_GAVE_UP = "the fp16 chain gradient overflowed even at loss scale 1; such chains run in fp32"


class _Fp16Overflow(Exception):
    pass


# -- the loop ----------------------------------------------------------------------------------------


def _steps(gradient: Callable[[Tensor], Tensor], x: Tensor, count: int, noise_at: Callable[[int], Tensor] | None,
           grad_norm: Tensor, found: Tensor | None, sampler: Any, record: tuple[int, ...] = (),
           trajectory: dict[int, Tensor] | None = None) -> None:
    """``count`` Langevin steps on x in place (the langevin sampler's update,
    x <- x - step * clip(g) + noise * eps, in fp32); the gradient norms go to
    ``grad_norm[k]``; ``found`` collects non-finite gradients (fp16)."""
    dims = tuple(range(1, x.dim()))
    step_size, noise_sd = sampler.step_size, sampler.noise
    for k in range(count):
        g = gradient(x)
        grad_norm[k] = torch.linalg.vector_norm(g, dim=dims).mean() if dims else g.abs().mean()
        if found is not None:
            found.logical_or_(~torch.isfinite(g).all())
        g = sampler.clip(g)  # the logged norm stays the unclipped one
        langevin_step(x, g, step_size, noise_sd, noise_at(k) if noise_sd > 0 and noise_at is not None else None,
                      inplace=True)  # the sampler's own step rule
        if trajectory is not None and k + 1 in record:
            trajectory[k + 1] = x.clone(memory_format=torch.contiguous_format)


def _rng_state(device: torch.device) -> Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(device: torch.device, state: Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def accelerated_chain(sampler: Any, energy: nn.Module, x: Tensor, *, noise: Tensor | None, steps: int,
                      record: tuple[int, ...] = ()) -> Any:
    """Run the sampler's chain from ``x`` (z, already in the chain's memory
    format) under the current :func:`chain_settings`; ``None`` when nothing
    is switched on (the sampler runs its own loop).  Called with the energy
    frozen and gradients off, as the sampler's own loop is."""
    plan = plan_chain(current_settings(), x.device)
    if not plan.active:
        return None
    if getattr(sampler, "final_noise_free", 0):
        _fallback("a noise-free final stretch (final_noise_free) runs in the sampler's own loop")
        return None
    from .interfaces import SampleResult

    trajectory: dict[int, Tensor] = {}
    if 0 in record:
        trajectory[0] = x.clone(memory_format=torch.contiguous_format)
    scale = loss_scale(energy, x.device) if plan.dtype == torch.float16 else None
    if plan.cuda_graph:
        try:
            done = _graph_chain(sampler, energy, x, noise=noise, steps=steps, record=record, plan=plan, scale=scale)
        except _Fp16Overflow:  # overflowed at every scale: this chain in fp32, eagerly
            plan, scale, done = dataclasses.replace(plan, dtype=None), None, None
        if done is not None:
            return SampleResult(x=done[0], grad_norm=done[1], trajectory=trajectory)
    grad_norm = torch.zeros(steps, device=x.device)
    _eager_chain(sampler, energy, x, noise=noise, steps=steps, record=record, plan=plan, scale=scale,
                 grad_norm=grad_norm, trajectory=trajectory)
    return SampleResult(x=x.contiguous(), grad_norm=grad_norm, trajectory=trajectory)


def _eager_chain(sampler: Any, energy: nn.Module, x: Tensor, *, noise: Tensor | None, steps: int,
                 record: tuple[int, ...], plan: ChainPlan, scale: LossScale | None, grad_norm: Tensor,
                 trajectory: dict[int, Tensor]) -> None:
    """The chain step by step (x updated in place), with fp16 retries."""
    def noise_at(k: int) -> Tensor:
        return noise[k] if noise is not None else torch.randn(x.shape, dtype=x.dtype, device=x.device)

    fast = getattr(sampler, "fast", True)
    if scale is None:
        gradient = chain_gradient(energy, x, plan, fast=fast)
        _steps(gradient, x, steps, noise_at, grad_norm, None, sampler, record, trajectory)
        return
    start, rng = x.clone(), (_rng_state(x.device) if noise is None else None)
    found = torch.zeros((), dtype=torch.bool, device=x.device)
    gradient = chain_gradient(energy, x, plan, fast=fast, scale=scale)
    while True:
        found.zero_()
        _steps(gradient, x, steps, noise_at, grad_norm, found, sampler, record, trajectory)
        if not bool(found):
            scale.succeeded()
            return
        STATS["fp16_retries"] += 1
        x.copy_(start)
        if rng is not None:
            _set_rng_state(x.device, rng)
        if not scale.overflowed():
            break
    # the gradient overflows fp16 at every scale: this chain runs in fp32
    STATS["fp16_fp32_chains"] += 1
    _fallback(_FP16_GAVE_UP)
    gradient = chain_gradient(energy, x, dataclasses.replace(plan, dtype=None), fast=fast)
    _steps(gradient, x, steps, noise_at, grad_norm, None, sampler, record, trajectory)


# -- CUDA-graph capture --------------------------------------------------------------------------------


class CudaGraphCapture:
    """Captures with ``torch.cuda.CUDAGraph`` (after a warm-up on a side
    stream, as torch's documentation asks) and returns its ``replay``."""

    name = "cuda"

    def supports(self, device: torch.device) -> bool:
        return device.type == "cuda"

    def capture(self, body: Callable[[], None], warmup: Callable[[], None]) -> Callable[[], None]:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            warmup()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            body()
        return graph.replay


capture_backend: Any = CudaGraphCapture()
"""What captures the loop.  Tests on a CPU swap in a stand-in whose "replay"
reruns the captured function on the same static buffers, which covers the
bookkeeping (buffers, cache, replay, fallback) without a GPU."""


@dataclass
class CapturedChain:
    """One captured block of steps and its static buffers."""

    x: Tensor  # the chain state, in the chain's memory format
    noise: Tensor | None  # (block, *x.shape): the block's standard-normal draws
    grad_norm: Tensor  # (block,)
    found: Tensor | None  # fp16: a non-finite gradient was seen
    block: int
    replay: Callable[[], None]
    keep: tuple[Any, ...]  # what the graph reads and must outlive it (energy, loss scale)
    replays: int = 0


_GRAPHS: "OrderedDict[tuple, CapturedChain]" = OrderedDict()
_FAILED: dict[tuple, str] = {}


def release_graphs() -> None:
    """Drop every captured chain (and the memory its buffers hold)."""
    _GRAPHS.clear()
    _FAILED.clear()


def graph_block(steps: int) -> int:
    """Steps per captured block: K itself up to MAX_GRAPH_BLOCK, else its
    largest divisor not above it (so K = 2000 replays a 100-step block 20 times)."""
    return max(d for d in range(1, min(steps, MAX_GRAPH_BLOCK) + 1) if steps % d == 0)


def graph_blocker(energy: nn.Module, x: Tensor, record: tuple[int, ...]) -> str | None:
    """Why this chain cannot be captured (None: it can)."""
    from .conditional import ConditionalEnergy

    if not capture_backend.supports(x.device):
        return f"CUDA-graph capture needs a CUDA device (this chain runs on {x.device.type}); running eagerly"
    if x.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return "already inside a CUDA-graph capture; running eagerly"
    if record:
        return "a recorded trajectory is not captured; running eagerly"
    if isinstance(energy, ConditionalEnergy):
        return "a conditional energy's condition changes per batch, so its chain is not captured; running eagerly"
    for m in energy.modules():
        if m.training and (isinstance(m, nn.modules.batchnorm._BatchNorm) or (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0)):
            return (f"{type(energy).__name__} has {type(m).__name__} in training mode (state or randomness a "
                    "captured graph would freeze); running eagerly")
    return None


def _graph_key(sampler: Any, energy: nn.Module, x: Tensor, block: int, plan: ChainPlan, scale: LossScale | None) -> tuple:
    storage = tuple(t.data_ptr() for t in (*energy.parameters(), *energy.buffers()))
    fmt = "channels_last" if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() else "standard"
    return (id(energy), storage, tuple(x.shape), x.dtype, str(x.device), fmt, block, float(sampler.step_size),
            float(sampler.noise), getattr(sampler, "grad_clip", None), getattr(sampler, "grad_clip_mode", "element"),
            getattr(sampler, "fast", True), plan.dtype, plan.compile, id(scale), type(capture_backend).__name__)


def _capture(sampler: Any, energy: nn.Module, x: Tensor, block: int, plan: ChainPlan, scale: LossScale | None) -> CapturedChain:
    static_x = x.clone()  # keeps the memory format
    noise = torch.zeros((block, *x.shape), dtype=x.dtype, device=x.device) if sampler.noise > 0 else None
    grad_norm = torch.zeros(block, device=x.device)
    found = torch.zeros((), dtype=torch.bool, device=x.device) if scale is not None else None
    gradient = chain_gradient(energy, static_x, plan, fast=getattr(sampler, "fast", True), scale=scale)
    noise_at = (lambda k: noise[k]) if noise is not None else None

    def body(count: int = block) -> None:
        _steps(gradient, static_x, count, noise_at, grad_norm, found, sampler)

    # warm-up: a few steps on the static buffers (allocator, cuDNN choices, compilation), overwritten later
    replay = capture_backend.capture(body, lambda: body(min(block, 3)))
    STATS["captures"] += 1
    return CapturedChain(static_x, noise, grad_norm, found, block, replay, keep=(energy, scale))


def _graph_chain(sampler: Any, energy: nn.Module, x: Tensor, *, noise: Tensor | None, steps: int,
                 record: tuple[int, ...], plan: ChainPlan, scale: LossScale | None) -> tuple[Tensor, Tensor] | None:
    """The chain as replays of a captured block; None when it cannot be captured."""
    reason = graph_blocker(energy, x, record)
    if reason is not None or steps == 0:
        if reason:
            _fallback(reason)
        return None
    block = graph_block(steps)
    key = _graph_key(sampler, energy, x, block, plan, scale)
    if key in _FAILED:
        _fallback(_FAILED[key])
        return None
    entry = _GRAPHS.get(key)
    if entry is None:
        try:
            entry = _capture(sampler, energy, x, block, plan, scale)
        except Exception as exc:  # noqa: BLE001 - any capture failure means: run eagerly, say why
            text = " ".join(str(exc).split())[:200]
            _FAILED[key] = f"CUDA-graph capture of {type(energy).__name__}'s chain failed ({type(exc).__name__}: {text}); running eagerly"
            _fallback(_FAILED[key])
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            return None
        _GRAPHS[key] = entry
        while len(_GRAPHS) > MAX_CACHED_GRAPHS:
            _GRAPHS.popitem(last=False)
    _GRAPHS.move_to_end(key)
    grad_norm = torch.zeros(steps, device=x.device)
    rng = _rng_state(x.device) if scale is not None and noise is None else None
    while True:
        entry.x.copy_(x)
        if entry.found is not None:
            entry.found.zero_()
        for start in range(0, steps, block):
            if entry.noise is not None:
                if noise is not None:
                    entry.noise.copy_(noise[start:start + block])
                else:  # the eager chain's draws, one step at a time
                    for k in range(block):
                        torch.randn(x.shape, out=entry.noise[k])
            entry.replay()
            entry.replays += 1
            STATS["replays"] += 1
            grad_norm[start:start + block].copy_(entry.grad_norm)
        if scale is None or not bool(entry.found):
            if scale is not None:
                scale.succeeded()
            return entry.x.clone(memory_format=torch.contiguous_format), grad_norm
        STATS["fp16_retries"] += 1
        if rng is not None:
            _set_rng_state(x.device, rng)
        if not scale.overflowed():
            _fallback(_FP16_GAVE_UP)
            STATS["fp16_fp32_chains"] += 1
            raise _Fp16Overflow  # the caller runs this chain eagerly in fp32 from the same start and noise
