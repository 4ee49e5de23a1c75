"""Keep the best, stop early: which evaluated step becomes the exported encoder.

The trainer evaluates on the tuning split every ``eval.every_steps``; with ``eval.select`` set
to ``val_loss`` (lower is better) or ``cindex_mean`` (higher is better) each evaluation is
offered to a :class:`BestTracker`. An improvement (by more than ``eval.min_delta``) makes that
step the best: the loop saves a checkpoint there (if it has none) and keeps it out of the
``keep_last`` rotation; at the end the best step, not the last, is exported. With
``eval.patience`` > 0, that many evaluations in a row without improvement stop the run.

Every rank sees the same metrics (``evaluate`` reduces them), so every rank takes the same
decision without another collective. The state travels in the trainer state of each
checkpoint, so a resumed run keeps its best step and patience count.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["BestTracker", "Decision"]

_MODE = {"val_loss": "min", "cindex_mean": "max"}


@dataclass(frozen=True, slots=True)
class Decision:
    improved: bool
    """This evaluation is the new best: its step must have a checkpoint that is kept."""
    stop: bool
    """Patience is exhausted: stop training after this step."""


@dataclass(kw_only=True, slots=True)
class BestTracker:
    metric: str
    """``last`` (inactive: the last step is exported), ``val_loss`` or ``cindex_mean``."""
    patience: int = 0
    min_delta: float = 0.0
    best_step: int | None = None
    best_value: float | None = None
    bad_evals: int = 0
    stopped_at: int | None = None

    @classmethod
    def from_config(cls, eval_cfg) -> BestTracker:
        return cls(metric=eval_cfg.select, patience=eval_cfg.patience, min_delta=eval_cfg.min_delta)

    @property
    def active(self) -> bool:
        return self.metric != "last"

    def update(self, step: int, metrics: dict) -> Decision:
        """Offer one evaluation's metrics (the dict ``evaluate`` returns) at ``step``."""
        if not self.active:
            return Decision(improved=False, stop=False)
        # With adaptive task weights (head.task_weights: learnability) the weighted val_loss moves
        # with the weights themselves; the unweighted loss, reported beside it, is comparable.
        key = "val_loss_unweighted" if self.metric == "val_loss" and "val_loss_unweighted" in metrics else self.metric
        value = metrics.get(key, math.nan)
        value = math.nan if value is None else float(value)
        if math.isfinite(value) and (self.best_value is None or self._better(value, self.best_value)):
            self.best_step, self.best_value, self.bad_evals = step, value, 0
            return Decision(improved=True, stop=False)
        # NaN (a diverged model, or no benchmark task to rank) never improves
        self.bad_evals += 1
        stop = self.patience > 0 and self.bad_evals >= self.patience
        if stop:
            self.stopped_at = step
        return Decision(improved=False, stop=stop)

    def _better(self, value: float, best: float) -> bool:
        if _MODE[self.metric] == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def export_step(self, last_step: int) -> int:
        """The step to export: the best one, or the last when inactive or nothing was evaluated."""
        return self.best_step if self.active and self.best_step is not None else last_step

    def protected(self) -> set[int]:
        """Checkpoint steps that pruning must keep."""
        return {self.best_step} if self.active and self.best_step is not None else set()

    def record(self, last_step: int) -> dict:
        """What config.json's ``pretraining.selection`` says about the choice."""
        return {
            "metric": self.metric,
            "mode": _MODE.get(self.metric),
            "best_step": self.export_step(last_step),
            "best_value": self.best_value,
            "last_step": last_step,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "stopped_early_at": self.stopped_at,
        }

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict | None) -> None:
        """Restore from a checkpoint's trainer state; the configured metric, patience and
        min_delta win (a resumed run may change them), the record of the past is kept only when
        it measured the same metric."""
        if not state or state.get("metric") != self.metric:
            return
        self.best_step, self.best_value = state.get("best_step"), state.get("best_value")
        self.bad_evals, self.stopped_at = int(state.get("bad_evals", 0)), state.get("stopped_at")
