"""The search section: strict located errors, bounds from archforge.search.limits, and how overrides merge."""

from __future__ import annotations

import math

import optuna
import pytest

from archforge.errors import SettingError, SpecError
from archforge.search import limits
from archforge.search.settings import STRATEGIES, PrunerSettings, SearchSettings, settings_from_dict
from archforge.search.training import AugmentSettings, TrainConfig
from archforge.spec.located_yaml import load_located


def _read(text: str) -> SearchSettings:
    doc = load_located(text, "space.yaml")
    return settings_from_dict(doc.data["search"], doc)


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        _read(text)
    return info.value


# --------------------------------------------------------------------------- located errors


def test_unknown_key_is_located_with_a_suggestion():
    error = _error("search:\n  dataset: digits\n  epochz: 3\n")
    assert "unknown key 'epochz' in 'search' (did you mean 'epochs'?)" in error.message
    assert (error.location.file, error.location.line, error.location.column) == ("space.yaml", 3, 3)


def test_unknown_nested_key_is_located_with_a_suggestion():
    error = _error("search:\n  train:\n    lr: 0.01\n    batchsize: 3\n")
    assert "unknown key 'batchsize' in 'search.train' (did you mean 'batch_size'?)" in error.message
    assert (error.location.line, error.location.column) == (4, 5)


@pytest.mark.parametrize("key, told", [("epochs", "epochs"), ("seed", "seeds")])
def test_train_epochs_and_seed_are_refused_where_written(key, told):
    error = _error(f"search:\n  epochs: 3\n  train:\n    lr: 0.01\n    {key}: 4\n")
    assert f"set '{told}' in the search section itself, not under train" in error.message
    assert (error.location.line, error.location.column) == (5, 5)


@pytest.mark.parametrize("text, where, line, column", [
    ("search:\n  epochs: true\n", "search.epochs: input should be a valid integer", 2, 11),
    ("search:\n  seeds: 2.0\n", "search.seeds: input should be a valid integer", 2, 10),
    ("search:\n  val_fraction: '0.4'\n", "search.val_fraction: input should be a valid number", 2, 17),
    ("search:\n  train:\n    lr: '4'\n", "search.train.lr: input should be a valid number", 3, 9),
    ("search:\n  train:\n    amp: 1\n", "search.train.amp: input should be a valid boolean", 3, 10),
    ("search:\n  constraints: {max_params: '1e6x'}\n", "search.constraints.max_params: input should be a valid number", 2, 29),
    ("search:\n  workers: 0\n", "search.workers: input should be greater than 0", 2, 12),
])
def test_strict_types_are_located_at_the_value(text, where, line, column):
    error = _error(text)
    assert where in error.message
    assert (error.location.line, error.location.column) == (line, column)


@pytest.mark.parametrize("data, where", [
    ({"val_fraction": math.nan}, "search.val_fraction: input should be a finite number"),
    ({"train": {"lr": math.inf}}, "search.train.lr: input should be a finite number"),
    ({"constraints": {"max_flops": -math.inf}}, "search.constraints.max_flops: input should be a finite number"),
])
def test_nan_and_infinity_are_no_setting(data, where):
    with pytest.raises(SpecError, match=where.replace(".", r"\.")):
        settings_from_dict(data)


def test_an_exponent_without_a_dot_is_a_number():
    settings = _read("search:\n  train: {lr: 1e-3, weight_decay: 2E-2}\n  constraints: {max_params: 2e5}\n")
    assert (settings.train.lr, settings.train.weight_decay, settings.constraints.max_params) == (0.001, 0.02, 200000.0)


def test_an_empty_section_is_the_defaults():
    assert settings_from_dict(None) == SearchSettings() == settings_from_dict({})
    with pytest.raises(SpecError, match="'search' must be a mapping of settings, got list"):
        settings_from_dict([1])


@pytest.mark.parametrize("text, message", [
    ("objectives: [accuracy, params, accuracy]", "an objective is listed twice"),
    ("objectives: ['acu racy']", "unknown objective 'acu racy' (did you mean 'accuracy'?): use a built-in objective"),  # not even a metric's name
    ("strategy: randm", "unknown strategy 'randm' (did you mean 'random'?)"),
    ("pruner: {kind: median, min_resource: 3}", "pruner min_resource 3 leaves no epoch to decide on"),
    ("{pruner: sh, objectives: [accuracy, params]}", "pruning (multi-fidelity) works with one objective"),
    ("constraints: {min_params: 10, max_params: 5}", "min_params 10 is above max_params 5"),
    ("storage: /etc/study.db", "would write outside the working folder"),
    ("storage: ../study.db", "would write outside the working folder"),
    ("storage: '~/study.db'", "would write outside the working folder"),
    ("storage: sqlite:////tmp/study.db", "would write outside the working folder"),
    ("name: '..'", "would name a folder outside the runs folder"),
])
def test_section_rules(text, message):
    body = text if text.startswith("{") else "{" + text + "}"
    assert message in _error(f"search: {body}\n").message


@pytest.mark.parametrize("storage", ["runs/shared.db", "memory", "postgresql://user@host/db", "sqlite:///runs/x.db"])
def test_a_space_file_may_name_a_relative_store_or_a_server(storage):
    assert settings_from_dict({"storage": storage}).storage == storage


def test_objectives_as_a_comma_list():
    settings = settings_from_dict({"objectives": "accuracy, params"})
    assert settings.objectives == ["accuracy", "params"] and settings.directions == ["maximize", "minimize"]


# --------------------------------------------------------------------------- bounds


def _nested(path: str, value: int) -> dict:
    data: dict = {}
    where = data
    *parents, last = path.split(".")
    for part in parents:
        where[part] = {} if part != "proxy" else {"score": "synflow"}
        where = where[part]
    where[last] = value
    return data


BOUNDED = [("MAX_WORKERS", "workers"), ("MAX_EPOCHS", "epochs"), ("MAX_SEEDS", "seeds"), ("MAX_BUDGET", "budget"),
           ("MAX_BATCH", "train.batch_size"), ("MAX_BATCH", "train.latency_batch"), ("MAX_THREADS", "train.threads"),
           ("MAX_LATENCY_REPEATS", "train.latency_repeats"), ("MAX_PROXY_SAMPLE", "proxy.sample"),
           ("MAX_CROP_PADDING", "train.augment.crop_padding")]


@pytest.mark.parametrize("bound, path", BOUNDED)
def test_bounds_come_from_limits_when_checked(monkeypatch, bound, path):
    monkeypatch.setattr(limits, bound, 4)
    assert settings_from_dict(_nested(path, 4)) is not None
    with pytest.raises(SpecError) as info:
        settings_from_dict(_nested(path, 5))
    assert f"search.{path}: at most 4" in info.value.message
    assert f"limits.{bound} = 4 (from archforge.search import limits)" in info.value.message


def test_merged_overrides_meet_the_same_bounds(monkeypatch):
    monkeypatch.setattr(limits, "MAX_EPOCHS", 7)
    assert SearchSettings().merged(epochs=7).epochs == 7
    with pytest.raises(SettingError, match=r"epochs: at most 7 .*limits\.MAX_EPOCHS = 7 \(from archforge\.search import limits\)"):
        SearchSettings().merged(epochs=8)
    monkeypatch.setattr(limits, "MAX_BATCH", 16)
    with pytest.raises(SettingError, match=r"train\.batch_size: .*limits\.MAX_BATCH = 16"):
        SearchSettings().merged(train={"batch_size": 17})


def test_default_bounds_hold():
    assert settings_from_dict({"workers": limits.MAX_WORKERS}).workers == limits.MAX_WORKERS
    with pytest.raises(SpecError, match="MAX_WORKERS"):
        settings_from_dict({"workers": limits.MAX_WORKERS + 1})


# --------------------------------------------------------------------------- merged


BASE = SearchSettings(epochs=3, train={"batch_size": 64, "lr": 0.01}, constraints={"max_flops": 5e6}, strategy="random")


def test_none_keeps_every_setting():
    assert BASE.merged(epochs=None, train=None, strategy=None, constraints=None, pruner=None) == BASE


def test_nested_train_mapping_keeps_the_other_train_fields():
    merged = BASE.merged(train={"lr": 1e-3})
    assert (merged.train.lr, merged.train.batch_size, merged.epochs) == (1e-3, 64, 3)
    assert merged.train.model_dump(exclude={"lr"}) == BASE.train.model_dump(exclude={"lr"})
    assert BASE.train.lr == 0.01  # the original is untouched


def test_constraints_mapping_merges():
    merged = BASE.merged(constraints={"max_params": 100})
    assert (merged.constraints.max_params, merged.constraints.max_flops) == (100, 5e6)


def test_a_train_config_object_replaces_the_train_section():
    merged = BASE.merged(train=TrainConfig(lr=0.5))
    assert merged.train == TrainConfig(lr=0.5)
    assert merged.train.batch_size == TrainConfig().batch_size != 64


def test_a_train_config_with_epochs_is_refused():
    with pytest.raises(SettingError, match="train: set 'epochs' in the search section itself"):
        BASE.merged(train=TrainConfig(epochs=4))


def test_unknown_override_is_a_setting_error_with_a_suggestion():
    with pytest.raises(SettingError, match=r"unknown search setting 'epoch' \(did you mean 'epochs'\?\)"):
        BASE.merged(epoch=3)


@pytest.mark.parametrize("overrides, where", [
    ({"epochs": True}, "epochs: "), ({"epochs": 0}, "epochs: "), ({"train": {"lr": -1.0}}, "train.lr: "),
    ({"train": {"batchsize": 3}}, "train.batchsize: "), ({"val_fraction": "0.3"}, "val_fraction: "),
    ({"seed": 2**32}, "seed: "), ({"objectives": ["speed?"]}, "objectives: unknown objective 'speed?'"),
    ({"pruner": "bogus"}, "pruner: unknown pruner 'bogus'"), ({"strategy": 3}, "strategy: strategy must be one of"),
    ({"executor": "slurm"}, "executor: "), ({"constraints": {"max_params": math.nan}}, "constraints.max_params: "),
])
def test_a_bad_override_names_the_field(overrides, where):
    with pytest.raises(SettingError) as info:
        BASE.merged(**overrides)
    assert str(info.value).startswith(where)
    assert "\n" not in str(info.value)


def test_optuna_sampler_and_pruner_objects_are_accepted_and_dumped_by_class_name():
    sampler, pruner = optuna.samplers.RandomSampler(seed=1), optuna.pruners.MedianPruner()
    merged = BASE.merged(strategy=sampler, pruner=pruner)
    assert merged.strategy is sampler and merged.pruner is pruner
    dumped = merged.model_dump(mode="json")
    assert dumped["strategy"] == f"{type(sampler).__module__}.{type(sampler).__qualname__}"
    assert dumped["pruner"] == f"{type(pruner).__module__}.{type(pruner).__qualname__}"
    assert dumped["strategy"].endswith("RandomSampler") and dumped["pruner"].endswith("MedianPruner")


def test_merging_again_keeps_a_sampler_object():
    sampler = optuna.samplers.RandomSampler(seed=1)
    assert BASE.merged(strategy=sampler).merged(epochs=4).strategy is sampler


@pytest.mark.parametrize("shorthand, kind", [("sh", "successive_halving"), ("successive_halving", "successive_halving"),
                                             ("hyperband", "hyperband"), ("median", "median"), ("none", None), ("off", None)])
def test_pruner_shorthand(shorthand, kind):
    pruner = BASE.merged(pruner=shorthand).pruner
    assert pruner == (PrunerSettings(kind=kind) if kind else None)
    assert settings_from_dict({"pruner": shorthand}).pruner == pruner


def test_pruner_mapping_updates_the_pruner_it_names():
    merged = BASE.merged(pruner="hyperband").merged(pruner={"min_resource": 2})
    assert merged.pruner == PrunerSettings(kind="hyperband", min_resource=2)
    with pytest.raises(SettingError, match="pruner min_resource 4 leaves no epoch to decide on"):
        BASE.merged(pruner={"kind": "median", "min_resource": 4})


def test_proxy_shorthand():
    assert BASE.merged(proxy="naswot").proxy.score == "naswot"
    assert BASE.merged(proxy="naswot").merged(proxy="off").proxy is None


@pytest.mark.parametrize("settings, budget", [
    (dict(strategy="grid"), None), (dict(strategy="grid", budget=5), 5), (dict(strategy="random"), 20),
    (dict(strategy="tpe"), 20), (dict(strategy="evolution"), 20), (dict(strategy="random", budget=3), 3),
    (dict(strategy="random", proxy="synflow"), None), (dict(strategy="random", proxy="synflow", budget=7), 7),
])
def test_trial_budget(settings, budget):
    assert SearchSettings().merged(**settings).trial_budget == budget


def test_an_optuna_sampler_gets_the_default_budget():
    assert SearchSettings().merged(strategy=optuna.samplers.RandomSampler()).trial_budget == 20


def test_trial_config_sets_epochs_and_seed():
    config = BASE.trial_config(seed=5)
    assert (config.epochs, config.seed, config.lr, config.batch_size) == (3, 5, 0.01, 64)
    assert config.model_dump(exclude={"epochs", "seed"}) == BASE.train.model_dump(exclude={"epochs", "seed"})
    assert BASE.train.seed == 0 and BASE.train.epochs == TrainConfig().epochs  # the section's own copy is untouched


def test_augment_mapping():
    settings = settings_from_dict({"train": {"augment": {"crop_padding": 3}}})
    assert settings.train.augment == AugmentSettings(crop_padding=3, hflip=False)
    with pytest.raises(SpecError, match=r"unknown key 'hfilp' in 'search\.train\.augment' \(did you mean 'hflip'\?\)"):
        settings_from_dict({"train": {"augment": {"hfilp": True}}})


ROUND_TRIP = [
    *[dict(strategy=s) for s in STRATEGIES],
    dict(strategy="random", pruner="sh", budget=9, epochs=4, seeds=3, train={"lr": 0.05, "augment": {"crop_padding": 1}}),
    dict(strategy="nsga2", objectives=["accuracy", "params"], proxy="synflow", constraints={"max_params": 1e5}),
    dict(strategy="evolution", evolution={"population": 4, "sample": 2}, name="run.1", storage="runs/s.db", limit=500),
]


@pytest.mark.parametrize("overrides", ROUND_TRIP)
def test_json_dump_validates_back_to_the_same_settings(overrides):
    settings = SearchSettings().merged(**overrides)
    assert SearchSettings.model_validate(settings.model_dump(mode="json")) == settings
