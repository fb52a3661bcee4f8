"""The command line as a user runs it: exit codes, compiler-style errors, JSON output, saved models."""

import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import archforge
from conftest import SPECS

RESNET_TINY = SPECS / "models" / "resnet_tiny.yaml"


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "archforge", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_validate_ok():
    result = run("validate", RESNET_TINY)
    assert result.returncode == 0, result.stderr
    assert "ok: resnet_tiny, 28 nodes, input (B, 3, 32, 32) → output (B, 10)" in result.stdout


def test_validate_error_is_one_compiler_style_line(spec_file):
    path = spec_file("archforge: 1\nname: bad\ninput: {shape: [3, 8, 8]}\nnodes:\n  - {id: a, block: convv}\n")
    result = run("validate", path)
    assert result.returncode == 1  # what was checked is wrong (2 is for usage errors)
    assert result.stderr == f"{path}:5:20: unknown block 'convv' in node 'a' (did you mean 'conv'?)\n"
    assert result.stdout == ""


def test_missing_file_is_a_clean_error(tmp_path):
    result = run("summary", tmp_path / "nope.yaml")
    assert result.returncode == 1
    assert "cannot read spec" in result.stderr and "Traceback" not in result.stderr


def test_summary_json_matches_the_library():
    result = run("summary", RESNET_TINY, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    summary = archforge.summarize(RESNET_TINY)
    assert data["params"] == summary.params == sum(p.numel() for p in archforge.build(RESNET_TINY).parameters())
    assert data["flops"] == summary.flops and data["macs"] == summary.flops // 2
    assert [n["path"] for n in data["nodes"]][:3] == ["stem", "stage1[0].conv1", "stage1[0].conv2"]
    assert data["nodes"][-1] == {"path": "head", "module": "head", "block": "classifier", "family": "head", "layout": "vector",
                                 "shape": [10], "params": 650, "flops": 1280}


def test_summary_table_has_totals():
    result = run("summary", RESNET_TINY)
    assert result.returncode == 0, result.stderr
    assert "params 175,258" in result.stdout and "stage1[1].conv2" in result.stdout


def test_build_writes_an_exported_program_and_a_checkpoint(tmp_path):
    exported, checkpoint = tmp_path / "model.pt2", tmp_path / "model.pt"
    assert run("build", RESNET_TINY, "-o", exported).returncode == 0
    assert run("build", RESNET_TINY, "-o", checkpoint).returncode == 0
    x = torch.randn(3, 3, 32, 32)
    program = torch.export.load(exported).module()
    model = archforge.load_checkpoint(checkpoint).eval()
    assert program(x).shape == (3, 10)
    assert model(x).shape == (3, 10)
    data = torch.load(checkpoint, weights_only=True)
    assert archforge.parse_spec(data["spec"]).name == "resnet_tiny"


TINY = "archforge: 1\nname: tiny\ninput: {shape: [3, 8, 8]}\nnodes:\n  - {id: stem, block: linear, args: {features: 4}}\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is there to build on")
def test_build_on_a_device_this_machine_lacks_is_one_line_before_any_work(tmp_path, capsys, spec_file):
    out = tmp_path / "tiny.pt"
    code, stdout, err = cli(capsys, "build", spec_file(TINY), "--device", "cuda", "-o", out)
    assert code == 1 and stdout == ""
    assert err.startswith("error: device 'cuda' is not available: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and not out.exists()


def test_build_on_no_device_at_all_is_one_line(tmp_path, capsys, spec_file):
    code, _, err = cli(capsys, "build", spec_file(TINY), "--device", "nope", "-o", tmp_path / "tiny.pt")
    assert code == 1 and err.startswith("error: device 'nope' is not a torch device") and err.count("\n") == 1, err
    assert not (tmp_path / "tiny.pt").exists()


def test_build_on_the_meta_device_is_refused_it_would_write_no_weights(tmp_path, capsys, spec_file):
    code, _, err = cli(capsys, "build", spec_file(TINY), "--device", "meta", "-o", tmp_path / "tiny.pt")
    assert code == 1 and err.startswith("error: device 'meta' holds no weights") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == [tmp_path / "spec.yaml"]


def test_build_writes_the_weights_it_was_given(tmp_path, capsys, spec_file):
    # Every tensor gets values of the test's own, distinct from any initialisation.
    names = archforge.build(spec_file(TINY)).state_dict()
    weights = {name: torch.arange(t.numel(), dtype=torch.float32).reshape(t.shape) / 7 for name, t in names.items()}
    torch.save(weights, tmp_path / "tiny.pth")
    out = tmp_path / "tiny.pt"
    code, stdout, err = cli(capsys, "build", spec_file(TINY), "--weights", tmp_path / "tiny.pth", "-o", out)
    assert code == 0, err
    assert stdout.rstrip().endswith(f"weights from {tmp_path / 'tiny.pth'}")
    loaded = archforge.load_checkpoint(out).state_dict()
    assert loaded.keys() == weights.keys() and all(torch.equal(loaded[k], weights[k]) for k in weights)


def test_build_with_weights_that_do_not_fit_is_one_error_line_and_no_file(tmp_path, capsys, spec_file):
    weights = archforge.build(spec_file(TINY)).state_dict()
    first = next(iter(weights))
    weights[first] = torch.zeros(1, 1)
    torch.save(weights, tmp_path / "bad.pth")
    code, _, err = cli(capsys, "build", spec_file(TINY), "--weights", tmp_path / "bad.pth", "-o", tmp_path / "tiny.pt")
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and first in err, err
    assert not (tmp_path / "tiny.pt").exists()


# --------------------------------------------------------------------------- search spaces, searches, reports

SPACE_HEAD = "archforge: 1\nname: {name}\ninput: {{shape: {shape}}}\n"
HEAD_NODE = "  - {id: head, block: classifier, args: {classes: 10}}\n"


def space_file(tmp_path, nodes: str, search: str = "{dataset: digits, limit: 200}", *, name="cli_space", shape="[1, 8, 8]", params=""):
    path = tmp_path / f"{name}.yaml"
    path.write_text(SPACE_HEAD.format(name=name, shape=shape) + params + "nodes:\n" + nodes + HEAD_NODE + f"search: {search}\n")
    return path


def cli(capsys, *argv):
    """``main(argv)`` in this process: exit status, stdout, stderr."""
    from archforge.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_space_reports_an_unknown_block_among_the_options_once(tmp_path, capsys):
    # Two copies decided separately among conv and a misspelling: of the 4 candidates, only conv/conv builds.
    path = space_file(tmp_path, "  - {id: stage, block: {choice: [conv, convv], per_copy: true}, repeat: 2, args: {channels: 4}}\n")
    code, out, err = cli(capsys, "space", path, "-n", "0")
    assert (out + err).count("unknown block 'convv'") == 1 and "shape check" not in out + err
    assert code == 0 and "checked 4 candidate(s) (no constraints): 1 valid, 3 do not fit, 0 rejected by constraint" in out
    code, out, _ = cli(capsys, "space", path, "--json")
    info = json.loads(out)
    assert (info["checked"], info["valid"], info["do_not_fit"], info["rejected_by_constraint"]) == (4, 1, 3, 0)
    assert [(p["kind"], p["count"]) for p in info["problems"]] == [("do not fit", 3)]


def test_space_exits_1_when_no_checked_candidate_can_be_trained(tmp_path, capsys):
    path = space_file(tmp_path, "  - {id: a, block: {choice: [convv, convvv]}, args: {channels: 4}}\n")
    code, out, err = cli(capsys, "space", path, "-n", "0")
    assert code == 1 and "0 valid, 2 do not fit, 0 rejected by constraint" in out
    assert out.count("unknown block 'convv'") == 1 and out.count("unknown block 'convvv'") == 1
    assert err == "error: none of the 2 checked candidates of 'cli_space' can be trained: 2 do not fit, 0 rejected by constraint; " \
                  "a search would train nothing\n"
    # A 3x3 conv to 4 or 8 channels has 1*4*9 + 2*4 = 44 or 88 parameters (weights, BN): both above 10.
    path = space_file(tmp_path, "  - {id: a, block: conv, args: {channels: {choice: [4, 8]}}}\n",
                      "{dataset: digits, constraints: {max_params: 10}}", name="tight")
    code, out, err = cli(capsys, "space", path, "-n", "0")
    assert code == 1 and "0 valid, 0 do not fit, 2 rejected by constraint" in out and "> max_params 10" in out
    assert err.startswith("error: none of the 2 checked candidates of 'tight' can be trained")


@pytest.mark.parametrize("nodes, search, shape, expected", [
    pytest.param("", "{dataset: digits, train: {batchsize: 64}}", "[1, 8, 8]", r":6:\d+: .*'batchsize'.*did you mean 'batch_size'", id="a typo under train"),
    pytest.param("", "{dataset: digits}", "[3, 8, 8]", r":3:\d+: the space's input shape \[3, 8, 8\] does not match dataset 'digits'",
                 id="input shape vs dataset"),
    pytest.param("", "{dataset: no_such_data}", "[1, 8, 8]", r"no_such_data", id="an unknown dataset"),
    pytest.param("  - {id: d, block: dropout, args: {p: {float: [0.1, 0.5]}}}\n", "{dataset: digits, strategy: grid}", "[1, 8, 8]",
                 r"grid", id="grid over a continuous range"),
])
def test_space_checks_what_search_refuses_before_storing_anything(tmp_path, capsys, nodes, search, shape, expected):
    path = space_file(tmp_path, nodes, search, shape=shape)
    code, out, err = cli(capsys, "space", path)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err and re.search(expected, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # nothing stored


FLAGS = ["--strategy", "random", "--budget", "5", "--objectives", "accuracy,params", "--max-params", "1e5", "--min-flops", "10",
         "--proxy", "synflow", "--proxy-keep", "0.5", "--evolution", "population=4", "--seed", "7", "--dataset", "digits",
         "--limit", "300", "--val-fraction", "0.25", "--epochs", "3", "--seeds", "2", "--train", "lr=0.01", "--train", "augment=false",
         "--batch-size", "64", "--device", "cpu", "--name", "run1", "--workers", "2", "--executor", "local"]
SECTION = """\
{strategy: random, budget: 5, objectives: [accuracy, params], constraints: {max_params: 1.0e+5, min_flops: 10},
 proxy: {score: synflow, keep: 0.5}, evolution: {population: 4}, seed: 7, dataset: digits, limit: 300, val_fraction: 0.25,
 epochs: 3, seeds: 2, train: {lr: 0.01, augment: false, batch_size: 64, device: cpu}, name: run1,
 workers: 2, executor: local}"""


def flag_settings(space_path, *flags):
    from archforge.cli import parser
    from archforge.cli.search_flags import search_overrides
    from archforge.search import load_space

    space = load_space(space_path)
    args = parser().parse_args(["search", str(space_path), *flags])
    return space.settings.merged(**search_overrides(args, space.settings))


def test_flags_build_the_settings_the_yaml_section_builds(tmp_path):
    from archforge.search import load_space

    plain = space_file(tmp_path, "", "{}", name="plain")
    written = space_file(tmp_path, "", SECTION, name="written")
    assert flag_settings(plain, *FLAGS).model_dump() == load_space(written).settings.model_dump()
    assert flag_settings(written).model_dump() == load_space(written).settings.model_dump()  # no flag: the section as written


def test_flags_update_nested_sections_keeping_the_spaces_other_keys(tmp_path):
    from archforge.search import load_space

    path = space_file(tmp_path, "", "{constraints: {max_flops: 1000000}, train: {lr: 0.003, batch_size: 32}, proxy: {score: naswot, sample: 16}}")
    expected = space_file(tmp_path, "", "{constraints: {max_flops: 1000000, max_params: 50000}, train: {lr: 0.003, batch_size: 64}, "
                                        "proxy: {score: naswot, sample: 16, keep: 0.5}}", name="expected")
    got = flag_settings(path, "--max-params", "5e4", "--train", "batch_size=64", "--proxy-keep", "0.5")
    assert got.model_dump() == load_space(expected).settings.model_dump()
    assert flag_settings(path, "--proxy", "none", "--pruner", "none").proxy is None
    assert flag_settings(path, "--param", "classes=2", "--param", "width=8", "--param", "classes=3").params == {"classes": 3, "width": 8}
    got = flag_settings(path, "--init", "pytorch", "--lr", "auto")
    assert (got.train.init, got.train.lr) == ("pytorch", "auto")


@pytest.mark.parametrize("flags, expected", [
    (["--train", "lr=-1"], "train.lr: input should be greater than 0"),
    (["--lr", "fast"], "expected a number, got 'fast', or 'auto'"),
    (["--init", "timm"], "invalid choice: 'timm'"),
    (["--param", "classes"], "expected KEY=VALUE, got 'classes'"),
    (["--lr", "0.1", "--train", "lr=0.2"], "--lr 0.1 and --train lr=0.2 disagree"),
    (["--proxy-sample", "5"], "add --proxy synflow or naswot"),
    (["--epochs", "100000"], "limits.MAX_EPOCHS = 10,000 (from archforge.search import limits)"),
    (["--train", "batchsize=64"], "unknown train setting 'batchsize' (did you mean 'batch_size'?)"),
    (["--train", "epochs=3"], "use --epochs"),
])
def test_a_bad_flag_value_is_one_usage_error_line(tmp_path, capsys, flags, expected):
    path = space_file(tmp_path, "")
    code, out, err = cli(capsys, "search", path, "--runs", tmp_path / "runs", *flags)
    assert code == 2 and out == ""
    assert err.startswith("archforge search: error: ") and expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_the_command_line_leaves_warnings_and_optuna_logging_as_it_found_them(tmp_path, capsys):
    import warnings

    import optuna

    path = space_file(tmp_path, "", "{dataset: digits}")
    show, filters, level = warnings.showwarning, list(warnings.filters), optuna.logging.get_verbosity()
    assert cli(capsys, "space", path)[0] == 0
    assert cli(capsys, "search", path, "--train", "lr=-1")[0] == 2
    assert warnings.showwarning is show and warnings.filters == filters and optuna.logging.get_verbosity() == level
    # the libraries first: torch and numpy add warning filters of their own when imported
    code = ("import warnings, torch, numpy, optuna, pydantic, rich, yaml\n"
            "show, filters = warnings.showwarning, list(warnings.filters)\n"
            "import archforge, archforge.cli, archforge.cli.search_commands, archforge.cli.tables\n"
            "assert warnings.showwarning is show and warnings.filters == filters")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).returncode == 0


def fake_evaluate(spec, data, config, on_epoch=None, *, bonus=0.0):
    """A trained candidate without training: accuracy grows with the width, by hand (plus ``bonus``)."""
    width = spec.to_dict()["nodes"][0]["args"]["channels"]
    accuracy = 0.5 + width / 100 + bonus
    if on_epoch:
        on_epoch(1, accuracy)
    summary = archforge.summarize(spec)
    return SimpleNamespace(accuracy=accuracy, epochs=1, history=[accuracy], stopped_early=False, params=summary.params,
                           flops=summary.flops, latency_ms=0.125 * width, peak_memory_mb=1.0, train_time_s=0.01)


def test_search_and_report_print_the_whole_ranking(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    path = space_file(tmp_path, "  - {id: a, block: conv, args: {channels: {choice: [4, 8, 16]}}}\n",
                      "{dataset: digits, limit: 200, epochs: 1, train: {latency_repeats: 0}}")
    code, out, err = cli(capsys, "search", path, "--runs", tmp_path / "runs", "--evaluator", "test_cli:fake_evaluate", "--no-progress")
    assert code == 0, err
    for width, params in ((4, 1 * 4 * 9 + 2 * 4 + 4 * 10 + 10), (8, 1 * 8 * 9 + 2 * 8 + 8 * 10 + 10), (16, 1 * 16 * 9 + 2 * 16 + 16 * 10 + 10)):
        assert f"{0.5 + width / 100:.4f}" in out and f"{params:,}" in out
    assert "…" not in out and "best: #" in out
    code, report, err = cli(capsys, "report", tmp_path / "runs" / "cli_space")
    assert code == 0, err
    table = lambda text: text[text.index("cli_space: 3 candidates"):text.index("compute:")]  # noqa: E731
    assert table(report) == table(out)


def noisy_evaluate(spec, data, config, on_epoch=None):
    """As fake_evaluate, 4 points higher on odd seeds: each candidate's seeds are mean ± 0.02."""
    return fake_evaluate(spec, data, config, on_epoch, bonus=0.04 * (config.seed % 2))


def test_report_with_seeds_shows_intervals_marks_and_effects(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    path = space_file(tmp_path, "  - {id: a, block: conv, args: {channels: {choice: [4, 16, 20]}}}\n",
                      "{dataset: digits, limit: 200, epochs: 1, seeds: 2, train: {latency_repeats: 0}}")
    code, out, err = cli(capsys, "search", path, "--runs", tmp_path / "runs", "--evaluator", "test_cli:noisy_evaluate", "--no-progress")
    assert code == 0, err
    code, report, err = cli(capsys, "report", tmp_path / "runs" / "cli_space")
    assert code == 0, err
    # By hand: width 20 has seeds 0.70, 0.74 (mean 0.72, s = 0.028284, 95% interval 0.72 ± 12.706·0.02 = [0.4659, 0.9741]).
    # Against it (Welch, equal variances: ν = 2, t = 4.303, se = 0.028284, half-width 0.1217):
    #   width 16 (0.68): 0.04 ± 0.1217 contains 0: not separable (≈); width 4 (0.56): 0.16 ± 0.1217 excludes 0: separable.
    lines = {w: next(line for line in report.splitlines() if f"{0.5 + w / 100 + 0.02:.4f} ± 0.0283" in line) for w in (4, 16, 20)}
    assert "[0.4659, 0.9741]" in lines[20] and " best " in f"{lines[20]} "
    assert "≈" in lines[16] and "<" in lines[4] and "≈" not in lines[4] and "best" not in lines[4]
    assert "best = the most accurate candidate, the reference; ≈ = not separable from it at 95%; < = separably less accurate" in (
        " ".join(report.split()))
    assert "note: 1 candidate is not separable at 95% from the best" in report
    # effects against the first option (4): +12 and +16 points, one pair each, Welch over 2 seeds each:
    # 0.12 ± 4.303 · 0.028284 = [−0.17, +24.17] points; 0.16 ± 0.1217 = [+3.8, +28.2].
    assert "a.channels = 20 instead of 4: +16.0 points [+3.8, +28.2] (1 pair × 2 seeds)" in report
    assert "a.channels = 16 instead of 4: +12.0 points [−0.2, +24.2] (1 pair × 2 seeds)" in report
    assert report.index("instead of 4: +12.0") < report.index("instead of 4: +16.0")  # in the order of the options
