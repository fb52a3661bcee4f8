"""``executor: ray``: a search's workers as Ray tasks on a cluster, each with its own CPUs and GPUs.

Each task runs the ordinary worker loop (:func:`archforge.search.executors.worker_main`): one
Optuna worker that joins the run's study through its storage URL, exactly as a local worker
process does. So the results land in the same study, nothing is trained twice (the store
deduplicates), a dead worker's trial is failed by its heartbeats and retried, and
``archforge report`` reads the run as any other; Ray only places the workers and reserves what
each trial uses (``ray.cpus_per_trial``, ``ray.gpus_per_trial``; Ray sets ``CUDA_VISIBLE_DEVICES``
for a task that has GPUs, so its trials train on ``cuda``).

Without ``ray.address`` (nor ``RAY_ADDRESS``, which ``ray job submit`` sets) the search starts a
local cluster of its own and stops it at the end, whatever happens; with one (``auto``,
``HOST:6379``, ``ray://HOST:10001``) it joins that cluster and leaves it running. What Ray
would only find out later is refused up front, in one line: an address nobody answers at (Ray
itself retries for minutes), a SQLite file that workers on other machines cannot open, a trial
bigger than every node (Ray would wait forever). Ray's token authentication (on by default in
Ray 2.60) stays Ray's: a driver joining a cluster sends ``~/.ray/auth_token`` (or
``RAY_AUTH_TOKEN``); a cluster that refuses it is one line too.

Tasks get no Ray retries: a worker lost with its node leaves its trial to the heartbeats, and
the other workers (which wait for running trials before they leave) take the candidate; a
retried task could also wait forever for a node that is gone. Ctrl-C cancels the tasks (each
fails its trial, as a local worker does), kills those still running after a few seconds, and
raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import math
import os
import pickle
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from archforge.errors import SearchError
from archforge.search.driver import RunPlan
from archforge.search.progress import Display
from archforge.search.settings import RaySettings, SearchSettings

#: Seconds to wait for an address to answer before saying it does not.
PROBE_TIMEOUT_S = 5.0
#: Seconds cancelled tasks get to fail their trials before they are killed.
CANCEL_GRACE_S = 5.0
_EXTRA = "pip install 'archforge-nn[ray]'"


def run_ray(plan: RunPlan, study: Any, display: Display, workers: int, settings: RaySettings) -> None:
    """Run ``workers`` worker loops of ``plan`` as Ray tasks on the cluster ``settings.address`` (none: a new local one)."""
    check_settings(plan.settings, persistent=plan.storage_url != "memory")
    ray = _import_ray()
    with _session(ray, *_address(settings.address)):
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        problem = cluster_problem(nodes, ray.util.get_node_ip_address(), plan.storage_url, settings)
        if problem is not None:
            raise SearchError(problem)
        slots = trial_slots(nodes, settings)
        if slots < workers:
            display.message(f"ray: the cluster has room for {slots} of the {workers} workers at a time; "
                            "the others start as those end")
        _run_tasks(ray, task_plan(plan, settings), study, display, workers, settings)


def check_settings(settings: SearchSettings, *, persistent: bool) -> None:
    """Refuse, in one line, what a Ray run cannot do with these settings; ``persistent``: the storage outlives this process."""
    if not persistent:
        raise SearchError("executor 'ray' runs workers in other processes, which share the study through a persistent "
                          "storage: drop storage='memory'")
    if settings.devices:
        raise SearchError(f"devices {', '.join(settings.devices)} place local workers; with executor 'ray', Ray hands out "
                          "the GPUs: drop devices and ask for GPUs with --gpus-per-trial (1, or 0.5 for two trials per GPU)")
    if settings.ray.gpus_per_trial == 0 and settings.train.device.startswith("cuda"):
        raise SearchError(f"train.device {settings.train.device} with executor 'ray': Ray hands out the GPUs, "
                          "so ask for them with --gpus-per-trial (1, or 0.5 for two trials per GPU)")


def check_address(settings: RaySettings) -> None:
    """A one-line :class:`SearchError` when nothing answers at the cluster's address; quick, and needs no Ray.

    For the checks made before anything is stored (``run_ray`` makes it again).
    """
    address, named = _address(settings.address)
    if address is not None:
        _probe(address, named)


def task_plan(plan: RunPlan, settings: RaySettings) -> RunPlan:
    """The plan a task runs: torch threads for its CPUs, ``cuda`` when it has GPUs (Ray picks which)."""
    plan = dataclasses.replace(plan, threads=max(1, math.ceil(settings.cpus_per_trial)))
    return plan.on_device("cuda") if settings.gpus_per_trial > 0 else plan


def cluster_problem(nodes: Sequence[Mapping[str, Any]], here: str, storage_url: str, settings: RaySettings) -> str | None:
    """Why the search cannot run on the alive ``nodes`` (as ``ray.nodes()`` lists them), or ``None``.

    ``here``: this machine's address as Ray sees it (``ray.util.get_node_ip_address()``).
    """
    from archforge.search.storage import sqlite_path
    from archforge.search.urls import masked_url

    if sqlite_path(storage_url) is not None:
        elsewhere = sorted({str(n.get("NodeManagerAddress")) for n in nodes if not _on_this_machine(n, here)})
        if elsewhere:
            more = f" and {len(elsewhere) - 3} more" if len(elsewhere) > 3 else ""
            return (f"storage {masked_url(storage_url)} is a SQLite file on this machine, which the Ray workers on "
                    f"{', '.join(elsewhere[:3])}{more} cannot open: use --storage postgresql://USER@HOST/DB, a server every node reaches")
    if not any(_fits(n, settings) for n in nodes):
        largest = max(nodes, key=lambda n: (_amount(n, "GPU"), _amount(n, "CPU")), default={})
        return (f"a trial asks Ray for {settings.cpus_per_trial:g} CPUs and {settings.gpus_per_trial:g} GPUs, more than any "
                f"node of the cluster has (the largest: {_amount(largest, 'CPU'):g} CPUs, {_amount(largest, 'GPU'):g} GPUs): "
                "ask for less (--cpus-per-trial, --gpus-per-trial) or add a node that has it")
    return None


def trial_slots(nodes: Sequence[Mapping[str, Any]], settings: RaySettings) -> int:
    """How many trials the alive ``nodes`` run at once with the resources each asks for."""
    def per_node(node: Mapping[str, Any]) -> int:
        count = math.floor(_amount(node, "CPU") / settings.cpus_per_trial + 1e-9)
        if settings.gpus_per_trial > 0:
            count = min(count, math.floor(_amount(node, "GPU") / settings.gpus_per_trial + 1e-9))
        return count

    return sum(per_node(n) for n in nodes)


def ray_worker(plan_blob: bytes, paths: Sequence[str], index: int) -> tuple[int, str]:
    """The body of one Ray task: one worker loop; its exit status and its last line on stderr (a failure's message).

    The plan comes pickled, and is read after ``paths`` (the driver's ``sys.path``, those that
    exist on this node) are importable: an evaluator given as ``module:function`` is found as a
    local worker process finds it.
    """
    from archforge.search.executors import worker_main

    for path in paths:
        if path and path not in sys.path and os.path.isdir(path):
            sys.path.append(path)
    tail = _Tail(sys.stderr)
    with contextlib.redirect_stderr(tail):  # type: ignore[type-var]
        try:
            plan = pickle.loads(plan_blob)
        except Exception as exc:  # noqa: BLE001 - a module missing on this node: said in one line
            return 1, (f"worker {index}: cannot read the run on Ray node {socket.gethostname()}: {type(exc).__name__}: {exc} "
                       "(install archforge and the evaluator's module on every node)")
        try:
            worker_main(plan, index)
        except SystemExit as exc:  # worker_main's way to end: 1 with a message on stderr, 130 on Ctrl-C
            return (exc.code if isinstance(exc.code, int) else 1), tail.last
    return 0, ""


def _run_tasks(ray: Any, plan: RunPlan, study: Any, display: Display, workers: int, settings: RaySettings) -> None:
    from archforge.search.executors import monitor

    blob = ray.put(pickle.dumps(plan))  # once in the object store, not once per task
    paths = [p for p in sys.path if p]
    remote = ray.remote(ray_worker)
    refs = {
        remote.options(num_cpus=settings.cpus_per_trial, num_gpus=settings.gpus_per_trial, max_retries=0,
                       scheduling_strategy="SPREAD", name=f"archforge-worker-{i}").remote(blob, paths, i): i
        for i in range(workers)
    }
    pending = list(refs)
    ended: dict[int, tuple[int | None, str]] = {}

    def alive() -> bool:
        nonlocal pending
        if pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
            for ref in done:
                ended[refs[ref]] = _ended(ray, ref, refs[ref])
        return bool(pending)

    try:
        monitor(study, display, alive)
    except KeyboardInterrupt:
        _cancel(ray, pending)
        raise
    codes = [ended[i][0] for i in sorted(ended)]
    if 130 in codes:
        raise KeyboardInterrupt  # the workers were interrupted (a terminal's Ctrl-C reaches a local cluster's too)
    failures = [ended[i][1] for i in sorted(ended) if ended[i][0] != 0]
    if failures and len(failures) == len(codes):
        more = len(failures) - 1
        others = f" (and {more} more worker{'s' if more > 1 else ''} failed)" if more else ""
        raise SearchError(f"every Ray worker failed: {failures[0]}{others}")
    for text in failures:
        text = f"{text}; the other workers went on"
        if type(display) is Display:  # silent: a local worker process would have said it on stderr
            print(text, file=sys.stderr)
        else:
            display.message(text)


def _ended(ray: Any, ref: Any, index: int) -> tuple[int | None, str]:
    """How the task ``ref`` ended: its exit status (``None``: Ray lost it) and its message."""
    try:
        code, message = ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return 130, ""
    except ray.exceptions.RayError as exc:
        return None, (f"worker {index}: Ray lost it ({_ray_error(exc)}); a trial it was training is failed by its "
                      "heartbeats and retried by another worker")
    # worker_main's line is "worker N: error: ...": the driver's own error says "error:" once.
    return code, message.replace(": error: ", ": ", 1) if message else f"worker {index}: ended with status {code}"


def _ray_error(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # RayTaskError: the exception raised in the task
    if isinstance(cause, BaseException):
        exc = cause
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _cancel(ray: Any, pending: list[Any]) -> None:
    """Ctrl-C: each task gets a ``KeyboardInterrupt`` (its worker fails its trial), then what still runs is killed."""
    for force in (False, True):
        for ref in pending:
            with contextlib.suppress(Exception):  # a task that ended meanwhile
                ray.cancel(ref, force=force)
        with contextlib.suppress(Exception):
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=CANCEL_GRACE_S)
        if not pending:
            return


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SearchError(f"executor 'ray' needs the optional 'ray' package: {_EXTRA}") from None
    import ray.util  # ray.util.get_node_ip_address

    return ray


def _address(address: str | None) -> tuple[str | None, str]:
    """The cluster to join and where that was said: the setting, else ``RAY_ADDRESS`` (as ``ray job submit`` sets it)."""
    if address is None and os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], " (RAY_ADDRESS)"
    return address, ""


@contextlib.contextmanager
def _session(ray: Any, address: str | None, named: str = "") -> Iterator[None]:
    """Connected to the cluster at ``address`` (``None``: a new local one, stopped at the end) while the block runs.

    A driver the caller connected already is used as it is and left connected. What ``ray.init``
    changes in this process (the SIGTERM handler, ``RAY_AUTH_MODE`` and ``PYTHONBREAKPOINT``) is
    put back afterwards.
    """
    if ray.is_initialized():
        yield
        return
    reached = _probe(address, named) if address is not None else None
    saved_env = {name: os.environ.get(name) for name in ("RAY_AUTH_MODE", "PYTHONBREAKPOINT")}
    saved_sigterm = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        _init(ray, address, named, reached)
        yield
    finally:
        # For a cluster this search joined, shutdown only disconnects this driver (and ends its tasks).
        if ray.is_initialized():
            ray.shutdown()
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if saved_sigterm is not None:
            signal.signal(signal.SIGTERM, saved_sigterm)


def _init(ray: Any, address: str | None, named: str, reached: str | None = None) -> None:
    """``ray.init`` for ``address``; ``reached``: the ``HOST:PORT`` that answered the probe (``None``: none was probed)."""
    import logging

    # log_to_driver off: the tasks' output is the store's business (monitor draws it); failures come back as values.
    options: dict[str, Any] = dict(log_to_driver=False, logging_level=logging.ERROR)
    if address is None:
        # "local", not None: a stale ray_current_cluster file would make ray.init() join a cluster long gone.
        ray.init(address="local", include_dashboard=False, **options)
        return
    try:
        ray.init(address=address, **options)
    except ConnectionError as exc:
        if reached is not None:  # something answers there, but did not let this driver in: most often the token
            raise SearchError(f"the Ray cluster at '{address}'{named} answers at {reached} but did not let this driver in "
                              f"({_ray_error(exc)}): give this machine the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN; "
                              "`ray get-auth-token` on the head node shows it) and the cluster's Ray version") from None
        what = "no Ray cluster runs on this machine" if address == "auto" else _ray_error(exc)
        raise SearchError(f"cannot join the Ray cluster at '{address}'{named}: {what}: start one (`ray start --head`), give a "
                          "running cluster's address (--address HOST:6379), or leave the address out for a local cluster "
                          "of this search") from None
    except ray.exceptions.AuthenticationError:
        raise SearchError(f"the Ray cluster at '{address}'{named} refused this driver's token: put the cluster's token in "
                          "~/.ray/auth_token here (or RAY_AUTH_TOKEN), as `ray get-auth-token` shows it on the head node") from None
    except (RuntimeError, ValueError) as exc:
        raise SearchError(f"cannot join the Ray cluster at '{address}'{named}: {_ray_error(exc)}") from None


def _probe(address: str, named: str = "") -> str | None:
    """A one-line error when nothing answers at ``address`` (else ``ray.init`` retries for minutes); the ``HOST:PORT`` that answered."""
    target, source = address, ""
    if address == "auto":
        target, source = _recorded_address()
        if target is None:
            return None  # ray.init says at once that no cluster runs here, or finds one by its processes
    host, port = _host_port(target.removeprefix("ray://"))
    if host is None:
        return None  # not host:port: ray.init says what is wrong with it
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        why = f"no answer in {PROBE_TIMEOUT_S:g} s" if isinstance(exc, TimeoutError) else exc.strerror or type(exc).__name__
        found = f" found {target} in {source}, but" if source else ""
        raise SearchError(f"Ray address '{address}'{named}:{found} nothing answers at {host}:{port} ({why}): start the cluster "
                          "there (`ray start --head`) or give the address of a running one (--address); leave the address "
                          "out for a local cluster of this search") from None
    return f"{host}:{port}"


def _recorded_address() -> tuple[str | None, str]:
    """Where ``ray.init(address="auto")`` looks (its docstring): ``RAY_ADDRESS``, else the file the last ``ray start`` wrote."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], "RAY_ADDRESS"
    tmp = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None) or "/tmp"
    path = Path(tmp) / "ray" / "ray_current_cluster"
    try:
        text = path.read_text().strip()
    except OSError:
        return None, ""
    return (text or None), str(path)


def _host_port(text: str) -> tuple[str | None, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None, 0
    return host.strip("[]"), int(port)


def _on_this_machine(node: Mapping[str, Any], here: str) -> bool:
    address = str(node.get("NodeManagerAddress", ""))
    if address == here:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def _amount(node: Mapping[str, Any], resource: str) -> float:
    return float((node.get("Resources") or {}).get(resource, 0.0))


def _fits(node: Mapping[str, Any], settings: RaySettings) -> bool:
    return _amount(node, "CPU") + 1e-9 >= settings.cpus_per_trial and _amount(node, "GPU") + 1e-9 >= settings.gpus_per_trial


class _Tail:
    """A text stream that passes everything to ``stream`` and keeps the last non-empty line written."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.text = ""

    def write(self, text: str) -> int:
        self.text = (self.text + text)[-4000:]
        with contextlib.suppress(Exception):
            self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(Exception):
            self.stream.flush()

    @property
    def last(self) -> str:
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        return lines[-1] if lines else ""
