"""Training a :class:`~archforge.search.supernet.Supernet` on a budget, then evaluating each path with inherited weights.

:func:`train_supernet` is :func:`archforge.search.evaluate.evaluate`'s training (the same data
split, AdamW groups, warm-up and cosine schedule, label smoothing, augmentation, AMP,
channels-last, device, threads, ``lr: auto``, and failures turned into one-line
:class:`~archforge.search.failures.TrialError` s) with two differences:

* a training step runs the paths :class:`~archforge.search.supernet.PathSchedule` names (one
  path, or ``m`` with their gradients averaged into one update), each on the same batch;
* after training, every path is evaluated with the weights it inherits: its BatchNorm
  statistics re-estimated on ``calibration_batches`` training batches (unaugmented, the same
  batches for every path), then its accuracy on the validation split.

The validation accuracy after each epoch (``history``) is the mean over a few fixed paths
with the statistics training left them: a progress signal, not a ranking.

Cost is counted in images through the network: ``train_images`` (steps × batch × paths per
step), ``range_images`` (the same for the range test of ``lr: auto``), ``eval_images`` (forward
passes of the probe validations and of the ranking) and, to compare with,
``candidate_images``: what one stand-alone training of a candidate sees (epochs × the full
batches of an epoch, its range test not included).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from archforge.data.split import DataSplit
from archforge.registry import Registry
from archforge.search.evaluate import EvalResult, OnEpoch, _run_trial, _Trial
from archforge.search.measure import flops_and_output
from archforge.search.space import Candidate
from archforge.search.supernet import PathSchedule, Sampling, Supernet
from archforge.search.training import TrainConfig

#: Paths whose mean validation accuracy is the progress signal after each epoch.
PROBE_PATHS = 2


@dataclass
class PathScore:
    """One path evaluated with inherited weights."""

    index: int  # position in the candidates given
    accuracy: float  # validation top-1 after BatchNorm recalibration
    params: int  # parameters of the candidate stand-alone
    flops: int  # per sample


@dataclass
class SupernetRun:
    """What :func:`train_supernet` trained and measured."""

    supernet: Supernet
    scores: list[PathScore]  # in the candidates' order
    training: EvalResult  # epochs, history (the probe paths' mean), lr, timings (seconds) by phase
    paths_per_step: int
    steps: int
    train_images: int
    range_images: int
    eval_images: int
    candidate_images: int
    timings: dict[str, float] = field(default_factory=dict)  # "train" (everything until ranking), "rank"


def train_supernet(candidates: Sequence[Candidate], data: DataSplit, config: TrainConfig, *, sampling: Sampling = "fair",
                   calibration_batches: int = 5, registry: Registry | None = None,
                   on_epoch: OnEpoch | None = None) -> SupernetRun:
    """Train the supernet of ``candidates`` for ``config.epochs`` and evaluate every path; see the module docstring.

    ``config.seed`` seeds the initial weights, the data order, the augmentation and the
    paths drawn. Raises :class:`TrialError` when training fails (as :func:`evaluate` does).
    """
    if not candidates:
        raise ValueError("no candidate to build a supernet of")
    if calibration_batches < 1:
        raise ValueError(f"calibration_batches must be >= 1, got {calibration_batches}")

    def train_and_rank(trial: _SupernetTrial) -> SupernetRun:
        started = time.perf_counter()
        training = trial.run(on_epoch)
        ranked = time.perf_counter()
        scores = trial._guard(trial.rank, calibration_batches)
        return SupernetRun(
            supernet=trial.model, scores=scores, training=training, paths_per_step=trial.schedule.per_step,
            steps=trial.steps_taken, train_images=trial.images, range_images=trial.range_images,
            eval_images=trial.eval_images, candidate_images=trial.steps_per_epoch * trial.batch * config.epochs,
            timings={"train": ranked - started, "rank": time.perf_counter() - ranked},
        )

    # The thread count and, on failure, the memory are handled as for any trial.
    trial = _SupernetTrial(candidates, data, config.model_copy(update={"latency_repeats": 0}), registry, sampling)
    return _run_trial(trial, train_and_rank)


class _SupernetTrial(_Trial):
    """:class:`~archforge.search.evaluate._Trial` with the supernet as its model and a schedule of paths per step."""

    model: Supernet

    def __init__(self, candidates: Sequence[Candidate], data: DataSplit, config: TrainConfig, registry: Registry | None,
                 sampling: Sampling):
        super().__init__(candidates[0].spec, data, config, registry, None)
        self.candidates = list(candidates)
        self.schedule = PathSchedule([c.values for c in self.candidates], sampling, seed=config.seed)
        self.steps_taken = 0
        self.images = 0
        self.range_images = 0
        self.eval_images = 0
        count = len(self.candidates)
        self.probes = sorted({round(k * (count - 1) / max(1, min(PROBE_PATHS, count) - 1)) for k in range(min(PROBE_PATHS, count))})

    def _build(self) -> None:
        modules = []
        for candidate in self.candidates:
            self._spec = candidate.spec
            self.phase = f"while building {self._path_text(len(modules))}"
            super()._build()  # the stand-alone checks (input and output shapes) and build, per path
            modules.append(self.model)
        self.phase = "while building the supernet"
        self.model = Supernet(modules, [c.values for c in self.candidates])
        if self.channels_last:  # the shared tensors are new: give them the layout the paths were built with
            self.model = self.model.to(memory_format=torch.channels_last)
        self.graph = None

    def _find_lr(self) -> None:
        # The range test restores the shared tensors (the supernet's state dict), not what is the paths' own: their
        # BatchNorm statistics and the schedule's draws are restored here, and its images counted apart.
        buffers = [{n: b.clone() for n, b in path.module.named_buffers()} for path in self.model.paths]
        draws, steps, images = self.schedule.rng.getstate(), self.steps_taken, self.images
        super()._find_lr()
        with torch.no_grad():
            for path, saved in zip(self.model.paths, buffers):
                for n, b in path.module.named_buffers():
                    b.copy_(saved[n])
        self.schedule.rng.setstate(draws)
        self.range_images, self.steps_taken, self.images = self.images - images, steps, images

    def _path_text(self, path: int) -> str:
        candidate = self.candidates[path]
        return f"path {candidate.hash} ({candidate.label()})"

    def _summarize(self) -> tuple[int, int]:
        return sum(p.numel() for p in self.model.parameters()), 0

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, *, check: bool) -> torch.Tensor:
        paths = self.schedule.next()
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        where = self.phase
        for path in paths:
            self.model.active = path
            self.phase = f"{where}, {self._path_text(path)}"
            with self._autocast():
                logits = self.model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.config.label_smoothing)
            if check and not torch.isfinite(loss):
                self._raise_nan(float(loss.detach()), self.epoch, self.step)
            # FairNAS sums the paths' gradients into one update; the mean keeps the step's scale that of one path.
            self.scaler.scale(loss / len(paths)).backward()
            total += loss.detach()
        self.phase = where
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.steps_taken += 1
        self.images += len(y) * len(paths)
        return total / len(paths)

    def _validate(self) -> float:
        accuracies = []
        where = self.phase
        for path in self.probes:
            self.model.active = path
            self.phase = f"{where}, {self._path_text(path)}"
            accuracies.append(super()._validate())
            self.eval_images += len(self.val_y)
        self.phase = where
        return sum(accuracies) / len(accuracies)

    def rank(self, calibration_batches: int) -> list[PathScore]:
        """Every path's accuracy with inherited weights and recalibrated BatchNorm statistics."""
        generator = torch.Generator().manual_seed(self.config.seed + 2)
        order = torch.randperm(len(self.train_y), generator=generator).to(self.device)
        batch = self.batch
        count = min(calibration_batches, max(1, math.ceil(len(order) / batch)))
        calibration = [self.train_x.index_select(0, order[k * batch:(k + 1) * batch]) for k in range(count)]
        one = self.val_x[:1]
        scores = []
        for i in range(len(self.candidates)):
            self.phase = f"while evaluating {self._path_text(i)} with inherited weights"
            with self._autocast():
                self.model.recalibrate(i, calibration)
            self.model.active = i
            accuracy = _Trial._validate(self)
            self.model.eval()
            try:
                flops, _ = flops_and_output(self.model, one)
            finally:
                self.model.train()
            self.eval_images += sum(len(x) for x in calibration) + len(self.val_y)
            scores.append(PathScore(index=i, accuracy=accuracy, params=self.model.paths[i].params, flops=flops))
        return scores
