"""What ``auto`` means for a chain on a CUDA device.

The GPU chain's options (``[performance]`` ``chain_precision``,
``chain_compile``, ``chain_cuda_graph``, ``channels_last``; see
:mod:`ebmkit.chain_acceleration` and docs/performance.md) default to
``auto``.  On a CPU ``auto`` never turns any of them on.  On a CUDA device it
takes the values below, which are meant to be chosen by measurement:
``python -m benchmarks.gpu_check`` prints the fastest configuration whose
samples stay within tolerance of fp32 ("recommended defaults").

# >>> GPU DEFAULTS: set from a gpu_check run (docs/performance.md, "GPU").
Measured on an H200: bf16 + channels_last + CUDA graph was the fastest chain
without compilation and within tolerance (2.20x the paper's fp32 loop at
32x32, 2.43x at 64x64); compile adds about 10 % for 10 s of compilation per
run and stays opt-in; cudnn.benchmark changed nothing.
"""

MEASURED: str | None = ("NVIDIA H200, torch 2.11.0 / CUDA 13.0, 2026-12-04: "
                         "bash benchmarks/gpu_run.sh --budget 360 --smoke-seconds 90")
"""Where the values come from: machine, date and command of the gpu_check run (None: not yet measured)."""

CHAIN_PRECISION: str = "bf16"
"""``"fp32"``, ``"bf16"`` or ``"fp16"``: autocast dtype of the chain's energy gradient."""

CHAIN_COMPILE: bool = False
"""torch.compile the energy's forward/backward used for the chain's input gradient."""

CHAIN_CUDA_GRAPH: bool = True
"""Capture the K-step loop as a CUDA graph and replay it per chain."""

CHANNELS_LAST: bool = True
"""channels_last image chains and weights for energies that declare ``channels_last_ok``."""

CUDNN_BENCHMARK: bool = False
"""``torch.backends.cudnn.benchmark`` for training runs on CUDA (the trainer sets it)."""

# <<< GPU DEFAULTS
