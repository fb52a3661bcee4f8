"""The objective's rules seen end to end: a trial that ran every epoch is complete, Optuna objects are accepted as settings."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest

from archforge.search import parse_space, search

DATA = SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")
SPACE = """\
archforge: 1
name: objective
input: {shape: [1, 8, 8]}
params: {width: {choice: [4, 8, 16]}}
nodes:
  - {id: stem, block: conv, args: {channels: $width}}
  - {id: head, block: classifier, args: {classes: 10}}
"""


class AlwaysPrune(optuna.pruners.BasePruner):
    """A pruner that asks to stop every trial at every report."""

    def prune(self, study, trial) -> bool:
        return True


def stops_when_told(spec, data, config, on_epoch=None):
    history = []
    for epoch in range(1, config.epochs + 1):
        history.append(0.5 + 0.01 * spec.to_dict()["params"]["width"])
        if on_epoch is not None and on_epoch(epoch, history[-1]):
            break
    return {"accuracy": history[-1], "epochs": len(history), "history": history, "params": 1, "flops": 1}


@pytest.mark.parametrize("epochs, status, epochs_run", [(1, "complete", 1), (3, "pruned", 1)])
def test_a_trial_that_ran_every_epoch_is_complete_whatever_the_pruner_says(epochs, status, epochs_run):
    """A pruner is asked after each epoch but the last: a trial that ran them all is complete and ranked."""
    result = search(parse_space(SPACE), dataset=DATA, evaluator=stops_when_told, storage="memory", progress=False,
                    epochs=epochs, pruner=AlwaysPrune())
    assert [(r.status, r.epochs_run) for r in result.trials] == [(status, epochs_run)] * 3
    ranked = [row for row in result.table if row["rank"] is not None]
    assert len(ranked) == (3 if status == "complete" else 0)


def test_an_optuna_sampler_object_is_a_strategy():
    """A sampler object is used as given: TPE with a seed visits the 3 candidates and the run records its class."""
    sampler = optuna.samplers.TPESampler(seed=3)
    result = search(parse_space(SPACE), dataset=DATA, evaluator=stops_when_told, storage="memory", progress=False,
                    epochs=1, strategy=sampler, budget=3)
    assert sorted(r.decisions["width"] for r in result.trials if r.counted) == [4, 8, 16]
    assert result.run.meta.settings["strategy"] == "optuna.samplers._tpe.sampler.TPESampler"


def test_a_multi_objective_search_reports_no_intermediate_values():
    """Optuna cannot take intermediate values of a multi-objective trial: with no pruner nothing is reported."""
    result = search(parse_space(SPACE), dataset=DATA, evaluator=stops_when_told, storage="memory", progress=False,
                    epochs=3, strategy="nsga2", objectives="accuracy,params", budget=3)
    assert [r.status for r in result.trials if r.counted] == ["complete"] * 3
    assert all(r.values == [r.accuracy, 1] for r in result.trials if r.counted)


def test_a_percentile_pruner_answering_with_a_numpy_bool_works():
    result = search(parse_space(SPACE), dataset=DATA, evaluator=stops_when_told, storage="memory", progress=False,
                    epochs=3, pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    assert {r.status for r in result.trials} <= {"complete", "pruned"} and len(result.trials) == 3


def test_a_search_whose_checks_fail_leaves_nothing_behind(tmp_path):
    from archforge.errors import SearchError

    with pytest.raises(SearchError, match="cannot load dataset 'nosuch'"):
        search(parse_space(SPACE), dataset="nosuch", runs_dir=tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()


def test_a_store_named_by_the_caller_does_not_overwrite_a_space_yaml_beside_it(tmp_path):
    mine = tmp_path / "space.yaml"
    mine.write_text("my own notes\n")
    search(parse_space(SPACE), dataset=DATA, evaluator=stops_when_told, storage=tmp_path / "s.db", progress=False, epochs=1)
    assert mine.read_text() == "my own notes\n"
    search(parse_space(SPACE), dataset=DATA, evaluator=stops_when_told, runs_dir=tmp_path / "runs", progress=False, epochs=1)
    assert (tmp_path / "runs" / "objective" / "space.yaml").read_text() == SPACE  # the run folder archforge made
