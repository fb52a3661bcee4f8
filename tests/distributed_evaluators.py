"""Cheap, deterministic evaluators for tests whose worker processes import them by name.

``archforge search ... --evaluator tests.distributed_evaluators:fake_train`` and the ``archforge
worker`` processes that join that study import this module (the repository root on
``PYTHONPATH``). Nothing is trained: :func:`fake_train` sleeps ``ARCHFORGE_TEST_EPOCH_S`` seconds
per epoch and returns :func:`accuracy_of` the candidate and seed, so a test can check every
stored value against a fact it computes itself. Each call appends ``start`` and ``end`` events
(candidate hash, seed, pid, process group) to ``ARCHFORGE_TEST_LOG``: one short ``O_APPEND`` write
per line, whole even when several processes write at once. That log, not the store, tells which
process really trained what, and how often.

While the file named by ``ARCHFORGE_TEST_HOLD`` exists, every call that starts logs ``held`` and
waits (at most ``HOLD_LIMIT_S``): a test holds each worker mid-trial to look at a running study,
or to kill a worker at a moment when it surely is training.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from types import SimpleNamespace
from typing import Any, Callable

from archforge.search.space import candidate_hash

#: The longest a call waits on the hold file; a test that forgot it must not hang CI.
HOLD_LIMIT_S = 60.0


def accuracy_of(spec: Any, seed: int) -> float:
    """The accuracy :func:`fake_train` gives ``spec`` (a Spec or its dict) trained with ``seed``: in [0.5, 0.9)."""
    digest = hashlib.sha256(candidate_hash(spec).encode()).digest()
    return 0.5 + 0.3 * int.from_bytes(digest[:4], "big") / 2**32 + 0.01 * (seed % 10)


def log_event(event: str, spec: Any, config: Any, **extra: Any) -> None:
    """Append one event line to ``ARCHFORGE_TEST_LOG`` (nothing when it is unset)."""
    path = os.environ.get("ARCHFORGE_TEST_LOG")
    if not path:
        return
    line = json.dumps({"event": event, "hash": candidate_hash(spec), "seed": config.seed, "pid": os.getpid(),
                       "pgid": os.getpgid(0), "t": round(time.time(), 3), **extra}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The events logged so far (a line still being written is left out)."""
    try:
        with open(path) as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines[:-1] if line]


def _hold(spec: Any, config: Any) -> None:
    path = os.environ.get("ARCHFORGE_TEST_HOLD")
    if not path or not os.path.exists(path):
        return
    log_event("held", spec, config)
    deadline = time.monotonic() + HOLD_LIMIT_S
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)


def fake_train(spec: Any, data: Any, config: Any, on_epoch: Callable[[int, float], bool] | None = None) -> SimpleNamespace:
    """Pretend to train ``spec`` for ``config.epochs`` epochs; the accuracy is :func:`accuracy_of` (spec, seed)."""
    log_event("start", spec, config)
    _hold(spec, config)
    accuracy = accuracy_of(spec, config.seed)
    pause = float(os.environ.get("ARCHFORGE_TEST_EPOCH_S", "0"))
    history: list[float] = []
    for epoch in range(1, config.epochs + 1):
        time.sleep(pause)
        history.append(accuracy if epoch == config.epochs else accuracy * epoch / config.epochs)
        if on_epoch is not None and on_epoch(epoch, history[-1]):
            break
    log_event("end", spec, config, epochs=len(history))
    return SimpleNamespace(accuracy=history[-1], epochs=len(history), history=history, stopped_early=len(history) < config.epochs,
                           params=1000, flops=1000, latency_ms=1.0, peak_memory_mb=1.0, train_time_s=pause * len(history))


def no_op(spec: Any, data: Any, config: Any, on_epoch: Callable[[int, float], bool] | None = None) -> SimpleNamespace:
    """Return at once, as if trained: the store's and the driver's cost per trial, alone."""
    accuracy = accuracy_of(spec, config.seed)
    return SimpleNamespace(accuracy=accuracy, epochs=config.epochs, history=[accuracy] * config.epochs, stopped_early=False,
                           params=1000, flops=1000, latency_ms=1.0, peak_memory_mb=1.0, train_time_s=0.0)
