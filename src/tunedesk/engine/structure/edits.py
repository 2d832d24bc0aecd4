"""Edits of a freeze plan made from the layer tree; each returns a new FreezeSpec.

The UI never keeps check state of its own: a click becomes ``toggle(tree, spec, path, train)`` and the
tree redraws from the spec it returns.
"""

from __future__ import annotations

import copy

from tunedesk.engine import freezing
from tunedesk.engine.config import PRESETS, FreezeRule, FreezeSpec
from tunedesk.engine.errors import ConfigError
from tunedesk.engine.structure.tree import ModelTree, ModuleNode

MODIFIER_TOKENS = ("@embeddings", "@norms")


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
        raise ConfigError(
            "freeze.preset",
            f"must be one of {', '.join(PRESETS)} (got {preset!r})",
            "all trains everything, head_only only the new head, last_n_blocks the last N blocks",
        )
    new = _copy(spec)
    if preset != spec.preset:
        new.rules = [r for r in new.rules if r.pattern in MODIFIER_TOKENS]
    new.preset = preset
    if last_n is not None:
        if last_n < 0:
            raise ConfigError(
                "freeze.last_n", f"must be >= 0 (got {last_n})", "how many of the last blocks train, e.g. 2"
            )
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
        raise ConfigError(
            "freeze.rules",
            f"{token!r} is not one of {', '.join(MODIFIER_TOKENS)}",
            "use one of those tokens, or a glob over module paths like encoder.layer.1*",
        )
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
