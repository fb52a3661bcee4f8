"""A cheap, deterministic evaluator for the Ray executor's tests, imported by name in Ray's worker processes.

``evaluator="ray_evaluators:fake_train"``: nothing is trained; the accuracy is a function of the
candidate alone (:func:`accuracy_of`), so a Ray run and a local run of one space must store the
same numbers. Each call appends one line (candidate hash, seed, pid, the Ray node it ran on, its
torch threads, device and ``CUDA_VISIBLE_DEVICES``)
to ``ARCHFORGE_TEST_LOG`` when that is set: the log, not the store, says who trained what.
With ``ARCHFORGE_TEST_NODES=N`` and ``ARCHFORGE_TEST_BARRIER=FOLDER``, a call first waits (at most
``BARRIER_LIMIT_S``) until calls on N distinct Ray nodes have started: every node then trains
something, however late its worker started. With ``ARCHFORGE_TEST_HANG_NODE=ADDRESS`` and
``ARCHFORGE_TEST_HANG_FILE=PATH``, the second call in a process on the Ray node at ADDRESS
creates PATH and then waits (at most ``HANG_LIMIT_S``): the test kills that node meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from types import SimpleNamespace
from typing import Any, Callable

from archforge.search.space import candidate_hash

#: The longest a call waits for the other nodes; a test whose nodes never all come must not hang.
BARRIER_LIMIT_S = 30.0
#: The longest a call waits for the node it runs on to be killed.
HANG_LIMIT_S = 60.0
_calls = 0


def accuracy_of(spec: Any) -> float:
    """The accuracy :func:`fake_train` gives ``spec`` (a Spec or its dict): in [0.5, 0.9)."""
    digest = hashlib.sha256(candidate_hash(spec).encode()).digest()
    return 0.5 + 0.4 * int.from_bytes(digest[:4], "big") / 2**32


def fake_train(spec: Any, data: Any, config: Any, on_epoch: Callable[[int, float], bool] | None = None, *,
               epoch_s: float = 0.0) -> SimpleNamespace:
    """Report ``config.epochs`` epochs reaching :func:`accuracy_of` ``spec``, ``epoch_s`` seconds each."""
    global _calls
    _calls += 1
    _barrier()
    _hang()
    history = []
    for epoch in range(1, config.epochs + 1):
        time.sleep(epoch_s)
        history.append(accuracy_of(spec) * epoch / config.epochs)
        if on_epoch is not None and on_epoch(epoch, history[-1]):
            break
    _log(spec, config)
    return SimpleNamespace(accuracy=history[-1], epochs=len(history), history=history, stopped_early=len(history) < config.epochs,
                           params=10, flops=10, latency_ms=1.0, peak_memory_mb=1.0, train_time_s=0.0)


def slow_train(spec: Any, data: Any, config: Any, on_epoch: Callable[[int, float], bool] | None = None) -> SimpleNamespace:
    """:func:`fake_train` at half a second per epoch: long enough to interrupt a trial."""
    return fake_train(spec, data, config, on_epoch, epoch_s=0.5)


def _node() -> str | None:
    import ray  # only ever called inside a Ray task here

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _barrier() -> None:
    folder, count = os.environ.get("ARCHFORGE_TEST_BARRIER"), int(os.environ.get("ARCHFORGE_TEST_NODES", "0"))
    if not folder or count < 2:
        return
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, str(_node())), "a").close()
    deadline = time.monotonic() + BARRIER_LIMIT_S
    while len(os.listdir(folder)) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def _hang() -> None:
    node, path = os.environ.get("ARCHFORGE_TEST_HANG_NODE"), os.environ.get("ARCHFORGE_TEST_HANG_FILE")
    if not node or not path or _calls != 2:
        return
    import ray.util

    if ray.util.get_node_ip_address() == node:
        open(path, "a").close()
        time.sleep(HANG_LIMIT_S)


def _log(spec: Any, config: Any) -> None:
    path = os.environ.get("ARCHFORGE_TEST_LOG")
    if not path:
        return
    line = json.dumps({"hash": candidate_hash(spec), "seed": config.seed, "pid": os.getpid(), "node": _node(),
                       "threads": config.threads, "device": config.device,
                       "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # one write per line: whole with several writers
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
