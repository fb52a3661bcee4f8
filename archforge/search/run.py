"""``archforge.search``: run (or resume) a search of a space, and return its ranked result.

The path of ``archforge search SPACE`` to one stored trial, one job per file:
``cli/search_commands.py`` (the command; its flags → overrides in ``cli/search_flags.py``) → ``search/run.py`` (settings, checks, study) →
``search/executors.py`` (workers) → ``search/driver.py`` (``study.optimize`` and the objective) →
``search/space.py`` (the concrete candidate) → ``search/cache.py`` (what is known already) →
``search/evaluate.py`` (training) → ``search/records.py`` (what is stored).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from archforge.search import executors, records
from archforge.search.checks import dataset_name, prepare
from archforge.search.driver import RunPlan, quiet_optuna
from archforge.search.locks import claim_store, sole_user, study_lock
from archforge.search.progress import Display, make_display
from archforge.search.result import SearchResult
from archforge.search.settings import SearchSettings
from archforge.search.space import Space, load_space
from archforge.search.storage import in_memory, resolve_storage, sqlite_path, storage_errors
from archforge.search.records import RUN_KEY, RunMeta
from archforge.search.study import evaluator_name, fail_abandoned, open_study, retry_interrupted, run_meta


def search(space: Space | str | os.PathLike[str], *, dataset: Any = None, storage: Any = None, evaluator: Any = None,
           runs_dir: str | os.PathLike[str] = "runs", progress: bool | str | None = None, console: Any = None,
           **overrides: Any) -> SearchResult:
    """Search ``space`` (a :class:`Space` or the path of one) and return the ranked result.

    Every keyword in ``overrides`` is a field of :class:`~archforge.search.settings.SearchSettings`
    (``strategy``, ``budget``, ``epochs``, ``seeds``, ``objectives``, ``constraints``, ``pruner``,
    ``proxy``, ``train``, ``workers``, ``executor``, ``seed``, ``name``, ``limit``, ...) and replaces
    the space's ``search:`` section for this call (``None`` keeps it; nested mappings such as
    ``train={"lr": 1e-3}`` update the fields they name). ``strategy`` may be any Optuna sampler
    object and ``pruner`` any Optuna pruner object.

    Args:
        dataset: a dataset name (a settings override) or a ``DataSplit`` object to search on.
        storage: ``None`` (the space's ``search.storage``, else ``<runs_dir>/<name>/study.db``), a
            ``.db`` path, an Optuna storage URL (``postgresql://...``), ``"memory"`` or an Optuna storage.
        evaluator: ``evaluator(spec, data, config, on_epoch=...) -> EvalResult``: a function or
            ``"module:function"``; default :func:`archforge.search.evaluate.evaluate`.
        progress: rich progress bars on stderr (default: when stderr is a terminal); ``"lines"``: one
            line per finished trial; ``False``: silent.

    With ``workers`` > 1, worker processes re-import the calling script: call ``search`` inside
    ``if __name__ == "__main__":``. Running the same search again resumes it; Ctrl-C marks the
    trials being trained, and raises ``KeyboardInterrupt`` after saying how to resume.
    """
    _refuse_inside_spawned_import()
    space = load_space(space)
    if isinstance(dataset, str):
        overrides["dataset"], dataset = dataset, None
    settings = space.settings.merged(**overrides)
    space = space.with_params(settings.params)
    where = storage if storage is not None else settings.storage
    # Every check before the store is touched: a command that fails them leaves nothing behind.
    prepared = prepare(space, settings, dataset=dataset, evaluator=evaluator, persistent=not in_memory(where))
    ref, storage_obj = resolve_storage(where, settings.name or space.name, runs_dir,
                                       from_spec=storage is None and settings.storage is not None, heartbeat=settings.heartbeat)
    claim, alone = claim_store(sqlite_path(ref.url))  # held while this search runs
    study = None
    try:
        with storage_errors(ref.url), executors.ctrl_c_reported_once(), quiet_optuna():
            study = _open(space, settings, ref, storage_obj, dataset, prepared.metrics, evaluator, own_folder=where is None)
            _run(study, space, settings, ref, storage_obj, alone, prepared, dataset=dataset, evaluator=evaluator,
                 progress=progress, console=console)
    except KeyboardInterrupt:
        # Our workers are gone; a trial one of them had asked for but not yet failed is ours to fail
        # when no other process uses the store. Interrupted candidates are queued again at once:
        # workers on other machines may go on, and would otherwise never train them.
        if study is not None:
            with quiet_optuna():
                if claim is not None and sole_user(claim):
                    fail_abandoned(study)
                retry_interrupted(study, storage_obj)
        raise
    finally:
        if claim is not None:
            os.close(claim)
    from archforge.search.report import RunData

    return SearchResult(RunData.from_study(study, ref.run_dir), ref, study)


def _open(space: Space, settings: SearchSettings, ref: Any, storage: Any, dataset: Any, metrics: dict[str, Any],
          evaluator: Any, *, own_folder: bool) -> Any:
    """The run's study, created or checked to be the same run; a copy of the space in a run folder of archforge's own."""
    from archforge.search.metrics import goals

    meta = run_meta(space, settings, dataset_name(dataset if dataset is not None else settings.dataset), metrics,
                    evaluator=evaluator_name(evaluator), own_data=dataset is not None)
    # Two searches starting at once (on one machine or several): one creates the study, the other finds it.
    with study_lock(ref.url, ref.study_name):
        study = open_study(storage, ref.study_name, meta, settings.directions_with(goals(metrics)), where=ref.shown,
                           check=_stored_phase_check(settings, meta.config_key))
    if own_folder and ref.run_dir is not None and ref.persistent:
        from archforge.files import write_text

        write_text(ref.run_dir / "space.yaml", space.text, overwrite=True)
    return study


def _run(study: Any, space: Space, settings: SearchSettings, ref: Any, storage: Any, alone: bool, prepared: Any, *,
         dataset: Any, evaluator: Any, progress: bool | str | None, console: Any) -> None:
    display = make_display(progress, console)
    budget = settings.trial_budget
    resumed = _resume(study, storage, alone, budget, settings.heartbeat.grace, oneshot=settings.strategy == "oneshot")
    if resumed:
        display.message(resumed)
    if settings.proxy is not None:
        from archforge.search.prefilter import proxy_phase

        phase = proxy_phase(study, space, settings, prepared.data, budget)
        display.message(f"proxy {phase.score}: scored {phase.scored} candidates ({phase.rejected} rejected) in "
                        f"{phase.time_s:.1f}s; training the best {phase.kept}")
        budget = phase.kept if budget is None else min(budget, phase.kept)
        records.update_run_meta(study, budget=budget)  # what workers joining later spend
    if settings.strategy == "oneshot":
        from archforge.search.oneshot import oneshot_phase

        # One process trains the supernet; another one starting the same run meanwhile waits, then finds it stored.
        with study_lock(ref.url, ref.study_name):
            shot, budget = oneshot_phase(study, space, settings, prepared.data,
                                         run_dir=ref.run_dir if ref.persistent else None, say=display.message)
        display.message(_oneshot_line(shot))
        records.update_run_meta(study, budget=budget)
        if budget == 0:
            return
    plan = RunPlan(space_text=space.text, space_file=space.file, settings=settings, storage_url=ref.url,
                   study_name=ref.study_name, config_key=records.read_study_attr(study, RunMeta, RUN_KEY).config_key,
                   dataset=dataset if dataset is not None else settings.dataset,
                   evaluator=evaluator, budget=budget, distinct=_distinct(space),
                   threads=executors.default_threads(settings.worker_count))
    total = budget if budget is not None else plan.distinct
    counted = sum(r.counted for r in records.read_trials(study))
    try:
        with display.running(total, counted, epochs_bar=settings.worker_count == 1 and settings.executor == "local"):
            # One-shot: as many workers as candidates queued; one more would find nothing queued and ask the sampler.
            workers = min(settings.worker_count, budget) if settings.strategy == "oneshot" and budget else settings.worker_count
            executors.run_workers(plan, study, display, workers=workers, executor=settings.executor,
                                  space=space, data=prepared.data, storage=storage)
    except KeyboardInterrupt:
        done = sum(r.counted for r in records.read_trials(study))
        text = f"interrupted: {done} done; run the same command again to resume"
        if type(display) is Display:  # silent: still say why the search stopped
            print(text, file=sys.stderr)
        else:
            display.message(text)
        raise


def _stored_phase_check(settings: SearchSettings, config: str) -> Any:
    """For a one-shot run, the check that its stored supernet was made with these settings (``open_study``'s ``check``)."""
    if settings.strategy != "oneshot":
        return None
    from archforge.search.oneshot import stored_phase

    return lambda study: stored_phase(study, settings, config)


def _oneshot_line(phase: Any) -> str:
    """What the one-shot phase found and cost, in one line."""
    best = phase.ranking[0]
    return (f"one-shot: {phase.paths} candidates ranked in {phase.train_s + phase.rank_s:.0f}s, training on as many images as "
            f"{phase.standalone_trainings:.1f} stand-alone trainings; best with inherited weights: {best.accuracy:.4f} "
            + ", ".join(f"{k}={v}" for k, v in best.decisions.items()))


def _refuse_inside_spawned_import() -> None:
    """A worker process re-importing a script that calls ``search`` unguarded: say so in one line and end it.

    Worker processes are started with ``spawn``, which imports the caller's main module again
    (as ``__mp_main__``); without the guard that import would start a search of its own.
    """
    import traceback

    spawning = [f for f in traceback.extract_stack() if f.name == "_fixup_main_from_path" and "multiprocessing" in f.filename]
    if spawning:
        script = sys.modules.get("__mp_main__")
        print(f"error: {getattr(script, '__file__', 'the main script')} calls archforge.search when it is imported, and the "
              "search's worker processes import it again: put the call under 'if __name__ == \"__main__\":'", file=sys.stderr)
        raise SystemExit(1)


def _resume(study: Any, storage: Any, alone: bool, budget: int | None, grace: float, *, oneshot: bool = False) -> str | None:
    """Fail what dead processes left running, queue interrupted candidates again; what resuming found, in words."""
    fail_abandoned(study, alone=alone, grace=grace)
    retry_interrupted(study, storage)
    trials = records.read_trials(study)
    done = sum(r.counted for r in trials)
    retries = sum(r.status == "waiting" and r.retry_of is not None for r in trials)
    if not done and not retries:
        return None
    text = f"resuming: {done} done" + (f", {retries} interrupted → retried" if retries else "")
    if budget is not None and done >= budget:
        flag = "--retrain-top" if oneshot else "--budget"
        text += f"; the budget of {budget} is reached: raise it ({flag}) to evaluate more"
    return text


def _distinct(space: Space) -> int | None:
    candidates = space.distinct_candidates()
    return len(candidates) if candidates is not None else None
