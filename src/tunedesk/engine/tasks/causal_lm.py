"""Causal language modelling: adapt a local decoder LLM's tone or domain, fully, frozen in part, or with LoRA.

Loading and generation: tunedesk.engine.lm.model / lm.generate. Data and masks: lm.data. LoRA: lm.lora.
Export and "try it": lm.export. Beyond the hooks every task implements, this one overrides
``adapt_plan`` (LoRA joins the freeze plan), ``describe_plan``, ``generate_samples`` (a reply per user
prompt at each evaluation) and ``best_files`` (only the parameters that trained, plus what is needed to
rebuild the model from its base).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from tunedesk.engine import freezing
from tunedesk.engine.config import AUTO_BATCH, RunConfig
from tunedesk.engine.datasets.versions import load_chat_version, load_corpus_version, version_kind
from tunedesk.engine.errors import ConfigError, DataError, ModelError
from tunedesk.engine.lm import data as lm_data
from tunedesk.engine.lm import kernels, lora, packing, quant
from tunedesk.engine.lm.generate import generate_text
from tunedesk.engine.lm.model import (
    BEST_META,
    BEST_WEIGHTS,
    FORMAT,
    TOKENIZER_DIR,
    HFModel,
    enable_checkpointing,
    load_causal_lm,
    load_lm_tokenizer,
    module_name,
)
from tunedesk.engine.models import LoadedModel, family_of, fingerprint
from tunedesk.engine.tasks.base import PreparedData, Task


class LMOutput(NamedTuple):
    loss: torch.Tensor
    logits: torch.Tensor | None  # evaluation only, without the chunked loss
    correct: torch.Tensor | None = None  # evaluation with the chunked loss: correct next tokens


class LMEvalState:
    """Validation loss (token-weighted), perplexity and next-token accuracy; one host read at the end."""

    def __init__(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.tokens = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.float64, device=device)

    def update(self, output: Any, labels: torch.Tensor, loss: torch.Tensor) -> None:
        target = labels[:, 1:]
        valid = target != lm_data.IGNORE_INDEX
        n = valid.sum()
        self.loss_sum += loss.detach().double() * n
        self.tokens += n
        logits = getattr(output, "logits", None)
        correct = getattr(output, "correct", None)
        if correct is not None:
            self.correct += correct
        elif logits is not None:
            preds = logits[:, :-1].argmax(-1)
            self.correct += ((preds == target) & valid).sum()

    def compute(self, label_names: list[str]) -> tuple[dict[str, float], list[list[int]], dict[str, dict[str, float]]]:
        tokens = float(self.tokens.cpu())
        loss = float(self.loss_sum.cpu()) / max(tokens, 1.0)
        metrics = {
            "val_loss": loss,
            "val_perplexity": math.exp(min(loss, 50.0)),
            "val_token_accuracy": float(self.correct.cpu()) / max(tokens, 1.0),
        }
        return metrics, [], {}


def _training_dtype(config: RunConfig) -> tuple[torch.dtype, torch.device | None, str]:
    """Frozen weights are kept in half precision when training runs in bf16/fp16 on a GPU."""
    from tunedesk.engine.devices import select_device, select_precision

    try:
        device = select_device(config.device)
        precision = select_precision(config.precision, device)
    except ConfigError:
        return torch.float32, None, "fp32"
    if device.type == "cuda" and precision in ("bf16", "fp16"):
        return (torch.bfloat16 if precision == "bf16" else torch.float16), device, precision
    return torch.float32, device, precision


def load_lm_version(config: RunConfig) -> lm_data.LMExamples:
    """A text-corpus or chat version as ``lm_data.LMExamples`` (passages as documents), with its split."""
    d = config.data
    ref, location = d.dataset_version or "", d.path or None
    stored_kind = version_kind(ref, location)
    if stored_kind == "chat":
        version, chats, split = load_chat_version(ref, location)
        kind, documents = "chat_jsonl", []
    elif stored_kind == "text_corpus":
        version, passages, split = load_corpus_version(ref, location)
        kind, chats, documents = "text_corpus", [], [(f"passage {i + 1}", t) for i, t in enumerate(passages)]
    else:
        raise DataError(
            f"data set version {ref} holds labelled items, not text for a language model",
            "import a text corpus (.txt) or chat JSONL in the Datasets area and train on its version",
        )
    count = len(chats) if kind == "chat_jsonl" else len(documents)
    warnings = []
    if d.max_items is not None and count > d.max_items:
        warnings.append(f"data.max_items: using the first {d.max_items} of {count} items")
        chats, documents, split = chats[: d.max_items], documents[: d.max_items], split[: d.max_items]
        count = d.max_items
    has_split = any(s in ("train", "val") for s in split)
    unit = "conversations" if kind == "chat_jsonl" else "passages"
    summary = f"data set version {version.id} (hash {version.content_hash[:12]}): {count} {unit}"
    return lm_data.LMExamples(
        kind,
        f"{version.dataset_name} ({version.id})",
        summary,
        documents=documents,
        conversations=chats,
        warnings=warnings,
        split=list(split) if has_split else None,
    )


class CausalLM(Task):
    name = "causal_lm"
    primary_metric = "val_loss"
    higher_is_better = False
    new_params_note = "the LoRA adapters train at {lr:g} because they start from random weights"

    def __init__(self) -> None:
        self.targets: dict[str, lora.LoraTarget] = {}
        self.prompts: list[str] = []
        self.kind = "chat_jsonl"
        self.base_path = ""
        self.base_fingerprint: str | None = None
        self.fused_loss = False  # training through kernels.causal_lm_loss (decided in build_model)
        self.liger = False  # liger-kernel applied to the model
        self.chunked_eval = False  # evaluation through the chunked loss (no whole logits)

    @property
    def chat(self) -> bool:
        """Trained on conversations (a chat JSONL file or a chat version): prompts go through the chat template."""
        return self.kind == "chat_jsonl"

    # ---- data and model ------------------------------------------------------------------------

    def load_examples(self, config: RunConfig) -> lm_data.LMExamples:
        d = config.data
        self.kind = d.kind
        if d.kind in ("text_corpus", "chat_jsonl") and Path(d.path).exists():
            from tunedesk.engine.data.budget import check_budget, estimate_corpus

            est = estimate_corpus(Path(d.path), d.max_items)
            if est is not None:  # refused before reading when it cannot fit in memory
                check_budget(est, Path(d.path).name)
        if d.kind == "text_corpus":
            return lm_data.read_corpus(d.path, d.encoding, d.max_items)
        if d.kind == "chat_jsonl":
            return lm_data.read_chat_jsonl(d.path, d.encoding, d.max_items)
        if d.kind == "dataset_version":
            examples = load_lm_version(config)
            self.kind = examples.kind  # a chat version trains (and later answers) through the chat template
            return examples
        raise ConfigError(
            "data.kind",
            f"must be text_corpus, chat_jsonl or dataset_version for causal_lm (got {d.kind!r})",
            "text_corpus: .txt files; chat_jsonl: a JSONL file of conversations",
        )

    def label_names(self, examples: Any) -> list[str]:
        return []

    def build_model(self, config: RunConfig, label_names: list[str], device: str = "cpu") -> LoadedModel:
        if config.model.source != "hf":
            raise ModelError("language-model fine-tuning needs a Hugging Face model folder", "pick a causal LM folder")
        h = config.hparams
        dtype, run_device, _ = (torch.float32, None, "fp32") if device == "meta" else _training_dtype(config)
        quantization = device_map = None
        bits = config.freeze.lora.base_bits
        if bits is not None and device != "meta":
            quant.require(bits, run_device)
            if not config.model.pretrained:
                raise ConfigError(
                    quant.FIELD,
                    "a quantised base needs pre-trained weights to quantise (model.pretrained is off)",
                    "switch model.pretrained on, or leave base_bits out",
                )
            quantization = quant.quantization_config(bits, dtype, self._unquantised_layers(config))
            index = run_device.index if run_device is not None and run_device.index is not None else None
            device_map = {"": index if index is not None else torch.cuda.current_device()}
        model, path, hf_config, warnings = load_causal_lm(
            config.model,
            dtype=dtype,
            device=device,
            quantization=quantization,
            device_map=device_map,
            attn_implementation=kernels.attn_implementation(h.attention) if device != "meta" else None,
        )
        if device != "meta":
            kind = run_device.type if run_device is not None else "cpu"
            self.liger = kernels.use_fused_kernels(h.fused_kernels, kind)
            if self.liger and not kernels.apply_liger(model):
                self.liger = False
                if h.fused_kernels == "on":
                    warnings.append(
                        f"liger-kernel has no fused kernels for {getattr(hf_config, 'model_type', '?')} models: "
                        "training runs without them"
                    )
            chunked = kernels.supports_chunked_loss(model)
            self.fused_loss = chunked and kernels.use_fused_loss(h.fused_loss, kind)
            self.chunked_eval = chunked and h.fused_loss != "off"
            if h.fused_loss == "on" and not chunked:
                warnings.append(
                    f"the chunked loss does not fit {type(model).__name__} (its output layer is not a plain "
                    "linear map): the model computes its own loss"
                )
        loaded = LoadedModel(
            model=model,
            head_paths=[],
            family=family_of(hf_config),
            architecture=type(model).__name__,
            path=str(path),
            pretrained=config.model.pretrained and device != "meta",
            warnings=warnings,
            fingerprint=fingerprint(path) if device != "meta" else None,
            kind="hf",
            label_names=[],
        )
        self.base_path, self.base_fingerprint = str(path), loaded.fingerprint
        if device != "meta":
            tok = load_lm_tokenizer(str(path), chat=self.chat, trust_remote_code=config.model.trust_remote_code)
            loaded.processor = tok
            if getattr(model.config, "pad_token_id", None) is None:
                model.config.pad_token_id = tok.pad_token_id
            limit = getattr(hf_config, "max_position_embeddings", None) or getattr(hf_config, "n_positions", None)
            if limit and config.hparams.max_length > limit:
                raise ConfigError(
                    "hparams.max_length",
                    f"is {config.hparams.max_length} but {path.name} handles at most {limit} tokens",
                    f"set max_length to {limit} or less",
                )
        return loaded

    def _unquantised_layers(self, config: RunConfig) -> list[str]:
        """Linear layers bitsandbytes must leave alone: those the freeze plan trains fully, and the
        output layer (read from a meta-device model: no weights)."""
        meta, _, _, _ = load_causal_lm(config.model, device="meta")
        plan = freezing.resolve(meta, config.freeze, [])
        trained = [p for p in lora.linear_layers(meta) if plan.trainable.get(f"{p}.weight", False)]
        return sorted(set(trained) | set(lora.output_layer_paths(meta)))

    def prepare(self, config: RunConfig, loaded: LoadedModel, examples: lm_data.LMExamples) -> PreparedData:
        tok = loaded.processor
        h = config.hparams
        enc = lm_data.encode_examples(tok, examples, h.max_length, config.data.val_fraction, config.seed)
        self.prompts = list(h.prompts) or lm_data.default_prompts(examples, enc.val_sources)
        train: torch.utils.data.Dataset = enc.train
        val: torch.utils.data.Dataset = enc.val
        summary = enc.summary
        if h.packing and self.chat:
            batch = h.batch_size or AUTO_BATCH
            train, stats = packing.pack_dataset(enc.train, h.max_length, batch)
            val, _ = packing.pack_dataset(enc.val, h.max_length, batch)
            summary += "; " + stats.summary()
        return PreparedData(
            train=train,
            val=val,
            collate=lm_data.LMCollate(tok.pad_token_id),
            label_names=[],
            name=examples.name,
            fingerprint=examples.fingerprint(),
            summary=summary,
            warnings=enc.warnings,
        )

    def adapt_plan(self, config: RunConfig, loaded: LoadedModel, plan: freezing.ResolvedPlan) -> freezing.ResolvedPlan:
        """After the freeze plan: gradient checkpointing, LoRA adapters, fp32 for what trains."""
        model: HFModel = loaded.model
        h = config.hparams
        if h.gradient_checkpointing:
            if not getattr(model, "supports_gradient_checkpointing", False):
                raise ConfigError(
                    "hparams.gradient_checkpointing",
                    f"is not supported by {loaded.architecture}",
                    "switch it off, or use a shorter max_length / smaller batch",
                )
            enable_checkpointing(model)
            model.config.use_cache = False
            emb = model.get_input_embeddings()
            if emb is not None and not any(
                plan.trainable.get(n, False)
                for n, _ in model.named_parameters()
                if n.startswith(module_name(model, emb) + ".")
            ):
                model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need a grad path
        self.targets = {}
        if config.freeze.lora.active:
            self.targets = lora.resolve_targets(model, config.freeze.lora, plan)
            if not self.targets:
                raise ConfigError(
                    "freeze.lora",
                    "chooses no layer for an adapter (every chosen layer trains fully or none matched)",
                    "pick the attention or all-linear preset, or freeze the layers you want adapters on",
                )
            torch.manual_seed(config.seed)
            loaded.model = lora.wrap(model, self.targets, loaded.path)
            plan = lora.adapted_plan(loaded.model, plan, self.targets)
            loaded.head_paths = list(plan.head_paths)
        for name, p in loaded.model.named_parameters():  # master weights of what trains stay fp32
            if plan.trainable.get(name, False) and p.is_floating_point() and p.dtype != torch.float32:
                p.data = p.data.float()
        return plan

    def describe_plan(self, config: RunConfig, plan: freezing.ResolvedPlan) -> str:
        return lora.describe(config.freeze, plan, self.targets)

    # ---- training ---------------------------------------------------------------------------------

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LMOutput:
        """The model computes the shifted loss itself. No key/value cache; in training the logits are
        not kept (the loss's graph holds what backward needs), so the next step's forward does not
        run next to the previous step's batch x sequence x vocabulary tensor."""
        training = torch.is_grad_enabled()
        if self.fused_loss if training else self.chunked_eval:  # the vocabulary's logits never held whole
            loss, correct = kernels.causal_lm_loss(model, batch, liger=self.liger, count_correct=not training)
            return LMOutput(loss, None, correct)
        # packed rows (lm.packing) carry position ids instead of an attention mask
        where = {k: batch[k] for k in ("attention_mask", "position_ids") if batch.get(k) is not None}
        out = model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False, **where)
        return LMOutput(out.loss, None if training else out.logits)

    def loss(self, output: LMOutput, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return output.loss

    def new_eval_state(self, num_labels: int, device: torch.device) -> LMEvalState:
        return LMEvalState(device)

    def generate_samples(
        self, model: nn.Module, loaded: LoadedModel, config: RunConfig, device: torch.device
    ) -> list[tuple[str, str]]:
        """Greedy replies to the run's prompts (the same decoding each time, so epochs compare)."""
        prompts = self.prompts or list(config.hparams.prompts)
        if not prompts:
            return []
        from tunedesk.engine.devices import select_precision

        precision = select_precision(config.precision, device)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        was_training = model.training
        model.eval()
        out = []
        try:
            for prompt in prompts:
                text = generate_text(
                    model,
                    loaded.processor,
                    prompt,
                    chat=self.chat,
                    max_new_tokens=config.hparams.sample_max_new_tokens,
                    temperature=0.0,
                    device=device,
                    autocast_dtype=dtype,
                )
                out.append((prompt, text))
        finally:
            model.train(was_training)
        return out

    def best_files(
        self, model: nn.Module, loaded: LoadedModel, label_names: list[str], metrics: dict[str, float]
    ) -> list[tuple[str, Any]]:
        """The best checkpoint's files: only the parameters that train (adapters and/or unfrozen layers),
        the tokenizer, and how to rebuild the model. The checkpoint writer swaps them in as one folder."""
        from safetensors.torch import save_file

        state = {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}
        meta = {
            "format": FORMAT,
            "task": self.name,
            "base_path": loaded.path,
            "base_fingerprint": loaded.fingerprint,
            "architecture": loaded.architecture,
            "family": loaded.family,
            "data_kind": self.kind,
            "lora": {p: [t.rank, t.alpha, t.dropout] for p, t in self.targets.items()},
            "trainable_names": sorted(state),
            "metrics": metrics,
        }
        files: list[tuple[str, Any]] = [(BEST_WEIGHTS, lambda p: save_file(state, str(p)))]
        if loaded.processor is not None:
            files.append((TOKENIZER_DIR, lambda p: loaded.processor.save_pretrained(str(p))))
        files.append((BEST_META, lambda p: p.write_text(json.dumps(meta, indent=2), encoding="utf-8")))
        return files
