"""The zero-cost proxy phase: score candidates without training, queue the best for training.

Once per run, before the first trial: up to ``proxy.sample`` distinct candidates (all of a
smaller finite space, else a random sample) are checked against shapes and constraints and
scored with the proxy (:mod:`archforge.search.proxies`: SynFlow or NASWOT); the best ``keep``
fraction is queued in the study with its score and rank, and the phase is recorded in the
study (:class:`~archforge.search.records.ProxyPhase`), so a resumed run does not repeat it.
"""

from __future__ import annotations

import math
import time
from typing import Any

from archforge.search import proxies, records
from archforge.search.records import PROXY_KEY, ProxyAttr, ProxyPhase
from archforge.search.settings import SearchSettings
from archforge.search.space import Candidate, Space


def proxy_phase(study: Any, space: Space, settings: SearchSettings, data: Any, budget: int | None) -> ProxyPhase:
    """Run the phase once per study (its record is returned on later calls)."""
    done = records.read_study_attr(study, ProxyPhase, PROXY_KEY)
    if done is not None:
        return done
    proxy = settings.proxy
    assert proxy is not None
    started = time.perf_counter()
    scored: list[tuple[float, Candidate]] = []
    input_shape = tuple(getattr(data, "input_shape", ()) or (space.template.get("input") or {}).get("shape") or ())
    passing, rejected = space.passing(space.candidate_pool(proxy.sample, settings.seed)[0], settings.constraints)
    for candidate in passing:
        try:
            if proxy.score == "synflow":
                score = float(proxies.synflow(candidate.spec, input_shape, init=settings.train.init))
            else:
                score = float(proxies.naswot(candidate.spec, data, batch=proxy.batch, seed=settings.seed,
                                             init=settings.train.init))
        except Exception:  # a candidate the proxy cannot score is ranked last
            score = float("-inf")
        scored.append((score if math.isfinite(score) else float("-inf"), candidate))
    scored.sort(key=lambda item: item[0], reverse=True)
    keep = max(1, math.ceil(proxy.keep * len(scored))) if scored else 0
    keep = min(keep, budget) if budget is not None else keep
    for rank, (score, candidate) in enumerate(scored[:keep], start=1):
        attr = ProxyAttr(name=proxy.score, score=score if math.isfinite(score) else None, rank=rank)
        study.enqueue_trial(space.encode(candidate.values), user_attrs=records.attrs(attr))
    phase = ProxyPhase(
        score=proxy.score, scored=len(scored), rejected=rejected, kept=keep, discarded=len(scored) - keep,
        scores={c.hash: (s if math.isfinite(s) else None) for s, c in scored}, time_s=round(time.perf_counter() - started, 3),
    )
    study.set_user_attr(PROXY_KEY, records.dump(phase))
    return phase
