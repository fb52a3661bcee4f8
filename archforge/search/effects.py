"""What each decision of a space is worth: its effect on mean accuracy, averaged over the other decisions, with a 95% interval.

For a decision ``d`` with values ``v₀, v₁, ...`` (``v₀``, the first of the space's list, is the
baseline), the effect of ``v`` is estimated from *pairs*: every complete candidate having
``d = v`` is paired with the complete candidate identical in every other decision (its
*context*) but having ``d = v₀``. With ``m`` pairs and ``Δᵢ`` the difference of the pair's mean
accuracies (over seeds),

    effect = (1/m) Σ Δᵢ        (in points: accuracy × 100)

the effect averaged over the contexts the pairs cover (on a full grid, every assignment of the
other decisions). Pairing removes what the other decisions add, so a difference is not
confounded by which other values happened to be sampled with ``v``.

**What the interval is about.** Two uncertainties can be meant. (a) The average over *these*
contexts: on a full grid they are fixed, and the only uncertainty is seed noise; its interval is
``effect ± t(ν) · √Var`` with ``Var = (1/m²) Σᵢ (s²ᵥᵢ/nᵥᵢ + s²₀ᵢ/n₀ᵢ)`` over the 2m candidates and
Welch–Satterthwaite ν (:func:`archforge.search.ranking.welch_error`). (b) The effect of ``v`` in
the other decisions' contexts generally: what a reader claims when saying "attention in stage 2
costs 3 points". That treats the m contexts as a sample of contexts, and its interval is the
paired t interval ``effect ± t(m−1) · s_Δ / √m``, whose spread counts both the seed noise each
Δᵢ carries and how much the effect changes from context to context: it widens with interactions
between decisions, and with few pairs it is wide on purpose (m = 2: t(1) = 12.7). We report (b),
the claim the effects line makes, but never narrower than (a): with few pairs whose differences
happen to agree, ``s_Δ`` can understate the seed noise (with every Δᵢ equal it is 0), so the
seed-noise interval is the floor. So:

- ``m ≥ 2``: the wider of the paired interval (``method="paired"``; none when every Δᵢ is the same
  number, to 1e-9) and, with two seeds or more everywhere, the seed-noise one (``method="seeds"``);
- ``m = 1`` (e.g. a space of one decision): the Welch interval over the two candidates' seeds
  (``method="welch"``, the seed-noise interval of one pair);
- no interval when neither exists: one seed, or seeds that do not vary (a zero-width interval is
  never evidence).

t is read from :mod:`archforge.search.ranking`'s table, rounded down (conservative without scipy).
Each interval is at 95% on its own: nothing corrects for the many values tested at once.
Only complete candidates count (one per candidate hash). A pruned candidate is missing, and the
pruned are the weakest, so with pruning the effects are biased toward 0 (:func:`effect_notes` says
so). A candidate whose partner is missing (failed, pruned, not sampled) is left out and counted in
``unpaired``; ``possible`` is how many pairs the space holds. Values are compared by their
canonical JSON text (what the store holds; ``repr`` for what JSON cannot encode), so list or
mapping options pair as exactly as numbers and strings do.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, Field, ValidationError

from archforge.search.choices import canonical_json
from archforge.search.decision import Decision
from archforge.search.ranking import RankedRow, bounds_text, rank, signed, t_quantile, t_quantile_floor, welch_error
from archforge.search.records import TrialRecord, finite

#: Decisions with more values than this get no effects (a range of 1,000 values would print 999 lines).
MAX_VALUES = 50
_MISSING = "\x00missing"  # the key of a decision a candidate does not have
_SAME = 1e-9  # pair differences closer than this (relative) are one value: 0.87 − 0.85 and 0.82 − 0.80 differ in the last bit
_Pair = tuple[list[float], list[float]]  # the seed accuracies of the candidate with the value, and of its baseline partner


class DecisionEffect(BaseModel):
    """The effect of one value of a decision against the decision's baseline (its first value)."""

    decision: str
    value: Any
    baseline: Any
    effect: float | None = Field(description="Mean paired difference of mean accuracy, in points (×100); None without pairs.")
    low: float | None = Field(None, description="Lower end of the 95% interval, in points; None when it cannot be estimated.")
    high: float | None = Field(None, description="Upper end of the 95% interval, in points.")
    method: Literal["paired", "seeds", "welch"] | None = Field(None, description="How the interval was estimated (module docstring).")
    pairs: int = Field(0, description="Pairs used (m).")
    seeds: int = Field(0, description="The fewest seeds of a candidate in the pairs.")
    possible: int | None = Field(None, description="Pairs the space holds (the other decisions' assignments); None when infinite.")
    unpaired: int = Field(0, description="Complete candidates with this value or the baseline whose partner is missing.")
    excludes_zero: bool | None = Field(None, description="Whether the 95% interval excludes 0; None without an interval.")

    def text(self) -> str:
        """One line: ``stage.block[2] = attention_unit instead of conv_unit: −3.1 points [−4.3, −1.9] (4 pairs × 3 seeds)``
        (interval ends clipped to ±100 points as printed)."""
        head = f"{self.decision} = {_label(self.value)} instead of {_label(self.baseline)}: "
        pairs = (f"{self.pairs} of {self.possible} pairs" if self.possible is not None and self.possible != self.pairs
                 else f"{self.pairs} pair{'s' if self.pairs != 1 else ''}")
        if self.effect is None:
            return head + f"no pairs ({pairs})"
        where = (" " + bounds_text(self.low, self.high, lowest=-100.0, highest=100.0, digits=1, plus=True)
                 if self.low is not None and self.high is not None else " (no interval)")
        count = f"{pairs} × {self.seeds} seed{'s' if self.seeds != 1 else ''}"
        if self.method == "seeds":
            count += ", interval from seed noise: wider than the pairs' spread"
        return head + f"{signed(self.effect, 1, plus=True)} points{where} ({count})"


def decision_effects(rows: Sequence[RankedRow | Mapping[str, Any]] | Sequence[TrialRecord],
                     decisions: Sequence[Decision | Mapping[str, Any]]) -> list[DecisionEffect]:
    """The effect of every non-baseline value of every finite decision, in the space's order of decisions, then of
    values (see the module docstring). A pure function.

    ``rows``: a run's ranked rows (``RankedRow`` s or their ``model_dump()`` dicts, as ``RunData.table``); trial
    records are ranked first (:func:`archforge.search.ranking.rank`: one complete record per candidate counts).
    ``decisions``: the space's :class:`Decision` s or their ``to_dict()`` descriptions (``RunMeta.decisions``);
    a continuous range, or a description that cannot be read, gets no effects (:func:`effect_notes` says why).
    """
    if any(isinstance(x, TrialRecord) for x in rows):
        rows = rank([x for x in rows if isinstance(x, TrialRecord)], ["accuracy"]).rows
    pool = _complete(rows)
    declared = _declared(decisions)
    names = list(dict.fromkeys([d.name for d in declared] + [n for decided, _ in pool for n in decided]))
    sizes = {d.name: _domain(d)[0] for d in declared}
    effects = []
    for d in declared:
        values = _domain(d)[1]
        if values is None:
            continue
        others = [n for n in names if n != d.name]
        possible = math.prod(sizes[n] for n in others) if all(sizes.get(n) is not None for n in others) else None  # type: ignore[misc]
        by_context: dict[str, dict[tuple[str, ...], list[float]]] = {}  # value key → context → seed accuracies
        for decided, accuracies in pool:
            context = tuple(decided.get(n, _MISSING) for n in others)
            by_context.setdefault(decided.get(d.name, _MISSING), {}).setdefault(context, accuracies)
        base = by_context.get(_key(values[0]), {})
        for value in values[1:]:
            with_value = by_context.get(_key(value), {})
            pairs = [(with_value[c], base[c]) for c in with_value if c in base]
            unpaired = (len(with_value) - len(pairs)) + sum(1 for c in base if c not in with_value)
            effects.append(_effect(d.name, value, values[0], pairs, possible, unpaired))
    return effects


def effect_notes(effects: Sequence[DecisionEffect], decisions: Sequence[Decision | Mapping[str, Any]], *,
                 pruned: int = 0) -> list[str]:
    """Sentences to print with the effects: that pruning biases them (``pruned``: the run's pruned candidates), and
    one line per decision with no estimate at all, saying why (a continuous range, too many values, no pairs)."""
    notes = []
    if pruned:
        notes.append(f"{pruned} candidate{'s were' if pruned > 1 else ' was'} pruned: the effects and the heat map use the "
                     "complete candidates only, and the pruned are the weakest, so both are biased toward 0")
    estimated = {e.decision for e in effects if e.effect is not None}
    for d in _declared(decisions):
        size, values = _domain(d)
        if d.name in estimated or (size is not None and size <= 1):
            continue
        if size is None and d.kind == "float" and d.step is None:
            notes.append(f"{d.name}: no effects: a continuous range ({d.describe()}) has no baseline value to pair candidates on")
        elif size is not None and values is None:
            notes.append(f"{d.name}: no effects: {size:,} values, more than {MAX_VALUES}")
        elif values is not None:
            notes.append(f"{d.name}: no pairs: no two complete candidates differ in this decision alone")
    return notes


def _effect(name: str, value: Any, baseline: Any, pairs: list[_Pair], possible: int | None, unpaired: int) -> DecisionEffect:
    common = {"decision": name, "value": value, "baseline": baseline, "pairs": len(pairs), "possible": possible, "unpaired": unpaired}
    if not pairs:
        return DecisionEffect(effect=None, **common)
    m = len(pairs)
    seeds = min(min(len(a), len(b)) for a, b in pairs)
    diffs = [statistics.fmean(a) - statistics.fmean(b) for a, b in pairs]
    effect = statistics.fmean(diffs)
    found: list[tuple[Literal["paired", "seeds", "welch"], float]] = []  # (method, half-width)
    if m >= 2 and max(diffs) - min(diffs) > _SAME * max(1.0, *map(abs, diffs)):
        found.append(("paired", t_quantile(m - 1) * statistics.stdev(diffs) / math.sqrt(m)))
    error = welch_error([x for pair in pairs for x in pair])
    if error is not None:
        se2, dof = error
        found.append(("seeds" if m >= 2 else "welch", t_quantile_floor(dof) * math.sqrt(se2) / m))
    if not found:
        return DecisionEffect(effect=100 * effect, seeds=seeds, **common)
    method, half = max(found, key=lambda f: f[1])  # the wider; the paired one on a tie
    low, high = 100 * (effect - half), 100 * (effect + half)
    return DecisionEffect(effect=100 * effect, low=low, high=high, method=method, seeds=seeds,
                          excludes_zero=low > 0 or high < 0, **common)


def _complete(rows: Sequence[RankedRow | Mapping[str, Any]]) -> list[tuple[dict[str, str], list[float]]]:
    """``(decision → value key, seed accuracies)`` of each complete candidate with a finite accuracy, once per hash."""
    out = []
    seen: set[Any] = set()
    for row in rows:
        get = row.get if isinstance(row, Mapping) else lambda key, row=row: getattr(row, key, None)
        accuracy, hash_ = finite(get("accuracy")), get("hash")
        if get("status") != "complete" or accuracy is None or (hash_ is not None and hash_ in seen):
            continue
        seen.add(hash_)
        accuracies = [a for a in (get("accuracies") or []) if finite(a) is not None] or [accuracy]
        out.append(({n: _key(v) for n, v in (get("decisions") or {}).items()}, accuracies))
    return out


def _declared(decisions: Sequence[Decision | Mapping[str, Any]]) -> list[Decision]:
    """The readable decisions, each name once (the first readable description of it)."""
    found: dict[str, Decision] = {}
    for item in decisions:
        d = _decision(item)
        if d is not None:
            found.setdefault(d.name, d)
    return list(found.values())


def _decision(item: Decision | Mapping[str, Any]) -> Decision | None:
    """A :class:`Decision` from itself or its ``to_dict()`` description; ``None`` when the description cannot be read."""
    if isinstance(item, Decision):
        return item
    try:
        return Decision.model_validate({k: item[k] for k in ("name", "kind", "options", "low", "high", "step", "log") if k in item})
    except (ValidationError, TypeError):
        return None


def _domain(d: Decision) -> tuple[int | None, list[Any] | None]:
    """``(size, values)``: the number of values (``None`` for a continuous range or a description that makes no sense: a
    step of 0, bounds the wrong way round) and, for 2 to :data:`MAX_VALUES` of them, the values, each once, in order."""
    try:
        size = d.size
        if size is None or size < 0:
            return None, None
        values = d.values() if 1 < size <= MAX_VALUES else None
    except (ValueError, TypeError, ZeroDivisionError, OverflowError):
        return None, None
    if values is not None:
        unique: dict[str, Any] = {}
        for value in values:
            unique.setdefault(_key(value), value)  # an option listed twice is one value
        values = list(unique.values())
    return size, values if values is not None and len(values) > 1 else None


def _key(value: Any) -> str:
    """The text a value is compared by: its canonical JSON, else (a set, an object) its ``repr``."""
    try:
        return canonical_json(value)
    except (TypeError, ValueError, RecursionError):
        return "\x00" + repr(value)


def _label(value: Any) -> str:
    """A value as the effects lines show it: a string as written, anything else as compact JSON (else its ``repr``)."""
    text = value if isinstance(value, str) else _key(value).lstrip("\x00")
    return text if len(text) <= 40 else text[:39] + "…"


__all__ = ["DecisionEffect", "MAX_VALUES", "decision_effects", "effect_notes"]
