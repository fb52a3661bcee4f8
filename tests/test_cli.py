"""The command line as a user runs it: exit codes, compiler-style errors, JSON output, saved models."""

import json
import subprocess
import sys

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
