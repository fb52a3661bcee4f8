"""The article's experiments (experiments/*.py): their arithmetic against hand computations, and a smoke run of each.

The attention the locality experiment recomputes must be what the blocks compute: proj(A·V)
has to reproduce each attention module's output. The distances are checked on attention
maps whose answer is known analytically; the intervals on numbers worked by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import re
import sys
import threading
from pathlib import Path

import pytest
import torch

import archforge

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `experiments` is a folder of scripts, not an installed package

from experiments import _common, locality  # noqa: E402


def _module(name: str):
    return importlib.import_module(f"experiments.{name}")


# --------------------------------------------------------------------------- attention of the locality experiment


def _scrambled_convit() -> torch.nn.Module:
    """The micro ConViT with gates and positional weights off their init, so both attention paths matter."""
    torch.manual_seed(0)
    model = archforge.build("convit_micro_28").eval()
    with torch.no_grad():
        for _, module in locality.attention_layers(model):
            if locality._is_gpsa(module):
                module.gating_param.copy_(torch.randn_like(module.gating_param) * 2)
                module.pos_proj.weight.add_(torch.randn_like(module.pos_proj.weight) * 0.3)
                module.pos_proj.bias.copy_(torch.randn_like(module.pos_proj.bias))
                module.qk.weight.mul_(5)  # sharper content attention than at init
    return model


def test_recomputed_attention_reproduces_every_attention_module():
    model = _scrambled_convit()
    images = torch.randn(3, 1, 28, 28)
    maps = locality.attention_maps(model, images)
    assert maps.names == [f"blocks.{i}.attn" for i in range(6)]
    assert [a.shape for a in maps.attention] == [(3, 4, 49, 49)] * 4 + [(3, 4, 50, 50)] * 2
    assert maps.max_error < 1e-5
    for attn in maps.attention:
        assert torch.allclose(attn.sum(dim=-1), torch.ones(()), atol=1e-5)
    # the check can fail: a wrong gate (σ(−λ) instead of σ(λ)) is caught
    gpsa = dict(locality.attention_layers(model))["blocks.1.attn"]
    with torch.no_grad():
        gpsa.gating_param.neg_()
        x = torch.randn(2, 49, 64)
        attn, v = locality.gpsa_attention(gpsa, x)
        gpsa.gating_param.neg_()
        wrong = gpsa.proj((attn @ v).transpose(1, 2).reshape(2, 49, 64))
        assert (wrong - gpsa(x)).abs().max() > 1e-3


def _brute_mean_distance(side: int, pixels: float) -> float:
    total = count = 0
    for a in range(side * side):
        for b in range(side * side):
            total += math.hypot(a // side - b // side, a % side - b % side) * pixels
            count += 1
    return total / count


def test_distances_of_known_attention_maps():
    grid, pixels = (7, 7), 4.0
    n = 49
    # uniform attention: the mean over all pairs of patch centres
    uniform = torch.full((1, 1, n, n), 1 / n)
    dist, cls = locality.distance_and_cls_mass(uniform, grid, pixels)
    assert dist.item() == pytest.approx(_brute_mean_distance(7, pixels))
    assert locality.uniform_distance(grid, pixels) == pytest.approx(_brute_mean_distance(7, pixels))
    assert cls.item() == 0
    # every query attends to itself: distance 0
    assert locality.distance_and_cls_mass(torch.eye(n)[None, None], grid, pixels)[0].item() == 0
    # every query attends to column 0 of its own row: |col| · 4 px, mean of 0..6 = 3 → 12 px
    to_first_column = torch.zeros(n, n)
    for q in range(n):
        to_first_column[q, (q // 7) * 7] = 1
    assert locality.distance_and_cls_mass(to_first_column[None, None], grid, pixels)[0].item() == pytest.approx(12.0)
    # a class token in front taking half of every row: reported as mass, left out of the distance
    with_cls = torch.zeros(1, 1, n + 1, n + 1)
    with_cls[0, 0, :, 0] = 0.5
    with_cls[0, 0, 1:, 1:] = 0.5 * to_first_column
    dist, cls = locality.distance_and_cls_mass(with_cls, grid, pixels)
    assert dist.item() == pytest.approx(12.0) and cls.item() == pytest.approx(0.5)


def test_locality_measures_gates_of_the_module():
    model = _scrambled_convit()
    out = locality.measure(model, torch.randn(4, 1, 28, 28), batch=3)
    gpsa = dict(locality.attention_layers(model))["blocks.2.attn"]
    assert out["layers"][2]["gate"] == pytest.approx(torch.sigmoid(gpsa.gating_param).tolist())
    assert [row["kind"] for row in out["layers"]] == ["gpsa"] * 4 + ["mhsa"] * 2
    assert out["max_error"] < 1e-5


# --------------------------------------------------------------------------- intervals and the docs section


def test_paired_interval_by_hand_and_no_interval_without_spread():
    p = _common.paired([1.0, 2.0, 4.0], [0.0, 0.0, 0.0])  # differences 1, 2, 4: mean 7/3, s = 1.528, t(2) = 4.303
    half = 4.303 * statistics_stdev([1.0, 2.0, 4.0]) / math.sqrt(3)
    assert (p.mean, p.low, p.high) == pytest.approx((7 / 3, 7 / 3 - half, 7 / 3 + half), abs=1e-3)
    assert not p.excludes_zero  # the interval [−1.46, 6.13] contains 0
    assert _common.paired([0.9, 0.8, 0.7], [0.85, 0.75, 0.65]) is None  # every difference 0.05: a zero-width interval
    assert _common.paired([0.5], [0.4]) is None  # one pair: no interval
    assert _common.difference_text(None, 0.05) == "+0.050 (not tested)"
    assert _common.difference_text(p, p.mean, digits=2).endswith("]")  # contains 0: no ✓
    assert _common.difference_text(_common.paired([3.0, 4.0, 5.0], [0.0, 0.0, 0.0]), 4.0, digits=2).endswith("✓")
    s = _common.stats([0.9, 0.92, 0.94])
    assert (s.mean, s.std) == pytest.approx((0.92, 0.02))
    assert (s.low, s.high) == pytest.approx((0.92 - 4.303 * 0.02 / math.sqrt(3), 0.92 + 4.303 * 0.02 / math.sqrt(3)), abs=1e-4)


def statistics_stdev(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# --------------------------------------------------------------------------- the data-efficiency schedule


def _args(**kw):
    base = {"quick": False, "seeds": 3, "scale": 1.0, "budget": "steps", "init": None, "lr": None}
    return argparse.Namespace(**{**base, **kw})


def test_every_fraction_gets_the_same_steps_and_warmup():
    de = _module("data_efficiency")
    n_train = 4000
    jobs = de.jobs_for(_args(), n_train)
    assert len(jobs) == 3 * len(de.FRACTIONS) * len(de.MODELS)
    full_steps = 4000 // 64  # 62 full batches of 64 per epoch of the full split
    for job in jobs:
        assert job.steps == 3 * full_steps and job.warmup_steps == 31  # 3 epochs, half an epoch of warm-up
        n = round(job.fraction * n_train)
        per_epoch = n // 64  # by hand: full batches only
        epochs, warmup = de.schedule(n, job)
        assert job.steps <= epochs * per_epoch < job.steps + per_epoch  # the fewest whole epochs that reach the budget
        assert round(warmup * per_epoch) == job.warmup_steps
    # with the same epochs instead, a 5% subset gets 20× fewer steps
    epochs_jobs = de.jobs_for(_args(budget="epochs"), n_train)
    assert {de.schedule(round(j.fraction * n_train), j)[0] for j in epochs_jobs} == {3}


def test_the_three_models_share_each_seeds_subset():
    de = _module("data_efficiency")
    jobs = de.jobs_for(_args(seeds=2), 4000)
    groups = {}
    for job in jobs:
        groups.setdefault((job.fraction, job.seed), []).append(job.model)
    assert all(sorted(models) == sorted(de.MODELS) for models in groups.values())
    data = de.load(de.QUICK_LIMIT)
    a, b, c = (de.subset(data, 0.5, seed) for seed in (0, 0, 1))
    assert torch.equal(a.train_index, b.train_index)  # same seed: the same images, whichever model trains on them
    assert not torch.equal(a.train_index, c.train_index)
    assert len(a.train_y) == round(0.5 * len(data.train_y))
    counts = torch.bincount(a.train_y, minlength=10), torch.bincount(data.train_y, minlength=10)
    assert (counts[0] * 2 - counts[1]).abs().max() <= 2  # stratified: half of every class, to rounding


# --------------------------------------------------------------------------- jobs, the cache, the docs section


def _square(job: "_SquareJob") -> dict:
    if job.x < 0:
        raise ValueError("negative")
    _square.calls += 1
    return {"y": job.x * job.x}


_square.calls = 0


@dataclasses.dataclass(frozen=True)
class _SquareJob:
    x: int


def test_jobs_resume_from_the_cache_and_one_failure_loses_nothing_else(tmp_path):
    jobs = [_SquareJob(x=2), _SquareJob(x=-1), _SquareJob(x=3)]
    _square.calls = 0
    first = _common.run_jobs(_square, jobs, workers=1, cache=tmp_path)
    assert first.results == [{"y": 4}, None, {"y": 9}] and first.cached == 0 and _square.calls == 2
    assert first.failures == [(jobs[1], "ValueError: negative")]
    again = _common.run_jobs(_square, [*jobs, _SquareJob(x=5)], workers=1, cache=tmp_path)
    assert again.results == [{"y": 4}, None, {"y": 9}, {"y": 25}]
    assert again.cached == 2 and _square.calls == 3  # only the new job trained; the failed one was tried again
    assert "1 training(s) failed" in _common.failures_text(again.failures, lambda j: f"x={j.x}")


def test_sections_are_replaced_in_place_and_others_kept(tmp_path):
    doc = tmp_path / "docs" / "experiments.md"
    _common.write_section(doc, "a", "first A")
    _common.write_section(doc, "b", "first B")
    _common.write_section(doc, "a", "second A\nwith two lines")
    text = doc.read_text()
    assert text.startswith("# Experiments")
    assert text.count("<!-- experiment:a -->") == 1 and text.count("<!-- /experiment:b -->") == 1
    assert "first A" not in text and text.index("second A") < text.index("first B")
    assert _common.read_section(doc, "a") == "second A\nwith two lines"


def test_sections_written_at_once_are_all_kept(tmp_path):
    doc = tmp_path / "experiments.md"
    threads = [threading.Thread(target=_common.write_section, args=(doc, f"s{i}", f"body {i}")) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(_common.read_section(doc, f"s{i}") == f"body {i}" for i in range(8))


# --------------------------------------------------------------------------- smoke runs


@pytest.mark.parametrize(("name", "extra", "images"), [
    ("data_efficiency", [], ["exp_data_efficiency.png"]),
    ("locality", [], ["exp_locality_gates.png", "exp_locality_distance.png"]),
    ("placement", ["--datasets", "mnist,long_range", "--recipes", "init reference,init pytorch", "--budget", "1"],
     ["exp_placement.png"]),
])
def test_quick_run_writes_its_section(name, extra, images, tmp_path, capsys):
    doc = tmp_path / "experiments.md"
    module = _module(name)
    assert module.main(["--quick", "--seeds", "2", "--workers", "1", "--out", str(doc), *extra]) == 0
    body = _common.read_section(doc, name)
    assert body is not None and body.startswith("## ")
    assert "- command: `python experiments/" in body and "- wall time:" in body and "torch " in body
    assert "failed" not in body
    for image in images:
        assert (tmp_path / "images" / image).stat().st_size > 1000
        assert f"](images/{image})" in body
    if name == "placement":  # both datasets ran, each with its own class count
        for dataset, classes in (("mnist", 10), ("long_range", 2)):
            assert f"{dataset} (classes {classes})" in body
            for recipe in ("init reference", "init pytorch"):
                assert f"### {dataset}, {recipe}\n" in body
        assert len(re.findall(r"^\| 1 \| \w+/\w+/\w+ \| ", body, re.M)) == 4  # every run ranked its candidate


def test_placement_refuses_bad_arguments_before_any_work(capsys):
    placement = _module("placement")
    for argv, message in ((["--limit", "0"], "--limit must be a positive whole number"),
                          (["--datasets", "mnist,nope"], "unknown dataset 'nope'"),
                          (["--space", "mnist=placement_grid"], "must be one space"),
                          (["--recipes", "init reference,"], "has an empty name")):
        with pytest.raises(SystemExit) as exit_:
            placement.main(["--quick", *argv])
        assert message in str(exit_.value)
    assert placement.main(["--quick", "--space", "no_such_space", "--datasets", "mnist"]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_oneshot_quick_run_writes_its_section(tmp_path):
    doc = tmp_path / "experiments.md"
    oneshot = _module("oneshot")
    argv = ["--quick", "--seeds", "2", "--workers", "1", "--tasks", "mnist", "--variants", "fair", "--out", str(doc)]
    assert oneshot.main(argv) == 0
    body = _common.read_section(doc, "oneshot")
    assert body is not None and body.startswith("## One-shot vs stand-alone")
    assert "| mnist | one stand-alone seed |" in body and "| mnist | one-shot, fair |" in body
    assert "failed" not in body
    # the grid's table lists the 8 placements, each with two supernet columns
    assert len(re.findall(r"^\| (conv|attn)/(conv|attn)/(conv|attn) \| ", body, re.M)) == 8


def test_oneshot_pair_measures_by_hand():
    oneshot = _module("oneshot")
    rows = {  # per placement, accuracies per seed: a is separably above c; b overlaps both
        "a": {"seeds": {"0": 0.90, "1": 0.91, "2": 0.92}},
        "b": {"seeds": {"0": 0.55, "1": 0.95, "2": 0.85}},
        "c": {"seeds": {"0": 0.50, "1": 0.51, "2": 0.52}},
    }
    assert oneshot.separable_pairs(rows) == [("a", "c")]
    assert oneshot.pair_agreement({"a": 0.6, "b": 0.1, "c": 0.5}, [("a", "c")]) == (1, 1)
    assert oneshot.pair_agreement({"a": 0.5, "b": 0.1, "c": 0.5}, [("a", "c")]) == (0, 1)  # a tie does not count
    # one seed against the mean of the others: seed 0 orders a > b > c, and so do the others' means (0.915, 0.90, 0.515)
    assert oneshot.seed_yardstick(rows)[0] == pytest.approx(1.0)


def test_oneshot_refuses_unknown_tasks_and_variants():
    oneshot = _module("oneshot")
    for argv in (["--tasks", "mnist,nope"], ["--variants", "fair,fair"], ["--calibration", "0"]):
        with pytest.raises(SystemExit):
            oneshot.main(["--quick", *argv])
