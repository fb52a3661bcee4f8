"""What a run cost and saved: epochs run against full training, reuses, interruptions, the workers' overhead."""

from __future__ import annotations

import math
from typing import Any, Sequence

from pydantic import BaseModel

from archforge.search.records import OneShotPhase, ProxyPhase, TrialRecord
from archforge.search.settings import SearchSettings


class ComputeSummary(BaseModel):
    """Epochs actually run against the epochs full training (``epochs`` × ``seeds``) of every candidate considered.

    ``evaluated``: candidates trained (complete, pruned, failed, or rejected after training by
    ``constraints.metrics``: ``rejected_trained``); ``rejected``: distinct candidates refused before training; ``reused``: trials answered from a stored result; ``interrupted``:
    trials a worker left unfinished; ``train_time_s`` / ``driver_time_s``: seconds spent training and
    measuring / around them, summed over trials; ``driver_overhead``: share of the workers' busy time
    not spent training (``None`` when no worker stored its time); ``oneshot_ranked``: candidates a one-shot
    supernet ranked that no stand-alone trial trained (full training saved, as for ``proxy_discarded``);
    ``oneshot_epochs``: the supernet's training (its training images and those of its learning-rate range
    test) in epochs over the training set, rounded up, counted in ``epochs_run``; ``oneshot_forward_images``:
    the images its probe validations and ranking passed forward only, not counted in ``epochs_run``.
    """

    epochs: int
    seeds: int
    epochs_run: int
    epochs_full: int
    epochs_saved: int
    saved_fraction: float
    evaluated: int
    complete: int
    pruned: int
    failed: int
    rejected: int
    rejected_trained: int = 0
    reused: int
    interrupted: int
    proxy_discarded: int
    oneshot_ranked: int = 0
    oneshot_epochs: int = 0
    oneshot_forward_images: int = 0
    train_time_s: float
    driver_time_s: float
    driver_overhead: float | None = None


def compute_summary(records: Sequence[TrialRecord], settings: SearchSettings, proxy: ProxyPhase | None,
                    oneshot: OneShotPhase | None = None) -> ComputeSummary:
    """Epochs run (interrupted trials' finished seeds included) against epochs × seeds for every candidate considered.

    A failed candidate would have failed under full training too: it neither saves nor costs extra.
    Candidates the proxy discarded count as full training saved, and so do those a one-shot
    supernet ranked without a stand-alone trial. The supernet's own training counts as the epochs
    over the training set its training images make, those of its learning-rate range test included
    (every path trained in a step counts): one stand-alone training (``candidate_images``) runs the
    search's ``epochs``, so an epoch is ``candidate_images / epochs`` images and the supernet counts
    ``⌈(train_images + range_images) × epochs / candidate_images⌉``. Its forward-only images (probe
    validations, ranking: ``eval_images``) are reported beside it, not counted.
    """
    epochs, seeds = settings.epochs, settings.seeds
    counted = [r for r in records if r.counted]
    interrupted = [r for r in records if r.status == "interrupted"]
    discarded = proxy.discarded if proxy is not None else 0
    ranked = supernet = forward = 0
    if oneshot is not None:
        trained = {r.hash for r in counted}
        ranked = sum(path.hash not in trained for path in oneshot.ranking)
        supernet = math.ceil(oneshot.training_images * epochs / oneshot.candidate_images)  # candidate_images >= 1
        forward = oneshot.eval_images
    run = sum(r.epochs_run for r in counted + interrupted) + supernet
    full = (sum(r.epochs_run if r.status == "failed" else (r.epochs_full or epochs * seeds) for r in counted)
            + (discarded + ranked) * epochs * seeds)
    return ComputeSummary(
        epochs=epochs, seeds=seeds, epochs_run=run, epochs_full=full, epochs_saved=full - run,
        saved_fraction=(full - run) / full if full else 0.0, evaluated=len(counted),
        complete=sum(r.status == "complete" for r in counted), pruned=sum(r.status == "pruned" for r in counted),
        failed=sum(r.status == "failed" for r in counted),
        rejected=len({r.hash for r in records if r.status == "rejected"} - {r.hash for r in counted}),
        rejected_trained=sum(r.status == "rejected" for r in counted),
        reused=sum(r.duplicate_of is not None and r.status != "rejected" for r in records), interrupted=len(interrupted),
        proxy_discarded=discarded, oneshot_ranked=ranked, oneshot_epochs=supernet,
        oneshot_forward_images=forward, train_time_s=sum(r.eval_time_s or 0.0 for r in records),
        driver_time_s=sum(r.driver_time_s or 0.0 for r in records),
    )


def compute_text(c: ComputeSummary | dict[str, Any]) -> str:
    """One plain line: the epochs run and saved, and why."""
    c = ComputeSummary.model_validate(c)
    text = (f"compute: {c.epochs_run} epochs run of the {c.epochs_full} that full training "
            f"({c.epochs} epochs × {c.seeds} seed(s) per candidate) would have run")
    if c.epochs_full and c.epochs_saved < 0:  # a supernet and many retrained candidates can cost more than training them all
        text += f": {-c.epochs_saved} more than that ({100 * -c.saved_fraction:.1f}%)"
    elif c.epochs_full:
        text += f": saved {c.epochs_saved} ({100 * c.saved_fraction:.1f}%)"
    parts = [f"{n} {what}" for n, what in ((c.pruned, "pruned early"), (c.proxy_discarded, "discarded by the proxy"),
                                           (c.reused, "result reused" if c.reused == 1 else "results reused"), (c.rejected, "rejected before training"),
                                           (c.rejected_trained, "rejected after training")) if n]
    if c.oneshot_ranked or c.oneshot_epochs:
        supernet = f"{c.oneshot_ranked} ranked by the one-shot supernet only, whose training counts as {c.oneshot_epochs} epoch(s)"
        if c.oneshot_forward_images:  # forward passes cost less than a training step's: said, not counted as epochs
            supernet += f" + {c.oneshot_forward_images:,} forward-only images to rank, not counted"
        parts.append(supernet)
    text += f" ({', '.join(parts)})" if parts else ""
    if c.driver_overhead is not None:
        text += f"; driver overhead {100 * c.driver_overhead:.1f}% of worker time"
    return text
