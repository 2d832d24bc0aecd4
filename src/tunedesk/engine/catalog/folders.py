"""One Hugging Face-style model folder (config.json + weights) turned into a ``ModelEntry``."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from tunedesk.engine.catalog import timm
from tunedesk.engine.catalog.entry import ModelEntry
from tunedesk.engine.catalog.params import CountStore, count_config, count_timm
from tunedesk.engine.catalog.weights import BIN_INDEX, SAFE_INDEX, SHARD_RE, inspect_weights

# Order matters: the first fragment found in the architecture name wins; bare "...Model" is last.
_TASKS = (
    ("ForZeroShotImageClassification", "zero_shot_image_classification"),
    ("ForSequenceClassification", "text_classification"),
    ("ForImageClassification", "image_classification"),
    ("ForTokenClassification", "token_classification"),
    ("ForQuestionAnswering", "question_answering"),
    ("ForMultipleChoice", "multiple_choice"),
    ("ForMaskedLM", "fill_mask"),
    ("ForCausalLM", "causal_lm"),
    ("LMHeadModel", "causal_lm"),
    ("DoubleHeadsModel", "causal_lm"),
    ("ForConditionalGeneration", "seq2seq_lm"),
    ("ForSeq2SeqLM", "seq2seq_lm"),
    ("ForAudioClassification", "audio_classification"),
    ("ForCTC", "speech_recognition"),
    ("ForSpeechSeq2Seq", "speech_recognition"),
    ("ForObjectDetection", "object_detection"),
    ("ForSemanticSegmentation", "image_segmentation"),
    ("ForUniversalSegmentation", "image_segmentation"),
    ("ForInstanceSegmentation", "image_segmentation"),
    ("ForDepthEstimation", "depth_estimation"),
    ("ForMaskedImageModeling", "masked_image_modeling"),
    ("ForPreTraining", "pretraining"),
    ("ForNextSentencePrediction", "next_sentence_prediction"),
)

# config_summary key -> the names different model families use for it
_SUMMARY = {
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "intermediate_size": ("intermediate_size", "n_inner", "d_ff", "ffn_dim", "hidden_dim"),
    "vocab_size": ("vocab_size",),
    "max_position_embeddings": ("max_position_embeddings", "n_positions", "n_ctx"),
    "image_size": ("image_size",),
    "patch_size": ("patch_size",),
    "num_channels": ("num_channels",),
    "dtype": ("torch_dtype", "dtype"),
}

MODEL_FILES = {"config.json", SAFE_INDEX, BIN_INDEX, "model.safetensors", "pytorch_model.bin", "adapter_config.json"}


def architecture_of(cfg: dict[str, Any]) -> str | None:
    archs = cfg.get("architectures")
    if isinstance(archs, str):
        return archs or None
    return archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None


def task_of(architecture: str | None) -> str | None:
    """Task from the class name (...ForSequenceClassification -> text_classification, BertModel ->
    feature_extraction): it decides which workflows offer the model first; any encoder can get a new head.
    """
    if not architecture:
        return None
    for fragment, task in _TASKS:
        if fragment in architecture:
            return task
    if architecture.endswith("Model"):
        return "feature_extraction"
    return None


def looks_like_model_folder(names: set[str]) -> bool:
    """A folder with a config.json or Hugging Face weight files (not a random folder of files)."""
    return bool(names & MODEL_FILES) or any(SHARD_RE.match(n) for n in names)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


MAX_CONFIG_BYTES = 16 * 1024 * 1024


def read_config(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            return None, "config.json is not a regular file"
        if st.st_size > MAX_CONFIG_BYTES:
            return None, f"config.json is implausibly large ({st.st_size:,} bytes)"
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if path.is_symlink():
            return None, "config.json is a broken link (its blob is missing)"
        return None, "no config.json"
    except (OSError, UnicodeDecodeError) as exc:
        reason = _reason(exc) if isinstance(exc, OSError) else "not UTF-8 text"
        return None, f"cannot read config.json: {reason}"
    if not text.strip():
        return None, "config.json is empty"
    try:
        data = json.loads(text)
    except ValueError as exc:
        return None, f"config.json is not valid JSON ({exc})"
    if not isinstance(data, dict):
        return None, "config.json does not hold a JSON object"
    return data, None


def _scalar(value: Any) -> bool:
    if isinstance(value, (str, int, float, bool)):
        return True
    return isinstance(value, list) and len(value) <= 4 and all(isinstance(v, (int, float)) for v in value)


def summarise(cfg: dict[str, Any]) -> dict[str, Any]:
    """A few key values; nested text/vision configs (multimodal models) fill what the top lacks."""
    layers = [cfg] + [cfg[k] for k in ("text_config", "vision_config") if isinstance(cfg.get(k), dict)]
    out: dict[str, Any] = {}
    for key, aliases in _SUMMARY.items():
        for layer in layers:
            value = next((layer[a] for a in aliases if a in layer and _scalar(layer[a])), None)
            if value is not None:
                out[key] = value
                break
    if isinstance(cfg.get("num_labels"), int):
        out["num_labels"] = cfg["num_labels"]
    elif isinstance(cfg.get("id2label"), dict):
        out["num_labels"] = len(cfg["id2label"])
    return out


def card_license(card: Path) -> str | None:
    """``license:`` from a model card's YAML front matter (scalar or first list item)."""
    try:
        with card.open("r", encoding="utf-8", errors="replace") as fh:
            text = fh.read(65536)
    except OSError:
        return None
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    lines = text[3 : end if end > 0 else len(text)].splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^license:\s*(.*?)\s*$", line)
        if not match:
            continue
        value = match.group(1).strip("'\"")
        if value:
            return value
        items = []
        for follow in lines[i + 1 :]:
            item = re.match(r"^\s*-\s*(.+?)\s*$", follow)
            if not item:
                break
            items.append(item.group(1).strip("'\""))
        return ", ".join(items) or None
    return None


def _describe_timm(
    entry: ModelEntry,
    cfg: dict[str, Any],
    folder: Path,
    count_params: bool,
    store: CountStore | None,
    problems: list[str],
) -> None:
    """A timm folder: architecture by name, always an image classifier, parameters from a meta build."""
    entry.architecture = cfg["architecture"]
    entry.model_type = "timm"
    entry.family = timm.family_of(cfg["architecture"])
    entry.task = "image_classification"
    entry.config_summary = timm.summary(cfg)
    pre: dict[str, Any] = cfg["pretrained_cfg"] if isinstance(cfg.get("pretrained_cfg"), dict) else {}
    if isinstance(pre.get("license"), str):
        entry.license = pre["license"]
    if count_params:
        entry.parameters, count_problem = count_timm(cfg, store)
        if count_problem:
            problems.append(count_problem)


def inspect_folder(
    folder: Path,
    *,
    entry_id: str,
    name: str,
    source: str,
    count_params: bool = True,
    store: CountStore | None = None,
    incomplete: str | None = None,
) -> ModelEntry:
    """Describe a model folder; every failure becomes ``problem`` text.

    ``incomplete`` is a download problem found outside the folder (``*.incomplete`` HF blobs).
    """
    entry = ModelEntry(id=entry_id, name=name, path=str(folder), source=source)
    try:
        names = {e.name for e in os.scandir(folder)}
    except OSError as exc:
        entry.problem = f"cannot read folder: {_reason(exc)}"
        return entry
    problems: list[str] = []
    if "config.json" not in names and "adapter_config.json" in names:
        adapter, _ = read_config(folder / "adapter_config.json")
        base = adapter.get("base_model_name_or_path") if adapter else None
        entry.problem = (
            f"a fine-tuning adapter (adapter_config.json) for {base or 'another model'}, "
            "not a full model: pick its base model"
        )
        if "README.md" in names:
            entry.card_path = str(folder / "README.md")
        return entry
    cfg, cfg_problem = read_config(folder / "config.json")
    if cfg_problem:
        problems.append(cfg_problem)
    weights = inspect_weights(folder, names)
    entry.weight_format = weights.format
    entry.size_bytes = weights.size
    entry.weights_present = weights.present and incomplete is None
    if incomplete:
        problems.append(incomplete)
    for problem in weights.problems:
        if problem == "no weight files":
            if incomplete:
                continue  # the weights are what is still downloading
            if cfg is not None:
                problem = "no weight files (config only)"
        problems.append(problem)
    if cfg is not None and timm.is_timm_config(cfg):
        _describe_timm(entry, cfg, folder, count_params, store, problems)
    elif cfg is not None:
        arch = architecture_of(cfg)
        entry.architecture = arch
        entry.model_type = cfg.get("model_type") if isinstance(cfg.get("model_type"), str) else None
        entry.family = entry.model_type
        entry.task = task_of(arch)
        entry.config_summary = summarise(cfg)
        if isinstance(cfg.get("license"), str):
            entry.license = cfg["license"]
        if count_params:
            entry.parameters, count_problem = count_config(cfg, folder / "config.json", store)
            if count_problem:
                problems.append(count_problem)
    if "README.md" in names:
        card = folder / "README.md"
        entry.card_path = str(card)
        entry.license = card_license(card) or entry.license
    entry.problem = "; ".join(problems) or None
    return entry
