"""Trial records: every attribute survives a real Optuna trial, a tampered attribute reads as unreadable, never a crash."""

from __future__ import annotations

import json
import math
import warnings

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from archforge.search import limits, records
from archforge.search.records import (
    CandidateAttr, LineageAttr, OneShotAttr, Outcome, ProgressAttr, ProxyAttr, RunMeta, SeedResult, TrialRecord, WorkerAttr,
)
from archforge.search.space import candidate_hash
from archforge.search.storage import open_storage, retry_callback

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")

SPEC = {"archforge": 1, "name": "unit", "input": {"shape": [1, 8, 8]},
        "nodes": [{"id": "stem", "block": "conv", "args": {"channels": 8}}, {"id": "head", "block": "classifier", "args": {"classes": 10}}]}
HASH = candidate_hash(SPEC)

CANDIDATE = CandidateAttr(hash=HASH, decisions={"width": 8, "block": "conv", "pair": [1, 2]}, spec=SPEC, config="0123456789ab")
WORKER = WorkerAttr(host="node-1", pid=4321, index=2)
PROGRESS = ProgressAttr(done=3, total=6)
SEED = SeedResult(seed=1, status="ok", accuracy=0.75, epochs_run=3, history=[0.5, None, 0.75], stopped_early=True, params=100,
                  flops=2000, latency_ms=1.5, latency_iqr_ms=0.125, peak_memory_mb=12.0, train_time_s=3.0, eval_time_s=3.5,
                  timings={"forward": 0.25, "backward": None}, error=None, lr=0.004)
OUTCOME = Outcome(status="complete", accuracy=0.75, accuracy_std=0.05, accuracies=[0.7, 0.8], params=100, flops=2000,
                  latency_ms=1.5, latency_iqr_ms=0.125, peak_memory_mb=12.0, train_time_s=3.0, epochs_run=6, epochs_full=6,
                  driver_time_s=0.5, eval_time_s=6.0)
PROXY = ProxyAttr(name="synflow", score=12.5, rank=3)
LINEAGE = LineageAttr(parent=4, mutated="width")
ONESHOT = OneShotAttr(rank=2, accuracy=0.625)
EVERY_ATTR = [CANDIDATE, WORKER, PROGRESS, SEED, OUTCOME, PROXY, ONESHOT, LINEAGE]


@pytest.fixture(scope="module")
def sqlite_storage(tmp_path_factory):
    return open_storage(f"sqlite:///{tmp_path_factory.mktemp('records') / 'study.db'}")


def _study(kind: str, storage) -> optuna.Study:
    if kind == "memory":
        return optuna.create_study()
    return optuna.create_study(storage=storage)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_every_attribute_round_trips_through_a_trial(kind, sqlite_storage):
    study = _study(kind, sqlite_storage)
    trial = study.ask()
    for value in EVERY_ATTR:
        records.write(trial, value)
    study.tell(trial, 0.75)
    frozen = study.trials[-1]

    assert set(frozen.user_attrs) == {"candidate", "worker", "progress", "seed_1", "outcome", "proxy", "oneshot", "lineage"}
    parsed = records.parse_attrs(frozen.user_attrs)
    assert parsed["candidate"] == CANDIDATE
    assert parsed["worker"] == WORKER
    assert parsed["progress"] == PROGRESS
    assert parsed["seeds"] == {1: SEED}
    assert parsed["outcome"] == OUTCOME
    assert parsed["proxy"] == PROXY
    assert parsed["lineage"] == LINEAGE
    assert parsed["oneshot"] == ONESHOT

    record = TrialRecord.of(frozen)
    assert record.status == "complete" and record.state == "COMPLETE" and record.error is None
    assert record.number == frozen.number
    assert (record.hash, record.config, record.decisions, record.spec) == (HASH, "0123456789ab", CANDIDATE.decisions, SPEC)
    assert (record.accuracy, record.accuracy_std, record.accuracies) == (0.75, 0.05, [0.7, 0.8])
    assert (record.params, record.flops, record.latency_ms, record.latency_iqr_ms) == (100, 2000, 1.5, 0.125)
    assert (record.peak_memory_mb, record.train_time_s, record.epochs_run, record.epochs_full) == (12.0, 3.0, 6, 6)
    assert (record.driver_time_s, record.eval_time_s, record.duplicate_of, record.retry_of) == (0.5, 6.0, None, None)
    assert (record.parent, record.mutated, record.proxy_score) == (4, "width", 12.5)
    assert record.seeds == {1: SEED}
    assert record.worker == WORKER and record.progress == PROGRESS
    assert record.values == [0.75]
    assert record.started is not None and record.finished is not None


@pytest.mark.parametrize("value", EVERY_ATTR, ids=lambda v: type(v).__name__)
def test_each_attribute_alone_reads_back_equal(value):
    study = _study("memory", None)
    trial = study.ask()
    records.write(trial, CANDIDATE)  # an outcome that counts needs its candidate
    records.write(trial, value)
    study.tell(trial, 0.75)
    parsed = records.parse_attrs(study.trials[-1].user_attrs)
    stored = parsed["seeds"][value.seed] if isinstance(value, SeedResult) else parsed[records.key_of(value)]
    assert stored == value
    assert type(stored) is type(value)


def test_key_of_names_the_user_attribute():
    assert [records.key_of(v) for v in EVERY_ATTR] == ["candidate", "worker", "progress", "seed_1", "outcome", "proxy", "oneshot", "lineage"]
    assert records.key_of(SeedResult(seed=17, status="failed")) == "seed_17"
    with pytest.raises(TypeError, match="RunMeta is not a trial attribute"):
        records.key_of(RunMeta(space="", space_file="", space_fingerprint="", space_name="", settings={}, config_key="", dataset=""))


def test_enqueued_attributes_read_as_a_waiting_trial():
    study = _study("memory", None)
    study.enqueue_trial({"width": 8}, user_attrs=records.attrs(PROXY, LINEAGE))
    record = TrialRecord.of(study.get_trials(states=(TrialState.WAITING,))[0])
    assert (record.status, record.state, record.proxy_score, record.parent, record.mutated) == ("waiting", "WAITING", 12.5, 4, "width")
    assert record.hash is None and record.started is None and record.values is None


def test_a_trial_without_outcome_sums_the_epochs_of_its_seeds():
    study = _study("memory", None)
    trial = study.ask()
    records.write(trial, CANDIDATE)
    records.write(trial, SeedResult(seed=0, status="ok", accuracy=0.5, epochs_run=2))
    records.write(trial, SeedResult(seed=1, status="ok", accuracy=0.5, epochs_run=1))
    running = TrialRecord.of(study.trials[-1])
    assert (running.status, running.epochs_run, sorted(running.seeds)) == ("running", 3, [0, 1])
    study.tell(trial, state=TrialState.FAIL)
    interrupted = TrialRecord.of(study.trials[-1])
    assert (interrupted.status, interrupted.state, interrupted.epochs_run, interrupted.values) == ("interrupted", "FAIL", 3, None)
    assert not interrupted.counted


def test_row_has_the_csv_columns_and_no_detail():
    study = _study("memory", None)
    trial = study.ask()
    for value in EVERY_ATTR:
        records.write(trial, value)
    study.tell(trial, 0.75)
    row = TrialRecord.of(study.trials[-1]).row()
    expected = {
        "number", "state", "status", "hash", "config", "accuracy", "accuracy_std", "accuracies", "params", "flops", "latency_ms",
        "latency_iqr_ms", "peak_memory_mb", "train_time_s", "epochs_run", "epochs_full", "error", "duplicate_of", "retry_of",
        "parent", "mutated", "proxy_score", "oneshot_rank", "oneshot_accuracy", "driver_time_s", "eval_time_s", "started", "finished", "lr",
        "decision.width", "decision.block", "decision.pair",
    }
    assert set(row) == expected
    assert (row["decision.width"], row["decision.block"], row["decision.pair"]) == (8, "conv", [1, 2])
    assert (row["oneshot_rank"], row["oneshot_accuracy"]) == (2, 0.625)
    json.dumps(row, allow_nan=False)  # plain JSON data


# --------------------------------------------------------------------------- counted


@pytest.mark.parametrize("status", ["complete", "failed", "pruned", "rejected", "cancelled", "running", "waiting",
                                    "interrupted", "unreadable"])
@pytest.mark.parametrize("duplicate_of", [None, 3])
def test_counted_truth_table(status, duplicate_of):
    record = TrialRecord(number=7, state="COMPLETE", status=status, duplicate_of=duplicate_of)
    own_evaluation = status in ("complete", "failed", "pruned") and duplicate_of is None
    assert record.counted is own_evaluation


# --------------------------------------------------------------------------- unreadable


def _attrs(**changes) -> dict:
    """Valid user attributes of a complete trial, with ``changes`` (``key: None`` drops it, ``key: {field: v}`` patches it)."""
    attrs = {"candidate": records.dump(CANDIDATE), "outcome": records.dump(OUTCOME), "seed_1": records.dump(SEED),
             "worker": records.dump(WORKER), "progress": records.dump(PROGRESS)}
    for key, change in changes.items():
        if change is None:
            attrs.pop(key, None)
        elif isinstance(change, dict) and isinstance(attrs.get(key), dict):
            attrs[key] = {**attrs[key], **change}
        else:
            attrs[key] = change
    return attrs


def _deep(levels: int) -> dict:
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    return value  # type: ignore[return-value]


LONG = "x" * (limits.MAX_TEXT + 1)
BAD_ATTRS = {
    "hash not text": (_attrs(candidate={"hash": 12}), "its candidate cannot be read: hash"),
    "hash not hex": (_attrs(candidate={"hash": "NOT-A-HASH!!"}), "its candidate cannot be read: hash"),
    "hash of another spec": (_attrs(candidate={"hash": candidate_hash({"other": 1})}), "does not match the spec"),
    "spec not a mapping": (_attrs(candidate={"spec": [1, 2]}), "its candidate cannot be read: spec"),
    "decision text too long": (_attrs(candidate={"decisions": {"w": LONG}}), "a text longer than"),
    "decision key too long": (_attrs(candidate={"decisions": {LONG: 1}}), "a text longer than"),
    "decisions nested deep": (_attrs(candidate={"decisions": {"w": _deep(25)}}), "nested more than 20 levels"),
    "candidate not a mapping": (_attrs(candidate="conv"), "its candidate cannot be read"),
    "accuracy as text": (_attrs(outcome={"accuracy": "0.5"}), "its outcome cannot be read: accuracy"),
    "accuracy NaN": (_attrs(outcome={"accuracy": math.nan}), "its outcome cannot be read: accuracy"),
    "accuracy infinite": (_attrs(outcome={"accuracy": math.inf}), "its outcome cannot be read: accuracy"),
    "accuracy above 1": (_attrs(outcome={"accuracy": 1.5}), "accuracy 1.5 is not in [0, 1]"),
    "latency infinite": (_attrs(outcome={"latency_ms": -math.inf}), "its outcome cannot be read: latency_ms"),
    "params negative": (_attrs(outcome={"params": -1}), "its outcome cannot be read: params"),
    "params a boolean": (_attrs(outcome={"params": True}), "its outcome cannot be read: params"),
    "params a float": (_attrs(outcome={"params": 100.0}), "its outcome cannot be read: params"),
    "params above int64": (_attrs(outcome={"params": 2**63}), "its outcome cannot be read: params"),
    "duplicate_of negative": (_attrs(outcome={"duplicate_of": -2}), "its outcome cannot be read: duplicate_of"),
    "unknown status": (_attrs(outcome={"status": "done"}), "its outcome cannot be read: status"),
    "error too long": (_attrs(outcome={"status": "failed", "error": LONG}), "a text longer than"),
    "complete without accuracy": (_attrs(outcome={"accuracy": None}), "it is complete but has no accuracy"),
    "outcome without candidate": (_attrs(candidate=None), "it has an outcome but no candidate"),
    "worker pid negative": (_attrs(worker={"pid": -5}), "its worker cannot be read: pid"),
    "worker host too long": (_attrs(worker={"host": LONG}), "its worker cannot be read: host"),
    "progress negative": (_attrs(progress={"done": -1}), "its progress cannot be read: done"),
    "seed key mismatch": (_attrs(seed_1=records.dump(SEED.model_copy(update={"seed": 2}))), "its seed_1 holds the result of seed 2"),
    "seed key not a number": (_attrs(seed_x=records.dump(SEED)), "its seed_x holds the result of seed 1"),
    "seed history NaN": (_attrs(seed_1={"history": [0.5, math.nan]}), "its seed_1 cannot be read: history"),
    "seed epochs negative": (_attrs(seed_1={"epochs_run": -3}), "its seed_1 cannot be read: epochs_run"),
    "seed status unknown": (_attrs(seed_1={"status": "great"}), "its seed_1 cannot be read: status"),
    "seed timing infinite": (_attrs(seed_1={"timings": {"forward": math.inf}}), "its seed_1 cannot be read: timings"),
    "seed not a mapping": (_attrs(seed_1=[1, 2]), "its seed_1 cannot be read"),
    "proxy score NaN": (_attrs(proxy={"name": "synflow", "score": math.nan}), "its proxy cannot be read: score"),
    "lineage parent negative": (_attrs(lineage={"parent": -1, "mutated": "w"}), "its lineage cannot be read: parent"),
    "lineage without parent": (_attrs(lineage={"mutated": "w"}), "its lineage cannot be read: parent"),
}


@pytest.mark.parametrize("attrs, reason", BAD_ATTRS.values(), ids=BAD_ATTRS.keys())
def test_a_bad_attribute_reads_as_unreadable(attrs, reason):
    trial = create_trial(state=TrialState.COMPLETE, value=0.75, user_attrs=attrs)
    trial.number = 9
    record = TrialRecord.of(trial)
    assert record.status == "unreadable"
    assert reason in record.error
    assert (record.number, record.state, record.counted) == (9, "COMPLETE", False)
    assert "\n" not in record.error


def test_the_valid_attributes_of_those_cases_read():
    record = TrialRecord.of(create_trial(state=TrialState.COMPLETE, value=0.75, user_attrs=_attrs()))
    assert record.status == "complete" and record.seeds == {1: SEED}


def test_the_text_bound_is_read_when_a_record_is_read(monkeypatch):
    attrs = _attrs(outcome={"status": "failed", "error": "twelve chars"})
    assert TrialRecord.of(create_trial(state=TrialState.FAIL, user_attrs=attrs)).status == "failed"
    monkeypatch.setattr(limits, "MAX_TEXT", 11)
    record = TrialRecord.of(create_trial(state=TrialState.FAIL, user_attrs=attrs))
    assert record.status == "unreadable" and "a text longer than 11 characters" in record.error


def test_a_spec_nested_past_the_recursion_limit_is_unreadable():
    spec = {"nodes": _deep(5000)}
    attrs = {"candidate": {"hash": "0" * 12, "spec": spec}, "outcome": records.dump(OUTCOME)}
    record = TrialRecord.of(create_trial(state=TrialState.COMPLETE, value=0.75, user_attrs=attrs))
    assert record.status == "unreadable"


try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # hypothesis is optional
    given = None

if given is not None:
    _json = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=16,
    )
    _number = st.none() | st.booleans() | st.integers(-5, 2**64) | st.floats() | st.text(max_size=4)
    _shaped = st.fixed_dictionaries({}, optional={
        "status": st.sampled_from(["complete", "failed", "pruned", "rejected", "cancelled", "ok", "bogus"]),
        "seed": _number, "accuracy": _number, "params": _number, "epochs_run": _number, "history": st.lists(_number, max_size=3),
        "hash": st.sampled_from([HASH, "0" * 12, "xyz"]), "spec": st.sampled_from([SPEC, {}, []]), "decisions": _json,
        "host": _json, "pid": _number, "done": _number, "name": _json, "score": _number, "parent": _number, "mutated": _json,
        "duplicate_of": _number, "error": _json, "timings": _json,
    })
    _user_attrs = st.dictionaries(
        st.sampled_from([*records.KEYS, "seed_0", "seed_1", "seed_x", "seed_", "other"]), _shaped | _json, max_size=7)

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(user_attrs=_user_attrs, state=st.sampled_from([TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED,
                                                          TrialState.RUNNING, TrialState.WAITING]),
           failed_trial=st.none() | _number)
    def test_any_json_attributes_give_a_record(user_attrs, state, failed_trial):
        system_attrs = {} if failed_trial is None else {"failed_trial": failed_trial}
        trial = create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None, user_attrs=user_attrs,
                             system_attrs=system_attrs)
        record = TrialRecord.of(trial)
        assert isinstance(record, TrialRecord)
        assert record.retry_of is None or (isinstance(record.retry_of, int) and record.retry_of == failed_trial)
        if record.status == "unreadable":
            assert record.error
        json.dumps(record.row(), allow_nan=True)


# --------------------------------------------------------------------------- retries and study attributes


def test_retry_of_is_optunas_record_of_the_failed_trial(sqlite_storage):
    study = _study("sqlite", sqlite_storage)
    records.write(study.ask(), CANDIDATE)  # trial 0: a distractor that stays running
    trial = study.ask()
    trial.suggest_int("width", 4, 16)
    records.write(trial, CANDIDATE)
    records.write(trial, SeedResult(seed=0, status="ok", accuracy=0.5, epochs_run=2))
    study.tell(trial, state=TrialState.FAIL)
    failed = study.trials[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry_callback()(study, failed)

    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1
    record = TrialRecord.of(waiting[0])
    assert (record.number, record.status, record.retry_of) == (2, "waiting", 1)
    assert record.hash == HASH and sorted(record.seeds) == [0]  # the attributes travel with the retry
    assert waiting[0].params == failed.params
    assert TrialRecord.of(failed).retry_of is None and TrialRecord.of(study.trials[0]).retry_of is None


def test_read_study_attr():
    study = _study("memory", None)
    assert records.read_study_attr(study, RunMeta, records.RUN_KEY) is None
    meta = RunMeta(space="s", space_file="f.yaml", space_fingerprint="ab", space_name="n", settings={"epochs": 2},
                   config_key="c", dataset="digits")
    study.set_user_attr(records.RUN_KEY, meta.model_dump(mode="json"))
    assert records.read_study_attr(study, RunMeta, records.RUN_KEY) == meta
    study.set_user_attr(records.RUN_KEY, {"space": 3})
    with pytest.raises(ValueError, match="the study's 'archforge' attribute cannot be read: space"):
        records.read_study_attr(study, RunMeta, records.RUN_KEY)


class NoFloat(float):
    """A real number whose conversion raises, as user code may define one."""

    def __float__(self):
        raise RuntimeError("no float for you")


class Exits(float):
    def __float__(self):
        raise SystemExit(2)


@pytest.mark.parametrize("value, expected", [(0.5, 0.5), (3, 3.0), (True, None), (None, None), (math.nan, None),
                                             (math.inf, None), (-math.inf, None), ("abc", None), ([1], None), (object(), None),
                                             (10**400, None), (-(10**400), None), (NoFloat(0.5), None), (Exits(0.5), None)])
def test_finite(value, expected):
    assert records.finite(value) == expected


# --------------------------------------------------------------------------- what a custom evaluator returns


class RaisingField:
    """An evaluator result whose ``latency_ms`` property raises."""

    accuracy = 0.5

    @property
    def latency_ms(self):
        raise RuntimeError("clock not started")


@pytest.mark.parametrize("result, error", [
    ({"accuracy": 0.5, "latency_ms": 10**400}, "the evaluator gave latency_ms about 1e400, too large for a float"),
    ({"accuracy": 10**400}, "the evaluator gave accuracy about 1e400, too large for a float"),
    ({"accuracy": NoFloat(0.5)}, "the evaluator gave accuracy 0.5, which cannot be read as a number (RuntimeError: no float for you)"),
    ({"accuracy": 0.5, "train_time_s": Exits(1.0)},
     "the evaluator gave train_time_s 1.0, which cannot be read as a number (SystemExit: 2)"),
    ({"accuracy": 0.5, "history": [0.25, -(10**400)]}, "the evaluator gave history[1] about -1e400, too large for a float"),
    ({"accuracy": 0.5, "timings": {"forward": 10**400}}, "the evaluator gave timings['forward'] about 1e400, too large for a float"),
    ({"accuracy": 0.5, "flops": NoFloat(3.0)},
     "the evaluator gave flops 3.0, which cannot be read as a number (RuntimeError: no float for you)"),
    (RaisingField(), "the evaluator's result raised RuntimeError: clock not started when its 'latency_ms' was read"),
])
def test_a_result_field_that_cannot_be_read_fails_the_seed_naming_it(result, error):
    from archforge.search.seed_results import seed_result

    seed = seed_result(0, result, [0.5], epochs=1, pruned=False, eval_s=0.0)
    assert (seed.status, seed.error) == ("failed", error)
    assert SeedResult.model_validate(records.dump(seed)) == seed  # stored, it reads back


def test_counts_too_large_for_a_float_are_no_counts_and_texts_of_numbers_still_are():
    from archforge.search.seed_results import seed_result

    given = {"accuracy": 0.5, "params": 10**400, "flops": " 12 ", "epochs": 10**400}
    seed = seed_result(0, given, [0.5], epochs=1, pruned=False, eval_s=0.0)
    assert (seed.status, seed.params, seed.flops, seed.epochs_run) == ("ok", None, 12, 1)


SPACE = """\
archforge: 1
name: hostile
input: {shape: [1, 8, 8]}
params: {width: {choice: [4, 8, 16]}}
nodes:
  - {id: stem, block: conv, args: {channels: $width}}
  - {id: head, block: classifier, args: {classes: 10}}
"""


def hostile_evaluate(spec, data, config, on_epoch=None):
    """Width 8 gives a latency no float holds and reports an epoch accuracy that cannot be converted."""
    width = spec.to_dict()["params"]["width"]
    if on_epoch is not None:
        on_epoch(1, NoFloat(0.5) if width == 8 else 0.5)
    return {"accuracy": 0.5, "epochs": 1, "params": width, "flops": width, "latency_ms": 10**400 if width == 8 else 1.0}


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
def test_a_value_no_float_holds_fails_its_trial_only_and_the_store_stays_readable(storage, tmp_path):
    from types import SimpleNamespace

    from archforge.search import parse_space, search

    data = SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")
    where = "memory" if storage == "memory" else str(tmp_path / "hostile.db")
    result = search(parse_space(SPACE), dataset=data, evaluator=hostile_evaluate, storage=where, progress=False, epochs=1,
                    runs_dir=tmp_path / "runs")
    by_width = {r.decisions["width"]: r for r in result.trials}
    assert {w: r.status for w, r in by_width.items()} == {4: "complete", 8: "failed", 16: "complete"}
    assert by_width[8].error == "the evaluator gave latency_ms about 1e400, too large for a float"
    assert by_width[8].seeds[0].history == [None]
    reread = [TrialRecord.of(t) for t in result.study.get_trials()]
    assert "unreadable" not in {r.status for r in reread}
    json.dumps([r.row() for r in reread], allow_nan=False)


def test_a_result_seed_result_cannot_read_fails_the_seed_and_an_exception_whose_text_raises_is_named(monkeypatch):
    """What the reading of a result did not foresee, and an exception whose ``__str__`` raises, fail one trial each."""
    from types import SimpleNamespace

    from archforge.search import driver, parse_space, search

    class Unprintable(Exception):
        def __str__(self):
            raise ValueError("no text")

    def unforeseen(*args, **kwargs):
        raise OverflowError("int too large to convert to float")

    def evaluate(spec, data, config, on_epoch=None):
        if spec.to_dict()["params"]["width"] == 16:
            raise Unprintable()
        return {"accuracy": 0.5}

    monkeypatch.setattr(driver, "seed_result", unforeseen)
    data = SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")
    result = search(parse_space(SPACE), dataset=data, evaluator=evaluate, storage="memory", progress=False, epochs=1)
    errors = {r.decisions["width"]: r.error for r in result.trials}
    assert errors == {4: "the evaluator's result cannot be read: OverflowError: int too large to convert to float",
                      8: "the evaluator's result cannot be read: OverflowError: int too large to convert to float", 16: "Unprintable"}


def test_the_learning_rate_is_the_outcomes_else_the_median_of_the_seeds():
    study = _study("memory", None)
    trial = study.ask()
    records.write(trial, CANDIDATE)
    for seed, lr in enumerate([0.004, 0.001, 0.002]):
        records.write(trial, SeedResult(seed=seed, status="ok", accuracy=0.5, epochs_run=1, lr=lr))
    records.write(trial, SeedResult(seed=3, status="failed", error="no rate"))
    records.write(trial, OUTCOME)  # stored without a rate (by a driver that does not aggregate it)
    study.tell(trial, 0.75)
    assert TrialRecord.of(study.trials[-1]).lr == 0.002
    trial = study.ask()
    records.write(trial, CANDIDATE)
    records.write(trial, OUTCOME.model_copy(update={"lr": 0.003}))  # a reuse: no seeds of its own
    study.tell(trial, 0.75)
    assert TrialRecord.of(study.trials[-1]).lr == 0.003
    from archforge.search.seed_results import seed_result

    assert seed_result(0, {"accuracy": 0.5, "lr": 0.01}, [0.5], epochs=1, pruned=False, eval_s=0.0).lr == 0.01
    assert seed_result(0, {"accuracy": 0.5, "lr": float("nan")}, [0.5], epochs=1, pruned=False, eval_s=0.0).lr is None


def test_a_search_with_lr_auto_stores_the_rate_found_per_seed():
    from archforge.search import parse_space, search
    from archforge.search.lr_range import BOUNDS

    result = search(parse_space(SPACE.replace("[4, 8, 16]", "[4, 8]")), dataset="digits", limit=300, storage="memory",
                    progress=False, epochs=1, seeds=2, train={"lr": "auto", "latency_repeats": 0, "batch_size": 64, "threads": 1})
    assert [r.status for r in result.trials] == ["complete", "complete"]
    for record in result.trials:
        lrs = [record.seeds[s].lr for s in (0, 1)]
        assert all(BOUNDS[0] <= lr <= BOUNDS[1] for lr in lrs)
        assert record.lr == pytest.approx(sum(lrs) / 2)  # the median of two
        assert record.seeds[0].timings["lr_range"] > 0
