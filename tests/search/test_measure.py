"""What a candidate costs: latency statistics and measurement, peak training memory."""

import math
import random
import time

import pytest
import torch
from torch import nn
from torch.utils.benchmark import Measurement
from torch.utils.benchmark.utils.common import TaskSpec

from archforge.search import measure
from archforge.search.measure import Latency, latency_from_times, measure_latency, measure_peak_memory


def test_median_and_iqr_of_an_odd_number_of_times():
    latency = latency_from_times([0.004, 0.001, 0.003, 0.002, 0.005], passes=50)
    assert latency.median_ms == pytest.approx(3.0)
    assert latency.iqr_ms == pytest.approx(4.0 - 2.0)  # quartiles are order statistics 2 and 4
    assert (latency.runs, latency.passes) == (5, 50)
    assert latency.times_ms == pytest.approx((4.0, 1.0, 3.0, 2.0, 5.0))


def test_quartiles_interpolate_between_neighbours():
    latency = latency_from_times([0.001, 0.002, 0.003, 0.004], passes=4)
    # positions 0.75, 1.5, 2.25 of the sorted values
    assert latency.median_ms == pytest.approx(2.5)
    assert latency.iqr_ms == pytest.approx(3.25 - 1.75)


def test_one_run_has_no_spread_and_no_run_is_an_error():
    assert latency_from_times([0.002], passes=1) == Latency(median_ms=2.0, iqr_ms=0.0, passes=1, times_ms=(2.0,))
    with pytest.raises(ValueError, match="at least one timed run"):
        latency_from_times([], passes=0)


@pytest.mark.parametrize("count", [2, 7, 40])
def test_statistics_agree_with_torch_measurement(count):
    rng = random.Random(count)
    raw = [rng.uniform(0.5, 3.0) * 10 for _ in range(count)]  # seconds per block of 10 passes
    reference = Measurement(number_per_run=10, raw_times=raw, task_spec=TaskSpec(stmt="model(x)", setup="pass"))
    latency = latency_from_times(reference.times, passes=10 * count)
    assert latency.median_ms == pytest.approx(reference.median * 1e3)
    assert latency.iqr_ms == pytest.approx(reference.iqr * 1e3)


def test_noisy_when_the_iqr_is_large_next_to_the_median(monkeypatch):
    assert measure.NOISY_IQR_FRACTION == 0.25
    assert not Latency(median_ms=10.0, iqr_ms=2.5, passes=1).noisy  # at the bound: not above it
    assert Latency(median_ms=10.0, iqr_ms=2.6, passes=1).noisy
    # one preempted run moves neither the median nor the quartiles
    assert not latency_from_times([0.001] * 4 + [0.050], passes=5).noisy
    assert latency_from_times([0.001, 0.002, 0.003, 0.004, 0.005], passes=5).noisy  # IQR 2 ms, median 3 ms
    assert not Latency(median_ms=math.nan, iqr_ms=math.nan, passes=0).noisy  # not measured
    monkeypatch.setattr(measure, "NOISY_IQR_FRACTION", 0.2)  # read when asked
    assert Latency(median_ms=10.0, iqr_ms=2.1, passes=1).noisy


def _hooked_linear(seen):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    model.register_forward_pre_hook(
        lambda module, inputs: seen.append((inputs[0].device.type, module.training, torch.is_grad_enabled(), torch.get_num_threads())))
    return model.train()


def test_measure_latency_times_eval_mode_no_grad_on_the_requested_device():
    seen = []
    model = _hooked_linear(seen)
    latency = measure_latency(model, (1, 8, 8), device="cpu", repeats=3, warmup=1, min_run_time=0.01)
    assert math.isfinite(latency.median_ms) and latency.median_ms > 0 and latency.iqr_ms >= 0
    assert min(latency.times_ms) <= latency.median_ms <= max(latency.times_ms)
    assert latency.passes >= 3 and latency.runs >= 1
    assert len(seen) >= latency.passes + 1  # the warm-up pass is not timed
    assert {s[:3] for s in seen} == {("cpu", False, False)} and model.training
    with pytest.raises(ValueError, match="not on meta"):
        measure_latency(model, (1, 8, 8), device="meta")
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        measure_latency(model, (1, 8, 8), device="cpu", repeats=0)


def test_measure_latency_keeps_the_callers_thread_count():
    seen = []
    model = _hooked_linear(seen)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        measure_latency(model, (1, 8, 8), device="cpu", repeats=2, warmup=1, min_run_time=0.005)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert {s[3] for s in seen} == {2}  # torch.utils.benchmark.Timer would use one thread unless told


class _SlowAfterWarmup(nn.Module):
    """Fast for its first pass, 2 ms a pass after: the warm-up underestimates the measurement."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 1:
            time.sleep(0.002)
        return x


def test_at_least_repeats_passes_are_timed_when_the_warm_up_misleads():
    model = _SlowAfterWarmup()
    latency = measure_latency(model, (4,), device="cpu", repeats=12, warmup=1, min_run_time=0.0)
    assert latency.passes >= 12 and model.calls >= 1 + latency.passes
    assert latency.median_ms >= 2.0


def test_peak_memory_counts_activations_honestly():
    model = nn.Sequential(nn.Linear(100, 1000), nn.ReLU(), nn.Linear(1000, 10))
    weights = sum(p.numel() for p in model.parameters()) * 4
    batch = 256
    hidden = batch * 1000 * 4  # one (256, 1000) float32 activation
    peak = measure_peak_memory(model, (100,), device="cpu", batch=batch, num_classes=10) * 1e6
    # weights + input + at least the linear output and the ReLU output alive together
    assert peak >= weights + batch * 100 * 4 + 2 * hidden
    # ... but not more than weights, grads, two Adam moments, input and a handful of activations
    assert peak <= 4 * weights + batch * 100 * 4 + 5 * hidden
