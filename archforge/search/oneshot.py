"""``strategy: oneshot``: one weight-sharing supernet ranks the candidates; the best k are then trained stand-alone.

Once per run, before any trial:

1. the *paths*: every distinct candidate of a space with at most ``oneshot.paths`` of them,
   else a seeded sample of that many; each is checked against shapes and constraints as a
   trial would be (``rejected``);
2. the supernet of those paths (:mod:`archforge.search.supernet`: one shared tensor per block
   at each place, widths sliced from it) is trained for ``oneshot.epochs`` (default: the
   search's ``epochs``) with the search's training recipe, seed ``search.seed``, with
   ``uniform`` (SPOS) or ``fair`` (FairNAS) path sampling
   (:mod:`archforge.search.supernet_training`);
3. every path is evaluated with the weights it inherits, after re-estimating its BatchNorm
   statistics on ``oneshot.calibration_batches`` training batches, and ranked by validation
   accuracy (fewer parameters first on a tie);
4. the phase is stored in the study (:class:`~archforge.search.records.OneShotPhase`: the
   ranking, how it was trained, what it cost in images and seconds) and, with a run folder,
   the winner is saved as a checkpoint with its inherited weights (``oneshot/best.pt``,
   :func:`archforge.load_checkpoint` opens it);
5. the best ``oneshot.retrain_top`` candidates are queued in the study, in ranking order, with
   their place and one-shot accuracy (:class:`~archforge.search.records.OneShotAttr`); the
   search's workers train them stand-alone like any trial, with the search's seeds and
   epochs, so the ranking ends on real numbers with their intervals.

A resumed run does not train the supernet again; asked for a larger ``retrain_top``, it queues
the candidates it has not queued yet. The one-shot ranking is one supernet's (one seed's)
ranking: a way to choose what to train, not a result with an interval. How far it agrees with
stand-alone training is measured in ``docs/experiments.md`` (``experiments/oneshot.py``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from archforge.errors import SearchError
from archforge.search import records
from archforge.search.failures import TrialError
from archforge.search.records import ONESHOT_KEY, RUN_KEY, OneShotAttr, OneShotPath, OneShotPhase, RunMeta
from archforge.search.settings import SearchSettings
from archforge.search.space import Candidate, Space

#: The fields of the phase that must match the settings of a run that resumes it.
_TRAINED_WITH = ("sampling", "seed", "epochs", "calibration_batches")


def oneshot_phase(study: Any, space: Space, settings: SearchSettings, data: Any, *, run_dir: Path | None = None,
                  say: Callable[[str], None] = lambda text: None) -> tuple[OneShotPhase, int]:
    """Run the phase once per study (a stored phase is reused), queue its best ``retrain_top``; the phase and the run's budget.

    The budget is the number of candidates the run trains stand-alone: the best
    ``retrain_top`` of the ranking that pass the run's checks now (queued by this call or an
    earlier one). ``data``: the run's :class:`~archforge.data.DataSplit`; ``run_dir``: where
    the winner's checkpoint goes (none: not saved); ``say``: progress lines. Raises
    :class:`~archforge.errors.SearchError` when no path can be trained, or when the stored
    phase was made with other settings (supernet, data and recipe, constraints).
    """
    config = records.read_study_attr(study, RunMeta, RUN_KEY).config_key
    phase = stored_phase(study, settings, config)
    wanted = settings.oneshot
    epochs = wanted.epochs or settings.epochs
    constraints = settings.constraints.model_dump(mode="json")
    if phase is None:
        phase = _train_and_rank(space, settings, data, epochs, run_dir, say)
        phase = phase.model_copy(update={"config": config, "constraints": constraints})
        study.set_user_attr(ONESHOT_KEY, records.dump(phase))
    return phase, _queue(study, space, settings, phase, wanted.retrain_top)


def stored_phase(study: Any, settings: SearchSettings, config: str) -> OneShotPhase | None:
    """The study's one-shot phase, ``None`` when there is none; a :class:`~archforge.errors.SearchError` when it was made
    with other settings (supernet, pool, data and recipe as ``config``, the run's training-settings key, constraints).

    :func:`archforge.search.run.search` calls it before a resumed run's settings are stored, so
    that a refused command changes nothing.
    """
    phase = records.read_study_attr(study, OneShotPhase, ONESHOT_KEY)
    if phase is None:
        return None
    wanted = settings.oneshot
    now = {"sampling": wanted.sampling, "seed": settings.seed, "epochs": wanted.epochs or settings.epochs,
           "calibration_batches": wanted.calibration_batches}
    changed = [f"{k} {getattr(phase, k)} → {now[k]}" for k in _TRAINED_WITH if getattr(phase, k) != now[k]]
    if _other_pool(phase, wanted.paths):
        changed.append(f"paths {phase.path_limit} → {wanted.paths}")
    if phase.config != config:
        changed.append("the data or training recipe (dataset, limit, train:, params)")
    if phase.constraints != settings.constraints.model_dump(mode="json"):
        changed.append("constraints")
    if changed:
        raise SearchError(f"this run's supernet was trained with other one-shot settings ({', '.join(changed)}): "
                          "start a new run with --name, or give the settings it was trained with")
    return phase


def _train_and_rank(space: Space, settings: SearchSettings, data: Any, epochs: int, run_dir: Path | None,
                    say: Callable[[str], None]) -> OneShotPhase:
    from archforge.search.supernet_training import train_supernet

    wanted = settings.oneshot
    pool, sampled = space.candidate_pool(wanted.paths, settings.seed)
    paths, rejected = space.passing(pool, settings.constraints)
    if not paths:
        raise SearchError(f"strategy oneshot: all {len(pool)} candidates were rejected before training (shapes or constraints): "
                          "`archforge space` shows why")
    config = settings.trial_config(seed=settings.seed).model_copy(update={"epochs": epochs})
    say(f"one-shot: training a supernet of {len(paths)} candidates for {epochs} epoch(s), {wanted.sampling} sampling"
        + (f" ({rejected} rejected)" if rejected else ""))
    try:
        run = train_supernet(paths, data, config, sampling=wanted.sampling, calibration_batches=wanted.calibration_batches,
                             on_epoch=lambda epoch, accuracy: say(f"one-shot: epoch {epoch}/{epochs}, mean accuracy of "
                                                                  f"probe paths {accuracy:.4f}") and False)
    except TrialError as exc:
        raise SearchError(f"strategy oneshot: the supernet could not be trained: {exc}") from None
    order = sorted(run.scores, key=lambda s: (-s.accuracy, s.params, s.index))
    ranking = [OneShotPath(hash=paths[s.index].hash, decisions=paths[s.index].values, accuracy=s.accuracy, params=s.params,
                           flops=s.flops) for s in order]
    weights = None
    if run_dir is not None:
        weights = _save_winner(run, order[0].index, paths[order[0].index], config.init, run_dir / "oneshot" / "best.pt", run_dir)
    lr = run.training.lr
    return OneShotPhase(
        sampling=wanted.sampling, seed=settings.seed, epochs=epochs, paths=len(paths), path_limit=wanted.paths, sampled=sampled,
        rejected=rejected,
        paths_per_step=run.paths_per_step, steps=run.steps, calibration_batches=wanted.calibration_batches,
        lr=lr if math.isfinite(lr) else None, history=list(run.training.history), train_images=run.train_images,
        # One stand-alone training runs the search's epochs, not the supernet's.
        range_images=run.range_images, eval_images=run.eval_images,
        candidate_images=run.candidate_images // epochs * settings.epochs,
        train_s=round(run.timings["train"], 3), rank_s=round(run.timings["rank"], 3), retrain_top=wanted.retrain_top,
        weights=weights, ranking=ranking,
    )


def _other_pool(phase: OneShotPhase, limit: int) -> bool:
    """Whether ``oneshot.paths = limit`` would make another pool than the stored phase's: a sample is redrawn with another
    limit; the whole space stays the whole space while the limit covers it."""
    if phase.sampled:
        return limit != phase.path_limit
    return limit < phase.paths + phase.rejected


def _save_winner(run: Any, index: int, winner: Candidate, init: Any, path: Path, run_dir: Path) -> str:
    """The winner (path ``index`` of the supernet) as a plain network with its inherited weights (and recalibrated
    statistics), as a checkpoint."""
    from archforge.builder import build, save_checkpoint

    model = build(winner.spec, init=init)
    model.load_state_dict(run.supernet.state_dict_of(index))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model.eval(), path, overwrite=True)
    return str(path.relative_to(run_dir))


def _queue(study: Any, space: Space, settings: SearchSettings, phase: OneShotPhase, top: int) -> int:
    """Queue the best ``top`` of the ranking not queued yet that pass the run's checks; how many the run trains.

    A queued candidate the checks reject would not count against the budget, and a worker
    would then ask the sampler for one the supernet never chose: so none is queued.
    """
    queued = {r.oneshot_rank for r in records.read_trials(study) if r.oneshot_rank is not None}
    planned = 0
    for rank, path in enumerate(phase.ranking, start=1):
        if planned == top:
            break
        if rank in queued:
            planned += 1
            continue
        candidate = space.concretize(space.decode(space.encode(path.decisions)))
        if candidate.hash != path.hash or not space.passing([candidate], settings.constraints)[0]:
            continue
        study.enqueue_trial(space.encode(path.decisions), user_attrs=records.attrs(OneShotAttr(rank=rank, accuracy=path.accuracy)))
        planned += 1
    return planned
