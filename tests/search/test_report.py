"""Reports: CSV, JSON, plots, best.yaml and retrained weights, checked against the stored study."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
import warnings
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from test_ranking import add_trial, spec

import archforge
from archforge.errors import SearchError
from archforge.search import candidate_hash, load_run, parse_space, records, search
from archforge.search.plots import placement_matrix
from archforge.search.records import Outcome, RunMeta, TrialRecord
from archforge.search.compute import compute_text
from archforge.search.report import RunData, settings_of, write_report
from archforge.search.settings import SearchSettings

SPACE = """\
archforge: 1
name: rep
input: {shape: [1, 8, 8]}
params: {width: {choice: [4, 8]}}
define:
  skip_unit:
    params: {channels: 8}
    nodes:
      - {id: skip, block: identity}
nodes:
  - {id: stem, block: conv, args: {channels: $width}}
  - {id: stage, block: {choice: [conv, skip_unit], per_copy: true}, repeat: 2, args: {channels: $width}}
  - {id: head, block: classifier, args: {classes: 10}}
search: {epochs: 2, dataset: digits, limit: 300, train: {batch_size: 64, latency_repeats: 2}}
"""
PNG = b"\x89PNG\r\n\x1a\n"


def fake_evaluate(spec, data, config, on_epoch=None):
    d = spec.to_dict()
    convs = sum(n["block"] == "conv" for n in d["nodes"][1:])
    width = d["params"]["width"]
    if convs == 0 and width == 4:
        raise RuntimeError("boom")
    acc = 0.5 + 0.1 * convs + 0.01 * width
    history = [acc / 2, acc]
    for epoch, value in enumerate(history, 1):
        if on_epoch:
            on_epoch(epoch, value)
    summary = archforge.summarize(spec)
    return SimpleNamespace(accuracy=acc, epochs=2, history=history, stopped_early=False, params=summary.params, flops=summary.flops,
                           latency_ms=0.05 * width + 0.01 * convs, peak_memory_mb=2.0, train_time_s=0.01)


def stored_study(objectives=("accuracy",), seeds=1, **settings) -> optuna.Study:
    """An in-memory study holding a run as archforge stores one: RunMeta, and trials written through records."""
    config = SearchSettings(objectives=list(objectives), seeds=seeds, epochs=2, **settings)
    study = optuna.create_study(study_name="mem", directions=config.directions)
    meta = RunMeta(space="", space_file="mem.yaml", space_fingerprint="f", space_name="mem", settings=config.model_dump(mode="json"),
                   config_key="k", dataset="digits", decisions=[{"name": "width", "kind": "choice", "options": [4, 8, 12, 16], "size": 4}])
    study.set_user_attr(records.RUN_KEY, records.dump(meta))
    return study


def complete(width: int, accuracy: float, params: int, **extra) -> Outcome:
    fields = {"latency_ms": 0.1 * width, "epochs_run": 2, "epochs_full": 2, **extra}
    return Outcome(status="complete", accuracy=accuracy, params=params, **fields)


@pytest.fixture
def mem_run():
    study = stored_study()
    add_trial(study, 4, complete(4, 0.80, 300), [0.80])
    add_trial(study, 8, complete(8, 0.90, 600), [0.90])
    add_trial(study, 8, complete(8, 0.90, 600, duplicate_of=1, epochs_run=0, epochs_full=0), [0.90])
    add_trial(study, 12, Outcome(status="pruned", accuracy=0.5, params=900, epochs_run=1, epochs_full=2), state=TrialState.PRUNED)
    add_trial(study, 16, Outcome(status="failed", error="RuntimeError: boom", epochs_run=1), state=TrialState.FAIL)
    return RunData.from_study(study)


# --------------------------------------------------------------------------- a stored run, built by hand


def test_csv_columns_are_the_trial_record_rows(mem_run, tmp_path):
    path = mem_run.to_csv(tmp_path / "trials.csv")
    with path.open() as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    for record in mem_run.records:  # every record has every decision here; then the ranking's columns (one seed: no intervals)
        assert header == list(record.row()) + ["rank", "most_accurate"]
    assert len(rows) == 5
    # width 8 (0.90) ranks first and is the most accurate; its reuse (#2) stands for no candidate: empty cells;
    # the pruned and failed candidates have no rank
    assert [(line[-2], line[-1]) for line in rows] == [("2", "False"), ("1", "True"), ("", ""), ("", "False"), ("", "False")]
    for line, record in zip(rows, sorted(mem_run.records, key=lambda r: r.number)):
        cells = dict(zip(header, line))
        assert cells["number"] == str(record.number) and cells["status"] == record.status and cells["hash"] == record.hash
        assert cells["accuracy"] == ("" if record.accuracy is None else repr(record.accuracy))
        assert cells["decision.width"] == str(record.decisions["width"])


def test_json_holds_the_ranking_notes_and_every_trial(mem_run, tmp_path):
    data = json.loads(mem_run.to_json(tmp_path / "trials.json").read_text())
    assert [(r["trial"], r["rank"], r["status"], r["reuses"]) for r in data["ranking"]] == [
        (1, 1, "complete", 1), (0, 2, "complete", 0), (3, None, "pruned", 0), (4, None, "failed", 0)]
    assert data["best"]["trial"] == 1 and data["best"]["hash"] == candidate_hash(spec(8))
    assert data["notes"][0]["kind"] == "one_seed"
    assert [t["number"] for t in data["trials"]] == [0, 1, 2, 3, 4]
    assert all(t["spec"] == spec(t["decision.width"]) for t in data["trials"])
    # compute by hand: 2 + 2 + 0 (reused) + 1 (pruned) + 1 (failed) epochs run; full: 2 each, a failure as run
    assert data["compute"]["epochs_run"] == 6 and data["compute"]["epochs_full"] == 2 + 2 + 2 + 1
    assert data["compute"]["reused"] == 1 and data["compute"]["evaluated"] == 4


def test_report_files_and_png_plots(mem_run, tmp_path):
    files = write_report(mem_run, tmp_path / "out")
    assert set(files) == {"csv", "json", "pareto", "placement", "best", "candidates"}
    for kind in ("pareto", "placement"):
        blob = files[kind].read_bytes()
        assert blob[:8] == PNG and len(blob) > 5000
    assert candidate_hash(archforge.load_spec(files["best"])) == mem_run.best["hash"]
    assert sorted(p.name for p in files["candidates"].glob("*.yaml")) == [
        f"01_{candidate_hash(spec(8))}.yaml", f"02_{candidate_hash(spec(4))}.yaml"]
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left behind


def test_plots_of_an_empty_run_are_still_pngs(tmp_path):
    run = RunData.from_study(stored_study())
    files = write_report(run, tmp_path)
    assert set(files) == {"csv", "json", "pareto", "placement"}
    assert files["pareto"].read_bytes()[:8] == files["placement"].read_bytes()[:8] == PNG
    assert run.best is None and run.table == []


def test_importing_and_plotting_leaves_matplotlib_global_state_alone(tmp_path):
    code = f"""
import sys, matplotlib
before = matplotlib.get_backend()
import archforge.search.report, archforge.search.plots
from archforge.search.plots import Placement, plot_placement, plot_pareto
plot_placement(Placement(["width"], ["4", "8"], [[0.5, 0.7]], [[1, 2]]), {str(tmp_path / "p.png")!r})
plot_pareto([], {str(tmp_path / "q.png")!r})
assert matplotlib.get_backend() == before == "svg", (before, matplotlib.get_backend())
assert "matplotlib.pyplot" not in sys.modules
"""
    env = {**os.environ, "MPLBACKEND": "svg"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p.png").read_bytes()[:8] == (tmp_path / "q.png").read_bytes()[:8] == PNG


def test_multi_objective_pareto_rows_come_from_the_study(tmp_path):
    study = stored_study(objectives=("accuracy", "params"))
    for width, acc, params in ((4, 0.80, 300), (8, 0.90, 600), (12, 0.85, 900)):
        add_trial(study, width, complete(width, acc, params), [acc, params])
    run = RunData.from_study(study)
    assert sorted(run.front) == [0, 1]  # (0.85, 900) is dominated by (0.90, 600)
    assert [(r["trial"], r["pareto"]) for r in run.table] == [(1, True), (0, True), (2, False)]
    assert [r["trial"] for r in run.pareto] == [1, 0]
    assert write_report(run, tmp_path)["pareto"].read_bytes()[:8] == PNG


def test_a_complete_trial_whose_spec_does_not_validate_is_unreadable_and_not_the_best():
    study = stored_study()
    add_trial(study, 4, complete(4, 0.80, 300), [0.80])
    bad = {**spec(8), "nodes": "not a list of nodes"}
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[0.99], user_attrs=records.attrs(
        records.CandidateAttr(hash=candidate_hash(bad), decisions={"width": 8}, spec=bad), complete(8, 0.99, 10))))
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[0.95],
                                              user_attrs={"candidate": {"hash": "zz"}, "outcome": {"status": "complete"}}))
    run = RunData.from_study(study)
    assert run.best["trial"] == 0
    unreadable = {r.number: r.error for r in run.unreadable}
    assert set(unreadable) == {1, 2}
    assert unreadable[1].startswith("its candidate spec does not validate")


def test_damaged_or_foreign_studies_are_one_line_errors():
    foreign = optuna.create_study(study_name="foreign")
    with pytest.raises(SearchError, match="was not made by archforge search"):
        RunData.from_study(foreign)
    damaged = optuna.create_study(study_name="damaged")
    damaged.set_user_attr(records.RUN_KEY, {"space": 3})
    with pytest.raises(SearchError, match="study 'damaged'"):
        RunData.from_study(damaged)


def test_stored_settings_read_back_including_what_only_python_can_pass():
    config = SearchSettings(seeds=3, epochs=4, objectives=["accuracy", "latency_ms"], strategy=optuna.samplers.RandomSampler(),
                            train={"lr": 1e-3})
    meta = RunMeta(space="", space_file="s.yaml", space_fingerprint="f", space_name="s", config_key="k", dataset="digits",
                   settings={**config.model_dump(mode="json"), "storage": "/abs/path/study.db"})
    settings = settings_of(meta, "s")
    assert (settings.seeds, settings.epochs, settings.objectives, settings.train.lr) == (3, 4, ["accuracy", "latency_ms"], 1e-3)
    with pytest.raises(SearchError, match="settings archforge cannot read"):
        settings_of(meta.model_copy(update={"settings": {"epochs": "many"}}), "s")


def test_compute_text_says_what_was_saved(mem_run):
    text = compute_text(mem_run.compute)
    assert text.startswith("compute: 6 epochs run of the 7 that full training (2 epochs × 1 seed(s) per candidate) would have run")
    assert "saved 1 (14.3%)" in text and "1 pruned early" in text and "1 result reused" in text


def test_compute_counts_interrupted_seeds_and_the_workers_driver_overhead(mem_run):
    study = mem_run.study
    seed = records.SeedResult(seed=0, status="ok", accuracy=0.6, epochs_run=2)
    candidate = records.CandidateAttr(hash=candidate_hash(spec(12)), decisions={"width": 12}, spec=spec(12))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=records.attrs(candidate, seed)))
    study.set_user_attr(f"{records.WORKER_STATS_PREFIX}host:1:0:0", {"wall_s": 10.0, "eval_s": 8.0, "trials": 3})
    study.set_user_attr(f"{records.WORKER_STATS_PREFIX}host:2:0:0", {"wall_s": "ten", "eval_s": 8.0})  # unreadable: left out
    compute = RunData.from_study(study).compute
    assert compute["interrupted"] == 1 and compute["epochs_run"] == 6 + 2
    assert compute["driver_overhead"] == pytest.approx((10.0 - 8.0) / 10.0)


def test_report_of_a_missing_run_is_an_error(tmp_path):
    with pytest.raises(SearchError, match="no search run at"):
        load_run(tmp_path / "nothing")


# --------------------------------------------------------------------------- a real search (through the driver)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search(parse_space(SPACE, "rep.yaml"), evaluator=fake_evaluate, runs_dir=root, progress=False)
    return root / "rep"


def test_report_files_hold_the_stored_numbers(run_dir, tmp_path):
    run = load_run(run_dir)
    out = tmp_path / "out"
    files = write_report(run, out)
    assert set(files) == {"csv", "json", "pareto", "placement", "best", "candidates"}
    study = optuna.load_study(study_name="rep", storage=f"sqlite:///{run_dir / 'study.db'}")
    stored = {t.number: t for t in study.get_trials()}

    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == len(stored) == 8
    for row in rows:
        trial = stored[int(row["number"])]
        outcome = trial.user_attrs["outcome"]
        assert row["hash"] == trial.user_attrs["candidate"]["hash"]
        assert row["status"] == outcome["status"]
        if outcome["status"] == "complete":
            assert float(row["accuracy"]) == outcome["accuracy"] == trial.values[0]
            assert int(row["params"]) == outcome["params"]
            assert float(row["latency_ms"]) == outcome["latency_ms"]
        else:
            assert row["accuracy"] == "" and "RuntimeError: boom" in row["error"]
        for name, value in trial.user_attrs["candidate"]["decisions"].items():
            assert row[f"decision.{name}"] == str(value)

    data = json.loads((out / "trials.json").read_text())
    ranking = data["ranking"]
    complete_trials = sorted((t for t in stored.values() if t.user_attrs["outcome"]["status"] == "complete"), key=lambda t: -t.values[0])
    assert [r["trial"] for r in ranking if r["status"] == "complete"] == [t.number for t in complete_trials]
    assert [r["rank"] for r in ranking if r["status"] == "complete"] == list(range(1, 8))
    assert ranking[-1]["status"] == "failed" and "RuntimeError: boom" in ranking[-1]["error"]
    assert data["best"]["accuracy"] == complete_trials[0].values[0]
    assert data["compute"]["epochs_run"] == sum(t.user_attrs["outcome"]["epochs_run"] for t in stored.values())
    for trial in data["trials"]:
        assert trial["spec"] == stored[trial["number"]].user_attrs["candidate"]["spec"]

    best = archforge.load_spec(out / "best.yaml")
    assert candidate_hash(best) == data["best"]["hash"] == complete_trials[0].user_attrs["candidate"]["hash"]
    model = archforge.build(best)
    assert sum(p.numel() for p in model.parameters()) == data["best"]["params"]


def test_placement_heat_map_is_the_mean_accuracy_per_decision_value(run_dir):
    run = load_run(run_dir)
    rows, columns, means, counts, _ = placement_matrix(run.records, run.meta.decisions)
    assert rows == ["width", "stage.block[0]", "stage.block[1]"]
    assert columns == ["4", "8", "conv", "skip_unit"]
    complete_records = [r for r in run.records if r.status == "complete"]
    for i, name in enumerate(rows):
        for j, column in enumerate(columns):
            accs = [r.accuracy for r in complete_records if str(r.decisions[name]) == column]
            assert counts[i][j] == len(accs)
            if accs:
                assert means[i][j] == pytest.approx(statistics.fmean(accs))
            else:
                assert math.isnan(means[i][j])


def test_placement_matrix_without_declared_decisions_uses_the_values_taken():
    made = [TrialRecord(number=i, state="COMPLETE", status="complete", accuracy=a, decisions={"d": v})
            for i, (v, a) in enumerate([("x", 0.5), ("y", 0.7), ("x", 0.9), ("z", 0.1)])]
    made.append(TrialRecord(number=9, state="COMPLETE", status="complete", accuracy=0.3, decisions={"d": "x"}, duplicate_of=0))
    placement = placement_matrix(made)
    assert placement.rows == ["d"] and placement.columns == ["x", "y", "z"]
    assert placement.means == [[pytest.approx(0.7), 0.7, 0.1]] and placement.counts == [[2, 1, 1]]


def test_retrained_weights_are_the_best_candidate(run_dir, tmp_path):
    run = load_run(run_dir)
    files = write_report(run, tmp_path / "out", weights=True)
    ranked = sorted(files["candidates"].glob("*.yaml"))
    assert [p.name for p in ranked] == [f"{r['rank']:02d}_{r['hash']}.yaml" for r in run.table if r["status"] == "complete"]
    assert all(candidate_hash(archforge.load_spec(p)) == p.stem.split("_")[1] for p in ranked)
    model = archforge.load_checkpoint(files["weights"])
    assert candidate_hash(model.meta["archforge_graph"].spec) == run.best["hash"]


def test_report_command_prints_the_ranking_and_writes_the_files(run_dir, tmp_path, capsys):
    from archforge.cli import main

    assert main(["report", str(run_dir), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    run = load_run(run_dir)
    best = run.best
    assert f"best: #{best['trial']} {best['hash']} accuracy {best['accuracy']:.4f}" in printed
    assert "1 failed:" in printed and "RuntimeError: boom" in printed
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"trials.csv", "trials.json", "pareto.png", "placement.png", "best.yaml"}


def test_command_line_search_report_and_located_errors(tmp_path, capsys):
    from archforge.cli import main

    space = tmp_path / "cli.yaml"
    space.write_text(SPACE.replace("name: rep", "name: cli"))
    code = main(["search", str(space), "--evaluator", "test_report:fake_evaluate", "--runs", str(tmp_path / "runs"),
                 "--no-progress", "--report", "--budget", "4", "--strategy", "random", "--seed", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "best: #" in captured.out and "compute: " in captured.out
    report_dir = tmp_path / "runs" / "cli" / "report"
    assert {p.name for p in report_dir.iterdir()} >= {"trials.csv", "trials.json", "pareto.png", "placement.png", "best.yaml"}
    run = load_run(tmp_path / "runs" / "cli")
    assert len([r for r in run.records if r.counted]) == 4

    assert main(["space", str(space), "--json", "--samples", "1"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["candidates"] == 8 and len(info["samples"]) == 1

    bad = tmp_path / "bad.yaml"
    bad.write_text(SPACE.replace("{choice: [4, 8]}", "{choice: []}"))
    assert main(["space", str(bad)]) == 1
    assert capsys.readouterr().err.strip() == f"{bad}:4:26: 'choice' needs a non-empty list of options"
    assert main(["search", str(space), "--runs", str(tmp_path / "runs"), "--epochs", "5", "--evaluator", "test_report:fake_evaluate"]) == 1
    assert "other settings (epochs 2 → 5)" in capsys.readouterr().err
