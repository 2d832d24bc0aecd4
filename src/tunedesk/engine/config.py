"""The run configuration: one typed, validated, serialisable object.

Validation happens before any work starts and names the field and the fix, e.g.
``hparams.learning_rate must be > 0 (got -0.0001)``. Files may be JSON or TOML.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunedesk.engine import toml_writer
from tunedesk.engine.config_checks import (  # noqa: F401 - names other modules import from config
    ATTENTION_CHOICES,
    AUTO_BATCH,
    KERNEL_CHOICES,
    PRECISIONS,
    SCHEDULES,
    _check,
    _finite,
    _positive_or_none,
    check_hparams,
    field_hint,
)
from tunedesk.engine.errors import ConfigError

MODEL_SOURCES = ("hf", "torchvision", "timm")
DATA_KINDS = ("text_table", "image_folder", "image_table", "dataset_version", "text_corpus", "chat_jsonl")
PRESETS = ("all", "head_only", "last_n_blocks", "none")
LORA_PRESETS = ("none", "attention", "all_linear")  # which linear layers get a LoRA adapter before the rules
LAST_ATTENTION = "@attention:last:"  # LoRA rule token: the attention projections of the last N blocks
BASE_BITS = (4, 8)  # freeze.lora.base_bits: the frozen base quantised by bitsandbytes (QLoRA)
CONFIG_VERSION = 1


@dataclass
class ModelSpec:
    """Which pre-trained model to start from. ``name_or_path``: a folder, an HF cache id
    (``org/name``), an installed model package, a torchvision architecture name, or (``source = "timm"``)
    a timm model folder or cached ``timm/...`` id; a timm folder given with ``source = "hf"`` is recognised too."""

    name_or_path: str = ""
    source: str = "hf"
    weights: str | None = None  # torchvision: a local .safetensors / .pth file
    pretrained: bool = True  # False trains the same architecture from random weights
    trust_remote_code: bool = False


@dataclass
class DataSpec:
    kind: str = "text_table"  # text_table: CSV/TSV/JSONL, Parquet/Arrow or a Hugging Face datasets cache folder
    path: str = ""
    text_column: str = "text"
    label_column: str = "label"
    image_column: str = "image"  # image_table: a Parquet/Arrow column of image bytes (or file names)
    encoding: str | None = None  # None: detect
    dataset_version: str | None = None  # kind == dataset_version: the stored version id
    val_fraction: float = 0.2
    max_items: int | None = None


@dataclass
class FreezeRule:
    """Train (or freeze) every parameter whose module path matches ``pattern``.

    Patterns are globs over dotted module paths (``encoder.layer.1*``); a pattern also matches
    everything below the module it names. Tokens: ``@head`` (the new task head), ``@embeddings``,
    ``@norms``, ``@block:N`` (N-th repeated block, negative from the end).
    """

    pattern: str
    train: bool


@dataclass
class LoraRule:
    """Give (``lora=True``) or deny (``lora=False``) a LoRA adapter to the linear layers under ``pattern``.

    Patterns are the freeze rules' globs and tokens (``@block:N``) plus ``@attention``, ``@linear`` and
    ``@attention:last:N`` (the attention projections of the last N blocks).
    ``rank``/``alpha``/``dropout`` left empty take the LoraSpec's values. Last matching rule wins.
    """

    pattern: str
    lora: bool = True
    rank: int | None = None
    alpha: float | None = None
    dropout: float | None = None


@dataclass
class LoraSpec:
    """LoRA adapters (causal_lm). Applied after the freeze plan, only to layers the plan leaves frozen:
    a layer the plan trains keeps training fully. See tunedesk.engine.lm.lora."""

    preset: str = "none"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    rules: list[LoraRule] = field(default_factory=list)
    # None: the frozen base in the training dtype; 4: NF4 with double quantisation (QLoRA), 8: int8
    # (bitsandbytes, CUDA only; see tunedesk.engine.lm.quant)
    base_bits: int | None = None

    @property
    def active(self) -> bool:
        return self.preset != "none" or any(r.lora for r in self.rules)

    @property
    def quantised(self) -> bool:
        return self.base_bits is not None


@dataclass
class FreezeSpec:
    preset: str = "all"
    last_n: int = 2
    rules: list[FreezeRule] = field(default_factory=list)
    train_batchnorm_stats: bool = False
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    lora: LoraSpec = field(default_factory=LoraSpec)


@dataclass
class HyperParams:
    # None ("auto"): train until the validation metric stops improving, within a budget from the data size
    epochs: int | None = None
    # None ("auto"): AUTO_BATCH, or the largest batch the memory estimate says fits (gradient accumulation
    # makes up the rest); an out-of-memory step halves it and doubles the accumulation
    batch_size: int | None = None
    learning_rate: float | None = None  # None: the family's suggested fine-tuning rate
    head_learning_rate: float | None = None  # None: the new head trains at learning_rate too
    weight_decay: float = 0.01
    # auto: "plateau" when the length is auto (or early stopping is on), "cosine" for a fixed number of epochs.
    # plateau: warm-up, then constant; halved after each evaluation that does not improve the metric
    schedule: str = "auto"
    warmup_ratio: float = 0.1
    grad_accum_steps: int = 1
    max_grad_norm: float | None = 1.0
    max_length: int = 128
    # texts: batches of similar length (less padding to compute), drawn from shuffled pools of 4 steps
    group_by_length: bool = True
    image_size: int = 224
    log_every: int = 10
    max_steps: int | None = None
    # A resumable checkpoint mid-epoch every N optimizer steps and/or every N minutes (besides each epoch's
    # end and a stop); empty / 0 switches that one off. The default protects runs longer than 10 minutes.
    checkpoint_every_steps: int | None = None
    checkpoint_every_minutes: float = 10.0
    num_workers: int | None = None  # input workers; None: chosen from the machine (devices.input_workers)
    augment: bool = True  # images: random crops and flips in training (off: a frozen prefix is cached for training too)
    feature_cache: bool = True  # compute a frozen prefix's outputs once and train the rest from them
    cuda_graph: bool = True  # training from cached features on a GPU: each step replayed as one CUDA graph
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    prompts: list[str] = field(default_factory=list)  # causal_lm: sample generations at each evaluation
    sample_max_new_tokens: int = 48
    # causal_lm speed and memory (tunedesk.engine.lm.kernels, lm.packing): "auto" follows what was
    # measured on the GPU, "on"/"off" force it
    fused_loss: str = "auto"  # chunked cross-entropy: the vocabulary's logits never held whole
    fused_kernels: str = "auto"  # liger-kernel's fused RMSNorm / SwiGLU / RoPE (optional extra)
    attention: str = "auto"  # transformers' attn_implementation; auto: its default (SDPA where supported)
    packing: bool = False  # chat: several conversations per row, no attention across them
    early_stopping: bool | None = None  # None: on when epochs is auto, off for a fixed number of epochs
    patience: int = 2  # evaluations without improvement before early stopping ends the run (docs/benchmarks.md)
    min_delta: float = 0.0  # the least change of the validation metric that counts as an improvement
    auto_min_steps: int = 600  # auto length: the budget holds at least this many optimizer steps ...
    auto_max_epochs: int = 20  # ... and at most this many epochs (at least 3)


@dataclass
class RunConfig:
    task: str = "text_classification"
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    freeze: FreezeSpec = field(default_factory=FreezeSpec)
    hparams: HyperParams = field(default_factory=HyperParams)
    name: str = ""
    device: str = "auto"
    precision: str = "auto"
    seed: int = 42
    output_dir: str | None = None
    tensorboard: bool | None = None  # event files in the run folder; None: when tensorboard is installed
    version: int = CONFIG_VERSION

    # ---- validation ---------------------------------------------------------------------------

    def validate(self) -> RunConfig:
        """Raise ConfigError on the first invalid or incompatible value; return self.

        Whether ``task`` names a registered task is checked where the task is looked up (``tasks.get``).
        """
        _check(bool(self.task), "task", "is empty", "use text_classification, image_classification or causal_lm")
        m = self.model
        _check(bool(m.name_or_path), "model.name_or_path", "is empty", "choose a model folder or name")
        _check(
            m.source in MODEL_SOURCES, "model.source", f"must be one of {', '.join(MODEL_SOURCES)} (got {m.source!r})"
        )
        if m.source in ("torchvision", "timm") and self.task != "image_classification":
            raise ConfigError(
                "model.source",
                f"{m.source!r} only supports image_classification (task is {self.task!r})",
                "pick a Hugging Face model for text tasks",
            )
        d = self.data
        _check(d.kind in DATA_KINDS, "data.kind", f"must be one of {', '.join(DATA_KINDS)} (got {d.kind!r})")
        if d.kind == "dataset_version":
            _check(
                bool(d.dataset_version), "data.dataset_version", "is empty", "give the id of a saved data set version"
            )
        else:
            _check(bool(d.path), "data.path", "is empty", "point it at your data file or folder")
        if self.task == "image_classification":
            _check(
                d.kind in ("image_folder", "image_table", "dataset_version"),
                "data.kind",
                f"must be image_folder or image_table for image_classification (got {d.kind!r})",
                "image_folder: one sub-folder of images per class; image_table: a Parquet file (or Hugging Face "
                "data set folder) with an image column and a label column",
            )
        if self.task == "text_classification":
            _check(
                d.kind in ("text_table", "dataset_version"),
                "data.kind",
                f"must be text_table for text_classification (got {d.kind!r})",
            )
        if self.task == "causal_lm":
            _check(
                d.kind in ("text_corpus", "chat_jsonl", "dataset_version"),
                "data.kind",
                f"must be text_corpus, chat_jsonl or dataset_version for causal_lm (got {d.kind!r})",
                "text_corpus: a .txt file or folder of .txt files; chat_jsonl: a JSONL file of conversations; "
                "dataset_version: a corpus or chat version saved in the Datasets area",
            )
        _check(
            0.0 < d.val_fraction < 1.0,
            "data.val_fraction",
            f"must be between 0 and 1 (got {d.val_fraction})",
            "0.2 keeps a fifth of the data for validation",
        )
        _positive_or_none(d.max_items, "data.max_items")
        f = self.freeze
        _check(f.preset in PRESETS, "freeze.preset", f"must be one of {', '.join(PRESETS)} (got {f.preset!r})")
        _check(
            isinstance(f.last_n, int) and f.last_n >= 0,
            "freeze.last_n",
            f"must be a whole number >= 0 (got {f.last_n!r})",
        )
        for pattern, mult in f.lr_multipliers.items():
            _check(_finite(mult) and mult > 0, f"freeze.lr_multipliers[{pattern!r}]", f"must be > 0 (got {mult})")
        _validate_lora(f.lora, self.task)
        h = self.hparams
        check_hparams(h)
        if h.packing and self.task != "causal_lm":
            raise ConfigError(
                "hparams.packing",
                f"packs conversations for causal_lm only (task is {self.task!r})",
                "switch packing off",
            )
        if self.freeze.lora.quantised and self.device == "cpu":
            raise ConfigError(
                "freeze.lora.base_bits",
                f"a {self.freeze.lora.base_bits}-bit base needs a CUDA GPU (device is cpu)",
                "set device to auto or cuda, or leave base_bits out to train LoRA on the CPU",
            )
        _check(
            self.precision in PRECISIONS,
            "precision",
            f"must be one of {', '.join(PRECISIONS)} (got {self.precision!r})",
        )
        dev = self.device
        _check(
            dev in ("auto", "cpu", "cuda", "mps") or dev.startswith("cuda:"),
            "device",
            f"must be auto, cpu, cuda, cuda:N or mps (got {dev!r})",
        )
        if dev == "cpu" and self.precision == "fp16":
            raise ConfigError(
                "precision", "fp16 is not supported on the CPU", "use fp32 (or bf16) on the CPU, or pick a GPU"
            )
        if self.tensorboard:
            import importlib.util

            _check(
                importlib.util.find_spec("tensorboard") is not None,
                "tensorboard",
                "is on, but the tensorboard package is not installed",
                "pip install tensorboard  (or pip install 'tunedesk[tensorboard]'), or set tensorboard = false",
            )
        _check(
            isinstance(self.seed, int) and 0 <= self.seed < 2**32,
            "seed",
            f"must be a whole number in [0, 2^32) (got {self.seed!r})",
        )
        return self

    # ---- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        data = _migrate(dict(data))
        try:
            return _build(cls, data, "")
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:  # pragma: no cover - defensive
            raise ConfigError("", f"invalid configuration: {exc}", field_hint("")) from exc

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix.lower() == ".toml":
            data = self.to_dict()
            if data["hparams"].get("max_grad_norm") is None:
                data["hparams"]["max_grad_norm"] = 0.0  # TOML has no null: 0 means no clipping (absent: 1.0)
            path.write_text(toml_writer.dumps(data, _NESTED), encoding="utf-8")
        else:
            path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(
                "", f"{path} is a folder, not a configuration file", "give the path of a .json or .toml file"
            )
        if not path.is_file():
            raise ConfigError("", f"configuration file not found: {path}", "check the path, or save one from the app")
        if path.suffix.lower() not in (".json", ".toml"):
            raise ConfigError(
                "",
                f"{path.name}: configuration files must be JSON (.json) or TOML (.toml), not {path.suffix or 'a file without a suffix'}",
                "save the settings as .toml (the README has an example) or export them from the app",
            )
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ConfigError("", f"{path} is not UTF-8 text", "save the configuration as UTF-8") from exc
        except OSError as exc:
            from tunedesk.engine.errors import os_error

            raise os_error(exc, path, "the configuration file", "check the file's permissions") from None
        try:
            data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(
                "",
                f"{path} is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {exc}",
                "fix the syntax error at the position shown",
            ) from exc
        if not isinstance(data, dict):
            raise ConfigError(
                "", f"{path} must hold an object of settings", "start from the example configuration in the README"
            )
        config = cls.from_dict(data)
        # Relative data and model paths are relative to the configuration file.
        base = path.resolve().parent
        if config.data.path and not Path(config.data.path).is_absolute() and (base / config.data.path).exists():
            config.data.path = str(base / config.data.path)
        if (
            config.model.name_or_path
            and not Path(config.model.name_or_path).is_absolute()
            and (base / config.model.name_or_path).exists()
        ):
            config.model.name_or_path = str(base / config.model.name_or_path)
        return config


# ---- helpers ----------------------------------------------------------------------------------


def _validate_lora(spec: LoraSpec, task: str) -> None:
    _check(
        spec.preset in LORA_PRESETS,
        "freeze.lora.preset",
        f"must be one of {', '.join(LORA_PRESETS)} (got {spec.preset!r})",
    )
    if spec.active and task != "causal_lm":
        raise ConfigError(
            "freeze.lora",
            f"LoRA adapters are only available for causal_lm (task is {task!r})",
            "set freeze.lora.preset to none and remove the LoRA rules, or freeze layers instead",
        )
    if spec.base_bits is not None:
        _check(
            spec.base_bits in BASE_BITS and not isinstance(spec.base_bits, bool),
            "freeze.lora.base_bits",
            f"must be 4 or 8, or left out for the training precision (got {spec.base_bits!r})",
            "4 (QLoRA, NF4) saves the most memory",
        )
        _check(
            spec.active,
            "freeze.lora.base_bits",
            f"quantises the frozen base to {spec.base_bits} bits, but no layer gets a LoRA adapter, so nothing "
            "would train",
            "pick a LoRA preset (attention or all_linear), or leave base_bits out",
        )
    checks: list[tuple[str, Any, Any, Any, bool]]  # as read from the file: checked below
    checks = [("", spec.rank, spec.alpha, spec.dropout, False)]
    checks += [(f"rules[{i}].", r.rank, r.alpha, r.dropout, True) for i, r in enumerate(spec.rules)]
    for i, r in enumerate(spec.rules):
        _check(
            isinstance(r.pattern, str) and bool(r.pattern.strip()),
            f"freeze.lora.rules[{i}].pattern",
            "is empty",
            "name a module path glob like 'model.layers.*.self_attn' or @attention, @linear, @block:N",
        )
    for where, rank, alpha, dropout, optional in checks:
        if not (optional and rank is None):
            _check(
                isinstance(rank, int) and not isinstance(rank, bool) and 1 <= rank <= 4096,
                f"freeze.lora.{where}rank",
                f"must be a whole number between 1 and 4096 (got {rank!r})",
                "8 or 16 suits most fine-tuning",
            )
        if not (optional and alpha is None):
            _check(
                _finite(alpha) and alpha > 0,
                f"freeze.lora.{where}alpha",
                f"must be > 0 (got {alpha!r})",
                "twice the rank is a common choice",
            )
        if not (optional and dropout is None):
            _check(
                _finite(dropout) and 0 <= dropout < 1,
                f"freeze.lora.{where}dropout",
                f"must be in [0, 1) (got {dropout!r})",
                "0.05 is a common choice",
            )


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    version = data.get("version", CONFIG_VERSION)
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise ConfigError(
            "version", f"{version!r} is newer than this TuneDesk understands ({CONFIG_VERSION})", "update TuneDesk"
        )
    data["version"] = CONFIG_VERSION
    return data


AUTO_FIELDS = ("epochs", "batch_size")  # hparams that accept "auto" (stored as empty)
_NESTED = {"model": ModelSpec, "data": DataSpec, "freeze": FreezeSpec, "hparams": HyperParams}


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(
            prefix.rstrip("."),
            "must be a table/object of settings",
            f"write [{prefix.rstrip('.') or 'settings'}] as a TOML table or a JSON object",
        )
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            prefix + unknown[0], "is not a known setting", f"known settings here: {', '.join(sorted(names))}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if cls is RunConfig and key in _NESTED:
            kwargs[key] = _build(_NESTED[key], value, f"{key}.")
        elif cls is FreezeSpec and key == "rules":
            if not isinstance(value, list):
                raise ConfigError(
                    "freeze.rules", "must be a list of {pattern, train} entries", field_hint("freeze.rules")
                )
            rules = []
            for i, rule in enumerate(value):
                if isinstance(rule, FreezeRule):
                    rules.append(rule)
                    continue
                if (
                    not isinstance(rule, dict)
                    or not isinstance(rule.get("pattern"), str)
                    or not isinstance(rule.get("train"), bool)
                ):
                    raise ConfigError(
                        f"freeze.rules[{i}]",
                        "must have a text 'pattern' and a true/false 'train'",
                        field_hint("freeze.rules"),
                    )
                rules.append(FreezeRule(rule["pattern"], rule["train"]))
            kwargs[key] = rules
        elif cls is FreezeSpec and key == "lora":
            kwargs[key] = value if isinstance(value, LoraSpec) else _build(LoraSpec, value, "freeze.lora.")
        elif cls is LoraSpec and key == "rules":
            if not isinstance(value, list):
                raise ConfigError(
                    "freeze.lora.rules",
                    "must be a list of {pattern, lora, rank, alpha, dropout} entries",
                    field_hint("freeze.lora"),
                )
            kwargs[key] = [
                r if isinstance(r, LoraRule) else _build(LoraRule, r, f"freeze.lora.rules[{i}].")
                for i, r in enumerate(value)
            ]
        elif cls is HyperParams and key in AUTO_FIELDS and isinstance(value, str) and value.strip().lower() == "auto":
            kwargs[key] = None  # "auto" in a file is the empty value
        else:
            kwargs[key] = _coerce(value, names[key], prefix + key)
    return cls(**kwargs)


def _coerce(value: Any, f: dataclasses.Field, name: str) -> Any:
    """Accept what TOML/JSON give for a field and refuse what is clearly the wrong type."""
    annotation = str(f.type)
    if value is None:
        if "None" in annotation:
            return None
        raise ConfigError(name, "must not be empty", field_hint(name))
    if annotation.startswith("float") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation.startswith("int") and isinstance(value, float) and value.is_integer():
        return int(value)
    if annotation.startswith("int") and isinstance(value, float):
        raise ConfigError(name, f"must be a whole number (got {value!r})", field_hint(name))
    if annotation.startswith(("int", "float")) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(name, f"must be a number (got {value!r})", field_hint(name))
    if annotation.startswith("str") and not isinstance(value, str):
        raise ConfigError(name, f"must be text (got {value!r})", "put the value in quotes")
    if annotation.startswith("bool") and not isinstance(value, bool):
        raise ConfigError(name, f"must be true or false (got {value!r})", "write true or false, without quotes")
    if annotation.startswith("dict") and not isinstance(value, dict):
        raise ConfigError(name, f"must be a table/object (got {value!r})", _SHAPE_HINTS.get(name, field_hint(name)))
    if annotation.startswith("list") and not isinstance(value, list):
        raise ConfigError(name, f"must be a list (got {value!r})", _SHAPE_HINTS.get(name, field_hint(name)))
    return value


_SHAPE_HINTS = {  # dict / list settings written as something else
    "freeze.lr_multipliers": 'a layer pattern and its factor, e.g. {"encoder.*": 0.1} (JSON) or '
    '[freeze.lr_multipliers] "encoder.*" = 0.1 (TOML)',
    "hparams.prompts": 'a list of texts, e.g. ["Write a short reply to a late delivery"], or an empty list',
}
