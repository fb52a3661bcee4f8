"""Plugin metrics in a search (measured, stored, ranked, an objective, a constraint) and the device checked before the store.

The metrics come in as a user's would: an installed distribution with an ``archforge`` entry
point (a dist-info folder on ``sys.path``), read by the default registry.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from archforge.errors import PluginWarning, SettingError, SpecError
from archforge.registry import Metric, MetricContext, PluginInfo, default_registry, hookimpl, load_registry
from archforge.registry.extensions import BUILTIN_MEASUREMENTS
from archforge.search import parse_space, search
from archforge.search.checks import check_run
from archforge.search.evaluate import evaluate
from archforge.search.failures import TrialError
from archforge.search.metrics import measure_metrics
from archforge.search.ranking import rank
from archforge.search.records import TrialRecord
from archforge.search.seed_results import takes_metrics
from archforge.search.settings import OBJECTIVES

DIST = "archforge-test-metrics"

SPACE = """\
archforge: 1
name: metric_space
input: {shape: [1, 8, 8]}
params: {width: {choice: [4, 8]}}
nodes:
  - {id: conv, block: conv, args: {channels: $width}}
  - {id: head, block: classifier, args: {classes: 10}}
search:
  dataset: digits
  limit: 200
  epochs: 1
  train: {latency_repeats: 0}
"""

#: Thousands of parameters per width: 3×3 conv (9w), batch norm (2w), linear head (10w + 10).
KPARAMS = {4: 0.094, 8: 0.178}

KPARAMS_PLUGIN = """
import torch
import archforge
from archforge.registry import Metric

CALLS = []

def kparams(model, context):
    CALLS.append({"training": model.training, "grad": torch.is_grad_enabled(), "device": context.device,
                  "input_dims": context.input_dims, "weights_on": next(model.parameters()).device})
    return sum(p.numel() for p in model.parameters()) / 1000

@archforge.hookimpl
def archforge_metrics():
    return [Metric("kparams", kparams, goal="minimize", description="thousands of parameters")]
"""


@pytest.fixture
def install(tmp_path, monkeypatch):
    """Install a plugin distribution whose module has ``source``; the default registry then holds it."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def make(module: str, source: str, dist: str = DIST):
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[archforge]\n{module} = {module}\n")
        default_registry.cache_clear()
        assert not default_registry().problems, default_registry().problems
        return sys.modules[module]

    yield make
    default_registry.cache_clear()
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(site)):
            del sys.modules[name]


def run(tmp_path, storage="memory", **overrides):
    return search(parse_space(SPACE, "space.yaml"), storage=storage, progress=False, runs_dir=tmp_path / "runs", **overrides)


def by_width(rows):
    return {row["decisions"]["width"]: row for row in rows}


# --------------------------------------------------------------------------- the registry


def _plugin(*metrics: Metric):
    class Plugin:
        @hookimpl
        def archforge_metrics(self):
            return list(metrics)

    return Plugin()


@pytest.mark.parametrize("name", ["params", "accuracy", "latency_ms"])
def test_a_metric_named_like_a_builtin_measurement_is_refused_naming_both(name):
    with pytest.warns(PluginWarning, match=rf"^metric '{name}' from 'plugin-x' refused: '{name}' is archforge's built-in "
                                           rf"{BUILTIN_MEASUREMENTS[name]}, which every search measures itself; rename the metric$"):
        registry = load_registry([("plugin-x", _plugin(Metric(name, lambda m, c: 1.0)))], entry_points=False)
    assert name not in registry.metrics


def test_a_metric_name_a_space_cannot_write_is_refused():
    with pytest.warns(PluginWarning, match=r"returned metric 'energy mj', whose name is not a letter followed by letters"):
        registry = load_registry([("plugin-x", _plugin(Metric("energy mj", lambda m, c: 1.0), Metric("energy_mj", lambda m, c: 1.0)))],
                                 entry_points=False)
    assert list(registry.metrics) == ["energy_mj"]


def test_a_metric_two_plugins_provide_is_kept_by_the_first_with_a_warning_naming_both():
    with pytest.warns(PluginWarning, match=r"^metric 'speed' from 'plugin-b' ignored: already provided by 'plugin-a'; "
                                           r"one of the two distributions must rename it$"):
        registry = load_registry([("plugin-a", _plugin(Metric("speed", lambda m, c: 1.0))),
                                  ("plugin-b", _plugin(Metric("speed", lambda m, c: 2.0, goal="maximize")))], entry_points=False)
    assert registry.metrics["speed"][1].distribution == "plugin-a"


def test_every_builtin_objective_is_a_reserved_name():
    assert set(OBJECTIVES) <= set(BUILTIN_MEASUREMENTS)


# --------------------------------------------------------------------------- measuring


PLUGIN = PluginInfo("energy", "archforge-energy", "1.0")
CONTEXT = MetricContext(input_dims=(4,), device=torch.device("cpu"))


class NoFloat(float):
    """A real number whose conversion raises, as plugin code may define one."""

    def __float__(self):
        raise RuntimeError("no float for you")


class Unprintable:
    def __repr__(self):
        raise ValueError("no text")


@pytest.mark.parametrize("returned, words", [
    (math.nan, "returned nan, not a finite number"), (math.inf, "returned inf, not a finite number"),
    ("fast", "returned 'fast', not a number"), (None, "returned None, not a number"), (True, "returned True, not a number"),
    (torch.ones(2), "returned a tensor of shape [2], not a number"), (torch.tensor(math.nan), "returned nan, not a finite number"),
    (10**400, "returned about 1e400, too large for a float"),
    pytest.param(-(10**5000), "returned about -1e5000, too large for a float", id="beyond-the-digit-limit"),
    (NoFloat(0.5), "returned 0.5, which cannot be read as a number (RuntimeError: no float for you)"),
    (Unprintable(), "returned an object of type Unprintable, not a number"),
])
def test_a_metric_that_gives_no_finite_number_fails_the_candidate_naming_metric_and_distribution(returned, words):
    with pytest.raises(TrialError) as info:
        measure_metrics(nn.Linear(4, 2), {"energy_mj": (Metric("energy_mj", lambda m, c: returned), PLUGIN)}, CONTEXT)
    assert str(info.value) == f"metric 'energy_mj' of plugin 'energy' from 'archforge-energy' {words}; fix or uninstall 'archforge-energy'"
    assert info.value.kind == "metric"


def test_a_metric_that_raises_fails_the_candidate_and_the_model_keeps_its_mode():
    def broken(model, context):
        raise SystemExit(3)  # even a stray exit is the metric's fault, not the search's

    model = nn.Linear(4, 2).train()
    with pytest.raises(TrialError, match=r"^metric 'energy_mj' of plugin 'energy' from 'archforge-energy' raised SystemExit: 3; "):
        measure_metrics(model, {"energy_mj": (Metric("energy_mj", broken), PLUGIN)}, CONTEXT)
    assert model.training


def test_numbers_of_any_real_kind_are_values():
    import numpy as np

    values = [3, np.float32(0.5), torch.tensor(2.0), torch.tensor([7])]
    metrics = {f"m{i}": (Metric(f"m{i}", lambda m, c, v=v: v), PLUGIN) for i, v in enumerate(values)}
    assert measure_metrics(nn.Linear(4, 2), metrics, CONTEXT) == {"m0": 3.0, "m1": 0.5, "m2": 2.0, "m3": 7.0}


def test_an_evaluator_gets_the_metrics_when_it_takes_them():
    def plain(spec, data, config, on_epoch=None): ...
    def named(spec, data, config, *, on_epoch=None, metrics=None): ...
    def forwarding(spec, data, config, **kwargs): ...

    assert [takes_metrics(f) for f in (plain, named, forwarding, evaluate)] == [False, True, True, True]


# --------------------------------------------------------------------------- in a search


def test_a_metric_is_measured_on_each_trained_model_and_shown_with_the_ranking(install, tmp_path):
    plugin = install("af_metrics_kparams", KPARAMS_PLUGIN)
    result = run(tmp_path)
    rows = by_width(result.table)
    assert {w: row["metrics"] for w, row in rows.items()} == {w: {"kparams": pytest.approx(v)} for w, v in KPARAMS.items()}
    assert {row.decisions["width"]: row.metrics["kparams"] for row in result.ranking.rows} == pytest.approx(KPARAMS)
    # once per trained model, after training: eval mode, no gradients, the trial's device and the data's sample shape
    assert plugin.CALLS == [{"training": False, "grad": False, "device": torch.device("cpu"), "input_dims": (1, 8, 8),
                             "weights_on": torch.device("cpu")}] * 2

    files = result.report(tmp_path / "report")
    with open(files["csv"]) as f:
        stored = {int(r["decision.width"]): float(r["metric.kparams"]) for r in csv.DictReader(f)}
    assert stored == pytest.approx(KPARAMS)
    data = json.loads(files["json"].read_text())
    assert data["metrics"] == {"kparams": {"goal": "minimize", "plugin": "af_metrics_kparams", "distribution": DIST, "version": "1.0",
                                           "description": "thousands of parameters"}}
    assert {r["decisions"]["width"]: r["metrics"]["kparams"] for r in data["ranking"]} == pytest.approx(KPARAMS)


def test_a_metric_as_the_second_objective_takes_its_direction_from_its_goal(install, tmp_path):
    install("af_metrics_objective", KPARAMS_PLUGIN)
    result = run(tmp_path, objectives=["accuracy", "kparams"])
    assert [d.name for d in result.study.directions] == ["MAXIMIZE", "MINIMIZE"]
    rows = by_width(result.table)
    for trial in result.study.trials:
        width = trial.params["width"]
        assert trial.values == [pytest.approx(rows[width]["accuracy"]), pytest.approx(KPARAMS[width])]
    assert rows[4]["pareto"]  # the fewest parameters: no candidate beats it on both


def test_a_metric_constraint_rejects_the_trained_candidate_above_its_bound(install, tmp_path):
    install("af_metrics_bound", KPARAMS_PLUGIN)
    result = run(tmp_path, constraints={"metrics": {"kparams": {"max": 0.1}}})
    assert [row["decisions"]["width"] for row in result.table] == [4]
    rejected = result.run.rejected
    assert [r.decisions["width"] for r in rejected] == [8]
    assert rejected[0].error == "kparams 0.178 > max 0.1 (constraints.metrics, checked after training)"
    assert rejected[0].epochs_run == 1 and rejected[0].counted  # it was trained: it counts in the budget
    assert (result.compute["evaluated"], result.compute["rejected_trained"], result.compute["rejected"]) == (2, 1, 0)


def test_a_metric_that_raises_fails_its_candidate_and_the_search_goes_on(install, tmp_path):
    install("af_metrics_fragile", """
        import archforge
        from archforge.registry import Metric

        def fragile(model, context):
            if sum(p.numel() for p in model.parameters()) > 100:
                raise ZeroDivisionError("no energy model for this size")
            return 1.0

        @archforge.hookimpl
        def archforge_metrics():
            return [Metric("fragile", fragile)]
    """)
    result = run(tmp_path)
    rows = by_width(result.table)
    assert rows[4]["status"] == "complete" and rows[4]["metrics"] == {"fragile": 1.0}
    assert rows[8]["status"] == "failed"
    assert rows[8]["error"] == (f"metric 'fragile' of plugin 'af_metrics_fragile' from '{DIST}' raised ZeroDivisionError: "
                                f"no energy model for this size; fix or uninstall '{DIST}'")


def test_a_metric_value_no_float_holds_fails_its_candidate_and_the_search_goes_on(install, tmp_path):
    install("af_metrics_huge", """
        import archforge
        from archforge.registry import Metric

        def huge(model, context):
            return 10**400 if sum(p.numel() for p in model.parameters()) > 100 else 1

        @archforge.hookimpl
        def archforge_metrics():
            return [Metric("huge", huge)]
    """)
    result = run(tmp_path)
    rows = by_width(result.table)
    assert rows[4]["status"] == "complete" and rows[4]["metrics"] == {"huge": 1.0}
    assert rows[8]["status"] == "failed"
    assert rows[8]["error"] == (f"metric 'huge' of plugin 'af_metrics_huge' from '{DIST}' returned about 1e400, too large for a float; "
                                f"fix or uninstall '{DIST}'")


def test_a_metric_ranks_in_the_direction_of_its_goal():
    def record(number: int, value: float) -> TrialRecord:
        return TrialRecord(number=number, state="COMPLETE", status="complete", hash=f"{number:012x}", accuracy=0.5,
                           metrics={"throughput": value})

    records = [record(0, 10.0), record(1, 30.0), record(2, 20.0)]
    assert [r.trial for r in rank(records, ["throughput"], goals={"throughput": "maximize"}).rows] == [1, 2, 0]
    assert [r.trial for r in rank(records, ["throughput"], goals={"throughput": "minimize"}).rows] == [0, 2, 1]


def fake_evaluate(spec, data, config, on_epoch=None, metrics=None):
    """No training: the metric is the width, in thousands."""
    width = spec.to_dict()["params"]["width"]
    on_epoch(1, 0.5)
    return SimpleNamespace(accuracy=0.5 + width / 100, epochs=1, history=[0.5], params=width, flops=width,
                           metrics={name: width / 1000 for name in metrics or {}})


def blind_evaluate(spec, data, config, on_epoch=None):
    on_epoch(1, 0.5)
    return SimpleNamespace(accuracy=0.5, epochs=1, history=[0.5], params=1, flops=1)


FAKE = SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")


def test_a_reused_result_carries_its_metric_values(install):
    install("af_metrics_reuse", KPARAMS_PLUGIN)
    for seed in range(10):  # a random strategy over two candidates soon asks for one twice
        result = search(parse_space(SPACE), dataset=FAKE, evaluator=fake_evaluate, storage="memory", progress=False,
                        strategy="random", budget=2, seed=seed)
        reused = [r for r in result.trials if r.duplicate_of is not None]
        if reused:
            break
    assert reused, "the random strategy never asked for a candidate twice"
    assert {w: r["metrics"] for w, r in by_width(result.table).items()} == {4: {"kparams": 0.004}, 8: {"kparams": 0.008}}
    assert all(r.metrics == {"kparams": r.decisions["width"] / 1000} and r.epochs_run == 0 for r in reused)


def huge_metric_evaluate(spec, data, config, on_epoch=None, metrics=None):
    """A custom evaluator that gives a metric value no float holds for width 8."""
    width = spec.to_dict()["params"]["width"]
    return {"accuracy": 0.5, "epochs": 1, "params": width, "flops": width,
            "metrics": {name: 10**400 if width == 8 else width for name in metrics or {}}}


def test_an_evaluator_giving_a_metric_value_no_float_holds_fails_that_trial_only(install):
    install("af_metrics_given", KPARAMS_PLUGIN)
    result = search(parse_space(SPACE), dataset=FAKE, evaluator=huge_metric_evaluate, storage="memory", progress=False)
    rows = by_width(result.table)
    assert (rows[4]["status"], rows[4]["metrics"]) == ("complete", {"kparams": 4.0})
    assert rows[8]["status"] == "failed"
    assert rows[8]["error"] == (f"the evaluator gave metric 'kparams' of plugin 'af_metrics_given' from '{DIST}' = about 1e400, "
                                "too large for a float")


def test_an_evaluator_that_cannot_measure_a_metric_objective_fails_its_trials_saying_why(install, tmp_path):
    install("af_metrics_blind", KPARAMS_PLUGIN)
    result = search(parse_space(SPACE), dataset=FAKE, evaluator=blind_evaluate, storage="memory", progress=False,
                    objectives=["kparams"])
    assert {row["status"] for row in result.table} == {"failed"}
    assert result.table[0]["error"] == (f"the evaluator gave no value of metric 'kparams' of plugin 'af_metrics_blind' from '{DIST}' "
                                        "for objective 'kparams': an evaluator measures plugin metrics when it takes a 'metrics' "
                                        "argument, as archforge's own does")


# --------------------------------------------------------------------------- names checked before the store


def space_with(section: str):
    return parse_space(SPACE.replace("search:\n", f"search:\n{section}\n"), "space.yaml")


def test_an_unknown_objective_is_located_with_a_suggestion_among_installed_metrics(install):
    install("af_metrics_names", KPARAMS_PLUGIN)
    space = space_with("  objectives: [accuracy, kparam]")
    with pytest.raises(SpecError) as info:
        check_run(space, space.settings)
    assert (info.value.location.line, info.value.location.column) == (9, 26)
    assert info.value.message == ("unknown objective 'kparam' (did you mean 'kparams'?): use a built-in objective (accuracy, params, "
                                  "flops, latency_ms, peak_memory_mb, train_time_s) or a plugin metric (installed metrics: kparams)")


def test_an_unknown_objective_without_plugins_suggests_a_builtin_one():
    space = space_with("  objectives: [accuracy, acuracy]")
    with pytest.raises(SpecError, match=r"unknown objective 'acuracy' \(did you mean 'accuracy'\?\): .*\(no plugin metric is installed\)"):
        check_run(space, space.settings)


def test_an_unknown_metric_in_an_override_is_a_setting_error_and_nothing_is_stored(install, tmp_path):
    install("af_metrics_override", KPARAMS_PLUGIN)
    with pytest.raises(SettingError, match=r"^constraints: unknown metric 'kparam' in constraints.metrics \(did you mean 'kparams'\?\)"):
        run(tmp_path, storage=None, constraints={"metrics": {"kparam": {"max": 1}}})
    with pytest.raises(SettingError, match=r"^objectives: unknown objective 'energy'"):
        run(tmp_path, storage=None, objectives=["energy"])
    assert not (tmp_path / "runs").exists()


def test_an_unknown_metric_constraint_in_the_file_is_located_at_its_key():
    space = space_with("  constraints:\n    max_params: 1000\n    metrics: {energy: {max: 5}}")
    with pytest.raises(SpecError) as info:
        check_run(space, space.settings)
    assert info.value.message.startswith("unknown metric 'energy' in constraints.metrics: ")
    assert (info.value.location.line, info.value.location.column) == (11, 15)


@pytest.mark.parametrize("section, message", [
    ("  constraints: {metrics: {params: {max: 5}}}", "params is counted before training: bound it with max_params or min_params"),
    ("  constraints: {metrics: {energy: {}}}", "give 'max', 'min' or both"),
    ("  constraints: {metrics: {energy: {min: 3, max: 2}}}", "min 3 is above max 2: no candidate could pass"),
    ("  constraints: {metrics: {energy: {maximum: 2}}}", "unknown key 'maximum'"),
])
def test_metric_bounds_are_checked_with_the_space(section, message):
    with pytest.raises(SpecError, match=message) as info:
        space_with(section)
    assert info.value.location.line == 9


# --------------------------------------------------------------------------- the device


def test_a_device_this_machine_lacks_is_refused_before_anything_is_stored(tmp_path):
    with pytest.raises(SettingError, match=r"^train.device: device 'cuda:99' is not available: ") as info:
        run(tmp_path, storage=None, train={"device": "cuda:99"})
    assert "\n" not in str(info.value)
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch has CUDA")
def test_cuda_on_a_torch_without_cuda_fails_fast_with_one_line(tmp_path):
    space = parse_space(SPACE)
    with pytest.raises(SettingError) as info:
        check_run(space, space.settings.merged(train={"device": "cuda"}))
    assert str(info.value).startswith("train.device: device 'cuda' is not available: ")
    assert "conv" not in str(info.value)


def test_a_device_written_in_the_space_is_located():
    space = parse_space(SPACE.replace("{latency_repeats: 0}", "{latency_repeats: 0, device: 'cuda:99'}"), "space.yaml")
    with pytest.raises(SpecError) as info:
        check_run(space, space.settings)
    assert info.value.message.startswith("search.train.device: device 'cuda:99' is not available: ")
    assert (info.value.location.line, info.value.location.column) == (12, 39)


def test_the_cli_refuses_the_device_in_one_line(tmp_path, capsys):
    from archforge.cli import main

    (tmp_path / "space.yaml").write_text(SPACE)
    status = main(["search", str(tmp_path / "space.yaml"), "--device", "cuda:99", "--runs", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert status == 1 and "\n" not in err and "device 'cuda:99' is not available" in err, err
    assert not (tmp_path / "runs").exists()


def test_evaluate_refuses_the_device_instead_of_blaming_a_block():
    from archforge.search.training import TrainConfig

    space = parse_space(SPACE)
    with pytest.raises(SettingError, match=r"^device 'cuda:99' is not available"):
        evaluate(space.concretize({"width": 4}).spec, FAKE, TrainConfig(device="cuda:99"))


# --------------------------------------------------------------------------- blame


def test_a_failure_in_a_parameter_nodes_apply_blames_its_block_and_node():
    """A ParameterNode's ``apply`` is a staticmethod called from the generated forward: its own tensor names the node."""
    from archforge import build, parse_spec
    from archforge.search.failures import failing_node

    model = build(parse_spec("""\
archforge: 1
name: blame
input: {shape: [3, 8, 8]}
nodes:
  - {id: conv1, block: conv, args: {channels: 8, kernel: 4, stride: 4, norm: none, act: none}}
  - {id: tokens, block: to_tokens}
  - {id: pos_embed, block: learned_pos_embed}
""", "blame.yaml"))
    with pytest.raises(RuntimeError) as info:
        model(torch.randn(1, 3, 12, 12))  # 9 tokens where the embedding has 4: the addition in apply fails
    node = failing_node(info.value, model, model.meta["archforge_graph"])
    assert (node.block, node.path) == ("learned_pos_embed", "pos_embed")
