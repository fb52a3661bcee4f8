"""Core pipeline costs: spec → module time for a 100-node spec, and forward overhead of a built module.

Prints one table. ``ratio`` is hand-written time / built time for the forward pass
(1.00 = the generated module adds nothing; ≥ 0.98 expected).

    python benchmarks/bench_core.py [--threads 2] [--batch 32]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

import archforge

BLOCKS_PER_STAGE = 8  # 3 stages × 8 residual blocks × 4 nodes + stem + head = 98 nodes

SPEC = f"""
archforge: 1
name: deep_resnet
input: {{shape: [3, 32, 32]}}
params: {{w: 32}}
define:
  basic:
    params: {{c: 32, stride: 1}}
    nodes:
      - {{id: conv1, block: conv, args: {{channels: $c}}}}
      - {{id: conv2, block: conv, args: {{channels: $c, act: none}}}}
      - {{id: sum, block: add, in: [input, conv2]}}
      - {{id: relu, block: act}}
nodes:
  - {{id: stem, block: conv, args: {{channels: $w}}}}
  - {{id: stage1, block: basic, repeat: {BLOCKS_PER_STAGE}, args: {{c: $w}}}}
  - {{id: down2, block: conv, args: {{channels: "${{2 * w}}", stride: 2}}}}
  - {{id: stage2, block: basic, repeat: {BLOCKS_PER_STAGE}, args: {{c: "${{2 * w}}"}}}}
  - {{id: down3, block: conv, args: {{channels: "${{4 * w}}", stride: 2}}}}
  - {{id: stage3, block: basic, repeat: {BLOCKS_PER_STAGE}, args: {{c: "${{4 * w}}"}}}}
  - {{id: head, block: classifier, args: {{classes: 10}}}}
"""


class ConvNormAct(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm = nn.BatchNorm2d(cout)
        self.act = nn.ReLU() if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        return self.act(x) if self.act is not None else x


class Basic(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = ConvNormAct(c, c)
        self.conv2 = ConvNormAct(c, c, act=False)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.conv2(self.conv1(x)))


class Head(nn.Module):
    def __init__(self, c: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class HandWritten(nn.Module):
    """The same network as SPEC, written the way one writes PyTorch by hand."""

    def __init__(self, w: int = 32):
        super().__init__()
        self.stem = ConvNormAct(3, w)
        self.stage1 = nn.Sequential(*[Basic(w) for _ in range(BLOCKS_PER_STAGE)])
        self.down2 = ConvNormAct(w, 2 * w, stride=2)
        self.stage2 = nn.Sequential(*[Basic(2 * w) for _ in range(BLOCKS_PER_STAGE)])
        self.down3 = ConvNormAct(2 * w, 4 * w, stride=2)
        self.stage3 = nn.Sequential(*[Basic(4 * w) for _ in range(BLOCKS_PER_STAGE)])
        self.head = Head(4 * w, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(self.stem(x))
        x = self.stage2(self.down2(x))
        x = self.stage3(self.down3(x))
        return self.head(x)


def time_pipeline(repeats: int = 5) -> tuple[float, float, float, int]:
    """Median seconds for parse+validate, for build, and for summarize; and the node count."""
    parse, build_times, summary = [], [], []
    nodes = 0
    for _ in range(repeats):
        start = time.perf_counter()
        graph = archforge.validate(archforge.parse_spec(SPEC))
        parse.append(time.perf_counter() - start)
        nodes = len(graph.nodes)
        start = time.perf_counter()
        archforge.build(graph)
        build_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        archforge.summarize(graph)
        summary.append(time.perf_counter() - start)
    return statistics.median(parse), statistics.median(build_times), statistics.median(summary), nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--min-run-time", type=float, default=10.0, help="seconds of alternating forward calls")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    warnings.simplefilter("ignore")

    archforge.validate(archforge.parse_spec(SPEC))  # warm the plugin registry
    t_validate, t_build, t_summary, nodes = time_pipeline()

    built = archforge.build(archforge.parse_spec(SPEC)).eval()
    plain = HandWritten().eval()
    plain.load_state_dict(built.state_dict(), strict=True)  # same module names, so the same weights
    x = torch.randn(options.batch, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(built(x), plain(x), rtol=0, atol=0)

    # Alternate single calls so that load from other processes on a shared machine hits both sides alike.
    times: dict[str, list[float]] = {"hand-written": [], "archforge": []}
    with torch.no_grad():
        for model in (plain, built, plain, built):  # warm-up
            model(x)
        deadline = time.perf_counter() + options.min_run_time
        while time.perf_counter() < deadline or len(times["archforge"]) < 10:
            for label, model in (("hand-written", plain), ("archforge", built)):
                start = time.perf_counter()
                model(x)
                times[label].append(time.perf_counter() - start)
    plain_t, built_t = statistics.median(times["hand-written"]), statistics.median(times["archforge"])

    print(f"core pipeline benchmark — {nodes}-node spec, torch {torch.__version__}, {options.threads} threads")
    print()
    print(f"{'stage':<34}{'time':>12}")
    print(f"{'parse + validate (shapes)':<34}{t_validate * 1e3:>10.1f}ms")
    print(f"{'build nn.Module':<34}{t_build * 1e3:>10.1f}ms")
    print(f"{'summarize (params, FLOPs, meta)':<34}{t_summary * 1e3:>10.1f}ms")
    print(f"{'total load+validate+build':<34}{(t_validate + t_build) * 1e3:>10.1f}ms")
    print()
    print(f"{'forward, batch ' + str(options.batch):<34}{'hand-written':>14}{'archforge':>12}{'ratio':>8}")
    label = f"(median of {len(times['archforge'])} alternating calls)"
    print(f"{label:<34}{plain_t * 1e3:>12.2f}ms{built_t * 1e3:>10.2f}ms{plain_t / built_t:>8.3f}")


if __name__ == "__main__":
    main()
