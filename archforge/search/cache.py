"""Never train the same thing twice: what the store already knows about a candidate.

A result is identified by the candidate's hash, its training seed and the run's
training-settings key. Before training, the driver asks :func:`lookup` for every stored result
of the candidate — from any trial, finished, failed or left by a dead worker, since every seed
is stored as soon as it finishes — and trains only the seeds still missing. A candidate another
worker is training right now is waited for (the lower trial number goes first, so two workers
never wait for each other), and a candidate once rejected is not checked again.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from archforge.search.records import SeedResult, TrialRecord

#: Seconds between two looks at a candidate another worker is training.
POLL_S = 1.0


@dataclass
class Known:
    """What the store knows about one candidate: results per seed (with the trial that has them), or a rejection."""

    seeds: dict[int, tuple[SeedResult, int]] = field(default_factory=dict)
    rejected: tuple[str, int] | None = None

    def complete(self, seeds: Sequence[int]) -> bool:
        """Nothing is left to train: every seed is known, or the first unknown one comes after a failed or pruned one."""
        for seed in seeds:
            if seed not in self.seeds:
                return False
            if self.seeds[seed][0].status != "ok":
                return True
        return True

    def source(self, seeds: Sequence[int]) -> int | None:
        """The trial whose results a reuse points to: the one holding the first seed."""
        return self.seeds[seeds[0]][1] if seeds and seeds[0] in self.seeds else None


def known(records: Sequence[TrialRecord], key: str, config: str, me: int) -> tuple[Known, int | None]:
    """What ``records`` hold for candidate ``key`` under training settings ``config``, and a trial training it now.

    The trial training it now is one ``RUNNING`` with a lower number than ``me`` (``None`` if none).
    """
    found = Known()
    busy = None
    for r in records:
        if r.number == me or r.status == "unreadable" or r.hash != key or r.config != config:
            continue
        if r.status == "rejected":
            found.rejected = found.rejected or (r.error or "rejected", r.duplicate_of if r.duplicate_of is not None else r.number)
            continue
        if r.status == "cancelled":
            continue
        for seed, result in r.seeds.items():
            source = r.duplicate_of if r.duplicate_of is not None else r.number
            if seed not in found.seeds or source < found.seeds[seed][1]:
                found.seeds[seed] = (result, source)
        if r.status == "running" and r.number < me:
            busy = r.number
    return found, busy


def lookup(study: Any, key: str, config: str, me: int, seeds: Sequence[int], *,
           wait: Callable[[float], None] = time.sleep) -> Known:
    """What the store knows about ``key``; waits while another worker trains it (its result is then reused)."""
    import optuna

    from archforge.search.records import read_trials

    while True:
        found, busy = known(read_trials(study), key, config, me)
        if found.rejected is not None or found.complete(seeds) or busy is None:
            return found
        wait(POLL_S)
        with warnings.catch_warnings():  # a busy worker that died: its heartbeat tells (an "experimental" Optuna API)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
