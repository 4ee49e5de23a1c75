"""Keep the best, stop early: BestTracker decisions, its state, the config checks, and pruning
that keeps the best step's checkpoint."""

from __future__ import annotations

import math

import pytest

from tte_scale.config import ConfigError, load_config
from tte_scale.train import PretrainConfig
from tte_scale.train.best import BestTracker
from tte_scale.train.checkpoint import CheckpointManager


def _feed(tr: BestTracker, values: dict[int, float]) -> list[tuple[int, bool, bool]]:
    out = []
    for step, v in values.items():
        d = tr.update(step, {tr.metric: v})
        out.append((step, d.improved, d.stop))
        if d.stop:
            break
    return out


def test_val_loss_keeps_the_lowest_and_stops_after_patience():
    tr = BestTracker(metric="val_loss", patience=2)
    got = _feed(tr, {100: 3.0, 200: 2.5, 300: 2.6, 400: 2.4, 500: 2.45, 600: 2.5, 700: 2.0})
    assert got == [(100, True, False), (200, True, False), (300, False, False), (400, True, False),
                   (500, False, False), (600, False, True)]  # fmt: skip
    assert tr.best_step == 400 and tr.best_value == 2.4 and tr.stopped_at == 600
    assert tr.export_step(600) == 400 and tr.protected() == {400}
    rec = tr.record(600)
    assert rec["best_step"] == 400 and rec["mode"] == "min" and rec["stopped_early_at"] == 600


def test_cindex_is_maximized_with_min_delta_and_nan_never_wins():
    tr = BestTracker(metric="cindex_mean", min_delta=0.01)
    got = _feed(tr, {1: math.nan, 2: 0.60, 3: 0.605, 4: 0.62, 5: math.nan})
    assert [g[1] for g in got] == [False, True, False, True, False]
    assert tr.best_step == 4 and tr.stopped_at is None  # patience 0: never stops
    assert tr.update(6, {}).improved is False  # a metric the evaluation did not produce


def test_last_is_inactive_and_exports_the_last_step():
    tr = BestTracker(metric="last", patience=0)
    assert not tr.update(5, {"val_loss": 1.0}).improved
    assert tr.export_step(9) == 9 and tr.protected() == set()


def test_state_round_trips_only_for_the_same_metric():
    tr = BestTracker(metric="val_loss", patience=3)
    _feed(tr, {10: 2.0, 20: 2.5})
    again = BestTracker(metric="val_loss", patience=3)
    again.load_state_dict(tr.state_dict())
    assert (again.best_step, again.best_value, again.bad_evals) == (10, 2.0, 1)
    other = BestTracker(metric="cindex_mean")
    other.load_state_dict(tr.state_dict())
    assert other.best_step is None  # a loss is no C-index
    other.load_state_dict(None)  # a checkpoint from before this feature
    assert other.best_step is None


def test_config_checks_name_the_key():
    load_config(PretrainConfig, None, ["eval.select=val_loss", "eval.every_steps=10", "eval.patience=3"])
    with pytest.raises(ConfigError, match="eval.select"):
        load_config(PretrainConfig, None, ["eval.select=val_loss"])  # no periodic evaluation
    with pytest.raises(ConfigError, match="eval.patience"):
        load_config(PretrainConfig, None, ["eval.patience=2", "eval.every_steps=10"])
    with pytest.raises(ConfigError, match="eval.select"):
        load_config(PretrainConfig, None, ["eval.select=auroc", "eval.every_steps=10"])


def _fake_save(mgr: CheckpointManager, step: int) -> None:
    folder = mgr.folder(step)
    folder.mkdir(parents=True)
    (folder / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"x" * (100 + step))
    mgr.publish(step, 1)


def test_pruning_keeps_the_protected_best_step(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=1)
    _fake_save(mgr, 2)
    mgr.protected = {2}
    for step in (4, 6, 8):
        _fake_save(mgr, step)
    assert [s for s, _ in mgr.candidates()] == [8, 2]
    mgr.protected = {8}
    _fake_save(mgr, 10)
    assert [s for s, _ in mgr.candidates()] == [10, 8]  # the old best is no longer kept
