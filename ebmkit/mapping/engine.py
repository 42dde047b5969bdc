"""The mapping pipeline, resumable: starts -> minima -> alpha -> basins -> barriers.

:class:`LandscapeMapper` works on any energy and any starts (the ``ebmkit
map`` command feeds it a trained run's energy and images).  Each stage
saves its progress in ``OUT/state.safetensors`` -- the tensors and, in the
file's metadata, the JSON state -- with one atomic write, so a kill at any
moment leaves the last finished piece of work on disk and a rerun with the
same settings skips it.  A human-readable copy goes to ``OUT/progress.json``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..checkpoint import atomic_write
from ..errors import ConfigError
from ..sampling import seeded
from .attraction_diffusion import WalledEnergy, attraction_diffusion
from .basins import BarrierSearch, Grouping
from .calibration import Calibration, calibrate_alpha, default_grid, line_thresholds, random_pairs
from .minima import descend, deduplicate
from .settings import MapSettings

STATE_FILE = "state.safetensors"
STATE_VERSION = 1


def _now() -> float:
    return time.perf_counter()


class LandscapeMapper:
    """Maps the landscape of ``energy`` from ``starts``, writing into ``out``.

    ``ad_sampler`` runs the AD chains (a Langevin-type sampler) and
    ``descent_sampler`` the noise-free descent; ``identity`` names what is
    mapped (a checkpoint) so that a rerun against something else starts
    afresh instead of resuming.
    """

    def __init__(self, energy: nn.Module, ad_sampler, descent_sampler, settings: MapSettings, out: str | Path, *,
                 identity: dict[str, Any] | None = None, progress: bool = True, restart: bool = False,
                 device: str | torch.device = "cpu") -> None:
        if settings.box is not None:
            stiffness = settings.wall or 0.5 / float(getattr(ad_sampler, "step_size", 1.0))
            energy = WalledEnergy(energy, *settings.box, stiffness)
        self.energy, self.ad_sampler, self.descent_sampler = energy, ad_sampler, descent_sampler
        self.settings, self.out, self.progress = settings, Path(out), progress
        self.device = torch.device(device)
        self.identity = identity or {}
        self.state: dict[str, Any] = {}
        self.tensors: dict[str, Tensor] = {}
        self.resumed = False
        if not restart:
            self._load()

    # -- the state file -----------------------------------------------------------------
    def _fingerprint(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "settings": self.settings.model_dump(mode="json"), "identity": self.identity}

    def _load(self) -> None:
        path = self.out / STATE_FILE
        if not path.is_file():
            return
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                state = json.loads(f.metadata()["state"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # noqa: BLE001 - any unreadable file: say so, do not guess
            raise ConfigError(f"{path}: cannot read the mapping state ({exc}); pass --restart to start afresh") from None
        mine, theirs = self._fingerprint(), {k: state.get(k) for k in ("version", "settings", "identity")}
        # settings added since that map was made count as their defaults
        theirs["settings"] = {**MapSettings().model_dump(mode="json"), **(theirs["settings"] or {})}
        if mine != theirs:
            diff = [k for k in mine["settings"] if (theirs.get("settings") or {}).get(k) != mine["settings"][k]]
            what = f"settings {', '.join(diff)}" if diff else "the checkpoint or format"
            raise ConfigError(f"{self.out} holds a map made with different {what}; pass --restart to discard it, "
                              "or --out for a new folder")
        self.state, self.tensors, self.resumed = state, tensors, True

    def save(self) -> None:
        from safetensors.torch import save as safetensors_bytes

        self.out.mkdir(parents=True, exist_ok=True)
        self.state.update(self._fingerprint())
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        atomic_write(self.out / STATE_FILE, safetensors_bytes(tensors, metadata={"state": json.dumps(self.state)}))
        atomic_write(self.out / "progress.json", (json.dumps(self._progress_view(), indent=1) + "\n").encode())

    def _progress_view(self) -> dict[str, Any]:
        s = self.state
        view = {"stage": s.get("stage"), "starts": int(self.tensors["starts"].shape[0]) if "starts" in self.tensors else 0,
                "descended": s.get("descended", 0), "minima": s.get("minima"), "alpha": s.get("alpha"),
                "seconds": s.get("seconds", {})}
        if "grouping" in s:
            g = s["grouping"]
            view["grouping"] = {"minima_done": g["done"], "of": g["count"], "basins": len(g["reps"]), "trials": g["trials"]}
        if "barriers" in s:
            b = s["barriers"]
            view["barriers"] = {"rungs_done": b["level"], "of": len(b["ladder"]), "trials": b["trials"]}
        return view

    def _timed(self, stage: str, start: float) -> None:
        secs = self.state.setdefault("seconds", {})
        secs[stage] = secs.get(stage, 0.0) + (_now() - start)

    def _bar(self, total: int, desc: str, initial: int = 0):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, disable=not self.progress, file=sys.stderr, dynamic_ncols=True,
                    leave=False)

    # -- stages ---------------------------------------------------------------------------
    @property
    def delta(self) -> float:
        if self.settings.delta is not None:
            return float(self.settings.delta)
        return 0.05 * math.sqrt(self.tensors["starts"][0].numel())

    def set_starts(self, starts: Tensor, info: dict[str, Any]) -> None:
        """The start points (N, *shape) and what to keep about them (JSON-able lists of length N)."""
        if "starts" in self.tensors:
            return  # resumed: the saved starts stand
        self.tensors["starts"] = starts.detach().float().cpu()
        self.state.update({"stage": "descent", "descended": 0, "start_info": info, "calls": 0})
        self.save()

    def run(self) -> dict[str, Any]:
        """Every stage that is not finished yet; returns the state."""
        if "starts" not in self.tensors:
            raise RuntimeError("set_starts first")
        self._descend()
        self._minima()
        self._calibrate()
        self._group()
        self._barriers()
        self.state["stage"] = "done"
        self.save()
        return self.state

    def _descend(self) -> None:
        starts = self.tensors["starts"]
        n, bs = starts.shape[0], self.settings.batch_size
        done = self.state["descended"]
        if done >= n:
            return
        s = self.settings
        bar = self._bar(n, "minima: descent", initial=done)
        while done < n:
            t0 = _now()
            part = starts[done:done + bs].to(self.device)
            res = descend(self.energy, self.descent_sampler, part, max_steps=s.descent_steps, tolerance=s.descent_tolerance)
            for key, value in (("descended", res.x.cpu()), ("descent_energy", res.energy), ("descent_grad", res.grad_norm),
                               ("descent_steps", res.steps), ("descent_converged", res.converged.to(torch.uint8))):
                prev = self.tensors.get(key)
                self.tensors[key] = value if prev is None or done == 0 else torch.cat([prev[:done], value])
            done += part.shape[0]
            self.state["descended"] = done
            self._timed("descent", t0)
            self.save()
            bar.update(part.shape[0])
        bar.close()

    def _minima(self) -> None:
        if "minima" in self.state:
            return
        t0 = _now()
        keep, owner = deduplicate(self.tensors["descended"], self.tensors["descent_energy"], self.delta)
        self.tensors["minima"] = self.tensors["descended"][keep]
        self.tensors["minima_energy"] = self.tensors["descent_energy"][keep]
        self.tensors["minimum_of_start"] = owner
        self.tensors["minimum_source"] = keep
        self.state["minima"] = int(keep.numel())
        self.state["delta"] = self.delta
        self.state["stage"] = "calibration" if self.settings.alpha is None else "grouping"
        self._timed("deduplication", t0)
        self.save()

    def _run_pairs(self, a: list[int], b: list[int], alpha, bar=None) -> tuple[Tensor, Tensor]:
        """One AD trial per (a[i] -> b[i]) between minima, in batches, seeded by the call count."""
        s = self.settings
        minima = self.tensors["minima"].to(self.device)
        n = len(a)
        alphas = torch.as_tensor(alpha, dtype=minima.dtype).expand(n) if n else torch.zeros(0)
        ia, ib = torch.tensor(a, dtype=torch.long), torch.tensor(b, dtype=torch.long)
        success, barrier = [], []
        call = self.state.get("calls", 0)
        with seeded(s.seed * 1_000_003 + 7919 * (call + 1), self.device):
            for i in range(0, n, s.batch_size):
                sl = slice(i, i + s.batch_size)
                r = attraction_diffusion(self.energy, self.ad_sampler, minima[ia[sl]], minima[ib[sl]],
                                         alpha=alphas[sl].to(self.device), temperature=s.temperature, delta=self.delta,
                                         patience=s.patience, max_steps=s.max_steps, check_every=s.check_every,
                                         on_chunk=bar.update if bar is not None else None)
                success.append(r.success)
                barrier.append(r.barrier)
        self.state["calls"] = call + 1
        if not n:
            return torch.zeros(0, dtype=torch.bool), torch.zeros(0)
        return torch.cat(success), torch.cat(barrier)

    def _calibrate(self) -> None:
        s = self.settings
        if s.alpha is not None:
            self.state["alpha"] = float(s.alpha)
            return
        if "alpha" in self.state:
            return
        t0 = _now()
        count = self.state["minima"]
        pairs = random_pairs(count, s.calibration_pairs, seed=s.seed)
        if not pairs:  # one minimum: nothing to calibrate against
            cal = Calibration(alphas=[1.0], success_rate=[1.0], pairs=0, window=(1.0, 1.0), alpha=1.0,
                              note="a single minimum: alpha is irrelevant")
        else:
            alphas = list(s.calibration_alphas) if s.calibration_alphas else default_grid(
                line_thresholds(self.energy, self.tensors["minima"].to(self.device), pairs, temperature=s.temperature))
            trials = len(pairs) * len(alphas) * (2 if s.directions == "both" else 1)
            bar = self._bar(trials, "alpha: calibration")
            cal = calibrate_alpha(lambda a, b, al: self._run_pairs(a, b, al, bar), pairs, alphas, directions=s.directions,
                                  rate=s.calibration_rate)
            bar.close()
        self.state["calibration"] = cal.to_dict()
        self.state["alpha"] = cal.alpha
        self.state["stage"] = "grouping"
        self._timed("calibration", t0)
        self.save()

    def _group(self) -> None:
        s = self.settings
        grouping = Grouping.from_dict(self.state["grouping"]) if "grouping" in self.state else Grouping(self.state["minima"])
        if grouping.finished:
            self.state["grouping"] = grouping.to_dict()
            return
        bar = self._bar(grouping.count, "basins: minima grouped", initial=grouping.done)
        while not grouping.finished:
            t0 = _now()
            n = grouping.process_wave(lambda a, b, al: self._run_pairs(a, b, al), self.state["alpha"], s.wave, s.directions)
            self.state["grouping"] = grouping.to_dict()
            self._timed("grouping", t0)
            self.save()
            bar.update(n)
            bar.set_postfix(basins=len(grouping.reps))
        bar.close()
        self.state["stage"] = "barriers"
        self.save()

    def _barriers(self) -> None:
        s = self.settings
        reps = self.state["grouping"]["reps"]
        ladder = [self.state["alpha"] * m for m in s.barrier_ladder]
        search = BarrierSearch.from_dict(self.state["barriers"]) if "barriers" in self.state else BarrierSearch(reps, ladder)
        bar = self._bar(len(ladder), "barriers: alpha rungs", initial=search.level)
        while not search.finished:
            t0 = _now()
            search.step(lambda a, b, al: self._run_pairs(a, b, al), s.directions)
            self.state["barriers"] = search.to_dict()
            self._timed("barriers", t0)
            self.save()
            bar.update(1)
        bar.close()
        self.state["barriers"] = search.to_dict()

    # -- results --------------------------------------------------------------------------
    def basin_of_start(self) -> Tensor:
        basin = torch.tensor(self.state["grouping"]["basin"], dtype=torch.long)
        return basin[self.tensors["minimum_of_start"]]

    def barrier_matrix(self) -> Tensor:
        return BarrierSearch.from_dict(self.state["barriers"]).matrix()


__all__ = ["LandscapeMapper", "MapSettings", "STATE_FILE"]
