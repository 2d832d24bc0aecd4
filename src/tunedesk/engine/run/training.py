"""The training loop: small typed events out, a control object in.

No per-step host synchronisation: the loss is accumulated on the device and read at the logging
cadence; non-finite losses are flagged on the device and checked at the same time.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from tunedesk.engine import devices, freezing
from tunedesk.engine.config import RunConfig
from tunedesk.engine.devices import fused_optimizer, input_workers, select_device, select_precision
from tunedesk.engine.errors import ConfigError, TuneDeskError, os_error
from tunedesk.engine.models import LoadedModel
from tunedesk.engine.run.batching import BatchChoice, choose_batch
from tunedesk.engine.run.checkpoint import (
    BaseWeights,
    CheckpointState,
    CheckpointWriter,
    load_checkpoint,
    recover,
    saved_batch,
)
from tunedesk.engine.run.evaluation import Validator
from tunedesk.engine.run.events import (
    CheckpointSaved,
    Control,
    EpochEnded,
    EventBus,
    LogMessage,
    RunFinished,
    RunStarted,
    SampleGenerated,
    StepLogged,
)
from tunedesk.engine.run.graphed import GraphedStep
from tunedesk.engine.run.length import EarlyStopping, PlateauSchedule, make_scheduler, outcome, plan_length
from tunedesk.engine.run.sampling import EpochBatches
from tunedesk.engine.tasks.base import PreparedData, Task

if TYPE_CHECKING:
    from tunedesk.engine.run.distributed import DistContext

log = logging.getLogger("tunedesk.training")

# An epoch's end writes the resumable checkpoint only when the last one is at least this old (besides
# the run's end, its first epoch, a stop, and the mid-epoch cadence of hparams.checkpoint_every_*).
EPOCH_CHECKPOINT_GAP_S = 60.0


class Trainer:
    """Runs one fine-tuning run. Build it with everything prepared; call ``run()`` in any thread."""

    def __init__(
        self,
        config: RunConfig,
        task: Task,
        loaded: LoadedModel,
        data: PreparedData,
        plan: freezing.ResolvedPlan,
        output_dir: Path,
        bus: EventBus,
        control: Control | None = None,
        run_id: int | None = None,
        learning_rate: float | None = None,
        head_learning_rate: float | None = None,
        resume_from: Path | None = None,
        cache_dir: Path | None = None,
        batch: BatchChoice | None = None,
        dist: DistContext | None = None,
    ) -> None:
        self.config, self.task, self.loaded, self.data, self.plan = config, task, loaded, data, plan
        self.output_dir = Path(output_dir)
        self.bus, self.control, self.run_id = bus, control or Control(), run_id
        self.lr = learning_rate or config.hparams.learning_rate or 5e-5
        self.head_lr = head_learning_rate
        self.resume_from = resume_from
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.output_dir / "cache"
        self.batch = batch or choose_batch(config)
        self.batch_size, self.grad_accum = self.batch.batch_size, self.batch.grad_accum_steps
        self.summary = ""  # what the run's length came to ("auto: stopped after epoch 9, ...")
        # The history is flushed before each checkpoint is swapped in: it then holds every step up to it.
        self.checkpoints = CheckpointWriter(self.output_dir, before_commit=self.bus.flush)
        self.dist = dist  # data-parallel worker (engine.run.distributed): rank 0 alone writes and emits
        self.writes = dist is None or dist.is_main

    # ---- helpers -------------------------------------------------------------------------------

    def _emit(self, event: Any) -> None:
        self.bus.emit(event)

    def _log(self, level: str, message: str) -> None:
        self._emit(LogMessage(self.run_id, level, message))

    def _loader(
        self,
        dataset: torch.utils.data.Dataset,
        sampler: EpochBatches | None = None,
        batch_size: int | None = None,
        shuffle: bool = False,
    ) -> torch.utils.data.DataLoader:
        h = self.config.hparams
        workers = input_workers(h.num_workers, self.device.type)
        kwargs: dict[str, Any] = dict(
            collate_fn=self.data.collate,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
        )
        # Each new DataLoader iterator draws a worker seed from this generator; without one it draws from
        # the global RNG that dropout uses, so a resumed run (one extra iterator mid-epoch) would diverge.
        kwargs["generator"] = torch.Generator().manual_seed(self.config.seed)
        if workers > 0:
            kwargs["prefetch_factor"] = 4
        if sampler is not None:
            return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, **kwargs)
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, **kwargs)

    def _halve_batch(self, sampler: EpochBatches, optimizer: Any, step: int) -> None:
        """After an out-of-memory step: half the micro-batch, twice the accumulation (same effective batch)."""
        if self.batch_size <= 1:
            raise torch.OutOfMemoryError("out of memory with a batch of one example")
        optimizer.zero_grad(set_to_none=True)
        self._free_cuda()
        old = self.batch_size
        self.batch_size, self.grad_accum = old // 2, self.grad_accum * 2
        sampler.set_batch(self.batch_size, self.grad_accum)
        self._log(
            "warning",
            f"out of GPU memory at step {step + 1} with {old} examples per batch: continuing with "
            f"{self.batch_size} x {self.grad_accum} accumulated (the same {self.batch_size * self.grad_accum} "
            "examples per step)",
        )

    # ---- the run -------------------------------------------------------------------------------

    def run(self) -> RunFinished:
        start = time.perf_counter()
        try:
            return self._run(start)
        except torch.OutOfMemoryError:
            self._free_cuda()
            return self._finish(
                "failed",
                start,
                reason="ran out of GPU memory",
                hint="TuneDesk halves the batch when a step runs out of memory, down to one example; use "
                "shorter sequences/images, freeze more layers, or switch on bf16 precision",
            )
        except TuneDeskError as exc:
            return self._finish("failed", start, reason=exc.message, hint=exc.hint)
        except OSError as exc:  # a full disk or a folder taken away while writing a checkpoint: not a bug
            err = os_error(exc, exc.filename or self.output_dir, "")
            return self._finish("failed", start, reason=err.message, hint=err.hint)
        except Exception as exc:
            log.exception("run %s failed", self.run_id)
            return self._finish(
                "failed",
                start,
                reason=f"internal error: {type(exc).__name__}: {exc}",
                hint="this is a bug in TuneDesk; the log has the details",
                internal=True,
            )

    def _free_cuda(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _finish(self, status: str, start: float, reason: str = "", hint: str = "", **extra: Any) -> RunFinished:
        event = RunFinished(
            self.run_id, status, reason=reason, hint=hint, duration=time.perf_counter() - start, **extra
        )
        self._emit(event)
        return event

    def _run(self, start: float) -> RunFinished:
        cfg, h = self.config, self.config.hparams
        self.device = self.dist.device if self.dist else select_device(cfg.device)
        if self.dist:  # every rank trains at rank 0's rates and resumes from its checkpoint
            self.lr, self.head_lr, self.resume_from = self.dist.from_main((self.lr, self.head_lr, self.resume_from))
        precision = select_precision(cfg.precision, self.device)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        n_train, n_val = len(cast(Sized, self.data.train)), len(cast(Sized, self.data.val))  # map-style data sets
        if n_train == 0 or n_val == 0:
            raise ConfigError(
                "data", "the training or validation split is empty", "add more examples or change data.val_fraction"
            )

        model = self.loaded.model
        freezing.apply(model, self.plan)
        channels_last = self.task.channels_last and devices.channels_last(self.device.type)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if channels_last:
            model.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in torch's overloads
        else:
            model.to(self.device)

        probe_note = ""
        cpu_bf16 = cfg.precision == "auto" and precision == "bf16" and self.device.type == "cpu"
        if cpu_bf16 and self.task.channels_last and not self.dist:
            # image models: bf16 is slower than fp32 for some networks on a CPU (MobileNet, EfficientNet)
            from tunedesk.engine.run import precision_probe

            precision, probe_note = precision_probe.pick(self.task, model, self.data.train, channels_last)
        train_model = self.dist.wrap(model, self.task) if self.dist else model
        groups = freezing.param_groups(
            model, self.lr, h.weight_decay, cfg.freeze.lr_multipliers, self.loaded.head_paths, self.head_lr
        )
        group_names = [g.pop("names") for g in groups]
        base = BaseWeights.of(self.loaded)  # frozen pretrained weights: out of the resumable checkpoint
        fused = fused_optimizer(self.device.type)
        optimizer = torch.optim.AdamW(groups, lr=self.lr, weight_decay=h.weight_decay, fused=fused)

        if self.resume_from is not None:  # a run that halved its batch after running out of memory goes on so
            saved = saved_batch(self.resume_from)
            if saved is not None:
                self.batch_size, self.grad_accum = saved
        world = self.dist.world_size if self.dist else 1
        # data-parallel: the batch is the global one, each rank trains its share of it
        lengths = getattr(self.data.train, "lengths", None) if h.group_by_length else None  # texts
        rank = self.dist.rank if self.dist else 0
        sampler = EpochBatches(n_train, self.batch_size, cfg.seed, rank, world, lengths, self.grad_accum)
        steps_per_epoch = math.ceil(sampler.batches_per_epoch / self.grad_accum)
        length = plan_length(h, steps_per_epoch, n_train)
        total_steps = length.total_steps
        scheduler = make_scheduler(optimizer, length)
        # Tracks the best evaluation and the evaluations since (early stopping, plateau schedule, summary).
        stopper = EarlyStopping(self.task.primary_metric, self.task.higher_is_better, length.patience, length.min_delta)
        use_scaler = precision == "fp16"
        scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

        recovered = (
            recover(self.output_dir) if self.writes else []
        )  # an interrupted checkpoint write: finish it, drop its leftovers
        state = CheckpointState()
        if self.resume_from is not None:
            args = (model, optimizer, scheduler, scaler, group_names, self.device)
            state = load_checkpoint(self.resume_from, *args, fingerprint=base.fingerprint if base else None)
            self._log("info", f"resumed from step {state.step} (epoch {state.epoch + 1}, batch {state.batch_in_epoch})")
            if state.early_stopping:
                stopper = EarlyStopping.from_dict(state.early_stopping)
            if state.budget_epochs and state.budget_epochs != length.epochs:  # the budget the run started with
                length.epochs = state.budget_epochs
                total_steps = length.total_steps = min(steps_per_epoch * length.epochs, h.max_steps or 1 << 62)

        trainable, total = self.plan.trainable_params, self.plan.total_params
        self._emit(
            RunStarted(
                self.run_id,
                total_steps,
                steps_per_epoch,
                length.epochs,
                trainable,
                total,
                str(self.device),
                precision,
                self.lr,
                start_step=state.step,
            )
        )
        for w in self.loaded.warnings + self.data.warnings:
            self._log("warning", w)
        if probe_note:
            self._log("info", probe_note)
        # how long the run may train and why (a resumed run keeps its budget); the batch note at the start
        self._log("info", f"{length.explanation}; {self.batch.explanation}" if state.step == 0 else length.explanation)
        for note in recovered:
            self._log("info", note)
        if self.dist:
            self._log(
                "info",
                f"data-parallel on {world} processes ({self.device.type}): batch {self.batch_size // world} "
                f"per process, global batch {self.batch_size}",
            )

        from tunedesk.engine.run.feed import build_feed

        self.feed = build_feed(
            self.dist.feed_config(cfg) if self.dist else cfg,
            self.task,
            self.loaded,
            self.data,
            self.plan,
            self.device,
            self.cache_dir,
            autocast_dtype,
            self._loader,
            lambda: sampler.epoch,
            say=lambda m: self._log("info", m),
        )
        for note in self.feed.notes:
            self._log("info", note)
        train_loader = self.feed.train_batches(sampler)
        trainable_params = [p for g in groups for p in g["params"]]
        graphed = self._graphed_step(optimizer, trainable_params, train_model, precision, autocast_dtype)
        validate = Validator(
            self.task, self.feed, self.device, self.data.label_names, self.batch_size, lambda m: self._log("warning", m)
        )

        step = state.step
        best = state.best_metric
        best_metrics: dict[str, float] = dict(state.best_metrics)
        last_metrics: dict[str, float] = dict(state.last_metrics)
        # a NaN or infinite loss makes the window's sum non-finite (a NaN in a resumed window's partial sum
        # too): checked once per logging window, no per-step flag
        loss_sum = torch.full((), state.window_loss, device=self.device)
        micro_in_window = state.window_micro
        if not self.writes:  # data-parallel: a resumed run's open logging window counts once, on rank 0
            loss_sum.zero_()
            micro_in_window = 0
        samples_window = 0
        samples_total = 0
        paused_total = 0.0  # pauses, validation and checkpoints: excluded from throughput
        t_window = time.perf_counter()
        t_train0 = time.perf_counter()
        stop_reason = ""
        stopped_early = False
        epochs_done = state.epoch
        every_steps = h.checkpoint_every_steps or 0
        every_s = (h.checkpoint_every_minutes or 0.0) * 60.0
        t_checkpoint = time.monotonic()
        written_at: float | None = None  # when this process last wrote the resumable checkpoint

        def cadence_due() -> bool:
            """The mid-epoch checkpoint cadence (hparams.checkpoint_every_steps / _minutes) falls due."""
            return bool(
                (every_steps and step % every_steps == 0) or (every_s and time.monotonic() - t_checkpoint >= every_s)
            )

        def checkpoint_state(epoch: int, batch_in_epoch: int, window: bool = False) -> CheckpointState:
            return CheckpointState(
                step=step,
                epoch=epoch,
                batch_in_epoch=batch_in_epoch,
                best_metric=best,
                best_metrics=best_metrics,
                last_metrics=last_metrics,
                early_stopping=stopper.to_dict(),
                budget_epochs=length.epochs,
                batch_size=self.batch_size,
                grad_accum_steps=self.grad_accum,
                # a checkpoint between two logged steps keeps the open logging window's partial sum
                window_loss=float(loss_sum) if window else 0.0,
                window_micro=micro_in_window if window else 0,
            )

        if step == 0:
            # language models: the replies before any training, so the change of tone can be followed
            for prompt, text in self.task.generate_samples(model, self.loaded, cfg, self.device):
                self._emit(SampleGenerated(self.run_id, 0, 0, prompt, text))
            t_window = t_train0 = time.perf_counter()

        for epoch in range(state.epoch, length.epochs):
            skip = state.batch_in_epoch if epoch == state.epoch else 0
            freezing.set_train_mode(model, cfg.freeze.train_batchnorm_stats)
            window_start = skip  # the micro-batch the current optimizer step started at
            oom = True
            while oom:  # an out-of-memory step restarts its window with half the batch
                oom = False
                sampler.set_epoch(epoch, window_start)
                per_epoch_micro = sampler.batches_per_epoch
                micro = window_start
                optimizer.zero_grad(set_to_none=True)
                for batch in train_loader:
                    try:
                        batch = self.feed.to_device(batch)
                        # a whole optimizer step as one CUDA graph (cached features; None: the eager way)
                        graph_loss = graphed.step(batch) if graphed is not None else None
                        if graph_loss is not None:
                            loss = graph_loss
                        else:
                            with torch.autocast(
                                self.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
                            ):
                                loss = self.task.loss(self.feed.forward(train_model, batch), batch)
                            scaler.scale(loss if self.grad_accum == 1 else loss / self.grad_accum).backward()
                    except torch.OutOfMemoryError:
                        del batch
                        if graphed is not None:  # shapes change from here on: eager steps only
                            graphed.disabled = True
                        self._halve_batch(sampler, optimizer, step)
                        window_start *= 2
                        oom = True
                        break
                    loss_sum += loss.detach()
                    # the finished step's autograd graph must not outlive it: a graph still referenced when a
                    # CUDA graph's capture starts keeps the parameters' gradient accumulators of the default
                    # stream, and the capture fails (seen on an H100 for a head trained from cached features)
                    del loss
                    micro += 1
                    micro_in_window += 1
                    n = batch["labels"].shape[0]
                    samples_window += n
                    samples_total += n
                    if micro % self.grad_accum and micro != per_epoch_micro:
                        continue
                    window_start = micro
                    # ---- optimizer step (the graph has done it already) ----
                    if graph_loss is None:
                        if h.max_grad_norm:
                            scaler.unscale_(optimizer)
                            torch.nn.utils.clip_grad_norm_(trainable_params, h.max_grad_norm, foreach=True)
                        scaler.step(optimizer)
                        scaler.update()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1

                    last_of_run = step >= total_steps
                    stop_now = False  # data-parallel: the ranks agree on a stop when logging
                    if step % h.log_every == 0 or last_of_run or (self.control.stop_requested and not self.dist):
                        # the one host read per logging window (it waits for the queued GPU work)
                        loss_value = float(loss_sum) / max(micro_in_window, 1)
                        bad = not math.isfinite(loss_value)
                        if self.dist:
                            loss_value, bad, stop_now, samples_window = self.dist.agree(
                                loss_sum,
                                micro_in_window,
                                samples_window,
                                ~torch.isfinite(loss_sum),
                                self.control.stop_requested,
                            )
                        if bad:
                            return self._finish(
                                "failed",
                                start,
                                reason=f"the loss became NaN or infinite near step {step}",
                                hint="lower the learning rate, switch fp16 to bf16 or fp32, or check the data",
                                steps=step,
                            )
                        now = time.perf_counter()
                        window = max(now - t_window, 1e-9)
                        mem = peak = None
                        if self.device.type == "cuda":
                            mem = torch.cuda.memory_allocated(self.device) / 2**20
                            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
                        self._emit(
                            StepLogged(
                                self.run_id,
                                step,
                                epoch,
                                loss_value,
                                scheduler.get_last_lr()[0],
                                samples_window / window,
                                now - t_train0 - paused_total,
                                mem,
                                peak,
                            )
                        )
                        loss_sum.zero_()
                        micro_in_window = samples_window = 0
                        t_window = time.perf_counter()

                    if self.control.paused:
                        paused_total += self.control.wait_while_paused()
                        t_window = time.perf_counter()
                    stopping = stop_now if self.dist else self.control.stop_requested
                    if stopping:
                        stop_reason = self.control.stop_reason or "stopped by the user"
                    # a resumable checkpoint mid-epoch: on stop, and every N steps / minutes (the epoch's last
                    # step is followed by the end-of-epoch checkpoint anyway)
                    due = cadence_due()
                    if stopping or (due and micro < per_epoch_micro and not last_of_run):
                        t_ck = time.perf_counter()
                        st = checkpoint_state(epoch, micro, window=True)
                        if self.writes:
                            path = self.checkpoints.save_last(
                                model, optimizer, scheduler, scaler, group_names, st, base
                            )
                            self._emit(CheckpointSaved(self.run_id, str(path), "last", step, epoch))
                        t_checkpoint = written_at = time.monotonic()
                        paused_total += time.perf_counter() - t_ck
                        t_window += time.perf_counter() - t_ck
                    if stopping:
                        break
                    if last_of_run:
                        break
            if stop_reason:
                break

            # ---- end of epoch: validation, best and last checkpoints (not counted in samples/s) ----
            t_eval0 = time.perf_counter()
            metrics, confusion, per_class = validate(model, autocast_dtype)
            metrics["epoch"] = epoch + 1
            key = self.task.primary_metric
            value = metrics.get(key)
            is_best = stopper.update(value, epoch + 1)
            if not is_best and isinstance(scheduler, PlateauSchedule):
                scheduler.plateau()
            epochs_done = epoch + 1
            last_metrics = metrics
            # language models: follow the tone epoch by epoch (other tasks generate nothing)
            for prompt, text in self.task.generate_samples(model, self.loaded, cfg, self.device):
                self._emit(SampleGenerated(self.run_id, step, epoch + 1, prompt, text))
            if is_best:
                best = value
                best_metrics = dict(metrics)
            if is_best and self.writes:
                bpath = self.checkpoints.save_best(
                    self.task.best_files(model, self.loaded, self.data.label_names, metrics), step, epoch + 1
                )
            self._emit(
                EpochEnded(self.run_id, epoch + 1, step, metrics, confusion, self.data.label_names, per_class, is_best)
            )
            if is_best and self.writes:
                self._emit(CheckpointSaved(self.run_id, str(bpath), "best", step, epoch + 1))
            stopped_early = bool(length.early_stopping and stopper.should_stop)
            ending = stopped_early or step >= total_steps or epoch + 1 >= length.epochs
            # The resumable checkpoint at an epoch's end: always at the run's end and after its first epoch,
            # otherwise only when the last one is EPOCH_CHECKPOINT_GAP_S old (short epochs would spend ~10%
            # of a CPU run writing the weights and AdamW's state every few seconds)
            cadence = cadence_due()  # the mid-epoch cadence skips an epoch's last step: it falls due here
            if ending or cadence or written_at is None or time.monotonic() - written_at >= EPOCH_CHECKPOINT_GAP_S:
                st = checkpoint_state(epoch + 1, 0)
                if self.writes:
                    path = self.checkpoints.save_last(model, optimizer, scheduler, scaler, group_names, st, base)
                    self._emit(CheckpointSaved(self.run_id, str(path), "last", step, epoch + 1))
                t_checkpoint = written_at = time.monotonic()
            paused_total += time.perf_counter() - t_eval0
            t_window = time.perf_counter()
            if ending:
                break

        train_time = max(time.perf_counter() - t_train0 - paused_total, 1e-9)
        sps = samples_total * world / train_time  # every rank trains the same share
        if not stop_reason:
            self.summary = outcome(length, stopper if length.early_stopping else None, epochs_done, stopped_early)
            self._log("info", self.summary)
        if stop_reason:
            return self._finish(
                "stopped",
                start,
                reason=stop_reason,
                best_metric=best,
                final_metrics=last_metrics,
                samples_per_second=sps,
                steps=step,
            )
        return self._finish(
            "completed",
            start,
            best_metric=best,
            final_metrics=best_metrics or last_metrics,
            samples_per_second=sps,
            steps=step,
            summary=self.summary,
        )

    def _graphed_step(
        self,
        optimizer: torch.optim.Optimizer,
        params: list[torch.Tensor],
        train_model: nn.Module,
        precision: str,
        autocast_dtype: torch.dtype | None,
    ) -> GraphedStep | None:
        """Each step as one CUDA graph where it applies (``engine.run.graphed``), else None."""
        h = self.config.hparams
        reason = GraphedStep.reason_not(
            h.cuda_graph, self.device, self.feed, self.grad_accum, precision, self.dist is not None
        )
        if reason is not None:
            if self.feed.train_cached and self.device.type == "cuda":  # where a user would expect it
                self._log("info", f"one CUDA graph per step: {reason}")
            return None
        return GraphedStep(
            optimizer,
            params,
            lambda b: self.task.loss(self.feed.forward(train_model, b), b),
            h.max_grad_norm,
            autocast_dtype,
            buffers=list(train_model.buffers()),
            say=lambda m: self._log("info", m),
        )
