"""Architecture search over spaces written in the spec language, with Optuna as the engine.

::

    import archforge

    result = archforge.search("placement_mnist")             # a bundled space by name, or a file; its search: section
    result = archforge.search("placement_mnist", seeds=3, train={"lr": 1e-3})  # overrides
    print(result.best["accuracy"], result.best["decisions"], result.notes)
    result.best_spec.to_yaml()                                        # a plain spec: archforge.build(result.best_spec)
    result.report("runs/placement_mnist/report")                      # CSV, JSON, plots, best.yaml

``archforge.search`` is this package, and calling it calls :func:`search`: so that
``archforge.search(...)``, ``archforge.search.SearchSettings`` and ``import archforge.search.run``
all work. The search language is documented in ``docs/search-spaces.md``. Running the same search again
resumes it from its store (``runs/<name>/study.db``, an Optuna study that ``optuna.load_study``
and optuna-dashboard open); the command line is the same thing: ``archforge space``,
``archforge search``, ``archforge report``. On a PostgreSQL store, workers on other machines
join a running search with :func:`join` (``archforge worker --storage URL --study NAME``).

Reading the code, follow ``archforge search SPACE`` to one stored trial through eight files,
each with one job: ``cli/search_commands.py`` (the command; ``cli/search_flags.py`` beside it
turns flags into settings overrides) → ``search/run.py`` (settings, checks, study) → ``search/executors.py`` (workers) → ``search/driver.py``
(``study.optimize`` and the objective) → ``search/space.py`` (the concrete candidate) →
``search/cache.py`` (never train twice) → ``search/evaluate.py`` (training) →
``search/records.py`` (what is stored). Beside the path: ``settings.py`` and ``training.py``
(the configuration), ``checks.py`` (what is refused before anything is stored), ``study.py``
(run metadata, resume), ``storage.py``, ``urls.py`` and ``locks.py`` (the store), ``worker.py`` and
``ray_executor.py`` (workers started elsewhere, Ray tasks), ``strategies.py`` and
``evolution.py`` (samplers, pruners), ``prefilter.py`` and ``proxies.py`` (zero-cost proxies),
``oneshot.py``, ``supernet.py``, ``supernet_training.py`` and ``oneshot_report.py`` (``strategy: oneshot``: one
weight-sharing supernet ranks every candidate),
``progress.py``, ``report.py``, ``ranking.py`` and ``plots.py`` (results), ``limits.py`` (bounds).
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import TYPE_CHECKING, Any

from archforge._lazy import lazy_attributes

if TYPE_CHECKING:
    from archforge.errors import SearchError
    from archforge.search.result import SearchResult
    from archforge.search.settings import Constraints, SearchSettings
    from archforge.search.space import Candidate, Space, candidate_hash, load_space, parse_space
    from archforge.search.effects import DecisionEffect, decision_effects
    from archforge.search.fidelity import RungAgreement, rung_agreement
    from archforge.search.training import TrainConfig

#: Where each public name lives; imported on first use, so that importing this package (or
#: ``import archforge``) loads neither Optuna nor the training code.
_HOMES = {
    "SearchError": "archforge.errors",
    "SearchResult": "archforge.search.result",
    "Constraints": "archforge.search.settings", "SearchSettings": "archforge.search.settings",
    "Candidate": "archforge.search.space", "Space": "archforge.search.space", "candidate_hash": "archforge.search.space",
    "load_space": "archforge.search.space", "parse_space": "archforge.search.space",
    "TrainConfig": "archforge.search.training",
    "DecisionEffect": "archforge.search.effects", "decision_effects": "archforge.search.effects",
    "RungAgreement": "archforge.search.fidelity", "rung_agreement": "archforge.search.fidelity",
}


def search(space: Space | str | os.PathLike[str], **options: Any) -> SearchResult:
    """Search ``space`` (a :class:`Space` or the path of one) and return the ranked result.

    The keywords are those of :func:`archforge.search.run.search` (``dataset``, ``storage``,
    ``evaluator``, ``runs_dir``, ``progress``, ``console``, and every field of
    :class:`SearchSettings` as an override of the space's ``search:`` section), which runs it.
    """
    from archforge.search.run import search as run_search

    return run_search(space, **options)


def describe_space(space: Space | str | os.PathLike[str], *, samples: int = 2, check: int = 32, seed: int = 0) -> dict[str, Any]:
    """What ``archforge space`` shows, as data: candidates, decisions (with locations), constraint checks, samples."""
    from archforge.search.overview import space_overview
    from archforge.search.space import load_space

    return space_overview(load_space(space), samples=samples, check=check, seed=seed)


def join(storage: str | os.PathLike[str], study: str, **options: Any) -> Any:
    """Work on a search another process started (``archforge worker``) until its budget is spent; see :func:`archforge.search.worker.join`.

    ``storage``: the search's PostgreSQL URL (or its ``study.db`` on this machine); ``study``:
    its run name. Keywords: ``device``, ``threads``, ``progress``, ``console``.
    """
    from archforge.search.worker import join as join_study

    return join_study(storage, study, **options)


def load_run(source: str | os.PathLike[str], study: str | None = None) -> Any:
    """A stored run (a run folder, a ``study.db`` or a storage URL) as report data: ``.table``, ``.best``, ``.to_csv()``..."""
    from archforge.search.report import load_run as _load_run

    return _load_run(source, study)


__getattr__, __dir__ = lazy_attributes(globals(), _HOMES)


class _SearchPackage(types.ModuleType):
    """This package's module type: calling the package runs :func:`search` (``archforge.search(space)``)."""

    def __call__(self, space: Space | str | os.PathLike[str], **options: Any) -> SearchResult:
        return search(space, **options)

    # A module is one object per process: copies are the module itself, and pickles re-import it
    # (``functools.partial(archforge.search, ...)`` sent to a worker process).
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return importlib.import_module, (self.__name__,)

    def __copy__(self) -> _SearchPackage:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _SearchPackage:
        return self


sys.modules[__name__].__class__ = _SearchPackage


__all__ = [
    "Candidate", "Constraints", "DecisionEffect", "RungAgreement", "SearchError", "SearchResult", "SearchSettings", "Space",
    "TrainConfig", "candidate_hash", "decision_effects", "describe_space", "join", "load_run", "load_space", "parse_space",
    "rung_agreement", "search",
]
