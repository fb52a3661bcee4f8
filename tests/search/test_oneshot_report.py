"""The one-shot phase in a search's results: the joined table, its agreement, the report files, the printout and the flags.

The stored runs are built by hand (an Optuna study holding a RunMeta, a written OneShotPhase and
trials stored through ``records``), so that every number checked is known without training; one
real, tiny search runs the whole path through the command line at the end.
"""

from __future__ import annotations

import csv
import io
import json
import statistics

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from rich.console import Console

import archforge
from archforge.errors import SearchError
from archforge.search import candidate_hash, load_run, parse_space, records
from archforge.search.records import CandidateAttr, OneShotAttr, OneShotPath, OneShotPhase, Outcome, RunMeta
from archforge.search.oneshot_report import ONESHOT_COLUMNS
from archforge.search.report import RunData, write_report
from archforge.search.result import SearchResult
from archforge.search.settings import OneShotSettings, SearchSettings

SPACE = """\
archforge: 1
name: os
input: {shape: [1, 8, 8]}
nodes:
  - {id: a, block: conv, args: {channels: {choice: [4, 8, 12, 16, 20]}}}
  - {id: head, block: classifier, args: {classes: 10}}
search: {dataset: digits, limit: 200, epochs: 1, seeds: 2, strategy: oneshot}
"""
DECISION = "a.channels"
#: The supernet's order and accuracies, written by hand: width 16 first, then 20, 8, 12, 4.
ONESHOT = [(16, 0.60), (20, 0.55), (8, 0.50), (12, 0.45), (4, 0.40)]
#: Mean stand-alone accuracies of the retrained (two seeds each, mean ± 0.01): width 20 is the most accurate.
STANDALONE = {16: 0.80, 20: 0.90, 8: 0.70, 12: 0.75}


def params(width: int) -> int:
    return 1 * width * 9 + 2 * width + width * 10 + 10  # conv 3x3 from 1 channel, BatchNorm, classifier from `width`


def candidate(width: int):
    return parse_space(SPACE, "os.yaml").concretize({DECISION: width})


def phase(retrain_top: int, **fields) -> OneShotPhase:
    ranking = [OneShotPath(hash=candidate(w).hash, decisions={DECISION: w}, accuracy=a, params=params(w), flops=100 * w)
               for w, a in ONESHOT]
    values = dict(sampling="fair", seed=0, epochs=1, paths=5, sampled=False, rejected=0, paths_per_step=5, steps=10,
                  calibration_batches=4, lr=0.01, history=[0.3], train_images=3000, eval_images=800, candidate_images=1000,
                  train_s=10.0, rank_s=2.5, retrain_top=retrain_top, weights=None, ranking=ranking)
    return OneShotPhase(**{**values, **fields})


def oneshot_study(retrain_top: int, storage=None, phase_top: int | None = None, **phase_fields) -> optuna.Study:
    """A study as a one-shot run stores one: its RunMeta (the space's text, settings with ``retrain_top``), the phase
    (made with ``phase_top``, default the same), and no trial yet."""
    space = parse_space(SPACE, "os.yaml")
    settings = space.settings.merged(oneshot={"retrain_top": retrain_top})
    study = optuna.create_study(study_name="os", storage=storage, directions=settings.directions)
    meta = RunMeta(space=SPACE, space_file="os.yaml", space_fingerprint=space.fingerprint, space_name="os",
                   settings=settings.model_dump(mode="json"), config_key="k", dataset="digits",
                   decisions=[d.to_dict() for d in space.decisions.values()])
    study.set_user_attr(records.RUN_KEY, records.dump(meta))
    study.set_user_attr(records.ONESHOT_KEY, records.dump(phase(retrain_top if phase_top is None else phase_top, **phase_fields)))
    return study


def failed(study: optuna.Study, width: int, rank: int) -> None:
    """A stand-alone trial of the width's candidate, queued by the phase at ``rank``, that failed."""
    c = candidate(width)
    attrs = records.attrs(CandidateAttr(hash=c.hash, decisions={DECISION: width}, spec=c.data),
                          Outcome(status="failed", error="out of memory", epochs_run=1),
                          OneShotAttr(rank=rank, accuracy=dict(ONESHOT)[width]))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs=attrs))


def retrained(study: optuna.Study, width: int, mean: float, rank: int) -> None:
    """A stand-alone trial of the width's candidate, queued by the phase at ``rank``, two seeds at mean ± 0.01."""
    c = candidate(width)
    seeds = [mean - 0.01, mean + 0.01]
    outcome = Outcome(status="complete", accuracy=statistics.fmean(seeds), accuracy_std=statistics.stdev(seeds), accuracies=seeds,
                      params=params(width), epochs_run=2, epochs_full=2)
    attrs = records.attrs(CandidateAttr(hash=c.hash, decisions={DECISION: width}, spec=c.data), outcome,
                          OneShotAttr(rank=rank, accuracy=dict(ONESHOT)[width]))
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=[outcome.accuracy], user_attrs=attrs))


@pytest.fixture
def four_retrained() -> RunData:
    """Retrain top 5: ranks 1-4 trained stand-alone, rank 5 still queued."""
    study = oneshot_study(5)
    for rank, (width, _) in enumerate(ONESHOT[:4], start=1):
        retrained(study, width, STANDALONE[width], rank)
    study.enqueue_trial({}, user_attrs=records.attrs(OneShotAttr(rank=5, accuracy=0.40)))
    return RunData.from_study(study)


# --------------------------------------------------------------------------- the joined table


def test_the_table_joins_each_retrained_candidate_with_its_stand_alone_result(four_retrained):
    table = four_retrained.oneshot_table
    assert [row["oneshot_rank"] for row in table] == [1, 2, 3, 4, 5]
    assert [row["decisions"] for row in table] == [{DECISION: w} for w, _ in ONESHOT]
    assert [(row["hash"], row["oneshot_accuracy"], row["params"]) for row in table] == [
        (candidate(w).hash, a, params(w)) for w, a in ONESHOT]
    assert all(set(ONESHOT_COLUMNS) | {"decisions"} == set(row) for row in table)
    # stand-alone by hand: 20 (0.90) > 16 (0.80) > 12 (0.75) > 8 (0.70); the interval with two seeds of mean ± 0.01:
    # s = 0.01·√2, sem = 0.01, 95% = mean ± 12.706 · 0.01
    order = {20: 1, 16: 2, 12: 3, 8: 4}
    for row, (width, _) in zip(table[:4], ONESHOT):
        assert row["standalone_status"] == "complete" and row["standalone_rank"] == order[width]
        assert row["standalone_accuracy"] == pytest.approx(STANDALONE[width])
        assert row["standalone_n_seeds"] == 2 and row["standalone_accuracy_std"] == pytest.approx(0.01 * 2 ** 0.5)
        assert row["standalone_accuracy_low"] == pytest.approx(STANDALONE[width] - 0.12706)
        assert row["standalone_accuracy_high"] == pytest.approx(STANDALONE[width] + 0.12706)
        assert row["standalone_most_accurate"] is (width == 20)
    # the same numbers the ordinary ranking has, matched by hash, under its names prefixed with standalone_;
    # the one-shot values under trials.csv's names
    by_hash = {row["hash"]: row for row in four_retrained.table}
    for row in table[:4]:
        ranked = by_hash[row["hash"]]
        assert row["standalone_trial"] == ranked["trial"]
        for key in ("rank", "accuracy", "accuracy_std", "n_seeds", "accuracy_low", "accuracy_high", "most_accurate",
                    "separable_from_best"):
            assert row[f"standalone_{key}"] == ranked[key], key
        record = four_retrained.record(ranked["trial"])
        assert (row["oneshot_rank"], row["oneshot_accuracy"]) == (record.oneshot_rank, record.oneshot_accuracy)
    # Welch, width 16 against 20: 0.10 ± 4.303 · √(0.01² + 0.01²) = [0.039, 0.161] excludes 0: separable
    assert table[0]["standalone_separable_from_best"] is True
    # the fifth is queued: a status, no result
    assert table[4]["standalone_status"] == "waiting" and table[4]["standalone_accuracy"] is None
    assert table[4]["standalone_rank"] is None


def test_agreement_is_kendall_tau_b_of_the_one_shot_order_against_stand_alone_accuracy(four_retrained):
    # One-shot order 16, 20, 8, 12; stand-alone 0.80, 0.90, 0.70, 0.75. Of the 6 pairs, (16, 20) and (8, 12)
    # are reversed, the other 4 agree; no ties: τ_b = (4 − 2) / 6 = 1/3.
    agreement = four_retrained.oneshot_agreement
    assert (agreement.candidates, agreement.pairs) == (4, 6)
    assert agreement.tau == pytest.approx(1 / 3)
    notes = four_retrained.oneshot_notes
    assert "one supernet's" in notes[0] and "no interval" in notes[0]
    winner, best = candidate(16).hash, candidate(20).hash
    assert any(f"one-shot #2 {best} (0.9000), not the one-shot winner {winner} (0.8000, separably less accurate at 95%)" in note
               for note in notes), notes


def test_agreement_needs_three_retrained_candidates():
    study = oneshot_study(2)
    retrained(study, 16, 0.80, 1)
    retrained(study, 20, 0.90, 2)
    run = RunData.from_study(study)
    assert run.oneshot_agreement is None
    assert any("needs 3 or more" in note for note in run.oneshot_notes)
    assert RunData.from_study(oneshot_study(0)).oneshot_agreement is None


def test_a_run_without_the_phase_has_no_one_shot_table():
    study = oneshot_study(0)
    study.set_user_attr(records.ONESHOT_KEY, None)
    run = RunData.from_study(study)
    assert run.oneshot is None and run.oneshot_table == [] and run.oneshot_summary is None
    result = SearchResult(run)
    assert result.oneshot is None and result.best is None and result.oneshot_table == []


# --------------------------------------------------------------------------- files


def test_trials_json_and_oneshot_csv(four_retrained, tmp_path):
    files = write_report(four_retrained, tmp_path / "out")
    assert files["oneshot"] == tmp_path / "out" / "oneshot.csv"
    data = json.loads((tmp_path / "out" / "trials.json").read_text())
    stored = phase(5).model_dump(mode="json")
    assert {k: data["oneshot"][k] for k in stored} == stored
    assert data["oneshot"]["table"] == json.loads(json.dumps(four_retrained.oneshot_table))
    assert data["oneshot"]["agreement"]["tau"] == pytest.approx(1 / 3)

    with (tmp_path / "out" / "oneshot.csv").open() as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    assert header == [*ONESHOT_COLUMNS, f"decision.{DECISION}"]
    # the one-shot values are named as trials.csv names them, the stand-alone ones as the ranking's, prefixed
    with (tmp_path / "out" / "trials.csv").open() as f:
        trials_header = next(csv.reader(f))
    assert {"oneshot_rank", "oneshot_accuracy"} <= set(trials_header) & set(header)
    assert {"standalone_accuracy", "standalone_accuracy_low", "standalone_most_accurate", "standalone_separable_from_best"} <= set(header)
    assert not {"rank", "accuracy", "most_accurate", "separable_from_best"} & set(header)
    assert len(rows) == 5
    for line, (width, accuracy) in zip(rows, ONESHOT):
        cells = dict(zip(header, line))
        assert (cells["hash"], float(cells["oneshot_accuracy"]), int(cells["params"]), cells[f"decision.{DECISION}"]) == (
            candidate(width).hash, accuracy, params(width), str(width))
        if width in STANDALONE:
            assert float(cells["standalone_accuracy"]) == pytest.approx(STANDALONE[width])
        else:
            assert cells["standalone_accuracy"] == "" and cells["standalone_status"] == "waiting"
    # the stand-alone best stays the best: best.yaml is width 20, trained stand-alone
    assert candidate_hash(archforge.load_spec(files["best"])) == candidate(20).hash
    assert "One-shot winner" not in files["best"].read_text()


def test_without_stand_alone_training_best_yaml_is_the_one_shot_winner_and_best_pt_its_checkpoint(tmp_path):
    from archforge.builder import save_checkpoint

    winner = candidate(16)
    save_checkpoint(archforge.build(winner.spec).eval(), tmp_path / "oneshot" / "best.pt")
    run = RunData.from_study(oneshot_study(0, weights="oneshot/best.pt"), tmp_path)
    assert run.ranking.best is None and run.best is None
    files = write_report(run, tmp_path / "report", weights=True)
    assert {"best", "weights", "oneshot"} <= set(files) and "candidates" not in files
    text = files["best"].read_text()
    assert "One-shot winner" in text and "NOT trained stand-alone" in text and "0.6000" in text
    assert candidate_hash(archforge.load_spec(files["best"])) == winner.hash
    assert files["weights"].read_bytes() == (tmp_path / "oneshot" / "best.pt").read_bytes()
    model = archforge.load_checkpoint(files["weights"])
    assert candidate_hash(model.meta["archforge_graph"].spec) == winner.hash

    result = SearchResult(run)
    assert result.best["source"] == "oneshot" and result.best["hash"] == winner.hash and result.best["oneshot_accuracy"] == 0.60
    assert result.best["accuracy"] is None and result.best["trial"] is None  # no stand-alone accuracy: nothing trained it
    assert {k: result.best[k] for k in ONESHOT_COLUMNS} == {k: run.oneshot_table[0][k] for k in ONESHOT_COLUMNS}
    assert candidate_hash(result.best_spec) == winner.hash
    assert "one-shot accuracy 0.6000 (inherited weights, not trained stand-alone)" in repr(result)


def test_the_winner_is_rebuilt_only_to_its_stored_hash_and_weights_only_from_the_run_folder(tmp_path):
    study = oneshot_study(0, weights="oneshot/best.pt")
    (tmp_path / "elsewhere.pt").write_bytes(b"not ours")
    (tmp_path / "run" / "oneshot").mkdir(parents=True)
    (tmp_path / "run" / "oneshot" / "best.pt").symlink_to(tmp_path / "elsewhere.pt")
    run = RunData.from_study(study, tmp_path / "run")
    assert run.oneshot_weights is None  # a stored path that leads outside the run folder is not followed
    with pytest.raises(SearchError, match="checkpoint is missing"):
        write_report(run, tmp_path / "report", weights=True)
    assert not (tmp_path / "report").exists()  # refused before any file was written
    bad = phase(0).model_dump(mode="json")
    bad["ranking"][0]["hash"] = "0" * 12  # decisions that do not give the stored hash
    study.set_user_attr(records.ONESHOT_KEY, bad)
    with pytest.raises(SearchError, match="rebuild a spec of hash"):
        RunData.from_study(study).oneshot_spec(1)
    with pytest.raises(SearchError, match="rebuild a spec of hash"):
        write_report(RunData.from_study(study), tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_a_checkpoint_path_that_cannot_be_resolved_is_missing_in_one_short_line(tmp_path):
    loop = tmp_path / "run" / "oneshot" / "best.pt"
    loop.parent.mkdir(parents=True)
    loop.symlink_to(loop)  # a symlink loop: Path.resolve raises (RuntimeError before Python 3.13)
    study = oneshot_study(0, weights="oneshot/best.pt")
    assert RunData.from_study(study, tmp_path / "run").oneshot_weights is None
    assert RunData.from_study(study, tmp_path / "a\0b").oneshot_weights is None  # ValueError: a NUL byte
    long_dir = tmp_path / ("d" * 240) / ("e" * 240)
    long_dir.mkdir(parents=True)
    run = RunData.from_study(oneshot_study(0, weights="oneshot/" + "w" * 240 + ".pt"), long_dir)
    with pytest.raises(SearchError) as caught:
        write_report(run, tmp_path / "report", weights=True)
    message = str(caught.value)
    assert "checkpoint is missing" in message and "\n" not in message and len(message) < 600, message
    assert "w" * 199 not in message and "e" * 199 not in message  # each path cut to 200 characters
    assert not (tmp_path / "report").exists()


def test_compute_counts_the_supernet_and_the_candidates_it_spared():
    from archforge.search.compute import compute_text

    study = oneshot_study(2, range_images=500)
    retrained(study, 16, 0.80, 1)
    retrained(study, 20, 0.90, 2)
    c = RunData.from_study(study).compute_summary
    # supernet: 3,000 training + 500 range-test images over a 1,000-image training set (one stand-alone training of
    # the search's 1 epoch) = 3.5, rounded up to 4 epochs; stand-alone: 2 × 2;
    # full training: 5 candidates × 1 epoch × 2 seeds, of which 3 were only ranked by the supernet
    assert (c.oneshot_epochs, c.oneshot_ranked, c.epochs_run, c.epochs_full) == (4, 3, 8, 10)
    assert c.oneshot_forward_images == 800
    text = compute_text(c)
    assert "\n" not in text
    assert ("(3 ranked by the one-shot supernet only, whose training counts as 4 epoch(s) + 800 forward-only images to rank, "
            "not counted)") in text


def test_the_supernet_counts_in_epochs_of_the_search_not_of_the_supernet():
    from archforge.search.compute import compute_summary

    # A search of 3 epochs over a 1,000-image training set: one stand-alone training sees 3,000 images. The supernet
    # trained 1 epoch of its own, 4,500 images with every path of a step: 4.5 epochs' worth, rounded up.
    settings = parse_space(SPACE, "os.yaml").settings.merged(epochs=3)
    c = compute_summary([], settings, None, phase(0, epochs=1, candidate_images=3000, train_images=4500))
    assert c.oneshot_epochs == 5 and c.epochs_run == 5
    assert c.epochs_full == 5 * 3 * 2 and c.oneshot_ranked == 5


# --------------------------------------------------------------------------- the best, and what the notes say


def test_when_every_retrained_candidate_failed_there_is_no_best(tmp_path):
    study = oneshot_study(2)
    failed(study, 16, 1)
    failed(study, 20, 2)
    run = RunData.from_study(study)
    assert not run.oneshot_fallback and run.reported_best is None
    result = SearchResult(run)
    assert result.best is None and "best none)" in repr(result)
    with pytest.raises(SearchError, match="no completed trial"):
        result.best_spec
    assert any("none of the candidates queued for stand-alone training completed (2 failed): the run has no best" in note
               for note in run.oneshot_notes), run.oneshot_notes
    assert not any("stands for the result" in note for note in run.oneshot_notes)
    files = write_report(run, tmp_path / "out", weights=True)
    assert "best" not in files and "weights" not in files and not (tmp_path / "out" / "best.yaml").exists()
    assert json.loads(files["json"].read_text())["best"] is None

    text = " ".join(printed(run, top=10).split())
    assert "os: 2 candidates trained stand-alone, none completed: all failed (the reasons below)" in text
    assert "2 failed: #0" in text and "out of memory" in text
    assert "best: none: no candidate trained stand-alone completed (2 failed), so the run has no result" in text
    assert "best: the one-shot winner" not in text and "not trained stand-alone" not in text


def test_one_failed_and_one_still_queued_is_no_best_either():
    study = oneshot_study(2)
    failed(study, 16, 1)
    study.enqueue_trial({}, user_attrs=records.attrs(OneShotAttr(rank=2, accuracy=0.55)))
    run = RunData.from_study(study)
    assert SearchResult(run).best is None
    assert any("completed (1 failed, 1 waiting)" in note for note in run.oneshot_notes), run.oneshot_notes


def test_queued_but_not_yet_trained_the_winner_stands_for_the_result_and_the_note_says_so():
    study = oneshot_study(2)
    for rank in (1, 2):
        study.enqueue_trial({}, user_attrs=records.attrs(OneShotAttr(rank=rank, accuracy=dict(ONESHOT)[ONESHOT[rank - 1][0]])))
    run = RunData.from_study(study)
    assert run.oneshot_fallback and SearchResult(run).best["hash"] == candidate(16).hash
    assert any(note.startswith("no candidate has a stand-alone result yet (oneshot.retrain_top 2): the one-shot winner stands")
               for note in run.oneshot_notes), run.oneshot_notes
    assert not any("retrain_top 0" in note for note in run.oneshot_notes)


def test_unreadable_retrained_trials_are_said_not_taken_for_retrain_top_0():
    study = oneshot_study(2)
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=[0.8], user_attrs={"oneshot": {"rank": "first"}}))
    run = RunData.from_study(study)
    assert [r.status for r in run.records] == ["unreadable"]
    assert any("(oneshot.retrain_top 2; 1 trial(s) unreadable, see the warnings)" in note for note in run.oneshot_notes)
    assert not any("retrain_top 0" in note for note in run.oneshot_notes)


def test_retrain_top_is_the_runs_setting_not_the_one_the_phase_was_made_with(tmp_path):
    # The phase was stored by a run with retrain_top 0; the run was resumed with retrain_top 3 (nothing trained yet).
    run = RunData.from_study(oneshot_study(3, phase_top=0))
    assert run.oneshot.retrain_top == 0 and run.settings.oneshot.retrain_top == 3
    assert run.oneshot_summary["retrain_top"] == 3
    assert any("(oneshot.retrain_top 3)" in note for note in run.oneshot_notes)
    data = json.loads(write_report(run, tmp_path / "out")["json"].read_text())
    assert data["oneshot"]["retrain_top"] == 3
    # and the other way round: a run of retrain_top 0 says 0
    assert any("(oneshot.retrain_top 0)" in note for note in RunData.from_study(oneshot_study(0, phase_top=3)).oneshot_notes)


def tied_phase(*accuracies: float) -> dict:
    """The phase with the given one-shot accuracies, best first, for the widths of ONESHOT in their order."""
    ranking = [OneShotPath(hash=candidate(w).hash, decisions={DECISION: w}, accuracy=a, params=params(w), flops=100 * w)
               for (w, _), a in zip(ONESHOT, accuracies)]
    return {"ranking": ranking}


@pytest.mark.parametrize("accuracies, note", [
    ((0.6, 0.6, 0.5, 0.45, 0.4), "1 candidate ties with the winner's one-shot accuracy (0.6000); fewer parameters decided"),
    ((0.6, 0.6, 0.6, 0.45, 0.4), "2 candidates tie with the winner's one-shot accuracy (0.6000); fewer parameters decided"),
    ((0.6, 0.55, 0.5, 0.45, 0.4), None),
])
def test_a_tie_at_the_top_of_the_one_shot_ranking_is_said(accuracies, note):
    notes = RunData.from_study(oneshot_study(0, **tied_phase(*accuracies))).oneshot_notes
    ties = [n for n in notes if "tie" in n]
    assert ties == ([note] if note else [])


@pytest.mark.parametrize("scenario", ["retrained", "none trained", "all failed"])
def test_trials_json_and_report_json_give_the_same_best(tmp_path, capsys, scenario):
    from archforge.cli import main

    study = oneshot_study(0 if scenario == "none trained" else 2, storage=f"sqlite:///{tmp_path / 'study.db'}")
    if scenario == "retrained":
        retrained(study, 16, 0.80, 1)
        retrained(study, 20, 0.90, 2)
    elif scenario == "all failed":
        failed(study, 16, 1)
        failed(study, 20, 2)
    assert main(["report", str(tmp_path), "--json", "-o", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out)
    stored = json.loads((tmp_path / "out" / "trials.json").read_text())
    assert summary["best"] == stored["best"]
    expected = {"retrained": candidate(20).hash, "none trained": candidate(16).hash, "all failed": None}[scenario]
    assert (stored["best"] or {}).get("hash") == expected
    if scenario == "none trained":
        assert stored["best"]["source"] == "oneshot" and stored["best"]["oneshot_accuracy"] == 0.60


# --------------------------------------------------------------------------- printing


def printed(run: RunData, width: int = 200, top: int | None = None) -> str:
    from archforge.cli.search_commands import print_run

    console = Console(width=width, record=True, file=io.StringIO())
    print_run(run, console, top=top)
    return console.export_text()


def test_printout_shows_the_cost_the_joined_table_and_the_agreement(four_retrained):
    text = printed(four_retrained)
    assert ("one-shot: one supernet of 5 candidates, 1 epoch(s) of fair sampling, 5 path(s) per step × 10 steps: 3,000 training "
            "images, as many as 3.0 stand-alone trainings (1,000 each), + 800 forward-only images to rank; 12.5s (10.0s training, "
            "2.5s ranking)") in " ".join(text.split())
    row = next(line for line in text.splitlines() if candidate(16).hash in line and "0.6000" in line)
    assert "0.8000 ± 0.0141" in row and "[0.6729, 0.9271]" in row and "<" in row and f"{params(16):,}" in row
    queued = next(line for line in text.splitlines() if candidate(4).hash in line and "0.4000" in line)
    assert "waiting" in queued
    assert "Kendall τ_b +0.33 over 6 pairs" in text
    assert "os: 4 candidates trained stand-alone" in text and "best: #" in text
    # supernet 3 epochs + 4 candidates × 2 seeds = 11 epochs against 5 candidates × 2 seeds: more than full training
    assert "compute: 11 epochs run of the 10 that full training" in text and ": 1 more than that (10.0%)" in text
    assert "+ 800 forward-only images to rank, not counted" in text


def test_a_narrow_terminal_folds_the_one_shot_table_without_cutting_a_cell(four_retrained):
    text = printed(four_retrained, width=80)
    assert all(len(line.rstrip()) <= 80 for line in text.splitlines())
    assert "0.8000 ± 0.0141" in text and "[0.6729, 0.9271]" in text and "stand-alone #=2" in text
    assert "…" not in text


def test_printout_without_stand_alone_training_is_a_result_not_an_error(tmp_path, capsys, monkeypatch):
    from archforge.builder import save_checkpoint
    from archforge.cli import main

    monkeypatch.setenv("COLUMNS", "160")
    save_checkpoint(archforge.build(candidate(16).spec).eval(), tmp_path / "oneshot" / "best.pt")
    oneshot_study(0, storage=f"sqlite:///{tmp_path / 'study.db'}", weights="oneshot/best.pt")
    assert main(["report", str(tmp_path), "--weights"]) == 0
    out = capsys.readouterr().out
    assert "no candidate evaluated" not in out and "stand-alone #" not in out
    assert all(candidate(w).hash in out for w, _ in ONESHOT)
    assert f"best: the one-shot winner {candidate(16).hash}, accuracy 0.6000 with inherited weights (not trained stand-alone)" in out
    assert "no candidate was trained stand-alone (oneshot.retrain_top 0)" in out
    assert (tmp_path / "report" / "best.pt").is_file() and (tmp_path / "report" / "oneshot.csv").is_file()
    assert main(["report", str(tmp_path), "--json", "-o", str(tmp_path / "j")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["best"]["source"] == "oneshot" and summary["oneshot"]["table"][0]["hash"] == candidate(16).hash


# --------------------------------------------------------------------------- flags


def space_path(tmp_path, search: str = "{dataset: digits, limit: 200}"):
    path = tmp_path / "flags.yaml"
    path.write_text(SPACE.replace("search: {dataset: digits, limit: 200, epochs: 1, seeds: 2, strategy: oneshot}", f"search: {search}"))
    return path


def flag_settings(path, *flags) -> SearchSettings:
    from archforge.cli import parser
    from archforge.cli.search_flags import search_overrides
    from archforge.search import load_space

    space = load_space(path)
    args = parser().parse_args(["search", str(path), *map(str, flags)])
    return space.settings.merged(**search_overrides(args, space.settings))


def test_oneshot_flags_map_into_the_oneshot_section(tmp_path):
    path = space_path(tmp_path)
    got = flag_settings(path, "--strategy", "oneshot", "--retrain-top", 3, "--oneshot-epochs", 2, "--sampling", "uniform",
                        "--calibration-batches", 5, "--oneshot-paths", 16)
    assert got.strategy == "oneshot"
    assert got.oneshot == OneShotSettings(retrain_top=3, epochs=2, sampling="uniform", calibration_batches=5, paths=16)
    assert got.trial_budget == 3
    # a space whose strategy is oneshot: a flag updates its section, keeping the other keys
    kept = space_path(tmp_path, "{dataset: digits, strategy: oneshot, oneshot: {sampling: uniform, paths: 32}}")
    got = flag_settings(kept, "--retrain-top", 2)
    assert got.oneshot == OneShotSettings(sampling="uniform", paths=32, retrain_top=2)


def test_paths_is_no_flag_of_its_own(tmp_path, capsys):
    from archforge.cli import main

    path = space_path(tmp_path, "{dataset: digits, strategy: oneshot}")
    assert main(["search", str(path), "--runs", str(tmp_path / "runs"), "--paths", "8"]) == 2
    assert "unrecognized arguments: --paths 8" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("search, flags, expected", [
    ("{dataset: digits}", ["--retrain-top", "2"], "--retrain-top sets the one-shot supernet of strategy oneshot, and this search's "
                                                  "strategy is grid: add --strategy oneshot"),
    ("{dataset: digits, strategy: oneshot}", ["--strategy", "tpe", "--sampling", "fair", "--oneshot-paths", "8"],
     "--sampling, --oneshot-paths set the one-shot supernet of strategy oneshot, and this search's strategy is tpe"),
    ("{dataset: digits}", ["--strategy", "oneshot", "--retrain-top", "-1"], "must be a whole number at least 0"),
    ("{dataset: digits}", ["--strategy", "oneshot", "--sampling", "greedy"], "invalid choice: 'greedy'"),
    ("{dataset: digits}", ["--strategy", "oneshot", "--budget", "3"], "set oneshot.retrain_top (--retrain-top K), not budget"),
    ("{dataset: digits, budget: 4}", ["--strategy", "oneshot", "--retrain-top", "2"],
     "this space's search: section sets budget: 4: remove budget from the space file, or use another strategy"),
])
def test_oneshot_flags_are_refused_in_one_line(tmp_path, capsys, search, flags, expected):
    from archforge.cli import main

    code = main(["search", str(space_path(tmp_path, search)), "--runs", str(tmp_path / "runs"), *flags])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("archforge search: error: ") and expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_space_says_what_a_oneshot_search_will_do(tmp_path, capsys):
    from archforge.cli import main

    path = space_path(tmp_path, "{dataset: digits, limit: 200, epochs: 3, seeds: 2, strategy: oneshot, oneshot: {retrain_top: 2}}")
    assert main(["space", str(path), "-n", "0", "--check", "0"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert ("search: oneshot over digits: one weight-sharing supernet (fair sampling, 3 epoch(s)) ranks up to 256 candidates, "
            "then the best 2 are trained stand-alone, 3 epoch(s) × 2 seed(s)") in out
    path = space_path(tmp_path, "{dataset: digits, strategy: oneshot}")
    assert main(["space", str(path), "-n", "0", "--check", "0"]) == 0
    assert "none is trained stand-alone (--retrain-top K trains the best K)" in " ".join(capsys.readouterr().out.split())


# --------------------------------------------------------------------------- end to end


def test_a_real_oneshot_search_through_the_command_line(tmp_path, capsys, monkeypatch):
    from archforge.cli import main

    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.chdir(tmp_path)
    code = main(["search", "placement_mnist", "--strategy", "oneshot", "--retrain-top", "1", "--seeds", "1", "--epochs", "1",
                 "--limit", "200", "--workers", "1", "--runs", str(tmp_path / "runs"), "--no-progress", "--report"])
    out, err = capsys.readouterr()
    assert code == 0, err
    run = load_run(tmp_path / "runs" / "placement_mnist")
    table = run.oneshot_table
    assert len(table) == run.oneshot.paths == 8  # placement_mnist: 3 stages of conv or attention, every candidate
    assert out.index("one-shot ranking of 8 candidates") < out.index("candidates trained stand-alone") < out.index("best: #")
    winner = table[0]
    assert winner["standalone_status"] == "complete" and winner["standalone_rank"] == 1
    assert winner["standalone_accuracy"] == run.best["accuracy"] and winner["hash"] == run.best["hash"]
    assert all(row["standalone_status"] is None for row in table[1:])
    report = tmp_path / "runs" / "placement_mnist" / "report"
    data = json.loads((report / "trials.json").read_text())
    assert data["oneshot"]["table"][0]["hash"] == winner["hash"] and data["oneshot"]["agreement"] is None
    assert candidate_hash(archforge.load_spec(report / "best.yaml")) == winner["hash"]
    assert (report / "oneshot.csv").read_text().count("\n") == 9
