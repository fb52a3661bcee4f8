"""What a candidate costs to run: forward latency, FLOPs and the peak memory of a training step.

Latency (:func:`measure_latency`, a :class:`Latency`)
    Timed with :class:`torch.utils.benchmark.Timer` and its ``blocked_autorange``: after
    ``warmup`` untimed forward passes, the Timer picks a block size (passes per timed
    run) large enough that the clock's own cost is negligible, then times blocks until
    ``min_run_time`` seconds are spent. Each block gives one per-pass time; the result
    is the median of those and their interquartile range (IQR), so one preempted pass
    moves neither. Passes run in eval mode under ``no_grad`` at a fixed batch, with the
    caller's torch thread count (the Timer's default is one thread), on the requested
    device; on CUDA the clock synchronises that device, so a time covers the kernels,
    not their launch (a synchronisation costs microseconds, so CUDA blocks hold many
    passes and there are fewer of them). ``repeats`` is the least number of timed
    passes: ``min_run_time`` is at least ``repeats`` times the warm-up's fastest pass
    and at least :data:`MIN_RUN_TIME_S`, and more blocks are timed if the passes ran
    slower than that. :attr:`Latency.noisy` says the spread is too large to
    trust the median (another process took the CPU, the clock frequency changed).

Peak memory of a training step, in MB (10⁶ bytes)
    ``state + max over the step of (bytes allocated - bytes allocated at its start)``,
    where ``state`` is the bytes of the tensors the step starts with (parameters,
    buffers, existing gradients and optimizer state). Tensors that are only resident
    (the dataset) are not counted, on any device, so the figure is the same kind of
    number on CPU and CUDA.

    * CUDA: the caching allocator's counters (``torch.cuda.reset_peak_memory_stats``,
      ``memory_allocated``, ``max_memory_allocated``): bytes of live allocations, cuDNN
      and cuBLAS workspaces included, cached-but-free blocks excluded;
    * CPU: every allocation and free made through PyTorch's CPU allocator during the
      step is recorded by the autograd profiler with ``profile_memory=True`` (the legacy
      CPU profiler, which needs no kineto start-up; kineto as a fallback); the running
      sum of those signed sizes, in time order, is the live-bytes curve whose maximum is
      taken. This counts every tensor the step allocates, including those autograd
      saves for backward and the optimizer's state, and nothing else (oneDNN's private
      scratch buffers are not tensors and are not seen).
    * other devices: ``nan``. On CPU the profiler is process-wide: if another profiler
      is already running (or trials run in parallel threads), the figure is ``nan``.
"""

from __future__ import annotations

import copy
import math
import timeit
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.benchmark import Timer
from torch.utils.benchmark import timer as accelerator_clock
from torch.utils.flop_counter import FlopCounterMode

MB = 1e6

#: Least seconds of timed forward passes in one latency measurement. A small candidate's
#: batch-1 pass takes 0.1–5 ms on a CPU, so this is dozens of timed blocks: a scheduler
#: hiccup of a few milliseconds is one outlier among them, not the median. It is short next
#: to a trial's training (seconds at the least).
MIN_RUN_TIME_S = 0.1

#: IQR / median above which a latency is :attr:`Latency.noisy`. 0.25 is the ratio at which
#: ``torch.utils.benchmark.Measurement`` warns of "significant environmental influence"
#: (another process, frequency scaling). Its milder 0.1 warning trips for most batch-1
#: measurements on a shared CPU, where block-to-block jitter of 10–20 % is ordinary while
#: the median over dozens of blocks stays put, so it would flag nearly every trial.
NOISY_IQR_FRACTION = 0.25


@dataclass(frozen=True)
class Latency:
    """One forward-latency measurement: the median and interquartile range of ``times_ms``,
    the per-pass time of each timed block (run), ``passes`` forward passes in all."""

    median_ms: float
    iqr_ms: float
    passes: int
    times_ms: tuple[float, ...] = field(default=(), repr=False)

    @property
    def runs(self) -> int:
        """Timed blocks the median and IQR are taken over."""
        return len(self.times_ms)

    @property
    def noisy(self) -> bool:
        """The spread is large next to the median (IQR above :data:`NOISY_IQR_FRACTION` of it): compare with care."""
        return self.iqr_ms > NOISY_IQR_FRACTION * self.median_ms


def quantile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values, interpolating linearly between neighbours (as numpy and torch.quantile do)."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_from_times(times_s: Sequence[float], passes: int) -> Latency:
    """The :class:`Latency` of per-pass times in seconds (one per timed block, ``passes`` passes behind them all)."""
    if not times_s:
        raise ValueError("a latency needs at least one timed run")
    ordered = [t * 1e3 for t in sorted(times_s)]
    iqr = quantile(ordered, 0.75) - quantile(ordered, 0.25)
    return Latency(median_ms=quantile(ordered, 0.5), iqr_ms=iqr, passes=passes, times_ms=tuple(t * 1e3 for t in times_s))


def _clock(device: torch.device) -> Callable[[], float]:
    """The Timer's clock: wall time, read after the device's queued work is done."""
    if device.type == "cpu":
        return timeit.default_timer  # torch's default would synchronise (and so start) an unrelated GPU
    if device.type == "cuda":
        def cuda_clock() -> float:
            torch.cuda.synchronize(device)  # this device, not only the current one
            return timeit.default_timer()

        return cuda_clock
    return accelerator_clock


def example_input(input_shape: Sequence[int], batch: int, device: torch.device | str, *, channels_last: bool = False, seed: int = 0) -> torch.Tensor:
    """A reproducible random ``(batch, *input_shape)`` float32 tensor on ``device``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *input_shape), generator=generator).to(device)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    device: torch.device | str,
    batch: int = 1,
    repeats: int = 20,
    warmup: int = 5,
    amp: bool = False,
    min_run_time: float | None = None,
    channels_last: bool | None = None,
    amp_dtype: torch.dtype = torch.bfloat16,
) -> Latency:
    """Forward latency of ``model`` on ``device`` at ``batch``: at least ``repeats`` timed passes; see the module docstring.

    ``warmup`` untimed passes come first (at least one: its time sizes the measurement);
    ``min_run_time`` defaults to :data:`MIN_RUN_TIME_S`. The model must already be on
    ``device``; it is put in eval mode for the measurement and restored afterwards.
    ``amp`` runs under autocast to ``amp_dtype`` (CUDA only; the trial's: fp16 on GPUs without bf16); ``channels_last``: images in channels-last order
    (default: on CUDA), as the model was trained. Torch's thread count is left as found.
    """
    device = torch.device(device)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    on_device = [p.device for p in model.parameters()][:1]
    if on_device and on_device[0].type != device.type:
        raise ValueError(f"the model's parameters are on {on_device[0]}, not on {device}")
    if channels_last is None:
        channels_last = device.type == "cuda"
    x = example_input(input_shape, batch, device, channels_last=channels_last and len(input_shape) == 3)
    clock = _clock(device)
    timer = Timer("model(x)", globals={"model": model, "x": x}, timer=clock, num_threads=torch.get_num_threads())
    floor = MIN_RUN_TIME_S if min_run_time is None else min_run_time
    was_training = model.training
    model.eval()
    times: list[float] = []
    passes = 0
    try:
        # The Timer runs the statement in this thread, so grad mode and autocast set here hold for it.
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp and device.type == "cuda"):
            warm: list[float] = []
            for _ in range(max(1, warmup)):
                start = clock()
                model(x)
                warm.append(clock() - start)
            # The fastest warm-up pass: a preempted one must not stretch the measurement; the loop tops up.
            budget = max(floor, repeats * min(warm))
            while passes < repeats:  # a second round only when the passes ran slower than the fastest warm-up
                measurement = timer.blocked_autorange(min_run_time=budget)
                times += measurement.times
                passes += measurement.number_per_run * len(measurement.raw_times)
                budget = (repeats - passes) * measurement.median
    finally:
        model.train(was_training)
    return latency_from_times(times, passes)


def flops_and_output(model: nn.Module, x: torch.Tensor) -> tuple[int, Any]:
    """FLOPs of one forward of ``model`` on ``x`` under ``no_grad``, counted as :func:`archforge.builder.count_flops` counts them, and its output."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        output = model(x)
    return int(counter.get_total_flops()), output


def tensor_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and tied weights counted once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def training_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Bytes of parameters, buffers, gradients and optimizer state: what a training step starts from."""
    tensors: list[Any] = [*model.parameters(), *model.buffers()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    if optimizer is not None:
        for state in optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return tensor_bytes(tensors)


class PeakMemory:
    """Context manager: the peak increase of allocated bytes on ``device`` while it is active.

    ``with PeakMemory(device) as peak: step()`` then ``peak.bytes`` (``None`` when the
    device offers no way to measure). See the module docstring for the method.
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.bytes: int | None = None
        self._start = 0
        self._profiler: Any = None
        self._mode: str | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            self._mode = "cuda"
        elif self.device.type == "cpu":
            self._mode = _start_cpu_profiler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._mode == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = max(0, torch.cuda.max_memory_allocated(self.device) - self._start)
        elif self._mode is not None:
            self.bytes = _stop_cpu_profiler(self)


def _start_cpu_profiler(tracker: PeakMemory) -> str | None:
    from torch._C import _autograd as A
    from torch._C._profiler import ProfilerConfig, ProfilerState, _ExperimentalConfig

    try:  # legacy CPU profiler: no kineto start-up cost or log lines
        config = ProfilerConfig(ProfilerState.CPU, False, True, False, False, False, _ExperimentalConfig())
        A._enable_profiler_legacy(config)
        return "legacy"
    except Exception:
        pass
    try:
        from torch.autograd import profiler

        tracker._profiler = profiler.profile(use_cpu=True, profile_memory=True, use_kineto=True)
        tracker._profiler.__enter__()
        return "kineto"
    except Exception:
        tracker._profiler = None
        return None


def _stop_cpu_profiler(tracker: PeakMemory) -> int | None:
    sizes: list[tuple[float, int, int]] = []  # (time, order, signed bytes)
    if tracker._mode == "legacy":
        from torch._C import _autograd as A

        threads = A._disable_profiler_legacy()
        for thread in threads:
            for order, event in enumerate(thread):
                if event.kind() == "memory_alloc" and event.device() in (-1, 0) and not event.has_cuda():
                    sizes.append((event.start_us(), order, event.cpu_memory_usage()))
    else:
        from torch._C._profiler import _EventType

        tracker._profiler.__exit__(None, None, None)
        stack = list(tracker._profiler.kineto_results.experimental_event_tree())
        while stack:
            event = stack.pop()
            if event.tag == _EventType.Allocation and event.extra_fields.device_type == torch.device("cpu").type:
                sizes.append((event.start_time_ns, 0, event.extra_fields.alloc_size))
            stack.extend(event.children)
    sizes.sort(key=lambda item: (item[0], item[1]))
    live = peak = 0
    for _, _, size in sizes:
        live += size
        peak = max(peak, live)
    return peak


def measure_peak_memory(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    device: torch.device | str,
    batch: int = 32,
    num_classes: int | None = None,
    step: Callable[[nn.Module, torch.Tensor], Any] | None = None,
) -> float:
    """Peak memory in MB of one training step of a copy of ``model`` at ``batch``.

    The step is ``step(model, x)`` if given, else forward, cross-entropy against random
    labels (or the sum of the output when ``num_classes`` is None), backward and an
    AdamW update; it runs on a deep copy, so ``model`` (weights, BN statistics) is not
    changed. Returns ``nan`` on devices without memory accounting.
    """
    device = torch.device(device)
    candidate = copy.deepcopy(model).to(device).train()
    x = example_input(input_shape, batch, device, channels_last=device.type == "cuda" and len(input_shape) == 3)
    optimizer = torch.optim.AdamW(candidate.parameters(), lr=1e-3)

    def default_step(module: nn.Module, inputs: torch.Tensor) -> None:
        out = module(inputs)
        if num_classes is None:
            loss = out.float().sum()
        else:
            target = torch.randint(0, num_classes, (inputs.shape[0],), device=device)
            loss = nn.functional.cross_entropy(out.float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    state = training_state_bytes(candidate) + tensor_bytes([x])
    with PeakMemory(device) as peak:
        (step or default_step)(candidate, x)
    if peak.bytes is None:
        return math.nan
    return (state + peak.bytes) / MB
