"""One run from a configuration: prepare (validate, data, model, plan), record, train.

Both the CLI and the desktop app's worker call this. Preparation errors are raised as TuneDeskError
before anything is written; once a run exists in the history, every outcome is recorded there by
the single writer (RunRecorder), never by the training loop itself.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunedesk.engine.config import RunConfig
from tunedesk.engine.defaults import suggested_head_learning_rate, suggested_learning_rate
from tunedesk.engine.errors import TuneDeskError
from tunedesk.engine.paths import database_path, home_dir, runs_dir
from tunedesk.engine.run.events import Control, Event, EventBus, RunFinished
from tunedesk.engine.store.history import run_config
from tunedesk.engine.store.resolved import ResolvedRun, resolved

if TYPE_CHECKING:  # torch, transformers and the tasks load only when a run is prepared
    from tunedesk.engine.freezing import ResolvedPlan
    from tunedesk.engine.models import LoadedModel
    from tunedesk.engine.store import RunStore
    from tunedesk.engine.tasks.base import PreparedData, Task


@dataclass
class PreparedRun:
    config: RunConfig
    task: Task
    loaded: LoadedModel
    data: PreparedData
    plan: ResolvedPlan
    learning_rate: float
    head_learning_rate: float | None
    lr_explanation: str
    freeze_summary: str
    warnings: list[str] = field(default_factory=list)
    batch: Any = None  # batching.BatchChoice: the resolved batch size and accumulation


@dataclass
class RunResult:
    run_id: int
    status: str
    metrics: dict[str, float]
    best_metric: float | None
    samples_per_second: float
    output_dir: str
    reason: str = ""
    hint: str = ""
    duration: float = 0.0
    summary: str = ""  # what the run's length came to ("auto: stopped after epoch 9, best epoch 7 (...)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "val_accuracy": self.metrics.get("val_accuracy"),
            "val_macro_f1": self.metrics.get("val_macro_f1"),
            "val_loss": self.metrics.get("val_loss"),
            "best_metric": self.best_metric,
            "samples_per_second": round(self.samples_per_second, 2),
            "duration_s": round(self.duration, 2),
            "output_dir": self.output_dir,
            "reason": self.reason,
            "hint": self.hint,
            "summary": self.summary,
        }


Progress = Callable[[str], None]


def accept(config: RunConfig) -> RunConfig:
    """The configuration a run uses: a validated copy. Validated once, here, on the way in."""
    return copy.deepcopy(config).validate()


def recorded_config(config: RunConfig, home: Path) -> RunConfig:
    """The configuration as the history records it: a data set version is named by the database that
    holds it (an empty ``data.path`` means this home's), so the CLI and the app record the same path."""
    if config.data.kind != "dataset_version" or config.data.path:
        return config
    config = copy.deepcopy(config)
    config.data.path = str(database_path(home))
    return config


def prepare(config: RunConfig, progress: Progress | None = None) -> PreparedRun:
    """Everything up to the first step; raises TuneDeskError with a hint on any user mistake."""
    from tunedesk.engine import freezing, tasks

    say = progress or (lambda _msg: None)
    config = accept(config)
    task = tasks.get(config.task)
    say("reading the data set")
    examples = task.load_examples(config)
    label_names = task.label_names(examples)
    say(f"loading {config.model.name_or_path}")
    import torch

    torch.manual_seed(config.seed)  # the new head's (and adapters') initial weights follow the run's seed
    loaded = task.build_model(config, label_names)
    say("preparing batches")
    data = task.prepare(config, loaded, examples)
    plan = freezing.resolve(loaded.model, config.freeze, loaded.head_paths)
    plan = task.adapt_plan(config, loaded, plan)  # causal_lm: LoRA adapters wrap the model and join the plan
    if plan.trainable_params == 0:
        raise TuneDeskError(
            "the freeze plan leaves no parameter to train",
            "train at least the head (preset head_only) or unfreeze some layers",
        )
    freezing.apply(loaded.model, plan)
    suggested, why = suggested_learning_rate(
        loaded.family, total_params=plan.total_params, pretrained=loaded.pretrained, task=config.task
    )
    lr = config.hparams.learning_rate or suggested
    if config.hparams.learning_rate:
        why = f"learning rate {lr:g} (set by you; TuneDesk suggests {suggested:g} for this model)"
    head_lr = config.hparams.head_learning_rate
    if head_lr is not None and loaded.head_paths:
        why += f"; the new head trains at {head_lr:g} (set by you)"
    if head_lr is None and config.hparams.learning_rate is None and loaded.pretrained and loaded.head_paths:
        head_lr = suggested_head_learning_rate(lr, config.task)
        # causal_lm with LoRA: "the LoRA adapters train at ... because they start from random weights"
        why += "; " + task.new_params_note.format(lr=head_lr)
    warnings = list(loaded.warnings) + list(data.warnings)
    summary = task.describe_plan(config, plan)
    batch = _choose_batch(config, loaded, plan)
    return PreparedRun(config, task, loaded, data, plan, lr, head_lr, why, summary, warnings, batch)


def _choose_batch(config: RunConfig, loaded: Any, plan: Any) -> Any:
    """Batch size auto: the calibrated batch, split to what the memory estimate fits on a GPU."""
    from tunedesk.engine.devices import select_device, select_precision
    from tunedesk.engine.run.batching import choose_batch, free_gpu_bytes

    if config.hparams.batch_size is not None:
        return choose_batch(config)
    device = select_device(config.device)
    free = free_gpu_bytes(device)
    precision = select_precision(config.precision, device) if free is not None else "fp32"
    return choose_batch(config, loaded.model, plan, free, precision)


def open_store(home: Path | None = None) -> RunStore:
    from tunedesk.engine.store import RunStore

    return RunStore(database_path(home or home_dir()))


def execute(
    config: RunConfig,
    *,
    home: str | os.PathLike[str] | None = None,
    listeners: Iterable[Callable[[Event], None]] = (),
    control: Control | None = None,
    progress: Progress | None = None,
    prepared: PreparedRun | None = None,
    name: str | None = None,
) -> RunResult:
    """Prepare, record and train one run; returns its outcome (failed runs included)."""
    home_path = home_dir(home)
    prep = prepared or prepare(config, progress)
    prep.config = recorded_config(prep.config, home_path)
    store = open_store(home_path)
    try:
        run_id = store.create_run(
            config=prep.config,
            resolved=resolved_facts(prep),
            name=name or prep.config.name or f"{Path(prep.loaded.path).name} on {prep.data.name}",
            task=prep.config.task,
            model_name=prep.config.model.name_or_path,
            model_path=prep.loaded.path,
            model_hash=prep.loaded.fingerprint,
            dataset_name=prep.data.name,
            dataset_hash=prep.data.fingerprint,
            dataset_version=prep.config.data.dataset_version,
            trainable_names=prep.plan.trainable_names,
            trainable_params=prep.plan.trainable_params,
            total_params=prep.plan.total_params,
            freeze_summary=prep.freeze_summary,
            output_dir="",
            device=prep.config.device,
            precision=prep.config.precision,
        )
        output_dir = (
            Path(prep.config.output_dir) if prep.config.output_dir else runs_dir(home_path) / f"run-{run_id:05d}"
        )
        output_dir.mkdir(parents=True, exist_ok=True)
        store.update_run(run_id, output_dir=str(output_dir))
    finally:
        store.close()
    (output_dir / "config.json").write_text(prep.config.to_json() + "\n", encoding="utf-8")
    return _train(prep, run_id, output_dir, home_path, listeners, control, resume_from=None)


def resume(
    run_id: int,
    *,
    home: str | os.PathLike[str] | None = None,
    listeners: Iterable[Callable[[Event], None]] = (),
    control: Control | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Continue a stopped or interrupted run from its last checkpoint, in the same run record."""
    home_path = home_dir(home)
    store = open_store(home_path)
    try:
        store.mark_interrupted()
        run = store.get_run(run_id)
        if run["status"] not in ("stopped", "interrupted", "failed"):
            raise TuneDeskError(
                f"run {run_id} is {run['status']}, so there is nothing to resume",
                "only stopped, interrupted or failed runs can be resumed",
            )
        checkpoints = store.checkpoints(run_id)
        if "last" not in checkpoints:
            raise TuneDeskError(f"run {run_id} has no resumable checkpoint", "start it again with `tunedesk train`")
        config = RunConfig.from_dict(run_config(run))
        facts = resolved(run)
        last = Path(checkpoints["last"]["path"])
        output_dir = Path(run["output_dir"])
    finally:
        store.close()
    prep = prepare(config, progress)
    if facts.trainable_names and facts.trainable_names != prep.plan.trainable_names:
        raise TuneDeskError(
            f"run {run_id}'s model no longer resolves to the same trainable parameters",
            "the model files changed since the run; start a new run instead",
        )
    if facts.learning_rate is not None:  # the rates the run trained at, not today's suggestion
        prep.learning_rate = facts.learning_rate
        prep.head_learning_rate = facts.head_learning_rate
    store = open_store(home_path)
    try:
        step = _last_step(last)
        store.truncate_metrics_after(run_id, step)
        store.set_status(run_id, "queued")
    finally:
        store.close()
    return _train(prep, run_id, output_dir, home_path, listeners, control, resume_from=last)


def _last_step(folder: Path) -> int:
    import torch

    from tunedesk.engine.run.checkpoint import STATE_FILE

    try:
        payload = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        return int(payload["state"]["step"])
    except Exception as exc:
        raise TuneDeskError(f"the checkpoint in {folder} is unreadable", "start the run again") from exc


def resolved_facts(prep: PreparedRun) -> ResolvedRun:
    """What this run resolved at its start, recorded once with it."""
    return ResolvedRun(
        learning_rate=prep.learning_rate,
        head_learning_rate=prep.head_learning_rate,
        lr_explanation=prep.lr_explanation,
        label_names=list(prep.data.label_names),
        head_paths=list(prep.loaded.head_paths),
        trainable_names=list(prep.plan.trainable_names),
        architecture=prep.loaded.architecture,
        family=prep.loaded.family,
        pretrained=prep.loaded.pretrained,
        model_kind=prep.loaded.kind,  # hf, torchvision or timm (a timm folder may be named with source hf)
        chat=prep.task.chat,
        best_metric=prep.task.primary_metric,
        batch_size=prep.batch.batch_size if prep.batch is not None else None,
        grad_accum_steps=prep.batch.grad_accum_steps if prep.batch is not None else None,
        batch_explanation=prep.batch.explanation if prep.batch is not None else None,
    )


def _tensorboard_writer(prep: PreparedRun, output_dir: Path) -> Any:
    """The run's TensorBoard listener when the setting (or, left empty, an installed tensorboard) asks for one."""
    from tunedesk.engine.run import tensorboard

    if not tensorboard.enabled(prep.config.tensorboard):
        return None
    plan = tensorboard.plan_text(
        prep.freeze_summary, prep.plan.trainable_names, prep.plan.trainable_params, prep.plan.total_params
    )
    try:
        return tensorboard.run_writer(output_dir, prep.config.to_dict(), resolved_facts(prep), plan)
    except OSError as exc:  # an unwritable folder must not stop the run: it only loses the event files
        import logging

        logging.getLogger("tunedesk").warning("no TensorBoard files for this run: %s", exc)
        return None


def _train(
    prep: PreparedRun,
    run_id: int,
    output_dir: Path,
    home: Path,
    listeners: Iterable[Callable[[Event], None]],
    control: Control | None,
    resume_from: Path | None,
) -> RunResult:
    from tunedesk.engine.run.recorder import RunRecorder
    from tunedesk.engine.run.training import Trainer

    recorder = RunRecorder(database_path(home), run_id, best_metric=prep.task.primary_metric)
    board = _tensorboard_writer(prep, output_dir)
    bus = EventBus(recorder, *listeners, *([board.on_event] if board is not None else []))
    finished: RunFinished
    try:
        trainer = Trainer(
            prep.config,
            prep.task,
            prep.loaded,
            prep.data,
            prep.plan,
            output_dir,
            bus,
            control,
            run_id=run_id,
            learning_rate=prep.learning_rate,
            head_learning_rate=prep.head_learning_rate,
            resume_from=resume_from,
            cache_dir=home / "cache",
            batch=prep.batch,
        )
        finished = trainer.run()
    finally:
        recorder.close()
        if board is not None:
            board.close()
    return RunResult(
        run_id,
        finished.status,
        dict(finished.final_metrics),
        finished.best_metric,
        finished.samples_per_second,
        str(output_dir),
        finished.reason,
        finished.hint,
        finished.duration,
        finished.summary,
    )
