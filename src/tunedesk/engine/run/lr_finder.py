"""Learning-rate range test: a short run with an exponentially growing learning rate.

The loss against the learning rate shows where training starts to make fast progress and where it
blows up; the suggested value sits at the steepest descent of the smoothed curve (or a tenth of the
learning rate at the lowest loss when the curve has no clear descent). The test trains the prepared
model for ~100 steps, so everything it changes (weights, BatchNorm statistics, RNG, train/eval mode,
device) is put back afterwards: the run that follows starts exactly where it would have without it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tunedesk.engine import freezing
from tunedesk.engine.errors import ConfigError, TrainingError
from tunedesk.engine.run.batching import AUTO_BATCH
from tunedesk.engine.run.events import Control
from tunedesk.engine.tasks.base import to_device


@dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]  # raw loss per step
    smoothed: list[float]  # bias-corrected exponential moving average of the loss
    suggestion: float
    method: str  # "steepest" or "min/10"
    explanation: str
    diverged: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lrs": self.lrs,
            "losses": self.losses,
            "smoothed": self.smoothed,
            "suggestion": self.suggestion,
            "method": self.method,
            "explanation": self.explanation,
            "diverged": self.diverged,
        }


Progress = Callable[[int, int, float, float], None]  # (step, total, lr, loss)


def find_lr(
    prep: Any,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 1.0,
    num_steps: int = 100,
    beta: float = 0.9,
    diverge_factor: float = 4.0,
    control: Control | None = None,
    progress: Progress | None = None,
) -> LRFinderResult:
    """Run the range test on a prepared run (``runner.prepare``) and put the model back afterwards.

    ``start_lr``..``end_lr`` are spread exponentially over ``num_steps`` optimizer steps (batches of the
    training split, cycled). The test stops early once the smoothed loss exceeds ``diverge_factor``
    times its best value or turns NaN, or when ``control`` asks to stop.
    """
    if not (0 < start_lr < end_lr):
        raise ConfigError("lr_finder", f"needs 0 < start_lr < end_lr (got {start_lr:g}, {end_lr:g})")
    if num_steps < 5:
        raise ConfigError("lr_finder", f"needs at least 5 steps (got {num_steps})")
    from tunedesk.engine.devices import fused_optimizer, select_device, select_precision

    cfg, h = prep.config, prep.config.hparams
    model = prep.loaded.model
    if len(prep.data.train) == 0:
        raise TrainingError("the training split is empty", "add more examples or change data.val_fraction")
    device = select_device(cfg.device)
    precision = select_precision(cfg.precision, device)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    control = control or Control()

    # ---- snapshot everything the test changes ----
    original_device = next(model.parameters()).device
    saved_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    saved_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    saved_training = model.training
    rng = (
        torch.get_rng_state(),
        torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        random.getstate(),
    )

    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    diverged = False
    try:
        freezing.apply(model, prep.plan)
        model.to(device)
        freezing.set_train_mode(model, cfg.freeze.train_batchnorm_stats)
        groups = freezing.param_groups(
            model, 1.0, h.weight_decay, cfg.freeze.lr_multipliers, prep.loaded.head_paths, None
        )
        ratios = [g.pop("lr") for g in groups]
        for g in groups:
            g.pop("names")
        params = [p for g in groups for p in g["params"]]
        optimizer = torch.optim.AdamW(
            groups, lr=start_lr, weight_decay=h.weight_decay, fused=fused_optimizer(device.type)
        )
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        loader = torch.utils.data.DataLoader(
            prep.data.train,
            batch_size=prep.batch.batch_size if getattr(prep, "batch", None) else (h.batch_size or AUTO_BATCH),
            shuffle=True,
            collate_fn=prep.data.collate,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        factor = (end_lr / start_lr) ** (1.0 / (num_steps - 1))
        best = math.inf
        avg = 0.0
        batches = iter(loader)
        for i in range(num_steps):
            if control.stop_requested:
                break
            lr = start_lr * factor**i
            for g, ratio in zip(groups, ratios):
                g["lr"] = lr * ratio
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(loader)
                batch = next(batches)
            batch = to_device(batch, device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = prep.task.loss(prep.task.forward(model, batch), batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if h.max_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, h.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            value = float(loss.detach())  # one read per step is fine for a 100-step test
            if not math.isfinite(value):
                diverged = True
                break
            avg = beta * avg + (1 - beta) * value
            smooth = avg / (1 - beta ** (i + 1))
            lrs.append(lr)
            losses.append(value)
            smoothed.append(smooth)
            if progress is not None:
                progress(i + 1, num_steps, lr, value)
            best = min(best, smooth)
            if i >= 5 and smooth > diverge_factor * best:
                diverged = True
                break
    except torch.OutOfMemoryError as exc:
        raise TrainingError(
            "the learning-rate test ran out of GPU memory",
            "use a smaller batch size, freeze more layers or switch on bf16",
        ) from exc
    finally:
        model.load_state_dict(saved_state)
        for n, p in model.named_parameters():
            p.requires_grad_(saved_flags[n])
            p.grad = None
        model.to(original_device)
        model.train(saved_training)
        torch.set_rng_state(rng[0])
        if rng[1] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng[1])
        random.setstate(rng[2])
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if len(lrs) < 3:
        raise TrainingError(
            "the learning-rate test stopped before it had enough points",
            "lower the start learning rate, or check the data and model with a normal run",
        )
    suggestion, method = suggest(lrs, smoothed)
    if method == "steepest":
        why = (
            f"{suggestion:.2g}: where the smoothed loss falls fastest; higher rates learn faster until the "
            f"loss turns up, lower ones waste steps"
        )
    else:
        why = (
            f"{suggestion:.2g}: a tenth of the learning rate at the lowest loss (the curve has no clear "
            "steepest descent)"
        )
    why += f"; the run is set to {prep.learning_rate:g} now"
    return LRFinderResult(lrs, losses, smoothed, suggestion, method, why, diverged)


def suggest(lrs: list[float], smoothed: list[float], skip_start: int = 3, skip_end: int = 2) -> tuple[float, str]:
    """The learning rate at the steepest descent of ``smoothed`` over log(lr), else min-loss / 10.

    The ends are skipped: the first points carry the EMA's warm-up and the last the blow-up. The
    steepest descent must be before the minimum and actually descend, otherwise min/10 is safer.
    """
    n = len(lrs)
    min_index = min(range(n), key=smoothed.__getitem__)
    fallback = (float(f"{lrs[min_index] / 10:.2g}"), "min/10")
    lo, hi = min(skip_start, n - 1), max(min(n - skip_end, min_index + 1), 0)
    if hi - lo < 3:
        return fallback
    best_slope, best_i = 0.0, None
    for i in range(lo + 1, hi):
        dx = math.log(lrs[i]) - math.log(lrs[i - 1])
        if dx <= 0:
            continue
        slope = (smoothed[i] - smoothed[i - 1]) / dx
        if slope < best_slope:
            best_slope, best_i = slope, i
    if best_i is None:
        return fallback
    # A flat curve (total drop < 1 %) has no meaningful steepest point.
    span = max(smoothed[lo:hi]) - min(smoothed[lo:hi])
    if span < 0.01 * max(abs(smoothed[lo]), 1e-12):
        return fallback
    return float(f"{lrs[best_i]:.2g}"), "steepest"
