"""What a candidate costs to run: forward latency and the peak memory of a training step.

Latency
    Median wall time of ``repeats`` forward passes at a fixed batch, after ``warmup``
    untimed ones, in eval mode under ``no_grad``, on the requested device (CUDA is
    synchronised around each pass, so the time covers the kernels, not their launch).

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
import statistics
import time
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

MB = 1e6


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
) -> float:
    """Median forward latency in milliseconds of ``model`` on ``device`` at ``batch``.

    The model must already be on ``device``; it is put in eval mode for the measurement
    and restored afterwards. ``amp`` runs under bf16 autocast (CUDA only).
    """
    device = torch.device(device)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    on_device = [p.device for p in model.parameters()][:1]
    if on_device and on_device[0].type != device.type:
        raise ValueError(f"the model's parameters are on {on_device[0]}, not on {device}")
    channels_last = device.type == "cuda" and len(input_shape) == 3
    x = example_input(input_shape, batch, device, channels_last=channels_last)
    was_training = model.training
    model.eval()
    times: list[float] = []
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            for _ in range(warmup):
                model(x)
            _sync(device)
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                _sync(device)
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return statistics.median(times) * 1e3


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
