"""The search recovers the known answers of archforge.data.known_answer, on the CPU.

The driver must not be biased toward either family: on ``long_range`` (are two marks 15+ pixels
apart the same glyph?) attention in the last stage must win, and on ``local_texture`` (junction
textures: the label is in how strokes meet, a local conjunction) convolution must not be beaten.
Both run in the bundled space ``placement_grid`` (global self-attention units), the classifier
resized with ``params={"classes": ...}``. The fast tests train only one decision (a sub-space of
placement_grid with the other stages fixed to convolution, seed 0); the slow ones the full grid.
Margins are those measured (docs: known-answer tasks): all-conv stays at chance on long_range
(0.50–0.54) where conv/conv/attention reached 0.96–0.999 in five runs of six (seeds 0–2, both
inits; seed 2 under the reference init had not learned it after 5 epochs: 0.520). Seed 0 and one
thread make the fast test deterministic.
"""

from __future__ import annotations

from statistics import mean

import pytest
import yaml

import archforge
from archforge.search import parse_space
from archforge.spec.zoo import bundled_path

CLASSES = {"local_texture": 3, "long_range": 2}
#: What each task trains on: long_range is learned within 2–5 epochs of 4,000 images (seed and init
#: decide when), local_texture within 3 epochs of 2,400 (at 2 epochs of 1,200 all-conv is not yet there).
BUDGET = {
    "long_range": {"limit": 5000, "epochs": 5, "train": {"lr": 0.01, "batch_size": 64}},
    "local_texture": {"limit": 3000, "epochs": 3, "train": {"lr": 0.01, "batch_size": 64}},
}


def grid_space(fixed: dict[int, str] | None = None):
    """placement_grid; ``fixed``: stage index → unit, the other stages left to decide."""
    document = yaml.safe_load(bundled_path("placement_grid", "search space").read_text())
    if fixed:
        stage = next(n for n in document["nodes"] if n["id"] == "stage")
        nodes = []
        for index in range(stage["repeat"]):
            node = {"id": "stage" if index == 0 else f"stage_{index}",
                    "block": fixed.get(index, {"choice": ["conv_unit", "attention_unit"]}),
                    "args": {**stage["args"], "stride": 2 if index == 1 else 1}}
            nodes.append(node)
        position = document["nodes"].index(stage)
        document["nodes"][position:position + 1] = nodes
    return parse_space(yaml.safe_dump(document, sort_keys=False), "<placement_grid sub-space>")


def run_grid(dataset: str, space, seeds: int) -> list[dict]:
    budget = {**BUDGET[dataset], "train": {**BUDGET[dataset]["train"], "threads": 1, "latency_repeats": 0}}
    result = archforge.search(space, dataset=dataset, params={"classes": CLASSES[dataset]}, seeds=seeds, strategy="grid",
                              storage=":memory:", workers=1, progress=False, **budget)
    rows = [row for row in result.table if row["status"] == "complete"]
    assert len(rows) == len(result.table), result.failed
    return rows


def placement(row: dict) -> tuple[str, ...]:
    """The unit of each decided stage, ``conv`` or ``attention``, in stage order."""
    return tuple(value.removesuffix("_unit") for value in row["decisions"].values())


def test_long_range_attention_in_the_last_stage_wins():
    rows = run_grid("long_range", grid_space(fixed={0: "conv_unit", 1: "conv_unit"}), seeds=1)
    accuracy = {placement(row): row["accuracy"] for row in rows}
    assert set(accuracy) == {("conv",), ("attention",)}
    # measured (seed 0): 0.999 with attention, 0.48 with convolution (chance: no 3×3 stack sees both marks)
    assert accuracy[("attention",)] > 0.9 and accuracy[("conv",)] < 0.65, accuracy
    assert placement(rows[0]) == ("attention",)


def test_local_texture_convolution_is_not_beaten():
    # The last stage decides (cheap at 7×7); both placements keep convolutions in stages 1 and 2
    rows = run_grid("local_texture", grid_space(fixed={0: "conv_unit", 1: "conv_unit"}), seeds=1)
    accuracy = {placement(row): row["accuracy"] for row in rows}
    assert accuracy[("conv",)] > 0.95 and accuracy[("conv",)] >= accuracy[("attention",)] - 0.02, accuracy


def stage_effect(rows: list[dict], stage: int) -> float:
    """Mean accuracy with attention at ``stage`` minus mean accuracy with convolution there, over the other stages."""
    by = {unit: [r["accuracy"] for r in rows if placement(r)[stage] == unit] for unit in ("attention", "conv")}
    return mean(by["attention"]) - mean(by["conv"])


@pytest.mark.slow
def test_long_range_full_grid_needs_attention():
    rows = run_grid("long_range", grid_space(), seeds=1)
    accuracy = {placement(row): row["accuracy"] for row in rows}
    assert len(accuracy) == 8
    assert accuracy[("conv", "conv", "conv")] < 0.65  # no convolution sees both marks: chance
    assert accuracy[("conv", "conv", "attention")] > 0.9
    assert "attention" in placement(rows[0]) and stage_effect(rows, 2) > 0.1


@pytest.mark.slow
def test_local_texture_full_grid_all_conv_is_not_beaten():
    rows = run_grid("local_texture", grid_space(), seeds=1)
    all_conv = next(r for r in rows if placement(r) == ("conv", "conv", "conv"))
    assert len(rows) == 8 and rows[0]["accuracy"] - all_conv["accuracy"] < 0.02  # the best, or within seed noise of it
