"""The result cache, the run's study (metadata, abandoned trials, retries) and the driver's budget, seed and suggest rules."""

from __future__ import annotations

import math
import statistics
from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from archforge.errors import SearchError
from archforge.search import cache, records
from archforge.search.cache import Known
from archforge.search.cache import budget_spent
from archforge.search.driver import Objective, RunPlan, StopRule, seed_result, suggest
from archforge.search.records import CandidateAttr, Outcome, ProgressAttr, SeedResult, TrialRecord
from archforge.search.settings import SearchSettings
from archforge.search.space import candidate_hash, parse_space
from archforge.search.storage import MAX_RETRY, open_storage
from archforge.search.study import config_key, fail_abandoned, open_study, retry_interrupted, run_meta

pytestmark = [pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning"),
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

SPACE = """\
archforge: 1
name: unit
input: {shape: [1, 8, 8]}
params: {width: {choice: [4, 8]}}
nodes:
  - {id: stem, block: conv, args: {channels: $width, kernel: 3}}
  - {id: head, block: classifier, args: {classes: 10}}
"""
KEY = "0123456789ab"
CONFIG = "c0nf1g000000"
SPEC = {"archforge": 1, "name": "s", "nodes": []}
SPEC_HASH = candidate_hash(SPEC)
STATES = {"complete": "COMPLETE", "failed": "FAIL", "pruned": "PRUNED", "rejected": "PRUNED", "cancelled": "FAIL",
          "running": "RUNNING", "waiting": "WAITING", "interrupted": "FAIL", "unreadable": "COMPLETE"}


def ok(seed: int, accuracy: float = 0.5, **fields) -> SeedResult:
    return SeedResult(seed=seed, status="ok", accuracy=accuracy, epochs_run=2, **fields)


def rec(number: int, status: str, *seeds: SeedResult, key: str = KEY, config: str = CONFIG, **fields) -> TrialRecord:
    return TrialRecord(number=number, state=STATES[status], status=status, hash=key, config=config,
                       seeds={s.seed: s for s in seeds}, **fields)


# --------------------------------------------------------------------------- cache.known


def test_results_of_failed_and_interrupted_trials_are_reused():
    broken = SeedResult(seed=1, status="failed", error="NaN loss")
    found, busy = cache.known([rec(1, "failed", ok(0), broken), rec(2, "interrupted", ok(2, 0.7))], KEY, CONFIG, me=9)
    assert found.seeds == {0: (ok(0), 1), 1: (broken, 1), 2: (ok(2, 0.7), 2)}
    assert found.rejected is None and busy is None


def test_cancelled_unreadable_other_candidates_other_settings_and_me_are_ignored():
    trials = [rec(1, "cancelled", ok(0)), rec(2, "unreadable", ok(0)), rec(3, "complete", ok(0), key="ffffffffffff"),
              rec(4, "complete", ok(0), config="other0config"), rec(9, "complete", ok(0))]
    found, busy = cache.known(trials, KEY, CONFIG, me=9)
    assert found == Known() and busy is None


def test_a_rejection_short_circuits():
    found, _ = cache.known([rec(3, "complete", ok(0)), rec(4, "rejected", error="params 10 > max_params 5")], KEY, CONFIG, me=9)
    assert found.rejected == ("params 10 > max_params 5", 4)
    found, _ = cache.known([rec(5, "rejected", duplicate_of=2, error="too big"), rec(6, "rejected", error="later")], KEY, CONFIG, me=9)
    assert found.rejected == ("too big", 2)  # a reused rejection points to the trial that made it; the first one wins
    found, _ = cache.known([rec(5, "rejected")], KEY, CONFIG, me=9)
    assert found.rejected == ("rejected", 5)


@pytest.mark.parametrize("order", [1, -1])
def test_the_lowest_source_trial_wins(order):
    trials = [rec(5, "complete", ok(0, 0.6)), rec(7, "complete", ok(0, 0.7), ok(1, 0.7), duplicate_of=1),
              rec(2, "complete", ok(0, 0.5))][::order]
    found, _ = cache.known(trials, KEY, CONFIG, me=9)
    assert found.seeds == {0: (ok(0, 0.7), 1), 1: (ok(1, 0.7), 1)}
    assert found.source([0, 1]) == 1


CLAIM = ProgressAttr(total=2)


@pytest.mark.parametrize("other, me, busy", [
    (rec(3, "running", progress=CLAIM), 5, 3), (rec(3, "running", progress=CLAIM), 2, 3),  # whatever the numbers
    (rec(3, "running"), 5, None),  # asked, not claimed: it will wait for us, or claim it after us
    (rec(3, "running", progress=CLAIM, key="ffffffffffff"), 5, None),
    (rec(3, "waiting"), 5, None), (rec(3, "interrupted"), 5, None), (rec(3, "complete", ok(0)), 5, None),
])
def test_busy_is_a_running_trial_that_claimed_the_candidate(other, me, busy):
    assert cache.known([other], KEY, CONFIG, me=me)[1] == busy


def test_a_running_trials_finished_seeds_are_known_while_it_is_busy():
    found, busy = cache.known([rec(3, "running", ok(0), progress=CLAIM)], KEY, CONFIG, me=5)
    assert found.seeds == {0: (ok(0), 3)} and busy == 3


def test_a_constraint_rejection_is_checked_again_a_shape_rejection_is_not():
    """Constraints may change between sessions of a run; whether a spec fits its shapes does not."""
    shape = rec(3, "rejected", error="stem: kernel 9 does not fit 8x8")
    constraint = rec(4, "rejected", error="params 9,000 > max_params 1,000", params=9000, flops=10)
    assert cache.known([shape], KEY, CONFIG, me=5)[0].rejected == (shape.error, 3)
    assert cache.known([constraint], KEY, CONFIG, me=5)[0].rejected is None


PRUNED = SeedResult(seed=1, status="pruned", accuracy=0.3)
FAILED = SeedResult(seed=0, status="failed", error="x")


@pytest.mark.parametrize("known, seeds, complete", [
    ({}, [0, 1, 2], False),
    ({0: ok(0), 1: ok(1), 2: ok(2)}, [0, 1, 2], True),
    ({0: ok(0)}, [0, 1, 2], False),
    ({1: ok(1), 2: ok(2)}, [0, 1, 2], False),
    ({0: ok(0), 2: ok(2)}, [0, 1, 2], False),
    ({0: FAILED}, [0, 1, 2], True),
    ({0: ok(0), 1: PRUNED}, [0, 1, 2], True),
    ({0: ok(0)}, [0], True),
    ({}, [], True),
])
def test_known_complete(known, seeds, complete):
    assert Known(seeds={s: (r, 4) for s, r in known.items()}).complete(seeds) is complete


def test_known_source():
    found = Known(seeds={0: (ok(0), 4), 1: (ok(1), 2)})
    assert (found.source([0, 1]), found.source([1]), found.source([2]), found.source([])) == (4, 2, None, None)


def test_claim_waits_for_the_worker_training_the_candidate():
    study = optuna.create_study()
    other = study.ask()
    records.write(other, CandidateAttr(hash=SPEC_HASH, spec=SPEC, config=CONFIG))
    records.write(other, ProgressAttr(total=2))
    me = study.ask()
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        records.write(other, ok(0, 0.8))
        records.write(other, Outcome(status="complete", accuracy=0.8, accuracies=[0.8]))
        study.tell(other, 0.8)

    found = cache.claim(study, SPEC_HASH, CONFIG, me, [0], epochs=2, budget=None, lock="memory", wait=wait)
    assert waits == [cache.POLL_S] and found.seeds == {0: (ok(0, 0.8), other.number)}
    assert "progress" not in study.trials[me.number].user_attrs  # nothing left to train: nothing claimed


def test_a_claim_is_refused_once_the_budget_is_held_by_others(tmp_path):
    """Two trials of one candidate: the first claims it; with a budget of one the second gets nothing to train."""
    study = optuna.create_study()
    first, second = study.ask(), study.ask()
    assert cache.claim(study, SPEC_HASH, CONFIG, first, [0, 1], epochs=3, budget=1, lock=f"sqlite:///{tmp_path / 's.db'}").seeds == {}
    assert study.trials[first.number].user_attrs["progress"] == {"done": 0, "total": 6, "trial": first.number}
    other = {**SPEC, "name": "other"}
    assert cache.claim(study, candidate_hash(other), CONFIG, second, [0], epochs=3, budget=1, lock=f"sqlite:///{tmp_path / 's.db'}") is None


# --------------------------------------------------------------------------- config_key


BASE = SearchSettings(epochs=2, limit=300)


@pytest.mark.parametrize("overrides, dataset", [
    ({"train": {"lr": 0.01}}, "digits"), ({"epochs": 3}, "digits"), ({"limit": 301}, "digits"), ({}, "mnist"),
    ({"val_fraction": 0.3}, "digits"), ({"train": {"batch_size": 32}}, "digits"), ({"train": {"augment": False}}, "digits"),
    ({"train": {"label_smoothing": 0.0}}, "digits"), ({"train": {"amp": False}}, "digits"),
])
def test_config_key_changes_with_what_changes_results(overrides, dataset):
    assert config_key(BASE.merged(**overrides), dataset) != config_key(BASE, "digits")


@pytest.mark.parametrize("overrides", [
    {"train": {"threads": 3}}, {"train": {"device": "cuda:1"}}, {"train": {"latency_batch": 8}}, {"train": {"latency_repeats": 0}},
    {"workers": 4}, {"seed": 7}, {"seeds": 3}, {"strategy": "random"}, {"budget": 5}, {"constraints": {"max_params": 10}},
    {"name": "other"}, {"executor": "ray"},
])
def test_config_key_ignores_how_fast_and_where(overrides):
    assert config_key(BASE.merged(**overrides), "digits") == config_key(BASE, "digits")


def test_config_key_is_twelve_hex_digits():
    key = config_key(BASE, "digits")
    assert len(key) == 12 and int(key, 16) >= 0


# --------------------------------------------------------------------------- open_study


SETTINGS = SearchSettings(epochs=2)


def _open(storage, settings: SearchSettings = SETTINGS, text: str = SPACE, dataset: str = "digits"):
    meta = run_meta(parse_space(text, "unit.yaml"), settings, dataset)
    return open_study(storage, "unit", meta, settings.directions, where="memory"), meta


def _start(study) -> None:
    trial = study.ask()
    records.write(trial, CandidateAttr(hash=SPEC_HASH, spec=SPEC, config=CONFIG))


def test_open_study_creates_the_study_with_its_metadata():
    storage = optuna.storages.InMemoryStorage()
    study, meta = _open(storage)
    assert study.user_attrs[records.RUN_KEY] == meta.model_dump(mode="json")
    assert [d.name for d in study.directions] == ["MAXIMIZE"]


@pytest.mark.parametrize("changed, told", [
    (dict(text=SPACE + "# another version\n"), "another version of the search space"),
    (dict(settings=SETTINGS.merged(seeds=2)), "trains 1 seed(s) per candidate"),
    (dict(settings=SETTINGS.merged(objectives=["accuracy", "params"])), "optimises accuracy"),
    (dict(settings=SETTINGS.merged(epochs=3)), "epochs 2 → 3"),
    (dict(settings=SETTINGS.merged(train={"lr": 0.01})), "train.lr 0.002 → 0.01"),
    (dict(dataset="mnist"), "dataset digits → mnist"),
])
def test_a_started_run_refuses_other_settings(changed, told):
    storage = optuna.storages.InMemoryStorage()
    study, meta = _open(storage)
    _start(study)
    with pytest.raises(SearchError) as info:
        _open(storage, **changed)
    assert told in info.value.message and "start a new run with --name" in info.value.message
    again = optuna.load_study(study_name="unit", storage=storage)
    assert len(again.trials) == 1 and again.user_attrs[records.RUN_KEY] == meta.model_dump(mode="json")


def test_a_started_run_reopens_with_neutral_changes():
    storage = optuna.storages.InMemoryStorage()
    study, _ = _open(storage)
    _start(study)
    changed = SETTINGS.merged(workers=3, budget=9, strategy="random", train={"threads": 2, "device": "cuda"})
    study, meta = _open(storage, changed)
    assert len(study.trials) == 1
    assert study.user_attrs[records.RUN_KEY]["settings"]["workers"] == 3 == meta.settings["workers"]


@pytest.mark.parametrize("changed", [
    dict(text=SPACE + "# corrected\n"), dict(settings=SETTINGS.merged(seeds=3, train={"lr": 0.1})), dict(dataset="mnist"),
])
def test_a_run_with_no_started_trial_takes_the_new_metadata(changed):
    storage = optuna.storages.InMemoryStorage()
    study, _ = _open(storage)
    records.write(study.ask(), records.WorkerAttr(host="h", pid=1))  # asked, but died before its candidate
    study, meta = _open(storage, **changed)
    assert study.user_attrs[records.RUN_KEY] == meta.model_dump(mode="json")


def test_a_run_with_no_started_trial_takes_new_directions():
    storage = optuna.storages.InMemoryStorage()
    _open(storage)
    settings = SETTINGS.merged(objectives=["accuracy", "params"])
    study, meta = _open(storage, settings)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.user_attrs[records.RUN_KEY] == meta.model_dump(mode="json")
    assert [d.name for d in optuna.load_study(study_name="unit", storage=storage).directions] == ["MAXIMIZE", "MINIMIZE"]


def test_a_study_with_unreadable_metadata_is_refused():
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(storage=storage, study_name="unit").set_user_attr(records.RUN_KEY, {"space": 1})
    with pytest.raises(SearchError, match=r"run 'unit' \(memory\): the study's 'archforge' attribute cannot be read: .*"
                                          r"start a new run with --name"):
        _open(storage)


# --------------------------------------------------------------------------- abandoned and interrupted trials


@pytest.fixture(scope="module")
def sqlite_storage(tmp_path_factory):
    return open_storage(f"sqlite:///{tmp_path_factory.mktemp('study') / 'study.db'}")


def _trial(study, *results, outcome: Outcome | None = None, state: TrialState | None = None, params: bool = True):
    trial = study.ask()
    if params:
        trial.suggest_int("width", 4, 16)
    records.write(trial, CandidateAttr(hash=SPEC_HASH, spec=SPEC, config=CONFIG))
    for result in results:
        records.write(trial, result)
    if outcome is not None:
        records.write(trial, outcome)
    if state is not None:
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    return trial


def test_abandoned_trials_are_failed_and_queued_once(sqlite_storage, request):
    study = optuna.create_study(storage=sqlite_storage, study_name=request.node.name)
    half = _trial(study, ok(0))  # left running by a dead worker, one seed done
    _trial(study, ok(0), outcome=Outcome(status="complete", accuracy=0.5, accuracies=[0.5]), state=TrialState.COMPLETE)
    assert fail_abandoned(study) == 1
    assert study.trials[half.number].state == TrialState.FAIL
    assert retry_interrupted(study, sqlite_storage) == 1
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1
    record = TrialRecord.of(waiting[0])
    assert (record.status, record.retry_of, record.hash, sorted(record.seeds)) == ("waiting", half.number, SPEC_HASH, [0])
    assert waiting[0].params == study.trials[half.number].params

    assert retry_interrupted(study, sqlite_storage) == 0
    assert fail_abandoned(study) == 0
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 1


def test_failed_trials_with_an_outcome_are_not_retried_but_one_without_params_is(sqlite_storage, request):
    """A failure of the candidate is final; a trial killed before drawing its parameters is retried (it draws again)."""
    study = optuna.create_study(storage=sqlite_storage, study_name=request.node.name)
    _trial(study, SeedResult(seed=0, status="failed", error="boom"), outcome=Outcome(status="failed", error="boom"),
           state=TrialState.FAIL)
    _trial(study, outcome=Outcome(status="rejected", error="too big"), state=TrialState.PRUNED)
    assert retry_interrupted(study, sqlite_storage) == 0
    _trial(study, params=False, state=TrialState.FAIL)
    assert retry_interrupted(study, sqlite_storage) == 1
    assert [_retry_history(t) for t in study.get_trials(states=(TrialState.WAITING,))] == [[2]]


def _retry_history(trial) -> list[int]:
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    return retry.retry_history(trial)


def test_a_retry_interrupted_again_is_queued_once(sqlite_storage, request):
    study = optuna.create_study(storage=sqlite_storage, study_name=request.node.name)
    _trial(study, state=TrialState.FAIL)
    assert retry_interrupted(study, sqlite_storage) == 1
    retry = _trial(study, state=TrialState.FAIL)  # takes the queued retry, and is interrupted too
    assert retry.number == 1
    assert retry_interrupted(study, sqlite_storage) == 1
    assert retry_interrupted(study, sqlite_storage) == 0
    assert [t.number for t in study.get_trials(states=(TrialState.WAITING,))] == [2]
    assert [_retry_history(t) for t in study.trials] == [[], [0], [0, 1]]


def test_retries_stop_after_max_retry(sqlite_storage, request):
    study = optuna.create_study(storage=sqlite_storage, study_name=request.node.name)
    counts = []
    for _ in range(MAX_RETRY + 1):
        _trial(study, state=TrialState.FAIL)  # the first is fresh; each later one takes the queued retry
        counts.append(retry_interrupted(study, sqlite_storage))
    assert len(study.trials) == MAX_RETRY + 1
    assert study.get_trials(states=(TrialState.WAITING,)) == []
    assert counts == [1] * MAX_RETRY + [0]


def test_retry_interrupted_without_heartbeats_queues_the_trial():
    study = optuna.create_study()
    interrupted = _trial(study, ok(0), state=TrialState.FAIL)
    assert retry_interrupted(study, optuna.storages.InMemoryStorage()) == 1
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and sorted(TrialRecord.of(waiting[0]).seeds) == [0]
    assert study.ask().suggest_int("width", 4, 16) == study.trials[interrupted.number].params["width"]  # its params replay


def test_retry_interrupted_without_heartbeats_queues_once():
    study = optuna.create_study()
    interrupted = _trial(study, state=TrialState.FAIL)
    storage = optuna.storages.InMemoryStorage()
    assert retry_interrupted(study, storage) == 1
    assert retry_interrupted(study, storage) == 0
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and TrialRecord.of(waiting[0]).retry_of == interrupted.number


# --------------------------------------------------------------------------- driver: budget, seed results, suggest


def test_budget_spent_counts_finished_evaluations():
    trials = [rec(0, "complete", ok(0)), rec(1, "failed"), rec(2, "pruned"), rec(3, "rejected"), rec(4, "cancelled"),
              rec(5, "interrupted"), rec(6, "complete", duplicate_of=0), rec(7, "waiting"), rec(8, "unreadable")]
    assert budget_spent(trials, 3) and budget_spent(trials, 2)
    assert not budget_spent(trials, 4)
    assert not budget_spent(trials, None) and not budget_spent([], None)


@pytest.mark.parametrize("running, me, counts", [
    (rec(10, "running", progress=ProgressAttr(total=2)), 11, True),
    (rec(10, "running", progress=ProgressAttr(total=2)), 10, False),  # its own claim
    (rec(10, "running", progress=ProgressAttr(total=2)), 9, True),  # claims count whatever the trial numbers
    (rec(10, "running", progress=ProgressAttr(total=2)), None, True),
    (rec(10, "running"), 11, False),  # asked, not yet evaluating
    (rec(10, "running", progress=ProgressAttr(total=0)), 11, False),
])
def test_budget_spent_counts_the_claims_of_other_running_trials(running, me, counts):
    trials = [rec(0, "complete"), rec(1, "failed"), running]
    assert budget_spent(trials, 3, me) is counts
    assert budget_spent(trials, 2, me)


def test_seed_result_from_a_mapping():
    result = seed_result(1, {"accuracy": 0.8, "epochs": 3.0, "history": [0.5, math.nan, 0.8], "params": 120.0, "flops": "many",
                             "latency_ms": 2.5, "latency_iqr_ms": math.inf, "peak_memory_mb": 9, "train_time_s": 1.25,
                             "timings": {"forward": 0.5, 3: math.nan}, "stopped_early": 1},
                         [0.1], epochs=3, pruned=False, eval_s=1.234567)
    assert result == SeedResult(seed=1, status="ok", accuracy=0.8, epochs_run=3, history=[0.5, None, 0.8], stopped_early=True,
                                params=120, flops=None, latency_ms=2.5, latency_iqr_ms=None, peak_memory_mb=9.0,
                                train_time_s=1.25, eval_time_s=1.2346, timings={"forward": 0.5, "3": None})


def test_seed_result_from_an_object_falls_back_to_the_reported_history():
    result = seed_result(0, SimpleNamespace(accuracy=0.6, params=10.5, flops=-3), [0.4, 0.6], epochs=3, pruned=True, eval_s=0.0)
    assert (result.status, result.accuracy, result.epochs_run, result.history) == ("pruned", 0.6, 2, [0.4, 0.6])
    assert (result.stopped_early, result.params, result.flops, result.timings, result.error) == (True, None, None, {}, None)


@pytest.mark.parametrize("accuracy, problem", [
    (None, "no accuracy"), (math.nan, "accuracy nan, not a finite number"), (math.inf, "accuracy inf, not a finite number"),
    (1.5, "accuracy 1.5, not in [0, 1]"), (-0.1, "accuracy -0.1, not in [0, 1]"), ("high", "accuracy 'high', not a finite number"),
])
def test_seed_result_without_a_usable_accuracy_fails(accuracy, problem):
    result = seed_result(2, {"accuracy": accuracy, "epochs": 2}, [0.5, 0.6], epochs=3, pruned=False, eval_s=0.5)
    assert (result.status, result.accuracy, result.error) == ("failed", None, f"the evaluator gave {problem}")
    assert (result.seed, result.epochs_run, result.eval_time_s) == (2, 2, 0.5)


@pytest.mark.parametrize("count, expected", [(7, 7), (7.0, 7), (7.5, None), (-1, None), (True, None), (2**63, None), ("7", 7),
                                             ("x", None), (None, None)])
def test_seed_result_counts(count, expected):
    assert seed_result(0, {"accuracy": 0.5, "params": count}, [], epochs=3, pruned=False, eval_s=0).params == expected


def test_a_seed_the_pruner_stopped_after_its_last_epoch_is_not_pruned():
    """The pruner asked to stop, but the evaluator ran every epoch anyway: the seed is complete."""
    result = seed_result(0, {"accuracy": 0.7, "epochs": 3}, [0.5, 0.6, 0.7], epochs=3, pruned=True, eval_s=0)
    assert (result.status, result.stopped_early) == ("ok", False)


def test_seed_result_with_a_history_that_is_no_list():
    result = seed_result(0, {"accuracy": 0.5, "history": 5}, [0.3, 0.5], epochs=3, pruned=False, eval_s=0)
    assert result.status == "ok" and result.accuracy == 0.5


def test_suggest_replays_enqueued_params_and_records_the_distribution():
    distributions = {"width": IntDistribution(4, 64, step=4), "rate": FloatDistribution(1e-4, 1e-1, log=True),
                     "block": CategoricalDistribution(["conv", "gpsa", None]), "depth": IntDistribution(1, 8, log=True)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"width": 24, "rate": 0.003, "block": None, "depth": 5})
    replayed = study.ask()
    assert {n: suggest(replayed, n, d) for n, d in distributions.items()} == {"width": 24, "rate": 0.003, "block": None, "depth": 5}
    assert replayed.distributions == distributions
    drawn = study.ask()
    values = {n: suggest(drawn, n, d) for n, d in distributions.items()}
    assert values["width"] in range(4, 65, 4) and 1e-4 <= values["rate"] <= 1e-1
    assert values["block"] in ("conv", "gpsa", None) and values["depth"] in range(1, 9)
    with pytest.raises(TypeError, match="decision x: no suggest method for str"):
        suggest(drawn, "x", "not a distribution")


# --------------------------------------------------------------------------- driver: aggregate and stop rule


def _objective(**settings) -> Objective:
    plan = RunPlan(space_text="", space_file="", settings=SearchSettings(**settings), storage_url="memory", study_name="s",
                   config_key=CONFIG, dataset="digits")
    return Objective(plan, space=parse_space(SPACE), data=None, evaluate=None)


def test_aggregate_means_and_medians_over_seeds():
    objective = _objective(seeds=3, epochs=2)
    candidate = SimpleNamespace(params=999, flops=888)
    results = {0: ok(0, 0.5, latency_ms=3.0, params=None), 1: ok(1, 0.7, latency_ms=1.0, flops=50), 2: ok(2, 0.9, latency_ms=2.0)}
    outcome = objective.aggregate(candidate, results, fresh={1, 2})
    assert outcome.status == "complete"
    assert outcome.accuracy == pytest.approx(statistics.fmean([0.5, 0.7, 0.9]))
    assert outcome.accuracy_std == pytest.approx(statistics.stdev([0.5, 0.7, 0.9]))
    assert (outcome.accuracies, outcome.latency_ms, outcome.params, outcome.flops) == ([0.5, 0.7, 0.9], 2.0, 999, 50)
    assert (outcome.epochs_run, outcome.epochs_full, outcome.peak_memory_mb, outcome.error) == (4, 6, None, None)


def test_aggregate_of_a_failed_or_pruned_seed():
    objective = _objective(seeds=2, epochs=3)
    candidate = SimpleNamespace(params=10, flops=20)
    failed = objective.aggregate(candidate, {0: ok(0, 0.5), 1: SeedResult(seed=1, status="failed", error="NaN loss")}, {1})
    assert (failed.status, failed.accuracy, failed.accuracy_std) == ("failed", None, None)
    assert (failed.error, failed.accuracies) == ("NaN loss", [0.5])
    pruned = objective.aggregate(candidate, {0: SeedResult(seed=0, status="pruned", accuracy=0.3, epochs_run=1)}, {0})
    assert (pruned.status, pruned.accuracy, pruned.accuracy_std, pruned.epochs_run, pruned.epochs_full) == ("pruned", 0.3, None, 1, 6)
    single = objective.aggregate(candidate, {0: ok(0, 0.4)}, set())
    assert (single.accuracy, single.accuracy_std, single.epochs_run) == (0.4, None, 0)


class _FakeStudy:
    def __init__(self, trials):
        self.trials = trials
        self.stopped = False

    def get_trials(self, deepcopy=True, states=None):
        return self.trials

    def stop(self):
        self.stopped = True


def _frozen(number: int, status: str, hash_: str | None = None) -> optuna.trial.FrozenTrial:
    attrs = {}
    if hash_ is not None:
        spec = {"name": hash_}
        attrs["candidate"] = records.dump(CandidateAttr(hash=candidate_hash(spec), spec=spec, config=CONFIG))
    attrs["outcome"] = records.dump(Outcome(status=status, accuracy=0.5 if status == "complete" else None))
    state = {"complete": TrialState.COMPLETE, "rejected": TrialState.PRUNED, "failed": TrialState.FAIL}[status]
    trial = create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None, user_attrs=attrs)
    trial.number = number
    return trial


def test_stop_rule_stops_at_the_budget():
    trials = [_frozen(0, "complete", "a"), _frozen(1, "rejected", "b")]
    study = _FakeStudy(trials)
    StopRule(budget=2, distinct=None)(study, trials[-1])
    assert not study.stopped
    study.trials.append(_frozen(2, "failed", "c"))
    StopRule(budget=2, distinct=None)(study, study.trials[-1])
    assert study.stopped


def test_stop_rule_stops_when_every_distinct_candidate_is_known():
    trials = [_frozen(0, "complete", "a"), _frozen(1, "rejected", "b")]
    study = _FakeStudy(trials)
    StopRule(budget=None, distinct=3)(study, trials[-1])
    assert not study.stopped
    StopRule(budget=None, distinct=2)(study, trials[-1])
    assert study.stopped


def test_stop_rule_gives_up_after_idle_trials(monkeypatch):
    from archforge.search import driver

    monkeypatch.setattr(driver, "MAX_IDLE", 3)
    study = _FakeStudy([_frozen(0, "complete", "a")])
    rule = StopRule(budget=None, distinct=None)
    reused = _frozen(1, "rejected", "a")
    for _ in range(2):
        rule(study, reused)
    assert not study.stopped
    rule(study, _frozen(2, "complete", "b"))  # something new resets the count
    rule(study, reused)
    rule(study, reused)
    assert not study.stopped
    rule(study, reused)
    assert study.stopped


PER_COPY_SPACE = """\
archforge: 1
name: unit
input: {shape: [1, 8, 8]}
nodes:
  - {id: stage, block: conv, repeat: 2, args: {channels: 4, kernel: {choice: [1, 3], per_copy: true}}}
  - {id: head, block: classifier, args: {classes: 10}}
"""


def test_a_per_copy_run_stored_under_the_former_naming_is_not_resumed():
    """Its candidates' hashes changed with the naming of per-copy copies: resuming would train duplicates."""
    import hashlib

    text_hash = hashlib.sha256(PER_COPY_SPACE.encode("utf-8")).hexdigest()[:16]
    assert parse_space(PER_COPY_SPACE, "unit.yaml").fingerprint != text_hash
    assert parse_space(SPACE, "unit.yaml").fingerprint == hashlib.sha256(SPACE.encode("utf-8")).hexdigest()[:16]
    storage = optuna.storages.InMemoryStorage()
    study, meta = _open(storage, text=PER_COPY_SPACE)
    _start(study)
    study.set_user_attr(records.RUN_KEY, meta.model_copy(update={"space_fingerprint": text_hash}).model_dump(mode="json"))
    with pytest.raises(SearchError, match="was made by an earlier archforge, which named the copies of per-copy choice points"):
        _open(storage, text=PER_COPY_SPACE)


def test_a_retry_carrying_its_failed_trials_claim_has_claimed_nothing(tmp_path):
    """Optuna's retry copies the failed trial's attributes, its claim included: two such retries must not wait for each other."""
    study = optuna.create_study()
    dead = study.ask()
    assert cache.claim(study, SPEC_HASH, CONFIG, dead, [0], epochs=2, budget=None, lock="memory").seeds == {}
    records.write(dead, CandidateAttr(hash=SPEC_HASH, spec=SPEC, config=CONFIG))
    study.tell(dead.number, state=TrialState.FAIL)
    for _ in range(2):  # the same failed trial queued twice (two workers noticed it at once)
        study.enqueue_trial({}, user_attrs=study.trials[dead.number].user_attrs)
    first, second = study.ask(), study.ask()

    def wait(seconds: float) -> None:
        raise AssertionError("the retry waits for a claim that is only a copy of the dead trial's")

    assert cache.claim(study, SPEC_HASH, CONFIG, first, [0], epochs=2, budget=None, lock="memory", wait=wait).seeds == {}
    # The second retry waits for the first, which really claimed the candidate, and for nothing else.
    assert cache.known(records.read_trials(study), SPEC_HASH, CONFIG, second.number)[1] == first.number


def test_a_claim_without_its_trial_number_is_a_retry_copy_only_in_a_retry():
    """Stores written before claims named their trial: a plain trial's claim stands, a retry's copy does not."""
    old_claim = ProgressAttr(total=2)
    assert cache.claimed(TrialRecord(number=3, state="RUNNING", status="running", progress=old_claim))
    assert not cache.claimed(TrialRecord(number=5, state="RUNNING", status="running", progress=old_claim, retry_of=3))
    assert cache.claimed(TrialRecord(number=5, state="RUNNING", status="running", progress=ProgressAttr(total=2, trial=5), retry_of=3))
    assert not cache.claimed(TrialRecord(number=5, state="RUNNING", status="running", progress=ProgressAttr(total=2, trial=3)))


def test_a_retry_that_died_shows_no_outcome_of_the_trial_it_retried():
    """A trial killed after storing its outcome, retried, and the retry killed too: the copy is not the retry's result."""
    from archforge.search.storage import retry_callback

    study = optuna.create_study()
    first = study.ask()
    records.write(first, CandidateAttr(hash=SPEC_HASH, spec=SPEC, config=CONFIG))
    records.write(first, Outcome(status="complete", accuracy=0.9, accuracies=[0.9], trial=first.number))
    study.tell(first.number, state=TrialState.FAIL)  # its worker died before telling Optuna
    retry_callback()(study, study.trials[first.number])
    retry = study.ask()
    study.tell(retry.number, state=TrialState.FAIL)  # and so did the retry's
    by_number = {r.number: r for r in records.read_trials(study)}
    assert by_number[first.number].status == "complete"  # the first one found it
    assert by_number[retry.number].retry_of == first.number and by_number[retry.number].status == "interrupted"
    assert by_number[retry.number].accuracy is None and not by_number[retry.number].counted
