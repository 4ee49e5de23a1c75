"""One gloo rank: DeepSpeed bf16 + ZeRO-2 + accumulation over a small TTEModel (helper of test_bf16_state.py).

Prints one JSON line: the dtypes DeepSpeed left, the accumulation dtype it uses, and the
prefit bias before/after two optimizer steps.
"""

from __future__ import annotations

import json
import sys

import deepspeed
import torch

from tte_scale.config import load_config
from tte_scale.train import PretrainConfig
from tte_scale.train.dist import leave_process_group
from tte_scale.train.ds_config import build_ds_config, param_groups
from tte_scale.train.guards import GuardedAdamW
from tte_scale.train.parts import build_model


def main() -> None:
    stage = int(sys.argv[1])
    cfg = load_config(
        PretrainConfig,
        None,
        [
            "model.img_size=[8,16,16]", "model.patch_size=[4,8,8]", "model.embed_dim=16", "model.depth=1",
            "model.num_heads=2", "head.rank=4", "zero.precision=bf16", f"zero.stage={stage}",
            "optim.global_batch_size=4", "optim.grad_accum_steps=2", "optim.lr=0.01",
        ],
    )
    torch.manual_seed(0)
    K, J = 5, 3
    model = build_model(cfg, num_tasks=K, num_bins=J)
    starts = torch.tensor([0.0, 30.0, 365.0])
    g = torch.Generator().manual_seed(1)
    time, event = torch.rand(64, K, generator=g) * 800, torch.rand(64, K, generator=g) < 0.3
    prefit = model.head.init_bias_from_labels(time, event, starts, floor=1e-5).clone()
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    opt = GuardedAdamW(param_groups(model, 0.01), lr=0.01)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=build_ds_config(cfg, 1, "cpu"))
    head = engine.module.head
    for _ in range(4):  # 2 optimizer steps of 2 micro-batches
        vol = torch.rand(2, 1, 8, 16, 16).bfloat16()
        loss = engine(vol, time[:2], event[:2], starts)
        engine.backward(loss)
        engine.step()
    print(
        json.dumps(
            {
                "encoder_param": str(next(engine.module.encoder.parameters()).dtype),
                "bias_param": str(head.bias.dtype),
                "log_hazard0": str(head.log_hazard0.dtype),
                "running_mean": str(head.feature_norm.running_mean.dtype),
                "running_var": str(head.feature_norm.running_var.dtype),
                "prefit_exact": bool(torch.equal(head.log_hazard0, prefit.float())),
                "grad_accum_dtype": str(getattr(engine.optimizer, "gradient_accumulation_dtype", None)),
                "loss_finite": bool(torch.isfinite(loss).item()),
            }
        )
    )
    leave_process_group()  # before exit, as `tte-scale train` does (tte_scale/train/dist.py)


if __name__ == "__main__":
    main()
