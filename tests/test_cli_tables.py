"""Ranking tables at the widths of real terminals: metrics in full, decisions folded and abbreviated, never an ellipsis."""

from __future__ import annotations

import io
import itertools

import pytest
from rich.console import Console

from archforge.cli.tables import abbreviations, fold, print_ranking, ranking_table

PLACEMENT = ["stage.block[0]", "stage.block[1]", "stage.block[2]"]
CONV, ATTN = "conv_unit", "attention_unit"


def placement_rows(*, seeds: int = 1, pruned: bool = False) -> list[dict]:
    """Eight candidates of a placement search, each number chosen by hand to be wide."""
    rows = []
    for i, blocks in enumerate(itertools.product([CONV, ATTN], repeat=3)):
        rows.append({
            "rank": i + 1, "trial": 100 + i, "hash": f"{i:x}" * 12, "status": "complete",
            "accuracy": 0.9 + i / 100, "accuracy_std": 0.0012 if seeds > 1 else None, "n_seeds": seeds,
            "params": 123_457 * (i + 1), "flops": 98_765_432 * (i + 1), "latency_ms": 1.25 + i, "epochs_run": 3, "epochs_full": 3,
            "pareto": i % 2 == 0, "decisions": dict(zip(PLACEMENT, blocks), width=16 * (i % 3 + 1)),
        })
    if pruned:
        rows[-1].update(rank=None, status="pruned", epochs_run=1)
    return rows


def expected_metrics(row: dict, objectives: list[str]) -> list[str]:
    """The metric texts a reader must find in full, written independently of the table code."""
    accuracy = f"{row['accuracy']:.4f}" + (f" ± {row['accuracy_std']:.4f}" if row["n_seeds"] > 1 else "")
    texts = [accuracy, f"{row['params']:,}", f"{row['latency_ms']:.2f}", f"{row['epochs_run']}/{row['epochs_full']}", row["hash"]]
    if "flops" in objectives:
        texts.append(f"{row['flops']:,}")
    return texts


def render(rows, width, objectives, notes=()):
    console = Console(width=width, record=True, file=io.StringIO())
    ranking = print_ranking(console, rows, objectives=objectives, names=[*PLACEMENT, "width"], title="placement: 8 candidates", notes=notes)
    return ranking, console.export_text()


CASES = [
    pytest.param(["accuracy"], 1, False, id="one objective"),
    pytest.param(["accuracy", "params"], 3, False, id="two objectives, three seeds"),
    pytest.param(["accuracy", "params", "flops"], 3, True, id="three objectives, a pruned candidate"),
]


@pytest.mark.parametrize("width", [80, 100, 160])
@pytest.mark.parametrize("objectives, seeds, pruned", CASES)
def test_every_metric_is_shown_in_full_and_nothing_is_cut(width, objectives, seeds, pruned):
    rows = placement_rows(seeds=seeds, pruned=pruned)
    ranking, text = render(rows, width, objectives, notes=["ties broken by cost"])
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines())
    for row in rows:
        for metric in expected_metrics(row, objectives):
            assert metric in text, (ranking.layout, metric)
    assert "note: ties broken by cost" in text
    if pruned:
        assert "pruned" in text


@pytest.mark.parametrize("width", [80, 100, 160])
def test_placement_decisions_are_one_column_with_a_consistent_legend(width):
    rows = placement_rows()
    ranking, text = render(rows, width, ["accuracy"])
    if ranking.layout == "columns":
        assert "conv_unit/attention_unit/conv_unit" in text and "c=conv_unit" not in text
    else:
        assert ranking.legend == {"c": CONV, "a": ATTN}
        assert "c=conv_unit a=attention_unit" in text
    short = {CONV: "c", ATTN: "a"} if ranking.legend else {CONV: CONV, ATTN: ATTN}
    for row in rows:
        assert "/".join(short[row["decisions"][name]] for name in PLACEMENT) in text
    assert "stage.block[0]" not in text  # folded into one column


def test_the_layout_gets_more_compact_as_the_terminal_narrows():
    rows = placement_rows(seeds=3)
    layouts = [ranking_table(rows, objectives=["accuracy", "params"], width=w, names=[*PLACEMENT, "width"]).layout for w in (200, 100, 60)]
    assert layouts == ["columns", "abbreviated", "two-line"]


def test_a_narrow_terminal_puts_each_candidate_on_two_lines_without_cutting():
    rows = placement_rows(seeds=3, pruned=True)
    ranking, text = render(rows, 60, ["accuracy", "params", "flops"])
    assert ranking.layout == "two-line" and "…" not in text
    lines = text.splitlines()
    for row in rows:
        first = next(i for i, line in enumerate(lines) if f"{row['accuracy']:.4f}" in line)
        assert row["hash"] in lines[first + 1] or row["hash"] in lines[first + 2]  # the metrics line may fold once at 60 columns


def test_long_values_fold_instead_of_being_cut():
    rows = placement_rows()
    for i, row in enumerate(rows):
        row["decisions"]["kernels"] = [3 + 2 * k for k in range(12 + i)]
    for width in (80, 100):
        console = Console(width=width, record=True, file=io.StringIO())
        print_ranking(console, rows, objectives=["accuracy"])
        text = console.export_text()
        assert "…" not in text
        assert all(f"{row['accuracy']:.4f}" in text for row in rows)


def test_abbreviations_are_the_shortest_prefixes_no_other_value_starts_with():
    assert abbreviations([CONV, ATTN, CONV]) == {CONV: "c", ATTN: "a"}
    # 'conv' starts 'conv_unit': it stays whole, and conv_unit needs five letters
    assert abbreviations(["conv", CONV, "mhsa", "gpsa"]) == {"conv": "conv", CONV: "conv_", "mhsa": "m", "gpsa": "g"}
    assert abbreviations(["gpsa_local", "gpsa_global"]) == {"gpsa_local": "gpsa_l", "gpsa_global": "gpsa_g"}


def test_fold_groups_indexed_decisions_in_index_order():
    names = ["stage.block[1]", "stage.block[10]", "width", "stage.block[2]", "stage.block[0]", "head[0]"]
    assert fold(names) == [("stage.block", ["stage.block[0]", "stage.block[1]", "stage.block[2]", "stage.block[10]"]),
                           ("width", ["width"]), ("head[0]", ["head[0]"])]


def test_plugin_metrics_get_a_column_each():
    from archforge.cli.tables import metric_columns

    rows = [{"rank": 1, "trial": 0, "hash": "a", "accuracy": 0.5, "metrics": {"energy_mj": 1.23456, "mem_mb": 7.0}},
            {"rank": 2, "trial": 1, "hash": "b", "accuracy": 0.4, "metrics": {"energy_mj": None}}]
    columns = {c.header: c for c in metric_columns(rows, ["accuracy"])}
    assert columns["energy_mj"].cells == ["1.235", "—"] and columns["mem_mb"].cells == ["7", "—"]
