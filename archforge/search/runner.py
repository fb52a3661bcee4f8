"""The search driver: ask a strategy for a candidate, check it, train it, store the result; repeat.

One trial per candidate (all its seeds). For each trial the driver

1. asks the strategy (Optuna ``study.ask``) for decision values and concretises the spec;
2. reuses what the store already knows about the candidate (same hash, same training
   settings): a finished evaluation of a seed is never repeated, a rejection is never
   rechecked; a candidate another worker is training right now is waited for;
3. rejects the candidate before any training when the shape checker or a constraint
   (``max_params``, ``max_flops``, ...) refuses it (the trial is ``PRUNED`` with the reason);
4. trains each missing seed with the evaluator, reporting validation accuracy per epoch
   to the pruner (multi-fidelity; first seed only) and a heartbeat to the storage;
   every finished seed is stored at once, so a killed worker loses at most one seed;
5. stores the outcome (metrics, epochs run, error) and tells Optuna the objective values.

An exception from the evaluator (``TrialError``, NaN, out of memory, a crashing block,
even ``sys.exit``) fails that trial with its message; the search goes on. Trials left
``RUNNING`` by a dead worker are failed as stale when the search is resumed (immediately
for a dead process on this machine, or for a trial with no worker recorded when no other
process uses the store; after the heartbeat grace period otherwise) and their candidates
retried. Ctrl-C fails the trials being trained (a resume retries them) and ends the
search with ``KeyboardInterrupt``. Worker processes end when the driver dies.

``workers=N`` runs N local processes on the same storage, each with ``cores / N`` torch
threads; ``executor="ray"`` runs them as Ray tasks when ``ray`` is installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import math
import os
import pickle
import random
import statistics
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from archforge.errors import SpecError, SpecWarning
from archforge.search.space import Candidate, SearchSettings, Space, parse_space
from archforge.search.storage import (
    COUNTED, LIVE_SESSIONS, META_KEY, PROXY_KEY, GRACE_PERIOD, SearchError, StorageRef, claim_store, open_storage,
    record_of, resolve_storage, sole_user, storage_error, storage_errors, store_lock, unreadable, worker_alive, worker_info,
)
from archforge.search.strategies import _quiet, make_pruner, make_strategy

Evaluator = Callable[..., Any]
#: Consecutive trials that brought nothing new (reused or rejected) after which a worker gives up.
MAX_IDLE = 200
#: Study attributes holding each worker's time accounting.
STATS_PREFIX = "archforge_worker:"
#: TrainConfig fields that do not change results, left out of the cache key.
_NEUTRAL_TRAIN_FIELDS = {"seed", "threads", "device", "latency_batch", "latency_repeats"}


# --------------------------------------------------------------------------- the evaluate interface


@dataclass
class _FallbackTrainConfig:
    """Same fields as ``archforge.search.evaluate.TrainConfig``; used only where that module is absent."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.1
    augment: bool = True
    seed: int = 0
    device: str = "cpu"
    amp: bool = True
    threads: int | None = None
    latency_batch: int = 1
    latency_repeats: int = 20


def train_config_class() -> type:
    try:
        from archforge.search.evaluate import TrainConfig
    except ImportError:
        return _FallbackTrainConfig
    return TrainConfig


def make_train_config(base: Any = None, **updates: Any) -> Any:
    """A ``TrainConfig`` from a TrainConfig, a mapping of its fields, or nothing, with ``updates`` applied."""
    cls = train_config_class()
    if base is None:
        fields: dict[str, Any] = {}
    elif isinstance(base, Mapping):
        fields = dict(base)
    elif dataclasses.is_dataclass(base):
        fields = dataclasses.asdict(base)
    else:
        raise SearchError(f"train must be a TrainConfig or a mapping of its fields, got {type(base).__name__}")
    fields.update({k: v for k, v in updates.items() if v is not None})
    if isinstance(fields.get("augment"), Mapping):  # an AugmentConfig that went through asdict / JSON
        try:
            from archforge.data.augment import AugmentConfig

            fields["augment"] = AugmentConfig(**fields["augment"])
        except (ImportError, TypeError):
            pass
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        from archforge.errors import did_you_mean

        raise SearchError(f"unknown training setting '{unknown[0]}'{did_you_mean(unknown[0], known)}; TrainConfig has {', '.join(sorted(known))}")
    return cls(**fields)


def resolve_evaluator(evaluator: Evaluator | str | None) -> Evaluator:
    """The callable that trains a candidate: the given one, ``"module:function"``, or archforge's ``evaluate``."""
    if evaluator is None:
        try:
            from archforge.search.evaluate import evaluate
        except ImportError as exc:
            raise SearchError(f"training candidates needs archforge.search.evaluate, which cannot be imported: {exc}") from None
        return evaluate
    if isinstance(evaluator, str):
        module, _, attr = evaluator.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError, ValueError) as exc:
            raise SearchError(f"cannot import evaluator '{evaluator}' (expected 'module:function'): {exc}") from None
        return obj
    return evaluator


def load_data(dataset: Any, *, limit: int | None, val_fraction: float, seed: int = 0) -> Any:
    """A ``DataSplit``: loaded by name through ``archforge.data``, or the object given."""
    if not isinstance(dataset, str):
        return dataset
    try:
        from archforge.data import load_dataset
    except ImportError as exc:
        raise SearchError(f"loading dataset '{dataset}' needs archforge.data, which cannot be imported: {exc}") from None
    try:
        return load_dataset(dataset, val_fraction=val_fraction, seed=seed, limit=limit)
    except SpecError:
        raise
    except (KeyError, ValueError, OSError) as exc:
        raise SearchError(f"cannot load dataset '{dataset}': {exc}") from None


def _error_text(exc: BaseException) -> str:
    name = type(exc).__name__
    message = str(exc).strip().replace("\n", " ")
    if name == "TrialError":
        return message or name
    if isinstance(exc, MemoryError) or "out of memory" in message.lower():
        return f"out of memory: {message}" if message else "out of memory"
    return f"{name}: {message}" if message else name


def _field(result: Any, name: str) -> Any:
    if isinstance(result, Mapping):
        return result.get(name)
    return getattr(result, name, None)


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- run configuration


@dataclass
class RunConfig:
    """Everything a worker needs, picklable (workers are separate processes)."""

    space_text: str
    space_file: str
    settings: dict[str, Any]
    storage_url: str
    study_name: str
    budget: int | None
    train: dict[str, Any]
    config_key: str
    dataset: Any
    evaluator: Any = None
    workers: int = 1
    threads: int | None = None

    @property
    def search(self) -> SearchSettings:
        return SearchSettings.model_validate(self.settings)


def config_key(settings: SearchSettings, train: Any, dataset_name: str) -> str:
    """What makes two evaluations of the same candidate and seed comparable."""
    fields = {k: v for k, v in dataclasses.asdict(train).items() if k not in _NEUTRAL_TRAIN_FIELDS}
    data = {"dataset": dataset_name, "limit": settings.limit, "val_fraction": settings.val_fraction, "train": fields}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def dataset_name(dataset: Any) -> str:
    return dataset if isinstance(dataset, str) else str(getattr(dataset, "name", type(dataset).__name__))


# --------------------------------------------------------------------------- progress display


class Display:
    """What a worker tells the user; the default says nothing."""

    def trial_started(self, number: int, label: str, epochs: int) -> None: ...
    def epoch(self, seed: int, epoch: int, accuracy: float | None) -> None: ...
    def trial_finished(self, record: Any, counted: int) -> None: ...
    def workers(self, busy: Mapping[int, tuple[int, int, int]]) -> None: ...
    def message(self, text: str) -> None: ...


class RichDisplay(Display):
    """Rich progress bars (trials and the epochs of the current trial, with ETA) and one line per trial."""

    def __init__(self, total: int | None, console: Any = None, *, epochs_bar: bool = True, done: int = 0):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = console or Console(stderr=True, highlight=False)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("elapsed"), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.trials = self.progress.add_task("trials", total=total, completed=done)
        self.epochs = self.progress.add_task("epochs", total=1, visible=False) if epochs_bar else None
        self.worker_tasks: dict[int, Any] = {}

    def __enter__(self) -> "RichDisplay":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def trial_started(self, number: int, label: str, epochs: int) -> None:
        if self.epochs is not None:
            self.progress.reset(self.epochs, total=max(1, epochs), visible=True, description=f"#{number} epochs")

    def epoch(self, seed: int, epoch: int, accuracy: float | None) -> None:
        if self.epochs is not None:
            self.progress.advance(self.epochs)

    def trial_finished(self, record: Any, counted: int) -> None:
        self.progress.update(self.trials, completed=counted)
        if self.epochs is not None:
            self.progress.update(self.epochs, visible=False)
        self.console.print(trial_line(record), markup=False, highlight=False)

    def set_total(self, total: int | None) -> None:
        self.progress.update(self.trials, total=total)

    def workers(self, busy: Mapping[int, tuple[int, int, int]]) -> None:
        """One epoch bar per worker process: ``busy[index] = (trial number, epochs done, epochs in all)``."""
        for index, (number, done, total) in sorted(busy.items()):
            task = self.worker_tasks.get(index)
            if task is None:
                task = self.worker_tasks[index] = self.progress.add_task("", total=1)
            self.progress.update(task, description=f"worker {index} #{number} epochs", completed=done, total=max(1, total), visible=True)
        for index, task in self.worker_tasks.items():
            if index not in busy:
                self.progress.update(task, visible=False)

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)


class LineDisplay(Display):
    """One line per finished trial on stderr, no bars (logs, pipes, --no-progress)."""

    def __init__(self, console: Any = None):
        from rich.console import Console

        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)

    def trial_finished(self, record: Any, counted: int) -> None:
        self.console.print(trial_line(record), markup=False, highlight=False)

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)


def trial_line(r: Any) -> str:
    """``#7 3f2a9c1d0b7e complete acc 0.9731 ± 0.0021 · params 45,218 · a=1, b=conv (12.3s)``"""
    head = f"#{r.number:<3} {r.hash or '-':12} {r.status}"
    bits = []
    if r.duplicate_of is not None:
        bits.append(f"reused #{r.duplicate_of}")
    if r.accuracy is not None:
        acc = f"acc {r.accuracy:.4f}"
        if r.accuracy_std is not None and len(r.accuracies) > 1:
            acc += f" ± {r.accuracy_std:.4f}"
        bits.append(acc)
    if r.params is not None:
        bits.append(f"params {r.params:,}")
    if r.latency_ms is not None:
        bits.append(f"{r.latency_ms:.2f} ms")
    if r.parent is not None:
        bits.append(f"child of #{r.parent} ({r.mutated})")
    text = head + (" · " + " · ".join(bits) if bits else "")
    if r.decisions:
        from archforge.search.space import short_value

        text += " · " + ", ".join(f"{k}={short_value(v, 20)}" for k, v in r.decisions.items())
    if r.error:
        text += f" · {r.error}"
    if r.eval_time_s:
        text += f" ({r.eval_time_s:.1f}s)"
    return text


# --------------------------------------------------------------------------- heartbeat


class _Heartbeat:
    """Records a heartbeat for a running trial every ``interval`` seconds (RDB storages with heartbeats on)."""

    def __init__(self, storage: Any, trial_id: int):
        self.storage = storage
        self.trial_id = trial_id
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        interval = None
        try:
            interval = storage.get_heartbeat_interval() if hasattr(storage, "record_heartbeat") else None
        except Exception:
            interval = None
        self.interval = interval

    def __enter__(self) -> "_Heartbeat":
        if self.interval:
            self.beat()
            self.thread = threading.Thread(target=self.loop, name="archforge-heartbeat", daemon=True)
            self.thread.start()
        return self

    def beat(self) -> None:
        try:
            self.storage.record_heartbeat(self.trial_id)
        except Exception:  # a missed heartbeat is not worth failing a trial
            pass

    def loop(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.beat()

    def __exit__(self, *exc: Any) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=5)


# --------------------------------------------------------------------------- the worker


class _Pruned(Exception):
    pass


@dataclass
class WorkerStats:
    trials: int = 0
    evaluated: int = 0
    wall_s: float = 0.0
    eval_s: float = 0.0
    wait_s: float = 0.0

    @property
    def driver_s(self) -> float:
        return max(0.0, self.wall_s - self.eval_s - self.wait_s)


class Worker:
    """Runs trials against one study until the budget is spent or the space is exhausted."""

    def __init__(self, cfg: RunConfig, *, index: int = 0, storage: Any = None, display: Display | None = None,
                 data: Any = None, space: Space | None = None):
        _quiet()
        self.cfg = cfg
        self.index = index
        self.settings = cfg.search
        self.space = space or parse_space(cfg.space_text, cfg.space_file)
        self.storage = storage if storage is not None else open_storage(cfg.storage_url)
        self.display = display or Display()
        self._data = data
        self.evaluate = resolve_evaluator(cfg.evaluator)
        self.info = worker_info(index)
        self.distributions = self.space.distributions()
        self.stats = WorkerStats()
        self._distinct: int | None | bool = False  # False: not computed yet
        self._summaries: dict[str, tuple[int, int]] = {}
        self._epochs_done = self._epochs_total = 0

    # -- setup ---------------------------------------------------------------
    @property
    def data(self) -> Any:
        if self._data is None:
            self._data = load_data(self.cfg.dataset, limit=self.settings.limit, val_fraction=self.settings.val_fraction)
        return self._data

    def open_study(self) -> Any:
        import optuna

        trials = optuna.load_study(study_name=self.cfg.study_name, storage=self.storage).get_trials(deepcopy=False)
        seed = self.settings.seed if self.settings.strategy == "grid" else self.settings.seed + 1000 * self.index + len(trials)
        self.strategy = make_strategy(self.settings.strategy, self.space, self.settings, seed=seed, budget=self.cfg.budget, workers=self.cfg.workers)
        return optuna.load_study(
            study_name=self.cfg.study_name, storage=self.storage, sampler=self.strategy.sampler(),
            pruner=make_pruner(self.settings.pruner, self.settings.epochs),
        )

    # -- the loop --------------------------------------------------------------
    def run(self) -> WorkerStats:
        LIVE_SESSIONS.add(self.info["session"])
        claim, _ = claim_store(self.cfg.storage_url)  # held while this worker runs
        try:
            return self._run()
        finally:
            LIVE_SESSIONS.discard(self.info["session"])
            if claim is not None:
                os.close(claim)

    def _run(self) -> WorkerStats:
        study = self.open_study()
        self.warm_up()
        start = time.perf_counter()
        idle = 0
        while True:
            trials = study.get_trials(deepcopy=False)
            if reap_stale(study, trials, self.storage):
                continue
            counted, running = budget_state(trials, exclude=None)
            if self.cfg.budget is not None and counted >= self.cfg.budget:
                break
            done_all, covered = self.strategy.exhausted(trials)
            if done_all or self.space_exhausted(trials):
                break
            if covered or (self.cfg.budget is not None and counted + running >= self.cfg.budget):
                self.wait(0.5)  # the last candidates are being trained elsewhere; a dead worker's get retried
                continue
            if idle >= MAX_IDLE:
                self.display.message(f"stopping: the last {MAX_IDLE} trials found no new candidate")
                break
            asked = time.perf_counter()
            trial = self.strategy.ask(study, self.distributions)
            record = self.run_trial(study, trial, asked)
            self.stats.trials += 1
            self.stats.evaluated += bool(record is not None and record.counted)
            idle = 0 if record is not None and record.counted else idle + 1
        self.stats.wall_s = time.perf_counter() - start
        self.save_stats(study)
        return self.stats

    def warm_up(self) -> None:
        """Once per worker, before the per-trial accounting: load the data, the plugins and the FLOP counter."""
        _ = self.data
        from archforge.builder import summarize
        from archforge.registry import default_registry

        default_registry()
        try:
            values = {n: d.first() for n, d in self.space.decisions.items()}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SpecWarning)
                summarize(self.space.concretize(values).spec)
        except Exception:  # an invalid first candidate is the search's business, not the warm-up's
            pass

    def wait(self, seconds: float) -> None:
        started = time.perf_counter()
        time.sleep(seconds)
        self.stats.wait_s += time.perf_counter() - started

    def save_stats(self, study: Any) -> None:
        """Where this worker's time went (driver overhead = wall - eval - wait), for reports and benchmarks."""
        if self.stats.trials:
            key = f"{STATS_PREFIX}{self.info['host']}:{self.info['pid']}:{self.index}:{int(time.time())}"
            study.set_user_attr(key, {**dataclasses.asdict(self.stats), "index": self.index})

    def space_exhausted(self, trials: Sequence[Any]) -> bool:
        """Every distinct candidate of a finite space has been evaluated or rejected."""
        if self._distinct is False:
            candidates = self.space.distinct_candidates()
            self._distinct = None if candidates is None else len(candidates)
        if not self._distinct:
            return False
        seen = {t.user_attrs["candidate"]["hash"] for t in trials
                if t.state.is_finished() and "candidate" in t.user_attrs and "outcome" in t.user_attrs
                and unreadable(t) is None and t.user_attrs["outcome"].get("status") != "cancelled"}
        return len(seen) >= self._distinct

    # -- one trial -------------------------------------------------------------
    def run_trial(self, study: Any, trial: Any, t0: float | None = None) -> Any:
        """Evaluate one asked trial; on Ctrl-C or a storage fault it is failed (a resume retries it) and the error raised."""
        t0 = time.perf_counter() if t0 is None else t0
        try:
            # First the worker and a heartbeat: a trial of a killed worker is then recognised as stale.
            trial.set_user_attr("worker", self.info)
            with _Heartbeat(self.storage, trial._trial_id):
                return self._run_trial(study, trial, t0)
        except BaseException:
            self.abandon(study, trial)
            raise

    def abandon(self, study: Any, trial: Any) -> None:
        """Fail a trial that cannot finish here, without an outcome: a later run retries its candidate."""
        from optuna.trial import TrialState

        try:
            if not study._storage.get_trial(trial._trial_id).state.is_finished():
                study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except Exception:  # a full or read-only store: the stale rule fails it on the next start
            pass

    def _run_trial(self, study: Any, trial: Any, t0: float) -> Any:
        try:
            values = self.space.decode({k: v for k, v in trial.params.items() if k in self.space.decisions})
            candidate = self.space.concretize(values)
        except (SpecError, KeyError, ValueError) as exc:
            message = exc.format() if isinstance(exc, SpecError) else str(exc)
            return self.finish(study, trial, {"status": "rejected", "error": message}, t0)
        trial.set_user_attr("candidate", {
            "hash": candidate.hash, "decisions": _jsonable(values), "spec": candidate.data, "config": self.cfg.config_key,
        })
        seeds = list(range(self.settings.seeds))
        known = self.lookup(study, candidate.hash, trial.number, seeds)
        if known.rejected is not None:
            return self.finish(study, trial, {"status": "rejected", "error": known.rejected[0], "duplicate_of": known.rejected[1]}, t0)
        if known.complete(seeds):
            outcome = self.aggregate(candidate, {s: known.seeds[s][0] for s in seeds}, fresh=set())
            outcome["duplicate_of"] = known.seeds[seeds[0]][1]
            return self.finish(study, trial, outcome, t0)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SpecWarning)
            reason = self.space.check(candidate, self.settings.constraints)
        if reason is not None:
            return self.finish(study, trial, {"status": "rejected", "error": reason, "params": candidate.params, "flops": candidate.flops}, t0)

        trial.set_user_attr("phase", "evaluating")
        if self.over_budget(study, trial.number):
            return self.finish(study, trial, {"status": "cancelled", "error": "budget reached by other workers"}, t0)

        results: dict[int, dict[str, Any]] = {}
        fresh: set[int] = set()
        eval_s = 0.0
        total_epochs = self.settings.epochs * len([s for s in seeds if s not in known.seeds])
        self._epochs_done, self._epochs_total = 0, total_epochs
        if self.cfg.workers > 1:
            trial.set_user_attr("progress", {"done": 0, "total": total_epochs})
        self.display.trial_started(trial.number, candidate.label(), total_epochs)
        for seed in seeds:
            if seed in known.seeds:
                results[seed] = known.seeds[seed][0]
            else:
                started = time.perf_counter()
                results[seed] = self.train(trial, candidate, seed, prune=(seed == seeds[0] and self.settings.pruner is not None))
                eval_s += time.perf_counter() - started
                fresh.add(seed)
                trial.set_user_attr(f"seed_{seed}", results[seed])
            if results[seed]["status"] != "ok":
                break
        outcome = self.aggregate(candidate, results, fresh)
        outcome["eval_time_s"] = round(eval_s, 4)
        self.stats.eval_s += eval_s
        return self.finish(study, trial, outcome, t0, eval_s=eval_s)

    def train(self, trial: Any, candidate: Candidate, seed: int, *, prune: bool) -> dict[str, Any]:
        """Train one seed; never raises (an error becomes a failed result)."""
        config = make_train_config(self.cfg.train, seed=seed, threads=self.cfg.threads)
        steps: list[float] = []
        pruned = [False]

        def on_epoch(epoch: int, val_acc: float) -> bool:
            steps.append(val_acc)
            self.display.epoch(seed, len(steps), val_acc)
            self._epochs_done += 1
            if self.cfg.workers > 1:  # the parent process draws the epoch bars from this
                try:
                    trial.set_user_attr("progress", {"done": self._epochs_done, "total": self._epochs_total})
                except Exception:  # progress display only
                    pass
            if prune and _finite(val_acc) is not None:
                trial.report(float(val_acc), len(steps))
                if trial.should_prune():
                    pruned[0] = True
                    return True
            return False

        started = time.perf_counter()
        try:
            result = self.evaluate(candidate.spec, self.data, config, on_epoch=on_epoch)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - TrialError, NaN, OOM, a crashing block, sys.exit: fail this trial only
            error = _error_text(exc)
            if isinstance(exc, SystemExit):
                error = f"the evaluator called sys.exit({exc.code!r})"
                self.display.message(f"#{trial.number}: {error}; the trial is failed and the search goes on")
            return {"seed": seed, "status": "failed", "error": error, "epochs_run": len(steps),
                    "history": [_finite(a) for a in steps], "eval_time_s": round(time.perf_counter() - started, 4)}
        accuracy = _finite(_field(result, "accuracy"))
        epochs = _field(result, "epochs")
        record = {
            "seed": seed,
            "status": "ok",
            "accuracy": accuracy,
            "epochs_run": int(epochs) if isinstance(epochs, (int, float)) and not isinstance(epochs, bool) else len(steps),
            "history": [_finite(a) for a in (_field(result, "history") or steps)],
            "stopped_early": bool(_field(result, "stopped_early")) or pruned[0],
            "params": _field(result, "params"),
            "flops": _field(result, "flops"),
            "latency_ms": _finite(_field(result, "latency_ms")),
            "peak_memory_mb": _finite(_field(result, "peak_memory_mb")),
            "train_time_s": _finite(_field(result, "train_time_s")),
            "eval_time_s": round(time.perf_counter() - started, 4),
        }
        timings = _field(result, "timings")
        if isinstance(timings, Mapping):
            record["timings"] = {str(k): _finite(v) for k, v in timings.items()}
        if accuracy is None:
            record.update(status="failed", error=f"accuracy is {_field(result, 'accuracy')!r} (NaN or missing)")
        elif pruned[0]:
            record["status"] = "pruned"
        return record

    def aggregate(self, candidate: Candidate, results: Mapping[int, dict[str, Any]], fresh: set[int]) -> dict[str, Any]:
        recs = [results[s] for s in sorted(results)]
        failed = [r for r in recs if r["status"] == "failed"]
        pruned = [r for r in recs if r["status"] == "pruned"]
        accuracies = [r["accuracy"] for r in recs if r.get("accuracy") is not None]
        status = "failed" if failed else "pruned" if pruned else "complete"
        outcome: dict[str, Any] = {
            "status": status,
            "accuracies": accuracies,
            "accuracy": statistics.fmean(accuracies) if accuracies and not failed else None,
            "accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 and not failed else None,
            "epochs_run": sum(int(results[s].get("epochs_run", 0) or 0) for s in fresh),
            "epochs_full": self.settings.epochs * self.settings.seeds,
            "seeds": sorted(results),
        }
        if pruned:
            outcome["accuracy"] = pruned[0].get("accuracy")
        if failed:
            outcome["error"] = failed[0].get("error")
        for name in ("params", "flops"):
            value = next((r[name] for r in recs if r.get(name) is not None), None)
            outcome[name] = int(value) if value is not None else getattr(candidate, name)
        for name in ("latency_ms", "peak_memory_mb", "train_time_s"):
            vals = [r[name] for r in recs if r.get(name) is not None]
            outcome[name] = statistics.fmean(vals) if vals else None
        return outcome

    def objective_values(self, candidate_outcome: dict[str, Any]) -> list[float] | str:
        values = []
        for name in self.settings.objectives:
            value = candidate_outcome.get(name)
            if value is None:
                return f"the evaluator gave no '{name}' for objective '{name}'"
            values.append(float(value))
        return values

    def finish(self, study: Any, trial: Any, outcome: dict[str, Any], t0: float, *, eval_s: float = 0.0) -> Any:
        from optuna.trial import TrialState

        values = None
        state = {"complete": None, "pruned": TrialState.PRUNED, "rejected": TrialState.PRUNED}.get(outcome["status"], TrialState.FAIL)
        if outcome["status"] == "complete":
            if any(o in ("params", "flops") for o in self.settings.objectives) and outcome.get("params") is None:
                self.fill_summary(trial, outcome)
            values = self.objective_values(outcome)
            if isinstance(values, str):
                outcome.update(status="failed", error=values)
                values, state = None, TrialState.FAIL
        outcome["driver_time_s"] = round(time.perf_counter() - t0 - eval_s, 4)
        trial.set_user_attr("outcome", _jsonable(outcome))
        if values is not None:
            study.tell(trial, values)
        else:
            study.tell(trial, state=state)
        if type(self.display) is Display:  # nobody watches: spare the storage two reads
            return _Done(outcome["status"] in COUNTED and outcome.get("duplicate_of") is None)
        record = record_of(study._storage.get_trial(trial._trial_id))
        counted, _ = budget_state(study.get_trials(deepcopy=False), exclude=None)
        self.display.trial_finished(record, counted)
        return record

    def fill_summary(self, trial: Any, outcome: dict[str, Any]) -> None:
        from archforge.builder import summarize

        candidate = trial.user_attrs.get("candidate") or {}
        key = candidate.get("hash")
        if key not in self._summaries:
            from archforge.spec import Spec

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SpecWarning)
                summary = summarize(Spec.from_dict(candidate["spec"]))
            self._summaries[key] = (summary.params, summary.flops)
        outcome["params"], outcome["flops"] = self._summaries[key]

    # -- what the store knows ----------------------------------------------------
    def lookup(self, study: Any, key: str, me: int, seeds: Sequence[int]) -> "_Known":
        """Finished results for ``key`` (same training settings); waits for another worker training it now."""
        from optuna.trial import TrialState

        while True:
            known = _Known()
            busy = None
            for t in study.get_trials(deepcopy=False):
                if t.number == me or unreadable(t) is not None:
                    continue
                candidate = t.user_attrs.get("candidate")
                if not candidate or candidate.get("hash") != key or candidate.get("config") != self.cfg.config_key:
                    continue
                outcome = t.user_attrs.get("outcome") or {}
                if outcome.get("status") == "rejected":
                    known.rejected = known.rejected or (outcome.get("error") or "rejected", outcome.get("duplicate_of", t.number) or t.number)
                    continue
                if outcome.get("status") == "cancelled":
                    continue
                for name, rec in t.user_attrs.items():
                    if name.startswith("seed_") and name[len("seed_"):].isdigit() and isinstance(rec, dict) and rec.get("status") in ("ok", "failed", "pruned"):
                        seed = int(name[len("seed_"):])
                        source = outcome.get("duplicate_of") or t.number
                        if seed not in known.seeds or source < known.seeds[seed][1]:
                            known.seeds[seed] = (rec, source)
                if t.state == TrialState.RUNNING and t.number < me:  # the lower number goes first: no deadlock
                    alive = worker_alive(t.user_attrs.get("worker") or {})
                    if alive is not False:
                        busy = t.number
            if known.rejected is not None or known.complete(seeds) or busy is None:
                return known
            self.wait(1.0)  # another worker trains this candidate right now: wait for its result
            reap_stale(study, study.get_trials(deepcopy=False), self.storage)

    def over_budget(self, study: Any, me: int) -> bool:
        """Whether the budget is spent counting only trials ahead of this one (by number)."""
        if self.cfg.budget is None:
            return False
        from optuna.trial import TrialState

        ahead = 0
        for t in study.get_trials(deepcopy=False):
            if t.number == me:
                continue
            outcome = t.user_attrs.get("outcome")
            if isinstance(outcome, dict):
                ahead += outcome.get("status") in COUNTED and outcome.get("duplicate_of") is None
            elif t.state == TrialState.RUNNING and t.user_attrs.get("phase") == "evaluating" and t.number < me:
                ahead += 1
        return ahead >= self.cfg.budget


@dataclass
class _Done:
    counted: bool


@dataclass
class _Known:
    seeds: dict[int, tuple[dict[str, Any], int]] = field(default_factory=dict)
    rejected: tuple[str, int] | None = None

    def complete(self, seeds: Sequence[int]) -> bool:
        """Nothing is left to train: every seed is known, or the first unknown one comes after a failed or pruned one."""
        for seed in seeds:
            if seed not in self.seeds:
                return False
            if self.seeds[seed][0]["status"] != "ok":
                return True
        return True


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def budget_state(trials: Sequence[Any], exclude: int | None) -> tuple[int, int]:
    """(counted evaluations, trials being evaluated now)."""
    from optuna.trial import TrialState

    counted = running = 0
    for t in trials:
        outcome = t.user_attrs.get("outcome")
        if isinstance(outcome, dict):
            counted += outcome.get("status") in COUNTED and outcome.get("duplicate_of") is None
        elif t.state == TrialState.RUNNING and t.user_attrs.get("phase") == "evaluating" and t.number != exclude:
            running += 1
    return counted, running


def reap_stale(study: Any, trials: Sequence[Any], storage: Any, *, alone: bool = False) -> bool:
    """Fail trials whose worker died and queue their candidates again; whether anything changed.

    ``alone``: no other process on this machine uses the store (see :func:`claim_store`), so a
    trial killed between ``ask`` and its first attribute (no worker recorded) is failed at once.
    """
    import optuna
    from optuna.trial import TrialState

    changed = False
    now = time.time()
    for t in trials:
        if t.state != TrialState.RUNNING or "outcome" in t.user_attrs:
            continue
        info = t.user_attrs.get("worker")
        if info is not None:
            dead = worker_alive(info) is False
        else:  # killed between ask and its first attribute
            started = t.datetime_start.timestamp() if t.datetime_start else now
            dead = alone or now - started > GRACE_PERIOD
        if dead:
            try:
                study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
                changed = True
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
    try:
        optuna.storages.fail_stale_trials(study)  # heartbeats: workers on other machines
    except Exception:
        pass
    trials = study.get_trials(deepcopy=False) if changed else trials
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if t.state == TrialState.FAIL and "outcome" not in t.user_attrs and t.number not in retried and t.params:
            carry = {k: t.user_attrs[k] for k in ("parent", "mutated", "proxy") if k in t.user_attrs}
            study.enqueue_trial(dict(t.params), user_attrs={**carry, "retry_of": t.number})
            changed = True
    return changed


# --------------------------------------------------------------------------- study setup


def study_meta(space: Space, settings: SearchSettings, cfg_key: str, dataset: str, train: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "space": space.text,
        "space_file": space.file,
        "space_fingerprint": space.fingerprint,
        "space_name": space.name,
        "settings": settings.model_dump(mode="json"),
        "config_key": cfg_key,
        "dataset": dataset,
        "train": _jsonable(dataclasses.asdict(train)),
        "decisions": [d.to_dict() for d in space.decisions.values()],
    }


def open_or_create_study(storage: Any, ref: StorageRef, meta: dict[str, Any], directions: list[str]) -> Any:
    import optuna

    study = optuna.create_study(storage=storage, study_name=ref.study_name, directions=directions, load_if_exists=True)
    old = study.user_attrs.get(META_KEY)
    if old is None:
        study.set_user_attr(META_KEY, meta)
        return study
    where = f"run '{ref.study_name}' ({ref.url})"
    if old.get("space_fingerprint") != meta["space_fingerprint"]:
        raise SearchError(f"{where} was started from another version of the search space ({old.get('space_file')}); "
                          "resume it with that space, or start a new run with --name")
    if [d.name.lower() for d in study.directions] != directions or old["settings"].get("objectives") != meta["settings"]["objectives"]:
        raise SearchError(f"{where} optimises {', '.join(old['settings'].get('objectives', []))}; start a new run with --name to change objectives")
    if old["settings"].get("seeds") != meta["settings"]["seeds"]:
        raise SearchError(f"{where} trains {old['settings'].get('seeds')} seed(s) per candidate; start a new run with --name to use {meta['settings']['seeds']}")
    if old.get("config_key") != meta["config_key"]:
        changed = _changed(old, meta)
        raise SearchError(f"{where} was trained with other settings ({changed}); results would not be comparable: "
                          "resume with the same settings or start a new run with --name")
    merged = dict(old)
    merged["settings"] = meta["settings"]  # budget, strategy, workers may change between sessions
    study.set_user_attr(META_KEY, merged)
    return study


def _changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    diffs = []
    for key in ("dataset",):
        if old.get(key) != new.get(key):
            diffs.append(f"{key} {old.get(key)} → {new.get(key)}")
    for key in ("limit", "val_fraction", "epochs"):
        a, b = old.get("settings", {}).get(key), new["settings"].get(key)
        if a != b:
            diffs.append(f"{key} {a} → {b}")
    for key, value in new.get("train", {}).items():
        if key not in _NEUTRAL_TRAIN_FIELDS and key != "epochs" and old.get("train", {}).get(key) != value:
            diffs.append(f"{key} {old.get('train', {}).get(key)} → {value}")
    return ", ".join(diffs) or "training settings differ"


def check_input_shape(space: Space, data: Any) -> None:
    shape = getattr(data, "input_shape", None)
    declared = (space.template.get("input") or {}).get("shape")
    if shape is None or not isinstance(declared, list) or not all(isinstance(v, int) for v in declared):
        return
    if tuple(declared) != tuple(shape):
        raise SpecError(
            f"the space's input shape {list(declared)} does not match dataset '{dataset_name(data)}' ({list(shape)})",
            space.document.locate(("input", "shape")),
        )


def default_threads(workers: int) -> int | None:
    if workers <= 1:
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // workers)


# --------------------------------------------------------------------------- proxies


def proxy_phase(study: Any, space: Space, settings: SearchSettings, data: Any, budget: int | None, display: Display) -> dict[str, Any]:
    """Score candidates with a zero-cost proxy and queue the best for training (once per run)."""
    meta = study.user_attrs.get(PROXY_KEY)
    if meta is not None:
        return meta
    proxy = settings.proxy
    assert proxy is not None
    try:
        from archforge.search import proxies
    except ImportError as exc:
        raise SearchError(f"proxy '{proxy.score}' needs archforge.search.proxies, which cannot be imported: {exc}") from None
    started = time.perf_counter()
    pool = space.distinct_candidates(limit=proxy.sample) or []
    if not pool:
        rng = random.Random(settings.seed)
        seen: dict[str, Candidate] = {}
        for _ in range(proxy.sample * 20):
            candidate = space.concretize(space.sample(rng))
            seen.setdefault(candidate.hash, candidate)
            if len(seen) >= proxy.sample:
                break
        pool = list(seen.values())
    scored: list[tuple[float, Candidate]] = []
    rejected = 0
    input_shape = tuple(getattr(data, "input_shape", ()) or (space.template.get("input") or {}).get("shape") or ())
    for candidate in pool:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SpecWarning)
            if space.check(candidate, settings.constraints) is not None:
                rejected += 1
                continue
        try:
            if proxy.score == "synflow":
                score = float(proxies.synflow(candidate.spec, input_shape))
            else:
                score = float(proxies.naswot(candidate.spec, data, batch=proxy.batch, seed=settings.seed))
        except Exception:  # a candidate the proxy cannot score is ranked last
            score = float("-inf")
        if not math.isfinite(score):
            score = float("-inf")
        scored.append((score, candidate))
    scored.sort(key=lambda item: item[0], reverse=True)
    keep = max(1, math.ceil(proxy.keep * len(scored))) if scored else 0
    if budget is not None:
        keep = min(keep, budget)
    kept, dropped = scored[:keep], scored[keep:]
    for rank, (score, candidate) in enumerate(kept):
        study.enqueue_trial(space.encode(candidate.values), user_attrs={"proxy": {"score": score if math.isfinite(score) else None, "rank": rank + 1, "name": proxy.score}})
    meta = {
        "score": proxy.score, "scored": len(scored), "rejected": rejected, "kept": len(kept), "discarded": len(dropped),
        "scores": {c.hash: (s if math.isfinite(s) else None) for s, c in scored},
        "time_s": round(time.perf_counter() - started, 3),
    }
    study.set_user_attr(PROXY_KEY, meta)
    display.message(f"proxy {proxy.score}: scored {len(scored)} candidates ({rejected} rejected) in {meta['time_s']:.1f}s; training the best {len(kept)}")
    return meta


# --------------------------------------------------------------------------- running a search


def run_search(
    space: Space,
    settings: SearchSettings,
    *,
    storage: Any = None,
    runs_dir: str | os.PathLike[str] = "runs",
    evaluator: Evaluator | str | None = None,
    dataset: Any = None,
    train: Any = None,
    progress: bool | str | None = None,
    executor: str = "local",
    console: Any = None,
) -> tuple[Any, StorageRef]:
    """Run (or resume) a search; returns the Optuna study and where it is stored.

    A storage fault (read-only or full disk) is a one-line :class:`SearchError`; Ctrl-C
    prints how many trials are done and raises ``KeyboardInterrupt``; either way every
    recorded trial is kept and the same call again resumes.
    """
    _quiet()
    if settings.pruner is not None and len(settings.objectives) > 1:
        raise SearchError("pruning (multi-fidelity) works with one objective; Optuna cannot prune multi-objective trials")
    dataset = dataset if dataset is not None else settings.dataset
    name = settings.name or space.name
    ref, storage_obj = resolve_storage(storage if storage is not None else settings.storage, name, runs_dir,
                                       from_spec=storage is None and settings.storage is not None)
    claim, alone = claim_store(ref.url)  # held while this search runs
    try:
        with storage_errors(ref.url), _ctrl_c_reported_once():
            return _run_search(space, settings, ref, storage_obj, alone, evaluator=evaluator, dataset=dataset, train=train,
                               progress=progress, executor=executor, console=console)
    except KeyboardInterrupt:
        # Our workers are gone; a trial one of them had asked for but not yet marked as its own is
        # ours to fail (so that the resume retries it) when no other process uses the store.
        if claim is not None and sole_user(claim):
            import optuna

            study = optuna.load_study(study_name=ref.study_name, storage=storage_obj)
            reap_stale(study, study.get_trials(deepcopy=False), storage_obj, alone=True)
        raise
    finally:
        if claim is not None:
            os.close(claim)


def _run_search(space: Space, settings: SearchSettings, ref: StorageRef, storage_obj: Any, alone: bool, *, evaluator: Any,
                dataset: Any, train: Any, progress: bool | str | None, executor: str, console: Any) -> tuple[Any, StorageRef]:
    if settings.workers > 1 and not ref.persistent:
        raise SearchError("several workers share a study through a persistent storage: drop storage='memory'")
    if train is None or isinstance(train, Mapping):
        train_cfg = make_train_config({**settings.train, **(train or {})}, epochs=settings.epochs)
    else:
        train_cfg = make_train_config(train, epochs=settings.epochs)
    key = config_key(settings, train_cfg, dataset_name(dataset))
    meta = study_meta(space, settings, key, dataset_name(dataset), train_cfg)
    with store_lock(ref.url):  # two searches starting at once: one creates, the other finds the study
        study = open_or_create_study(storage_obj, ref, meta, settings.directions)
    if ref.run_dir is not None and ref.persistent:
        from archforge.files import write_text

        write_text(ref.run_dir / "space.yaml", space.text, overwrite=True)

    budget = settings.budget
    if budget is None and settings.strategy != "grid" and settings.proxy is None:
        budget = 20
    make_strategy(settings.strategy, space, settings, seed=settings.seed, budget=budget, workers=settings.workers)  # fail early

    evaluator_ref = evaluator
    if settings.workers > 1 and evaluator is not None and not isinstance(evaluator, str):
        try:
            pickle.dumps(evaluator)
        except Exception:
            raise SearchError("workers > 1 need an evaluator importable by name: a module-level function or 'module:function'") from None
    resolve_evaluator(evaluator)  # fail early when the evaluator cannot be found

    data = load_data(dataset, limit=settings.limit, val_fraction=settings.val_fraction)
    check_input_shape(space, data)

    show = sys.stderr.isatty() if progress is None else progress
    total = budget
    if total is None:
        distinct = space.distinct_candidates()
        total = len(distinct) if distinct is not None else None
    display: Display
    if show == "lines":
        display = LineDisplay(console)
    elif show:
        display = RichDisplay(total, console, epochs_bar=settings.workers == 1)
    else:
        display = Display()
    cfg = RunConfig(
        space_text=space.text, space_file=space.file, settings=settings.model_dump(mode="json"), storage_url=ref.url,
        study_name=ref.study_name, budget=budget, train=dataclasses.asdict(train_cfg), config_key=key,
        dataset=dataset, evaluator=evaluator_ref, workers=settings.workers, threads=default_threads(settings.workers),
    )

    reap_stale(study, study.get_trials(deepcopy=False), storage_obj, alone=alone)
    try:
        _drive(cfg, study, space, settings, data, budget, display, storage_obj, executor)
    except KeyboardInterrupt:
        counted, _ = budget_state(study.get_trials(deepcopy=False), exclude=None)
        text = f"interrupted: {counted} done; run the same command again to resume"
        if type(display) is Display:  # silent: still say why the search stopped
            print(text, file=sys.stderr)
        else:
            display.message(text)
        raise
    return study, ref


def _drive(cfg: RunConfig, study: Any, space: Space, settings: SearchSettings, data: Any, budget: int | None,
           display: Display, storage_obj: Any, executor: str) -> None:
    with (display if isinstance(display, RichDisplay) else _nullcontext()):
        if settings.proxy is not None:
            proxy_meta = proxy_phase(study, space, settings, data, budget, display)
            cfg.budget = proxy_meta["kept"] if budget is None else min(budget, proxy_meta["kept"])
            if isinstance(display, RichDisplay):
                display.set_total(cfg.budget)
        counted, _ = budget_state(study.get_trials(deepcopy=False), exclude=None)
        if isinstance(display, RichDisplay):
            display.progress.update(display.trials, completed=counted)
        if settings.workers == 1:
            Worker(cfg, storage=storage_obj, display=display, data=data, space=space).run()
        elif executor == "ray":
            _run_ray(cfg, study, display)
        elif executor == "local":
            _run_processes(cfg, study, display)
        else:
            raise SearchError(f"unknown executor '{executor}': use local or ray")
        if isinstance(display, RichDisplay):
            counted, _ = budget_state(study.get_trials(deepcopy=False), exclude=None)
            display.set_total(counted)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _worker_process(cfg: RunConfig, index: int, watch_parent: bool = False) -> None:
    """Entry point of a worker process (local or Ray); ``watch_parent``: end when the driver process dies."""
    if watch_parent:
        _die_with_parent()
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    try:
        with warnings.catch_warnings(), _ctrl_c_reported_once():
            warnings.simplefilter("ignore", SpecWarning)
            Worker(cfg, index=index).run()
    except KeyboardInterrupt:
        sys.exit(130)
    except SpecError as exc:
        print(f"worker {index}: {exc.format()}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        mapped = storage_error(exc, cfg.storage_url)
        if mapped is not None:
            print(f"worker {index}: {mapped.format()}", file=sys.stderr)
            sys.exit(1)
        print(f"worker {index} crashed:\n{traceback.format_exc()}", file=sys.stderr)
        sys.exit(1)


@contextlib.contextmanager
def _ctrl_c_reported_once() -> Iterator[None]:
    """While searching, a Ctrl-C that lands in a garbage-collector callback is not printed as a traceback.

    Python ignores such a KeyboardInterrupt with a traceback on stderr; the search still stops:
    the workers exit with status 130, which the driver takes as the interrupt.
    """
    default = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            default(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = default


def _die_with_parent() -> None:
    """End this worker when the driver dies (``kill -9`` included); its trial is then left to the stale rule."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:  # portable, and covers a parent that died before prctl
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="archforge-parent-watch", daemon=True).start()


def _run_processes(cfg: RunConfig, study: Any, display: Display) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_process, args=(cfg, i, True), name=f"archforge-worker-{i}") for i in range(cfg.workers)]
    for p in processes:
        p.start()
    try:
        _monitor(study, display, lambda: any(p.is_alive() for p in processes))
    except KeyboardInterrupt:
        _interrupt(processes)
        try:  # a trial whose worker ended before failing it: fail it now, the resume retries it
            reap_stale(study, study.get_trials(deepcopy=False), study._storage)
        except Exception:
            pass
        raise
    finally:
        for p in processes:
            p.join()
    codes = [p.exitcode for p in processes]
    if 130 in codes:
        # The workers were interrupted, but the driver's own KeyboardInterrupt can be lost: Python
        # ignores one raised inside a garbage-collector callback. The search was still interrupted.
        raise KeyboardInterrupt
    if all(code != 0 for code in codes):
        raise SearchError(f"every worker failed (exit codes {codes}); see the messages above")


def _interrupt(processes: Sequence[Any], grace: float = 10.0) -> None:
    """Ctrl-C: let each worker fail its trial and exit (a terminal sent them SIGINT too), then end the rest."""
    import signal

    for p in processes:  # a terminal's Ctrl-C reached them too: a second one could cut their clean-up short
        p.join(1.0)
    for p in processes:
        if p.is_alive() and p.pid is not None:
            try:
                os.kill(p.pid, signal.SIGINT)
            except OSError:
                pass
    deadline = time.monotonic() + grace
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in processes:
        if p.is_alive():
            p.terminate()


def _run_ray(cfg: RunConfig, study: Any, display: Display) -> None:
    try:
        import ray
    except ImportError:
        raise SearchError("executor 'ray' needs the optional 'ray' package (pip install 'ray')") from None
    if not cfg.storage_url or cfg.storage_url == "memory":
        raise SearchError("executor 'ray' needs a storage every worker can reach")
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, log_to_driver=True)
    remote = ray.remote(num_cpus=max(1, cfg.threads or 1))(_worker_process)
    pending = [remote.remote(cfg, i) for i in range(cfg.workers)]

    def alive() -> bool:
        nonlocal pending
        _, pending = ray.wait(pending, timeout=0, num_returns=len(pending))
        return bool(pending)

    _monitor(study, display, alive)


def _monitor(study: Any, display: Display, alive: Callable[[], bool]) -> None:
    """Show progress of worker processes by polling the storage."""
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}  # earlier sessions' trials
    while True:
        running = alive()
        trials = study.get_trials(deepcopy=False)
        counted, _ = budget_state(trials, exclude=None)
        busy: dict[int, tuple[int, int, int]] = {}
        for t in trials:
            if t.state.is_finished() and "outcome" in t.user_attrs and t.number not in seen:
                seen.add(t.number)
                display.trial_finished(record_of(t), counted)
            elif t.state.name == "RUNNING" and "worker" in t.user_attrs:
                progress = t.user_attrs.get("progress") or {}
                busy[int(t.user_attrs["worker"].get("index", 0))] = (t.number, progress.get("done", 0), progress.get("total", 0))
        display.workers(busy)
        if not running:
            break
        time.sleep(1.0)
