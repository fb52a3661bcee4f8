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
