"""Why TTE pretraining does (not) learn a small lesion: diagnostics over a run's checkpoints.

For the `sparse` synthetic profile (tte_scale/synth/sparse.py): one run folder of `tte-scale
train` with checkpoints at several steps (and its step-0 weights, rebuilt from the seed), the
shards, the labels folder and the cohort's truth/. For each step:

* feature collapse: mean between-scan std of the pooled features and their effective rank
  (exp of the entropy of the normalized singular values), held-out scans;
* is the lesion in the features: ridge regression features -> true lesion size (train scans),
  Spearman rho on held-out scans, and the held-out AUROC of lesion presence from a logistic probe;
* does the head predict the lesion outcomes: Harrell's C of the head's own log-hazard for the
  lesion codes (mean over bins) against the held-out benchmark (time, event) of each lesion task;
* where the gradient comes from: the share of |dL/dlogh| (closed form, w_k (exp(logh) r - d)/(B K),
  with the head's per-task loss weights w_k when head.task_weights is set) that falls on the
  lesion-driven tasks, on train scans.

Plus the ceiling: Harrell's C of the true lesion size (a head that knows it exactly).

    python -m benchmarks.diagnose_sparse --run runs/sp_tte --shards runs/demo_sparse/shards \
        --labels runs/demo_sparse/labels --truth runs/demo_sparse/cohort/truth --out runs/diag_tte.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

LESION_CODE_PREFIXES = ("ICD10CM/C34.11", "ICD10CM/C34.31", "CPT4/32408")


def _config(run: Path, overrides: list[str]):
    from tte_scale.config import load_config
    from tte_scale.train import PretrainConfig

    return load_config(PretrainConfig, "configs/pretrain/demo.yaml", overrides)


def _effective_rank(x: np.ndarray) -> float:
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _truth(truth: Path) -> tuple[dict, dict]:
    scans = pq.read_table(truth / "scans.parquet", columns=["scan_id", "lesion_size", "lesion_present"]).to_pydict()
    size = dict(zip(scans["scan_id"], scans["lesion_size"]))
    present = dict(zip(scans["scan_id"], scans["lesion_present"]))
    return size, present


def _bench(labels: Path) -> dict[str, dict[str, tuple[float, bool]]]:
    t = pq.read_table(labels / "bench.parquet").to_pydict()
    out: dict[str, dict] = {}
    for sid, task, time, event, excl in zip(t["scan_id"], t["task"], t["time"], t["event"], t["excluded"]):
        if excl is None and time is not None:
            out.setdefault(task, {})[sid] = (float(time), bool(event))
    return out


def _cindex(time, event, risk) -> float:
    from tte_scale.eval.concordance import harrell_cindex

    return float(harrell_cindex(np.asarray(time), np.asarray(event), np.asarray(risk)))


def diagnose_step(model, cfg, args, K, J, bench, size, present, lesion_tasks, rows) -> dict:
    from scipy.stats import spearmanr
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from tte_scale.eval.embed import embed_shards
    from tte_scale.loss.reference import event_in_bin, time_at_risk
    from tte_scale.train.task_weights import task_weight_summary

    emb = embed_shards(
        model.encoder, args.shards, ("train", "held_out"), hu_window=tuple(cfg.data.hu_window), progress=False
    )
    out: dict = {}
    ho_ids, ho = emb.scan_id["held_out"], emb.features["held_out"].astype(np.float64)
    tr_ids, tr = emb.scan_id["train"], emb.features["train"].astype(np.float64)
    out["feature_between_scan_std"] = float(ho.std(0).mean())
    out["feature_effective_rank"] = _effective_rank(ho)
    sc = StandardScaler().fit(tr)
    y_tr = np.array([size[s] for s in tr_ids])
    y_ho = np.array([size[s] for s in ho_ids])
    ridge = Ridge(alpha=10.0).fit(sc.transform(tr), y_tr)
    out["lesion_size_spearman_heldout"] = float(spearmanr(ridge.predict(sc.transform(ho)), y_ho).statistic)
    p_tr = np.array([present[s] for s in tr_ids])
    p_ho = np.array([present[s] for s in ho_ids])
    logit = LogisticRegression(C=0.1, max_iter=2000).fit(sc.transform(tr), p_tr)
    out["lesion_present_auroc_heldout"] = float(roc_auc_score(p_ho, logit.decision_function(sc.transform(ho))))
    # The head's own prediction for each lesion code, against each lesion benchmark task.
    model.eval()
    with torch.no_grad():
        logh_NJK = model.head.log_hazard(torch.from_numpy(ho).float())
    out["head_cindex"] = {}
    for code, k in lesion_tasks.items():
        risk = logh_NJK[:, :, k].mean(1).numpy()
        for task, lab in bench.items():
            keep = [i for i, s in enumerate(ho_ids) if s in lab]
            tt = [lab[ho_ids[i]][0] for i in keep]
            ee = [lab[ho_ids[i]][1] for i in keep]
            out["head_cindex"][f"{code} -> {task}"] = _cindex(tt, ee, risk[keep])
    # Gradient share of the lesion tasks at the logits, train scans (eval-mode head: running stats).
    import zarr

    g = zarr.open_group(str(args.labels / "tte.zarr"), mode="r")
    idx = np.array([rows[s] for s in tr_ids])
    time_NK = torch.from_numpy(np.asarray(g["time"][:])[idx]).float()
    event_NK = torch.from_numpy(np.asarray(g["event"][:])[idx]).bool()
    starts = torch.tensor(json.loads((args.labels / "bins.json").read_text())["bin_starts_days"])
    with torch.no_grad():
        logh = model.head.log_hazard(torch.from_numpy(tr).float())
    r = time_at_risk(time_NK, starts)
    d = event_in_bin(time_NK, event_NK, starts).float()
    grad = (torch.exp(logh) * r - d).abs().sum(dim=(0, 1))  # [K]
    if model.head.task_loss_weight is not None:  # head.task_weights: the gradient the loss really gives
        w = model.head.task_loss_weight.double()
        grad = grad * w
        out["task_weight_lesion_tasks"] = {c: float(w[k]) for c, k in lesion_tasks.items()}
        out["task_weights_effective_tasks"] = task_weight_summary(w)["task_weights/effective_tasks"]
    out["grad_share_lesion_tasks"] = float(grad[list(lesion_tasks.values())].sum() / grad.sum())
    out["grad_share_uniform"] = len(lesion_tasks) / K
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--shards", type=Path, required=True)
    ap.add_argument("--labels", type=Path, required=True)
    ap.add_argument("--truth", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="the run's --set overrides")
    ap.add_argument("--steps", default="", help="comma-separated steps (default: 0 and every checkpoint)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from tte_scale.train.export import full_state_dict
    from tte_scale.train.parts import build_model
    from tte_scale.train.rng import seed_everything

    cfg = _config(args.run, args.overrides)
    vocab = pq.read_table(args.labels / "vocab.parquet").to_pydict()
    K = len(vocab["code"])
    J = json.loads((args.labels / "bins.json").read_text())["num_bins"]
    lesion_tasks = {c: i for c, i in zip(vocab["code"], vocab["task_index"]) if c in LESION_CODE_PREFIXES}
    rows_d = pq.read_table(args.labels / "rows.parquet", columns=["scan_id", "split"]).to_pydict()
    rows_t = rows_d["scan_id"]
    rows = {s: i for i, s in enumerate(rows_t)}
    size, present = _truth(args.truth)
    bench = _bench(args.labels)
    result: dict = {"run": str(args.run), "lesion_tasks": lesion_tasks, "steps": {}}
    # Ceiling: the true lesion size as the risk score of each lesion task (held-out).
    ho = [s for s, sp in zip(rows_t, rows_d["split"]) if sp == "held_out"]
    result["true_size_cindex"] = {
        t: _cindex(
            [lab[s][0] for s in ho if s in lab], [lab[s][1] for s in ho if s in lab], [size[s] for s in ho if s in lab]
        )
        for t, lab in bench.items()
    }
    ckpts = sorted(
        int(m.group(1)) for p in (args.run / "checkpoints").glob("step_*") if (m := re.fullmatch(r"step_(\d+)", p.name))
    )
    steps = [int(s) for s in args.steps.split(",")] if args.steps else [0, *ckpts]
    for step in steps:
        seed_everything(cfg.seed)  # the run's initial weights (train seeds before building the model)
        model = build_model(cfg, K, J)
        if step:
            state = full_state_dict(args.run / "checkpoints", f"step_{step:08d}", cfg.zero.stage)
            model.load_state_dict(state)
        result["steps"][step] = diagnose_step(model, cfg, args, K, J, bench, size, present, lesion_tasks, rows)
        print(step, json.dumps(result["steps"][step]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
