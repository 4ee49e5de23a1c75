"""`tte-scale launch`: Launch training or sharding on SLURM (submitit), locally, or Ray on SLURM."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from tte_scale.commands import add_config_arguments, from_args

RANKED_COMMANDS = ("embed", "eval")
"""Commands `launch local -- CMD ...` starts on every rank instead of `train`."""

HELP = "Launch training or sharding on SLURM (submitit), locally, or Ray on SLURM"
DESCRIPTION = """\
Launch pretraining on a cluster, or the sharding job on Ray inside a SLURM allocation.

  tte-scale launch slurm --config configs/pretrain/vit_1b_64gpu.yaml --nodes 8 --gpus-per-node 8 \\
      --partition gpu --account proj --time 2-00:00:00 --cpus-per-task 12 --mem 480G [--dry-run]
  tte-scale launch status JOBID
  tte-scale launch cancel JOBID [--requeue]
  tte-scale launch local --nproc 8 --config configs/pretrain/vit_b_8gpu.yaml
  tte-scale launch local --hostfile hosts.txt --config configs/pretrain/vit_l_8gpu.yaml
  tte-scale launch ray-shard --nodes 4 --cpus-per-node 64 --time 12:00:00 -- \\
      --scans scans.parquet --labels labels/ --out shards/ --config configs/shard/default.yaml

SLURM jobs run one task per GPU and are checkpointable: SLURM sends SIGUSR1 --signal-delay-s
before the time limit (or send it yourself: `launch cancel JOBID --requeue`); every rank stops
after the same step, the checkpoint is written and marked complete, the job requeues itself
and resumes from it. Before sbatch, the launcher refuses (exit 2, one line per problem) what
would fail in the queue: an encoder name outside the registry, a global batch that does not
split over the ranks, missing or incomplete shards/labels folders, a model over --gpu-mem, a
--time shorter than one checkpoint interval plus the signal delay (with --step-time-s, or the
run's own step time on --resume). See README "Launching on a cluster".
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="launcher", metavar="<launcher>", required=True)

    p = sub.add_parser(
        "slurm",
        help="submit pretraining to SLURM through submitit",
        description="Submit `tte-scale train` to SLURM: one task per GPU, requeued on preemption.",
    )
    add_config_arguments(p, required=True)
    p.add_argument("--nodes", type=int, default=None, help="nodes (default: the config's cluster.nodes)")
    p.add_argument(
        "--gpus-per-node",
        type=int,
        default=None,
        help="GPUs per node, one rank each (default: cluster.gpus_per_node); 0 = CPU-only job",
    )
    p.add_argument("--tasks-per-node", type=int, default=None, help="ranks per node (default: --gpus-per-node)")
    p.add_argument("--cpus-per-task", type=int, default=None, help="CPU cores per rank")
    p.add_argument("--mem", default=None, help="memory per node, sbatch syntax (e.g. 480G)")
    p.add_argument("--time", default="1:00:00", help="time limit: MINUTES, HH:MM:SS or D-HH:MM:SS (default 1:00:00)")
    p.add_argument("--partition", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--qos", default=None)
    p.add_argument("--constraint", default=None)
    p.add_argument("--exclusive", action="store_true", help="allocate whole nodes")
    p.add_argument("--job-name", default="tte-pretrain")
    p.add_argument(
        "--signal",
        default="USR1",
        choices=("USR1", "USR2", "TERM"),
        help="warning signal before the time limit (default USR1)",
    )
    p.add_argument(
        "--signal-delay-s",
        type=int,
        default=120,
        help="seconds before the limit the signal comes: one step + one checkpoint write (default 120)",
    )
    p.add_argument("--max-requeues", type=int, default=20, help="stop requeueing after this many restarts")
    p.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="LINE",
        help="shell line run before srun, e.g. 'module load cuda' (repeatable)",
    )
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="export in the job (repeatable)")
    p.add_argument(
        "--folder", type=Path, default=None, help="submitit folder for scripts and logs (default <out_dir>/slurm)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in out_dir from its newest complete checkpoint"
    )
    p.add_argument(
        "--gpu-mem",
        type=float,
        default=None,
        metavar="GIB",
        help="GPU memory of the partition's GPUs in GiB: refuse a model whose model states "
        "(`tte-scale train --estimate-memory` for this job's shape) do not fit",
    )
    p.add_argument(
        "--step-time-s",
        type=float,
        default=None,
        metavar="S",
        help="seconds per optimizer step (a previous run's metrics.jsonl step_s; default on --resume: the "
        "run's own): refuse a --time shorter than one checkpoint interval plus --signal-delay-s",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the sbatch script, task environment and pre-submission checks; submit nothing",
    )

    p = sub.add_parser(
        "status", help="state of a submitted job: per node, each rank's liveness and last step; log tails"
    )
    p.add_argument("job_id", metavar="JOBID")
    p.add_argument("--lines", type=int, default=20, help="lines of each task log (default 20)")
    p.add_argument(
        "--folder", type=Path, default=None, help="submitit folder, if SLURM and the job index forgot the job"
    )

    p = sub.add_parser("cancel", help="cancel a submitted job (scancel), or preempt it: checkpoint and requeue")
    p.add_argument("job_id", metavar="JOBID")
    p.add_argument(
        "--requeue",
        action="store_true",
        help="send the warning signal instead (scancel --signal=USR1): every rank checkpoints the same step "
        "and the job requeues itself",
    )
    p.add_argument("--signal", default="USR1", choices=("USR1", "USR2"), help="the job's --signal (default USR1)")

    p = sub.add_parser(
        "local",
        help="train (or embed, eval) on this machine (torchrun) or on a hostfile's machines (deepspeed)",
        description="Start `tte-scale train --config ...` once per device, or, after `--`, another command "
        "that runs on ranks: `tte-scale launch local --nproc 4 -- embed --encoder E --shards S --out O` "
        "(or `-- eval ...`: the embedding is split over the ranks, rank 0 fits the probes).",
    )
    add_config_arguments(p, required=False)
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="processes per machine (default: cluster.gpus_per_node; required with a command after --)",
    )
    p.add_argument("--hostfile", type=Path, default=None, help="DeepSpeed hostfile ('host slots=N' lines)")
    p.add_argument("--master-port", type=int, default=None, help="rendezvous port for --hostfile runs")
    p.add_argument("--resume", action="store_true", help="resume from the newest complete checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print the command; run nothing")
    p.add_argument(
        "ranked_command",  # not `command`: the top-level parser's dest for the subcommand name
        nargs=argparse.REMAINDER,
        metavar="-- embed|eval ...",
        help="-- then `embed` or `eval` and its arguments, to run that on the ranks instead of training",
    )

    p = sub.add_parser(
        "ray-shard",
        help="Ray head + workers on a SLURM allocation, then `tte-scale shard` on it",
        description="Arguments after `--` go to `tte-scale shard` (--ray-address is added).",
    )
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--cpus-per-node", type=int, required=True, help="CPUs Ray may use on each node")
    p.add_argument("--time", default="4:00:00")
    p.add_argument("--partition", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--qos", default=None)
    p.add_argument("--constraint", default=None)
    p.add_argument("--mem", default=None)
    p.add_argument("--setup", action="append", default=[], metavar="LINE")
    p.add_argument("--folder", type=Path, default=None, help="submitit folder (default <shards out>.slurm)")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("shard_args", nargs=argparse.REMAINDER, help="-- then the `tte-scale shard` arguments")


def run(args: argparse.Namespace) -> int:
    return {"slurm": _slurm, "status": _status, "cancel": _cancel, "local": _local, "ray-shard": _ray_shard}[
        args.launcher
    ](args)


def _slurm(args: argparse.Namespace) -> int:
    from tte_scale.config import ConfigError, load_config
    from tte_scale.launch.preflight import PreflightError, config_problems, recent_step_seconds, submission_problems
    from tte_scale.launch.slurm import (
        SlurmConfig,
        default_folder,
        dry_run_text,
        freeze_cluster,
        parse_time,
        submit,
    )
    from tte_scale.train import PretrainConfig

    cfg = load_config(PretrainConfig, args.config, list(args.overrides))
    cfg.out_dir = cfg.out_dir.resolve()
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--env {item!r}: expected KEY=VALUE")
        env[key] = value
    sc = from_args(
        SlurmConfig,
        args,
        nodes=args.nodes or cfg.cluster.nodes,
        gpus_per_node=cfg.cluster.gpus_per_node if args.gpus_per_node is None else args.gpus_per_node,
        time_min=parse_time(args.time),
        env=env,
    )
    if args.gpu_mem is not None and args.gpu_mem <= 0:
        raise ConfigError(f"--gpu-mem {args.gpu_mem:g}: must be positive (GiB)")
    freeze_cluster(cfg, sc)  # the job's config says what the job is: --nodes 2 is not the YAML's 1
    step_time = args.step_time_s
    if step_time is None and args.resume:
        step_time = recent_step_seconds(cfg.out_dir)
    problems = config_problems(cfg, sc, gpu_mem_gib=args.gpu_mem, step_time_s=step_time)
    if problems:
        raise PreflightError(problems)
    problems = submission_problems(cfg, resume=args.resume)
    folder = (args.folder or default_folder(cfg.out_dir)).resolve()
    if args.dry_run:
        print(dry_run_text(sc, cfg, folder, checks=problems, step_time_s=step_time, gpu_mem_gib=args.gpu_mem))
        return 0
    if problems:
        raise PreflightError(problems)
    job = submit(sc, cfg, folder)
    print(
        f"submitted job {job.job_id}: {sc.nodes} node(s) x {sc.ntasks_per_node} task(s), "
        f"time limit {sc.time_min} min, {sc.signal} {sc.signal_delay_s} s before it"
    )
    print(f"  logs:        {folder}/{job.job_id}_<rank>_log.out|err")
    print(f"  checkpoints: {cfg.out_dir}/checkpoints   metrics: {cfg.out_dir}/metrics.jsonl")
    print(f"  status:      tte-scale launch status {job.job_id}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from tte_scale.launch.status import status_text

    print(status_text(args.job_id, lines=args.lines, folder=args.folder))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from tte_scale.launch.status import cancel

    print(cancel(args.job_id, signal=args.signal if args.requeue else None))
    return 0


def _local(args: argparse.Namespace) -> int:
    import subprocess

    from tte_scale.config import load_config
    from tte_scale.launch.local import local_command
    from tte_scale.launch.slurm import LaunchError
    from tte_scale.train import EXIT_REQUEUE, PretrainConfig

    given = args.ranked_command
    command = given[1:] if given[:1] == ["--"] else list(given)
    if command:
        if command[0] not in RANKED_COMMANDS:
            raise LaunchError(f"launch local -- {command[0]}: only {', '.join(RANKED_COMMANDS)} run on ranks here")
        if args.config or args.overrides or args.resume or args.nproc is None:
            raise LaunchError(
                f"launch local -- {command[0]}: give --nproc, and no --config/--set/--resume (they belong to train)"
            )
        nproc = args.nproc
        cmd = local_command(nproc, "", [], False, args.hostfile, args.master_port, cli_args=command)
    else:
        if not args.config:
            raise LaunchError("launch local: --config is required (or `-- embed ...` after the options)")
        cfg = load_config(PretrainConfig, args.config, list(args.overrides))  # config errors before any process
        nproc = args.nproc if args.nproc is not None else cfg.cluster.gpus_per_node
        cmd = local_command(nproc, args.config, list(args.overrides), args.resume, args.hostfile, args.master_port)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    print(f"launch: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    code = subprocess.call(cmd)
    if code:
        hint = " (checkpointed after a stop signal)" if code == EXIT_REQUEUE else ""
        again = "the same command" if command else "the same command plus --resume"
        what = command[0] if command else "training"
        print(f"launch: {what} exited with status {code}{hint}; continue with {again}", file=sys.stderr)
    return code


def _ray_shard(args: argparse.Namespace) -> int:
    from tte_scale.launch import jobindex
    from tte_scale.launch.ray_slurm import TOKEN_PREFIX, RayShardJob, new_token_file, sbatch_parameters
    from tte_scale.launch.slurm import LaunchError, parse_time, render_script

    shard_args = args.shard_args[1:] if args.shard_args[:1] == ["--"] else args.shard_args
    if any(a.startswith(("--ray-address", "--workers")) for a in shard_args):
        raise LaunchError("ray-shard sets --ray-address itself; drop --ray-address/--workers from the shard arguments")
    from tte_scale.sharding import cli as shard_cli

    shard_parser = argparse.ArgumentParser(prog="tte-scale shard")
    shard_cli.add_arguments(shard_parser)
    try:
        parsed = shard_parser.parse_args(shard_args)
    except SystemExit:
        raise LaunchError(f"ray-shard: bad `tte-scale shard` arguments: {shlex.join(shard_args)}") from None
    if args.nodes < 1 or args.cpus_per_node < 1:
        raise LaunchError("ray-shard: --nodes and --cpus-per-node must be >= 1")
    out = Path(parsed.out).resolve()
    folder = (args.folder or out.with_name(out.name + ".slurm")).resolve()
    params = sbatch_parameters(
        args.nodes,
        args.cpus_per_node,
        parse_time(args.time),
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        constraint=args.constraint,
        mem=args.mem,
        setup=args.setup,
    )
    if args.dry_run:
        print(render_script(params, folder).rstrip())
        print(
            f"\n# task 0: ray start --head on the first node, then: tte-scale shard {shlex.join(shard_args)} "
            "--ray-address <head>:<port>\n# tasks 1..: ray start --address <head>:<port>"
        )
        print(
            f"# Ray auth token: a new 0600 file {folder}/{TOKEN_PREFIX}<random> per submission, "
            "removed by task 0 when the job ends"
        )
        return 0
    import submitit

    try:
        executor = submitit.SlurmExecutor(folder=folder)
    except RuntimeError as exc:
        raise LaunchError(f"cannot submit to SLURM here: {exc}") from None
    executor.update_parameters(**params)
    token_file = new_token_file(folder)  # one per submission: the job removes it when it ends
    job_fn = RayShardJob(shard_args=shard_args, token_file=str(token_file))
    try:
        job = executor.submit(job_fn)
    except BaseException:
        job_fn.remove_token()  # no job will run to remove it
        raise
    jobindex.record(job.job_id, folder, None, kind="ray-shard")
    print(f"submitted job {job.job_id}: Ray on {args.nodes} node(s) x {args.cpus_per_node} CPUs -> {out}")
    print(f"  logs:   {folder}/{job.job_id}_<node>_log.out|err")
    print(f"  status: tte-scale launch status {job.job_id}")
    return 0
