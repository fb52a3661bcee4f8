"""Regularized evolution as an Optuna sampler, :class:`EvolutionSampler`.

Real, Aggarwal, Huang and Le, "Regularized Evolution for Image Classifier Architecture
Search", AAAI 2019 (arXiv:1802.01548). The rule, with population size P and tournament
size S:

1. Until P trials have a value, a trial is a random candidate of the space.
2. After that, the population is the P most recent trials with a value (by trial number):
   older ones have *died*, whatever their value. This ageing is the "regularization": a
   candidate survives only by having good children, not by one lucky evaluation.
3. A tournament draws S members at random (with replacement, as in the paper), and the best
   of them, in the study's direction, is the parent.
4. The child is the parent with one decision, chosen at random among those with a second
   value, changed to another value (:meth:`Decision.mutate`).

A member is any COMPLETE trial (a trial with a value): a reused result counts like a fresh
one, while failed, pruned, rejected and running trials do not. Each child's parent and
mutated decision are kept per trial number for :meth:`EvolutionSampler.lineage`. Only
Optuna's public sampler interface is used; the sampler works with one objective.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from archforge.search.records import LineageAttr

if TYPE_CHECKING:
    from archforge.search.space import Space


class EvolutionSampler(BaseSampler):
    """Regularized evolution over the decisions of ``space``; see the module docstring for the rule.

    Args:
        space: the search space; the objective suggests its decisions with ``space.distributions()``.
        population: trials in the population (P); the first P trials are random.
        sample: tournament size (S).
        seed: seed of the random candidates, tournaments and mutations.
    """

    def __init__(self, space: Space, *, population: int = 8, sample: int = 3, seed: int | None = None) -> None:
        if population < 1 or sample < 1:
            raise ValueError(f"population and sample must be at least 1, got {population} and {sample}")
        self._space = space
        self._population = population
        self._sample = sample
        self._rng = random.Random(seed)
        self._random = RandomSampler(seed=seed)
        self._distributions: dict[str, BaseDistribution] | None = None
        # Mutable decisions are the ones a child can differ in: a single-valued decision never changes.
        self._mutable = [name for name, d in space.decisions.items() if d.size is None or d.size > 1]
        self._lineage: dict[int, LineageAttr] = {}

    @property
    def population(self) -> int:
        return self._population

    @property
    def sample(self) -> int:
        return self._sample

    def lineage(self, trial_number: int) -> LineageAttr | None:
        """The parent trial and mutated decision of a child this sampler proposed, ``None`` for a random trial."""
        return self._lineage.get(trial_number)

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if self._distributions is None:
            self._distributions = self._space.distributions()
        return self._distributions

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        if len(study.directions) > 1:
            raise ValueError("EvolutionSampler optimises one objective; this study has "
                             f"{len(study.directions)}: use NSGA-II or TPE for several")
        members = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        members = [t for t in members if t.value is not None]
        if len(members) < self._population or not self._mutable:
            return self._space.encode(self._space.sample(self._rng))
        members.sort(key=lambda t: t.number)
        population = members[-self._population:]  # the oldest have died
        contenders = [self._rng.choice(population) for _ in range(self._sample)]
        better = max if study.direction == StudyDirection.MAXIMIZE else min
        parent = better(contenders, key=lambda t: t.value)
        child, mutated = self._mutate(parent.params)
        self._lineage[trial.number] = LineageAttr(parent=parent.number, mutated=mutated)
        return {name: value for name, value in child.items() if name in search_space}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        # Only a parameter outside the space's decisions gets here.
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def _mutate(self, params: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The parent's Optuna params with one mutable decision changed, and that decision's name."""
        decisions = self._space.decisions
        child = {}
        for name, decision in decisions.items():
            # A parameter the parent lacks (it was enqueued with fewer) is drawn at random.
            child[name] = params[name] if name in params else decision.encode(decision.sample(self._rng))
        name = self._rng.choice(self._mutable)
        decision = decisions[name]
        child[name] = decision.encode(decision.mutate(decision.decode(child[name]), self._rng))
        return child, name
