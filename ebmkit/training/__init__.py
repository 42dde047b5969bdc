"""Training: Algorithm 1's loop and what rides along with it.

* :mod:`~ebmkit.training.loop` -- :class:`Trainer`, the loop on accelerate;
* :mod:`~ebmkit.training.callbacks` -- hooks into the loop and the metrics log;
* :mod:`~ebmkit.training.divergence` -- the checks that decide when a run diverged;
* :mod:`~ebmkit.training.schedule` -- the learning rate, and its one writer;
* :mod:`~ebmkit.training.diagnostics`, :mod:`~ebmkit.training.landscape` --
  the anatomy paper's diagnostics as a callback, 2-D landscape plots.
"""

from .callbacks import Callback, MetricsLog
from .loop import Trainer

__all__ = ["Callback", "MetricsLog", "Trainer"]
