"""Budgeted training of one candidate network, and what it measures.

:func:`evaluate` trains a spec on a :class:`~archforge.data.DataSplit` for a small
budget set by a :class:`~archforge.search.training.TrainConfig` and returns an
:class:`EvalResult` (validation accuracy per epoch, parameters, FLOPs, latency median
and spread, peak training memory, timings); :func:`train_model` does the same and also
returns the trained module. Every way a candidate can fail (a spec that does not build,
shapes that do not fit the data, a NaN loss, out of memory, a block raising in forward)
becomes one :class:`~archforge.search.failures.TrialError` with a one-line message, so a
search can record the failure and move on.

Training recipe (the usual short-schedule recipe for small image classifiers):

* AdamW (Loshchilov & Hutter 2019); weight decay only on weights of rank >= 2
  (convolution and linear kernels), not on biases and normalisation parameters;
* peak learning rate ``lr``, or with ``lr: auto`` the rate a learning-rate range test finds for
  this candidate and seed (:mod:`archforge.search.lr_range`: from the initial weights, a rate
  growing exponentially over about one epoch, on the batches training will draw; the weights,
  optimiser and RNG states are restored afterwards, so training is exactly as with that rate
  given as a number); the rate used is :attr:`EvalResult.lr`, the test's time ``timings["lr_range"]``;
* learning rate per step: linear warm-up over ``warmup_epochs`` then cosine decay
  (Loshchilov & Hutter 2017) over the configured ``epochs``; stopping early through
  ``on_epoch`` does not rescale the schedule, so a candidate stopped after k epochs
  was trained exactly as the first k epochs of a full run;
* cross-entropy with label smoothing (Szegedy et al. 2016);
* batch augmentation on the device (random shift, ``augment``; see :func:`augment_config`);
* bf16 autocast on CUDA only (``amp``; fp16 with loss scaling on GPUs without bf16), float32 on CPU; channels-last memory order on CUDA (``channels_last``).

After training, the forward latency at ``latency_batch`` is measured by
:func:`archforge.search.measure.measure_latency` (median and interquartile range of at
least ``latency_repeats`` timed passes; 0 skips it and both are nan), then each plugin
metric given in ``metrics`` (:mod:`archforge.search.metrics`).

Determinism: the seed fixes Python's, NumPy's and torch's RNGs (so the initial
weights), the data order (a dedicated generator) and the augmentation (another one).
On CPU the same seed and thread count give bit-identical results; on CUDA some
kernels are not deterministic.

Each epoch visits ``len(train) // batch_size`` full batches in a fresh random order
(the incomplete last batch is dropped, so batch norm never sees a batch of one; a
training set smaller than one batch is used whole).
"""

from __future__ import annotations

import gc
import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from archforge.builder import build
from archforge.builder.network import SpecLike, as_graph, check_device
from archforge.data.augment import AugmentConfig, BatchAugment, default_augment
from archforge.data.split import DataSplit
from archforge.errors import SpecError
from archforge.graph import Graph
from archforge.registry import MetricContext, Registry
from archforge.search.failures import TrialError, describe_failure, format_traceback
from archforge.search.lr_range import lr_range_test, range_steps
from archforge.search.measure import Latency, PeakMemory, flops_and_output, measure_latency, training_state_bytes
from archforge.search.metrics import Metrics, measure_metrics
from archforge.search.training import AugmentSettings, TrainConfig

__all__ = ["EvalResult", "OnEpoch", "TrainConfig", "TrialError", "augment_config", "evaluate", "lr_at", "seed_everything",
           "train_model"]

OnEpoch = Callable[[int, float], bool]
T = TypeVar("T")

_NOT_MEASURED = Latency(median_ms=math.nan, iqr_ms=math.nan, passes=0)


@dataclass
class EvalResult:
    """What a trial measured. ``timings`` (seconds) splits the trial's wall time by phase:
    ``build``, ``summarize`` (params and FLOPs), ``setup``, ``lr_range`` (with ``lr: auto``), ``train``,
    ``validate``, ``latency``, ``metrics`` (when plugin metrics were measured), ``total``."""

    accuracy: float  # top-1 on the validation split after the last epoch run, 0..1
    epochs: int  # epochs actually run
    history: list[float]  # validation accuracy after each epoch
    stopped_early: bool
    params: int
    flops: int  # per sample (archforge.summarize(...).flops)
    latency_ms: float  # median forward latency at latency_batch on config.device (archforge.search.measure); nan if skipped
    peak_memory_mb: float  # peak memory of one training step, see archforge.search.measure
    train_time_s: float  # wall time of the training steps (validation excluded)
    latency_iqr_ms: float = math.nan  # interquartile range of the latency's timed runs; nan if skipped
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # plugin metric name → value on the trained model
    lr: float = math.nan  # the peak learning rate trained with: train.lr, or the range test's choice with lr: auto

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    spec: SpecLike,
    data: DataSplit,
    config: TrainConfig,
    *,
    on_epoch: OnEpoch | None = None,
    registry: Registry | None = None,
    metrics: Metrics | None = None,
) -> EvalResult:
    """Train ``spec`` (a :class:`~archforge.Spec`, a path to one, or a compiled Graph) on ``data.train_*`` for ``config.epochs`` and measure it; see the module docstring.

    After each epoch the validation accuracy is computed and ``on_epoch(epoch, acc)``
    (epochs counted from 1) is called; returning True stops training there
    (``stopped_early``). Exceptions raised by ``on_epoch`` itself (e.g. a pruning
    signal) propagate unchanged. Any failure of the candidate raises :class:`TrialError`;
    a device this machine cannot use raises :class:`~archforge.errors.SettingError` first.

    ``metrics``: plugin metrics to measure on the trained model, by name, as
    :attr:`archforge.registry.Registry.metrics` holds them; their values are ``EvalResult.metrics``.
    """
    return _run(spec, data, config, on_epoch, registry, metrics, keep_model=False)[1]


def train_model(spec: SpecLike, data: DataSplit, config: TrainConfig, *, on_epoch: OnEpoch | None = None,
                registry: Registry | None = None, metrics: Metrics | None = None) -> tuple[nn.Module, EvalResult]:
    """:func:`evaluate`, returning the trained module too (on ``config.device``, in train mode) with its result."""
    model, result = _run(spec, data, config, on_epoch, registry, metrics, keep_model=True)
    assert model is not None
    return model, result


def _run(spec: SpecLike, data: DataSplit, config: TrainConfig, on_epoch: OnEpoch | None, registry: Registry | None,
         metrics: Metrics | None, *, keep_model: bool) -> tuple[nn.Module | None, EvalResult]:
    """One trial of ``spec``: its trained module (with ``keep_model``) and its result."""

    def train(trial: _Trial) -> tuple[nn.Module | None, EvalResult]:
        result = trial.run(on_epoch)
        return (trial.model if keep_model else None), result

    return _run_trial(_Trial(spec, data, config, registry, metrics), train)


def _run_trial(trial: "_Trial", work: Callable[["_Trial"], T]) -> T:
    """``work(trial)`` with the trial's thread count set and restored, and its memory given back whether it fails or not.

    ``work`` must keep no reference to ``trial`` in what it returns unless the caller wants it kept.
    """
    config = trial.config
    previous_threads = torch.get_num_threads()
    failure: TrialError | None = None
    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        outcome = work(trial)
    except TrialError as exc:
        failure = exc
    finally:
        if config.threads:
            torch.set_num_threads(previous_threads)
    del trial
    cuda = torch.device(config.device).type == "cuda"
    if failure is not None:
        # Drop the frames (model, optimizer, batches) the traceback holds before re-raising,
        # so that a failed trial, out-of-memory ones included, gives its memory back.
        failure.__traceback__ = None
        failure.__context__ = None
    if failure is not None or cuda:
        gc.collect()  # a built fx module sits in reference cycles: only the collector frees it
        if cuda:
            torch.cuda.empty_cache()
    if failure is not None:
        raise failure
    return outcome


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps`` steps, then cosine decay towards 0."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def augment_config(setting: bool | AugmentSettings, input_shape: tuple[int, ...]) -> AugmentConfig:
    """The batch augmentation ``train.augment`` asks for: ``True`` the default for the image size, ``False`` none."""
    if setting is True:
        return default_augment(input_shape)
    if setting is False:
        return AugmentConfig(crop_padding=0, hflip=False)
    return AugmentConfig(crop_padding=setting.crop_padding, hflip=setting.hflip)


class _Trial:
    """The state of one evaluation; :meth:`run` drives it, :meth:`_guard` turns failures into TrialErrors."""

    def __init__(self, spec: SpecLike, data: DataSplit, config: TrainConfig, registry: Registry | None, metrics: Metrics | None):
        check_device(config.device)  # a device torch cannot use is the setting's fault, not the first block's
        self.data = data
        self.config = config
        self.device = torch.device(config.device)
        self.cuda = self.device.type == "cuda"
        self.amp = bool(config.amp and self.cuda)
        # bf16 where the GPU has it (Ampere on); older GPUs get fp16, whose small range needs loss scaling.
        self.amp_dtype = torch.bfloat16
        if self.amp:
            # Native bf16 from Ampere (compute capability 8) on; older GPUs only emulate it, slowly.
            native = torch.cuda.get_device_capability(self.device)[0] >= 8
            self.amp_dtype = torch.bfloat16 if native else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        # channels-last feeds tensor cores on CUDA; on the CPU it mostly costs layout conversions.
        self.channels_last = config.channels_last is True or (config.channels_last == "auto" and self.cuda)
        self.timings: dict[str, float] = {}
        self.model: nn.Module | None = None
        self.graph: Graph | None = None
        self.epoch: int | None = None
        self.step: int | None = None
        self.phase = "while building the model"
        self._spec = spec
        self._registry = registry
        self._metrics = dict(metrics or {})
        if config.epochs < 1 or config.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {config.epochs} and {config.batch_size}")
        if len(data.val_y) == 0 or len(data.train_y) == 0:
            raise ValueError(f"dataset '{data.name}' needs a non-empty training and validation split")

    # -- the trial -------------------------------------------------------------------------------

    def run(self, on_epoch: OnEpoch | None) -> EvalResult:
        start = time.perf_counter()
        seed_everything(self.config.seed)
        self._timed("build", self._guard, self._build)
        params, flops = self._timed("summarize", self._guard, self._summarize)
        self._timed("setup", self._guard, self._setup)
        if self.config.lr == "auto":
            self._timed("lr_range", self._guard, self._find_lr)

        history: list[float] = []
        stopped = False
        train_time = validate_time = 0.0
        for epoch in range(1, self.config.epochs + 1):
            self.epoch = epoch
            t0 = time.perf_counter()
            self._guard(self._train_epoch, epoch)
            t1 = time.perf_counter()
            self.step, self.phase = None, f"while validating after epoch {epoch}"
            accuracy = self._guard(self._validate)
            validate_time += time.perf_counter() - t1
            train_time += t1 - t0
            history.append(accuracy)
            if on_epoch is not None and on_epoch(epoch, accuracy):
                stopped = True  # the callback asked to stop (the driver's pruning decision)
                break
        self.timings["train"] = train_time
        self.timings["validate"] = validate_time

        self.epoch, self.phase = None, "while measuring latency"
        latency = _NOT_MEASURED
        if self.config.latency_repeats > 0:
            latency = self._timed("latency", self._guard, self._latency)
        metrics: dict[str, float] = {}
        if self._metrics:
            self.phase = "while measuring plugin metrics"
            context = MetricContext(input_dims=tuple(self.data.input_shape), device=self.device)
            metrics = self._timed("metrics", measure_metrics, self.model, self._metrics, context)
        self.timings["total"] = time.perf_counter() - start
        return EvalResult(
            accuracy=history[-1], epochs=len(history), history=history, stopped_early=stopped,
            params=params, flops=flops, latency_ms=latency.median_ms, latency_iqr_ms=latency.iqr_ms,
            peak_memory_mb=self.peak_memory_mb, train_time_s=train_time, timings=dict(self.timings), metrics=metrics,
            lr=self.lr,
        )

    def _timed(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.timings[name] = time.perf_counter() - t0

    # -- phases ----------------------------------------------------------------------------------

    def _build(self) -> None:
        graph = as_graph(self._spec, self._registry)
        self.graph = graph
        expected = tuple(self.data.input_shape)
        actual = tuple(graph.input.dims())
        if actual != expected:
            raise TrialError(f"the spec's input shape {list(actual)} does not match the data's input shape {list(expected)} "
                             f"(dataset '{self.data.name}')", kind="shape")
        output = graph.output_shape
        if output.layout != "vector" or tuple(output.dims()) != (self.data.num_classes,):
            raise TrialError(f"the spec's output shape {list(output.dims())} ({output.layout}) is not a vector of the data's "
                             f"{self.data.num_classes} classes [{self.data.num_classes}] (dataset '{self.data.name}'); a search space whose "
                             f"head reads a param takes it as --param, e.g. --param classes={self.data.num_classes}", kind="shape")
        model = build(graph, device=self.device, init=self.config.init)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model

    def _summarize(self) -> tuple[int, int]:
        """Parameters and FLOPs per sample, equal to :func:`archforge.summarize`'s totals.

        Counted on the built model in one batch-1 forward (eval mode, so no state changes)
        with the same counter ``summarize`` uses per node; this is several times faster
        than ``summarize``, which rebuilds every node on the meta device, and also checks
        that the model really returns one logit per class.
        """
        self.phase = "while measuring parameters and FLOPs"
        model = self.model
        params = sum(p.numel() for p in model.parameters())
        x = torch.zeros((1, *self.data.input_shape), device=self.device)
        model.eval()
        try:
            flops, output = flops_and_output(model, x)
        finally:
            model.train()
        if not isinstance(output, torch.Tensor) or tuple(output.shape) != (1, self.data.num_classes):
            got = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else type(output).__name__
            raise TrialError(f"the network returns {got} per sample, not a vector of the data's {self.data.num_classes} classes", kind="shape")
        return params, flops

    def _setup(self) -> None:
        self.phase = "while preparing training"
        config, data, device = self.config, self.data, self.device
        self.train_x = data.train_x.to(device)
        self.train_y = data.train_y.to(device)
        self.val_x = data.val_x.to(device)
        self.val_y = data.val_y.to(device)
        if self.channels_last and self.train_x.dim() == 4:
            self.train_x = self.train_x.contiguous(memory_format=torch.channels_last)
            self.val_x = self.val_x.contiguous(memory_format=torch.channels_last)
        n = len(self.train_y)
        self.batch = min(config.batch_size, n)
        self.steps_per_epoch = max(1, n // self.batch)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.warmup_steps = min(int(round(config.warmup_epochs * self.steps_per_epoch)), self.total_steps)
        self.global_step = 0
        self.order = torch.Generator().manual_seed(config.seed)
        augment = augment_config(config.augment, data.input_shape)
        self.augment = BatchAugment(augment, data.mean, data.std, device=device, seed=config.seed + 1) if augment.enabled else None

        decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() < 2]
        groups = [g for g in ({"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
        if not groups:
            raise TrialError("the network has no trainable parameters", kind="spec")
        # With lr: auto, a placeholder until the range test (_find_lr) sets the rate.
        self.lr = config.lr if config.lr != "auto" else math.nan
        self.optimizer = torch.optim.AdamW(groups, lr=1e-3 if config.lr == "auto" else config.lr, **({"fused": True} if self.cuda else {}))
        self.peak_memory_mb = math.nan
        self.model.train()

    def _find_lr(self) -> None:
        """``lr: auto``: the range test on the batches training will draw (copies of its generators), then restored."""
        self.phase = "while finding the learning rate (lr: auto)"
        order = torch.Generator().manual_seed(self.config.seed)  # the same seeds as training's, separate generators
        augment = augment_config(self.config.augment, self.data.input_shape)
        batch_augment = (BatchAugment(augment, self.data.mean, self.data.std, device=self.device, seed=self.config.seed + 1)
                         if augment.enabled else None)
        perms: list[torch.Tensor] = []

        def step(i: int) -> torch.Tensor:
            epoch, within = divmod(i, self.steps_per_epoch)
            while len(perms) <= epoch:  # a training set of under 50 batches is visited more than once
                perms.append(torch.randperm(len(self.train_y), generator=order).to(self.device))
            self.step = i + 1
            return self._train_step(*self._batch(perms[epoch], within, batch_augment), check=False)

        scaler_state = self.scaler.state_dict()
        found = lr_range_test(self.model, self.optimizer, step, steps=range_steps(self.steps_per_epoch),
                              rng_devices=[self.device.index if self.device.index is not None else torch.cuda.current_device()]
                              if self.cuda else [])
        self.scaler.load_state_dict(scaler_state)
        self.step = None
        self.lr = found.lr

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def _train_epoch(self, epoch: int) -> None:
        model, optimizer = self.model, self.optimizer
        model.train()
        perm = torch.randperm(len(self.train_y), generator=self.order).to(self.device, non_blocking=True)
        check_every = 1 if not self.cuda else 16
        losses = torch.empty(self.steps_per_epoch, device=self.device) if self.cuda else None
        for step in range(self.steps_per_epoch):
            self.step = step + 1
            self.phase = f"at epoch {epoch} step {step + 1}"
            lr = lr_at(self.global_step, self.total_steps, self.warmup_steps, self.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if self.global_step == 0:  # the first step is the one whose memory is measured
                state = training_state_bytes(model, optimizer)
                with PeakMemory(self.device) as peak:
                    loss = self._train_step(*self._batch(perm, step, self.augment), check=True)
                self.peak_memory_mb = (state + peak.bytes) / 1e6 if peak.bytes is not None else math.nan
            else:
                loss = self._train_step(*self._batch(perm, step, self.augment), check=not self.cuda)
            self.global_step += 1
            if losses is not None:
                losses[step] = loss
                if (step + 1) % check_every == 0 or step + 1 == self.steps_per_epoch:
                    self._check_losses(losses, step + 1, epoch)

    def _batch(self, perm: torch.Tensor, step: int, augment: BatchAugment | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``step``-th batch of an epoch's order ``perm``, augmented."""
        index = perm[step * self.batch:(step + 1) * self.batch]
        x = self.train_x.index_select(0, index)
        y = self.train_y.index_select(0, index)
        if augment is not None:
            x = augment(x)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, *, check: bool) -> torch.Tensor:
        with self._autocast():
            logits = self.model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.config.label_smoothing)
        if check and not torch.isfinite(loss):
            self._raise_nan(float(loss.detach()), self.epoch, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # the scaler does nothing unless fp16 autocast is on
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def _check_losses(self, losses: torch.Tensor, upto: int, epoch: int) -> None:
        """On CUDA the losses are checked every few steps, not every step, to avoid a sync per step."""
        finite = torch.isfinite(losses[:upto])
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0])
            self._raise_nan(float(losses[first]), epoch, first + 1)

    def _raise_nan(self, value: float, epoch: int | None, step: int) -> None:
        what = "NaN" if math.isnan(value) else "infinite"
        found = " found by the range test" if self.config.lr == "auto" else ""
        raise TrialError(f"the training loss became {what} at epoch {epoch} step {step} (lr {self.lr:g}{found}, "
                         f"batch {self.batch})", kind="nan", epoch=epoch, step=step)

    def _validate(self) -> float:
        model = self.model
        model.eval()
        batch = max(256, 2 * self.config.batch_size)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        with torch.no_grad(), self._autocast():
            for start in range(0, len(self.val_y), batch):
                logits = model(self.val_x[start:start + batch])
                correct += (logits.argmax(dim=1) == self.val_y[start:start + batch]).sum()
        model.train()
        return int(correct) / len(self.val_y)

    def _latency(self) -> Latency:
        c = self.config
        # The model is warm from validation; two passes at the latency batch size set up its kernels.
        return measure_latency(self.model, self.data.input_shape, device=self.device, batch=c.latency_batch,
                               repeats=c.latency_repeats, warmup=2, amp=self.amp, channels_last=self.channels_last,
                               amp_dtype=self.amp_dtype)

    # -- failures --------------------------------------------------------------------------------

    def _guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, with any exception but a TrialError (or KeyboardInterrupt...) turned into a TrialError."""
        failure: TrialError | None = None
        try:
            return fn(*args)
        except TrialError:
            raise
        except SpecError as exc:
            failure = TrialError(str(exc), kind="spec", details=format_traceback(exc))
        except Exception as exc:
            failure = describe_failure(exc, where=self.phase, batch_size=self.config.batch_size, device=self.device,
                                       epoch=self.epoch, step=self.step, model=self.model, graph=self.graph)
        raise failure  # outside the except block: the original exception is not chained (nor kept alive)

