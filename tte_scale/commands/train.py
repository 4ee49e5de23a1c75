"""`tte-scale train`: Pretrain a 3D ViT with the TTE survival loss under DeepSpeed ZeRO."""

from __future__ import annotations

import argparse

from tte_scale.commands import add_config_arguments

HELP = "Pretrain a 3D ViT with the TTE survival loss under DeepSpeed ZeRO"
DESCRIPTION = """\
Pretrain a 3D ViT with the time-to-event loss under DeepSpeed ZeRO (stages 0-3).

Rank and world size come from the environment, so the same command runs alone, under
`deepspeed`, `torchrun` or as a SLURM task:
  tte-scale train --config configs/pretrain/demo.yaml --set max_steps=20
  deepspeed --no_local_rank --num_gpus 8 --module tte_scale.cli train --config configs/pretrain/vit_b_8gpu.yaml
  torchrun --nproc_per_node 8 -m tte_scale.cli train --config configs/pretrain/vit_b_8gpu.yaml
  tte-scale train --config configs/pretrain/vit_1b_64gpu.yaml --estimate-memory

(`--no_local_rank`: the rank comes from LOCAL_RANK, not from an extra command-line argument.)
Exit status: 0 done; 75 (EX_TEMPFAIL) checkpointed after SIGUSR1/SIGTERM, requeue the job;
2 bad config or input. An out_dir that already holds a run is refused unless --resume continues
it (from the checkpoint <out_dir>/checkpoints/latest names, or the newest complete one before it;
an error if there is none) or --overwrite replaces it (removes only the run's own checkpoints/,
metrics.jsonl, tb/ and encoder/, and only in a folder `tte-scale train` marked as its own).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, required=True)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in out_dir from its `latest` complete checkpoint (error if none); "
        "same as --set checkpoint.resume=true",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an out_dir that holds one, removing that run's own files first (never "
        "anything else); same as --set checkpoint.overwrite=true",
    )
    parser.add_argument(
        "--estimate-memory",
        action="store_true",
        help="print DeepSpeed's per-device memory estimate for the config's model, ZeRO stage and "
        "cluster (cluster.nodes x cluster.gpus_per_node) and exit without training",
    )


def run(args: argparse.Namespace) -> int:
    import json
    import logging

    from tte_scale.config import load_config
    from tte_scale.train import PretrainConfig, estimate_memory, train
    from tte_scale.train.dist import leave_process_group

    overrides = list(args.overrides) + (["checkpoint.resume=true"] if args.resume else [])
    overrides += ["checkpoint.overwrite=true"] if args.overwrite else []
    cfg = load_config(PretrainConfig, args.config, overrides)
    if args.estimate_memory:
        est = estimate_memory(cfg)
        print(est.pop("deepspeed_table"))
        print(json.dumps(est, indent=1))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    code = train(cfg)
    leave_process_group()  # train() keeps it after a preemption (EXIT_REQUEUE), for callers that wait on it
    return code
