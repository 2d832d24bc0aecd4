"""The layer tree's engine side: a model on the meta device, its modules as plain nodes, plan edits.

The layer tree shows what a run will train before any weight is loaded: ``build_meta_model`` builds
the same task model the run will build (same class, same new head) on the meta device, where an 8B
model costs no memory and a fraction of a second. ``ModelTree`` turns it into plain Python nodes with
parameter counts, and ``ModelTree.apply(spec)`` recomputes every node's trainable count from a
``FreezeSpec`` through ``freezing.resolve`` (the engine's own resolution, so the tree and the run
cannot disagree). The edit helpers (``toggle``, ``apply_glob``, ``set_preset``, ...) return new
specs: the UI never keeps check state of its own.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from tunedesk.engine import freezing
from tunedesk.engine.config import PRESETS, FreezeRule, FreezeSpec, ModelSpec
from tunedesk.engine.errors import ConfigError, ModelError
from tunedesk.engine.models import LoadedModel, family_of, head_paths_from_missing, heuristic_head_paths

MODIFIER_TOKENS = ("@embeddings", "@norms")
TEXT, IMAGE, CAUSAL = "text_classification", "image_classification", "causal_lm"


# ---- building on the meta device -------------------------------------------------------------------


def build_meta_model(entry_or_path: Any, task: str | None = None, num_labels: int = 2) -> LoadedModel:
    """The model a run would train, on the meta device: no weights read, no memory used.

    ``entry_or_path``: a catalog ``ModelEntry``, a model folder, an installed/cached model name, or a
    torchvision architecture name. The task class follows the entry's task (``feature_extraction``
    and masked-LM checkpoints become sequence classifiers, as TuneDesk trains them); ``task``
    overrides it (``text_classification``, ``image_classification``, ``causal_lm``).
    """
    if num_labels < 1:
        raise ConfigError("num_labels", f"must be >= 1 (got {num_labels})")
    arch, folder, entry_task = _locate(entry_or_path)
    labels = [f"label_{i}" for i in range(num_labels)]
    if folder is None:
        return _build_torchvision(arch, labels)
    from tunedesk.engine.catalog.timm import read_timm_config

    if read_timm_config(folder) is not None:
        return _build_timm(folder, labels)
    from transformers import AutoConfig

    from tunedesk.engine.models import quiet_transformers

    quiet_transformers()
    id2label = dict(enumerate(labels))
    try:
        config = AutoConfig.from_pretrained(
            str(folder),
            local_files_only=True,
            num_labels=num_labels,
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
        )
    except ValueError as exc:
        if "trust_remote_code" in str(exc) or "custom code" in str(exc):
            raise ModelError(
                f"{folder.name} needs its own Python code to build (trust_remote_code)",
                "TuneDesk does not run a model's own code to show its layers",
            ) from exc
        raise ModelError(f"cannot read the configuration of {folder}: {_first_line(exc)}", "check config.json") from exc
    except OSError as exc:
        raise ModelError(f"cannot read the configuration of {folder}: {_first_line(exc)}", "check config.json") from exc
    loaded = build_meta_from_config(config, task=task or _train_task(entry_task, config), path=str(folder))
    missing = _missing_from_checkpoint(loaded.model, folder)
    if missing:
        loaded.head_paths = head_paths_from_missing(missing, loaded.model) or loaded.head_paths
    return loaded


def build_meta_from_config(config: Any, task: str = TEXT, path: str = "") -> LoadedModel:
    """A Hugging Face task model from a config object on the meta device (benchmarks, tests, folders)."""
    import transformers

    from tunedesk.engine.catalog.params import _build_lock, meta_device  # one meta build at a time (import safety)

    autos = {
        TEXT: [transformers.AutoModelForSequenceClassification, transformers.AutoModelForImageClassification],
        IMAGE: [transformers.AutoModelForImageClassification],
        CAUSAL: [transformers.AutoModelForCausalLM],
    }.get(task)
    if autos is None:
        raise ConfigError("task", f"must be one of {TEXT}, {IMAGE}, {CAUSAL} (got {task!r})")
    errors: list[str] = []
    model = None
    with _build_lock:
        for auto in autos:
            try:
                with meta_device():
                    model = auto.from_config(config)
                break
            except (ValueError, KeyError, TypeError, AttributeError, ImportError, NotImplementedError) as exc:
                errors.append(_first_line(exc))
    if model is None:
        kind = getattr(config, "model_type", "?")
        raise ModelError(
            f"TuneDesk cannot build a {task.replace('_', ' ')} model from a {kind!r} configuration "
            f"({errors[0] if errors else 'unknown reason'})",
            "pick a model made for this task (its Models entry shows the task)",
        )
    heads = heuristic_head_paths(model)
    return LoadedModel(
        model=model,
        head_paths=heads,
        family=family_of(config),
        architecture=type(model).__name__,
        path=path,
        pretrained=False,
        kind="hf",
    )


def _build_torchvision(arch: str, labels: list[str]) -> LoadedModel:
    from tunedesk.engine.catalog.params import _build_lock, meta_device
    from tunedesk.engine.models import build_torchvision_classifier

    with _build_lock, meta_device():
        loaded = build_torchvision_classifier(
            ModelSpec(arch, source="torchvision", pretrained=False), labels, device="meta"
        )
    loaded.warnings = []
    return loaded


def _build_timm(folder: Path, labels: list[str]) -> LoadedModel:
    from tunedesk.engine.catalog.params import _build_lock
    from tunedesk.engine.timm_models import build_timm_classifier

    with _build_lock:
        loaded = build_timm_classifier(ModelSpec(str(folder), source="timm", pretrained=False), labels, device="meta")
    loaded.warnings = []
    return loaded


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _locate(entry_or_path: Any) -> tuple[str, Path | None, str | None]:
    """(torchvision architecture or "", Hugging Face folder or None, the catalog's task)."""
    entry_task = None
    if hasattr(entry_or_path, "path") and hasattr(entry_or_path, "model_type"):  # a catalog ModelEntry
        entry = entry_or_path
        entry_task = entry.task
        if entry.model_type == "torchvision":
            if not entry.architecture:
                raise ModelError(
                    f"{entry.name}: {entry.problem or 'the architecture is unknown'}",
                    "rename the file to its torchvision name (e.g. resnet18-...pth)",
                )
            return entry.architecture, None, "image_classification"
        target = Path(entry.path)
        if target.is_file():
            target = target.parent
        if not (target / "config.json").is_file():
            raise ModelError(
                f"{entry.name} cannot be shown: {entry.problem or 'it has no config.json'}",
                "the layer tree needs the model's config.json; check the folder in Models",
            )
        return "", target, entry_task
    text = str(entry_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        from tunedesk.engine.models import resolve_hf_path

        return "", resolve_hf_path(str(path)), entry_task
    if not path.exists() and "/" not in text and os.sep not in text:
        import torchvision

        if text in torchvision.models.list_models(module=torchvision.models):
            return text, None, IMAGE
    from tunedesk.engine.models import resolve_hf_path

    return "", resolve_hf_path(text), entry_task


def _train_task(entry_task: str | None, config: Any) -> str:
    """What TuneDesk trains from a checkpoint of this task (an encoder gets a classification head)."""
    if entry_task in (IMAGE, CAUSAL):
        return entry_task
    if entry_task is None:
        archs = getattr(config, "architectures", None) or []
        arch = archs[0] if archs else ""
        if "ForImageClassification" in arch:
            return IMAGE
        if "ForCausalLM" in arch or "LMHeadModel" in arch:
            return CAUSAL
    return TEXT


def _checkpoint_keys(folder: Path) -> dict[str, list[int] | None] | None:
    """Parameter names (and shapes where cheap) stored in a folder's weights, read from headers only."""
    try:
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            return dict.fromkeys(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
        single = folder / "model.safetensors"
        if single.is_file():
            with single.open("rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                if not 1 < n < (100 << 20):
                    return None
                header = json.loads(fh.read(n))
            return {k: v.get("shape") for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
        index = folder / "pytorch_model.bin.index.json"
        if index.is_file():
            return dict.fromkeys(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return None  # a single pickle: reading its names means unpickling; the heuristic head is used


def _missing_from_checkpoint(model: nn.Module, folder: Path) -> list[str]:
    """Parameters the real load would initialise fresh (missing from, or shaped unlike, the checkpoint)."""
    stored = _checkpoint_keys(folder)
    if not stored:
        return []
    params = dict(model.named_parameters())
    prefix = getattr(model, "base_model_prefix", "") or ""
    if (
        prefix
        and any(n.startswith(prefix + ".") for n in params)
        and not any(k.startswith(prefix + ".") for k in stored)
    ):
        stored = {f"{prefix}.{k}": v for k, v in stored.items()}
    stored = {k.replace(".gamma", ".weight").replace(".beta", ".bias"): v for k, v in stored.items()}
    missing = []
    for name, p in params.items():
        if name not in stored or stored[name] is not None and list(stored[name]) != list(p.shape):
            missing.append(name)
    if len(missing) > len(params) // 2:
        return []  # the checkpoint's naming is not understood here: keep the heuristic head
    return missing


def task_of_model(loaded: LoadedModel) -> str:
    """The task a built model trains for (decides sequence length vs image size in the estimate)."""
    name = type(loaded.model).__name__
    if loaded.kind in ("torchvision", "timm") or "ForImageClassification" in name:
        return IMAGE
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return CAUSAL
    return TEXT


# ---- the tree ----------------------------------------------------------------------------------------


@dataclass(eq=False)
class ModuleNode:
    """One module of the tree. ``trainable`` is derived from the last applied plan, never set by hand."""

    path: str  # "" for the model itself
    name: str
    type: str
    detail: str  # "384 → 1536", "30522 × 384", ...
    own_params: int
    total_params: int
    parent: ModuleNode | None
    row: int
    uid: int
    depth: int
    is_head: bool = False  # the new task head, trained from random weights
    is_block: bool = False
    block_index: int | None = None
    kind: str = ""  # "embedding" | "norm" | "batchnorm" | ""
    spans: list[tuple[int, int]] = field(default_factory=list, repr=False)
    children: list[ModuleNode] = field(default_factory=list, repr=False)
    trainable: int = 0
    adapters: int = 0  # LoRA adapter parameters added under this module (causal LMs with FreezeSpec.lora)
    lora: Any = None  # the LoraTarget when this very layer gets an adapter

    @property
    def state(self) -> int | None:
        """0 frozen, 1 partly trained, 2 trained; None when the module holds no parameters."""
        if not self.total_params:
            return None
        if self.trainable == 0:
            return 0
        return 2 if self.trainable == self.total_params else 1


def _detail(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return f"{module.in_features} → {module.out_features}"
    if isinstance(module, nn.Embedding):
        return f"{module.num_embeddings} × {module.embedding_dim}"
    if isinstance(module, nn.modules.conv._ConvNd):
        k = "×".join(str(x) for x in module.kernel_size)
        return f"{module.in_channels} → {module.out_channels}, {k}"
    if isinstance(module, (nn.LayerNorm,)):
        return "×".join(str(x) for x in module.normalized_shape)
    if isinstance(module, freezing.BN_TYPES):
        return str(module.num_features)
    if isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module):
        return f"{len(module)} items"
    weight = getattr(module, "weight", None)
    if isinstance(weight, nn.Parameter) and weight.ndim == 1:
        return str(weight.shape[0])
    return ""


@dataclass
class PlanSummary:
    trainable: int
    total: int
    share: float
    description: str
    memory: freezing.MemoryEstimate | None = None
    available: int | None = None  # bytes free on the chosen device, None when unknown
    cache: Any = None  # run.feature_cache.CacheEstimate: the frozen prefix computed once (classifiers)

    @property
    def fits(self) -> bool | None:
        return None if self.memory is None else self.memory.fits(self.available)


class ModelTree:
    """A model's module hierarchy as plain nodes, with counts that follow a FreezeSpec."""

    def __init__(self, model: nn.Module, head_paths: Iterable[str] = (), loaded: LoadedModel | None = None) -> None:
        self.loaded = loaded
        self.model = model
        self.head_paths = [h for h in head_paths if h]
        self.task = task_of_model(loaded) if loaded is not None else (TEXT if hasattr(model, "config") else IMAGE)
        self.index = freezing.index_model(model)
        self._cache_traces: dict[tuple[int], Any] = {}  # input size -> the meta trace of the cache estimate
        idx = self.index
        blocks = {p: i for i, p in enumerate(idx.blocks.paths)}
        embeddings = set(idx.embedding_paths)
        norms = set(idx.norm_paths)
        self.nodes: list[ModuleNode] = []
        self.by_path: dict[str, ModuleNode] = {}
        for path, module in idx.modules:
            parent = self.by_path.get(path.rpartition(".")[0]) if path else None
            spans = idx.spans.get(path, [])
            total = sum(sum(idx.sizes[s:e]) for s, e in spans)
            kind = (
                "batchnorm"
                if isinstance(module, freezing.BN_TYPES)
                else "norm"
                if path in norms
                else "embedding"
                if path in embeddings
                else ""
            )
            node = ModuleNode(
                path=path,
                name=path.rpartition(".")[2] if path else type(module).__name__,
                type=type(module).__name__,
                detail=_detail(module),
                own_params=0,
                total_params=total,
                parent=parent,
                row=len(parent.children) if parent else 0,
                uid=len(self.nodes),
                depth=parent.depth + 1 if parent else 0,
                is_head=path in self.head_paths,
                is_block=path in blocks,
                block_index=blocks.get(path),
                kind=kind,
                spans=spans,
            )
            if parent is not None:
                parent.children.append(node)
            self.nodes.append(node)
            self.by_path[path] = node
        for node in self.nodes:
            node.own_params = node.total_params - sum(c.total_params for c in node.children)
        self.root = self.nodes[0]
        self.spec: FreezeSpec | None = None
        self.plan: freezing.ResolvedPlan | None = None
        self.lora_targets: dict[str, Any] = {}

    @classmethod
    def from_loaded(cls, loaded: LoadedModel) -> ModelTree:
        return cls(loaded.model, loaded.head_paths, loaded)

    @property
    def total_params(self) -> int:
        return self.index.total

    @property
    def blocks(self) -> freezing.Blocks:
        return self.index.blocks

    @property
    def has_batchnorm(self) -> bool:
        return any(n.kind == "batchnorm" for n in self.nodes)

    def resolve(self, spec: FreezeSpec) -> freezing.ResolvedPlan:
        return freezing.resolve(self.model, spec, self.head_paths, index=self.index)

    def apply(self, spec: FreezeSpec) -> list[ModuleNode]:
        """Recompute every node's trainable count for ``spec``; return the nodes whose count changed.

        Raises ConfigError (and changes nothing) when the spec does not resolve on this model.
        """
        plan = self.resolve(spec)
        cum = [0]
        acc = 0
        for size, on in zip(self.index.sizes, plan.flags):
            if on:
                acc += size
            cum.append(acc)
        targets = self._lora_targets(spec, plan)
        adapters: dict[str, int] = {}
        if targets:
            from tunedesk.engine.lm import lora

            for path, target in targets.items():
                size = lora.adapter_params(self.model, {path: target})
                parts = path.split(".")
                for i in range(len(parts) + 1):
                    key = ".".join(parts[:i])
                    adapters[key] = adapters.get(key, 0) + size
        changed = []
        for node in self.nodes:
            value = sum(cum[e] - cum[s] for s, e in node.spans)
            extra = adapters.get(node.path, 0)
            target = targets.get(node.path)
            if value != node.trainable or extra != node.adapters or target != node.lora:
                node.trainable, node.adapters, node.lora = value, extra, target
                changed.append(node)
        self.spec = copy.deepcopy(spec)
        self.plan = plan
        self.lora_targets = targets
        return changed

    @property
    def supports_lora(self) -> bool:
        """LoRA adapters are offered for causal language models (as the run configuration allows)."""
        return self.task == CAUSAL

    def _lora_targets(self, spec: FreezeSpec, plan: freezing.ResolvedPlan) -> dict[str, Any]:
        lora_spec = getattr(spec, "lora", None)
        if not self.supports_lora or lora_spec is None or not lora_spec.active:
            return {}
        from tunedesk.engine.lm import lora

        return lora.resolve_targets(self.model, lora_spec, plan)

    def params_under(self, path: str) -> list[int]:
        node = self.by_path.get(path)
        return [i for s, e in (node.spans if node else []) for i in range(s, e)]

    def lr_multipliers(self, spec: FreezeSpec) -> list[float]:
        """Each parameter's learning-rate multiplier (``index.names`` order), as the optimizer groups use them."""
        return freezing.lr_multiplier_for(self.index, spec.lr_multipliers, self.head_paths)

    def summary(
        self,
        *,
        batch_size: int = 16,
        precision: str = "auto",
        sequence_length: int = 128,
        image_size: int = 224,
        device: str = "cpu",
        available: int | None = None,
        gradient_checkpointing: bool = False,
    ) -> PlanSummary:
        """Counts, the plan in words and the training-memory estimate of the last applied plan
        (``gradient_checkpointing``: language models, as the run's switch of that name)."""
        if self.plan is None or self.spec is None:
            raise RuntimeError("apply a FreezeSpec first")
        plan = self.plan
        cuda = device.startswith("cuda")
        if precision == "auto" and not cuda:
            precision = "fp32"
        if self.supports_lora:  # a causal LM: adapters train too (and change what autograd keeps), checkpointing
            from tunedesk.engine.lm import lora

            extra = self.root.adapters if self.lora_targets else 0
            memory = lora.estimate_memory(
                self.model,
                self.spec,
                batch_size=batch_size,
                precision=precision,
                sequence_length=sequence_length,
                cuda=cuda,
                head_paths=self.head_paths,
                gradient_checkpointing=gradient_checkpointing,
            )
            trainable, total = plan.trainable_params + extra, plan.total_params + extra
            return PlanSummary(
                trainable,
                total,
                trainable / total if total else 0.0,
                lora.describe(self.spec, plan, self.lora_targets),
                memory,
                available,
            )
        memory = freezing.estimate_memory(
            self.model,
            plan,
            batch_size=batch_size,
            precision=precision,
            sequence_length=sequence_length,
            image_size=image_size,
            cuda=cuda,
        )
        return PlanSummary(
            plan.trainable_params,
            plan.total_params,
            plan.share,
            freezing.describe(self.spec, plan),
            memory,
            available,
            self.cache_estimate(plan, sequence_length, image_size, 2 if cuda and precision != "fp32" else 4),
        )

    def cache_estimate(self, plan: freezing.ResolvedPlan, sequence_length: int, image_size: int, feature_bytes: int):
        """The frozen-prefix feature cache this plan would use (size per example, expected epoch speed-up),
        from one meta-device trace per input size; None where it does not apply."""
        from tunedesk.engine.run import feature_cache

        if self.task not in (TEXT, IMAGE):
            return None
        key = (sequence_length,) if self.task == TEXT else (image_size,)
        if key not in self._cache_traces:
            self._cache_traces[key] = feature_cache.trace_calls(
                self.model, self.task == TEXT, sequence_length, image_size
            )
        calls = self._cache_traces[key]
        return (
            None
            if calls is None
            else feature_cache.estimate(calls, plan.trainable, feature_bytes, self.index.blocks.paths)
        )


# ---- plan edits (each returns a new FreezeSpec) -----------------------------------------------------------


def _copy(spec: FreezeSpec) -> FreezeSpec:
    return copy.deepcopy(spec)


def _append_rule(tree: ModelTree, spec: FreezeSpec, rule: FreezeRule, under: list[int]) -> FreezeSpec:
    new = _copy(spec)
    rules = freezing.normalise_rules(list(new.rules) + [rule])
    without = [r for r in rules if r is not rule]
    if len(without) != len(rules) and under:
        base = freezing.resolve_flags(tree.index, FreezeSpec(new.preset, new.last_n, without), tree.head_paths)
        if all(base[i] == rule.train for i in under):
            rules = without  # the plan already does this: the click only removed the edits it shadowed
    new.rules = rules
    return new


def toggle(tree: ModelTree, spec: FreezeSpec, path: str, train: bool) -> FreezeSpec:
    """The plan after ticking (``train``) or unticking one module in the tree.

    Appends an exact-path rule, drops the rules it makes irrelevant, and drops the new rule too when
    the plan already gave that result. The model's own row sets the preset (everything / nothing).
    """
    if path == "":
        new = _copy(spec)
        new.preset = "all" if train else "none"
        new.rules = []
        return new
    if path not in tree.by_path:
        raise ConfigError("freeze.rules", f"{path!r} is not a module of this model", "pick a module from the tree")
    return _append_rule(tree, spec, FreezeRule(path, bool(train)), tree.params_under(path))


def glob_for(text: str, tree: ModelTree | None = None) -> str:
    """The rule pattern for what the user typed in the filter box.

    A word matches anywhere (``attention`` -> ``*attention*``); a glob is taken as typed, except that
    one matching nothing from the start of the path (``layer.1*``) may match further in (``*layer.1*``).
    """
    text = text.strip()
    if not text or text.startswith("@"):
        return text
    if not freezing.is_glob(text):
        return f"*{text}*"
    if tree is not None and not text.startswith("*") and not tree.index.glob(text):
        return f"*{text}"
    return text


def matching_nodes(tree: ModelTree, pattern: str, outermost: bool = False) -> list[ModuleNode]:
    """Modules whose path, or one of whose own parameters' names, matches a glob (the filter box).

    ``outermost``: only matches that are not inside another match (``attention``, not also
    ``attention.self.query``), for counting and highlighting.
    """
    if not pattern:
        return []
    match = freezing.compile_pattern(pattern)
    owners = {name.rpartition(".")[0] for name in tree.index.names if match(name)}
    found = [n for n in tree.nodes if n.path and (match(n.path) or n.path in owners)]
    if outermost:
        matched = {n.uid for n in found}
        found = [n for n in found if not any(a.uid in matched for a in _ancestors(n))]
    return found


def _ancestors(node: ModuleNode) -> list[ModuleNode]:
    out = []
    parent = node.parent
    while parent is not None:
        out.append(parent)
        parent = parent.parent
    return out


def apply_glob(tree: ModelTree, spec: FreezeSpec, pattern: str, train: bool) -> FreezeSpec:
    """The plan after "train all matches" / "freeze all matches": one glob rule."""
    pattern = pattern.strip()
    if not pattern:
        raise ConfigError("pattern", "is empty", "type part of a module name, e.g. attention or layer.1*")
    matched = tree.index.match(pattern, tree.head_paths)
    if matched is None:
        raise ConfigError(
            "pattern",
            f"{pattern!r} is not understood",
            "use a module path glob like 'encoder.layer.1*' or @head, @embeddings, @norms, @block:N",
        )
    if not matched:
        raise ConfigError(
            "pattern", f"{pattern!r} matches no parameters of this model", "check the spelling in the filter box"
        )
    under = sorted({i for s, e in matched for i in range(s, e)})
    return _append_rule(tree, spec, FreezeRule(pattern, bool(train)), under)


def set_preset(spec: FreezeSpec, preset: str, last_n: int | None = None) -> FreezeSpec:
    """Start over from a preset: edits are dropped, the embeddings/norms choices and LR multipliers kept.

    Changing only the number of blocks keeps the edits.
    """
    if preset not in PRESETS:
        raise ConfigError("freeze.preset", f"must be one of {', '.join(PRESETS)} (got {preset!r})")
    new = _copy(spec)
    if preset != spec.preset:
        new.rules = [r for r in new.rules if r.pattern in MODIFIER_TOKENS]
    new.preset = preset
    if last_n is not None:
        if last_n < 0:
            raise ConfigError("freeze.last_n", f"must be >= 0 (got {last_n})")
        new.last_n = int(last_n)
    return new


def modifier_state(spec: FreezeSpec, token: str) -> bool:
    """True when the plan freezes ``token`` (``@embeddings`` / ``@norms``) by a rule."""
    return any(r.pattern == token and not r.train for r in spec.rules)


def token_state(tree: ModelTree, token: str) -> int | None:
    """How frozen ``token``'s parameters are in the last applied plan: 2 all, 1 some, 0 none; None: the model has none."""
    ranges = tree.index.match(token, tree.head_paths) or []
    if tree.plan is None or not ranges:
        return None
    flags = [tree.plan.flags[i] for s, e in ranges for i in range(s, e)]
    frozen = flags.count(False)
    return 2 if frozen == len(flags) else (1 if frozen else 0)


def set_modifier(spec: FreezeSpec, token: str, frozen: bool, tree: ModelTree | None = None) -> FreezeSpec:
    """Freeze ``token`` (``@embeddings`` / ``@norms``) by a rule, or stop freezing it.

    Freezing appends ``token: frozen`` (kept when the preset changes). Stopping removes those rules;
    given the ``tree``, it also appends ``token: train`` when the plan would still freeze some of them,
    so an unticked "Freeze embeddings" always means the embeddings train.
    """
    if token not in MODIFIER_TOKENS:
        raise ConfigError("freeze.rules", f"{token!r} is not one of {', '.join(MODIFIER_TOKENS)}")
    new = _copy(spec)
    new.rules = [r for r in new.rules if r.pattern != token]
    if frozen:
        new.rules.append(FreezeRule(token, False))
    elif tree is not None:
        ranges = tree.index.match(token, tree.head_paths) or []
        flags = freezing.resolve_flags(tree.index, new, tree.head_paths)
        if not all(flags[i] for s, e in ranges for i in range(s, e)):
            new.rules.append(FreezeRule(token, True))
    return new


def set_lr_multiplier(spec: FreezeSpec, path: str, value: float | None) -> FreezeSpec:
    """Set (or clear with None / 1.0 at the top) a module's learning-rate multiplier.

    Multipliers resolve last-match-wins in dict order, so the new entry goes after those of enclosing
    modules and before those of modules inside it: the most specific module always wins.
    """
    if value is not None and not (
        isinstance(value, (int, float)) and value > 0 and value == value and value != float("inf")
    ):
        raise ConfigError(f"freeze.lr_multipliers[{path!r}]", f"must be > 0 (got {value!r})", "1 keeps the base rate")
    new = _copy(spec)
    pattern = path or "*"
    items = [(k, v) for k, v in new.lr_multipliers.items() if k != pattern]
    inside = [(k, v) for k, v in items if pattern == "*" or k.startswith(pattern + ".")]
    outside = [(k, v) for k, v in items if (k, v) not in inside]
    mine = [] if value is None else [(pattern, float(value))]
    new.lr_multipliers = dict(outside + mine + inside)
    return new


def prune(tree: ModelTree, spec: FreezeSpec) -> FreezeSpec:
    """Drop exact-path rules and multipliers that name no module of this model (after a model change)."""
    new = _copy(spec)

    def known(pattern: str) -> bool:
        return (
            pattern.startswith("@")
            or freezing.is_glob(pattern)
            or pattern in ("", "*", "**")
            or pattern in tree.by_path
            or pattern in tree.index.position
        )

    new.rules = [r for r in new.rules if known(r.pattern.strip())]
    new.lr_multipliers = {k: v for k, v in new.lr_multipliers.items() if known(k)}
    if new.preset == "last_n_blocks" and not tree.blocks.paths:
        new.preset = "head_only" if tree.head_paths else "all"
    if new.preset == "head_only" and not tree.head_paths:
        new.preset = "all"
    if not tree.supports_lora and getattr(new, "lora", None) is not None and new.lora.active:
        new.lora = type(new.lora)()  # LoRA is for causal language models only (the run would refuse it)
    return new


def set_module_choice(
    tree: ModelTree,
    spec: FreezeSpec,
    path: str,
    choice: str,
    *,
    rank: int | None = None,
    alpha: float | None = None,
    dropout: float | None = None,
) -> FreezeSpec:
    """Make one module (and everything under it) train fully, stay frozen, or get LoRA adapters.

    ``train``/``frozen`` on a model without LoRA are plain ``toggle``s; with LoRA they also remove the
    adapters there (``lora.set_module_choice``).
    """
    if path not in tree.by_path:
        raise ConfigError("freeze.rules", f"{path!r} is not a module of this model", "pick a module from the tree")
    if choice == "lora" and not tree.supports_lora:
        raise ConfigError(
            "freeze.lora",
            "LoRA adapters are only available for causal language models",
            "freeze or train this module instead",
        )
    lora_spec = getattr(spec, "lora", None)
    if choice != "lora" and (lora_spec is None or not (lora_spec.active or lora_spec.rules)):
        return toggle(tree, spec, path, choice == "train")
    if path == "":
        raise ConfigError(
            "freeze.lora",
            "choose LoRA for a part of the model, or use a LoRA preset for all of it",
            "right-click a block or a layer",
        )
    from tunedesk.engine.lm import lora

    return lora.set_module_choice(spec, path, choice, rank=rank, alpha=alpha, dropout=dropout)


def explain(tree: ModelTree, spec: FreezeSpec, path: str) -> str:
    """Why a module trains or not: the preset, or the last rule that decided it (for tooltips)."""
    idx = tree.params_under(path)
    if not idx:
        return "no parameters"
    deciding = "the preset"
    for rule in spec.rules:
        ranges = tree.index.match(rule.pattern, tree.head_paths) or []
        if any(s <= i < e for s, e in ranges for i in idx):
            deciding = f"rule {rule.pattern} → {'train' if rule.train else 'freeze'}"
    return deciding
