"""Can early epochs be trusted? The rank agreement between a pruning rung's accuracy and the final one.

Multi-fidelity search (successive halving, Hyperband, the median rule) judges candidates by
their accuracy after a few epochs and stops the ones behind. That is only as good as the
ranking after those epochs agrees with the ranking at the end; and in a conv-vs-attention
search the risk is specific: one family may start slowly and catch up, so that an early rung
ranks it unfairly against the other even when it ranks each family fairly within itself.

:func:`rung_agreement` measures it from a finished search's records (with every candidate
trained for the full budget, no pruning): for each epoch ``e`` before the last,

* Kendall's τ_b between the candidates' mean accuracy after epoch ``e`` (over seeds, from the
  per-seed ``history``) and their final mean accuracy (Kendall 1945, ties handled):

      τ_b = (C − D) / √((P − T_x)(P − T_y))

  over a set of P candidate pairs, C of them ranked alike by both, D oppositely, T_x tied at
  epoch ``e``, T_y tied at the end (a pair tied in both counts in both); 1 is the same order,
  −1 the reverse;
* with ``group_by`` (a decision's name, e.g. ``stage.block[2]``), τ_b within each value of that
  decision, and τ_b over the pairs across values only: whether rung ``e`` ranks, say, the
  attention-last candidates fairly against the conv-last ones;
* whether the final best candidate is among the best ``max(1, n // η)`` of the ``n`` at epoch
  ``e``, for η = 2 and η = 3: the share a successive-halving rung at that epoch keeps (Optuna's
  threshold; its rank counts the candidates strictly ahead of it, so a tie keeps it). This is a
  one-rung question: a real successive-halving run decides only at epochs ``min_resource · η^k``,
  against the trials that reached that rung, and a candidate must pass every earlier rung.

Only complete candidates trained to the end count: on a run with a pruner the survivors alone
are left, which is the very bias this measures, so measure on a run without one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from archforge.errors import SearchError
from archforge.search.records import TrialRecord

__all__ = ["ACROSS", "RungAgreement", "kendall_tau_b", "rung_agreement"]

#: The ``group`` of the row over the pairs across groups.
ACROSS = "across groups"


@dataclass(frozen=True)
class RungAgreement:
    """How far the ranking after ``epoch`` agrees with the final one, over all candidates or one group of them."""

    epoch: int
    group: str | None  # None: all candidates; a decision's value: the candidates with it; ACROSS: pairs across values
    candidates: int
    pairs: int  # candidate pairs compared
    tau: float | None  # Kendall's tau-b; None when no pair is untied at both ends
    best_rank: int | None  # the final best's rank at this epoch (1 + candidates strictly ahead); None for ACROSS
    best_in_top_half: bool | None  # successive halving with eta 2 keeps it
    best_in_top_third: bool | None  # successive halving with eta 3 keeps it


def kendall_tau_b(x: Sequence[float], y: Sequence[float], pairs: Iterable[tuple[int, int]] | None = None) -> tuple[float | None, int]:
    """Kendall's τ_b of ``x`` and ``y`` over ``pairs`` of indices (default: every pair), and the number of pairs.

    ``None`` when no pair is untied in ``x`` or none in ``y`` (the coefficient is undefined).
    """
    if len(x) != len(y):
        raise ValueError(f"kendall_tau_b needs two sequences of one length, got {len(x)} and {len(y)}")
    if pairs is None:
        pairs = ((i, j) for i in range(len(x)) for j in range(i + 1, len(x)))
    concordant = discordant = untied_x = untied_y = count = 0
    for i, j in pairs:
        count += 1
        dx = (x[i] > x[j]) - (x[i] < x[j])
        dy = (y[i] > y[j]) - (y[i] < y[j])
        untied_x += dx != 0
        untied_y += dy != 0
        concordant += dx * dy > 0
        discordant += dx * dy < 0
    if untied_x == 0 or untied_y == 0:
        return None, count
    return (concordant - discordant) / math.sqrt(untied_x * untied_y), count


def rung_agreement(records: Iterable[TrialRecord], *, group_by: str | None = None) -> list[RungAgreement]:
    """The agreement of each early epoch's ranking with the final ranking (module docstring), epoch by epoch.

    Uses the complete candidates whose every seed ran the most epochs any did (one record per
    candidate: reuses and repeats of a candidate are left out). Rows per epoch ``1 .. E-1``: all
    candidates, then with ``group_by`` one per value of that decision (sorted) and one across them.
    """
    curves = _mean_curves(records, group_by)
    if not curves:
        return []
    last = len(curves[0][1])
    rows: list[RungAgreement] = []
    for epoch in range(1, last):
        early = [curve[epoch - 1] for _, curve in curves]
        final = [curve[-1] for _, curve in curves]
        rows.append(_row(epoch, None, list(range(len(curves))), early, final))
        if group_by is None:
            continue
        groups: dict[str, list[int]] = {}
        for i, (value, _) in enumerate(curves):
            groups.setdefault(value, []).append(i)
        for value in sorted(groups):
            rows.append(_row(epoch, value, groups[value], early, final))
        across = [(i, j) for i in range(len(curves)) for j in range(i + 1, len(curves)) if curves[i][0] != curves[j][0]]
        tau, count = kendall_tau_b(early, final, across)
        members = len({k for pair in across for k in pair})
        rows.append(RungAgreement(epoch=epoch, group=ACROSS, candidates=members, pairs=count, tau=tau,
                                  best_rank=None, best_in_top_half=None, best_in_top_third=None))
    return rows


def _mean_curves(records: Iterable[TrialRecord], group_by: str | None) -> list[tuple[str, list[float]]]:
    """(group value, mean accuracy after each epoch) of each complete candidate that ran every epoch."""
    complete = [r for r in records if r.status == "complete" and r.duplicate_of is None and r.seeds]
    if group_by is not None and complete and not any(group_by in r.decisions for r in complete):
        names = sorted({name for r in complete for name in r.decisions})
        raise SearchError(f"rung_agreement: no decision '{group_by}' in the records; group_by takes one of: "
                          f"{', '.join(names) or '(none: the space has no decisions)'}")
    histories = [[s.history for s in r.seeds.values() if s.status == "ok"] for r in complete]
    epochs = max((len(h) for seeds in histories for h in seeds), default=0)
    curves: list[tuple[str, list[float]]] = []
    seen: set[str | None] = set()
    for record, seeds in zip(complete, histories):
        if record.hash in seen or not seeds or any(len(h) != epochs or None in h for h in seeds):
            continue
        seen.add(record.hash)
        mean = [sum(h[e] for h in seeds) / len(seeds) for e in range(epochs)]  # type: ignore[misc]
        curves.append((_label(record.decisions.get(group_by)) if group_by else "", mean))
    return curves


def _row(epoch: int, group: str | None, members: list[int], early: list[float], final: list[float]) -> RungAgreement:
    x = [early[i] for i in members]
    y = [final[i] for i in members]
    tau, count = kendall_tau_b(x, y)
    best = max(range(len(members)), key=lambda i: y[i])
    rank = 1 + sum(v > x[best] for v in x)
    n = len(members)
    return RungAgreement(epoch=epoch, group=group, candidates=n, pairs=count, tau=tau, best_rank=rank,
                         best_in_top_half=rank <= max(1, n // 2), best_in_top_third=rank <= max(1, n // 3))


def _label(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)
