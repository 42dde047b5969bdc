"""Inference: the trained short-run chain as a generator.

* :mod:`~ebmkit.generation.generator` -- :class:`ShortRunGenerator`, the one
  pipeline behind every sampling verb (samples, transitions, interpolation,
  reconstruction, super-resolution, inpainting);
* :mod:`~ebmkit.generation.cooperative` -- VAE proposals revised by Langevin;
* :mod:`~ebmkit.generation.inpainting` -- completions, baselines and scores.
"""

from .generator import Reconstruction, ReconstructParams, ShortRunGenerator

__all__ = ["Reconstruction", "ReconstructParams", "ShortRunGenerator"]
