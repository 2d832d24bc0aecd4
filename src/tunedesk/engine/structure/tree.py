"""A model's modules as plain nodes with parameter counts that follow a FreezeSpec.

``ModelTree.apply(spec)`` recomputes every node's trainable count through ``freezing.resolve`` (the
engine's own resolution, so the tree and the run cannot disagree).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from tunedesk.engine import freezing
from tunedesk.engine.config import FreezeSpec
from tunedesk.engine.models import LoadedModel
from tunedesk.engine.structure.meta import CAUSAL, IMAGE, TEXT, task_of_model

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

    def cache_trace(self, sequence_length: int = 128, image_size: int = 224) -> Any:
        """The meta-device trace the feature-cache estimate reads (about a second for an 8B model): once
        per input size. The Layers area makes it in its background build, not on the GUI thread."""
        from tunedesk.engine.run import feature_cache

        if self.task not in (TEXT, IMAGE):
            return None
        key = (sequence_length,) if self.task == TEXT else (image_size,)
        if key not in self._cache_traces:
            self._cache_traces[key] = feature_cache.trace_calls(
                self.model, self.task == TEXT, sequence_length, image_size
            )
        return self._cache_traces[key]

    def cache_estimate(
        self, plan: freezing.ResolvedPlan, sequence_length: int, image_size: int, feature_bytes: int
    ) -> Any:
        """The frozen-prefix feature cache this plan would use (size per example, expected epoch speed-up),
        from one meta-device trace per input size; None where it does not apply."""
        if self.task not in (TEXT, IMAGE):
            return None
        if all(plan.trainable.values()):
            return None  # nothing frozen, no prefix to cache: no trace needed (nor its import)
        from tunedesk.engine.run import feature_cache

        calls = self.cache_trace(sequence_length, image_size)
        return (
            None
            if calls is None
            else feature_cache.estimate(calls, plan.trainable, feature_bytes, self.index.blocks.paths)
        )
