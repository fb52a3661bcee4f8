"""Import cost of archforge's entry points, and what each one drags in.

Each statement runs in a fresh interpreter (best of ``--repeat``); the times are taken inside
that interpreter around the statement alone, so interpreter start-up is not counted: ``wall``
(elapsed) and ``cpu`` (this process's CPU time, steadier than wall time on a busy machine).
``ratio`` is the CPU time over ``import torch``'s: a plugin import near 1.0 costs little
beyond torch, which every plugin needs anyway. ``heavy`` lists the modules a plugin should
not pay for that the statement left in ``sys.modules``.

    python benchmarks/bench_import.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

STATEMENTS = (
    ("import torch", "import torch"),
    ("import archforge (facade)", "import archforge"),
    ("from archforge import Block", "from archforge import Block"),
    ("from archforge.plugin import ...", "from archforge.plugin import Block, BlockArgs, Shape, ShapeError, hookimpl"),
    ("import archforge_halo.blocks", "import archforge_halo.blocks"),
)

#: Modules a block plugin does not need; their presence after an import is reported.
HEAVY = (
    "archforge.builder", "archforge.graph", "archforge.search", "archforge.data", "archforge.spec",
    "optuna", "matplotlib", "networkx", "rich", "torch.fx",
)

PROBE = """
import json, sys, time
start, start_cpu = time.perf_counter(), time.process_time()
exec({statement!r})
wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
heavy = [name for name in {heavy!r} if name in sys.modules]
print(json.dumps({{"wall": wall, "cpu": cpu, "heavy": heavy}}))
"""


def measure(statement: str, repeat: int) -> tuple[float, float, list[str]]:
    """Best wall and CPU times of ``repeat`` fresh interpreters running ``statement``, and the heavy modules it loaded.

    A statement that fails is reported as ``nan`` with its error's last line as the only "module".
    """
    wall, cpu, heavy = float("inf"), float("inf"), []
    for _ in range(repeat):
        probe = PROBE.format(statement=statement, heavy=HEAVY)
        completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            return float("nan"), float("nan"), [f"failed: {completed.stderr.strip().splitlines()[-1]}"]
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        wall, cpu, heavy = min(wall, result["wall"]), min(cpu, result["cpu"]), result["heavy"]
    return wall, cpu, heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh interpreters per statement (best is kept)")
    options = parser.parse_args()

    rows = [(label, *measure(statement, options.repeat)) for label, statement in STATEMENTS]
    torch_cpu = rows[0][2]
    print(f"{'statement':<34} {'wall s':>7} {'cpu s':>7} {'ratio':>6}  heavy modules loaded")
    for label, wall, cpu, heavy in rows:
        print(f"{label:<34} {wall:>7.3f} {cpu:>7.3f} {cpu / torch_cpu:>6.2f}  {', '.join(heavy) or '-'}")


if __name__ == "__main__":
    main()
