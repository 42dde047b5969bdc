"""`python -m benchmarks.gpu_check`: the GPU path, measured in one short command.

    python -m benchmarks.gpu_check --out benchmark-results/gpu        # one GPU, under 8 minutes
    python -m benchmarks.gpu_check --toy --out /tmp/gpu-toy             # toy sizes on the CPU (CI)

For the short-run paper's 32x32 setting (nf=128, K=100, batch 64) and the
64x64 one (same net family, Table 7) it measures image-steps per second of

* (a) the paper's appendix loop, fp32 (PyTorch's defaults: TF32 convolutions
  where cuDNN allows them), the baseline of every ratio;
* the toolkit's ``langevin`` sampler (the code ``Trainer.step`` runs) in fp32,
  then with channels_last, autocast (bf16; fp16 with loss scaling), CUDA-graph
  capture, cuDNN's autotuner and torch.compile (:mod:`ebmkit.chain_acceleration`);

then a whole training iteration (the appendix's and ``Trainer.step``, plain and
accelerated), the peak GPU memory of every row, the energies of each row's
final samples against a true-fp32 chain (TF32 off) from the same start and
noise, and a training smoke on shipped data (scikit-learn's digits, the
``digits-cpu`` preset on the GPU with the accelerated chain) that must lower
the gap without diverging.  It ends with the fastest configuration whose
energies are within tolerance: the values for :mod:`ebmkit.gpu_defaults`.

Every row is timed with CUDA events for ``--row-seconds`` after warm-up; a
row that fails (a compile, a capture) is recorded with its error and the run
goes on; rows that would not fit in ``--budget`` are marked skipped.  The
results are rewritten after every row (``gpu_check.json``, ``gpu_check.md``),
so a run cut short still leaves what it measured.  ``--toy``: tiny sizes,
GPU-only rows marked skipped, compile with the ``eager`` backend, seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import torch

import ebmkit
from ebmkit import chain_acceleration as accel
from ebmkit.chain_acceleration import ChainSettings, chain_settings

ENERGY_TOLERANCE = 0.05
"""A row's energies are in tolerance when max_i |U(x_row,i) - U(x_fp32,i)| <= 5 % of the
fp32 chain's mean energy descent mean_i |U(x_fp32,i) - U(z_i)| (all energies evaluated in
true fp32, TF32 off; same start z and same noise)."""


@dataclass(frozen=True)
class Setting:
    key: str
    label: str
    image_size: int
    channels: int
    nf: int
    steps: int
    batch: int


PAPER_SETTINGS = (
    Setting("32px", "CIFAR-10 32x32, nf=128, K=100, batch 64 (Table 6)", 32, 3, 128, 100, 64),
    Setting("64px", "CelebA 64x64, nf=128, K=100, batch 64 (Table 7)", 64, 3, 128, 100, 64),
)
TOY_SETTINGS = (
    Setting("toy8", "toy 8x8, nf=4, K=5, batch 4", 8, 1, 4, 5, 4),
    Setting("toy16", "toy 16x16, nf=4, K=5, batch 4", 16, 1, 4, 5, 4),
)


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    precision: str = "fp32"
    channels_last: bool = False
    cuda_graph: bool = False
    compile: bool = False
    cudnn_benchmark: bool = False
    paper: bool = False

    @property
    def gpu_only(self) -> bool:
        return self.cuda_graph or self.cudnn_benchmark

    def chain(self) -> ChainSettings:
        return ChainSettings(self.precision, self.compile, self.cuda_graph)

    def options(self) -> dict[str, Any]:
        return {"precision": self.precision, "channels_last": self.channels_last, "cuda_graph": self.cuda_graph,
                "compile": self.compile, "cudnn_benchmark": self.cudnn_benchmark}


PAPER = Variant("paper", "(a) paper's appendix loop, fp32", paper=True)
CORE = (
    PAPER,
    Variant("fp32", "toolkit fp32 (langevin, fast path)"),
    Variant("fp32_cl", "toolkit fp32 + channels_last", channels_last=True),
    Variant("bf16", "autocast bf16 + channels_last", "bf16", True),
    Variant("fp16", "autocast fp16 (loss scaling) + channels_last", "fp16", True),
    Variant("fp32_graph", "fp32 + channels_last + CUDA graph", "fp32", True, cuda_graph=True),
    Variant("bf16_graph", "bf16 + channels_last + CUDA graph", "bf16", True, cuda_graph=True),
    Variant("fp16_graph", "fp16 + channels_last + CUDA graph", "fp16", True, cuda_graph=True),
    Variant("bf16_graph_bench", "bf16 + channels_last + CUDA graph + cudnn.benchmark", "bf16", True, cuda_graph=True,
            cudnn_benchmark=True),
)
COMPILED = (
    Variant("bf16_compile", "bf16 + channels_last + torch.compile", "bf16", True, compile=True),
    Variant("bf16_compile_graph", "bf16 + channels_last + torch.compile + CUDA graph", "bf16", True, cuda_graph=True,
            compile=True),
)


# -- small helpers --------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def true_fp32() -> Iterator[None]:
    """TF32 off for convolutions and matmuls (the reference chain and every energy check)."""
    # only the flags that are on are touched (torch >= 2.9 also has a newer TF32 API and objects to mixing them)
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    if conv:
        torch.backends.cudnn.allow_tf32 = False
    if matmul:
        torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        if conv:
            torch.backends.cudnn.allow_tf32 = True
        if matmul:
            torch.backends.cuda.matmul.allow_tf32 = True


@contextlib.contextmanager
def cudnn_benchmark(on: bool) -> Iterator[None]:
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def _release(device: torch.device) -> None:
    """Drop captured graphs and cached blocks between rows (each row's peak memory is its own)."""
    accel.release_graphs()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def time_calls(fn: Callable[[], Any], device: torch.device, seconds: float, *, min_reps: int = 3,
               max_reps: int = 500) -> dict[str, Any]:
    """Two warm-up calls (the first also compiles / captures: its time is kept),
    then calls until ``seconds`` have passed (at least ``min_reps``), each
    timed with CUDA events (perf_counter on a CPU); the median."""
    t0 = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - t0
    fn()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while (len(times) < min_reps or time.perf_counter() < deadline) and len(times) < max_reps:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return {"seconds": statistics.median(times), "reps": len(times), "first_call_s": first,
            "spread": f"{min(times) * 1e3:.2f}-{max(times) * 1e3:.2f} ms"}


# -- the contenders -------------------------------------------------------------------------------


def paper_loop(energy: torch.nn.Module, K: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The appendix's ``sample_q`` as published (f = -U); see benchmarks.speed."""
    from .speed import paper_loop as published

    return published(energy, K)


def toolkit_chain(energy: torch.nn.Module, v: Variant, K: int) -> Callable[..., torch.Tensor]:
    sampler = ebmkit.create_sampler("langevin", steps=K, step_size=1.0, noise=0.01, channels_last=v.channels_last)

    def run(z: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        with chain_settings(v.chain()), cudnn_benchmark(v.cudnn_benchmark):
            return sampler.run(energy, z, noise=noise).x

    return run


class SettingState:
    """What the rows of one setting share: the energy (one object, so that a
    compiled graph is reused), the start and noise of the energy check, the
    fp32 reference."""

    def __init__(self, s: Setting, device: torch.device, seed: int):
        self.s, self.device = s, device
        torch.manual_seed(seed)
        self.energy = ebmkit.create_energy("convnet", (s.channels, s.image_size, s.image_size), nf=s.nf).to(device)
        self.shape = (s.batch, s.channels, s.image_size, s.image_size)
        g = torch.Generator(device="cpu").manual_seed(seed + 1)
        self.z = (torch.rand(self.shape, generator=g) * 2 - 1).to(device)
        self.noise_seed = seed + 2
        torch.manual_seed(self.noise_seed)  # the draws a chain makes step by step after this seed
        self.noise = torch.stack([torch.randn(self.shape, device=device) for _ in range(s.steps)])
        self.channels_last = False
        self.reference: dict[str, Any] | None = None

    def set_channels_last(self, on: bool) -> None:
        if on != self.channels_last:
            self.energy.to(memory_format=torch.channels_last if on else torch.contiguous_format)
            self.channels_last = on

    def energies(self, x: torch.Tensor) -> torch.Tensor:
        with true_fp32(), torch.no_grad():
            return self.energy(x.float().contiguous()).double()

    def ensure_reference(self) -> dict[str, Any]:
        if self.reference is None:
            with true_fp32():
                x = toolkit_chain(self.energy, Variant("ref", "reference"), self.s.steps)(self.z, self.noise)
            u_ref, u_start = self.energies(x), self.energies(self.z)
            self.reference = {"x": x, "u": u_ref, "descent": float((u_ref - u_start).abs().mean()),
                              "mean_energy": float(u_ref.mean()), "mean_start_energy": float(u_start.mean())}
        return self.reference

    def check_energies(self, x: torch.Tensor) -> dict[str, Any]:
        ref = self.ensure_reference()
        u = self.energies(x)
        scale = max(ref["descent"], 1e-12)
        err = float((u - ref["u"]).abs().max()) / scale
        return {"energy_error": err, "mean_energy_error": abs(float(u.mean()) - ref["mean_energy"]) / scale,
                "energies_ok": bool(math.isfinite(err) and err <= ENERGY_TOLERANCE),
                "sample_rms_diff": float((x.float() - ref["x"].float()).pow(2).mean().sqrt())}


# -- the run ----------------------------------------------------------------------------------------


@dataclass
class CheckArgs:
    out: Path
    toy: bool = False
    budget: float = 420.0
    row_seconds: float = 2.5
    smoke_seconds: float = 120.0
    seed: int = 0
    device: str = "auto"
    settings: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()


class GpuCheck:
    def __init__(self, a: CheckArgs):
        self.a = a
        self.start = time.perf_counter()
        self.device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if a.device == "auto" else a.device))
        self.cuda = self.device.type == "cuda"
        settings = TOY_SETTINGS if a.toy else PAPER_SETTINGS
        self.settings = [s for s in settings if not a.settings or s.key in a.settings]
        self.states: dict[str, SettingState] = {}
        self.rows: list[dict[str, Any]] = []
        self.train_rows: list[dict[str, Any]] = []
        self.smoke: dict[str, Any] | None = None
        self.recommended: dict[str, Any] | None = None
        self.log_lines: list[str] = []
        smoke = 0.0 if "smoke" in a.skip else a.smoke_seconds
        self.rows_deadline = self.start + a.budget - smoke - (15.0 if not a.toy else 2.0)
        self.meta = self.environment()
        if a.toy:
            accel.set_compile_options(backend="eager")  # the plumbing of compile, in seconds (Inductor: GPU run)
        a.out.mkdir(parents=True, exist_ok=True)

    # -- bookkeeping
    def log(self, msg: str) -> None:
        line = f"[{time.perf_counter() - self.start:6.1f} s] {msg}"
        self.log_lines.append(line)
        print(line, flush=True)

    def remaining_rows(self) -> float:
        return self.rows_deadline - time.perf_counter()

    def environment(self) -> dict[str, Any]:
        def version(d: str) -> str | None:
            try:
                return metadata.version(d)
            except metadata.PackageNotFoundError:
                return None

        env: dict[str, Any] = {
            "date": datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(["python", "-m", "benchmarks.gpu_check", *sys.argv[1:]]),
            "host": platform.node(), "platform": platform.platform(), "python": sys.version.split()[0],
            "device": str(self.device), "toy": self.a.toy,
            "versions": {d: version(d) for d in ("torch", "triton", "accelerate", "numpy", "pydantic", "shortrun-ebm")},
            "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "tf32": {"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32},
            "cudnn_benchmark_default": torch.backends.cudnn.benchmark,
            "energy_tolerance": ENERGY_TOLERANCE, "budget_s": self.a.budget, "row_seconds": self.a.row_seconds,
            "git_commit": _git_commit(),
        }
        if self.cuda:
            p = torch.cuda.get_device_properties(self.device)
            env["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1),
                          "multiprocessors": p.multi_processor_count, "driver": _nvidia_smi()}
        return env

    def save(self) -> None:
        payload = {"meta": self.meta, "settings": [asdict(s) for s in self.settings], "sampler_rows": self.rows,
                   "training_rows": self.train_rows, "smoke": self.smoke, "recommended_defaults": self.recommended,
                   "elapsed_s": round(time.perf_counter() - self.start, 1), "log": self.log_lines}
        tmp = self.a.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(payload, indent=1, default=_json_default))
        tmp.replace(self.a.out / "gpu_check.json")
        (self.a.out / "gpu_check.md").write_text(self.markdown())

    def state(self, s: Setting) -> SettingState:
        if s.key not in self.states:
            self.states[s.key] = SettingState(s, self.device, self.a.seed)
        return self.states[s.key]

    # -- sampler rows
    def sampler_row(self, s: Setting, v: Variant) -> dict[str, Any]:
        row: dict[str, Any] = {"setting": s.key, "key": v.key, "contender": v.label, **v.options()}
        if v.gpu_only and not self.cuda:
            return {**row, "status": "skipped", "note": "GPU only"}
        if f"{s.key}:{v.key}" in self.a.skip or v.key in self.a.skip or (v.compile and "compile" in self.a.skip):
            return {**row, "status": "skipped", "note": "--skip"}
        need = 4 * self.a.row_seconds + (5 if self.a.toy else 20) + (0 if not v.compile or self.a.toy else 60)
        if self.remaining_rows() < need:
            return {**row, "status": "skipped", "note": f"budget ({self.remaining_rows():.0f} s left for rows, ~{need:.0f} s needed)"}
        _release(self.device)
        before = dict(accel.STATS["fallbacks"])
        try:
            st = self.state(s)
            st.set_channels_last(v.channels_last)
            z = st.z.clone()
            if v.paper:
                chain = paper_loop(st.energy, s.steps)
                run = lambda: chain(z.clone())  # noqa: E731
            else:
                chain = toolkit_chain(st.energy, v, s.steps)
                run = lambda: chain(z)  # noqa: E731
            timing = time_calls(run, self.device, self.a.row_seconds)
            peak = _peak_mib(self.device)
            if v.paper:  # the same noise: the appendix draws randn_like step by step after the seed
                torch.manual_seed(st.noise_seed)
                x = chain(st.z.clone())
            else:
                x = chain(st.z.clone(), st.noise)
            check = st.check_energies(x.detach())
        except Exception as exc:  # noqa: BLE001 - a failing row is recorded, the run goes on
            self.log(f"{s.key} {v.key}: FAILED {_error_text(exc)}")
            return {**row, "status": "failed", "note": _error_text(exc), "traceback": traceback.format_exc()[-2000:]}
        fell_back = {k: n - before.get(k, 0) for k, n in accel.STATS["fallbacks"].items() if n > before.get(k, 0)}
        rate = s.batch * s.steps / timing["seconds"]
        out = {**row, "status": "ok", "img_steps_per_s": rate, "chain_ms": timing["seconds"] * 1e3, "reps": timing["reps"],
               "first_call_s": timing["first_call_s"], "spread": timing["spread"], "peak_mib": peak, **check,
               "note": "; ".join(fell_back) if fell_back else ""}
        if v.cuda_graph and fell_back:
            out["note"] = "NOT captured: " + out["note"]
        return out

    def run_sampler_rows(self, s: Setting, variants: tuple[Variant, ...]) -> None:
        for v in variants:
            row = self.sampler_row(s, v)
            base = next((r for r in self.rows if r["setting"] == s.key and r["key"] == "paper" and r.get("status") == "ok"), None)
            if row.get("status") == "ok" and base:
                row["ratio_to_paper"] = row["img_steps_per_s"] / base["img_steps_per_s"]
            self.rows.append(row)
            self.log(f"{s.key} {v.key}: {row['status']} " + (
                f"{row['img_steps_per_s']:.0f} img*steps/s, x{row.get('ratio_to_paper', 1.0):.2f}, energy err "
                f"{row['energy_error']:.2e}, peak {row['peak_mib'] or 0:.0f} MiB" if row["status"] == "ok" else row.get("note", "")))
            self.save()

    # -- training rows
    def best_variant(self, setting: str | None = None, allow_compile: bool = True) -> Variant | None:
        """The fastest toolkit variant at ``setting`` (default: the paper's) whose energies are in
        tolerance there and at every other setting where it ran."""
        key = setting or self.settings[0].key
        out_of_tolerance = {r["key"] for r in self.rows if r.get("status") == "ok" and not r.get("energies_ok")}  # anywhere
        ok = [r for r in self.rows if r["setting"] == key and r.get("status") == "ok" and r["key"] != "paper"
              and r.get("energies_ok") and r["key"] not in out_of_tolerance
              and not r.get("note", "").startswith("NOT captured") and (allow_compile or not r["compile"])]
        if not ok:
            return None
        best = max(ok, key=lambda r: r["img_steps_per_s"])
        if best["compile"]:  # compile costs a minute per run: only worth it for a clear gain
            plain = [r for r in ok if not r["compile"]]
            if plain and best["img_steps_per_s"] < 1.10 * max(r["img_steps_per_s"] for r in plain):
                best = max(plain, key=lambda r: r["img_steps_per_s"])
        return next(v for v in (*CORE, *COMPILED) if v.key == best["key"])

    def training_rows(self, s: Setting) -> None:
        best = self.best_variant(s.key, allow_compile=False) or CORE[1]
        plans = [("paper", "(a) paper's appendix iteration, fp32", None),
                 ("fp32", "Trainer.step, fp32 chain", CORE[1]),
                 ("accelerated", f"Trainer.step, chain as '{best.key}'", best)]
        x = (torch.rand(s.batch, s.channels, s.image_size, s.image_size, generator=torch.Generator().manual_seed(3)) * 2 - 1
             ).to(self.device)
        for key, label, v in plans:
            row: dict[str, Any] = {"setting": s.key, "key": key, "contender": label, **(v.options() if v else {})}
            need = 4 * self.a.row_seconds + (5 if self.a.toy else 15)
            if f"{s.key}:train" in self.a.skip or "train" in self.a.skip:
                row.update(status="skipped", note="--skip")
            elif self.remaining_rows() < need:
                row.update(status="skipped", note=f"budget ({self.remaining_rows():.0f} s left)")
            else:
                _release(self.device)
                try:
                    with tempfile.TemporaryDirectory() as tmp:
                        step = paper_iteration(s, self.device, self.a.seed) if v is None else \
                            make_trainer(s, v, self.device, Path(tmp), self.a.seed).step
                        with cudnn_benchmark(bool(v and v.cudnn_benchmark)):
                            timing = time_calls(lambda: step(x), self.device, self.a.row_seconds)
                        del step
                    row.update(status="ok", iterations_per_s=1.0 / timing["seconds"], iteration_ms=timing["seconds"] * 1e3,
                               reps=timing["reps"], first_call_s=timing["first_call_s"], peak_mib=_peak_mib(self.device))
                except Exception as exc:  # noqa: BLE001
                    row.update(status="failed", note=_error_text(exc), traceback=traceback.format_exc()[-2000:])
            base = next((r for r in self.train_rows if r["setting"] == s.key and r["key"] == "paper" and r.get("status") == "ok"), None)
            if row.get("status") == "ok" and base:
                row["ratio_to_paper"] = row["iterations_per_s"] / base["iterations_per_s"]
            self.train_rows.append(row)
            self.log(f"{s.key} training {key}: {row['status']} " + (
                f"{row['iterations_per_s']:.2f} it/s, x{row.get('ratio_to_paper', 1.0):.2f}" if row["status"] == "ok" else row.get("note", "")))
            self.save()

    # -- smoke
    def run_smoke(self) -> None:
        if "smoke" in self.a.skip:
            self.smoke = {"status": "skipped", "note": "--skip"}
            return
        seconds = min(self.a.smoke_seconds, self.start + self.a.budget - time.perf_counter() - 5)
        if seconds < (3 if self.a.toy else 20):
            self.smoke = {"status": "skipped", "note": f"budget ({seconds:.0f} s left)"}
            return
        _release(self.device)
        v = self.best_variant(allow_compile=False) or Variant("bf16_auto", "bf16", "bf16", True)
        if not self.cuda:  # the CPU has no graph or autotuner; keep the precision
            v = Variant(v.key + "_cpu", v.label + " (CPU: no graph, no cudnn.benchmark)", v.precision, v.channels_last)
        self.log(f"smoke: digits-cpu preset on {self.device}, chain as '{v.key}', up to {seconds:.0f} s")
        try:
            self.smoke = training_smoke(self.device, v, seconds, self.a.out / "smoke", toy=self.a.toy, seed=self.a.seed)
        except Exception as exc:  # noqa: BLE001
            self.smoke = {"status": "failed", "note": _error_text(exc), "traceback": traceback.format_exc()[-2000:]}
        self.log(f"smoke: {self.smoke.get('status')} {self.smoke.get('verdict', self.smoke.get('note', ''))}")

    # -- everything
    def run(self) -> int:
        self.log(f"gpu_check on {self.device} ({self.meta.get('gpu', {}).get('name', 'CPU')}), budget {self.a.budget:.0f} s, "
                 f"torch {torch.__version__}")
        self.save()
        for s in self.settings:  # the core rows and a training iteration per setting, the paper's setting first
            self.log(f"setting {s.key}: {s.label}")
            self.run_sampler_rows(s, CORE)
            self.training_rows(s)
        for s in self.settings:  # compile last: its first call costs the most and it is the least sure
            self.run_sampler_rows(s, COMPILED)
        self.recommend()
        self.save()
        self.run_smoke()
        self.recommend()
        self.save()
        self.log(f"done in {time.perf_counter() - self.start:.0f} s: {self.a.out / 'gpu_check.md'}")
        return 0

    def recommend(self) -> None:
        best = self.best_variant()
        if best is None:
            self.recommended = None
            return
        row = next(r for r in self.rows if r["setting"] == self.settings[0].key and r["key"] == best.key)
        self.recommended = {
            "variant": best.key, "ratio_to_paper": row.get("ratio_to_paper"), "energy_error": row.get("energy_error"),
            "measured_on": f"{self.meta.get('gpu', {}).get('name', 'cpu')}, {self.meta['date']}, {self.meta['command']}",
            "ebmkit/gpu_defaults.py": {"CHAIN_PRECISION": best.precision, "CHAIN_COMPILE": best.compile,
                                       "CHAIN_CUDA_GRAPH": best.cuda_graph, "CHANNELS_LAST": best.channels_last,
                                       "CUDNN_BENCHMARK": best.cudnn_benchmark},
        }

    # -- report
    def markdown(self) -> str:
        m = self.meta
        gpu = m.get("gpu", {})
        head = [f"# gpu_check: the GPU path\n",
                f"{m['date']} | {gpu.get('name', 'CPU (no GPU)')} | torch {m['versions'].get('torch')} "
                f"(CUDA {m['torch_cuda']}, cuDNN {m['cudnn']}), triton {m['versions'].get('triton')}, python {m['python']} | "
                f"`{m['command']}`\n",
                f"TF32 as PyTorch left it: cuDNN {m['tf32']['cudnn_allow_tf32']}, matmul {m['tf32']['matmul_allow_tf32']}; "
                f"energy tolerance: max_i |U(x_row) - U(x_fp32)| <= {ENERGY_TOLERANCE:g} x the fp32 chain's mean energy "
                "descent, energies in true fp32 (TF32 off), same start and noise.\n"]
        if m.get("toy"):
            head.append("**Toy run** (tiny sizes): these figures check that the command works, they measure nothing.\n")
        parts = head
        for s in self.settings:
            rows = [r for r in self.rows if r["setting"] == s.key]
            if not rows:
                continue
            parts.append(f"\n## {s.label}: Langevin chain\n\n| contender | img*steps/s | x paper loop | chain ms | "
                         "peak MiB | energy err (/descent) | in tol. | first call s | note |\n|---|---|---|---|---|---|---|---|---|\n")
            for r in rows:
                if r["status"] != "ok":
                    parts.append(f"| {r['contender']} | {r['status']} | | | | | | | {_md(r.get('note', ''))} |\n")
                    continue
                parts.append(f"| {r['contender']} | {r['img_steps_per_s']:.0f} | {_f(r.get('ratio_to_paper'))} | {r['chain_ms']:.1f} | "
                             f"{_f(r['peak_mib'], 0)} | {r['energy_error']:.2e} | {'yes' if r['energies_ok'] else '**no**'} | "
                             f"{r['first_call_s']:.1f} | {_md(r.get('note', ''))} |\n")
            train = [r for r in self.train_rows if r["setting"] == s.key]
            if train:
                parts.append(f"\n{s.label}: one training iteration\n\n| contender | it/s | x paper | ms | peak MiB | note |\n"
                             "|---|---|---|---|---|---|\n")
                for r in train:
                    if r["status"] != "ok":
                        parts.append(f"| {r['contender']} | {r['status']} | | | | {_md(r.get('note', ''))} |\n")
                    else:
                        parts.append(f"| {r['contender']} | {r['iterations_per_s']:.2f} | {_f(r.get('ratio_to_paper'))} | "
                                     f"{r['iteration_ms']:.1f} | {_f(r['peak_mib'], 0)} | |\n")
        if self.smoke:
            sm = self.smoke
            parts.append("\n## Training smoke (digits-cpu preset, accelerated chain)\n\n")
            if sm.get("status") in ("passed", "failed") and "iterations" in sm:
                parts.append(f"**{sm['status']}**: {sm.get('verdict', '')}\n\n{sm['iterations']} iterations in {sm['seconds']:.0f} s "
                             f"({sm['iterations_per_s']:.1f} it/s), chain '{sm['chain']}'; gap: first {sm['gap_first']:.3f}, "
                             f"lowest running mean {sm['gap_min_running']:.3f}, last {sm['gap_last_running']:.3f}, max |gap| "
                             f"{sm['gap_max_abs']:.3f}; U(data) {sm['energy_data']:.3f} vs U(uniform noise) {sm['energy_noise']:.3f}.\n")
            else:
                parts.append(f"{sm.get('status')}: {_md(sm.get('note', ''))}\n")
        if self.recommended:
            r = self.recommended
            parts.append(f"\n## Recommended GPU defaults\n\nFastest in tolerance at {self.settings[0].key}: `{r['variant']}` "
                         f"(x{_f(r['ratio_to_paper'])} the paper loop). For `ebmkit/gpu_defaults.py`: "
                         + ", ".join(f"`{k} = {v!r}`" for k, v in r["ebmkit/gpu_defaults.py"].items()) + "\n")
        parts.append(f"\nElapsed {time.perf_counter() - self.start:.0f} s of a {self.a.budget:.0f} s budget.\n")
        return "".join(parts)


def _f(v: Any, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _md(text: str) -> str:
    return str(text).replace("|", "/").replace("\n", " ")[:160]


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.dtype):
        return str(o)
    return repr(o)


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _nvidia_smi() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,power.limit,clocks.max.sm", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# -- training -----------------------------------------------------------------------------------------


def paper_iteration(s: Setting, device: torch.device, seed: int) -> Callable[[torch.Tensor], None]:
    """The appendix's iteration: sample_q, L = f(x + sigma*N).mean() - f(x_q).mean(), Adam on -L."""
    torch.manual_seed(seed)
    energy = ebmkit.create_energy("convnet", (s.channels, s.image_size, s.image_size), nf=s.nf).to(device)
    sample_q = paper_loop(energy, s.steps)
    optim = torch.optim.Adam(energy.parameters(), lr=1e-4, betas=(0.9, 0.999))
    f = lambda x: -energy(x)  # noqa: E731

    def iteration(x: torch.Tensor) -> None:
        x_q = sample_q(torch.rand_like(x) * 2 - 1)
        L = f(x + 3e-2 * torch.randn_like(x)).mean() - f(x_q).mean()
        optim.zero_grad()
        (-L).backward()
        optim.step()

    return iteration


def _performance(v: Variant) -> dict[str, Any]:
    return {"chain_precision": v.precision, "chain_compile": v.compile, "chain_cuda_graph": v.cuda_graph,
            "channels_last": v.channels_last, "cudnn_benchmark": v.cudnn_benchmark}


def make_trainer(s: Setting, v: Variant, device: torch.device, run_dir: Path, seed: int, data: str = "digits"):
    """A Trainer for data of the setting's shape (the batches are given to ``step``)."""
    from ebmkit.config import parse_config
    from ebmkit.experiment import Experiment, build_components
    from ebmkit.trainer import Trainer

    cfg = parse_config({
        "data": {"name": data},
        "energy": {"name": "convnet", "nf": s.nf},
        "sampler": {"name": "langevin", "steps": s.steps, "step_size": 1.0, "noise": 0.01, "channels_last": v.channels_last},
        "objective": {"name": "maximum-likelihood", "data_noise": 0.03},
        "training": {"batch_size": s.batch, "seed": seed, "progress": False, "device": device.type},
        "performance": _performance(v),
        "output": {"dir": str(run_dir)},
    }, check=False)
    shape = (s.channels, s.image_size, s.image_size)
    return Trainer(Experiment(config=cfg, shape=shape, **build_components(cfg, shape)), run_dir=run_dir)


SMOKE_MAX_ABS_GAP = 1.0  # the digits-cpu preset stayed within 0.35 over 2,000 iterations on the CPU (docs/recipes.md)
SMOKE_MAX_ABS_GAP_TOY = 5.0  # the toy run's lr 1e-3 moves the gap to about -1 within 40 iterations
SMOKE_GAP_DROP = 0.1
SMOKE_ENERGY_MARGIN = 0.2


def training_smoke(device: torch.device, v: Variant, seconds: float, out: Path, *, toy: bool = False,
                   seed: int = 0) -> dict[str, Any]:
    """Train the digits-cpu preset (shipped data) on ``device`` with the chain
    as ``v`` for up to ``seconds`` (and at most the preset's iterations).
    Passes when nothing diverged (the guard stayed quiet, every logged number
    is finite, max |gap| <= 1; 5 for the toy run), the loss fell (the running mean of the gap
    went at least 0.1 below the first iterations') and the model puts the data
    below uniform noise in energy by 0.2."""
    from ebmkit.config import apply_overrides, parse_config, read_config_file
    from ebmkit.data import batch_stream
    from ebmkit.errors import DivergenceError
    from ebmkit.experiment import build_experiment
    from ebmkit.trainer import Trainer

    preset = Path(str(resources.files("ebmkit.presets") / "digits-cpu.toml"))
    overrides = [f"training.device='{device.type}'", "training.progress=false", f"training.seed={seed}",
                 f"output.dir='{out}'", "training.sample_every=0", "training.checkpoint_every=0",
                 *[f"performance.{k}={json.dumps(val)}" for k, val in _performance(v).items()],
                 f"sampler.channels_last={json.dumps(v.channels_last)}",
                 # the criteria below read a run from noise starts (the preset's fitted-gaussian start begins
                 # with data and samples close, so its gap need not fall by SMOKE_GAP_DROP)
                 "initializer.name='uniform'"]
    if toy:  # the test suite's tiny run (it lowers the gap in 20 iterations)
        overrides += ["energy.nf=8", "sampler.steps=5", "training.batch_size=16", "optimizer.lr=1e-3", "training.iterations=40",
                      "output.grid_size=16"]
    cfg = parse_config(apply_overrides(read_config_file(preset), overrides), source="digits-cpu preset")
    trainer = Trainer(build_experiment(cfg), run_dir=out)
    batches = batch_stream(trainer.experiment.dataset, cfg.training.batch_size, seed=cfg.training.seed)
    gaps: list[float] = []
    diverged, t0 = None, time.perf_counter()
    while trainer.iteration < cfg.training.iterations and time.perf_counter() - t0 < seconds:
        try:
            logs = trainer.step(next(batches).to(device))
        except DivergenceError as exc:
            diverged = str(exc)
            break
        trainer.iteration += 1
        gaps.append(float(logs["gap"]))
    elapsed = time.perf_counter() - t0
    trainer.write_samples("smoke.png")
    data = trainer.experiment.dataset.data[:256].to(device)
    with torch.no_grad():
        u_data = float(trainer.energy(data).mean())
        u_noise = float(trainer.energy(torch.rand_like(data) * 2 - 1).mean())
    window = max(1, min(10, len(gaps) // 4))
    running = [sum(gaps[i:i + window]) / window for i in range(0, max(1, len(gaps) - window + 1))] if gaps else [math.nan]
    first = sum(gaps[:5]) / max(1, len(gaps[:5])) if gaps else math.nan
    finite = all(math.isfinite(g) for g in gaps) and math.isfinite(u_data) and math.isfinite(u_noise)
    max_abs = max((abs(g) for g in gaps), default=math.nan)
    gap_bound = SMOKE_MAX_ABS_GAP_TOY if toy else SMOKE_MAX_ABS_GAP
    checks = {
        "no divergence": diverged is None and finite and max_abs <= gap_bound,
        "gap lowered": min(running) <= first - SMOKE_GAP_DROP,
        "data below noise in energy": u_data <= u_noise - SMOKE_ENERGY_MARGIN,
    }
    failed = [k for k, ok in checks.items() if not ok]
    return {"status": "passed" if not failed else "failed", "chain": v.key, "iterations": len(gaps), "seconds": elapsed,
            "iterations_per_s": len(gaps) / max(elapsed, 1e-9), "gap_first": first, "gap_min_running": min(running),
            "gap_last_running": running[-1], "gap_max_abs": max_abs, "energy_data": u_data, "energy_noise": u_noise,
            "diverged": diverged, "checks": checks,
            "verdict": "gap lowered, no divergence, data below noise" if not failed else "failed: " + ", ".join(failed),
            "criteria": f"no divergence (guard quiet, finite, max |gap| <= {gap_bound}); running-mean gap at least "
                        f"{SMOKE_GAP_DROP} below the first 5 iterations' mean; U(data) <= U(uniform noise) - {SMOKE_ENERGY_MARGIN}",
            "gaps": gaps[:: max(1, len(gaps) // 200)], "samples": str(out / "samples" / "smoke.png")}


# -- entry point ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("benchmark-results") / "gpu")
    p.add_argument("--toy", action="store_true", help="tiny sizes (runs on a CPU in seconds; GPU-only rows skipped)")
    p.add_argument("--budget", type=float, default=None, help="total seconds (default 420; --toy 120)")
    p.add_argument("--row-seconds", type=float, default=None, help="timed seconds per row after warm-up (default 2.5; --toy 0.2)")
    p.add_argument("--smoke-seconds", type=float, default=None, help="training smoke length (default 120; --toy 15)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cpu")
    p.add_argument("--settings", default="", help="comma-separated setting keys to run (default all: 32px,64px; toy8,toy16)")
    p.add_argument("--skip", default="", help="comma-separated rows to skip: a variant key (bf16_graph), setting:key, "
                                             "compile, train, smoke")
    a = p.parse_args(argv)
    if not a.toy and not (a.device in ("auto", "cuda") and torch.cuda.is_available()):
        print("error: no CUDA device here; the paper-size check needs a GPU (--toy runs it at a toy size on the CPU)",
              file=sys.stderr)
        return 2
    args = CheckArgs(out=a.out, toy=a.toy, budget=a.budget or (120.0 if a.toy else 420.0),
                     row_seconds=a.row_seconds if a.row_seconds is not None else (0.2 if a.toy else 2.5),
                     smoke_seconds=a.smoke_seconds if a.smoke_seconds is not None else (15.0 if a.toy else 120.0),
                     seed=a.seed, device=a.device, settings=tuple(k for k in a.settings.split(",") if k),
                     skip=tuple(k for k in a.skip.split(",") if k))
    check = GpuCheck(args)

    def stop(signum: int, frame: Any) -> None:  # e.g. `timeout` in gpu_run.sh: keep what was measured
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        code = check.run()
    except BaseException as exc:  # noqa: BLE001 - whatever stops the run, keep what was measured
        check.log(f"run stopped: {_error_text(exc)}\n{traceback.format_exc()[-3000:]}")
        code = 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        check.save()
        print(check.markdown())
    return code


if __name__ == "__main__":
    sys.exit(main())
