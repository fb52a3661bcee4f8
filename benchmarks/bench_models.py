"""Benchmark: spec-built reference models against the same networks written in plain PyTorch.

For each model, the network built by ``archforge.build`` from ``archforge/zoo/models/<name>.yaml``
is timed against a hand-written module of ``plain_networks.py`` (beside this script), written
the way timm and torchvision write it:

* ``resnet50`` — torchvision's ``ResNet``/``Bottleneck`` (v1.5: stride in the 3×3);
* ``deit_tiny_patch16_224`` — timm's ``VisionTransformer`` (pre-norm blocks, fused
  ``scaled_dot_product_attention`` as timm uses by default);
* ``convit_tiny`` — timm's ``ConViT``: GPSA computed the explicit way, with ``B × h × N × N``
  content and positional attention matrices mixed by the gate and renormalised, and the
  two MHSA layers as in timm's ``convit.MHSA`` (explicit ``softmax(q kᵀ) v``). The spec's
  ``gpsa`` block computes ``(1 − σ)·SDPA(q, k, v) + σ·(A_pos v)`` instead, with one
  ``(h, N, N)`` positional attention per call, and its ``mhsa`` uses SDPA.

Same weights on both sides: the spec model's state dict loads into the plain one as it is
(``strict=True``; the names are timm's / torchvision's on both sides), and both must give
the same logits (eval mode, float32) before anything is timed; the script prints the
largest difference.

Two modes. The default times, per side, ``fwd`` (eval mode under ``torch.inference_mode``)
and ``fwd+bwd`` (train mode, cross-entropy against random labels, backward, no optimizer
step). ``--train`` times a full training step instead (zero the gradients, forward and
cross-entropy, backward, SGD step with momentum) under each *setting*: ``--amp bf16``
(forward and loss under ``torch.autocast``), ``--channels-last`` (model and input in
``torch.channels_last``), ``--compile`` (``torch.compile`` on both sides); ``--settings``
lists several (``fp32``, ``bf16+cl``, ``bf16+cl+compile``, …) and ``--all-settings`` runs
:data:`ALL_SETTINGS`, all in one table with the ratio spec / plain per model and setting.

Each measurement is the best (minimum) time over interleaved repeats (spec, plain, spec,
plain, …) after warm-up (which includes compilation): on a machine shared with other
processes the minimum is the estimate least disturbed by their load, and interleaving
exposes both sides to it alike. On CUDA each timed call ends with a synchronisation.
Throughput is batch / best time. ``--clock cpu`` times with the process's CPU time
(all its threads) instead of wall-clock time, which time-sharing with other processes
does not inflate: use it, with ``--threads 1``, to compare the two sides on a busy CPU.

    python benchmarks/bench_models.py                      # eager, batch 8 at 224, ~2-3 min on 2 cores
    python benchmarks/bench_models.py --compile            # torch.compile on both sides
    python benchmarks/bench_models.py --models convit_tiny --batch 16 --repeats 10
    python benchmarks/bench_models.py --threads 1 --clock cpu  # on a machine shared with other jobs
    python benchmarks/bench_models.py --train --device cpu --batch 2 --models resnet18   # smoke, < 1 min
    python benchmarks/bench_models.py --train --device cuda --all-settings              # GPU: batch 128, every setting
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch import nn
import torch.nn.functional as F

import archforge
from plain_networks import PLAIN  # benchmarks/plain_networks.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "archforge" / "zoo" / "models"


def build_pair(name: str, device: torch.device | str = "cpu") -> tuple[nn.Module, nn.Module, int]:
    """``(spec model, plain model with the spec model's weights, input size)`` on ``device``."""
    spec_model = archforge.build(SPECS / f"{name}.yaml", device=device)
    make, size = PLAIN[name]
    with torch.device(device):
        plain = make()
    plain.load_state_dict(spec_model.state_dict(), strict=True)
    return spec_model, plain, size


def check_same_logits(name: str, spec_model: nn.Module, plain: nn.Module, x: torch.Tensor) -> float:
    """The largest logit difference of the two sides in eval mode; an AssertionError past round-off."""
    with torch.no_grad():
        spec_model.eval(), plain.eval()
        ref = plain(x)
        diff = (spec_model(x) - ref).abs().max().item()
    assert diff <= 1e-3 * max(1.0, ref.abs().max().item()), f"{name}: spec and plain outputs differ by {diff:.3g}"
    return diff


# --------------------------------------------------------------------------------------------
# Settings of the training step
# --------------------------------------------------------------------------------------------

AMP_DTYPES = {"bf16": torch.bfloat16}


class Setting(NamedTuple):
    """How a training step runs: autocast dtype (None: float32), channels-last memory format, torch.compile."""

    amp: str | None = None
    channels_last: bool = False
    compile: bool = False

    @property
    def label(self) -> str:
        return "+".join([self.amp or "fp32"] + ["cl"] * self.channels_last + ["compile"] * self.compile)

    @classmethod
    def parse(cls, label: str) -> "Setting":
        """``fp32``, ``bf16``, ``bf16+cl``, ``fp32+compile``, ``bf16+cl+compile``, …"""
        precision, *flags = label.split("+")
        if precision not in ("fp32", *AMP_DTYPES) or not set(flags) <= {"cl", "compile"}:
            raise argparse.ArgumentTypeError(f"{label!r}: expected fp32 or bf16, then optionally +cl and/or +compile")
        return cls(None if precision == "fp32" else precision, "cl" in flags, "compile" in flags)


#: ``--all-settings``: float32, bfloat16 autocast, plus channels-last, plus torch.compile (one compiled
#: setting only: compiling forward and backward of six networks takes minutes even on a GPU host).
ALL_SETTINGS = [Setting.parse(s) for s in ("fp32", "bf16", "bf16+cl", "bf16+cl+compile")]


def prepare(model: nn.Module, setting: Setting) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A copy of ``model`` in train mode laid out for ``setting`` (compiled if asked), and its SGD optimizer."""
    model = copy.deepcopy(model).train()
    if setting.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    return (torch.compile(model) if setting.compile else model), optimizer


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------

def _forward(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        with torch.inference_mode():
            model(x)
    return step


def _backward(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        for p in params:
            p.grad = None
        F.cross_entropy(model(x), labels).backward()
    return step


def _sgd_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, labels: torch.Tensor,
              amp: str | None) -> Callable[[], None]:
    autocast = (lambda: torch.autocast(x.device.type, dtype=AMP_DTYPES[amp])) if amp else nullcontext

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
    return step


def best_times(steps: dict[str, Callable[[], None]], warmup: int, repeats: int,
               clock: Callable[[], float] = time.perf_counter, sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Best (minimum) seconds per call of each step over interleaved repeats; ``sync`` waits for the device."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    sync()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for k, step in steps.items():
            start = clock()
            step()
            sync()
            times[k].append(clock() - start)
    return {k: min(v) for k, v in times.items()}


def describe_machine(device: torch.device, threads: int) -> str:
    """torch, CUDA, cuDNN and the GPU's name (or the CPU's and the thread count)."""
    line = f"torch {torch.__version__}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        # float32 runs use TF32 where these allow it (torch's defaults: matmuls "highest", i.e. no TF32; convolutions TF32)
        tf32 = f"float32 matmul precision {torch.get_float32_matmul_precision()}, cuDNN TF32 {torch.backends.cudnn.allow_tf32}"
        return (f"{line}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, GPU {props.name} "
                f"({props.total_memory / 2**30:.0f} GiB, compute {props.major}.{props.minor}), {tf32}")
    return f"{line}, CPU {_cpu_name()}, {threads} thread(s)"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:  # Linux: the model name; platform.processor() is often empty there
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


# --------------------------------------------------------------------------------------------
# The two modes
# --------------------------------------------------------------------------------------------

def run_forward(args: argparse.Namespace, device: torch.device, clock: Callable[[], float], sync: Callable[[], None]) -> None:
    """Forward (eval) and forward+backward (train) throughput per model, eager or compiled."""
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        spec_model, plain, size = build_pair(name, device)
        x = torch.randn(args.batch, 3, size, size, device=device)
        labels = torch.randint(0, 1000, (args.batch,), device=device)
        diff = check_same_logits(name, spec_model, plain, x)
        sides = {"spec": spec_model, "plain": plain}
        if args.compile:
            sides = {k: torch.compile(m) for k, m in sides.items()}
        result = {"model": name}
        for mode in ("fwd", "fwd+bwd"):
            for m in (spec_model, plain):
                m.train(mode == "fwd+bwd")
            steps = {k: (_forward(m, x) if mode == "fwd" else _backward(m, x, labels)) for k, m in sides.items()}
            t = best_times(steps, args.warmup, args.repeats, clock, sync)
            result[mode] = {k: args.batch / v for k, v in t.items()}
        rows.append(result)
        print(f"  {name}: done (max |Δlogits| {diff:.1e})", flush=True)

    how = "torch.compile" if args.compile else "eager"
    print(f"\nthroughput (images/s, {args.clock_name}), batch {args.batch}, {how}, "
          f"best of {args.repeats} interleaved repeats after {args.warmup} warm-up; ratio = spec / plain")
    header = f"{'model':<24}{'fwd spec':>10}{'fwd plain':>11}{'ratio':>7}{'f+b spec':>11}{'f+b plain':>11}{'ratio':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        f, b = r["fwd"], r["fwd+bwd"]
        print(f"{r['model']:<24}{f['spec']:>10.1f}{f['plain']:>11.1f}{f['spec'] / f['plain']:>7.2f}"
              f"{b['spec']:>11.1f}{b['plain']:>11.1f}{b['spec'] / b['plain']:>7.2f}")


def run_train(args: argparse.Namespace, device: torch.device, clock: Callable[[], float], sync: Callable[[], None]) -> None:
    """Training-step throughput per model and setting, one table."""
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        spec_model, plain, size = build_pair(name, device)
        diff = check_same_logits(name, spec_model, plain, torch.randn(2, 3, size, size, device=device))
        x = torch.randn(args.batch, 3, size, size, device=device)
        labels = torch.randint(0, 1000, (args.batch,), device=device)
        for setting in args.settings:
            xs = x.contiguous(memory_format=torch.channels_last) if setting.channels_last else x
            steps = {}
            for side, model in (("spec", spec_model), ("plain", plain)):
                prepared, optimizer = prepare(model, setting)
                steps[side] = _sgd_step(prepared, optimizer, xs, labels, setting.amp)
            t = best_times(steps, args.warmup, args.repeats, clock, sync)
            rows.append((name, setting.label, args.batch / t["spec"], args.batch / t["plain"]))
            print(f"  {name} {setting.label}: spec {rows[-1][2]:.1f}, plain {rows[-1][3]:.1f} images/s", flush=True)
            del steps
            if setting.compile:
                torch.compiler.reset()  # the next setting compiles fresh copies; drop the old graphs
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(f"  {name}: max |Δlogits| {diff:.1e} (float32, eval)", flush=True)

    print(f"\ntraining step (zero grads, forward + cross-entropy, backward, SGD momentum step), images/s, "
          f"{args.clock_name}, batch {args.batch}, best of {args.repeats} interleaved repeats after {args.warmup} warm-up; "
          f"ratio = spec / plain")
    header = f"{'model':<24}{'setting':<18}{'spec':>10}{'plain':>10}{'ratio':>7}"
    print(header)
    print("-" * len(header))
    for name, label, spec_rate, plain_rate in rows:
        print(f"{name:<24}{label:<18}{spec_rate:>10.1f}{plain_rate:>10.1f}{spec_rate / plain_rate:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "deit_tiny_patch16_224", "convit_tiny"], choices=sorted(PLAIN))
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch", type=int, help="default: 8 on CPU, 128 on a GPU")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides (compilation is in the warm-up)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: the process's CPU time (busy machines)")
    parser.add_argument("--train", action="store_true", help="time a full training step (SGD) under one or more settings")
    parser.add_argument("--amp", choices=("fp32", *AMP_DTYPES), default="fp32", help="--train: autocast dtype")
    parser.add_argument("--channels-last", action="store_true", help="--train: channels-last model and input")
    parser.add_argument("--settings", nargs="+", type=Setting.parse, metavar="SETTING",
                        help="--train: several settings, such as fp32 bf16+cl bf16+cl+compile (overrides --amp/--channels-last/--compile)")
    parser.add_argument("--all-settings", action="store_true", help=f"--train: {' '.join(s.label for s in ALL_SETTINGS)}")
    args = parser.parse_args()

    if not args.train and (args.amp != "fp32" or args.channels_last or args.settings or args.all_settings):
        parser.error("--amp, --channels-last, --settings and --all-settings are settings of the training step: add --train")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this torch build or machine has no CUDA device")
    if args.clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu measures the host's CPU time, not the GPU's: use the wall clock with --device cuda")
    torch.set_num_threads(args.threads)
    args.batch = args.batch or (8 if device.type == "cpu" else 128)
    args.clock_name = "CPU time" if args.clock == "cpu" else "wall-clock time"
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    print(describe_machine(device, args.threads), flush=True)
    if args.train:
        default = Setting(None if args.amp == "fp32" else args.amp, args.channels_last, args.compile)
        args.settings = ALL_SETTINGS if args.all_settings else (args.settings or [default])
        run_train(args, device, clock, sync)
    else:
        run_forward(args, device, clock, sync)


if __name__ == "__main__":
    main()
