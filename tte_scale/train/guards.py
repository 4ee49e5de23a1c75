"""Non-finite step guard: skip an optimizer step whose loss or gradients are not finite.

Two pieces: :class:`GuardedAdamW` refuses to apply a step when any rank holds a non-finite
gradient (the flag is all-reduced, so every rank skips together, whether it owns a ZeRO
partition or the full model), and :class:`NonFiniteGuard` counts skipped steps and aborts
after too many in a row. A non-finite loss on any rank is turned into NaN gradients on all
ranks by the loop, so both cases take the same path; DeepSpeed's ZeRO optimizers also skip
such steps themselves, the wrapper covers stage 0 and bf16 paths that do not.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from tte_scale.errors import TteScaleError


class NonFiniteAbort(TteScaleError):
    """Too many consecutive optimizer steps had a non-finite loss or gradient norm."""


class GuardedAdamW(torch.optim.AdamW):
    """AdamW that skips (and counts) steps with non-finite gradients on any rank."""

    skipped: int = 0

    @torch.no_grad()
    def step(self, closure=None):
        bad = torch.zeros(1, dtype=torch.float32)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and not torch.isfinite(p.grad).all():
                    bad.fill_(1.0)
                    break
        if dist.is_initialized():
            device = next((p.device for g in self.param_groups for p in g["params"]), torch.device("cpu"))
            bad = bad.to(device)
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bad.item():
            self.skipped += 1
            return None
        return super().step(closure)


class NonFiniteGuard:
    """Counts skipped steps; raises :class:`NonFiniteAbort` after ``limit`` in a row."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.in_a_row = 0

    def update(self, skipped: bool, step: int, loss: float, grad_norm: float) -> None:
        if not skipped:
            self.in_a_row = 0
            return
        self.total += 1
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            raise NonFiniteAbort(
                f"step {step}: {self.in_a_row} optimizer steps in a row had a non-finite loss or gradient norm "
                f"(last loss {loss}, grad norm {grad_norm}; limit guards.max_consecutive_nonfinite={self.limit}); "
                "lower optim.lr, check the data, or resume from an earlier checkpoint"
            )

    def state_dict(self) -> dict:
        return {"total": self.total, "in_a_row": self.in_a_row}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.in_a_row = int(state["total"]), int(state["in_a_row"])
