"""A tiny synthetic cohort: embeddings whose first dimensions drive each task's hazard."""

from __future__ import annotations

import numpy as np
import pytest

from tte_scale.eval import BenchTable

TASKS = ("mortality_12m", "ph_12m")
SPLITS = ("train", "tuning", "held_out")


def make_split(seed: int, n_subj: int = 90, d: int = 8, signal: float = 1.5):
    rng = np.random.default_rng(seed)
    subj = np.repeat(np.arange(n_subj) + seed * 10_000, rng.integers(1, 3, n_subj)).astype(np.int64)
    n = subj.size
    z = rng.normal(size=(n, d))
    loghaz = signal * z[:, : len(TASKS)] - 6.0
    t_ev = rng.exponential(1.0 / np.exp(loghaz))
    t_c = rng.uniform(100, 900, size=(n, len(TASKS)))
    time = np.ceil(np.minimum(t_ev, t_c)).astype(np.float32)
    event = t_ev <= t_c
    label = np.where(event & (time <= 365), 1, np.where(time > 365, 0, -1)).astype(np.int8)
    return z.astype(np.float32), BenchTable(subj, label, time, event, TASKS), loghaz


@pytest.fixture(scope="session")
def cohort():
    emb, tables, truth = {}, {}, {}
    for i, s in enumerate(SPLITS):
        emb[s], tables[s], truth[s] = make_split(i + 1)
    return emb, tables, truth


@pytest.fixture(scope="session")
def oracle_and_noisy(cohort):
    """``f(bootstrap, noise_sd)`` -> two scored models for comparison tests: the true
    log-hazards ("oracle") and a noisy copy of them ("noisy")."""
    from tte_scale.eval import EvalConfig, evaluate_risk_scores

    _, tables, truth = cohort

    def score(bootstrap: int, noise_sd: float) -> dict:
        cfg = EvalConfig(bootstrap=bootstrap)
        noisy = truth["held_out"] + np.random.default_rng(0).normal(0, noise_sd, truth["held_out"].shape)
        return {
            "oracle": evaluate_risk_scores(truth, tables, list(TASKS), cfg),
            "noisy": evaluate_risk_scores(noisy, tables, list(TASKS), cfg, name="noisy"),
        }

    return score
