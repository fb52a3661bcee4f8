"""Reports: ranked table, CSV, JSON, plots, best.yaml and retrained weights, checked against the stored study."""

from __future__ import annotations

import csv
import json
import math
import statistics
import warnings
from types import SimpleNamespace

import pytest

import archforge
from archforge.search import candidate_hash, load_run, parse_space, search
from archforge.search.report import placement_matrix

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


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search(parse_space(SPACE, "rep.yaml"), evaluator=fake_evaluate, runs_dir=root, progress=False)
    return root / "rep"


def report(run_dir, tmp_path, *extra):
    from archforge.search.commands import cmd_report

    args = SimpleNamespace(run=str(run_dir), study=None, out=str(tmp_path / "out"), top=0, weights="--weights" in extra, json="--json" in extra)
    assert cmd_report(args) == 0
    return tmp_path / "out"


def test_report_files_hold_the_stored_numbers(run_dir, tmp_path, capsys):
    out = report(run_dir, tmp_path)
    printed = capsys.readouterr().out
    for name in ("trials.csv", "trials.json", "pareto.png", "placement.png", "best.yaml"):
        assert (out / name).exists(), name
    import optuna

    study = optuna.load_study(study_name="rep", storage=f"sqlite:///{run_dir / 'study.db'}")
    stored = {t.number: t for t in study.get_trials()}

    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == len(stored) == 8
    for row in rows:
        trial = stored[int(row["trial"])]
        outcome = trial.user_attrs["outcome"]
        assert row["hash"] == trial.user_attrs["candidate"]["hash"]
        assert row["status"] == outcome["status"]
        if outcome["status"] == "complete":
            assert float(row["accuracy"]) == outcome["accuracy"] == trial.values[0]
            assert int(row["params"]) == outcome["params"]
            assert float(row["latency_ms"]) == outcome["latency_ms"]
        else:
            assert row["accuracy"] == "" and row["error"] == "RuntimeError: boom"
        for name, value in trial.user_attrs["candidate"]["decisions"].items():
            assert row[f"decision:{name}"] == str(value)

    data = json.loads((out / "trials.json").read_text())
    ranking = data["ranking"]
    complete = sorted((t for t in stored.values() if t.user_attrs["outcome"]["status"] == "complete"), key=lambda t: -t.values[0])
    assert [r["trial"] for r in ranking if r["status"] == "complete"] == [t.number for t in complete]
    assert [r["rank"] for r in ranking if r["status"] == "complete"] == list(range(1, 8))
    assert ranking[-1]["status"] == "failed" and ranking[-1]["error"] == "RuntimeError: boom"
    assert data["best"]["accuracy"] == complete[0].values[0]
    assert data["compute"]["epochs_run"] == sum(t.user_attrs["outcome"]["epochs_run"] for t in stored.values()) == 14
    for trial in data["trials"]:
        assert trial["spec"] == stored[trial["number"]].user_attrs["candidate"]["spec"]

    for name in ("pareto.png", "placement.png"):
        blob = (out / name).read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 5000

    best = archforge.load_spec(out / "best.yaml")
    assert candidate_hash(best) == data["best"]["hash"] == complete[0].user_attrs["candidate"]["hash"]
    model = archforge.build(best)
    assert sum(p.numel() for p in model.parameters()) == data["best"]["params"]

    assert f"best: #{complete[0].number} {data['best']['hash']} accuracy {complete[0].values[0]:.4f}" in printed
    assert "1 failed:" in printed and "RuntimeError: boom" in printed


def test_placement_heat_map_is_the_mean_accuracy_per_decision_value(run_dir):
    run = load_run(run_dir)
    rows, columns, means, counts = placement_matrix(run)
    assert rows == ["width", "stage.block[0]", "stage.block[1]", "stage.block[2]"][:len(rows)] == ["width", "stage.block[0]", "stage.block[1]"]
    assert columns == ["4", "8", "conv", "skip_unit"]
    complete = [r for r in run.records if r.status == "complete"]
    for i, name in enumerate(rows):
        for j, column in enumerate(columns):
            accs = [r.accuracy for r in complete if str(r.decisions[name]) == column]
            assert counts[i][j] == len(accs)
            if accs:
                assert means[i][j] == pytest.approx(statistics.fmean(accs))
            else:
                assert math.isnan(means[i][j])


def test_report_json_summary_and_weights(run_dir, tmp_path, capsys):
    out = report(run_dir, tmp_path, "--json", "--weights")
    summary = json.loads(capsys.readouterr().out)
    assert summary["best"]["hash"] == summary["ranking"][0]["hash"]
    assert set(summary["files"]) == {"csv", "json", "pareto", "placement", "best", "candidates", "weights"}
    ranked = sorted((out / "candidates").glob("*.yaml"))
    assert [p.name for p in ranked] == [f"{r['rank']:02d}_{r['hash']}.yaml" for r in summary["ranking"] if r["status"] == "complete"]
    assert all(candidate_hash(archforge.load_spec(p)) == p.stem.split("_")[1] for p in ranked)
    model = archforge.load_checkpoint(out / "best.pt")
    assert candidate_hash(model.meta["archforge_graph"].spec) == summary["best"]["hash"]


def test_report_of_a_missing_run_is_an_error(tmp_path):
    from archforge.search import SearchError

    with pytest.raises(SearchError, match="no search run at"):
        load_run(tmp_path / "nothing")


def test_command_line_search_report_and_located_errors(tmp_path, capsys):
    from archforge.cli import main

    space = tmp_path / "cli.yaml"
    space.write_text(SPACE.replace("name: rep", "name: cli"))
    code = main(["search", str(space), "--evaluator", "test_report:fake_evaluate", "--runs", str(tmp_path / "runs"),
                 "--no-progress", "--report", "--budget", "4", "--strategy", "random", "--seed", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "best: #" in captured.out and "compute: " in captured.out
    assert captured.err.count("\n") >= 4  # one line per finished trial
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
