"""Reading model files safely, and what each failure to read them means.

Pickled weights go through ``torch.load(weights_only=True)`` only. Libraries meet damaged or edited
files (random bytes, a truncated safetensors, a config.json value of the wrong type, a broken
tokenizer file) with many exception types; ``is_*_failure`` recognise a failure by its type or by
the library frame that raised it, never by catching broadly, and ``*_error`` turn it into one
ModelError that names the file and the fix.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from tunedesk.engine.errors import ModelError

# where a failure means "these bytes are no readable checkpoint", whatever the exception type: torch's
# weights-only unpickler meets random bytes with IndexError, KeyError, TypeError, struct.error ...
_READER_FILES = ("torch/serialization.py", "torch/_weights_only_unpickler.py", "/pickle.py", "safetensors/")


def raising_file(exc: BaseException) -> str:
    """The source file of the frame that raised ``exc`` (the innermost one), with / separators; "" if unknown."""
    tb = exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.replace("\\", "/")


def raised_in(exc: BaseException, parts: tuple[str, ...]) -> bool:
    """Whether the frame that raised ``exc`` is in a file whose path holds one of ``parts``."""
    name = raising_file(exc)
    return bool(name) and any(part in name for part in parts)


def is_weights_read_failure(exc: BaseException) -> bool:
    """Whether ``exc`` came from reading a weights file (damaged, truncated, refused or another format)
    rather than from a bug: its type says so, or it was raised inside torch's or safetensors' reader."""
    if isinstance(exc, (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError)):
        return True
    if type(exc).__name__ == "SafetensorError":
        return True
    return raised_in(exc, _READER_FILES)


# where transformers turns config.json into a configuration object: a value of the wrong type fails in
# huggingface_hub's strict dataclass check (transformers 5) or in the configuration code itself
# ("model_type": {} is an unhashable key in configuration_auto.py)
_CONFIG_READER_FILES = (
    "transformers/configuration_utils.py",
    "transformers/models/auto/configuration_auto.py",
    "huggingface_hub/dataclasses.py",
)


def deepest_transformers_file(exc: BaseException) -> str:
    """The file of the innermost frame of transformers' own code on ``exc``'s traceback ("" if none): where
    transformers was when it called into torch (``nn.Embedding``, ``getattr(torch, dtype)``) or raised."""
    found = ""
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if "/transformers/" in name:
            found = name
        tb = tb.tb_next
    return found


def _is_configuration_file(name: str) -> bool:
    return any(part in name for part in _CONFIG_READER_FILES) or (
        "/transformers/models/" in name and os.path.basename(name).startswith("configuration_")
    )


def is_config_read_failure(exc: BaseException) -> bool:
    """Whether ``exc``, raised by ``AutoConfig.from_pretrained`` on a local folder, comes from a value in
    its config.json: huggingface_hub's validation error, or a plain error raised inside transformers'
    configuration code (``models/<family>/configuration_<family>.py`` included), or in what that code
    called last (``"dtype": "bogus"``: ``getattr(torch, "bogus")``)."""
    if any(c.__name__ == "StrictDataclassError" for c in type(exc).__mro__):
        return True
    if not isinstance(exc, (TypeError, KeyError, AttributeError, ValueError, IndexError)):
        return False
    return raised_in(exc, _CONFIG_READER_FILES) or _is_configuration_file(deepest_transformers_file(exc))


# what a config.json's values can break while transformers builds the model from them: a value the
# configuration check lets through but the model code cannot use ("hidden_act": "x" is a KeyError in
# activations.py, "hidden_size": 0 a ZeroDivisionError, "pad_token_id": 10**6 an AssertionError in
# nn.Embedding, "initializer_range": -0.5 a RuntimeError in nn.init called from transformers'
# initialization.py, 2**31 positions a failed allocation)
_BUILD_ERRORS = (
    KeyError,
    ValueError,
    TypeError,
    AttributeError,
    RuntimeError,
    AssertionError,
    ArithmeticError,
    IndexError,
    MemoryError,
)


def is_model_build_failure(exc: BaseException) -> bool:
    """Whether ``exc``, raised by ``from_config`` / ``from_pretrained`` of a local folder, comes from the
    model code meeting a config.json value it cannot use: the innermost transformers frame on the traceback
    is a model's ``modeling_*.py``, ``activations.py`` or ``initialization.py`` (not ``modeling_utils.py``,
    where weights load)."""
    if not isinstance(exc, _BUILD_ERRORS):
        return False
    name = deepest_transformers_file(exc)
    base = os.path.basename(name)
    return name.endswith(("/transformers/activations.py", "/transformers/initialization.py")) or (
        "/transformers/models/" in name and base.startswith("modeling_") and "/auto/" not in name
    )


def build_error(path: str | Path, exc: BaseException) -> ModelError:
    """A model transformers could not build from its config.json (``is_model_build_failure``)."""
    what = f"unknown value {exc.args[0]!r}" if isinstance(exc, KeyError) and exc.args else one_line(exc)
    return ModelError(
        f"cannot build the model that config.json in {path} describes ({what})",
        "config.json was probably edited or damaged, or holds a value this transformers version does not "
        "support: copy the model folder again, or fix the value named",
    )


def is_tokenizer_read_failure(exc: BaseException) -> bool:
    """Whether ``exc``, raised by ``AutoTokenizer.from_pretrained`` on a local folder, comes from its
    tokenizer files: raised inside transformers' tokenizer code (``tokenization_*.py``, the slow-to-fast
    converter) or by the tokenizers library, which reports a tokenizer.json it cannot parse with a plain
    Exception ("data did not match any variant of untagged enum ...")."""
    if not isinstance(exc, Exception):
        return False
    name = raising_file(exc)
    base = os.path.basename(name)
    in_transformers = "/transformers/" in name and (
        base.startswith("tokenization_") or base == "convert_slow_tokenizer.py"
    )
    return in_transformers or "/tokenizers/" in name


def tokenizer_error(path: str | Path, exc: BaseException) -> ModelError:
    """Tokenizer files transformers could not read (``is_tokenizer_read_failure``) as one sentence."""
    return ModelError(
        f"the tokenizer files in {path} cannot be read ({one_line(exc)})",
        "tokenizer.json, tokenizer_config.json or special_tokens_map.json was probably edited or damaged: "
        "copy the model folder again",
    )


TOKENIZER_FILES = (
    "tokenizer.json, tokenizer_config.json and the vocabulary files (vocab.txt, vocab.json, merges.txt, *.model)"
)


def check_tokenizer_vocabulary(tokenizer: object, path: str | Path) -> None:
    """A model folder without its vocabulary files still gives a tokenizer: transformers builds one that
    knows only the special tokens, and every word becomes [UNK], so a run would train on nothing and
    say nothing. Refused here: a tokenizer far smaller than the model's vocabulary (config.json's
    ``vocab_size``), or of a handful of tokens where the config does not say."""
    import json

    try:
        size = len(tokenizer)  # type: ignore[arg-type]
    except TypeError:  # a remote-code tokenizer without a length: nothing to compare
        return
    vocab = None
    try:
        with open(Path(path) / "config.json", encoding="utf-8") as fh:
            config = json.load(fh)
        vocab = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    except (OSError, ValueError, AttributeError):
        pass
    if (isinstance(vocab, int) and vocab > 0 and size < vocab // 2) or size < 50:
        of = f" of the model's {vocab:,}" if isinstance(vocab, int) and vocab > 0 else ""
        raise ModelError(
            f"the tokenizer in {path} knows only {size:,} tokens{of}: its vocabulary files are missing, "
            "so every word would be read as unknown",
            f"copy the tokenizer files from the model's original folder next to config.json ({TOKENIZER_FILES})",
        )


def _short_module_repr(text: str) -> str:
    """``BertLayer( (attention): ... ) should be used ...`` (transformers prints a whole module first) as
    ``BertLayer(...) should be used ...``."""
    name, paren, _ = text.partition("(")
    if not paren or not name.isidentifier():
        return text
    depth = 0
    for i, ch in enumerate(text[len(name) :], start=len(name)):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return f"{name}(...){text[i + 1 :]}" if i - len(name) > 40 else text
    return text


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's text on one line (huggingface_hub's validation errors span two), at most ``limit`` characters
    (the end of a longer one)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    text = _short_module_repr(text)
    # a long text keeps its end: transformers puts a module's repr first, what went wrong last
    return text if len(text) <= limit else "..." + text[3 - limit :]


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from a local file: safetensors, or a pickle opened with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}", "check the path in the model settings")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelError(
                f"{path.name} is not a readable safetensors file ({exc})",
                "the download may be incomplete: copy the file again",
            ) from exc
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise unpickling_error(path, exc) from exc
    except Exception as exc:
        if not is_weights_read_failure(exc):
            raise
        raise ModelError(
            f"{path.name} is not a readable PyTorch checkpoint ({(str(exc).splitlines() or [type(exc).__name__])[0]})",
            "check that the file is complete and is a state dict",
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path.name} does not hold a state dict of tensors", "save the model with model.state_dict()")
    return state


def unpickling_error(path: Path, exc: BaseException) -> ModelError:
    """A weights-only load that failed: code in the pickle (refused), or bytes that are no checkpoint."""
    text = str(exc)
    if "GLOBAL" in text or "global" in text.lower() and "unsupported" in text.lower() or _pickle_names_code(path):
        return ModelError(
            f"refused to load {path.name}: it contains Python objects that could run code when opened",
            "convert the checkpoint to safetensors with a trusted tool, or use a weights-only checkpoint",
        )
    return ModelError(
        f"{path.name} is not a readable PyTorch checkpoint (damaged, incomplete, or another format)",
        "copy the file again, or use the model's .safetensors weights",
    )


_SAFE_MODULES = ("torch", "collections", "numpy", "_codecs", "builtins")


def _pickle_names_code(path: Path) -> bool:
    """Whether a pickle names a callable outside torch's own (``os.system``...), read with pickletools,
    which only lists the opcodes and runs nothing. Random bytes are no pickle: False, even where their
    first bytes happen to read as a GLOBAL opcode (the whole stream must parse)."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                member = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                data = z.read(member) if member else b""
        else:
            with open(path, "rb") as fh:
                data = fh.read(1 << 24)
        strings: list[str] = []
        names_code = False
        for op, arg, _pos in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                module = str(arg).split(" ", 1)[0]
            elif op.name == "STACK_GLOBAL":
                module = strings[-2] if len(strings) >= 2 else ""
            else:
                if isinstance(arg, str):
                    strings.append(arg)
                continue
            if module.split(".", 1)[0] not in _SAFE_MODULES:
                names_code = True
    except Exception:  # noqa: BLE001 - not a pickle (random bytes, truncated): not code
        return False
    return names_code


def weights_error(path: Path, exc: BaseException) -> ModelError:
    """Any failure to read a model folder's weights as one sentence with the fix (never a traceback)."""
    import pickle

    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, pickle.UnpicklingError):
        cause = cause.__cause__ or cause.__context__
    files = sorted(p for p in Path(path).glob("*.bin")) if Path(path).is_dir() else [Path(path)]
    typed = (OSError, ValueError, RuntimeError, EOFError)
    if cause is None and files and not isinstance(exc, typed) and type(exc).__name__ != "SafetensorError":
        cause = exc  # raised inside torch's unpickler by bytes that are no pickle (IndexError, KeyError ...)
    if cause is not None:
        return unpickling_error(files[0] if files else Path(path), cause)
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "does not appear to have a file named" in msg or "no file named" in msg.lower():
        return ModelError(
            f"{path} has no weights file (model.safetensors or pytorch_model.bin)",
            "the download may be incomplete: copy the weights into the folder",
        )
    if type(exc).__name__ == "SafetensorError" or "safetensors" in msg.lower() or "deserializ" in msg.lower():
        return ModelError(
            f"the weights in {path} are damaged or incomplete ({msg})",
            "the download or copy was probably cut short: copy model.safetensors again",
        )
    if isinstance(exc, PermissionError):
        return ModelError(
            f"the model files in {path} cannot be read: permission denied", "fix the folder's permissions"
        )
    return ModelError(f"cannot load the model in {path}: {msg}", "check that the folder holds a complete model")
