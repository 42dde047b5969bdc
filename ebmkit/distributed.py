"""Data-parallel runs on accelerate: launching, per-process seeds, sharded
chain state, gathered metrics, and work split across processes.

accelerate (torch.distributed underneath: gloo on CPU, NCCL on GPUs) does all
communication; the energy is wrapped in DistributedDataParallel by
``accelerator.prepare``, so gradients are all-reduced (averaged) in the
backward pass.  This module holds the few decisions ebmkit makes on top:

* **launching** -- :func:`launch` starts N copies of a command through
  torch.distributed's elastic launcher (what ``torchrun`` and
  ``accelerate launch --multi_gpu`` run), on a free port;
* **seeds** -- weights start identical everywhere (built under
  ``training.seed``); then each process seeds its own chain / noise stream
  from ``(seed, rank)`` (:func:`seed_processes`), and checkpoints keep every
  process's RNG state (:func:`gather_rng_states`), so resuming at the same
  process count is exact;
* **sharded state** -- an initializer lists the buffers whose rows are
  independent chains in ``sharded_buffers`` (a persistent bank); each process
  keeps its contiguous share of rows (:func:`shard_module`), checkpoints hold
  the whole bank (:func:`full_state_dict`), and each process takes its share
  back on resume (:func:`local_state_dict`) -- at any process count;
* **metrics** -- :func:`mean_over_processes` averages the logged numbers, so
  what is logged describes the global batch;
* **split work** -- :func:`map_batches` splits a large job (sampling, FID
  features, reconstruction) into batches across processes and gathers the
  results in order; batch *j* is seeded from ``(seed, j)`` so the result does
  not depend on the process count.

Everything here is a no-op (or a plain loop) in a single process.
"""

from __future__ import annotations

import math
import os
import sys
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather, gather_object, patch_environment, reduce
from torch import Tensor, nn

from .errors import ConfigError

# -- launching ------------------------------------------------------------------------------


def launched() -> bool:
    """True inside a process started by a distributed launcher (torchrun,
    ``accelerate launch``, :func:`launch`), which sets ``LOCAL_RANK``."""
    return "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch(args: list[str], num_processes: int, *, module: str = "ebmkit", max_restarts: int = 0) -> int:
    """Run ``python -m <module> <args>`` in ``num_processes`` processes on
    this machine and return the exit status (0, or the first failure's).

    This is torch.distributed's elastic launcher -- the one behind
    ``torchrun`` and ``accelerate launch --multi_gpu`` -- in standalone mode,
    so the rendezvous picks a free port.  Each child reads its rank and the
    world size from the environment; accelerate turns that into a process
    group (gloo on CPU, NCCL on GPUs).  Threads: unless ``OMP_NUM_THREADS``
    is set, each child gets an equal share of this process's cores.
    """
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if num_processes < 1:
        raise ConfigError(f"--num-processes must be at least 1, got {num_processes}")
    # The cores this process may use, shared out (torchrun would set 1 and say so).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(max(1, cores // num_processes))}
    parsed = torchrun.get_args_parser().parse_args([
        "--standalone", f"--nproc-per-node={num_processes}", f"--max-restarts={max_restarts}", "--module", module,
    ])
    # Given after parsing: the launcher's parser would read the command's own
    # options as abbreviations of its own (`--n=64` -> "ambiguous option: --nnodes, ...").
    parsed.training_script_args = list(args)
    import signal

    # torch's launcher installs its own SIGINT / SIGTERM / ... handlers in this process and leaves them;
    # put ours back, so that a caller in the same process (ebmkit.cli.main, a test) keeps its Ctrl-C handling.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None),
                                                       getattr(signal, "SIGQUIT", None)) if sig is not None}
    try:
        with patch_environment(**env):
            torchrun.run(parsed)
    except ChildFailedError as exc:
        failures = sorted(exc.failures.items())
        ranks = ", ".join(str(f.local_rank) for _, f in failures)
        print(f"ebmkit: process(es) {ranks} of {num_processes} failed (messages above)", file=sys.stderr)
        return next((f.exitcode for _, f in failures if f.exitcode > 0), 1)
    finally:
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
    return 0


def leave_process_group(succeeded: bool) -> None:
    """End this process's part in a launched run: wait for the others (after
    a success), then destroy the process group.  Exiting with the group alive
    let gloo's threads be torn down while a peer still talked to them, which
    aborted a rank now and then ("terminate called without an active exception")."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    try:
        if succeeded:  # a failed peer may never arrive: no barrier then
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    except Exception:  # noqa: BLE001 -- teardown of a run that is over; its result stands
        pass


# -- seeds -----------------------------------------------------------------------------------


def process_seed(seed: int, rank: int, *tags: int) -> int:
    """A seed for process ``rank`` of a run seeded ``seed``: distinct across
    ranks (and tags), a pure function of its inputs, and unrelated to the
    streams of neighbouring seeds (unlike ``seed + rank``)."""
    words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, rank, *tags]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0])


def seed_processes(seed: int, state: Any) -> None:
    """In a multi-process run, give every process its own chain / noise RNG
    stream.  Call after the model is built (so weights are the same
    everywhere).  A single process keeps its stream untouched."""
    if state.num_processes > 1:
        torch.manual_seed(process_seed(seed, state.process_index))


def gather_rng_states(state: Any) -> dict[str, Tensor] | None:
    """Every process's torch RNG state (CPU, and its own CUDA device), as
    ``{"rank<r>.torch_cpu": ..., "rank<r>.torch_cuda": ...}`` -- for a
    checkpoint.  Collective: every process must call it.  ``None`` in a
    single process (the checkpoint's own RNG capture covers it)."""
    if state.num_processes == 1:
        return None
    mine = {"torch_cpu": torch.get_rng_state()}
    if state.device.type == "cuda":
        mine["torch_cuda"] = torch.cuda.get_rng_state(state.device)
    everyone = gather_object([(state.process_index, mine)])
    return {f"rank{r}.{k}": v for r, states in everyone for k, v in states.items()}


def restore_rng_states(saved: Mapping[str, Tensor] | None, state: Any, seed: int, iteration: int) -> None:
    """Continue this process's RNG stream from a checkpoint.

    A process whose rank was in the saved run continues exactly; a rank that
    was not (resuming on more processes) starts a fresh stream seeded from
    ``(seed, rank, iteration)``.  Rank 0 of a checkpoint from a single process
    continues from the checkpoint's own RNG state, restored before this."""
    rank = state.process_index
    key = f"rank{rank}.torch_cpu"
    if saved and key in saved:
        torch.set_rng_state(saved[key])
        cuda = saved.get(f"rank{rank}.torch_cuda")
        if cuda is not None and state.device.type == "cuda":
            torch.cuda.set_rng_state(cuda, state.device)
    elif rank > 0:
        torch.manual_seed(process_seed(seed, rank, iteration))


def check_same_iteration(iteration: int, run_dir: Any, state: Any) -> None:
    """After a resume, every process must stand at the same iteration; they
    differ when some machines cannot see the run folder.  Collective."""
    if state.num_processes == 1:
        return
    seen = gather_object([iteration])
    if len(set(seen)) > 1:
        from .errors import CheckpointError

        where = ", ".join(f"process {r}: {it}" for r, it in enumerate(seen))
        raise CheckpointError(
            f"the processes resumed at different iterations ({where}); every machine must see the same run "
            f"folder {run_dir} (put it on a shared filesystem)"
        )


# -- sharded state (a persistent bank) --------------------------------------------------------


def sharded_names(module: nn.Module) -> tuple[str, ...]:
    """The buffers ``module`` declares sharded (``sharded_buffers``), checked."""
    names = tuple(getattr(module, "sharded_buffers", ()) or ())
    buffers = dict(module.named_buffers())
    missing = [n for n in names if n not in buffers]
    if missing:
        raise ConfigError(
            f"{type(module).__name__}.sharded_buffers names {', '.join(missing)}, which are not buffers of it "
            f"(its buffers: {', '.join(buffers) or 'none'})"
        )
    return names


def _shard(tensor: Tensor, state: Any) -> Tensor:
    with state.split_between_processes(tensor) as mine:
        return mine.clone()


def shard_module(module: nn.Module, state: Any) -> None:
    """Keep only this process's contiguous share of rows of every sharded
    buffer (in place).  Rows ``[start, stop)`` go to process ``rank`` exactly
    as accelerate's ``split_between_processes`` splits a list."""
    if state.num_processes == 1:
        return
    for name in sharded_names(module):
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        full = getattr(owner, attr)
        if full.shape[0] < state.num_processes:
            raise ConfigError(
                f"{type(module).__name__}.{name} has {full.shape[0]} rows, fewer than the {state.num_processes} "
                "processes it is split across; make the bank larger"
            )
        setattr(owner, attr, _shard(full, state))


def full_state_dict(module: nn.Module, state: Any) -> dict[str, Tensor]:
    """``module.state_dict()`` with every sharded buffer gathered whole, rows
    in rank order -- what a checkpoint stores, whatever the process count.
    Collective: every process must call it."""
    sd = module.state_dict()
    if state.num_processes > 1:
        for name in sharded_names(module):
            sd[name] = gather_ragged(sd[name], state)
    return sd


def local_state_dict(sd: Mapping[str, Tensor], module: nn.Module, state: Any) -> dict[str, Tensor]:
    """This process's share of a whole (checkpointed) state dict, ready for
    ``module.load_state_dict`` on a sharded module."""
    out = dict(sd)
    if state.num_processes > 1:
        for name in sharded_names(module):
            if name in out:
                out[name] = _shard(out[name], state)
    return out


# -- metrics -----------------------------------------------------------------------------------


def any_process(flag: bool, state: Any) -> bool:
    """True on every process when ``flag`` is true on any one of them, so that
    a decision such as "stop, training diverged" is taken by all together
    (one process leaving a collective alone would hang the others)."""
    if state.num_processes == 1:
        return flag
    return bool(reduce(torch.tensor([float(flag)], device=state.device), "sum").item() > 0)


def mean_over_processes(logs: dict[str, Any], state: Any) -> dict[str, Any]:
    """The numbers in ``logs`` averaged over processes (non-numbers are kept).

    Every process must log the same names in an iteration; a mismatch is an
    error rather than a silently mislabelled average.  A NaN anywhere makes
    the mean NaN everywhere, so every process sees a divergence together.
    """
    if state.num_processes == 1:
        return logs
    names = sorted(k for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    check = float(zlib.crc32("\0".join(names).encode()))
    agree = reduce(torch.tensor([check, -check], dtype=torch.float64, device=state.device), "max")
    if agree.tolist() != [check, -check]:  # max(c) == c and max(-c) == -c only when every c is the same
        raise RuntimeError(
            "processes logged different numbers this iteration (a component's logs must have the same names "
            f"on every process); this one logged: {', '.join(names)}"
        )
    values = reduce(torch.tensor([float(logs[k]) for k in names], dtype=torch.float64, device=state.device), "mean")
    return {**logs, **dict(zip(names, values.tolist()))}


def average_gradients(module: nn.Module) -> None:
    """Average ``module``'s gradients over processes, in place.

    For models that learn outside the energy's DDP wrapper (a VAE proposal
    fitting its own revised samples): every process computes gradients on its
    share, and averaging them keeps the copies identical.  A no-op in a single
    process."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def average_buffers(module: nn.Module) -> None:
    """Average ``module``'s floating-point buffers over processes, in place
    (batch-norm running statistics of a model outside DDP, which would
    otherwise drift apart: each process sees its own batches).  A no-op in a
    single process."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b /= dist.get_world_size()


# -- learning rate -----------------------------------------------------------------------------


def scaled_lr(lr: float, rule: str, num_processes: int) -> float:
    """The learning rate for ``num_processes`` processes, from one tuned for
    one process: ``none`` keeps it, ``linear`` multiplies by the process
    count (the global batch grows by that factor), ``sqrt`` by its root."""
    if rule == "linear":
        return lr * num_processes
    if rule == "sqrt":
        return lr * math.sqrt(num_processes)
    return lr


def describe(state: Any, batch_size: int, lr: float, config_lr: float, rule: str) -> str:
    """One line naming the process count, the global batch and the learning rate."""
    n = state.num_processes
    where = f"{n} process{'es' if n > 1 else ''}" + (
        f" ({state.distributed_type.value}, {PartialState().backend}, {state.device.type})" if n > 1 else f" ({state.device.type})"
    )
    scaling = "" if rule == "none" or n == 1 else f" = {config_lr:g} x {rule} scaling for {n} processes"
    return f"training on {where}: global batch {batch_size * n} = {n} x {batch_size} per process; learning rate {lr:g}{scaling}"


# -- work split across processes -----------------------------------------------------------------


def gather_ragged(tensor: Tensor | None, state: Any = None) -> Tensor:
    """Concatenate every process's ``tensor`` along dim 0, in rank order, on
    every process.  Shares may differ in length; a process with nothing to
    add passes ``None`` (or zero rows).  The other dimensions and the dtype
    must agree.  Built on accelerate's ``gather`` (an all-gather): shares are
    padded to the longest and the padding dropped.  Collective."""
    state = state or PartialState()
    if state.num_processes == 1:
        return tensor if tensor is not None else torch.zeros(0)
    meta = gather_object([None if tensor is None else (tensor.shape[0], tuple(tensor.shape[1:]), tensor.dtype)])
    known = {(m[1], m[2]) for m in meta if m is not None and m[0] > 0} or {(m[1], m[2]) for m in meta if m is not None}
    if not known:
        return torch.zeros(0)
    if len(known) > 1:
        raise ValueError(f"gather_ragged: processes hold rows of different shapes or dtypes: {sorted(map(str, known))}")
    (row_shape, dtype), = known
    counts = [0 if m is None else m[0] for m in meta]
    longest = max(counts)
    padded = torch.zeros((longest, *row_shape), dtype=dtype, device=state.device)
    if tensor is not None and tensor.shape[0]:
        padded[: tensor.shape[0]] = tensor
    every = gather(padded).to(tensor.device if tensor is not None else "cpu")
    return torch.cat([every[r * longest : r * longest + c] for r, c in enumerate(counts)])


def map_batches(fn: Callable[[int, int], Tensor], n: int, batch_size: int, *, seed: int | None = None,
                state: Any = None) -> Tensor:
    """``torch.cat([fn(start, stop) for each batch])`` over ``range(n)``, with
    the batches split across processes and the results gathered in order on
    every process (on the CPU).

    ``fn(start, stop)`` returns a tensor with ``stop - start`` rows (samples,
    features, reconstructions...) computed on this process's device.  With
    ``seed`` set, torch's RNG is seeded from ``(seed, batch index)`` before
    each batch (on a forked RNG: the caller's stream is untouched), so a
    random ``fn`` gives the same result on any number of processes (for a
    fixed ``batch_size`` and device type).  Collective.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    state = state or PartialState()
    parts: list[Tensor] = []
    devices = [state.device] if state.device.type == "cuda" else []
    with state.split_between_processes(list(range(0, n, batch_size))) as mine, \
            torch.random.fork_rng(devices=devices, enabled=seed is not None):  # the caller's stream is untouched
        for start in mine:
            stop = min(start + batch_size, n)
            if seed is not None:
                torch.manual_seed(process_seed(seed, 0, start // batch_size))
            out = fn(start, stop)
            if out.shape[0] != stop - start:
                raise ValueError(f"map_batches: fn({start}, {stop}) returned {out.shape[0]} rows, expected {stop - start}")
            parts.append(out.detach().cpu())
    return gather_ragged(torch.cat(parts) if parts else None, state)
