"""Bounds on what a search space file can make archforge do, each checked before the work it bounds.

A space file is data from anyone; nothing it writes may make archforge list, allocate or loop
over more than these bounds allow. Every error that hits one names it, so that a user who
really wants more raises it deliberately::

    from archforge.search import limits
    limits.MAX_DECISION_VALUES = 10**7

The values are read when a space is checked, so a change takes effect for the next space.
"""

from __future__ import annotations

#: Values of one finite decision: choice options, an int range, a float range with a step.
MAX_DECISION_VALUES = 1_000_000
#: Decisions of a space, per-copy decisions included.
MAX_DECISIONS = 10_000
#: Decision assignments of a space (the grid), counted without enumerating them.
MAX_ASSIGNMENTS = 10**100
#: Values per-copy unrolling may add (every copy of a node copies its body); as many as a YAML document may hold.
MAX_UNROLLED_VALUES = 200_000
#: Decision assignments × values of the space that ``Space.distinct_candidates`` may concretise.
MAX_ENUMERATION_WORK = 2_000_000
#: Assignments of a grid search: Optuna's GridSampler lists and shuffles every one up front.
MAX_GRID_SIZE = 100_000
#: Largest magnitude of a range end; not a tunable: Optuna stores every value as a float, exact only up to 2**53.
MAX_RANGE_END = 2**53

# Amounts of work the ``search:`` section sets.
MAX_SEEDS = 100
MAX_WORKERS = 256
MAX_EPOCHS = 10_000
MAX_BUDGET = 1_000_000
MAX_PROXY_SAMPLE = 100_000
#: Paths one supernet holds: each is a built network kept in memory, and a row of the stored one-shot ranking.
MAX_ONESHOT_PATHS = 4_096
MAX_BATCH = 65_536
MAX_THREADS = 1_024
MAX_LATENCY_REPEATS = 10_000
MAX_CROP_PADDING = 1_024

#: Longest run name (it is a folder name).
MAX_NAME = 100
#: Longest text read back from a stored trial (an error message, a decision value) before it is unreadable.
MAX_TEXT = 10_000


def bound_text(name: str) -> str:
    """``limits.NAME = value (from archforge.search import limits)``, for messages that say which bound to raise."""
    value = globals()[name]
    shown = f"{value:,}" if value < 10**15 else f"{value:.0e}"
    return f"limits.{name} = {shown} (from archforge.search import limits)"
