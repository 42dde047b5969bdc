"""The settings of a map: everything that decides its result.

Kept free of torch so that building the ``ebmkit`` parser stays quick.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt


class MapSettings(BaseModel):
    """Everything that decides a map's result (a rerun with other settings starts afresh)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="seeds the starts, the chains and k-means")
    temperature: PositiveFloat = Field(1.0, description="T in U(x)/T + alpha*||x - x_B||; 1 = the trained chain's temperature")
    alpha: PositiveFloat | None = Field(None, description="magnetisation; None: calibrate (the metastable window's middle)")
    delta: PositiveFloat | None = Field(None, description="distance that counts as reaching a minimum, and below which two "
                                        "minima are one; None: 0.05 * sqrt(dimension)")
    patience: PositiveInt = Field(100, description="an AD chain fails when its closest approach has not improved for this many steps")
    max_steps: PositiveInt = Field(2000, description="an AD chain fails after this many steps")
    check_every: PositiveInt = Field(10, description="AD steps run between checks of the chains")
    step_size: PositiveFloat | None = Field(None, description="Langevin step of the AD chains (None: the run's sampler's)")
    noise: NonNegativeFloat | None = Field(None, description="Langevin noise sd of the AD chains (None: the run's sampler's)")
    descent_steps: NonNegativeInt = Field(1000, description="most gradient-descent steps from each start")
    descent_step_size: PositiveFloat | None = Field(None, description="gradient-descent step (None: the AD step)")
    descent_tolerance: NonNegativeFloat = Field(1e-4, description="descent stops below this movement per step "
                                                "(root mean square per coordinate)")
    wave: PositiveInt = Field(16, description="minima grouped per batch of AD trials")
    directions: Literal["both", "forward", "backward"] = Field(
        "both", description="AD from the new minimum to the basin's ('forward'), back, or both (either may connect)")
    barrier_ladder: tuple[PositiveFloat, ...] = Field((2.0, 4.0, 8.0, 16.0, 32.0), description="multiples of alpha tried, "
                                                      "in order, for the barriers between basins")
    calibration_pairs: PositiveInt = Field(24, description="random pairs of minima used to calibrate alpha")
    calibration_rate: float | None = Field(None, gt=0.0, lt=1.0, description="calibrate to the alpha at which this "
                                           "share of random pairs connects (None: the metastable window's middle)")
    calibration_alphas: tuple[PositiveFloat, ...] | None = Field(None, description="alphas tried (None: a grid from the "
                                                                  "pairs' straight-line slopes)")
    box: tuple[float, float] | None = Field(None, description="keep chains in [low, high] with a quadratic wall "
                                            "(ebmkit map: (-1, 1) for images); None: no wall")
    wall: PositiveFloat | None = Field(None, description="stiffness of the wall (None: 0.5 / the AD step, half the "
                                       "largest stable value)")
    batch_size: PositiveInt = Field(512, description="chains run at once")


__all__ = ["MapSettings"]
