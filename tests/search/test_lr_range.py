"""The learning-rate range test: the rate it picks on problems with a known good range, determinism, exact restoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from archforge.search.lr_range import BOUNDS, lr_range_test, pick_lr, range_steps


@pytest.fixture(autouse=True)
def _one_thread():
    # Models of a few dozen weights: threads only add synchronisation (tens of times slower on a busy machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# A quadratic 0.5 * sum(a_i w_i^2) with curvatures 1..100: plain gradient descent converges
# for lr < 2/L = 0.02 (L = 100, the largest curvature) and diverges above; rates far below
# 1/L (here 0.001) barely move the stiff coordinates. The good range is [0.1/L, 2/L).
CURVATURES = torch.logspace(0, 2, 20, dtype=torch.float64)
L = float(CURVATURES.max())


class Quadratic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(20, dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return 0.5 * (CURVATURES * self.w ** 2).sum()


def _sgd_test(steps: int = 50):
    model = Quadratic()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

    def step(i: int) -> torch.Tensor:
        loss = model()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return model, optimizer, lr_range_test(model, optimizer, step, steps=steps)


def _gd_losses(lr: float, steps: int = 60) -> list[float]:
    """Gradient descent on the quadratic in closed form: each coordinate shrinks by (1 - lr a_i) per step."""
    factor = (1 - lr * CURVATURES) ** 2
    return [float(0.5 * (CURVATURES * factor ** t).sum()) for t in range(steps)]


@pytest.mark.parametrize("steps", [50, 100])
def test_the_rate_picked_on_a_quadratic_lies_in_its_known_good_range(steps):
    _, _, found = _sgd_test(steps)
    assert 0.1 / L <= found.lr < 2 / L, found.reason
    # independently: gradient descent at that rate converges, and at ten times that rate it diverges
    losses = _gd_losses(found.lr)
    assert losses[-1] < 0.01 * losses[0]
    assert _gd_losses(10 * found.lr)[-1] > losses[0]


class Linear(nn.Module):
    def __init__(self, bn: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(10, 2)
        self.bn = nn.BatchNorm1d(10) if bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(x))


def _separable(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 10, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def _batch_loss(model: nn.Module, i: int) -> torch.Tensor:
    x, y = _separable()
    index = torch.arange(i * 32, (i + 1) * 32) % 512
    return nn.functional.cross_entropy(model(x[index]), y[index])


def _linear_test(seed: int = 0, bn: bool = True):
    torch.manual_seed(seed)
    model = Linear(bn)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)

    def step(i: int) -> torch.Tensor:
        loss = _batch_loss(model, i)
        torch.rand(1)  # draws from the global RNG, as dropout would
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return model, optimizer, step


def test_same_start_same_test_and_chosen_rate():
    runs = []
    for _ in range(2):
        model, optimizer, step = _linear_test()
        runs.append(lr_range_test(model, optimizer, step, steps=50))
    assert runs[0] == runs[1]
    assert BOUNDS[0] <= runs[0].lr <= BOUNDS[1] and len(runs[0].lrs) == len(runs[0].losses) >= 10


def test_weights_buffers_optimiser_and_rng_are_restored_exactly():
    model, optimizer, step = _linear_test()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    found = lr_range_test(model, optimizer, step, steps=50)
    assert len(found.lrs) > 10  # it did train, moving weights and batch-norm statistics
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert int(after["bn.num_batches_tracked"]) == 0
    assert optimizer.state_dict()["state"] == {} and optimizer.param_groups[0]["lr"] == 1e-3
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training


def test_the_rate_is_an_order_below_the_best_fixed_rate_of_a_grid():
    """min/10 against a brute-force grid of fixed rates for 40 AdamW steps on separable data (bounds opened to see it)."""
    model, optimizer, step = _linear_test(bn=False)
    found = lr_range_test(model, optimizer, step, steps=50, bounds=(1e-5, 1.0))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _separable()

    def final_loss(lr: float) -> float:
        model.load_state_dict(start)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
        for i in range(40):
            loss = _batch_loss(model, i)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float(nn.functional.cross_entropy(model(x), y))

    grid = {lr: final_loss(lr) for lr in (1e-4, 1e-3, 1e-2, 0.1, 0.3, 1.0)}
    best = min(grid, key=grid.__getitem__)
    assert found.lr < best < 20 * found.lr, (found.lr, grid)
    assert final_loss(found.lr) < 0.5 * max(grid.values())  # and far from the too-slow end


def test_min_over_ten_and_steepest_on_a_known_curve():
    lrs = list(np.logspace(-5, 0, 60))
    # a parabola in log10(lr) with its minimum at 1e-2: min/10 is 1e-3
    parabola = [(math.log10(lr) + 2) ** 2 for lr in lrs]
    assert pick_lr(lrs, parabola).lr == pytest.approx(1e-3, rel=0.25)
    # a falling step centred on 1e-3, then a rise after 1e-1: steepest descent at 1e-3
    curve = [1 - math.tanh(2 * (math.log10(lr) + 3)) + max(0.0, math.log10(lr) + 1) * 10 for lr in lrs]
    assert pick_lr(lrs, curve, rule="steepest").lr == pytest.approx(1e-3, rel=0.25)


def test_a_rate_outside_the_bounds_is_clamped_and_says_so():
    lrs = list(np.logspace(-5, 0, 60))
    low_minimum = [(math.log10(lr) + 4.5) ** 2 for lr in lrs]  # minimum near 3e-5: min/10 is 3e-6
    found = pick_lr(lrs, low_minimum)
    assert found.lr == BOUNDS[0] and "clamped" in found.reason


def test_a_loss_not_finite_from_the_start_falls_back_to_the_lower_bound():
    model, optimizer, _ = _linear_test()
    found = lr_range_test(model, optimizer, lambda i: torch.tensor(float("nan")), steps=50)
    assert found.lr == BOUNDS[0] and found.reason.startswith("fallback") and len(found.losses) == 1


def test_range_steps_is_about_one_epoch_within_50_and_100():
    assert [range_steps(n) for n in (3, 50, 70, 1000)] == [50, 50, 70, 100]
