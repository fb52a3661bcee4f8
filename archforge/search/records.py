"""What archforge stores on an Optuna trial and study, as typed records: the one place that writes or reads them.

A trial carries, as user attributes (keys in :data:`KEYS`):

- ``candidate`` (:class:`CandidateAttr`): the concrete spec it evaluates, its hash, decisions and
  the training-settings key; written before any training;
- ``worker`` (:class:`WorkerAttr`): which process runs it; ``progress`` (:class:`ProgressAttr`):
  epochs done, for progress bars of other processes;
- ``seed_<s>`` (:class:`SeedResult`): one per training seed, written as soon as that seed
  finishes, so a killed worker loses at most one seed;
- ``outcome`` (:class:`Outcome`): status, aggregated metrics, error; written once, when done;
  plugin metrics (``metrics``, by name) beside the built-in ones, in seed results and outcomes;
- ``proxy`` (:class:`ProxyAttr`), ``oneshot`` (:class:`OneShotAttr`) and ``lineage`` (:class:`LineageAttr`): why it was queued.

The study carries the run (:class:`RunMeta`: space text, settings, training-settings key, the
plugin metrics measured with their goals) under
``archforge``, the proxy phase (:class:`ProxyPhase`) under ``archforge_proxy`` and the one-shot
phase (:class:`OneShotPhase`) under ``archforge_oneshot``. Which trial a
retried one replaces is Optuna's own record (``RetryFailedTrialCallback.retried_trial_number``).

Reading goes through :meth:`TrialRecord.of`, which validates every attribute: a store edited by
hand or by another program yields status ``unreadable`` with the reason, never a crash. CSV and
JSON columns are the fields of :class:`TrialRecord`, with ``metric.<name>`` and ``decision.<name>`` columns.
A measured value is read by name, built in or plugin metric alike, with :func:`measured`.
"""

from __future__ import annotations

import datetime as _dt
import math
import statistics
import weakref
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from archforge.errors import PLUGIN_FAULTS
from archforge.search import limits

#: Optuna user-attribute keys of a trial.
KEYS = ("candidate", "worker", "progress", "outcome", "proxy", "oneshot", "lineage")
SEED_PREFIX = "seed_"
#: Study user-attribute keys.
RUN_KEY = "archforge"
PROXY_KEY = "archforge_proxy"
ONESHOT_KEY = "archforge_oneshot"
WORKER_STATS_PREFIX = "archforge_worker:"

#: Statuses of a finished trial that are an evaluation of their own (they count against the budget).
COUNTED = ("complete", "failed", "pruned")
Status = Literal["complete", "failed", "pruned", "rejected", "cancelled"]
#: Statuses a record may have besides an outcome's: still running, queued, left by a dead worker, tampered with.
ReadStatus = Literal["complete", "failed", "pruned", "rejected", "cancelled", "running", "waiting", "interrupted", "unreadable"]


def _short_text(value: str) -> str:
    if len(value) > limits.MAX_TEXT:
        raise ValueError(f"a text longer than {limits.MAX_TEXT:,} characters")
    return value


def _texts_short(value: Any, depth: int = 0) -> Any:
    if depth > 20:
        raise ValueError("nested more than 20 levels")
    if isinstance(value, str):
        _short_text(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _texts_short(k, depth + 1)
            _texts_short(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _texts_short(v, depth + 1)
    return value


Text = Annotated[str, AfterValidator(_short_text)]
Count = Annotated[int, Field(ge=0, lt=2**63)]
#: A finite float; ``None`` for a metric that was not measured.
Metric = float | None
#: Plugin metric values by metric name.
PluginValues = dict[Text, Metric]


class _Attr(BaseModel):
    # Strict about types (a string is not a number), tolerant of keys added by later versions.
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class CandidateAttr(_Attr):
    """The concrete candidate a trial evaluates."""

    hash: str = Field(pattern=r"^[0-9a-f]{12}$", description="archforge.search.space.candidate_hash of spec.")
    decisions: Annotated[dict[str, Any], AfterValidator(_texts_short)] = Field(default_factory=dict)
    spec: dict[str, Any]
    config: str = Field("", description="Key of the training settings: results with the same key are comparable.")

    @field_validator("spec")
    @classmethod
    def _matches_hash(cls, spec: dict[str, Any], info: Any) -> dict[str, Any]:
        from archforge.search.space import candidate_hash

        key = info.data.get("hash")
        if key is not None and candidate_hash(spec) != key:
            raise ValueError(f"the hash {key} does not match the spec ({candidate_hash(spec)})")
        return spec


class WorkerAttr(_Attr):
    """The process that runs a trial."""

    host: Text
    pid: Count
    index: Count = 0


class ProgressAttr(_Attr):
    """Epochs a trial has claimed and done. ``trial``: the trial that claimed them (a retry inherits
    its failed trial's attributes, this one included, and has claimed nothing until it writes its own)."""

    done: Count = 0
    total: Count = 0
    trial: int | None = None


class Costs(_Attr):
    """What a candidate costs, as a training seed measured it and as an outcome aggregates it."""

    params: Count | None = None
    flops: Count | None = None
    latency_ms: Metric = Field(None, description="Median forward latency.")
    latency_iqr_ms: Metric = Field(None, description="Interquartile range of the latency's timed runs.")
    peak_memory_mb: Metric = None
    train_time_s: Metric = None
    metrics: PluginValues = Field(default_factory=dict, description="Plugin metrics by name (an outcome: medians over seeds).")


class SeedResult(Costs):
    """One training seed of a candidate."""

    seed: Count
    status: Literal["ok", "failed", "pruned"]
    accuracy: Metric = None
    epochs_run: Count = 0
    history: list[Metric] = Field(default_factory=list, description="Validation accuracy after each epoch.")
    stopped_early: bool = False
    eval_time_s: Metric = None
    timings: dict[str, Metric] = Field(default_factory=dict)
    error: Text | None = None
    lr: Metric = Field(None, description="Peak learning rate trained with: train.lr, or the range test's with lr: auto.")


class Outcome(Costs):
    """What a finished trial found: its status, the metrics aggregated over seeds (costs: medians), or why it failed."""

    status: Status
    accuracy: Metric = Field(None, description="Mean validation accuracy over the seeds.")
    accuracy_std: Metric = Field(None, description="Sample standard deviation over the seeds (None for one seed).")
    accuracies: list[float] = Field(default_factory=list, description="One per seed that finished.")
    epochs_run: Count = 0
    epochs_full: Count = 0
    error: Text | None = None
    duplicate_of: Count | None = Field(None, description="The trial whose results this one reuses (never trained twice).")
    driver_time_s: Metric = None
    eval_time_s: Metric = None
    trial: int | None = Field(None, description="The trial that found it (a retry inherits its failed trial's copy).")
    lr: Metric = Field(None, description="Median (the lower middle one) over the seeds of the peak learning rate trained with.")

    def belongs_to(self, number: int) -> bool:
        """Whether trial ``number`` found this outcome, not a trial it retries (one stored before outcomes named their trial: yes)."""
        return self.trial is None or self.trial == number

    @field_validator("accuracy")
    @classmethod
    def _in_range(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"accuracy {value} is not in [0, 1]")
        return value


def measured(item: Any, name: str) -> float | None:
    """The value of ``name`` on a seed result, outcome, trial record or ranked row: a built-in measurement
    (``accuracy``, ``params``, ``latency_ms``, ...) or a plugin metric, which cannot take a built-in's name."""
    from archforge.registry.extensions import BUILTIN_MEASUREMENTS

    if name in BUILTIN_MEASUREMENTS:
        return getattr(item, name, None)
    return (getattr(item, "metrics", None) or {}).get(name)


class ProxyAttr(_Attr):
    """A trial queued by the zero-cost proxy phase."""

    name: Text
    score: Metric = None
    rank: Count = 0


class OneShotAttr(_Attr):
    """A trial queued by the one-shot phase: the candidate's place in the supernet's ranking."""

    rank: Count = Field(description="1 = the supernet's best.")
    accuracy: float = Field(ge=0, le=1, description="Validation accuracy with the supernet's (inherited) weights.")


class LineageAttr(_Attr):
    """A trial proposed by evolution: the parent trial and the decision that was mutated."""

    parent: Count
    mutated: Text


_ATTR_MODELS: dict[str, type[_Attr]] = {
    "candidate": CandidateAttr, "worker": WorkerAttr, "progress": ProgressAttr, "outcome": Outcome,
    "proxy": ProxyAttr, "oneshot": OneShotAttr, "lineage": LineageAttr,
}


def dump(value: _Attr) -> dict[str, Any]:
    """The JSON form stored in Optuna (finite floats; ``None`` for missing metrics)."""
    return value.model_dump(mode="json")


def write(trial: Any, value: _Attr) -> None:
    """Store ``value`` on an Optuna ``Trial`` under its key (``seed_<s>`` for a :class:`SeedResult`)."""
    trial.set_user_attr(key_of(value), dump(value))


def key_of(value: _Attr) -> str:
    if isinstance(value, SeedResult):
        return f"{SEED_PREFIX}{value.seed}"
    for key, model in _ATTR_MODELS.items():
        if type(value) is model:
            return key
    raise TypeError(f"{type(value).__name__} is not a trial attribute")


def attrs(*values: _Attr) -> dict[str, Any]:
    """User attributes for ``study.enqueue_trial(..., user_attrs=attrs(ProxyAttr(...)))``."""
    return {key_of(v): dump(v) for v in values}


class MetricInfo(_Attr):
    """A plugin metric a run measured: its direction, and where it came from."""

    goal: Literal["minimize", "maximize"]
    plugin: Text
    distribution: Text
    version: Text = "?"
    description: Text = ""


class RunMeta(_Attr):
    """The run a study holds: enough to resume it, and to report it, from the store alone."""

    version: int = 1
    space: str
    space_file: str
    space_fingerprint: str
    space_name: str
    settings: dict[str, Any]
    config_key: str
    dataset: str
    decisions: list[dict[str, Any]] = Field(default_factory=list)
    metrics: dict[Text, MetricInfo] = Field(default_factory=dict, description="The plugin metrics measured, by name.")
    # What a worker joining from another machine (archforge worker) needs besides the space and settings:
    budget: int | None = Field(None, description="Evaluations the run makes (after a proxy phase, its choice); none: all.")
    evaluator: str | None = Field(None, description=(
        "'module:function' of a custom evaluator; '<...>' for one not importable by name; none: archforge's own."))
    own_data: bool = Field(False, description="The dataset is an object passed from Python, not a name workers can load.")


class ProxyPhase(_Attr):
    """The zero-cost proxy phase of a run (done once)."""

    score: str
    scored: Count
    rejected: Count
    kept: Count
    discarded: Count
    scores: dict[str, Metric] = Field(default_factory=dict, description="Candidate hash → score.")
    time_s: float = 0.0


class OneShotPath(_Attr):
    """One candidate as the supernet evaluated it (with inherited weights and recalibrated BatchNorm)."""

    hash: str = Field(pattern=r"^[0-9a-f]{12}$")
    decisions: Annotated[dict[str, Any], AfterValidator(_texts_short)] = Field(default_factory=dict)
    accuracy: float = Field(ge=0, le=1)
    params: Count
    flops: Count


class OneShotPhase(_Attr):
    """The one-shot phase of a run (done once): how the supernet was trained, what it cost, its ranking."""

    sampling: Literal["uniform", "fair"]
    seed: Count
    epochs: Count
    paths: Count = Field(description="Candidates the supernet held and ranked.")
    path_limit: Count = Field(0, description="The oneshot.paths setting it was made with (0: not stored).")
    sampled: bool = Field(description="The paths are a sample of a larger space, not all of it.")
    rejected: Count = Field(0, description="Candidates refused before training (shapes, constraints).")
    paths_per_step: Count
    steps: Count
    calibration_batches: Count
    lr: float | None = None
    history: list[float] = Field(default_factory=list, description="Mean validation accuracy of a few paths after each epoch.")
    train_images: Count = Field(description="Images through the network in training (steps × batch × paths per step).")
    range_images: Count = Field(0, description="Images through the network in the range test of lr: auto.")
    eval_images: Count = Field(description="Images through the network in probe validations and ranking (forward only).")
    candidate_images: Count = Field(description=(
        "Images one stand-alone training of a candidate sees: the search's epochs × an epoch's full batches."))
    config: Text = Field("", description="The run's training-settings key when the supernet was trained.")
    constraints: dict[str, Any] = Field(default_factory=dict, description="The constraints the paths were checked against.")
    train_s: float = Field(ge=0)
    rank_s: float = Field(ge=0)
    retrain_top: Count = 0
    weights: str | None = Field(None, pattern=r"^[A-Za-z0-9_./-]+$", max_length=255, description=(
        "The checkpoint of the winner with inherited weights, relative to the run folder, if saved."))
    ranking: list[OneShotPath] = Field(max_length=limits.MAX_ONESHOT_PATHS, description="Best first.")

    @property
    def training_images(self) -> int:
        """Images through the network in training, its range test's included."""
        return self.train_images + self.range_images

    @property
    def standalone_trainings(self) -> float:
        """What its training images are worth in stand-alone trainings of one candidate."""
        return self.training_images / self.candidate_images

    @field_validator("weights")
    @classmethod
    def _inside_the_run(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or ".." in value.split("/")):
            raise ValueError("the weights path leaves the run folder")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "OneShotPhase":
        # What archforge writes always holds these; a store edited by hand is unreadable, not a source of false numbers.
        if len(self.ranking) != self.paths or not self.ranking:
            raise ValueError(f"its ranking has {len(self.ranking)} candidates, not the {self.paths} paths it says")
        if len({p.hash for p in self.ranking}) != len(self.ranking):
            raise ValueError("its ranking lists a candidate twice")
        if any(a.accuracy < b.accuracy for a, b in zip(self.ranking, self.ranking[1:])):
            raise ValueError("its ranking is not sorted by accuracy")
        if self.epochs < 1 or self.candidate_images < 1 or self.paths_per_step < 1:
            raise ValueError("epochs, candidate_images and paths_per_step must be at least 1")
        return self


class WorkerStats(_Attr):
    """Where one worker session's time went: driver overhead is ``wall_s - eval_s - wait_s``."""

    index: Count = 0
    trials: Count = 0
    evaluated: Count = 0
    wall_s: float = Field(0.0, ge=0)
    eval_s: float = Field(0.0, ge=0)
    wait_s: float = Field(0.0, ge=0)


def write_worker_stats(study: Any, session: str, stats: WorkerStats) -> None:
    """Store a worker session's time on the study, under its own key (``session``: host, pid, index, start)."""
    study.set_user_attr(f"{WORKER_STATS_PREFIX}{session}", dump(stats))


def read_worker_stats(study: Any) -> list[WorkerStats]:
    """Every worker session's time stored on the study; entries that cannot be read are left out."""
    stats = []
    for key, value in sorted(study.user_attrs.items()):
        if key.startswith(WORKER_STATS_PREFIX):
            try:
                stats.append(WorkerStats.model_validate(value))
            except ValidationError:
                continue
    return stats


def update_run_meta(study: Any, **fields: Any) -> None:
    """Change fields of the study's :class:`RunMeta` (written by the driver that opened the run)."""
    meta = read_study_attr(study, RunMeta, RUN_KEY)
    study.set_user_attr(RUN_KEY, meta.model_copy(update=fields).model_dump(mode="json"))


def read_study_attr(study: Any, model: type[_Attr], key: str) -> Any:
    """A study attribute as ``model``, ``None`` when absent; a ``ValueError`` naming it when it cannot be read."""
    raw = study.user_attrs.get(key)
    if raw is None:
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"the study's '{key}' attribute cannot be read: {first_error(exc)}") from None


# --------------------------------------------------------------------------- the read view


class TrialRecord(BaseModel):
    """One stored trial as the report, the CSV/JSON export and the search result show it."""

    number: int
    state: str = Field(description="Optuna's state: COMPLETE, PRUNED, FAIL, RUNNING, WAITING.")
    status: ReadStatus
    hash: str | None = None
    config: str | None = Field(None, description="Training-settings key of the run that evaluated it.")
    decisions: dict[str, Any] = Field(default_factory=dict)
    spec: dict[str, Any] | None = None
    accuracy: float | None = None
    accuracy_std: float | None = None
    accuracies: list[float] = Field(default_factory=list)
    params: int | None = None
    flops: int | None = None
    latency_ms: float | None = None
    latency_iqr_ms: float | None = None
    peak_memory_mb: float | None = None
    train_time_s: float | None = None
    lr: float | None = Field(None, description="Peak learning rate trained with (with lr: auto, found per seed): median over seeds.")
    metrics: dict[str, float | None] = Field(default_factory=dict, description="Plugin metrics by name.")
    epochs_run: int = 0
    epochs_full: int = 0
    error: str | None = None
    duplicate_of: int | None = None
    retry_of: int | None = None
    parent: int | None = None
    mutated: str | None = None
    proxy_score: float | None = None
    oneshot_rank: int | None = Field(None, description="Place in the one-shot ranking of a candidate the one-shot phase queued.")
    oneshot_accuracy: float | None = Field(None, description="Its accuracy with the supernet's inherited weights.")
    seeds: dict[int, SeedResult] = Field(default_factory=dict)
    values: list[float] | None = None
    driver_time_s: float | None = None
    eval_time_s: float | None = None
    started: str | None = None
    finished: str | None = None
    worker: WorkerAttr | None = None
    progress: ProgressAttr | None = None

    @property
    def counted(self) -> bool:
        """An evaluation of its own (not a reuse, interrupted or cancelled trial, nor one rejected before training):
        it counts against the budget. A candidate a metric constraint rejected after training was trained: it counts."""
        trained_then_rejected = self.status == "rejected" and self.epochs_run > 0
        return (self.status in COUNTED or trained_then_rejected) and self.duplicate_of is None

    @classmethod
    def of(cls, trial: Any) -> "TrialRecord":
        """The record of an Optuna ``FrozenTrial``; status ``unreadable`` when an attribute fails validation."""
        base = {"number": trial.number, "state": trial.state.name, "started": _iso(trial.datetime_start),
                "finished": _iso(trial.datetime_complete), "retry_of": retried_trial_number(trial)}
        try:
            parsed = parse_attrs(trial.user_attrs)
        except (ValueError, RecursionError) as exc:
            return cls(**base, status="unreadable", error=str(exc) if isinstance(exc, ValueError) else "its attributes are nested too deep")
        outcome: Outcome | None = parsed.get("outcome")
        candidate: CandidateAttr | None = parsed.get("candidate")
        seeds: dict[int, SeedResult] = parsed.get("seeds", {})
        if outcome is not None and outcome.status in COUNTED and candidate is None:
            return cls(**base, status="unreadable", error="it has an outcome but no candidate")
        if outcome is not None and outcome.status == "complete" and outcome.accuracy is None:
            return cls(**base, status="unreadable", error="it is complete but has no accuracy")
        if trial.state.name in ("RUNNING", "WAITING") or (outcome is not None and not outcome.belongs_to(trial.number)):
            outcome = None  # a retry's copy of its failed trial's outcome is no outcome of its own
        status = outcome.status if outcome is not None else {"RUNNING": "running", "WAITING": "waiting"}.get(trial.state.name, "interrupted")
        proxy: ProxyAttr | None = parsed.get("proxy")
        oneshot: OneShotAttr | None = parsed.get("oneshot")
        lineage: LineageAttr | None = parsed.get("lineage")
        results = outcome.model_dump(exclude={"status"}) if outcome is not None else {}
        if outcome is None:
            results["epochs_run"] = sum(s.epochs_run for s in seeds.values())
        if results.get("lr") is None:  # an outcome stored without it: the median of the seeds this trial holds
            lrs = [s.lr for s in seeds.values() if s.lr is not None]
            results["lr"] = statistics.median_low(lrs) if lrs else None
        values = [float(v) for v in trial.values] if trial.values is not None else None
        return cls(
            **base, **results, status=status, values=values, seeds=seeds, worker=parsed.get("worker"), progress=parsed.get("progress"),
            hash=candidate.hash if candidate else None, config=candidate.config if candidate else None, decisions=candidate.decisions if candidate else {},
            spec=candidate.spec if candidate else None,
            parent=lineage.parent if lineage else None, mutated=lineage.mutated if lineage else None,
            proxy_score=proxy.score if proxy else None,
            oneshot_rank=oneshot.rank if oneshot else None, oneshot_accuracy=oneshot.accuracy if oneshot else None,
        )

    def row(self) -> dict[str, Any]:
        """The flat row of CSV/JSON exports (plugin metrics as ``metric.<name>`` columns, decisions as
        ``decision.<name>`` columns, no spec or per-seed detail)."""
        row = self.model_dump(mode="json", exclude={"decisions", "spec", "seeds", "worker", "progress", "values", "metrics"})
        row.update({f"metric.{k}": v for k, v in self.metrics.items()})
        row.update({f"decision.{k}": v for k, v in self.decisions.items()})
        return row


def parse_attrs(user_attrs: dict[str, Any]) -> dict[str, Any]:
    """Validate archforge's user attributes of a trial: ``{key: model}`` plus ``seeds``; ``ValueError`` says what is wrong."""
    parsed: dict[str, Any] = {}
    for key, model in _ATTR_MODELS.items():
        if key in user_attrs:
            try:
                parsed[key] = model.model_validate(user_attrs[key])
            except ValidationError as exc:
                raise ValueError(f"its {key} cannot be read: {first_error(exc)}") from None
    seeds: dict[int, SeedResult] = {}
    for key, value in user_attrs.items():
        if key.startswith(SEED_PREFIX):
            try:
                result = SeedResult.model_validate(value)
            except ValidationError as exc:
                raise ValueError(f"its {key} cannot be read: {first_error(exc)}") from None
            if key != f"{SEED_PREFIX}{result.seed}":
                raise ValueError(f"its {key} holds the result of seed {result.seed}")
            seeds[result.seed] = result
    parsed["seeds"] = seeds
    return parsed


def retry_callback_class() -> Any:
    """Optuna's callback that queues a stale trial again, which also records the retries of a trial."""
    import optuna

    # Optuna 4.9 renamed it; the older name serves the releases before.
    return getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback


def retried_trial_number(trial: Any) -> int | None:
    """The trial a retried one replaces (Optuna's ``RetryFailedTrialCallback`` record), else ``None``."""
    import warnings

    import optuna

    with warnings.catch_warnings():  # an "experimental" Optuna API
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        number = retry_callback_class().retried_trial_number(trial)
    return number if isinstance(number, int) and not isinstance(number, bool) else None


def read_trials(study: Any) -> list[TrialRecord]:
    """The records of every trial of ``study``; those of finished trials are parsed once per process.

    Workers read the whole study several times per trial (the claim, the stop rule): parsing
    each finished trial again would make a run's cost grow with the square of its trials.
    Optuna never changes a finished trial, and its storages hand out the same object for it,
    so its record is kept for as long as that object lives.
    """
    records = []
    for trial in study.get_trials(deepcopy=False):
        if not trial.state.is_finished():
            records.append(TrialRecord.of(trial))
            continue
        key = id(trial)
        known = _finished_records.get(key)
        if known is None or known[0]() is not trial:
            known = _finished_records[key] = (weakref.ref(trial, lambda _, key=key: _finished_records.pop(key, None)),
                                              TrialRecord.of(trial))
        records.append(known[1])
    return records


#: id of a finished FrozenTrial → (a weak reference to it, its record).
_finished_records: dict[int, tuple[weakref.ref, "TrialRecord"]] = {}


def first_error(exc: ValidationError) -> str:
    """The first error of ``exc`` in one line: ``where: what`` (without pydantic's "Value error, ")."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _iso(value: _dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def finite(value: Any) -> float | None:
    """``value`` as a finite float, else ``None`` (NaN, infinity, not a number); never raises.

    Values come from user code: a conversion that fails in any way (an integer too large for a
    float, a ``__float__`` that raises) is ``None`` as well.
    """
    try:
        if isinstance(value, (bool, str, bytes)):  # "0.5" is a text, not a measurement
            return None
        value = float(value)
    except PLUGIN_FAULTS:
        return None
    return value if math.isfinite(value) else None
