"""Non-finite step guard: skip an optimizer step whose loss or gradients are not finite.

Two pieces: :class:`GuardedAdamW` refuses to apply a step when any rank holds a non-finite
gradient (the flag is all-reduced, so every rank skips together, whether it owns a ZeRO
partition or the full model), and :class:`NonFiniteGuard` counts skipped steps and aborts
after too many in a row.

Neither reads a value back to the host on the step: the flag is computed on the device
(``_amp_foreach_non_finite_check_and_unscale_``, one pass over the gradients, as GradScaler
does), all-reduced there, and handed to the fused AdamW as ``found_inf``, whose kernel then
skips the whole update (weight decay included) and leaves the step count unchanged. The loop
reads the per-step flags once per log interval and feeds them to :class:`NonFiniteGuard`. A non-finite loss on any rank is turned into NaN gradients on all
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
    """Fused AdamW that skips (and counts, on the device) steps with non-finite gradients on any rank."""

    def __init__(self, params, **kwargs) -> None:
        kwargs.setdefault("fused", True)  # only the fused kernels honour found_inf
        super().__init__(params, **kwargs)
        self._skipped: torch.Tensor | None = None

    @property
    def skipped(self) -> int:
        """Steps skipped so far (reads the device counter: a host sync, for reports and tests)."""
        return 0 if self._skipped is None else int(self._skipped.item())

    @torch.no_grad()
    def step(self, closure=None):
        grads: dict[torch.device, list[torch.Tensor]] = {}
        for group in self.param_groups:
            group["fused"], group["foreach"] = True, None  # also after loading an older state_dict
            for p in group["params"]:
                if p.grad is not None:
                    grads.setdefault(p.grad.device, []).append(p.grad)
        if not grads:
            return super().step(closure)
        device = next(iter(grads))
        found = torch.zeros((), dtype=torch.float32, device=device)
        for dev, gs in grads.items():
            flag = found if dev == device else torch.zeros((), dtype=torch.float32, device=dev)
            # Sets flag to 1 if any element is inf/NaN (multiplying by 1 leaves the gradients as they are).
            torch._amp_foreach_non_finite_check_and_unscale_(gs, flag, torch.ones((), device=dev))
            if flag is not found:
                found = torch.maximum(found, flag.to(device))
        if dist.is_initialized():
            dist.all_reduce(found, op=dist.ReduceOp.MAX)
        self.found_inf = found  # read by torch's fused AdamW: the update is skipped on the device
        self._skipped = found.clone() if self._skipped is None else self._skipped + found
        try:
            return super().step(closure)
        finally:
            del self.found_inf


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
