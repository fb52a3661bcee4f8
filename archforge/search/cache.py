"""Never train the same thing twice: what the store already knows about a candidate.

A result is identified by the candidate's hash, its training seed and the run's
training-settings key. Before training, the driver asks :func:`claim` for every stored result
of the candidate — from any trial, finished, failed or left by a dead worker, since every seed
is stored as soon as it finishes — and trains only the seeds still missing. Claiming them is
done under the store's lock, with the budget checked in the same step, so that two workers
never train one candidate and never overshoot the budget; a candidate another worker is
training right now is waited for, and a candidate refused by the shape checker is not
checked again.
"""

from __future__ import annotations

import time
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

    The trial training it now is another ``RUNNING`` trial that has claimed the candidate
    (see :func:`claim`), whatever its number; ``None`` if there is none.
    """
    found = Known()
    busy = None
    for r in records:
        if r.number == me or r.status == "unreadable" or r.hash != key or r.config != config:
            continue
        if r.status == "rejected":
            # A shape error is final; a constraint violation (params and FLOPs measured) is checked again,
            # since a resumed run may have other constraints.
            if r.params is None and not r.seeds:
                found.rejected = found.rejected or (r.error or "rejected", r.duplicate_of if r.duplicate_of is not None else r.number)
            if not r.seeds:
                continue
            # Rejected by a metric constraint after training: its trained seeds are results like any other.
        if r.status == "cancelled":
            continue
        for seed, result in r.seeds.items():
            source = r.duplicate_of if r.duplicate_of is not None else r.number
            if seed not in found.seeds or source < found.seeds[seed][1]:
                found.seeds[seed] = (result, source)
        if r.status == "running" and claimed(r):
            busy = r.number
    return found, busy


def claimed(record: TrialRecord) -> bool:
    """Whether a trial has claimed its candidate for training (its own progress record says how many epochs).

    A retry carries a copy of its failed trial's progress: that is no claim of its own (two
    retries of one trial would otherwise each wait for the other, for ever).
    """
    progress = record.progress
    if progress is None or progress.total <= 0:
        return False
    # A claim written before claims named their trial is the trial's own unless the trial is a retry.
    return progress.trial == record.number or (progress.trial is None and record.retry_of is None)


def budget_spent(trials: Sequence[TrialRecord], budget: int | None, me: int | None = None) -> bool:
    """The one budget rule: finished evaluations, plus the candidates other running trials have claimed, reach ``budget``."""
    if budget is None:
        return False
    spent = sum(r.counted for r in trials)
    spent += sum(1 for r in trials if r.status == "running" and r.number != me and claimed(r))
    return spent >= budget


def claim(study: Any, key: str, config: str, me: Any, seeds: Sequence[int], *, epochs: int, budget: int | None,
          lock: str, wait: Callable[[float], None] = time.sleep) -> Known | None:
    """What the store knows about candidate ``key``, and the claim of trial ``me`` to train what is missing.

    Returns what is known; when something is left to train, the trial has claimed it (a
    :class:`~archforge.search.records.ProgressAttr` written under the store's lock, so that no
    two trials claim one candidate and no claim exceeds the budget). Waits while another trial
    trains the candidate. ``None``: the budget is spent by other trials, nothing was claimed.
    ``lock``: the storage URL, whose study lock (:func:`archforge.search.locks.study_lock`) the
    claim is made under, on one machine or many.
    """
    from archforge.search.locks import study_lock
    from archforge.search.records import ProgressAttr, read_trials, write
    from archforge.search.study import fail_stale

    while True:
        with study_lock(lock, study.study_name):
            trials = read_trials(study)
            found, busy = known(trials, key, config, me.number)
            if found.rejected is not None or found.complete(seeds):
                return found
            if busy is None:
                if budget_spent(trials, budget, me.number):
                    return None
                write(me, ProgressAttr(total=epochs * sum(1 for s in seeds if s not in found.seeds), trial=me.number))
                return found
        wait(POLL_S)
        fail_stale(study)  # a busy worker that died: its heartbeat tells
