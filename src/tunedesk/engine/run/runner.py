"""One run from a configuration: prepare (validate, data, model, plan), record, train.

Both the CLI and the desktop app's worker call this. Preparation errors are raised as TuneDeskError
before anything is written; once a run exists in the history, every outcome is recorded there by
the single writer (RunRecorder), never by the training loop itself.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tunedesk.engine.config import RunConfig
from tunedesk.engine.defaults import suggested_head_learning_rate, suggested_learning_rate
from tunedesk.engine.errors import DataError, TuneDeskError
from tunedesk.engine.paths import database_path, home_dir, runs_dir
from tunedesk.engine.run.events import Control, Event, EventBus, RunFinished
from tunedesk.engine.store.history import run_config
from tunedesk.engine.store.resolved import ResolvedRun, resolved

if TYPE_CHECKING:  # torch, transformers and the tasks load only when a run is prepared
    from tunedesk.engine.freezing import ResolvedPlan
    from tunedesk.engine.models import LoadedModel
    from tunedesk.engine.run.distributed import DistContext
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
    internal: bool = False  # failed by a bug in TuneDesk, not by the user's data, settings or machine

    @property
    def exit_code(self) -> int:
        """The CLI's exit status: 0 completed or stopped, 1 a bug, 2 anything the user can fix."""
        if self.status in ("completed", "stopped"):
            return 0
        return 1 if self.internal else 2

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
    from tunedesk.engine.devices import select_device, select_precision

    say = progress or (lambda _msg: None)
    config = accept(config)
    select_precision(config.precision, select_device(config.device))  # no GPU, no run record
    task = tasks.get(config.task)
    task.progress = say  # long steps (tokenising millions of texts) say how far they are
    say("reading the data set")
    examples = task.load_examples(config)
    label_names = task.label_names(examples)
    say(f"loading {config.model.name_or_path}")
    import torch

    torch.manual_seed(config.seed)  # the new head's (and adapters') initial weights follow the run's seed
    loaded = task.build_model(config, label_names)
    say("preparing batches")
    data = task.prepare(config, loaded, examples)
    n_train, n_val = len(cast(Sized, data.train)), len(cast(Sized, data.val))  # map-style data sets
    if n_train == 0 or n_val == 0:
        which = "training" if n_train == 0 else "validation"
        raise DataError(
            f"the {which} split is empty ({n_train} training, {n_val} validation examples)",
            "add more examples, or change data.val_fraction so both splits get some",
        )
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
    side = loaded.processor.get("image_size") if isinstance(loaded.processor, dict) else None
    return choose_batch(config, loaded.model, plan, free, precision, image_size=side)


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
    dist: DistContext | None = None,
) -> RunResult:
    """Prepare, record and train one run; returns its outcome (failed runs included)."""
    home_path = home_dir(home)
    prep = prepared or prepare(config, progress)
    prep.config = recorded_config(prep.config, home_path)
    chosen = Path(prep.config.output_dir).expanduser() if prep.config.output_dir else None
    store = open_store(home_path)
    try:
        if chosen is not None:  # checked before the run exists: a refusal leaves no run behind
            check_output_dir(chosen, store)
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
        output_dir = chosen or runs_dir(home_path) / f"run-{run_id:05d}"
        try:
            if chosen is None:
                check_output_dir(output_dir, store)  # a folder left by another history in this home
            _claim_folder(output_dir, prep.config.to_json() + "\n")
        except BaseException:
            store.db.execute("DELETE FROM runs WHERE id = ?", [run_id])
            store.db.conn.commit()
            raise
        store.update_run(run_id, output_dir=str(output_dir))
    finally:
        store.close()
    return _train(prep, run_id, output_dir, home_path, listeners, control, resume_from=None, dist=dist)


def check_output_dir(folder: Path, store: Any = None) -> None:
    """Refuse a folder that holds another run's files, is a file, or cannot be written (no run is created)."""
    if folder.exists() and not folder.is_dir():
        raise TuneDeskError(
            f"output_dir {folder} is a file, not a folder", "set output_dir to a new or empty folder, or leave it empty"
        )
    from tunedesk.engine.store.history import run_files

    theirs = [p.name for p in run_files(folder)] if folder.is_dir() else []
    if theirs:
        owner = ""
        if store is not None:
            rows = store.db.execute("SELECT id FROM runs WHERE output_dir = ?", [str(folder)]).fetchall()
            if rows:
                owner = f" (run {rows[-1][0]})"
        raise TuneDeskError(
            f"output_dir {folder} already holds another run's files{owner}: {', '.join(theirs[:4])}",
            "choose a new or empty folder (or leave output_dir empty for one under TuneDesk's home); "
            "a second run there would overwrite the first run's weights",
        )
    writable_dir(folder, "output_dir")


def writable_dir(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and prove it can be written; a TuneDeskError naming it otherwise."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        from tunedesk.engine.errors import os_error

        raise os_error(exc, folder, what) from None


def _claim_folder(folder: Path, config_json: str) -> None:
    """Write config.json with O_EXCL: of two runs started into one folder at once, one gets it."""
    try:
        with open(folder / "config.json", "x", encoding="utf-8") as fh:
            fh.write(config_json)
    except FileExistsError:
        raise TuneDeskError(
            f"output_dir {folder} was just taken by another run",
            "choose a new or empty folder, or leave output_dir empty",
        ) from None
    except OSError as exc:
        from tunedesk.engine.errors import os_error

        raise os_error(exc, folder, "output_dir") from None


def resume(
    run_id: int,
    *,
    home: str | os.PathLike[str] | None = None,
    listeners: Iterable[Callable[[Event], None]] = (),
    control: Control | None = None,
    progress: Progress | None = None,
    dist: DistContext | None = None,
) -> RunResult:
    """Continue a stopped or interrupted run from its last checkpoint, in the same run record.

    The run is claimed first (a compare-and-set in the history): of two resumes at once, one trains and
    the other gets a TuneDeskError before it loads anything. If preparing fails, the claim is given back.
    """
    home_path = home_dir(home)
    store = open_store(home_path)
    try:
        store.mark_interrupted(run_ids=[run_id])  # its process died (or its pid now names another)
        before = store.get_run(run_id)
        token = store.claim(run_id)
        run = store.get_run(run_id)
    finally:
        store.close()
    try:
        config = RunConfig.from_dict(run_config(run))
        facts = resolved(run)
        output_dir = Path(run["output_dir"])
        last = _resumable_checkpoint(run_id, output_dir)
        prep = prepare(config, progress)
        if facts.trainable_names and facts.trainable_names != prep.plan.trainable_names:
            raise TuneDeskError(
                f"run {run_id}'s model no longer resolves to the same trainable parameters",
                "the model files changed since the run; start a new run instead",
            )
        if facts.learning_rate is not None:  # the rates the run trained at, not today's suggestion
            prep.learning_rate = facts.learning_rate
            prep.head_learning_rate = facts.head_learning_rate
        from tunedesk.engine.run.checkpoint import last_step

        step = last_step(last)
        store = open_store(home_path)
        try:
            store.truncate_metrics_after(run_id, step)
        finally:
            store.close()
    except BaseException:
        store = open_store(home_path)
        try:  # nothing was trained: the run is as it was
            store.release(run_id, token, before)
        finally:
            store.close()
        raise
    return _train(prep, run_id, output_dir, home_path, listeners, control, resume_from=last, dist=dist)


def _resumable_checkpoint(run_id: int, output_dir: Path) -> Path:
    """The run's ``last`` checkpoint, after finishing a swap a crash interrupted; verified on load.

    The folder, not the history's checkpoint row, is the truth: a crash after the swap and before the
    row was written leaves the row one checkpoint behind.
    """
    from tunedesk.engine.run.checkpoint import recover

    recover(output_dir)
    last = output_dir / "last"
    if not last.is_dir():
        raise TuneDeskError(
            f"run {run_id} has no complete resumable checkpoint in {output_dir}",
            "it stopped before its first checkpoint was written; start it again with `tunedesk train`",
        )
    return last


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
    dist: DistContext | None = None,
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
            dist=dist,
        )
        finished = trainer.run()
    finally:
        recorder.close()
        if board is not None:
            board.close()
    result = RunResult(
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
        finished.internal,
    )
    if not recorder.finished:
        # The history could not record how the run ended (disk full, database taken away): say what the
        # history will say (interrupted, once this process is gone), not "completed".
        result.status = "interrupted"
        result.reason = f"the run history could not record the run's end ({recorder.last_error or 'write failed'})"
        result.hint = (
            f"free disk space where the history lives ({database_path(home)}) and check it can be written; "
            f"then `tunedesk runs resume {run_id}` continues from the last checkpoint"
        )
        result.internal = False
    return result
