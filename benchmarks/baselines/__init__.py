"""Baselines the benchmark harness trains beside the EBM: a VAE and a DCGAN.

Both use the DCGAN architecture (Radford et al. 2016) scaled to the image
size: 4x4 stride-2 (transposed) convolutions doubling / halving the width
between 4x4 and the image size, batch norm, ReLU / LeakyReLU(0.2).  At 32 px
with ``nf = 64`` they are the usual 32x32 DCGAN; at 64 px the usual 64x64 one;
the shipped data uses a smaller ``nf``.

Each baseline offers the same three calls as the EBM in the harness:
``train_step(x) -> logs``, ``sample(n) -> images`` and
``reconstruct(x) -> images`` (VAE: encoder mean -> decoder; DCGAN: Langevin
inference of z, as in section 5.3 of the short-run paper).
"""

from .dcgan import DCGAN
from .vae import VAE

__all__ = ["DCGAN", "VAE"]
