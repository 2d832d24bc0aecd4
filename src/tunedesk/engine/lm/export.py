"""A causal-LM run's fine-tuned model: rebuild it, export it, talk to it.

* ``load_run_model(run_id)``: the base model from its folder + the run's LoRA adapters + the weights
  that trained (``best/``), or the full state of the resumable checkpoint (``last/``).
* ``export_lm_run(run_id, directory, fmt)``: ``merged`` writes a plain Hugging Face folder (adapters
  merged into the weights: ``AutoModelForCausalLM.from_pretrained(folder)`` loads it, no PEFT
  needed); ``adapter`` writes a PEFT adapter folder (``PeftModel.from_pretrained(base, folder)``).
  Layers that trained fully next to the adapters travel in the adapter as PEFT ``modules_to_save``.
* ``generate(run_id, messages or prompt)``: one reply from the run's model (the chat "try it" box).

Exports are written to a temporary folder next to the target and renamed into place, so a failed
export never leaves a half-written model where the user looks for one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunedesk.engine.config import RunConfig
from tunedesk.engine.errors import ConfigError, ModelError, TuneDeskError
from tunedesk.engine.files import MODEL_FILE, load_model_weights
from tunedesk.engine.lm import lora
from tunedesk.engine.lm.generate import generate_text, stop_token_ids
from tunedesk.engine.lm.model import (
    BEST_META,
    BEST_WEIGHTS,
    TOKENIZER_DIR,
    HFModel,
    is_checkpointing,
    load_causal_lm,
    load_lm_tokenizer,
)
from tunedesk.engine.store.history import lm_chat, run_config
from tunedesk.engine.store.resolved import resolved

FORMATS = ("merged", "adapter")
_FORMAT_ALIASES = {"auto": "merged", "hf": "merged", "merged": "merged", "adapter": "adapter", "lora": "adapter"}


@dataclass
class RunModel:
    """A run's model ready for inference or export."""

    model: HFModel  # a PeftModel when the run used LoRA
    tokenizer: Any
    chat: bool  # trained on conversations: prompts go through the chat template
    targets: dict[str, lora.LoraTarget]
    trainable_names: list[str]
    base_path: str
    config: RunConfig
    which: str  # "best" or "last"


def _run_record(run_id: int, home: str | os.PathLike[str] | None) -> tuple[dict[str, Any], RunConfig]:
    from tunedesk.engine.paths import database_path, home_dir
    from tunedesk.engine.store import RunStore

    store = RunStore(database_path(home_dir(home)))
    try:
        run = store.get_run(run_id)
    finally:
        store.close()
    if run.get("task") != "causal_lm":
        raise TuneDeskError(
            f"run {run_id} is a {run.get('task')} run, not a language-model run", "use the classifier export for it"
        )
    return run, RunConfig.from_dict(run_config(run))


def _checkpoint_folder(run: dict[str, Any], which: str) -> tuple[Path, str]:
    out = Path(run.get("output_dir") or "")
    best, last = out / "best", out / "last"
    has_best = (best / BEST_WEIGHTS).is_file() and (best / BEST_META).is_file()
    has_last = (last / MODEL_FILE).is_file()
    from tunedesk.engine.files import verify

    if which in ("best", "auto") and has_best:
        verify(best, required=(BEST_WEIGHTS, BEST_META))  # damaged or mixed: a clear error, never loaded
        return best, "best"
    if which in ("last", "auto") and has_last:
        verify(last, required=(MODEL_FILE,))
        return last, "last"
    raise TuneDeskError(
        f"run {run['id']} has no saved {'model' if which == 'auto' else which + ' checkpoint'} in {out}",
        "the run ends its first evaluation before a model is saved; train at least one epoch",
    )


def load_run_model(
    run_id: int,
    *,
    home: str | os.PathLike[str] | None = None,
    which: str = "auto",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> RunModel:
    """Rebuild a causal-LM run's model on ``device`` (in ``dtype``) from its base folder and checkpoint.

    A run that trained on a 4-/8-bit base (QLoRA) is rebuilt on the base's full-precision weights: its
    adapters go on the unquantised layers (the usual QLoRA export)."""
    from safetensors.torch import load_file

    from tunedesk.engine import freezing
    from tunedesk.engine.models import fingerprint

    run, config = _run_record(run_id, home)
    folder, which = _checkpoint_folder(run, which)
    meta = json.loads((folder / BEST_META).read_text(encoding="utf-8")) if which == "best" else {}
    base_path = meta.get("base_path") or run.get("model_path") or config.model.name_or_path
    if not Path(base_path).is_dir():
        raise ModelError(
            f"the base model of run {run_id} is no longer at {base_path}",
            "the run stores only what it trained; put the base model folder back where it was",
        )
    expected = meta.get("base_fingerprint") or run.get("model_hash")
    if expected and config.model.pretrained and fingerprint(base_path) != expected:
        raise ModelError(
            f"the base model at {base_path} changed since run {run_id} trained on it",
            "restore the original model files; the adapters only fit the weights they were trained on",
        )
    spec = config.model
    spec.name_or_path = base_path
    model, _, _, _ = load_causal_lm(spec, dtype=dtype)
    chat = lm_chat(run)  # recorded by the run: a data set version may hold chats or a corpus
    if meta:
        targets = {p: lora.LoraTarget(p, int(r), float(a), float(d)) for p, (r, a, d) in meta.get("lora", {}).items()}
    elif config.freeze.lora.active:
        targets = lora.resolve_targets(model, config.freeze.lora, freezing.resolve(model, config.freeze, []))
    else:
        targets = {}
    if targets:
        model = lora.wrap(model, targets, base_path)
    if which == "best":
        state = load_file(str(folder / BEST_WEIGHTS), device="cpu")
        result = model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise ModelError(
                f"run {run_id}'s checkpoint does not fit its base model ({len(result.unexpected_keys)} unknown "
                f"weights, e.g. {result.unexpected_keys[0]})",
                "the base model folder holds a different model",
            )
        names = sorted(state)
    else:
        load_model_weights(folder, model, None, "cpu", read_state=True)
        names = list(resolved(run).trainable_names or run.get("trainable_names") or [])
    tok_dir = folder / TOKENIZER_DIR
    tokenizer = load_lm_tokenizer(
        str(tok_dir if tok_dir.is_dir() else base_path), chat=chat, trust_remote_code=config.model.trust_remote_code
    )
    model.config.use_cache = True
    model.to(device).eval()
    return RunModel(model, tokenizer, chat, targets, names, base_path, config, which)


# ---- export -----------------------------------------------------------------------------------------


def _prepare_target(directory: Path) -> Path:
    directory = Path(directory).expanduser()
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ConfigError(
            "directory",
            f"{directory} already exists and is not an empty folder",
            "choose a new or empty folder for the export",
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))


def _finish(tmp: Path, directory: Path) -> None:
    if directory.exists():
        directory.rmdir()  # empty (checked before)
    os.replace(tmp, directory)


def _original_dtype(base_path: str) -> torch.dtype | None:
    try:
        cfg = json.loads((Path(base_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = cfg.get("dtype") or cfg.get("torch_dtype")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(str(name))


def _card(run_id: int, rm: RunModel, fmt: str) -> str:
    how = (
        "Load it with `AutoModelForCausalLM.from_pretrained(folder)` and `AutoTokenizer.from_pretrained(folder)`."
        if fmt == "merged"
        else f"Load the base model ({rm.base_path}) with AutoModelForCausalLM, then "
        "`PeftModel.from_pretrained(base, folder)`; the tokenizer (with its chat template) is in this folder."
    )
    chat = (
        "It was trained on conversations: prompt it with `tokenizer.apply_chat_template(messages, "
        "add_generation_prompt=True)`."
        if rm.chat
        else "It was trained on plain text: give it text to continue."
    )
    bits = rm.config.freeze.lora.base_bits
    qlora = (
        f"\n\nThe adapters trained on a {bits}-bit (bitsandbytes) copy of the base; "
        + (
            "they are merged here into the base's weights loaded in bf16, the usual QLoRA export, so replies "
            "can differ slightly from the quantised model during training."
            if fmt == "merged"
            else "load the base in bf16, or in the same quantisation for the closest match."
        )
        if bits
        else ""
    )
    return (
        f"# Fine-tuned with TuneDesk (run {run_id})\n\nBase model: `{rm.base_path}`\n\n"
        f"Format: {'merged weights' if fmt == 'merged' else 'PEFT LoRA adapter'}.\n\n{how}{qlora}\n\n{chat}\n"
    )


def export_lm_run(
    run_id: int, directory: str | os.PathLike[str], fmt: str = "merged", home: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Export a causal-LM run: ``merged`` (HF folder) or ``adapter`` (PEFT folder). Returns
    ``{"run_id", "path", "format", "base_path"}``."""
    kind = _FORMAT_ALIASES.get(str(fmt).lower())
    if kind is None:
        raise ConfigError(
            "format",
            f"{fmt!r} is not a language-model export format",
            "use merged (a Hugging Face folder) or adapter (a PEFT LoRA adapter)",
        )
    directory = Path(directory).expanduser()
    run, config = _run_record(run_id, home)
    # a QLoRA run: the base is loaded in half precision (its checkpoint's, else bf16; not 4-bit, and
    # an 8B model in fp32 would need 32 GB of memory) and the adapters are merged into it
    dtype = torch.float32
    if kind == "merged" and config.freeze.lora.quantised:
        base = run.get("model_path") or config.model.name_or_path
        dtype = _original_dtype(base) or torch.bfloat16
    rm = load_run_model(run_id, home=home, dtype=dtype)
    if kind == "adapter" and not rm.targets:
        raise ConfigError(
            "format",
            f"run {run_id} trained without LoRA, so it has no adapter to export",
            "export merged weights instead",
        )
    tmp = _prepare_target(directory)
    try:
        if kind == "merged":
            _write_merged(rm, tmp)
        else:
            _write_adapter(rm, tmp)
        rm.tokenizer.save_pretrained(str(tmp))
        (tmp / "README.md").write_text(_card(run_id, rm, kind), encoding="utf-8")
        (tmp / "tunedesk_export.json").write_text(
            json.dumps(
                {
                    "run_id": run_id,
                    "format": kind,
                    "base_path": rm.base_path,
                    "checkpoint": rm.which,
                    "lora": {p: [t.rank, t.alpha, t.dropout] for p, t in rm.targets.items()},
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        _finish(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"run_id": run_id, "path": str(directory), "format": kind, "base_path": rm.base_path}


def _write_merged(rm: RunModel, folder: Path) -> None:
    model = rm.model.merge_and_unload() if rm.targets else rm.model

    if is_checkpointing(model):
        disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
        disable()
    model.config.use_cache = True

    stops = stop_token_ids(rm.tokenizer, model)  # plain generate() then stops at the end of the reply
    model.generation_config.eos_token_id = stops[0] if len(stops) == 1 else stops
    model.generation_config.pad_token_id = rm.tokenizer.pad_token_id
    dtype = _original_dtype(rm.base_path)
    if dtype is not None:
        model.to(dtype)
    model.save_pretrained(str(folder), safe_serialization=True)


def _write_adapter(rm: RunModel, folder: Path) -> None:
    """PEFT's own save: adapters, plus fully trained layers as ``modules_to_save``."""
    from peft import get_peft_model

    peft_model = rm.model
    base = peft_model.get_base_model()
    trained_base = [n for n in rm.trainable_names if not lora.is_adapter_param(n)]
    owners = sorted({lora.base_name(n).rsplit(".", 1)[0] for n in trained_base})
    if not owners:
        peft_model.save_pretrained(str(folder), safe_serialization=True)
        return
    if any(".base_layer." in n for n in trained_base):
        raise ConfigError(
            "format",
            "some adapted layers also train their bias, which a PEFT adapter cannot carry",
            "export merged weights instead",
        )
    emb = base.get_input_embeddings()
    tied = getattr(base.config, "tie_word_embeddings", False) and emb is not None
    if tied and any(base.get_submodule(o) is emb for o in owners):
        raise ConfigError(
            "format",
            "the run trained the (tied) token embeddings, which a PEFT adapter cannot carry faithfully",
            "export merged weights instead",
        )
    trained = {n: p.detach().clone() for n, p in peft_model.named_parameters() if n in set(rm.trainable_names)}
    cfg = lora.peft_config(base, rm.targets, rm.base_path)
    cfg.modules_to_save = owners
    spec = rm.config.model
    spec.name_or_path = rm.base_path
    fresh, _, _, _ = load_causal_lm(spec, dtype=torch.float32)
    with lora.quiet_peft():
        out = get_peft_model(fresh, cfg)
    own = dict(out.named_parameters())
    state = {}
    for name, value in trained.items():
        if lora.is_adapter_param(name):
            state[name] = value
            continue
        module, leaf = lora.PEFT_PREFIX + lora.base_name(name).rsplit(".", 1)[0], name.rsplit(".", 1)[1]
        key = f"{module}.modules_to_save.{lora.ADAPTER_NAME}.{leaf}"
        if key not in own:
            raise ConfigError(
                "format",
                f"cannot place the trained weight {lora.base_name(name)} in a PEFT adapter",
                "export merged weights instead",
            )
        state[key] = value
    result = out.load_state_dict(state, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    out.save_pretrained(str(folder), safe_serialization=True)


# ---- try it -------------------------------------------------------------------------------------------

_cache_lock = threading.Lock()
_cache: dict[str, Any] = {}


def _cached(run_id: int, home: str | os.PathLike[str] | None, device: str) -> RunModel:
    """Keep the last run's model (merged for speed) between replies; reload when its checkpoint changes."""
    run, _ = _run_record(run_id, home)
    folder, which = _checkpoint_folder(run, "auto")
    stamp = max((f.stat().st_mtime_ns for f in folder.iterdir() if f.is_file()), default=0)
    key = f"{home}|{run_id}|{folder}|{stamp}|{device}"
    with _cache_lock:
        if _cache.get("key") == key:
            return _cache["model"]
    rm = load_run_model(run_id, home=home, which=which, device="cpu")
    if rm.targets:
        rm.model = rm.model.merge_and_unload()
    rm.model.to(device).eval()
    with _cache_lock:
        _cache.clear()
        _cache.update(key=key, model=rm)
    return rm


def clear_cache() -> None:
    """Free the cached "try it" model (e.g. when the chat box closes)."""
    with _cache_lock:
        _cache.clear()


def generate(
    run_id: int,
    messages: str | list[dict[str, str]],
    max_new_tokens: int = 128,
    temperature: float = 0.7,
    *,
    home: str | os.PathLike[str] | None = None,
    device: str = "auto",
) -> str:
    """One reply from a run's fine-tuned model. ``messages``: a chat (list of role/content dicts) or a
    text; a text is a user message for chat-trained runs and a text to continue for corpus runs."""

    if not (1 <= int(max_new_tokens) <= 4096):
        raise ConfigError("max_new_tokens", f"must be between 1 and 4096 (got {max_new_tokens})")
    if not (0.0 <= float(temperature) <= 5.0):
        raise ConfigError(
            "temperature", f"must be between 0 and 5 (got {temperature})", "0 answers greedily; 0.7 is usual"
        )
    if isinstance(messages, str) and not messages.strip():
        raise ConfigError("prompt", "is empty", "type a message")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    rm = _cached(run_id, home, device)
    return generate_text(
        rm.model,
        rm.tokenizer,
        messages,
        chat=rm.chat,
        max_new_tokens=int(max_new_tokens),
        temperature=float(temperature),
        device=device,
    )
