"""What a search tells the user while it runs: rich progress bars, or one line per finished trial, or nothing.

:class:`Display` is the interface the driver and executors call; the default says nothing (worker
processes, ``progress=False``). :class:`RichDisplay` draws a bar for the trials (with ETA) and the
epochs of each running trial; :class:`LineDisplay` prints one :func:`trial_line` per finished trial
for logs and pipes.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

from archforge.search.choices import value_label
from archforge.search.records import TrialRecord


class Display:
    """What a search tells the user; the default says nothing."""

    def running(self, total: int | None, done: int, *, epochs_bar: bool = True) -> Any:
        """A context manager around the run: ``total`` trials expected (``None``: unknown), ``done`` already."""
        return contextlib.nullcontext()

    def trial_started(self, number: int, label: str, epochs: int) -> None: ...
    def epoch(self, seed: int, epoch: int, accuracy: float | None) -> None: ...
    def trial_finished(self, record: TrialRecord, counted: int) -> None: ...
    def workers(self, busy: Mapping[int, tuple[int, int, int]]) -> None: ...
    def message(self, text: str) -> None: ...


class RichDisplay(Display):
    """Rich progress bars (trials and the epochs of the current trial, with ETA) and one line per trial."""

    def __init__(self, console: Any = None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = console or Console(stderr=True, highlight=False)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("elapsed"), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.trials = self.progress.add_task("trials", total=None)
        self.epochs: Any = None
        self.done = 0
        self.worker_tasks: dict[int, Any] = {}

    @contextlib.contextmanager
    def running(self, total: int | None, done: int, *, epochs_bar: bool = True) -> Iterator[None]:
        self.progress.update(self.trials, total=total, completed=done)
        self.epochs = self.progress.add_task("epochs", total=1, visible=False) if epochs_bar else None
        self.done = done
        with self.progress:
            try:
                yield
            finally:
                if total is None:  # the bar ends full: the run found how many there were
                    self.progress.update(self.trials, total=self.done)

    def trial_started(self, number: int, label: str, epochs: int) -> None:
        if self.epochs is not None:
            self.progress.reset(self.epochs, total=max(1, epochs), visible=True, description=f"#{number} epochs")

    def epoch(self, seed: int, epoch: int, accuracy: float | None) -> None:
        if self.epochs is not None:
            self.progress.advance(self.epochs)

    def trial_finished(self, record: TrialRecord, counted: int) -> None:
        self.done = counted
        self.progress.update(self.trials, completed=counted)
        if self.epochs is not None:
            self.progress.update(self.epochs, visible=False)
        self.console.print(trial_line(record), markup=False, highlight=False)

    def workers(self, busy: Mapping[int, tuple[int, int, int]]) -> None:
        """One epoch bar per worker process: ``busy[index] = (trial number, epochs done, epochs in all)``."""
        for index, (number, done, total) in sorted(busy.items()):
            task = self.worker_tasks.get(index)
            if task is None:
                task = self.worker_tasks[index] = self.progress.add_task("", total=1)
            self.progress.update(task, description=f"worker {index} #{number} epochs", completed=done, total=max(1, total), visible=True)
        for index, task in self.worker_tasks.items():
            if index not in busy:
                self.progress.update(task, visible=False)

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)


class LineDisplay(Display):
    """One line per finished trial on stderr, no bars (logs, pipes, --no-progress)."""

    def __init__(self, console: Any = None):
        from rich.console import Console

        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)

    def trial_finished(self, record: TrialRecord, counted: int) -> None:
        self.console.print(trial_line(record), markup=False, highlight=False)

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)


def trial_line(r: TrialRecord) -> str:
    """``#7 3f2a9c1d0b7e complete acc 0.9731 ± 0.0021 · params 45,218 · a=1, b=conv (12.3s)``"""
    head = f"#{r.number:<3} {r.hash or '-':12} {r.status}"
    bits = []
    if r.duplicate_of is not None:
        bits.append(f"reused #{r.duplicate_of}")
    if r.accuracy is not None:
        acc = f"acc {r.accuracy:.4f}"
        if r.accuracy_std is not None and len(r.accuracies) > 1:
            acc += f" ± {r.accuracy_std:.4f}"
        bits.append(acc)
    if r.params is not None:
        bits.append(f"params {r.params:,}")
    if r.latency_ms is not None:
        bits.append(f"{r.latency_ms:.2f} ms")
    bits.extend(f"{name} {value:.4g}" for name, value in r.metrics.items() if value is not None)
    if r.parent is not None:
        bits.append(f"child of #{r.parent} ({r.mutated})")
    text = head + (" · " + " · ".join(bits) if bits else "")
    if r.decisions:
        text += " · " + ", ".join(f"{k}={value_label(v, 20)}" for k, v in r.decisions.items())
    if r.error:
        text += f" · {r.error}"
    if r.eval_time_s:
        text += f" ({r.eval_time_s:.1f}s)"
    return text


def make_display(progress: bool | str | None, console: Any = None) -> Display:
    """The display ``progress`` asks for: ``True`` rich bars, ``"lines"``, ``False`` nothing; ``None``: bars on a terminal."""
    import sys

    show = sys.stderr.isatty() if progress is None else progress
    if show == "lines":
        return LineDisplay(console)
    if show:
        return RichDisplay(console)
    return Display()
