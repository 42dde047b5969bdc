"""Energy-landscape mapping by Attraction-Diffusion (Hill, Nijkamp and Zhu 2019).

The anatomy paper's fourth contribution: local minima of U by gradient
descent, macroscopic basins by Attraction-Diffusion between minima, barrier
estimates, a disconnectivity graph, and the basins as an unsupervised
clustering.  One concept per module:

* :mod:`~ebmkit.mapping.attraction_diffusion` -- the magnetised energy and batched AD trials;
* :mod:`~ebmkit.mapping.minima` -- descent from starts and de-duplication at distance delta;
* :mod:`~ebmkit.mapping.basins` -- grouping minima into basins (in energy order) and barriers between basins;
* :mod:`~ebmkit.mapping.calibration` -- the metastable alpha;
* :mod:`~ebmkit.mapping.disconnectivity` -- the tree of basins, its JSON and its picture;
* :mod:`~ebmkit.mapping.clustering` -- purity / ARI against labels, beside k-means;
* :mod:`~ebmkit.mapping.engine` -- the resumable pipeline; :mod:`~ebmkit.mapping.report` -- its files;
* :mod:`~ebmkit.mapping.run` -- the ``ebmkit map`` command.

See docs/landscape.md.
"""

from .attraction_diffusion import ADResult, MagnetisedEnergy, attraction_diffusion
from .basins import BarrierSearch, Grouping
from .calibration import Calibration, calibrate_alpha
from .clustering import compare_with_kmeans, purity
from .disconnectivity import DisconnectivityGraph, Node, plot_disconnectivity
from .engine import LandscapeMapper, MapSettings
from .minima import Descent, deduplicate, descend

__all__ = ["ADResult", "BarrierSearch", "Calibration", "Descent", "DisconnectivityGraph", "Grouping", "LandscapeMapper",
           "MagnetisedEnergy", "MapSettings", "Node", "attraction_diffusion", "calibrate_alpha", "compare_with_kmeans",
           "deduplicate", "descend", "plot_disconnectivity", "purity"]
