"""The tuning study's pruner: Optuna's median pruner, measured against the completed trials that met every bound.

A constrained study (``towerctl tune --constraint``) maximises one figure subject to bounds on others. Optuna's
median pruner compares a running trial's objective with the median of every completed trial at the same epoch; the
trials that broke a bound are often exactly the ones with the highest objective (a tail recall bought with overall
recall), so it prunes the feasible trials in their favour. Here the median is taken over the feasible completed
trials only (every ``FrozenTrial.constraints`` value <= 0; a study without bounds counts every completed trial), and
the startup count counts those.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


def feasible(trial: FrozenTrial) -> bool:
    """Whether ``trial`` met every bound it recorded (no bounds: True)."""
    return all(value <= 0.0 for value in trial.constraints.values())


class _FeasibleTrials:
    """The part of a study the percentile pruner reads, with the infeasible completed trials left out."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    @property
    def direction(self) -> Any:
        return self._study.direction

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        return [t for t in trials if t.state != TrialState.COMPLETE or feasible(t)]


class FeasibleMedianPruner(optuna.pruners.BasePruner):
    """``MedianPruner(n_startup_trials, n_warmup_steps)`` over the feasible completed trials."""

    def __init__(self, *, n_startup_trials: int, n_warmup_steps: int) -> None:
        self._median = optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self._median.prune(_FeasibleTrials(study), trial)  # type: ignore[arg-type]
