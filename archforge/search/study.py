"""The study of a run: created with the run's metadata, or reopened and checked to be the same run.

A study holds one run: the space it searches, its settings and the *training-settings key*
(:func:`config_key`) that says which results are comparable. Reopening a study that trained
with other settings is refused (the results would not be comparable), except for a study in
which no trial has started yet, whose metadata is simply replaced: a command that failed before
its first trial can be corrected and run again.

A trial still ``RUNNING`` in a store no other process uses was left by a dead process
(``kill -9``, a lost power supply, Ctrl-C before it could be marked): :func:`fail_abandoned`
fails it and queues its candidate again through the storage's retry callback, at once, where
the heartbeats would wait for the grace period.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Mapping

from archforge.errors import SearchError
from archforge.search.records import ONESHOT_KEY, RUN_KEY, MetricInfo, RunMeta, measured, read_study_attr
from archforge.search.settings import SearchSettings
from archforge.search.space import Space
from archforge.search.training import NEUTRAL_FIELDS


def config_key(settings: SearchSettings, dataset: str) -> str:
    """What makes two evaluations of the same candidate and seed comparable: data, epochs and the training recipe."""
    train = settings.trial_config(seed=0).model_dump(mode="json", exclude=set(NEUTRAL_FIELDS))
    data = {"dataset": dataset, "limit": settings.limit, "val_fraction": settings.val_fraction, "train": train}
    if settings.params:  # other values of the space's params: other networks (left out when none, as before params existed)
        data["params"] = settings.params
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def run_meta(space: Space, settings: SearchSettings, dataset: str, metrics: Mapping[str, Any] | None = None, *,
             evaluator: str | None = None, own_data: bool = False) -> RunMeta:
    """The run's metadata; ``metrics``: the installed plugin metrics it measures (name → (Metric, PluginInfo)).

    ``evaluator`` (see :func:`evaluator_name`) and ``own_data`` (a dataset object, not a name)
    tell a worker joining from elsewhere whether it can run the same evaluations.
    """
    return RunMeta(
        space=space.text, space_file=space.file, space_fingerprint=space.fingerprint, space_name=space.name,
        settings=settings.model_dump(mode="json"), config_key=config_key(settings, dataset), dataset=dataset,
        budget=settings.trial_budget, evaluator=evaluator, own_data=own_data,
        decisions=[d.to_dict() for d in space.decisions.values()],
        metrics={name: MetricInfo(goal=metric.goal, plugin=plugin.name, distribution=plugin.distribution, version=plugin.version,
                                  description=metric.description[:500] if isinstance(metric.description, str) else "")
                 for name, (metric, plugin) in (metrics or {}).items()},
    )


def evaluator_name(evaluator: Any) -> str | None:
    """How a run names its evaluator for workers started elsewhere: ``module:function``, ``<...>`` if not importable, or ``None``.

    ``None`` is archforge's own evaluator. A function defined in a script (``__main__``) or
    inside another function cannot be imported by a worker on another machine.
    """
    if evaluator is None:
        return None
    if isinstance(evaluator, str):
        return evaluator
    module, name = getattr(evaluator, "__module__", None), getattr(evaluator, "__qualname__", None)
    if not module or not name or module == "__main__" or "<" in name:
        return f"<{module or '?'}.{name or type(evaluator).__name__}>"
    return f"{module}:{name}"


def open_study(storage: Any, name: str, meta: RunMeta, directions: list[str], *, where: str,
               check: Callable[[Any], None] | None = None) -> Any:
    """Create the study ``name`` with ``meta``, or reopen it after checking that it is the same run.

    ``check(study)``: a further check of a reopened run, made before ``meta`` is stored (it raises to refuse).
    """
    import optuna

    study = optuna.create_study(storage=storage, study_name=name, directions=directions, load_if_exists=True)
    try:
        old = read_study_attr(study, RunMeta, RUN_KEY)
    except ValueError as exc:
        raise SearchError(f"run '{name}' ({where}): {exc}; start a new run with --name") from None
    # A stored one-shot phase is a trained supernet: the run has started even before its first trial.
    started = (any(t.user_attrs.get("candidate") is not None for t in study.get_trials(deepcopy=False))
               or ONESHOT_KEY in study.user_attrs)
    if old is None and study.get_trials(deepcopy=False):
        raise SearchError(f"run '{name}' ({where}) holds a study archforge did not make (it has trials but no run settings); "
                          "start a new run with --name")
    if old is not None and started:
        _check_same_run(old, meta, study, directions, f"run '{name}' ({where})")
        # Metrics measured in an earlier session stay described, even when their plugin is gone now.
        meta = meta.model_copy(update={"decisions": old.decisions, "metrics": {**old.metrics, **meta.metrics}})
        if check is not None:
            check(study)
    elif [d.name.lower() for d in study.directions] != directions:
        # Optuna fixes the directions when a study is created; an untrained study is remade with the new ones.
        optuna.delete_study(study_name=name, storage=storage)
        study = optuna.create_study(storage=storage, study_name=name, directions=directions)
    study.set_user_attr(RUN_KEY, meta.model_dump(mode="json"))
    return study


def _check_same_run(old: RunMeta, new: RunMeta, study: Any, directions: list[str], where: str) -> None:
    if old.space_fingerprint != new.space_fingerprint:
        if old.space_fingerprint == hashlib.sha256(new.space.encode("utf-8")).hexdigest()[:16]:
            raise SearchError(f"{where} was made by an earlier archforge, which named the copies of per-copy choice points "
                              "otherwise (so its candidates have other hashes); start a new run with --name")
        raise SearchError(f"{where} was started from another version of the search space ({old.space_file}); "
                          "resume it with that space, or start a new run with --name")
    old_objectives = old.settings.get("objectives", [])
    if [d.name.lower() for d in study.directions] != directions or old_objectives != new.settings["objectives"]:
        raise SearchError(f"{where} optimises {', '.join(old_objectives)}; start a new run with --name to change objectives")
    if old.settings.get("seeds") != new.settings["seeds"]:
        raise SearchError(f"{where} trains {old.settings.get('seeds')} seed(s) per candidate; "
                          f"start a new run with --name to use {new.settings['seeds']}")
    beats = old.settings.get("heartbeat")
    if beats is not None and beats != new.settings["heartbeat"]:
        # Every process of a run judges the others' heartbeats: a shorter grace here would fail live trials elsewhere.
        raise SearchError(f"{where} uses heartbeat interval {beats.get('interval')} s and grace {beats.get('grace')} s; every "
                          "process of a run must use the same: keep them, or start a new run with --name")
    if old.config_key != new.config_key:
        raise SearchError(f"{where} was trained with other settings ({_changes(old, new)}); results would not be comparable: "
                          "resume with the same settings or start a new run with --name")


def _changes(old: RunMeta, new: RunMeta) -> str:
    diffs = [f"dataset {old.dataset} → {new.dataset}"] if old.dataset != new.dataset else []
    for key in ("limit", "val_fraction", "epochs"):
        a, b = old.settings.get(key), new.settings.get(key)
        if a != b:
            diffs.append(f"{key} {a} → {b}")
    old_train, new_train = old.settings.get("train") or {}, new.settings.get("train") or {}
    for key, value in new_train.items():
        if key == "init" and key not in old_train:
            diffs.append(f"train.init: the run predates the setting and trained with torch's defaults (pytorch), this "
                         f"search would use {_init_text(value)}")
        elif key not in NEUTRAL_FIELDS and key not in old_train:  # a setting this archforge has and the run's had not
            diffs.append(f"train.{key} (a setting the run predates) → {value}")
        elif key not in NEUTRAL_FIELDS and old_train.get(key) != value:
            old_value, new_value = (_init_text(v) if key == "init" else v for v in (old_train.get(key), value))
            diffs.append(f"train.{key} {old_value} → {new_value}")
    if (old.settings.get("params") or {}) != (new.settings.get("params") or {}):
        diffs.append(f"params {old.settings.get('params') or {}} → {new.settings.get('params') or {}}")
    return ", ".join(diffs) or "training settings differ"


def _init_text(value: Any) -> str:
    return "unset (each candidate spec's own init, reference by default)" if value is None else str(value)


def fail_stale(study: Any) -> None:
    """Fail the running trials whose heartbeats stopped and queue their candidates again (Optuna's retry callback).

    Optuna looks for them itself only when a trial starts; a worker waiting for another's trial looks with this.
    """
    import warnings

    import optuna

    with warnings.catch_warnings():  # an "experimental" Optuna API
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def fail_abandoned(study: Any, *, alone: bool = True, grace: float | None = None) -> int:
    """Fail the ``RUNNING`` trials no live worker holds; returns how many.

    ``alone``: no other process uses the store, so every ``RUNNING`` trial was left by a dead
    one. Otherwise only a trial whose worker never wrote its first attribute, started more
    than the heartbeat grace period (``grace`` seconds; default the storage's) ago, is failed:
    a worker killed between Optuna's ``ask`` and its first heartbeat leaves a trial the
    heartbeats never see.
    """
    import datetime

    from optuna.trial import TrialState

    from archforge.search.storage import GRACE_PERIOD

    grace = GRACE_PERIOD if grace is None else grace
    now = datetime.datetime.now()
    failed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        silent = "worker" not in trial.user_attrs and trial.datetime_start is not None \
            and (now - trial.datetime_start).total_seconds() > grace
        if alone or silent:
            failed += _finish_as_stored(study, trial)
    return failed


def _finish_as_stored(study: Any, trial: Any) -> int:
    """Tell Optuna what a trial killed after storing its outcome found; fail any other. Returns 1 if failed."""
    from optuna.trial import TrialState

    from archforge.search.records import Outcome, RunMeta

    try:
        outcome = Outcome.model_validate(trial.user_attrs["outcome"])
        objectives = RunMeta.model_validate(study.user_attrs[RUN_KEY]).settings["objectives"]
        if not outcome.belongs_to(trial.number):
            raise ValueError("the outcome of the trial it retries")
    except (KeyError, TypeError, ValueError):
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        return 1
    values = [measured(outcome, name) for name in objectives]
    if outcome.status == "complete" and all(v is not None for v in values):
        study.tell(trial.number, values=values, skip_if_finished=True)
    elif outcome.status in ("rejected", "pruned"):
        study.tell(trial.number, state=TrialState.PRUNED, skip_if_finished=True)
    else:
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    return 0


def retry_interrupted(study: Any, storage: Any) -> int:
    """Queue again the candidate of every failed trial that has no outcome; returns how many.

    Such a trial was interrupted (Ctrl-C, a dead worker, a storage fault), not failed by its
    candidate. The retry goes through the storage's retry callback, which keeps the trial's
    parameters and attributes and records which trial it retries, so the finished seeds of a
    half-trained candidate are not trained again; a trial already retried is not queued twice.
    """
    import warnings

    import optuna
    from optuna.trial import TrialState

    from archforge.search.records import retry_callback_class
    from archforge.search.storage import retry_callback, stale_trial_callback

    retry = retry_callback_class()
    trials = study.get_trials(deepcopy=True)  # the callback appends to the given trial's retry history in place
    waiting = (TrialState.WAITING,)
    before = len(study.get_trials(deepcopy=False, states=waiting))
    with warnings.catch_warnings():  # the retry callback is "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = {n for t in trials for n in retry.retry_history(t)}  # every trial of a chain, not only its first
        callback = stale_trial_callback(storage) or retry_callback()  # the same record without heartbeats (in memory)
        for trial in trials:
            # A trial without parameters was killed before drawing them: its retry draws again (the
            # grid sampler's record of its point is copied, so no grid point is lost).
            if trial.state != TrialState.FAIL or "outcome" in trial.user_attrs or trial.number in retried:
                continue
            callback(study, trial)  # queues nothing past MAX_RETRY
    return len(study.get_trials(deepcopy=False, states=waiting)) - before
