"""Evaluation library speed: Harrell's C-index (ours, O(N log N), vs lifelines and sksurv),
the subject-level bootstrap (B replicates evaluated at once), and one probe fit.

    .venv/bin/python benchmarks/bench_eval.py [--machine "dev CPU, 2 cores"] [--max-n 1000000]

Writes benchmarks/results/eval.json and eval.md and prints the table. Every timing is the
best of --repeat runs; ours and lifelines get identical data and must agree to 1e-9.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tte_scale.benchmarks.common import add_output_args, machine_info, machine_name, md_table, write_results


def best(fn, repeat):
    out, times = None, []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-n", type=int, default=1_000_000, help="largest N for the C-index timing")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing (the best is kept)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: on a shared, busy machine more threads spin and slow down)",
    )
    add_output_args(ap)
    args = ap.parse_args(argv)
    machine = args.machine or machine_name()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        rows = run_all(args)
    finally:
        torch.set_num_threads(threads_before)  # the suite runs other stages in this process
    meta = {"machine": machine, "torch": torch.__version__, "threads": args.threads, **machine_info()}
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    md = [
        f"# Evaluation benchmarks ({machine}, torch {meta['torch']}, {args.threads} thread(s))",
        "",
        f"Best of {args.repeat} runs per timing.",
        "",
        *md_table(
            ["what", "n", "ours (s)", "lifelines (s)", "sksurv (s)", "lifelines / ours"],
            [
                [
                    r["what"],
                    f"{r['n']:,}",
                    fmt(r["ours_s"]),
                    fmt(r.get("lifelines_s")),
                    fmt(r.get("sksurv_s")),
                    f"{r['lifelines_s'] / r['ours_s']:.1f}x" if r.get("lifelines_s") else "-",
                ]
                for r in rows
            ],
        ),
    ]
    write_results(args.out, "eval", {"machine": machine, "meta": meta, "rows": rows}, "\n".join(md))
    print("\n".join(md))
    return 0


def run_all(args) -> list[dict]:
    from lifelines.utils import concordance_index
    from sksurv.metrics import concordance_index_censored

    from tte_scale.eval.bootstrap import subject_weights
    from tte_scale.eval.concordance import antolini_cindex, harrell_cindex
    from tte_scale.eval.probes import fit_cox, fit_logistic

    rng = np.random.default_rng(0)
    rows = []
    n = 1000
    while n <= args.max_n:
        t = rng.exponential(365, n).round()  # whole days: many tied times
        e = rng.random(n) < 0.3
        r = rng.normal(size=n).round(3)  # tied risks too
        ours, t_ours = best(lambda t=t, e=e, r=r: harrell_cindex(t, e, r).item(), args.repeat)
        row = {"what": "harrell_cindex", "n": n, "ours_s": t_ours}
        if n <= 100_000:
            ref, t_ll = best(lambda t=t, e=e, r=r: concordance_index(t, -r, e), args.repeat)
            assert abs(ref - ours) < 1e-9, (ref, ours)
            row["lifelines_s"] = t_ll
        if n <= 10_000:  # sksurv is O(N^2) in Python-level loops
            ref, t_sk = best(lambda t=t, e=e, r=r: concordance_index_censored(e, t, r)[0], 1)
            assert abs(ref - ours) < 1e-6
            row["sksurv_s"] = t_sk
        rows.append(row)
        print(row, flush=True)
        n *= 10

    n, b = 2000, 1000
    subj = np.repeat(np.arange(n // 2), 2)
    t = rng.exponential(365, n).round()
    e = rng.random(n) < 0.3
    r = rng.normal(size=n)
    w = subject_weights(subj, b, 0)
    _, t_boot = best(lambda: harrell_cindex(t, e, r, w), args.repeat)
    rows.append({"what": f"harrell_cindex bootstrap B={b}", "n": n, "ours_s": t_boot})
    grid = np.unique(t[e])
    surv = np.exp(-np.exp(r)[:, None] * grid[None, :] / 365 * rng.uniform(0.5, 2, (n, 1)))
    _, t_td = best(lambda: antolini_cindex(t, e, surv, grid), args.repeat)
    rows.append({"what": "antolini_cindex", "n": n, "ours_s": t_td})
    _, t_tdb = best(lambda: antolini_cindex(t, e, surv, grid, w[:100]), 1)
    rows.append({"what": "antolini_cindex bootstrap B=100", "n": n, "ours_s": t_tdb})

    n, d = 5000, 256
    x = torch.randn(n, d, dtype=torch.float64)
    y = (x[:, 0] + torch.randn(n, dtype=torch.float64) > 0).double()
    _, t_log = best(lambda: fit_logistic(x, y, 1e-2), 1)
    rows.append({"what": f"fit_logistic d={d}", "n": n, "ours_s": t_log})
    tt = torch.from_numpy(rng.exponential(365, n).round())
    ee = torch.from_numpy(rng.random(n) < 0.3)
    _, t_cox = best(lambda: fit_cox(x, tt, ee, 1e-2), 1)
    rows.append({"what": f"fit_cox d={d} (Efron)", "n": n, "ours_s": t_cox})

    return rows


if __name__ == "__main__":
    raise SystemExit(main())
