"""Where a run's workers execute: in this process, in local worker processes, or as Ray tasks.

One worker runs in the calling process. ``workers: N`` starts N processes (``spawn``: each
re-imports the caller's main module, hence the ``if __name__ == "__main__":`` guard a script
needs) that join the same study, each with ``cores / N`` torch threads and its own Optuna
sampler; this process watches the store and draws the progress. Workers end when this process
dies (``kill -9`` included), so no orphan keeps training. Ctrl-C: each worker fails its trial
(Optuna marks it), the run ends with ``KeyboardInterrupt``, and the same command resumes it.
``devices: [cuda:0, cuda:1]`` gives the workers those devices in turn. Ray tasks:
:mod:`archforge.search.ray_executor`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import signal
import sys
import threading
import time
import traceback
import warnings
from typing import Any, Callable, Iterator, Sequence

from archforge.errors import SearchError, SpecError, SpecWarning
from archforge.search import records
from archforge.search.driver import Objective, RunPlan, StopRule, TrialFailed, quiet_optuna
from archforge.search.progress import Display
from archforge.search.space import Space


def run_workers(plan: RunPlan, study: Any, display: Display, *, workers: int, executor: str, **in_process: Any) -> None:
    """Run ``workers`` workers on ``plan`` until they stop; ``in_process``: objects the single in-process worker reuses."""
    if executor == "ray":
        from archforge.search.ray_executor import run_ray

        run_ray(plan, study, display, workers, plan.settings.ray)
    elif workers == 1:
        run_worker(plan.on_device(_device(plan, 0)), display=display, **in_process)
    else:
        _run_processes(plan, study, display, workers)


def _device(plan: RunPlan, index: int) -> str | None:
    """The device of worker ``index``: the settings' ``devices`` in turn (``None``: ``train.device``)."""
    devices = plan.settings.devices
    return devices[index % len(devices)] if devices else None


def run_worker(plan: RunPlan, *, index: int = 0, space: Space | None = None, data: Any = None, storage: Any = None,
               display: Display | None = None) -> records.WorkerStats:
    """One worker: join the run's study and ``study.optimize`` until the stop rule, the sampler or Ctrl-C ends it."""
    import optuna

    from archforge.search import strategies
    from archforge.search.checks import load_data, resolve_evaluator
    from archforge.search.locks import claim_store
    from archforge.search.storage import open_storage, sqlite_path

    space = space if space is not None else _parse_space(plan)
    storage = storage if storage is not None else open_storage(plan.storage_url, heartbeat=plan.settings.heartbeat)
    data = data if data is not None else load_data(plan.dataset, plan.settings)
    display = display or Display()
    claim, _ = claim_store(sqlite_path(plan.storage_url))  # held while this worker runs
    try:
        with quiet_optuna():
            study = optuna.load_study(study_name=plan.study_name, storage=storage)
            trials = records.read_trials(study)
            # Each worker, and each resumed session, draws its own sequence (NumPy seeds stop at 2**32).
            seed = plan.settings.seed if plan.settings.strategy == "grid" else (plan.settings.seed + 1000 * index + len(trials)) % 2**32
            sampler = study.sampler = strategies.make_sampler(plan.settings, space, seed=seed)
            study.pruner = strategies.make_pruner(plan.settings)
            objective = Objective(plan, space, data, resolve_evaluator(plan.evaluator), display=display, index=index,
                                  lineage=lambda number: strategies.lineage(sampler, number))
            stop = StopRule(plan.budget, plan.distinct, display, grace=plan.settings.heartbeat.grace)
            warm_up(space, data)
            stats = records.WorkerStats(index=index)
            started = time.perf_counter()
            # A resumed run whose budget is spent, or whose space is exhausted, asks for nothing new;
            # a worker joining a run whose last candidates others are training waits to take over a dead one's.
            if not stop.finished(study, trials):
                study.optimize(objective, callbacks=[stop], catch=(TrialFailed,))
                # The grid sampler stops the study once every point was asked for, maybe with the
                # retry of a dead worker's trial still queued: run it (a reuse, or the missing seeds).
                runs = 0
                while _waiting(study) and runs < 1000:  # bounded: each retry ran at most MAX_RETRY times anyway
                    study.optimize(objective, n_trials=1, callbacks=[stop], catch=(TrialFailed,))
                    runs += 1
            stats.wall_s = time.perf_counter() - started
            stats.eval_s = objective.eval_s
            mine = [r for r in records.read_trials(study) if r.worker is not None and r.worker.pid == os.getpid()]
            stats.trials, stats.evaluated = len(mine), sum(r.counted for r in mine)
            if stats.trials:
                records.write_worker_stats(study, f"{socket.gethostname()}:{os.getpid()}:{index}:{int(time.time())}", stats)
            return stats
    finally:
        if claim is not None:
            os.close(claim)


def _waiting(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


def warm_up(space: Space, data: Any) -> None:
    """Once per worker, before the first trial: plugins, the FLOP counter, the first candidate's graph."""
    from archforge.builder import summarize
    from archforge.registry import default_registry

    default_registry()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SpecWarning)
            summarize(space.concretize({n: d.first() for n, d in space.decisions.items()}).spec)
    except Exception:  # an invalid first candidate is the search's business, not the warm-up's
        pass


def _parse_space(plan: RunPlan) -> Space:
    from archforge.search.space import parse_space

    return parse_space(plan.space_text, plan.space_file).with_params(plan.settings.params)




def default_threads(workers: int) -> int | None:
    """Torch threads per worker: the cores shared out (``None``, torch's default, for one worker)."""
    if workers <= 1:
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // workers)


def worker_main(plan: RunPlan, index: int, watch_parent: bool = False) -> None:
    """Entry point of a worker process (local or Ray); ``watch_parent``: end when the driver process dies."""
    if watch_parent:
        _die_with_parent()
    if plan.threads:
        import torch

        torch.set_num_threads(plan.threads)
    try:
        with warnings.catch_warnings(), ctrl_c_reported_once():
            warnings.simplefilter("ignore", SpecWarning)
            run_worker(plan, index=index)
    except KeyboardInterrupt:
        sys.exit(130)
    except SpecError as exc:
        print(f"worker {index}: {exc.format()}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        from archforge.search.storage import storage_error

        mapped = storage_error(exc, plan.storage_url)
        if mapped is None and os.environ.get("ARCHFORGE_DEBUG"):
            traceback.print_exc()
        text = mapped.format() if mapped else f"crashed: {type(exc).__name__}: {exc} (ARCHFORGE_DEBUG=1 shows the traceback)"
        print(f"worker {index}: {text}", file=sys.stderr)
        sys.exit(1)


@contextlib.contextmanager
def ctrl_c_reported_once() -> Iterator[None]:
    """While searching, a Ctrl-C that lands in a garbage-collector callback is not printed as a traceback.

    Python ignores such a KeyboardInterrupt with a traceback on stderr; the search still stops:
    the workers exit with status 130, which the driver takes as the interrupt.
    """
    default = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            default(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = default


def _die_with_parent() -> None:
    """End this worker when the driver dies (``kill -9`` included); its trial is then failed and retried on resume."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:  # portable, and covers a parent that died before prctl
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="archforge-parent-watch", daemon=True).start()


def _run_processes(plan: RunPlan, study: Any, display: Display, workers: int) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=worker_main, args=(plan.on_device(_device(plan, i)), i, True), name=f"archforge-worker-{i}")
                 for i in range(workers)]
    try:
        for p in processes:
            p.start()
    except RuntimeError as exc:
        if "bootstrapping phase" in str(exc):
            raise SearchError("worker processes re-import the main module: call archforge.search from a script inside "
                              "'if __name__ == \"__main__\":' (see docs/search-spaces.md, Workers)") from None
        raise
    try:
        monitor(study, display, lambda: any(p.is_alive() for p in processes))
    except KeyboardInterrupt:
        _interrupt(processes)
        raise
    finally:
        for p in processes:
            p.join()
    codes = [p.exitcode for p in processes]
    if 130 in codes:
        # The workers were interrupted, but the driver's own KeyboardInterrupt can be lost: Python
        # ignores one raised inside a garbage-collector callback. The search was still interrupted.
        raise KeyboardInterrupt
    if all(code != 0 for code in codes):
        raise SearchError(f"every worker failed (exit codes {codes}); see the messages above")


def _interrupt(processes: Sequence[Any], grace: float = 10.0) -> None:
    """Ctrl-C: let each worker fail its trial and exit (a terminal sent them SIGINT too), then end the rest."""
    for p in processes:  # a terminal's Ctrl-C reached them too: a second one could cut their clean-up short
        p.join(1.0)
    for p in processes:
        if p.is_alive() and p.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(p.pid, signal.SIGINT)
    deadline = time.monotonic() + grace
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in processes:
        if p.is_alive():
            p.terminate()


def monitor(study: Any, display: Display, alive: Callable[[], bool], interval: float = 1.0) -> None:
    """Draw the progress of worker processes from the store until ``alive()`` is false."""
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}  # earlier sessions' trials
    while True:
        running = alive()
        trials = records.read_trials(study)
        counted = sum(r.counted for r in trials)
        busy: dict[int, tuple[int, int, int]] = {}
        for r in trials:
            if r.status not in ("running", "waiting", "interrupted") and r.number not in seen:
                seen.add(r.number)
                display.trial_finished(r, counted)
            elif r.status == "running" and r.worker is not None and r.progress is not None:
                busy[r.worker.index] = (r.number, r.progress.done, r.progress.total)
        display.workers(busy)
        if not running:
            break
        time.sleep(interval)
