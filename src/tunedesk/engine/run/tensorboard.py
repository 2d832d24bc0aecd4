"""TensorBoard event files for runs: written live during a run, or afterwards from the run history.

A run writes ``<run folder>/tensorboard/`` when ``RunConfig.tensorboard`` is true, or when it is left
empty (the default) and the ``tensorboard`` package is installed: ``tensorboard --logdir <home>/runs``
then shows every run. Logged: ``train/loss``, ``train/learning_rate`` and ``train/samples_per_second``
at the logging cadence, every evaluation metric as ``val/<name>`` (``train/<name>`` for training
ones), the hyperparameters (HParams tab) and the freeze plan and configuration as text.
``export_run`` writes the same from a past run's recorded history (``tunedesk runs export ID DIR
--format tensorboard``).

The writer is torch's ``SummaryWriter`` (event files through tensorboard's own protobufs); it is an
event listener, so the loop only pays a dictionary lookup and a buffered write per logged step.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from tunedesk.engine.errors import ConfigError, TuneDeskError
from tunedesk.engine.run.events import EpochEnded, Event, RunFinished, RunStarted, StepLogged
from tunedesk.engine.store.history import run_config
from tunedesk.engine.store.resolved import RESOLVED_KEY, ResolvedRun, resolved

FOLDER = "tensorboard"
HINT = "pip install tensorboard  (or pip install 'tunedesk[tensorboard]')"
_STEP_SCALARS = (("loss", "train/loss"), ("learning_rate", "train/learning_rate"))


def available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def enabled(setting: bool | None) -> bool:
    """Whether a run writes event files: the setting, or (left empty) whether tensorboard is installed."""
    if setting is None:
        return available()
    if setting and not available():
        raise ConfigError("tensorboard", "is on, but the tensorboard package is not installed", HINT)
    return bool(setting)


def metric_tag(name: str) -> str:
    """``val_accuracy`` -> ``val/accuracy``; ``train_loss`` -> ``train/loss``; others under ``val/``."""
    for prefix in ("val_", "train_"):
        if name.startswith(prefix):
            return f"{prefix[:-1]}/{name[len(prefix) :]}"
    return f"val/{name}"


def hparams_of(config: dict[str, Any], facts: ResolvedRun) -> dict[str, Any]:
    """Flat hyperparameters for the HParams tab (numbers, text and booleans only)."""
    h = config.get("hparams") or {}
    f = config.get("freeze") or {}
    out: dict[str, Any] = {
        "task": config.get("task"),
        "model": (config.get("model") or {}).get("name_or_path"),
        "freeze_preset": f.get("preset"),
        "last_n": f.get("last_n"),
        "learning_rate": facts.learning_rate if facts.learning_rate is not None else h.get("learning_rate"),
        "head_learning_rate": (
            facts.head_learning_rate if facts.head_learning_rate is not None else h.get("head_learning_rate")
        ),
        "epochs": h.get("epochs"),
        "batch_size": h.get("batch_size"),
        "weight_decay": h.get("weight_decay"),
        "schedule": h.get("schedule"),
        "warmup_ratio": h.get("warmup_ratio"),
        "precision": config.get("precision"),
        "seed": config.get("seed"),
    }
    lora = f.get("lora") or {}
    if lora.get("preset", "none") != "none" or lora.get("rules"):
        out.update(lora_preset=lora.get("preset"), lora_rank=lora.get("rank"), lora_alpha=lora.get("alpha"))
    return {k: v for k, v in out.items() if isinstance(v, (int, float, str, bool)) and not isinstance(v, type(None))}


def plan_text(summary: str, trainable_names: list[str], trainable: int | None, total: int | None) -> str:
    """The freeze plan as Markdown (TensorBoard's Text tab renders it)."""
    lines = [f"**{summary}**", ""]
    if trainable is not None and total:
        lines += [f"{trainable:,} of {total:,} parameters train ({100 * trainable / total:.2f}%)", ""]
    shown = trainable_names[:200]
    lines += ["Trainable parameters:", ""] + [f"    {n}" for n in shown]
    if len(trainable_names) > len(shown):
        lines.append(f"    ... and {len(trainable_names) - len(shown)} more")
    return "\n".join(lines)


class EventWriter:
    """One run's event files. Use ``on_event`` as a run listener, or the ``write_*`` methods directly."""

    def __init__(self, folder: str | os.PathLike[str], flush_secs: int = 10) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise TuneDeskError("writing TensorBoard files needs the tensorboard package", HINT) from exc
        self.folder = Path(folder)
        self.writer = SummaryWriter(log_dir=str(self.folder), flush_secs=flush_secs)
        self.hparams: dict[str, Any] = {}
        self.last_metrics: dict[str, float] = {}

    # ---- writing ---------------------------------------------------------------------------------------

    def write_text(self, config: dict[str, Any], plan: str) -> None:
        self.writer.add_text("freeze_plan", plan, 0)
        shown = {k: v for k, v in config.items() if k != RESOLVED_KEY}
        self.writer.add_text("config", "    " + json.dumps(shown, indent=2).replace("\n", "\n    "), 0)

    def write_step(self, step: int, values: dict[str, Any]) -> None:
        for key, tag in _STEP_SCALARS:
            value = values.get(key)
            if isinstance(value, (int, float)):
                self.writer.add_scalar(tag, float(value), step)
        sps = values.get("samples_per_second")
        if isinstance(sps, (int, float)) and sps > 0:
            self.writer.add_scalar("train/samples_per_second", float(sps), step)

    def write_evaluation(self, step: int, metrics: dict[str, Any]) -> None:
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(metric_tag(name), float(value), step)
                self.last_metrics[name] = float(value)

    def write_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """The HParams tab's record, in this run's own folder (so it pairs with its curves)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        metric_tags = {metric_tag(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        exp, ssi, sei = hparams_summary(hparams, metric_tags)
        file_writer = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)

    def close(self) -> None:
        self.writer.close()

    # ---- as a run listener -------------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if isinstance(event, StepLogged):
            self.write_step(event.step, {"loss": event.loss, "learning_rate": event.learning_rate,
                                         "samples_per_second": event.samples_per_second})  # fmt: skip
        elif isinstance(event, EpochEnded):
            self.write_evaluation(event.step, event.metrics)
        elif isinstance(event, RunStarted):
            self.writer.add_scalar("run/trainable_params", event.trainable_params, event.start_step)
        elif isinstance(event, RunFinished):
            metrics = dict(self.last_metrics)
            metrics.update({k: v for k, v in event.final_metrics.items() if isinstance(v, (int, float))})
            self.write_hparams(self.hparams, metrics)
            self.close()


def run_writer(output_dir: Path, config: dict[str, Any], facts: ResolvedRun, plan: str) -> EventWriter:
    """The live writer of a run that starts now (or resumes: new events append to the same folder)."""
    writer = EventWriter(output_dir / FOLDER)
    writer.hparams = hparams_of(config, facts)
    writer.write_text(config, plan)
    return writer


def export_run(
    run_id: int, directory: str | os.PathLike[str], home: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """A past run's recorded curves, evaluations, hyperparameters and freeze plan as event files in
    ``directory`` (new or empty)."""
    from tunedesk.engine.paths import database_path, home_dir
    from tunedesk.engine.store import RunStore

    if not available():
        raise TuneDeskError("exporting for TensorBoard needs the tensorboard package, which is not installed", HINT)
    target = Path(directory).expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise TuneDeskError(
            f"{target} is not an empty folder", "choose a new or empty folder, so nothing of yours is overwritten"
        )
    store = RunStore(database_path(home_dir(home)))
    try:
        run = store.get_run(run_id)
        steps = store.step_metrics(run_id)
        evaluations = store.epoch_metrics(run_id)
    finally:
        store.close()
    config = run_config(run)
    facts = resolved(run)
    writer = EventWriter(target)
    try:
        plan = plan_text(
            run.get("freeze_summary") or "",
            list(run.get("trainable_names") or facts.trainable_names or []),
            run.get("trainable_params"),
            run.get("total_params"),
        )
        writer.write_text(config, plan)
        for row in steps:
            writer.write_step(int(row["step"]), row)
        for evaluation in evaluations:
            writer.write_evaluation(int(evaluation["step"]), evaluation["metrics"])
        writer.write_hparams(hparams_of(config, facts), writer.last_metrics)
    finally:
        writer.close()
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    return {"path": str(target), "format": "tensorboard", "files": files, "run_id": run_id, "label_names": []}
