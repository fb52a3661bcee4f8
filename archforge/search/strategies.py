"""Search strategies, all driven through Optuna's ask/tell interface.

=============  =================================================================================
``grid``       every decision assignment once (Optuna ``GridSampler``); finite spaces only
``random``     uniform sampling (``RandomSampler``)
``evolution``  regularized evolution (Real et al. 2019): the population is the ``population``
               most recent evaluated trials (age-based removal); a child is the best of
               ``sample`` random members with one decision mutated, fed to Optuna with
               ``enqueue_trial`` (its parent and the mutated decision are stored with it)
``tpe``        Tree-structured Parzen Estimator (``TPESampler``), one or several objectives
``nsga2``      NSGA-II (``NSGAIISampler``) for several objectives, e.g. accuracy vs params
=============  =================================================================================

Multi-fidelity runs over epochs through a pruner (:func:`make_pruner`): successive
halving, Hyperband or the median rule, fed by ``trial.report(val_acc, epoch)``.
"""

from __future__ import annotations

import random
import warnings
from typing import Any, Sequence

from archforge.search.space import PrunerSettings, SearchSettings, Space
from archforge.search.storage import SearchError

#: Grid points the grid strategy may hold: Optuna's GridSampler lists every one of them up front.
#: Raise it by assigning ``archforge.search.strategies.MAX_GRID_SIZE``.
MAX_GRID_SIZE = 100_000

STRATEGY_HELP = {
    "grid": "exhaustive: every candidate once",
    "random": "uniform random sampling",
    "evolution": "regularized evolution (Real et al. 2019)",
    "tpe": "Tree-structured Parzen Estimator",
    "nsga2": "NSGA-II, several objectives",
}


def _quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # The driver records heartbeats itself (ask/tell has no heartbeat thread of Optuna's own).
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


class Strategy:
    """How the next trial is asked for; subclasses choose the sampler and may enqueue trials first."""

    name = "random"
    #: Whether the strategy can run out of new candidates by itself (the grid).
    finite = False

    def __init__(self, space: Space, settings: SearchSettings, *, seed: int = 0, budget: int | None = None, workers: int = 1):
        _quiet()
        self.space = space
        self.settings = settings
        self.seed = seed
        self.budget = budget
        self.workers = workers
        self.rng = random.Random(seed)
        self.check()

    def check(self) -> None:
        """Raise :class:`SearchError` when the strategy cannot search this space with these settings."""

    def sampler(self) -> Any:
        import optuna

        return optuna.samplers.RandomSampler(seed=self.seed)

    def ask(self, study: Any, distributions: dict[str, Any]) -> Any:
        return study.ask(distributions)

    def exhausted(self, trials: Sequence[Any]) -> tuple[bool, bool]:
        """``(no new point left, some point still running)``; only finite strategies ever say yes."""
        return False, False


class RandomStrategy(Strategy):
    name = "random"


class GridStrategy(Strategy):
    """Every grid point once. Every worker must use the same seed (the grid order is shuffled by it)."""

    name = "grid"
    finite = True

    def check(self) -> None:
        for name, decision in self.space.decisions.items():
            if decision.size is None:
                raise SearchError(
                    f"grid search needs finite decisions, but '{name}' ({decision.locations[0]}) is a continuous range: "
                    "give it a step or use --strategy random, tpe or evolution"
                )
        size = self.space.size or 1
        if size > MAX_GRID_SIZE:
            raise SearchError(
                f"grid search lists every one of the {size:,} decision assignments of {self.space.file}, more than "
                f"archforge.search.strategies.MAX_GRID_SIZE = {MAX_GRID_SIZE:,}: use --strategy random, tpe or evolution, "
                "or raise the bound"
            )

    def sampler(self) -> Any:
        import optuna

        class AskTellGridSampler(optuna.samplers.GridSampler):
            # GridSampler.after_trial calls study.stop(), which only works inside study.optimize;
            # with ask/tell the driver itself knows when every grid point is done.
            def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
                return None

        grid = {name: d.grid_values() for name, d in self.space.decisions.items()}
        if not grid:  # a space without decisions: one candidate
            grid = {"__single__": [0]}
        return AskTellGridSampler(grid, seed=self.seed)

    def ask(self, study: Any, distributions: dict[str, Any]) -> Any:
        if not distributions:
            from optuna.distributions import CategoricalDistribution

            return study.ask({"__single__": CategoricalDistribution([0])})
        return study.ask(distributions)

    def exhausted(self, trials: Sequence[Any]) -> tuple[bool, bool]:
        from optuna.trial import TrialState

        size = self.space.size or 1
        names = sorted(self.space.decisions) or ["__single__"]
        done: set[tuple[Any, ...]] = set()
        running: set[tuple[Any, ...]] = set()
        for t in trials:
            if not all(n in t.params for n in names):
                continue
            key = tuple(repr(t.params[n]) for n in names)
            if t.state == TrialState.RUNNING:
                running.add(key)
            elif t.state.is_finished() and "outcome" in t.user_attrs and t.user_attrs["outcome"].get("status") != "cancelled":
                done.add(key)
        return len(done) >= size, len(done | running) >= size and bool(running - done)


class TPEStrategy(Strategy):
    name = "tpe"

    def sampler(self) -> Any:
        import optuna

        startup = 10 if self.budget is None else max(3, min(10, self.budget // 3))
        return optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=startup, multivariate=True, constant_liar=self.workers > 1)


class NSGA2Strategy(Strategy):
    name = "nsga2"

    def check(self) -> None:
        if len(self.settings.objectives) < 2:
            raise SearchError("nsga2 optimises several objectives: add one, e.g. --objectives accuracy,params (or accuracy,latency_ms)")

    def sampler(self) -> Any:
        import optuna

        population = self.settings.evolution.population
        if self.budget is not None:
            population = max(2, min(population, self.budget // 2 or 2))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=self.seed)


class EvolutionStrategy(Strategy):
    """Regularized evolution over ask/tell: random until the population is full, then tournament + one mutation."""

    name = "evolution"

    def check(self) -> None:
        if len(self.settings.objectives) != 1:
            raise SearchError("evolution optimises one objective; use nsga2 or tpe for several")
        if not any((d.size or 2) > 1 for d in self.space.decisions.values()):
            raise SearchError("evolution needs at least one decision with two or more values")

    @property
    def population(self) -> int:
        return self.settings.evolution.population

    def members(self, trials: Sequence[Any]) -> list[Any]:
        """Evaluated trials in order of age (trial number), most recent last."""
        from optuna.trial import TrialState

        out = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None
               and (t.user_attrs.get("outcome") or {}).get("status") == "complete"]
        return sorted(out, key=lambda t: t.number)

    def ask(self, study: Any, distributions: dict[str, Any]) -> Any:
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in trials):
            return study.ask(distributions)  # a queued child or retry comes first
        members = self.members(trials)
        if len(members) < self.population:
            return study.ask(distributions)  # random initial population
        population = members[-self.population:]  # regularized: the oldest have died
        contenders = self.rng.sample(population, min(self.settings.evolution.sample, len(population)))
        maximize = self.settings.directions[0] == "maximize"
        parent = max(contenders, key=lambda t: t.values[0] if maximize else -t.values[0])
        child, mutated = self.mutate(parent.params)
        study.enqueue_trial(child, user_attrs={"parent": parent.number, "mutated": mutated})
        return study.ask(distributions)

    def mutate(self, params: dict[str, Any]) -> tuple[dict[str, Any], str]:
        space = self.space
        mutable = [n for n, d in space.decisions.items() if d.size is None or d.size > 1]
        name = self.rng.choice(mutable)
        decision = space.decisions[name]
        child = dict(params)
        child[name] = decision.encode(decision.mutate(decision.decode(params[name]), self.rng))
        return child, name


STRATEGIES: dict[str, type[Strategy]] = {
    "grid": GridStrategy,
    "random": RandomStrategy,
    "evolution": EvolutionStrategy,
    "tpe": TPEStrategy,
    "nsga2": NSGA2Strategy,
}


def make_strategy(name: str, space: Space, settings: SearchSettings, *, seed: int = 0, budget: int | None = None, workers: int = 1) -> Strategy:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        from archforge.errors import did_you_mean

        raise SearchError(f"unknown strategy '{name}'{did_you_mean(name, STRATEGIES)}: use {', '.join(STRATEGIES)}") from None
    return cls(space, settings, seed=seed, budget=budget, workers=workers)


def make_pruner(settings: PrunerSettings | None, epochs: int) -> Any:
    """An Optuna pruner over epochs (steps 1..epochs), or Optuna's no-op pruner."""
    import optuna

    if settings is None:
        return optuna.pruners.NopPruner()
    if settings.kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=settings.min_resource, reduction_factor=settings.reduction_factor)
    if settings.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=settings.min_resource, max_resource=epochs, reduction_factor=settings.reduction_factor)
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=settings.min_resource - 1)
