"""strategy: oneshot: its settings, the supernet's training and ranking, and the phase inside a search (stored once,
resumed, queued); counts and accuracies recomputed by hand from the data and the stand-alone networks."""

from __future__ import annotations

import math
import time

import pytest
import torch

import archforge
from archforge.data.split import DataSplit
from archforge.errors import SearchError, SettingError, SpecError
from archforge.search import candidate_hash, parse_space, records
from archforge.search.failures import TrialError
from archforge.search.records import ONESHOT_KEY, OneShotPhase
from archforge.search.settings import SearchSettings, settings_from_dict
from archforge.search.supernet_training import PROBE_PATHS, train_supernet
from archforge.search.training import TrainConfig
from archforge.spec.located_yaml import load_located

# Four candidates: a width and a kernel decision (2 x 2, so fair sampling trains 2 paths per step).
SPACE = """\
archforge: 1
name: tinyshot
input: {shape: [1, 8, 8]}
params: {width: {choice: [4, 8]}, kernel: {choice: [1, 3]}}
nodes:
  - {id: a, block: conv, args: {channels: $width, kernel: $kernel}}
  - {id: head, block: classifier, args: {classes: 2}}
"""

N_TRAIN, N_VAL, BATCH = 64, 32, 16
TRAIN = {"batch_size": BATCH, "augment": False, "threads": 1, "latency_repeats": 0}


def tiny_data(seed: int = 0) -> DataSplit:
    """Random 1x8x8 images; the class says whether the upper half is brighter than the lower (learnable)."""
    g = torch.Generator().manual_seed(seed)

    def part(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, 1, 8, 8, generator=g)
        return x, (x[:, 0, :4].mean(dim=(1, 2)) > x[:, 0, 4:].mean(dim=(1, 2))).long()

    (tx, ty), (vx, vy) = part(N_TRAIN), part(N_VAL)
    return DataSplit("tiny", tx, ty, vx, vy, ["lower", "upper"], (0.0,), (1.0,))


def accuracy_of(model: torch.nn.Module, data: DataSplit) -> float:
    model.eval()
    with torch.no_grad():
        return int((model(data.val_x).argmax(dim=1) == data.val_y).sum()) / len(data.val_y)


# --------------------------------------------------------------------------- settings


def read(text: str) -> SearchSettings:
    doc = load_located(text, "space.yaml")
    return settings_from_dict(doc.data["search"], doc)


def error_of(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        read(text)
    return info.value


@pytest.mark.parametrize("body, overrides, message", [
    ("{strategy: oneshot, budget: 5}", {"budget": 5}, "set oneshot.retrain_top (--retrain-top K), not budget"),
    ("{strategy: oneshot, proxy: {score: synflow}}", {"proxy": {"score": "synflow"}},
     "strategy oneshot and a proxy both choose what to train"),
    ("{strategy: oneshot, objectives: [params, flops]}", {"objectives": ["params", "flops"]},
     "keep accuracy among the objectives"),
])
def test_oneshot_refuses_budget_proxy_and_objectives_without_accuracy(body, overrides, message):
    assert message in error_of(f"search: {body}\n").message
    with pytest.raises(SettingError) as info:  # the same rules for overrides (archforge.search(..., strategy="oneshot"))
        SearchSettings().merged(strategy="oneshot", **overrides)
    assert message in str(info.value) and "\n" not in str(info.value)
    SearchSettings().merged(strategy="random", **overrides)  # other strategies take them


def test_oneshot_defaults_and_trial_budget_is_retrain_top():
    settings = read("search: {strategy: oneshot}\n")
    assert settings.oneshot.sampling == "fair" and settings.oneshot.epochs is None
    assert (settings.oneshot.paths, settings.oneshot.calibration_batches, settings.oneshot.retrain_top) == (256, 5, 0)
    assert settings.trial_budget == 0
    assert read("search: {strategy: oneshot, oneshot: {retrain_top: 3}}\n").trial_budget == 3
    assert read("search: {strategy: oneshot, objectives: [accuracy, params]}\n").trial_budget == 0
    # The oneshot section of another strategy is inert.
    assert read("search: {strategy: random, oneshot: {retrain_top: 3}}\n").trial_budget == 20
    assert SearchSettings().merged(strategy="oneshot", oneshot={"retrain_top": 2}).trial_budget == 2


def test_an_unknown_oneshot_key_is_located_with_a_suggestion():
    error = error_of("search:\n  strategy: oneshot\n  oneshot:\n    epochs: 2\n    samplng: fair\n")
    assert "unknown key 'samplng' in 'search.oneshot' (did you mean 'sampling'?)" in error.message
    assert (error.location.file, error.location.line, error.location.column) == ("space.yaml", 5, 5)


@pytest.mark.parametrize("text, where, line, column", [
    ("search:\n  oneshot:\n    sampling: greedy\n", "search.oneshot.sampling", 3, 15),
    ("search:\n  oneshot:\n    epochs: 0\n", "search.oneshot.epochs", 3, 13),
    ("search:\n  oneshot:\n    retrain_top: -1\n", "search.oneshot.retrain_top", 3, 18),
    ("search:\n  oneshot:\n    calibration_batches: true\n", "search.oneshot.calibration_batches", 3, 26),
])
def test_bad_oneshot_values_are_located_at_the_value(text, where, line, column):
    error = error_of(text)
    assert where in error.message
    assert (error.location.line, error.location.column) == (line, column)


def test_a_bad_oneshot_override_names_the_field():
    with pytest.raises(SettingError) as info:
        SearchSettings().merged(oneshot={"paths": 0})
    assert str(info.value).startswith("oneshot.paths: ") and "\n" not in str(info.value)
    # A mapping updates the fields it names and keeps the others.
    merged = SearchSettings().merged(oneshot={"sampling": "uniform"}).merged(oneshot={"retrain_top": 4})
    assert (merged.oneshot.sampling, merged.oneshot.retrain_top) == ("uniform", 4)


# --------------------------------------------------------------------------- train_supernet


def config(**changes) -> TrainConfig:
    return TrainConfig(epochs=1, seed=0, lr=0.01, **TRAIN).model_copy(update=changes)


@pytest.fixture(scope="module")
def space():
    return parse_space(SPACE, "tinyshot.yaml")


@pytest.fixture(scope="module")
def fair_run(space):
    return train_supernet(space.distinct_candidates(), tiny_data(), config(), sampling="fair", calibration_batches=2)


def test_train_supernet_counts_steps_and_images_by_hand(space, fair_run):
    cands = space.distinct_candidates()
    run = fair_run
    assert run.paths_per_step == 2  # the largest decision has 2 values
    assert run.steps == 1 * (N_TRAIN // BATCH)
    assert run.train_images == run.steps * BATCH * run.paths_per_step == 128
    # Ranking: per path 2 calibration batches and the validation split; after each epoch the probe paths validate.
    probes = min(PROBE_PATHS, len(cands))
    assert run.eval_images == len(cands) * (2 * BATCH + N_VAL) + 1 * probes * N_VAL
    assert run.training.epochs == 1 and len(run.training.history) == 1 and run.training.lr == 0.01
    assert set(run.timings) == {"train", "rank"} and all(t >= 0 for t in run.timings.values())


def test_train_supernet_scores_every_path_with_its_stand_alone_size_and_accuracy(space, fair_run):
    cands = space.distinct_candidates()
    data = tiny_data()
    assert [s.index for s in fair_run.scores] == list(range(len(cands)))
    for score, candidate in zip(fair_run.scores, cands):
        summary = archforge.summarize(candidate.spec)
        assert (score.params, score.flops) == (summary.params, summary.flops)
        # The accuracy is the path's with its inherited weights and recalibrated statistics: the stand-alone network
        # loaded with the path's state gives exactly it.
        alone = archforge.build(candidate.spec)
        alone.load_state_dict(fair_run.supernet.state_dict_of(score.index))
        assert accuracy_of(alone, data) == score.accuracy
        assert 0 < score.accuracy <= 1


def test_train_supernet_recalibrates_each_path_on_the_training_batches(space, fair_run):
    # Every path's BatchNorm statistics were re-estimated on 2 batches: one count of 2 for each norm.
    for path in fair_run.supernet.paths:
        counts = [int(b) for name, b in path.module.named_buffers() if name.endswith("num_batches_tracked")]
        assert counts == [2]


def test_the_same_seed_trains_the_same_supernet(space, fair_run):
    again = train_supernet(space.distinct_candidates(), tiny_data(), config(), sampling="fair", calibration_batches=2)
    assert again.scores == fair_run.scores
    assert all(torch.equal(a, b) for a, b in zip(again.supernet.shared, fair_run.supernet.shared))
    assert again.training.history == fair_run.training.history


def test_uniform_sampling_trains_one_path_per_step(space):
    run = train_supernet(space.distinct_candidates(), tiny_data(), config(seed=3), sampling="uniform", calibration_batches=1)
    assert run.paths_per_step == 1
    assert (run.steps, run.train_images) == (N_TRAIN // BATCH, N_TRAIN // BATCH * BATCH)
    assert len(run.scores) == 4


def test_a_nan_loss_is_a_one_line_trial_error(space):
    data = tiny_data()
    data.train_x[:, :, 0, 0] = math.nan
    with pytest.raises(TrialError) as info:
        train_supernet(space.distinct_candidates(), data, config(), sampling="fair")
    assert info.value.kind == "nan" and "\n" not in str(info.value)
    assert "the training loss became NaN at epoch 1 step 1" in str(info.value)


def test_train_supernet_refuses_nothing_to_train(space):
    with pytest.raises(ValueError, match="no candidate"):
        train_supernet([], tiny_data(), config())
    with pytest.raises(ValueError, match="calibration_batches must be >= 1"):
        train_supernet(space.distinct_candidates(), tiny_data(), config(), calibration_batches=0)


def test_a_path_that_raises_in_forward_is_named_in_the_error(space, monkeypatch):
    import archforge.search.supernet_training as supernet_training

    cands = space.distinct_candidates()
    broken = cands[3]
    assert broken.values == {"width": 8, "kernel": 3}
    real = supernet_training.Supernet

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    def with_a_broken_path(modules, values):
        net = real(modules, values)
        (path,) = [p for p in net.paths if p.values == broken.values]
        first_block = next(iter(path.module.children()))
        monkeypatch.setattr(first_block, "forward", boom)  # this path's first block only: the others run as they are
        return net

    monkeypatch.setattr(supernet_training, "Supernet", with_a_broken_path)
    with pytest.raises(TrialError) as info:
        train_supernet(cands, tiny_data(), config(), sampling="fair", calibration_batches=1)
    text = str(info.value)
    assert "RuntimeError: boom" in text and "\n" not in text
    # Training (or the probe validation after the epoch: every path is a probe here) names the path that raised.
    assert f"path {broken.hash} (width=8, kernel=3)" in text
    assert all(c.hash not in text for c in cands if c.hash != broken.hash)


def test_lr_auto_runs_the_range_test_apart_and_restores_the_paths_state(space, monkeypatch):
    from archforge.search.supernet_training import _SupernetTrial

    seen = {}
    real = _SupernetTrial._find_lr

    def state(trial):
        return ([{n: b.clone() for n, b in p.module.named_buffers()} for p in trial.model.paths],
                [s.detach().clone() for s in trial.model.shared], trial.schedule.rng.getstate(), trial.steps_taken, trial.images)

    def watched(self):
        seen["before"] = state(self)
        real(self)
        seen["after"] = state(self)

    monkeypatch.setattr(_SupernetTrial, "_find_lr", watched)
    batch = 8  # 8 steps an epoch; the range test takes at least 50
    run = train_supernet(space.distinct_candidates(), tiny_data(), config(lr="auto", batch_size=batch), sampling="fair",
                         calibration_batches=1)
    (buffers, shared, draws, steps, images), after = seen["before"], seen["after"]
    assert all(torch.equal(b, after[0][i][n]) for i, path in enumerate(buffers) for n, b in path.items())
    assert any("running_mean" in n for n in buffers[0])  # there were statistics to restore
    assert all(torch.equal(a, b) for a, b in zip(shared, after[1]))
    assert (draws, steps, images) == after[2:] == (draws, 0, 0)
    assert math.isfinite(run.training.lr) and run.training.lr > 0
    assert run.range_images >= 50 * batch * run.paths_per_step and run.range_images % (batch * run.paths_per_step) == 0
    # Training's counts are training's only: 1 epoch of 64 // 8 steps, each 8 images through 2 paths.
    assert run.paths_per_step == 2
    assert run.steps == 1 * (N_TRAIN // batch) == 8
    assert run.train_images == 8 * batch * 2
    assert run.candidate_images == N_TRAIN

    monkeypatch.setattr(_SupernetTrial, "_find_lr", real)
    again = train_supernet(space.distinct_candidates(), tiny_data(), config(lr="auto", batch_size=batch), sampling="fair",
                           calibration_batches=1)
    assert again.training.lr == run.training.lr and again.scores == run.scores and again.range_images == run.range_images
    assert all(torch.equal(a, b) for a, b in zip(again.supernet.shared, run.supernet.shared))


@pytest.mark.parametrize("batch, epochs", [(16, 1), (24, 2), (40, 1)])
def test_candidate_images_are_the_full_batches_of_the_epochs(space, batch, epochs):
    run = train_supernet(space.distinct_candidates(), tiny_data(), config(batch_size=batch, epochs=epochs), sampling="uniform",
                         calibration_batches=1)
    # 64 images: 4 batches of 16, 2 of 24 (16 left over), 1 of 40 (24 left over).
    assert run.candidate_images == epochs * (N_TRAIN // batch) * batch == {16: 64, 24: 96, 40: 40}[batch]
    assert run.steps == epochs * (N_TRAIN // batch)
    assert run.train_images == run.steps * batch
    assert run.range_images == 0


# --------------------------------------------------------------------------- the phase in a search


def run_search(tmp_path, space_text: str = SPACE, **overrides):
    options = dict(dataset=tiny_data(), strategy="oneshot", epochs=1, seeds=1, train=TRAIN, storage=tmp_path / "s.db",
                   runs_dir=tmp_path, workers=1, progress=False)
    options.update(overrides)
    return archforge.search(parse_space(space_text, "tinyshot.yaml"), **options)


def phase_of(result) -> OneShotPhase:
    return records.read_study_attr(result.study, OneShotPhase, ONESHOT_KEY)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oneshot")
    result = run_search(tmp, oneshot={"retrain_top": 1})
    return tmp, result, result.study.trials  # the trials as this run left them (later tests resume the run)


def test_the_phase_is_stored_and_ranks_every_candidate(first):
    tmp, result, trials = first
    phase = phase_of(result)
    cands = parse_space(SPACE).distinct_candidates()
    assert ONESHOT_KEY == "archforge_oneshot" and ONESHOT_KEY in result.study.user_attrs
    assert (phase.sampling, phase.seed, phase.epochs, phase.calibration_batches) == ("fair", 0, 1, 5)
    assert (phase.paths, phase.sampled, phase.rejected, phase.retrain_top) == (4, False, 0, 1)
    assert phase.paths_per_step == 2 and phase.steps == N_TRAIN // BATCH
    assert phase.train_images == phase.steps * BATCH * 2 and phase.candidate_images == 1 * N_TRAIN
    # 5 calibration batches asked, the training set has 4: each path sees it once, then the validation split.
    assert phase.eval_images == 4 * (N_TRAIN + N_VAL) + min(PROBE_PATHS, 4) * N_VAL
    assert phase.lr == TrainConfig().lr and len(phase.history) == 1
    assert sorted(p.hash for p in phase.ranking) == sorted(c.hash for c in cands)
    keys = [(-p.accuracy, p.params) for p in phase.ranking]
    assert keys == sorted(keys)  # best accuracy first, fewer parameters first on a tie
    by_hash = {c.hash: c for c in cands}
    for p in phase.ranking:
        summary = archforge.summarize(by_hash[p.hash].spec)
        assert (p.params, p.flops) == (summary.params, summary.flops)
        assert p.decisions == by_hash[p.hash].values


def test_the_best_is_queued_and_trained_stand_alone(first):
    tmp, result, trials = first
    phase = phase_of(result)
    assert len(trials) == 1
    assert records.OneShotAttr.model_validate(trials[0].user_attrs["oneshot"]) == records.OneShotAttr(
        rank=1, accuracy=phase.ranking[0].accuracy)
    (record,) = [r for r in result.trials if r.counted]
    assert record.hash == phase.ranking[0].hash and record.status == "complete"
    assert (record.oneshot_rank, record.oneshot_accuracy) == (1, phase.ranking[0].accuracy)


def test_the_winner_checkpoint_has_the_inherited_weights(first):
    tmp, result, trials = first
    phase = phase_of(result)
    assert phase.weights == "oneshot/best.pt"
    model = archforge.load_checkpoint(tmp / phase.weights)
    assert candidate_hash(model.meta["archforge_graph"].spec) == phase.ranking[0].hash
    assert accuracy_of(model, tiny_data()) == phase.ranking[0].accuracy


def test_a_rerun_keeps_the_phase_and_a_larger_retrain_top_queues_the_next(first, monkeypatch):
    tmp, result, trials = first
    stored = dict(result.study.user_attrs)[ONESHOT_KEY]
    import archforge.search.supernet_training as supernet_training

    def never(*args, **kwargs):
        raise AssertionError("the supernet was trained again")

    monkeypatch.setattr(supernet_training, "train_supernet", never)
    started = time.perf_counter()
    again = run_search(tmp, oneshot={"retrain_top": 1})
    assert time.perf_counter() - started < 30
    assert again.study.user_attrs[ONESHOT_KEY] == stored
    assert len(again.study.trials) == 1

    more = run_search(tmp, oneshot={"retrain_top": 2})
    phase = phase_of(more)
    assert more.study.user_attrs[ONESHOT_KEY] == stored
    ranks = sorted((r.oneshot_rank, r.hash) for r in more.trials if r.counted)
    assert ranks == [(1, phase.ranking[0].hash), (2, phase.ranking[1].hash)]
    assert len(more.study.trials) == 2


@pytest.mark.parametrize("change, named", [
    ({"oneshot": {"epochs": 2}}, "epochs 1 → 2"),
    ({"epochs": 2}, "epochs 1 → 2"),  # the supernet's epochs default to the search's (trials then refuse it too)
    ({"oneshot": {"sampling": "uniform"}}, "sampling fair → uniform"),
    ({"oneshot": {"calibration_batches": 3}}, "calibration_batches 5 → 3"),
    ({"seed": 5}, "seed 0 → 5"),
])
def test_resuming_with_other_oneshot_settings_is_refused_naming_the_change(first, change, named):
    tmp, _, _ = first
    with pytest.raises(SearchError) as info:
        run_search(tmp, **change)
    assert "trained with other" in str(info.value) and f"settings ({named})" in str(info.value)
    assert "\n" not in str(info.value)


def test_resuming_with_another_number_of_paths_is_refused(first):
    tmp, _, _ = first
    with pytest.raises(SearchError, match="trained with other one-shot settings"):
        run_search(tmp, oneshot={"paths": 2})



def test_resuming_with_other_data_or_recipe_is_refused(first, monkeypatch):
    tmp, result, _ = first
    stored = dict(result.study.user_attrs)[ONESHOT_KEY]
    import archforge.search.supernet_training as supernet_training

    monkeypatch.setattr(supernet_training, "train_supernet", lambda *a, **k: pytest.fail("the supernet was trained again"))
    for change, named in (({"limit": 48}, "limit None → 48"), ({"train": {**TRAIN, "lr": 0.01}}, "train.lr 0.002 → 0.01")):
        with pytest.raises(SearchError) as info:
            run_search(tmp, oneshot={"retrain_top": 1}, **change)
        # The run check (the study's training-settings key) refuses before the phase's own check can.
        text = str(info.value)
        assert ("data or training recipe" in text or f"trained with other settings ({named})" in text), text
        assert "\n" not in text
    study = optuna_study(tmp)
    assert study.user_attrs[ONESHOT_KEY] == stored


def test_the_phase_refuses_another_data_or_recipe_itself(first):
    # The run check above may refuse first; the phase's own check, on a study whose run key changed under it.
    import optuna

    from archforge.search.oneshot import oneshot_phase

    tmp, result, _ = first
    study = optuna.create_study()
    meta = records.read_study_attr(result.study, records.RunMeta, records.RUN_KEY)
    study.set_user_attr(records.RUN_KEY, meta.model_copy(update={"config_key": "another"}).model_dump(mode="json"))
    study.set_user_attr(ONESHOT_KEY, dict(result.study.user_attrs)[ONESHOT_KEY])
    settings = SearchSettings().merged(strategy="oneshot", epochs=1, seeds=1, oneshot={"retrain_top": 1})
    with pytest.raises(SearchError) as info:
        oneshot_phase(study, parse_space(SPACE), settings, None)
    assert "data or training recipe" in str(info.value) and "\n" not in str(info.value)


def test_resuming_with_other_constraints_is_refused(first, monkeypatch):
    tmp, result, _ = first
    stored = dict(result.study.user_attrs)[ONESHOT_KEY]
    import archforge.search.supernet_training as supernet_training

    monkeypatch.setattr(supernet_training, "train_supernet", lambda *a, **k: pytest.fail("the supernet was trained again"))
    with pytest.raises(SearchError) as info:
        run_search(tmp, oneshot={"retrain_top": 1}, constraints={"max_params": 10_000})
    assert "trained with other one-shot settings (constraints)" in str(info.value) and "\n" not in str(info.value)
    assert optuna_study(tmp).user_attrs[ONESHOT_KEY] == stored


def test_a_refused_resume_leaves_the_run_settings_as_they_were(tmp_path):
    run_search(tmp_path)
    before = optuna_study(tmp_path).user_attrs[records.RUN_KEY]
    with pytest.raises(SearchError, match="constraints"):
        run_search(tmp_path, oneshot={"retrain_top": 3}, constraints={"max_params": 10_000})
    after = optuna_study(tmp_path).user_attrs[records.RUN_KEY]
    assert (after["budget"], after["settings"]["constraints"]) == (before["budget"], before["settings"]["constraints"])
    assert after == before


def test_a_phase_without_trials_survives_a_rerun_with_other_objectives(tmp_path, monkeypatch):
    result = run_search(tmp_path)
    stored = dict(result.study.user_attrs)[ONESHOT_KEY]
    assert result.study.trials == []
    import archforge.search.supernet_training as supernet_training

    trained = []
    monkeypatch.setattr(supernet_training, "train_supernet", lambda *a, **k: trained.append(1) or pytest.fail("trained again"))
    try:
        run_search(tmp_path, objectives=["accuracy", "params"])
    except SearchError as exc:  # refused by the run check: the study holds a started run
        assert "objectives" in str(exc) and "\n" not in str(exc)
    assert trained == []
    assert optuna_study(tmp_path).user_attrs[ONESHOT_KEY] == stored


def test_a_ranked_candidate_that_fails_the_checks_now_is_not_queued(tmp_path):
    result = run_search(tmp_path)
    phase = phase_of(result)
    assert len(phase.ranking) == 4 and result.study.trials == []
    # Rank 1's decisions no longer make the candidate the supernet ranked (as after a change of the space's code).
    tampered = phase.model_copy(update={"ranking": [phase.ranking[0].model_copy(update={"hash": "0" * 12}),
                                                    *phase.ranking[1:]]})
    result.study.set_user_attr(ONESHOT_KEY, records.dump(tampered))
    again = run_search(tmp_path, oneshot={"retrain_top": 2})
    assert len(again.study.trials) == 2  # the budget is what was queued: no third trial from the sampler
    ranks = sorted((r.oneshot_rank, r.hash) for r in again.trials if r.counted)
    assert ranks == [(2, phase.ranking[1].hash), (3, phase.ranking[2].hash)]
    assert all(r.status == "complete" for r in again.trials)


def test_two_workers_and_retrain_top_one_train_exactly_one_trial(tmp_path):
    result = run_search(tmp_path, workers=2, oneshot={"retrain_top": 1})
    phase = phase_of(result)
    assert len(result.study.trials) == 1
    (record,) = result.trials
    assert (record.oneshot_rank, record.hash, record.status) == (1, phase.ranking[0].hash, "complete")


def optuna_study(tmp):
    import optuna

    return optuna.load_study(study_name="tinyshot", storage=f"sqlite:///{tmp / 's.db'}")


def test_retrain_top_zero_runs_no_trial(tmp_path):
    result = run_search(tmp_path)
    phase = phase_of(result)
    assert phase.retrain_top == 0 and len(phase.ranking) == 4
    assert result.study.trials == []
    assert (tmp_path / "oneshot" / "best.pt").exists()


def test_all_candidates_rejected_is_a_search_error_and_no_phase_is_stored(tmp_path):
    smallest = min(archforge.summarize(c.spec).params for c in parse_space(SPACE).distinct_candidates())
    with pytest.raises(SearchError) as info:
        run_search(tmp_path, constraints={"max_params": smallest - 1}, oneshot={"retrain_top": 1})
    assert "all 4 candidates were rejected before training" in str(info.value) and "\n" not in str(info.value)
    import optuna

    study = optuna.load_study(study_name="tinyshot", storage=f"sqlite:///{tmp_path / 's.db'}")
    assert ONESHOT_KEY not in study.user_attrs and study.trials == []
    assert not (tmp_path / "oneshot").exists()


def test_rejected_candidates_are_counted_and_left_out(tmp_path):
    sizes = {c.hash: archforge.summarize(c.spec).params for c in parse_space(SPACE).distinct_candidates()}
    limit = sorted(sizes.values())[1]  # the two smallest pass
    result = run_search(tmp_path, constraints={"max_params": limit})
    phase = phase_of(result)
    assert (phase.paths, phase.rejected) == (2, 2)
    assert sorted(p.hash for p in phase.ranking) == sorted(h for h, n in sizes.items() if n <= limit)


def test_a_space_larger_than_paths_is_sampled(tmp_path):
    result = run_search(tmp_path, oneshot={"paths": 3})
    phase = phase_of(result)
    every = {c.hash for c in parse_space(SPACE).distinct_candidates()}
    assert (phase.paths, phase.sampled, len(phase.ranking)) == (3, True, 3)
    assert {p.hash for p in phase.ranking} < every


def test_the_oneshot_line_says_what_the_phase_found_and_cost(first):
    from archforge.search.run import _oneshot_line

    _, result, _ = first
    phase = phase_of(result)
    best = phase.ranking[0]
    line = _oneshot_line(phase)
    # 128 training images (4 steps x 16 x 2 paths) against 64 for one stand-alone epoch: 2.0 trainings.
    assert line.startswith("one-shot: 4 candidates ranked in ")
    assert "training on as many images as 2.0 stand-alone trainings" in line
    assert line.endswith(f"best with inherited weights: {best.accuracy:.4f} width={best.decisions['width']}, "
                         f"kernel={best.decisions['kernel']}")
