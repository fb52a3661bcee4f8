"""Cost of one search trial: where the time of a budgeted candidate evaluation goes.

Trains resnet_tiny-sized candidates (archforge/zoo/models/resnet_tiny.yaml with a 1×28×28 input
and widths 8/16/24) on a small MNIST budget (default: 1 epoch on 2,000 images, 1,600
train / 400 validation, batch 128) and prints one table:

* data load time: cold (CSV decoded, .npz cache written to a fresh cache directory)
  and cached (.npz read), split and normalisation included;
* per candidate: build (spec → graph → module), summarize (params/FLOPs in one forward),
  training steps, validation, latency measurement, everything else, total;
* per candidate, the measured forward latency (median and interquartile range of the timed
  runs, see :mod:`archforge.search.measure`) and whether it is noisy;
* ``not training``: the fraction of the trial's wall time outside the training steps
  (validation included), and ``harness``: the fraction outside training *and*
  validation, i.e. the driver's own overhead (target < 5 %);
* trials per hour at that budget.

The first trial of a process pays one-time imports (``torch._dynamo``, pulled in by the
first optimizer and FLOP counter); it is run first and reported on its own line.

    python benchmarks/bench_trial.py [--threads 1] [--limit 2000] [--epochs 1] [--batch 128] [--repeats 2] [--latency-repeats 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

import archforge
from archforge.data import load_dataset
from archforge.data import sources
from archforge.search.evaluate import TrainConfig, evaluate
from archforge.search.measure import NOISY_IQR_FRACTION, Latency

RESNET_TINY = Path(__file__).resolve().parents[1] / "archforge" / "zoo" / "models" / "resnet_tiny.yaml"


def candidate(width: int) -> archforge.Spec:
    """resnet_tiny for 1×28×28 MNIST digits at ``width``."""
    data = archforge.load_spec(RESNET_TINY).to_dict()
    data["name"] = f"resnet_tiny_w{width}"
    data["input"] = {"shape": [1, 28, 28]}
    data["params"] = {**data.get("params", {}), "width": width, "classes": 10}
    return archforge.Spec.from_dict(data)


def time_data(limit: int) -> tuple[float, float, archforge.data.DataSplit]:
    with tempfile.TemporaryDirectory() as cache:
        previous = os.environ.get("ARCHFORGE_CACHE")
        os.environ["ARCHFORGE_CACHE"] = cache
        try:
            sources.clear_memory_cache()
            start = time.perf_counter()
            load_dataset("mnist", limit=limit)
            cold = time.perf_counter() - start
            sources.clear_memory_cache()
            start = time.perf_counter()
            data = load_dataset("mnist", limit=limit)
            cached = time.perf_counter() - start
        finally:
            sources.clear_memory_cache()
            if previous is None:
                os.environ.pop("ARCHFORGE_CACHE", None)
            else:
                os.environ["ARCHFORGE_CACHE"] = previous
    return cold, cached, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trial (default 1)")
    parser.add_argument("--limit", type=int, default=2000, help="MNIST images used (train + validation)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--widths", default="8,16,24")
    parser.add_argument("--repeats", type=int, default=2, help="trials per candidate (median reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--latency-repeats", type=int, default=TrainConfig().latency_repeats,
                        help="least timed forward passes of the latency measurement (0 skips it)")
    options = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(options.threads)

    cold, cached, data = time_data(options.limit)
    config = TrainConfig(epochs=options.epochs, batch_size=options.batch, threads=options.threads, device=options.device,
                         latency_repeats=options.latency_repeats)

    start = time.perf_counter()
    evaluate(candidate(8), data, config)
    first = time.perf_counter() - start

    columns = ["build", "summarize", "train", "validate", "latency", "other", "total"]
    rows = []
    for width in (int(w) for w in options.widths.split(",")):
        spec = candidate(width)
        runs = []
        for _ in range(options.repeats):
            start = time.perf_counter()
            result = evaluate(spec, data, config)
            wall = time.perf_counter() - start
            t = dict(result.timings)
            t["total"] = wall
            t.setdefault("latency", 0.0)
            t["other"] = wall - sum(t[k] for k in ("build", "summarize", "train", "validate", "latency"))
            runs.append((t, result))
        median = {k: statistics.median(t[k] for t, _ in runs) for k in columns}
        rows.append((width, median, runs[-1][1]))

    print(f"trial benchmark — MNIST {len(data.train_y)} train / {len(data.val_y)} val, {options.epochs} epoch(s), batch {options.batch}, "
          f"{options.device}, {options.threads} thread(s), torch {torch.__version__}")
    print()
    print(f"{'data load, cold (decode CSV + write .npz cache)':<52}{cold * 1e3:>10.0f} ms")
    print(f"{'data load, cached (.npz + split + normalise)':<52}{cached * 1e3:>10.0f} ms")
    print(f"{'first trial in the process (one-time imports)':<52}{first * 1e3:>10.0f} ms")
    print()
    header = (f"{'candidate':<16}{'params':>8}{'MFLOPs':>8}" + "".join(f"{c + ' ms':>13}" for c in columns)
              + f"{'not train':>11}{'harness':>9}{'acc':>7}{'trials/h':>10}{'fwd ms':>9}{'IQR ms':>8}")
    print(header)
    print("-" * len(header))
    for width, m, result in rows:
        not_training = (m["total"] - m["train"]) / m["total"]
        harness = (m["total"] - m["train"] - m["validate"]) / m["total"]
        print(f"{'resnet_tiny w' + str(width):<16}{result.params:>8}{result.flops / 1e6:>8.1f}"
              + "".join(f"{m[c] * 1e3:>13.1f}" for c in columns)
              + f"{not_training:>10.1%} {harness:>8.1%}{result.accuracy:>7.3f}{3600 / m['total']:>10.0f}"
              + f"{result.latency_ms:>9.3f}{result.latency_iqr_ms:>8.3f}"
              + (" noisy" if Latency(result.latency_ms, result.latency_iqr_ms, passes=0).noisy else ""))
    print()
    print("not train = 1 - train/total (validation counts as not training); harness = 1 - (train + validate)/total;")
    print("other = setup (data to device, optimizer) and glue; the peak-memory profiling of step 1 is inside train.")
    print("fwd / IQR: forward latency at batch 1 of the last trial, median and interquartile range of its timed runs;")
    print(f"noisy: IQR above {NOISY_IQR_FRACTION:.0%} of the median (another process or frequency scaling interfered).")
    print("acc: validation accuracy at this budget; a dozen steps is too few to learn (the default 3 epochs on all")
    print("4,000 MNIST training images give ~0.9 for w8): this benchmark measures cost, not quality.")


if __name__ == "__main__":
    main()
