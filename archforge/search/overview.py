"""What ``archforge space`` shows, as data: the size of a space, its decisions, checks of a sample, sampled candidates.

:func:`space_overview` checks a sample of candidates exactly as a search checks each
candidate before training (:meth:`Space.check`), and sorts the ones it refuses into two
kinds: candidates that *do not fit* (the shape checker refuses them: an unknown block
among the options, an arg a block does not take, shapes that do not fit) and candidates
*rejected by constraint* (they build, but their parameters or FLOPs are outside the
``constraints``). Candidates refused for the same reason at the same place of the file
form one problem, so that a misspelled option is reported once, not once per candidate.
"""

from __future__ import annotations

import random
import re
import warnings
from typing import Any

from archforge.errors import SpecError, SpecWarning

DO_NOT_FIT = "do not fit"
REJECTED_BY_CONSTRAINT = "rejected by constraint"
#: Candidate hashes kept per problem (the count is exact).
EXAMPLES = 5

_BOUND = re.compile(r"\b(?:max|min)_[a-z_]+\b")


def space_overview(space: Any, *, samples: int = 2, check: int = 32, seed: int = 0) -> dict[str, Any]:
    """The candidates, decisions, checks of ``check`` candidates and ``samples`` sampled specs of ``space``.

    ``problems`` lists each reason candidates are refused once, with its kind
    (:data:`DO_NOT_FIT` or :data:`REJECTED_BY_CONSTRAINT`), the number of checked
    candidates it refuses and a few of their hashes; most frequent first.
    """
    rng = random.Random(seed)
    distinct = space.distinct_candidates()
    continuous = [name for name, d in space.decisions.items() if d.size is None]
    if distinct is not None:
        pool = list(distinct)
        rng.shuffle(pool)
    else:  # too many to list: draw, at most ten draws per candidate wanted
        pool = space.draw_distinct(rng, max(check, samples), draws_each=10)
    checked = pool[:check]
    constraints = space.settings.constraints
    problems: dict[tuple[str, str], dict[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)
        for candidate in checked:
            reason = space.check(candidate, constraints)
            if reason is not None:
                kind, key, text = _classify(candidate, reason)
                problem = problems.setdefault((kind, key), {"kind": kind, "reason": text, "count": 0, "candidates": []})
                problem["count"] += 1
                if len(problem["candidates"]) < EXAMPLES:
                    problem["candidates"].append(candidate.hash)
    ordered = sorted(problems.values(), key=lambda p: -p["count"])  # stable: first seen first among equals
    unfit = sum(p["count"] for p in ordered if p["kind"] == DO_NOT_FIT)
    rejected = sum(p["count"] for p in ordered if p["kind"] == REJECTED_BY_CONSTRAINT)
    return {
        "file": space.file,
        "name": space.name,
        "candidates": len(distinct) if distinct is not None else None,
        "assignments": space.size,
        "continuous": continuous,
        "decisions": [d.to_dict() for d in space.decisions.values()],
        "constraints": {k: v for k, v in constraints.model_dump().items() if v is not None},
        "checked": len(checked),
        "valid": len(checked) - unfit - rejected,
        "do_not_fit": unfit,
        "rejected_by_constraint": rejected,
        "problems": ordered,
        "samples": [{"hash": c.hash, "decisions": c.values, "spec": c.data} for c in pool[:samples]],
        "settings": space.settings.model_dump(mode="json"),
    }


def _classify(candidate: Any, reason: str) -> tuple[str, str, str]:
    """``(kind, grouping key, text)`` of a refused candidate.

    A candidate the graph compiler accepts was refused by a constraint (grouped by the
    bound); one it refuses does not fit (grouped by the place in the file and the message,
    whichever node it names: the copies of a repeated node share the place of their options).
    """
    from archforge.graph import compile_graph

    try:
        compile_graph(candidate.spec)
    except SpecError as exc:
        message = exc.message.replace(f"'{exc.node}'", "'<node>'") if exc.node else exc.message
        return DO_NOT_FIT, f"{exc.location}: {message}", exc.format()
    bound = _BOUND.search(reason)
    return REJECTED_BY_CONSTRAINT, bound.group(0) if bound else reason, reason


__all__ = ["DO_NOT_FIT", "REJECTED_BY_CONSTRAINT", "space_overview"]
