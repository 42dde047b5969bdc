"""What ``auto`` means for a chain on a CUDA device.

The GPU chain's options (``[performance]`` ``chain_precision``,
``chain_compile``, ``chain_cuda_graph``, ``channels_last``; see
:mod:`ebmkit.chain_acceleration` and docs/performance.md) default to
``auto``.  On a CPU ``auto`` never turns any of them on.  On a CUDA device it
takes the values below, which are meant to be chosen by measurement:
``python -m benchmarks.gpu_check`` prints the fastest configuration whose
samples stay within tolerance of fp32 ("recommended defaults").

# >>> GPU DEFAULTS: set these from a gpu_check run (docs/performance.md, "GPU").
# NOT YET MEASURED: until a run on a GPU has been read, every value keeps the
# behaviour from before the GPU path existed (fp32 chain, no compile, no
# capture, contiguous memory).
"""

MEASURED: str | None = None
"""Where the values come from: machine, date and command of the gpu_check run (None: not yet measured)."""

CHAIN_PRECISION: str = "fp32"
"""``"fp32"``, ``"bf16"`` or ``"fp16"``: autocast dtype of the chain's energy gradient."""

CHAIN_COMPILE: bool = False
"""torch.compile the energy's forward/backward used for the chain's input gradient."""

CHAIN_CUDA_GRAPH: bool = False
"""Capture the K-step loop as a CUDA graph and replay it per chain."""

CHANNELS_LAST: bool = False
"""channels_last image chains and weights for energies that declare ``channels_last_ok``."""

CUDNN_BENCHMARK: bool = False
"""``torch.backends.cudnn.benchmark`` for training runs on CUDA (the trainer sets it)."""

# <<< GPU DEFAULTS
