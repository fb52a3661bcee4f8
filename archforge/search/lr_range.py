"""A learning rate per candidate: the learning-rate range test behind ``train.lr: auto``.

A placement search compares families that want different learning rates: one fixed rate
favours whichever family it happens to suit. The range test (Smith 2017, "Cyclical Learning
Rates for Training Neural Networks", section 3.3, which raises the rate linearly and reads the
accuracy; the exponential schedule and the loss-based pick below are fastai's ``lr_find``) finds
a rate per candidate for the cost of about one epoch (``range_steps``: one epoch's steps,
at least 50 and at most 100; on a small training set that is several epochs). Its time is
``timings["lr_range"]`` of the trial, counted in the trial's time but not in ``train_time_s``,
which stays the time of the training itself:

1. from the candidate's initial weights, take ``steps`` optimisation steps with the learning
   rate growing exponentially from ``start`` to ``end``: ``lr_i = start · (end/start)^(i/(steps-1))``;
2. stop early once the loss diverges: its exponential moving average (β = 0.9, bias-corrected,
   as fastai smooths it) exceeds ``diverge`` (4) times its lowest value, or a loss is NaN or infinite;
3. smooth the losses again with a centred moving average of ``2k+1`` steps (``k`` = steps/20, half
   a decade of learning rate at 10-20 steps per decade): centred, it has no lag, where the
   moving average of step 2 would place the minimum late, at too high a rate;
4. pick the rate by a rule: ``"min/10"`` (default), the rate at the smoothed loss's minimum
   divided by 10 (after fastai's ``lr_min``, which takes the minimum of its lagged moving average
   instead: an order of magnitude below the minimum, where the loss still falls fast; Smith's bounds are read off the same curve); or ``"steepest"``, the rate where the smoothed loss falls fastest per decade
   (fastai's ``lr_steep``), looked for before the minimum;
5. clamp it to ``bounds`` (1e-4 .. 3e-2 for AdamW), then restore the weights, buffers (batch-norm
   statistics) and optimiser state exactly as they were, and the global RNG states too: training
   afterwards is bit for bit what training with that rate given as a number would be.

``"min/10"`` is the default because it measures the candidate, where ``"steepest"`` mostly
measured the clamp: on the placement grid (placement_mnist, 16 tests: 8 placements x 2 seeds)
the steepest point was at 2.95e-2 or more, the upper bound, in 10 of 16 tests, and varied up
to 4x between two seeds of one placement; min/10 found 6e-3 .. 1.2e-2, never clamped, within
1.6x between seeds (10 steps per decade: neighbouring picks differ by 1.26x).

When the test cannot locate a minimum (fewer than ``2k+3`` finite losses: the loss is NaN
from the first steps), the rate is the lower bound, the cautious choice, and
:attr:`RangeTest.reason` says so: a network whose loss is not finite at 1e-5 is unstable at
any rate, and training at the lower bound then fails with its own one-line NaN error
rather than the range test hiding it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch
from torch import nn

__all__ = ["BOUNDS", "RangeTest", "Rule", "lr_range_test", "pick_lr", "range_steps"]

Rule = Literal["min/10", "steepest"]
#: Where a found peak learning rate of AdamW is clamped to.
BOUNDS = (1e-4, 3e-2)
START, END = 1e-5, 1.0
#: The divergence threshold: stop once the averaged loss exceeds this multiple of its lowest value.
DIVERGE = 4.0
BETA = 0.9


@dataclass(frozen=True)
class RangeTest:
    """What a range test ran and found: the rate of each step, its loss (before that step's update), the choice."""

    lr: float  # the chosen peak learning rate, within BOUNDS
    rule: str
    reason: str  # how it was chosen, in words (e.g. "minimum 3.2e-02 / 10", "clamped to 1e-04", "fallback: ...")
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # raw, one per step run (the last may be NaN)
    smoothed: list[float] = field(default_factory=list)  # centred moving average of the finite losses


def range_steps(steps_per_epoch: int) -> int:
    """Steps of a range test: about one epoch, at least 50 (10 per decade of rate) and at most 100 (fastai's count)."""
    return int(min(100, max(50, steps_per_epoch)))


def lr_range_test(model: nn.Module, optimizer: torch.optim.Optimizer, train_step: Callable[[int], torch.Tensor], *,
                  steps: int, start: float = START, end: float = END, rule: Rule = "min/10",
                  bounds: tuple[float, float] = BOUNDS, diverge: float = DIVERGE,
                  rng_devices: list[int] | None = None) -> RangeTest:
    """Run the range test (module docstring) and leave ``model`` and ``optimizer`` as they were.

    ``train_step(i)``: one optimisation step of ``model`` with ``optimizer`` on the i-th batch
    (this function sets the rate of every parameter group first), returning the loss computed
    before the update, not checked for NaN. ``rng_devices``: the CUDA devices whose RNG the steps
    use (their states are restored with the CPU's); ``None`` or ``[]`` on the CPU.
    """
    if steps < 2 or not 0 < start < end:
        raise ValueError(f"a range test needs at least 2 steps and 0 < start < end, got {steps} steps from {start:g} to {end:g}")
    weights = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    training = model.training
    lrs: list[float] = []
    losses: list[float] = []
    try:
        with torch.random.fork_rng(devices=rng_devices or [], enabled=True):
            average, lowest = 0.0, math.inf
            for i in range(steps):
                lr = start * (end / start) ** (i / (steps - 1))
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss = float(train_step(i))
                lrs.append(lr)
                losses.append(loss)
                if not math.isfinite(loss):
                    break
                average = BETA * average + (1 - BETA) * loss
                unbiased = average / (1 - BETA ** (i + 1))
                lowest = min(lowest, unbiased)
                if unbiased > diverge * lowest:
                    break
    finally:
        model.load_state_dict(weights)
        optimizer.load_state_dict(optimizer_state)
        optimizer.zero_grad(set_to_none=True)  # the test's last gradients would count in training's memory measurement
        model.train(training)
    return pick_lr(lrs, losses, rule=rule, bounds=bounds, steps=steps)


def pick_lr(lrs: list[float], losses: list[float], *, rule: Rule = "min/10", bounds: tuple[float, float] = BOUNDS,
            steps: int | None = None) -> RangeTest:
    """The rate a range test's losses suggest by ``rule``, clamped to ``bounds`` (module docstring, steps 3-5).

    ``steps``: the test's planned length, which sets the smoothing width (default: ``len(lrs)``).
    """
    if rule not in ("min/10", "steepest"):
        raise ValueError(f"unknown range-test rule {rule!r}: use 'min/10' or 'steepest'")
    finite = [(lr, loss) for lr, loss in zip(lrs, losses) if math.isfinite(loss)]
    k = max(1, round((steps or len(lrs)) / 20))
    low, high = bounds
    if len(finite) < 2 * k + 3:
        return RangeTest(lr=low, rule=rule, lrs=list(lrs), losses=list(losses), smoothed=[],
                         reason=f"fallback: only {len(finite)} finite losses of {len(losses)} steps, too few to locate a minimum; "
                                f"the lower bound {low:.0e}")
    x = np.log10([lr for lr, _ in finite])
    y = np.array([loss for _, loss in finite])
    # Centred moving average over 2k+1 steps, shrinking at the ends: no lag, so no bias toward high rates.
    smoothed = np.array([y[max(0, i - k):i + k + 1].mean() for i in range(len(y))])
    best = int(np.argmin(smoothed))
    if rule == "min/10":
        found = 10 ** x[best] / 10
        reason = f"minimum of the smoothed loss at {10 ** x[best]:.2e}, / 10"
    else:
        slope = np.gradient(smoothed[:best + 1], x[:best + 1]) if best >= 1 else np.zeros(1)
        steepest = int(np.argmin(slope))
        found = 10 ** x[steepest]
        reason = f"steepest descent of the smoothed loss ({slope[steepest]:.3g} per decade)"
    chosen = float(min(max(found, low), high))
    if chosen != found:
        reason += f", {found:.2e} clamped to {chosen:.0e}"
    return RangeTest(lr=chosen, rule=rule, reason=reason, lrs=list(lrs), losses=list(losses), smoothed=smoothed.tolist())
