"""A two-node Ray cluster on one machine, inside private namespaces, and a search run on it (for test_ray_executor.py).

Run as root::

    unshare --net --pid --fork --mount --mount-proc --kill-child python tests/ray_two_nodes.py WORKDIR

``WORKDIR/space.yaml`` is the space searched (a grid of a few candidates).

Inside, only the loopback interface exists: the head node listens on 127.0.0.1 and the second
node on 127.0.0.2, so nothing is reachable from outside and nothing outside is disturbed. A tmpfs
over ``/tmp/ray`` keeps Ray's session folders and its ``ray_current_cluster`` file (a stale one
breaks later ``address="auto"`` runs) out of the machine's ``/tmp``. This script is the namespace's
first process: when it ends, the kernel ends every process left in it (both nodes included), so
there is no ``ray stop``, which would also stop the Ray processes of others on the machine.

The search trains a grid on both nodes (each trial with one CPU and half a GPU, as far as Ray's
accounting goes), and the second node is killed (``kill -9`` of its raylet and everything below
it) in the middle of its second training. The script prints one JSON line: what the run stored,
who trained what (the evaluator's log: pid, Ray node, threads, device), what the driver said on
stderr, and how long each step took.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEAD, SECOND = "127.0.0.1", "127.0.0.2"
PORT = 6379


def ray_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ray.scripts.scripts", *args]


def wait_port(host: str, port: int, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on {host}:{port} after {limit_s} s")
            time.sleep(0.2)


def cluster(work: Path, env: dict[str, str]) -> dict[str, float]:
    """Start the head node and, as soon as its GCS answers, the second node; seconds each took."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/tmp/ray"] if Path("/tmp/ray").is_dir() else
                   ["sh", "-c", "mkdir -p /tmp/ray && mount -t tmpfs tmpfs /tmp/ray"], check=True)
    # One GPU per node as far as Ray's accounting goes (none is used: the evaluator trains nothing).
    common = ["--num-cpus", "1", "--num-gpus", "1", "--disable-usage-stats"]
    started = time.perf_counter()
    head = subprocess.Popen(ray_command("start", "--head", "--node-ip-address", HEAD, "--port", str(PORT), "--include-dashboard=false",
                                        *common), env=env, stdout=(work / "head.log").open("w"), stderr=subprocess.STDOUT)
    wait_port(HEAD, PORT, 60)
    gcs_s = time.perf_counter() - started
    second = subprocess.run(ray_command("start", "--address", f"{HEAD}:{PORT}", "--node-ip-address", SECOND, *common), env=env,
                            stdout=(work / "second.log").open("w"), stderr=subprocess.STDOUT, timeout=90)
    if head.wait(timeout=90) != 0 or second.returncode != 0:
        raise SystemExit(f"ray start failed: see {work}/head.log and {work}/second.log")
    return {"gcs_s": round(gcs_s, 2), "cluster_s": round(time.perf_counter() - started, 2)}


def driver(work: Path) -> None:
    """In the namespace, after the cluster is up: the run, and one JSON line about it."""
    import types

    import archforge
    sys.path.insert(0, str(HERE))
    space = work / "space.yaml"  # written by the test
    data = types.SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")
    options = dict(dataset=data, evaluator="ray_evaluators:fake_train", runs_dir=work, progress=False, executor="ray")
    out: dict = {}
    started = time.perf_counter()
    # The second node is killed during its second training (kill_when_hanging): heartbeats find its trial fast.
    result = archforge.search(space, storage=work / "study.db", workers=2, heartbeat={"interval": 1, "grace": 3},
                              ray={"address": "auto", "cpus_per_trial": 1, "gpus_per_trial": 0.5}, **options)
    out["ended_at"] = round(time.time(), 2)
    out["run_s"] = round(time.perf_counter() - started, 2)
    out["records"] = [{"number": r.number, "hash": r.hash, "status": r.status, "state": r.state, "accuracy": r.accuracy,
                       "counted": r.counted, "retry_of": r.retry_of} for r in result.trials]
    log = Path(os.environ["ARCHFORGE_TEST_LOG"])
    out["trainings"] = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    print(json.dumps(out))


def main() -> None:
    work = Path(sys.argv[-1]).resolve()
    if "--driver" in sys.argv:
        driver(work)
        return
    if os.getpid() != 1:
        raise SystemExit("run inside 'unshare --net --pid --fork --mount --mount-proc --kill-child' (see the docstring)")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "ARCHFORGE_TEST_LOG": str(work / "trainings.jsonl"),
           "ARCHFORGE_TEST_NODES": "2", "ARCHFORGE_TEST_BARRIER": str(work / "barrier"),
           "ARCHFORGE_TEST_HANG_NODE": SECOND, "ARCHFORGE_TEST_HANG_FILE": str(work / "hanging"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)}
    times = cluster(work, env)
    killer = threading.Thread(target=kill_when_hanging, args=(work / "hanging", SECOND, times), daemon=True)
    killer.start()
    driven = subprocess.run([sys.executable, __file__, "--driver", str(work)], env=env, capture_output=True, text=True, timeout=120)
    if driven.returncode != 0:
        sys.stderr.write(driven.stderr[-6000:])
        raise SystemExit(driven.returncode)
    result = json.loads(driven.stdout.strip().splitlines()[-1])
    print(json.dumps({**result, **times, "driver_stderr": driven.stderr[-4000:]}))


def kill_when_hanging(marker: Path, address: str, times: dict) -> None:
    """When a training on the node at ``address`` waits on ``marker``: kill -9 that node (its raylet and what it started)."""
    while not marker.exists():
        time.sleep(0.1)
    roots = [pid for pid, command in processes().items() if f"={address}" in command or f" {address} " in command]
    doomed = set(roots)
    parents = {pid: parent_of(pid) for pid in processes()}
    while True:  # and every process below them
        more = {pid for pid, parent in parents.items() if parent in doomed} - doomed
        if not more:
            break
        doomed |= more
    for pid in doomed:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    times["killed_at"] = round(time.time(), 2)
    times["killed"] = len(doomed)


def processes() -> dict[int, str]:
    """Every process of this PID namespace (its own /proc) and its command line."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                found[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return found


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


if __name__ == "__main__":
    main()
