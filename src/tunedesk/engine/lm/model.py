"""Loading a local decoder language model and its tokenizer, offline; activation checkpointing.

Used by the causal_lm task to train and by ``lm.export`` to rebuild a run's model. Nothing here
knows about runs or tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunedesk.engine.errors import ConfigError, ModelError
from tunedesk.engine.lm import data as lm_data
from tunedesk.engine.lm import quant
from tunedesk.engine.model_files import check_tokenizer_vocabulary, is_tokenizer_read_failure, tokenizer_error
from tunedesk.engine.models import load_hf_config, quiet_transformers, resolve_hf_path

# A transformers causal LM (PreTrainedModel) or its PEFT wrapper: generate, config, save_pretrained and
# the checkpointing switches are looked up dynamically by both libraries, so the type says only that.
HFModel = Any

# An LM run's best folder holds only the parameters that trained, how to rebuild the model from its
# base folder, and the tokenizer (written by the causal_lm task, read by lm.export).
BEST_WEIGHTS = "trainable.safetensors"
BEST_META = "tunedesk.json"
TOKENIZER_DIR = "tokenizer"
FORMAT = "tunedesk-causal-lm-1"
# Encoders that AutoModelForCausalLM would still load (as an LM head over a bidirectional encoder)
ENCODER_FAMILIES = {
    "bert",
    "roberta",
    "xlm-roberta",
    "xlm-roberta-xl",
    "camembert",
    "electra",
    "ernie",
    "data2vec-text",
    "rembert",
    "roformer",
    "megatron-bert",
    "big_bird",
    "xmod",
    "roc_bert",
    "distilbert",
    "deberta",
    "deberta-v2",
    "mpnet",
    "albert",
    "modernbert",
}


def load_lm_tokenizer(path: str, chat: bool, trust_remote_code: bool = False) -> Any:
    """The model's tokenizer with a pad token (eos when it has none) and, for chat data, a chat template."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"no usable tokenizer in {path} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
            "the model folder needs tokenizer.json (or the vocabulary files) next to config.json",
        ) from exc
    except Exception as exc:  # damaged or edited tokenizer files, recognised below; anything else re-raised
        if not is_tokenizer_read_failure(exc):
            raise
        raise tokenizer_error(path, exc) from exc
    check_tokenizer_vocabulary(tok, path)
    if tok.eos_token_id is None:
        raise ModelError(
            f"the tokenizer in {path} has no end-of-sequence token",
            "set eos_token in the folder's tokenizer_config.json",
        )
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if chat:
        lm_data.ensure_chat_template(tok)
    return tok


def load_causal_lm(
    spec: Any,
    *,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    quantization: Any = None,
    device_map: Any = None,
    attn_implementation: str | None = None,
) -> tuple[HFModel, Path, Any, list[str]]:
    """A decoder model from a local folder through AutoModelForCausalLM: (model, path, config, warnings).

    ``quantization``: a bitsandbytes config (``lm.quant``; the weights load straight onto
    ``device_map``'s GPU in 4 or 8 bits). ``attn_implementation``: transformers' attention (None: its default).
    """
    import transformers

    quiet_transformers()
    path = resolve_hf_path(spec.name_or_path)
    config = load_hf_config(path, spec)
    auto = transformers.AutoModelForCausalLM
    if getattr(config, "model_type", "") in ENCODER_FAMILIES and not getattr(config, "is_decoder", False):
        raise ModelError(
            f"{path.name} is an encoder ({config.model_type}) model, not a decoder language model: "
            "it cannot write text",
            "pick a causal LM such as GPT-2, Llama, Qwen, Mistral or Phi; encoders suit text classification",
        )
    if type(config) not in auto._model_mapping and not spec.trust_remote_code:
        raise ModelError(
            f"{path.name} ({getattr(config, 'model_type', '?')}) is not a decoder language model that "
            "AutoModelForCausalLM can load",
            "pick a causal LM such as GPT-2, Llama, Qwen, Mistral or Phi",
        )
    warnings: list[str] = []
    extra: dict[str, Any] = {}
    if attn_implementation is not None:
        extra["attn_implementation"] = attn_implementation
    if quantization is not None:
        extra.update(quantization_config=quantization, device_map=device_map)
    if device == "meta":
        with torch.device("meta"):
            model = auto.from_config(config, trust_remote_code=spec.trust_remote_code)
    elif spec.pretrained:
        try:
            model = auto.from_pretrained(
                str(path),
                config=config,
                local_files_only=True,
                dtype=dtype,
                trust_remote_code=spec.trust_remote_code,
                **extra,
            )
        except ImportError as exc:  # flash-attn or bitsandbytes missing or too old
            raise ConfigError(
                "hparams.attention" if quantization is None else quant.FIELD,
                f"cannot load {path.name}: {str(exc).splitlines()[0]}",
                "install the missing package, or set hparams.attention to auto / leave freeze.lora.base_bits out",
            ) from exc
        except Exception as exc:  # damaged, truncated, refused (code in a pickle): one sentence each
            from tunedesk.engine.model_files import is_weights_read_failure, weights_error

            if not is_weights_read_failure(exc):
                raise
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if attn_implementation is not None and ("attn" in msg.lower() or "attention" in msg.lower()):
                raise ConfigError(
                    "hparams.attention",
                    f"{path.name} cannot run attention {attn_implementation!r}: {msg}",
                    "set hparams.attention to auto (transformers picks what the model supports)",
                ) from exc
            raise weights_error(path, exc) from exc
    else:
        torch.manual_seed(0)
        try:
            model = auto.from_config(config, trust_remote_code=spec.trust_remote_code, dtype=dtype, **extra)
        except (ImportError, ValueError) as exc:
            if attn_implementation is None:
                raise
            raise ConfigError(
                "hparams.attention",
                f"{path.name} cannot run attention {attn_implementation!r}: {str(exc).splitlines()[0]}",
                "set hparams.attention to auto (transformers picks what the model supports)",
            ) from exc
        warnings.append("random initialisation: this trains from scratch, it is not fine-tuning")
    return model, path, config, warnings


def enable_checkpointing(model: HFModel) -> None:
    """Activation (gradient) checkpointing, non-reentrant, under either transformers spelling."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def is_checkpointing(model: nn.Module) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def module_name(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name
    return ""
