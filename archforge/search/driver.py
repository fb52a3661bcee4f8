"""One worker's search loop: Optuna's ``study.optimize`` calling :class:`Objective` on each trial.

For each trial the objective

1. takes the decision values Optuna's sampler proposes and concretises the candidate spec;
2. reuses what the store already knows about the candidate (:mod:`archforge.search.cache`):
   a seed once trained is never trained again, a rejection is never rechecked;
3. rejects the candidate before any training when the shape checker or a constraint
   (``max_params``, ``max_flops``, ...) refuses it (state ``PRUNED``, with the reason);
4. trains each missing seed with the evaluator, reporting validation accuracy per epoch to the
   pruner (first seed only), storing each finished seed at once; the evaluator measures the
   installed plugin metrics on each trained model (:mod:`archforge.search.metrics`);
5. rejects the trained candidate when a bound of ``constraints.metrics`` refuses it (state
   ``PRUNED``; it was trained, so it counts in the budget), else stores the
   :class:`~archforge.search.records.Outcome` and returns the objective values.

Optuna does the rest: heartbeats while a trial runs, failing and retrying the trials of dead
workers (``RetryFailedTrialCallback``), the trial state on an exception or Ctrl-C. An evaluator
that raises (a crashing block, NaN, out of memory, even ``sys.exit``), or returns what cannot be
read (:mod:`archforge.search.seed_results`), fails its trial only.
:class:`StopRule` ends the loop when the budget is spent, the space is exhausted, or the
sampler keeps proposing candidates already known.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import socket
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from archforge.errors import PLUGIN_FAULTS, SpecError, SpecWarning, describe_exception
from archforge.search import cache, records
from archforge.search.progress import Display
from archforge.search.metrics import installed_metrics, metric_label, shown
from archforge.search.records import COUNTED, CandidateAttr, Outcome, ProgressAttr, SeedResult, TrialRecord, WorkerAttr, finite, measured
from archforge.search.seed_results import seed_result, takes_metrics
from archforge.search.settings import SearchSettings
from archforge.search.space import Candidate, Space

#: Consecutive trials that brought nothing new (reused or rejected) after which a worker gives up.
MAX_IDLE = 200


@dataclass
class RunPlan:
    """Everything a worker needs to join a run; picklable, since workers are separate processes."""

    space_text: str
    space_file: str
    settings: SearchSettings
    storage_url: str
    study_name: str
    config_key: str
    dataset: Any
    evaluator: Any = None
    budget: int | None = None
    distinct: int | None = None  # distinct candidates of a finite space (None: infinite or too many to list)
    threads: int | None = None

    def on_device(self, device: str | None) -> "RunPlan":
        """This plan for a worker that trains on ``device`` (``None``: the settings' ``train.device``)."""
        if device is None:
            return self
        train = self.settings.train.model_copy(update={"device": device})
        return dataclasses.replace(self, settings=self.settings.model_copy(update={"train": train}))


class TrialFailed(Exception):
    """The trial's outcome is stored; Optuna marks it ``FAIL`` (passed to ``study.optimize(catch=...)``)."""


class Objective:
    """Evaluate one trial of ``study.optimize``; see the module docstring."""

    def __init__(self, plan: RunPlan, space: Space, data: Any, evaluate: Callable[..., Any], *,
                 lineage: Callable[[int], Any] = lambda number: None, display: Display | None = None, index: int = 0):
        self.plan = plan
        self.settings = plan.settings
        self.space = space
        self.data = data
        self.evaluate = evaluate
        self.lineage = lineage
        self.display = display or Display()
        self.worker = WorkerAttr(host=socket.gethostname(), pid=os.getpid(), index=index)
        self.seeds = list(range(self.settings.seeds))
        self.distributions = space.distributions()
        self.lock = plan.storage_url  # claims are made under the study's lock (locks.study_lock)
        self.eval_s = 0.0
        self._summaries: dict[str, tuple[int, int]] = {}
        self.metrics = installed_metrics()
        # An evaluator measures plugin metrics when it takes them (archforge's own does).
        self._metric_args = {"metrics": self.metrics} if self.metrics and takes_metrics(evaluate) else {}

    def __call__(self, trial: Any) -> float | list[float]:
        started = time.perf_counter()
        records.write(trial, self.worker)
        values = self.space.decode({name: suggest(trial, name, d) for name, d in self.distributions.items()})
        try:
            candidate = self.space.concretize(values)
        except (SpecError, KeyError, ValueError) as exc:
            return self.finish(trial, Outcome(status="rejected", error=_message(exc)), started)
        records.write(trial, CandidateAttr(hash=candidate.hash, decisions=_jsonable(values), spec=candidate.data,
                                           config=self.plan.config_key))
        parent = self.lineage(trial.number)
        if parent is not None:
            records.write(trial, parent)

        found = cache.claim(trial.study, candidate.hash, self.plan.config_key, trial, self.seeds, epochs=self.settings.epochs,
                            budget=self.plan.budget, lock=self.lock)
        if found is None:
            return self.finish(trial, Outcome(status="cancelled", error="budget reached by other workers"), started)
        if found.rejected is not None:
            error, source = found.rejected
            return self.finish(trial, Outcome(status="rejected", error=error, duplicate_of=source), started)
        if found.complete(self.seeds):
            reused = {s: found.seeds[s][0] for s in self.seeds if s in found.seeds}
            outcome = self.aggregate(candidate, reused, fresh=set())
            return self.finish(trial, outcome.model_copy(update={"duplicate_of": found.source(self.seeds)}), started,
                               candidate=candidate)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SpecWarning)
            reason = self.space.check(candidate, self.settings.constraints)
        if reason is not None:
            return self.finish(trial, Outcome(status="rejected", error=reason, params=candidate.params, flops=candidate.flops), started)

        missing = [s for s in self.seeds if s not in found.seeds]
        progress = ProgressAttr(total=self.settings.epochs * len(missing), trial=trial.number)
        self.display.trial_started(trial.number, candidate.label(), progress.total)
        results: dict[int, SeedResult] = {}
        eval_s = 0.0
        for seed in self.seeds:
            if seed in found.seeds:
                results[seed] = found.seeds[seed][0]
            else:
                seed_started = time.perf_counter()
                # Only the first seed is reported: Optuna prunes one sequence of steps per trial.
                prune = seed == self.seeds[0] and self.settings.pruner is not None
                results[seed] = self.train(trial, candidate, seed, progress, prune=prune)
                eval_s += time.perf_counter() - seed_started
                records.write(trial, results[seed])
            if results[seed].status != "ok":
                break
        self.eval_s += eval_s
        fresh = {s for s in results if s not in found.seeds}
        outcome = self.aggregate(candidate, results, fresh).model_copy(update={"eval_time_s": round(eval_s, 4)})
        return self.finish(trial, outcome, started, eval_s=eval_s, candidate=candidate)

    def train(self, trial: Any, candidate: Candidate, seed: int, progress: ProgressAttr, *, prune: bool) -> SeedResult:
        """Train one seed; never raises but for Ctrl-C (an error becomes a failed result)."""
        config = self.settings.trial_config(seed)
        if self.plan.threads:
            config = config.model_copy(update={"threads": self.plan.threads})
        history: list[float | None] = []
        pruned = False

        def on_epoch(epoch: int, accuracy: float) -> bool:
            nonlocal pruned
            history.append(finite(accuracy))
            progress.done += 1
            self.display.epoch(seed, len(history), finite(accuracy))
            records.write(trial, progress)
            # Never prune after the last epoch: a trial that ran them all is complete, and ranked.
            if prune and history[-1] is not None and len(history) < self.settings.epochs:
                trial.report(history[-1], len(history))
                pruned = bool(trial.should_prune())  # percentile pruners answer with a NumPy bool
            return pruned

        started = time.perf_counter()
        try:
            result = self.evaluate(candidate.spec, self.data, config, on_epoch=on_epoch, **self._metric_args)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - TrialError, NaN, OOM, a crashing block, sys.exit: fail this trial only
            error = _error_text(exc)
            if isinstance(exc, SystemExit):
                error = f"the evaluator called sys.exit({shown(exc.code)})"
                self.display.message(f"#{trial.number}: {error}; the trial is failed and the search goes on")
            return SeedResult(seed=seed, status="failed", error=error[:2000], epochs_run=len(history), history=history,
                              eval_time_s=round(time.perf_counter() - started, 4))
        try:
            return seed_result(seed, result, history, epochs=config.epochs, pruned=pruned, eval_s=time.perf_counter() - started,
                               metrics=self.metrics)
        except PLUGIN_FAULTS as exc:  # seed_result reads every field defensively; what it did not foresee fails this seed only
            return SeedResult(seed=seed, status="failed", error=f"the evaluator's result cannot be read: {describe_exception(exc, 300)}",
                              epochs_run=len(history), history=history, eval_time_s=round(time.perf_counter() - started, 4))

    def aggregate(self, candidate: Candidate, results: Mapping[int, SeedResult], fresh: set[int]) -> Outcome:
        """One outcome from the seeds: mean ± std of accuracy, the first failure or pruning, median costs."""
        seeds = [results[s] for s in sorted(results)]
        failed = next((r for r in seeds if r.status == "failed"), None)
        pruned = next((r for r in seeds if r.status == "pruned"), None)
        accuracies = [r.accuracy for r in seeds if r.accuracy is not None]
        outcome: dict[str, Any] = {
            "status": "failed" if failed else "pruned" if pruned else "complete",
            "accuracies": accuracies,
            "epochs_run": sum(results[s].epochs_run for s in fresh),
            "epochs_full": self.settings.epochs * self.settings.seeds,
            "error": failed.error if failed else None,
        }
        if failed is None:
            outcome["accuracy"] = pruned.accuracy if pruned else statistics.fmean(accuracies) if accuracies else None
            outcome["accuracy_std"] = statistics.stdev(accuracies) if len(accuracies) > 1 and not pruned else None
        for name in ("params", "flops"):
            outcome[name] = next((getattr(r, name) for r in seeds if getattr(r, name) is not None), getattr(candidate, name))
        for name in ("latency_ms", "latency_iqr_ms", "peak_memory_mb", "train_time_s"):
            values = [getattr(r, name) for r in seeds if getattr(r, name) is not None]
            outcome[name] = statistics.median(values) if values else None
        rates = [r.lr for r in seeds if r.lr is not None]
        outcome["lr"] = statistics.median_low(rates) if rates else None  # a rate some seed trained with
        names = dict.fromkeys(name for r in seeds for name in r.metrics)
        per_metric = {name: [r.metrics[name] for r in seeds if r.metrics.get(name) is not None] for name in names}
        outcome["metrics"] = {name: statistics.median(values) if values else None for name, values in per_metric.items()}
        return Outcome(**outcome)

    def finish(self, trial: Any, outcome: Outcome, started: float, *, eval_s: float = 0.0,
               candidate: Candidate | None = None) -> float | list[float]:
        """Store the outcome; return the objective values, or raise so that Optuna records the state.

        ``candidate``: the candidate of a complete outcome, sized when the evaluator gave no params or FLOPs.
        """
        import optuna

        values = None
        if outcome.status == "complete":
            outcome = self._with_summary(candidate, outcome) if candidate is not None else outcome
            outcome, values = self._judged(outcome)
        outcome = outcome.model_copy(update={"driver_time_s": round(time.perf_counter() - started - eval_s, 4), "trial": trial.number})
        records.write(trial, outcome)
        if values is not None:
            return values[0] if len(values) == 1 else values
        if outcome.status in ("rejected", "pruned"):
            raise optuna.TrialPruned(outcome.error or outcome.status)
        raise TrialFailed(outcome.error or outcome.status)

    def _judged(self, outcome: Outcome) -> tuple[Outcome, list[float] | None]:
        """A complete outcome with its objective values; failed when one is missing, rejected by ``constraints.metrics``."""
        bounded = list(self.settings.constraints.metrics)
        for name, role in [*((o, "objective") for o in self.settings.objectives), *((b, "constraint") for b in bounded)]:
            if measured(outcome, name) is None:
                return outcome.model_copy(update={"status": "failed", "error": self._missing(name, role)}), None
        reason = self.settings.constraints.metric_violation({name: measured(outcome, name) for name in bounded})
        if reason is not None:
            return outcome.model_copy(update={"status": "rejected", "error": reason}), None
        return outcome, [float(measured(outcome, o)) for o in self.settings.objectives]  # type: ignore[arg-type]

    def _missing(self, name: str, role: str) -> str:
        if name not in self.metrics:
            return f"the evaluator gave no '{name}' for {role} '{name}'"
        return (f"the evaluator gave no value of {metric_label(name, self.metrics[name][1])} for {role} '{name}': "
                "an evaluator measures plugin metrics when it takes a 'metrics' argument, as archforge's own does")

    def _with_summary(self, candidate: Candidate, outcome: Outcome) -> Outcome:
        # params and FLOPs for cost objectives and tie-breaking, when a custom evaluator did not give them.
        if outcome.params is not None and outcome.flops is not None:
            return outcome
        from archforge.builder import summarize

        if candidate.hash not in self._summaries:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", SpecWarning)
                    summary = summarize(candidate.spec)
            except Exception:  # a candidate the evaluator trained but the summary cannot size: no cost figures
                return outcome
            self._summaries[candidate.hash] = (summary.params, summary.flops)
        params, flops = self._summaries[candidate.hash]
        return outcome.model_copy(update={"params": outcome.params if outcome.params is not None else params,
                                          "flops": outcome.flops if outcome.flops is not None else flops})


def suggest(trial: Any, name: str, distribution: Any) -> Any:
    """``trial.suggest_*`` for an Optuna distribution (the public way to draw, or replay, a parameter)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
    raise TypeError(f"decision {name}: no suggest method for {type(distribution).__name__}")


class StopRule:
    """``study.optimize`` callback: stop when the budget is spent, every distinct candidate is known, or nothing new comes.

    When what is left of the budget is claimed by other workers' running trials, this worker
    waits for them rather than leaving: a trial whose worker died (its heartbeat stops) is then
    failed and its candidate queued again, and this worker takes it. ``grace``: seconds without
    a heartbeat after which a running trial is stale (the run's ``heartbeat.grace``).
    """

    def __init__(self, budget: int | None, distinct: int | None, display: Display | None = None, *,
                 grace: float | None = None, poll_s: float = 1.0):
        from archforge.search.storage import GRACE_PERIOD

        self.budget = budget
        self.distinct = distinct
        self.display = display or Display()
        self.grace = GRACE_PERIOD if grace is None else grace
        self.poll_s = poll_s
        self.idle = 0

    def __call__(self, study: Any, trial: Any) -> None:
        trials = self._recover(study)
        mine = TrialRecord.of(trial)
        self.idle = 0 if mine.counted else self.idle + 1
        self.display.trial_finished(mine, sum(r.counted for r in trials))
        if self.finished(study, trials, me=trial.number):
            study.stop()
        elif self.idle >= MAX_IDLE:
            self.display.message(f"stopping: the last {MAX_IDLE} trials found no new candidate")
            study.stop()

    def satisfied(self, trials: list[TrialRecord], me: int | None = None) -> bool:
        """The budget is spent (claims of running trials other than ``me`` count), or every distinct candidate is known."""
        known = {r.hash for r in trials if r.hash is not None and r.status in (*COUNTED, "rejected")}
        return cache.budget_spent(trials, self.budget, me) or bool(self.distinct and len(known) >= self.distinct)

    def finished(self, study: Any, trials: list[TrialRecord], me: int | None = None) -> bool:
        """Whether nothing is left to do: ``trials`` (the study's, read now) spend the budget or know every candidate.

        While what is left is held by other workers' running trials, waits for them. ``False``:
        one of them ended without a result (its candidate is queued again), or a candidate was
        queued: this worker goes on and takes it.
        """
        while True:
            if not self.satisfied(trials, me):
                return False
            if any(r.status == "waiting" for r in trials):
                return False  # a retried candidate: Optuna hands queued trials out first
            if self.satisfied([r for r in trials if r.status != "running"], me):
                return True  # spent by finished trials alone
            time.sleep(self.poll_s)
            trials = self._recover(study, stale=True)

    def _recover(self, study: Any, *, stale: bool = False) -> list[TrialRecord]:
        """Fail the trials of dead workers and queue their candidates again; the study's trials after that.

        A worker that died before its first heartbeat is found here; ``stale``: also those whose
        heartbeats stopped (:func:`~archforge.search.study.fail_stale`).
        """
        from archforge.search.study import fail_abandoned, fail_stale, retry_interrupted

        if stale:
            fail_stale(study)
        # A worker that died before its first heartbeat (Optuna's stale check queues the others' retries itself).
        if fail_abandoned(study, alone=False, grace=self.grace):
            retry_interrupted(study, None)
        return records.read_trials(study)


def _message(exc: BaseException) -> str:
    return exc.format() if isinstance(exc, SpecError) else str(exc)


def _error_text(exc: BaseException) -> str:
    name = type(exc).__name__
    try:
        message = str(exc).strip().replace("\n", " ")
    except PLUGIN_FAULTS:  # an exception of user code whose __str__ itself raises
        message = ""
    if name == "TrialError":
        return message or name
    if isinstance(exc, MemoryError) or "out of memory" in message.lower():
        return f"out of memory: {message}" if message else "out of memory"
    return f"{name}: {message}" if message else name


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(dict(values), default=lambda o: o.item() if hasattr(o, "item") else str(o)))


class _PerTrialChatter(logging.Filter):
    """Drops Optuna's per-trial log lines ("Trial 3 failed ...") and INFO lines while archforge reports the trials itself."""

    _TRIAL = re.compile(r"^Trial \d+ (finished|failed|pruned)")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO and not self._TRIAL.match(record.getMessage())


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial INFO lines and archforge's recorded failures left out of the log, for this block only."""
    # On Optuna's handlers: a logger's own filters do not see the records of its child loggers.
    handlers = list(logging.getLogger("optuna").handlers)
    chatter = _PerTrialChatter()
    for handler in handlers:
        handler.addFilter(chatter)
    try:
        with warnings.catch_warnings():
            import optuna

            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        for handler in handlers:
            handler.removeFilter(chatter)
