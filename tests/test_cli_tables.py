"""Ranking tables at the widths of real terminals: metrics in full, decisions folded and abbreviated, never an ellipsis."""

from __future__ import annotations

import io
import itertools

import pytest
from rich.console import Console

from archforge.cli.tables import abbreviations, fold, print_effects, print_ranking, ranking_table

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


def confident_rows() -> list[dict]:
    """placement_rows with 3 seeds, intervals and marks: rows 0 (the most accurate), 2 and 5 not separable from it."""
    rows = placement_rows(seeds=3)
    for i, row in enumerate(rows):
        row.update(accuracy_low=row["accuracy"] - 0.0123 - i / 1e4, accuracy_high=row["accuracy"] + 0.0123 + i / 1e4,
                   most_accurate=i == 0, separable_from_best=i not in (0, 2, 5))
    rows[-1].update(separable_from_best=None)  # a candidate with one seed: not tested
    return rows


LEGEND = ("{header}: {ref} = the most accurate candidate, the reference; ≈ = not separable from it at 95%; < = separably less "
          "accurate; · = not tested; ± = std over seeds; pairwise Welch tests against the most accurate, not corrected for "
          "multiple comparisons")


@pytest.mark.parametrize("width", [80, 100, 160])
def test_seeds_show_the_interval_and_mark_who_is_not_separable_from_the_best(width):
    rows = confident_rows()
    ranking, text = render(rows, width, ["accuracy"])
    assert "…" not in text and all(len(line) <= width for line in text.splitlines())
    lines = text.splitlines()
    expected = {0: "best", 2: "≈", 5: "≈", 7: "·"}  # the others are separably less accurate: "<"
    for i, row in enumerate(rows):
        interval = f"[{row['accuracy_low']:.4f}, {row['accuracy_high']:.4f}]"  # unique per row
        assert f"{row['accuracy']:.4f} ± 0.0012" in text and interval in text, ranking.layout
        if ranking.layout != "two-line":  # the mark is on the row's own line
            line = next(line for line in lines if interval in line)
            marks = [m for m in ("best", "≈", "<", "·") if m in line]
            assert marks == [expected.get(i, "<")], (i, line)
    assert (text.count("≈"), text.count("<"), text.count("·")) == (2 + 1, 4 + 1, 1 + 1)  # the marks and the legend
    assert LEGEND.format(header="vs best", ref="best") in " ".join(text.split())


@pytest.mark.parametrize("objectives", [["params"], ["accuracy", "params"]])
def test_when_accuracy_is_not_the_only_objective_the_reference_is_top_not_best(objectives):
    rows = confident_rows()
    rows[0].update(rank=3)  # ranked by params, the most accurate candidate need not be rank 1
    _, text = render(rows, 200, objectives)
    flat = " ".join(text.split())
    assert "vs most accurate" in flat and "best" not in text
    assert LEGEND.format(header="vs most accurate", ref="top") in flat
    line = next(line for line in text.splitlines() if f"{rows[0]['accuracy']:.4f} ±" in line)
    assert " top" in line


def test_pruned_rows_get_no_mark_and_interval_ends_are_clipped_to_0_1():
    rows = confident_rows()[:3]
    rows[0].update(accuracy_low=-0.0213, accuracy_high=1.0456)
    rows[2].update(rank=None, status="pruned", separable_from_best=None)
    _, text = render(rows, 200, ["accuracy"])
    assert "[0.0000, 1.0000]" in text and "−" not in text and "1.0456" not in text
    pruned = next(line for line in text.splitlines() if "pruned" in line)
    assert not any(m in pruned for m in ("≈", "<", "·", "best"))


def test_one_seed_rows_get_neither_interval_nor_marks():
    _, text = render(placement_rows(), 160, ["accuracy"])
    assert "95% interval" not in text and "vs best" not in text and "≈" not in text


def test_effects_are_printed_one_line_each_in_order_up_to_a_limit_with_their_notes():
    from archforge.search.effects import DecisionEffect

    effects = [DecisionEffect(decision=f"stage.block[{k}]", value=ATTN, baseline=CONV, effect=-3.1 + k, low=-4.3 + k, high=-1.9 + k,
                              method="paired", pairs=4, seeds=3, possible=4) for k in range(3)]
    effects.append(DecisionEffect(decision="width", value=8, baseline=4, effect=None, possible=4, unpaired=3))
    console = Console(width=160, record=True, file=io.StringIO())
    print_effects(console, effects, ["width: no pairs: no two complete candidates differ in this decision alone"], limit=2)
    lines = console.export_text().splitlines()
    assert "not corrected for multiple comparisons" in lines[0]
    assert lines[1] == "  stage.block[0] = attention_unit instead of conv_unit: −3.1 points [−4.3, −1.9] (4 pairs × 3 seeds)"
    assert lines[2].startswith("  stage.block[1] = attention_unit instead of conv_unit: −2.1 points [−3.3, −0.9]")
    assert lines[3] == "  and 1 more (`archforge report DIR` writes them all to trials.json)"
    assert lines[4] == "  note: width: no pairs: no two complete candidates differ in this decision alone" and len(lines) == 5
