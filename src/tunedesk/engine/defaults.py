"""Fine-tuning defaults: a learning rate per family, scaled by model size, and a faster rate for new layers.

The old rule ("about a tenth of the family's pre-training rate") told the right story but its
numbers under-trained small encoders: all-MiniLM-L6-v2 at 1e-5 reached 0.51 validation accuracy on
real data where 1e-4 reached 0.73. The numbers below are the fine-tuning rates the families' papers
and reference recipes use for their base size (about 110 M parameters, AdamW, batch 16-32), and the
rate grows with the square root of how much smaller the model is (ELECTRA's recipe: 3e-4 small,
1e-4 base, 5e-5 large). Checked against a grid of fixed recipes on three real labelled data sets
with the bundled MiniLM (benchmarks/default_quality.py, docs/benchmarks.md).
"""

from __future__ import annotations

import math

# Body fine-tuning rate at the family's base size (AdamW), from each family's paper / reference recipe.
FINETUNE_LR: dict[str, float] = {
    "bert": 5e-5,
    "distilbert": 5e-5,
    "roberta": 3e-5,
    "xlm-roberta": 3e-5,
    "camembert": 3e-5,
    "deberta": 3e-5,
    "deberta-v2": 3e-5,
    "electra": 1e-4,
    "albert": 3e-5,
    "mpnet": 5e-5,
    "gpt2": 5e-5,
    "llama": 2e-5,
    "mistral": 2e-5,
    "qwen2": 2e-5,
    "qwen3": 2e-5,
    "phi": 2e-5,
    "phi3": 2e-5,
    "gemma": 2e-5,
    "gpt_neox": 2e-5,
    "opt": 2e-5,
    "vit": 5e-5,
    "deit": 5e-5,
    "beit": 5e-5,
    "swin": 5e-5,
    "dinov2": 2e-5,
    "convnext": 1e-4,
    "resnet": 1e-4,
    "efficientnet": 1e-4,
    "mobilenet": 1e-4,
    "regnet": 1e-4,
    "densenet": 1e-4,
    "vgg": 5e-5,
}
DEFAULT_FINETUNE_LR = 5e-5
REFERENCE_PARAMS = 110e6  # the size the family rates are for (BERT-base)
SIZE_EXPONENT = 0.5  # rate ~ (reference / params) ** 0.5
SIZE_FACTOR_RANGE = (0.25, 3.0)  # never more than 3x faster or 4x slower than the family rate
FROM_SCRATCH_LR = 3e-4  # a model with random weights has nothing to protect: a pre-training-like rate


def _family_rate(family: str) -> float | None:
    key = (family or "").lower()
    if key in FINETUNE_LR:
        return FINETUNE_LR[key]
    for name in sorted(FINETUNE_LR, key=len, reverse=True):  # "xlm-roberta" before "roberta"
        if key.startswith(name):
            return FINETUNE_LR[name]
    return None


def _millions(n: int) -> str:
    """23 M, 7,504 M; under ten million with one or two decimals (0.16 M), never "0 M"."""
    m = n / 1e6
    return f"{m:,.0f} M" if m >= 10 else f"{m:.1f} M" if m >= 1 else f"{m:.2f} M"


def _round(lr: float) -> float:
    return float(f"{lr:.1g}")


def suggested_learning_rate(
    family: str, total_params: int | None = None, pretrained: bool = True, task: str = ""
) -> tuple[float, str]:
    """The suggested fine-tuning rate for a model, and the sentence that explains it."""
    if not pretrained:
        return FROM_SCRATCH_LR, (
            f"learning rate {FROM_SCRATCH_LR:g}: the model starts from random weights, so it trains at a "
            "pre-training-like rate"
        )
    base = _family_rate(family)
    known = base is not None
    base = base or DEFAULT_FINETUNE_LR
    why_base = (
        f"the {family} family's fine-tuning rate {base:g}"
        if known
        else f"a typical fine-tuning rate {base:g} (TuneDesk has no reference rate for the {family or 'unknown'} family)"
    )
    if not total_params:
        lr = _round(base)
        return lr, (
            f"learning rate {lr:g}: {why_base}; calibrated on three real labelled data sets (docs/benchmarks.md)"
        )
    lo, hi = SIZE_FACTOR_RANGE
    factor = min(hi, max(lo, (REFERENCE_PARAMS / total_params) ** SIZE_EXPONENT))
    lr = _round(base * factor)
    if math.isclose(factor, 1.0, rel_tol=0.15):
        size = f"for a model of its base size ({_millions(total_params)} parameters)"
    elif factor > 1:
        size = (
            f"×{factor:.1f} because this model ({_millions(total_params)} parameters) is smaller than the "
            f"{REFERENCE_PARAMS / 1e6:.0f} M the rate is for (smaller models take larger steps)"
        )
    else:
        size = (
            f"×{factor:.2f} because this model ({_millions(total_params)} parameters) is larger than the "
            f"{REFERENCE_PARAMS / 1e6:.0f} M the rate is for"
        )
    return lr, (
        f"learning rate {lr:g}: {why_base} {size}; calibrated on three real labelled data sets (docs/benchmarks.md)"
    )


NEW_LAYER_LR = 1e-3  # AdamW's usual rate for a freshly initialised layer


def suggested_head_learning_rate(lr: float, task: str = "") -> float:
    """A new head starts from random weights: it trains at least at AdamW's usual rate for a new
    layer (1e-3), and never slower than ten times the pre-trained body."""
    return max(lr * 10, NEW_LAYER_LR)
