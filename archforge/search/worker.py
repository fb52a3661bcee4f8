"""One more worker for a search started elsewhere: ``archforge worker --storage URL --study NAME``.

A run's study carries everything a worker needs (:class:`~archforge.search.records.RunMeta`):
the space, the settings, the training-settings key, the budget, the dataset's name and the
evaluator's import path. So a machine that can reach the store and has the same archforge,
plugins and dataset joins with nothing but the URL and the study name, trains candidates until
the budget is spent or the space is exhausted, and exits. Several workers never train the same
candidate and seed (the claim of :mod:`archforge.search.cache`, made under the study's lock), and a
worker that dies mid-trial is found by its stopped heartbeat: its trial is failed and its
candidate queued again for the others (:class:`~archforge.search.driver.StopRule`).

What cannot travel is refused before anything is trained: a dataset or evaluator object passed
from Python, a sampler object, a space this archforge reads otherwise, a device this machine
lacks.
"""

from __future__ import annotations

import hashlib
import os
import socket
from typing import Any

from archforge.errors import SearchError, SettingError
from archforge.search import records
from archforge.search.records import RUN_KEY, RunMeta


def join(storage: str, study: str, *, device: str | None = None, threads: int | None = None,
         progress: bool | str | None = "lines", console: Any = None) -> records.WorkerStats:
    """Work on the study ``study`` at ``storage`` (a URL or a ``.db`` file) until its budget is spent.

    Args:
        storage: the store the search was started with: ``postgresql://user@host/db``, a
            ``sqlite:///`` URL or the path of a ``study.db``.
        study: the study's name (the run name of ``archforge search --name``).
        device: train on this device instead of the run's ``train.device`` (``cuda:1``).
        threads: torch threads of this worker (default: torch's own choice).
        progress: ``"lines"`` (one line per finished trial on stderr), rich bars (``True``), or ``False``.

    Returns what this worker did (trials, evaluations, time). Ctrl-C fails the running trial
    and queues its candidate again for the other workers, then raises ``KeyboardInterrupt``.
    """
    import optuna

    from archforge.builder.network import check_device
    from archforge.search import executors
    from archforge.search.checks import prepare
    from archforge.search.driver import RunPlan, quiet_optuna
    from archforge.search.progress import make_display
    from archforge.search.space import parse_space
    from archforge.search.storage import load_run_study, open_storage, run_url, storage_errors
    from archforge.search.urls import masked_url
    from archforge.search.study import config_key, retry_interrupted

    where = f"study '{study}' at {masked_url(storage)}"
    with storage_errors(str(storage)), quiet_optuna():
        found = load_run_study(storage, study)
        meta = _run_meta(found, where)
        settings = _settings(meta, where)
        space = parse_space(meta.space, meta.space_file).with_params(settings.params)
        if space.fingerprint != meta.space_fingerprint:
            raise SearchError(f"{where}: this archforge reads the run's space otherwise than the one that started it "
                              "(another version of archforge or of a plugin): install the same versions on every worker")
        if config_key(settings, meta.dataset) != meta.config_key:
            raise SearchError(f"{where}: this archforge computes another training-settings key than the one that started "
                              "the run, so its results would not be comparable: install the same archforge on every worker")
        _check_portable(meta, where)
        if device is None and settings.devices:
            device = _run_device(settings.devices, where)
        # This worker runs trials here and now: how the run's own workers were placed is not its business.
        settings = settings.model_copy(update={"devices": None, "executor": "local", "workers": 1})
        if device is not None:
            try:
                check_device(device)
            except SettingError as exc:
                raise SettingError(f"--device: {exc}") from None
            settings = settings.model_copy(update={"train": settings.train.model_copy(update={"device": device})})
        prepared = prepare(space, settings, evaluator=meta.evaluator)
        url = run_url(storage)
        run_storage = open_storage(url, heartbeat=settings.heartbeat)  # this worker's heartbeats: the run's
        run_study = optuna.load_study(study_name=study, storage=run_storage)
        retry_interrupted(run_study, run_storage)  # a Ctrl-C'ed worker's candidate
        display = make_display(progress, console)
        distinct = space.distinct_candidates()
        plan = RunPlan(space_text=meta.space, space_file=meta.space_file, settings=settings, storage_url=url,
                       study_name=study, config_key=meta.config_key, dataset=settings.dataset, evaluator=meta.evaluator,
                       budget=_budget(run_study, settings, meta, display),
                       distinct=len(distinct) if distinct is not None else None, threads=threads)
        try:
            with display.running(plan.budget or plan.distinct, sum(r.counted for r in records.read_trials(run_study)),
                                 epochs_bar=True):
                return executors.run_worker(plan, index=_worker_index(), space=space, data=prepared.data,
                                            storage=run_storage, display=display)
        except KeyboardInterrupt:
            # Other workers may be running: the interrupted candidate is queued for them (or for a resume).
            retry_interrupted(run_study, run_storage)
            raise


def _budget(study: Any, settings: Any, meta: RunMeta, display: Any, poll_s: float = 2.0) -> int | None:
    """The run's budget; with a zero-cost proxy or the one-shot strategy, known only once the driver's phase is stored:
    wait for it (a worker that started sampling before would train candidates nobody chose)."""
    import time

    from archforge.search.records import ONESHOT_KEY, PROXY_KEY, OneShotPhase, ProxyPhase

    if settings.proxy is None and settings.strategy != "oneshot":
        return meta.budget
    said = False
    while True:
        if settings.strategy == "oneshot":
            shot = records.read_study_attr(study, OneShotPhase, ONESHOT_KEY)
            if shot is not None:
                return min(settings.oneshot.retrain_top, len(shot.ranking))
        else:
            phase = records.read_study_attr(study, ProxyPhase, PROXY_KEY)
            if phase is not None:
                return phase.kept if settings.trial_budget is None else min(settings.trial_budget, phase.kept)
        if not said:
            what = "one-shot phase to rank" if settings.strategy == "oneshot" else "proxy phase to choose"
            display.message(f"waiting for the search's {what} the candidates to train")
            said = True
        time.sleep(poll_s)


def _run_device(devices: list[str], where: str) -> str:
    """One of the run's ``devices`` that this machine has (workers spread over them), else a one-line refusal."""
    from archforge.builder.network import check_device

    usable = []
    for candidate in devices:
        try:
            check_device(candidate)
            usable.append(candidate)
        except SettingError:
            pass
    if not usable:
        raise SettingError(f"{where} spreads its workers over {', '.join(devices)}, none of which this machine has: "
                           "give this worker a device of its own (--device cpu, --device cuda:0)")
    return usable[_worker_index() % len(usable)]


def _run_meta(study: Any, where: str) -> RunMeta:
    try:
        meta = records.read_study_attr(study, RunMeta, RUN_KEY)
    except ValueError as exc:
        raise SearchError(f"{where}: {exc}") from None
    if meta is None:
        raise SearchError(f"{where} is no archforge search: start one with archforge search SPACE --storage URL --name NAME")
    return meta


def _settings(meta: RunMeta, where: str) -> Any:
    from pydantic import ValidationError

    from archforge.search.records import first_error
    from archforge.search.settings import SearchSettings

    try:
        return SearchSettings.model_validate(meta.settings)
    except ValidationError as exc:
        strategy, pruner = meta.settings.get("strategy"), meta.settings.get("pruner")
        objects = [f"{what} {value}" for what, value in (("strategy", strategy), ("pruner", pruner))
                   if isinstance(value, str) and value[:1].isupper()]
        if objects:
            raise SearchError(f"{where} uses an Optuna object passed from Python ({', '.join(objects)}), which a worker "
                              "cannot rebuild from the store: run extra workers from the same script (workers=N)") from None
        raise SearchError(f"{where}: its settings cannot be read by this archforge ({first_error(exc)}): "
                          "install the same archforge on every worker") from None


def _check_portable(meta: RunMeta, where: str) -> None:
    if meta.own_data:
        raise SearchError(f"{where} searches a dataset object passed from Python; a worker loads datasets by name: "
                          "start the search with a dataset name (a plugin's dataset, an .npz file or an image folder)")
    if meta.evaluator is not None and meta.evaluator.startswith("<"):
        raise SearchError(f"{where} uses the evaluator {meta.evaluator}, which cannot be imported by name: start the "
                          "search with evaluator='module:function' (a function at the top level of an importable module)")


def _worker_index() -> int:
    """A number that sets this worker's sampler sequence apart from other machines' and processes'."""
    digest = hashlib.sha256(f"{socket.gethostname()}:{os.getpid()}".encode()).digest()
    return 1 + int.from_bytes(digest[:3], "big")
