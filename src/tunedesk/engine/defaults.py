"""Fine-tuning defaults: a learning rate about a tenth of the family's usual pre-training rate."""

from __future__ import annotations

# Peak pre-training learning rates reported by each family's paper or reference recipe (AdamW
# equivalents for the SGD-trained convnets).
PRETRAINING_LR: dict[str, float] = {
    "bert": 1e-4,
    "distilbert": 5e-4,
    "roberta": 6e-4,
    "xlm-roberta": 6e-4,
    "deberta": 2e-4,
    "deberta-v2": 2e-4,
    "electra": 5e-4,
    "albert": 1.76e-3,
    "mpnet": 1e-4,
    "camembert": 6e-4,
    "gpt2": 2.5e-4,
    "llama": 3e-4,
    "mistral": 3e-4,
    "qwen2": 3e-4,
    "qwen3": 3e-4,
    "phi": 2e-4,
    "phi3": 2e-4,
    "gemma": 3e-4,
    "gpt_neox": 3e-4,
    "opt": 3e-4,
    "vit": 1e-3,
    "deit": 1e-3,
    "beit": 1.5e-3,
    "swin": 1e-3,
    "convnext": 4e-3,
    "dinov2": 1e-3,
    "resnet": 1e-3,
    "efficientnet": 1e-3,
    "mobilenet": 1e-3,
    "regnet": 1e-3,
    "densenet": 1e-3,
    "vgg": 1e-3,
}
DEFAULT_PRETRAINING_LR = 5e-4


def suggested_learning_rate(family: str) -> tuple[float, str]:
    """The suggested fine-tuning rate for a model family, and the sentence that explains it."""
    key = (family or "").lower()
    pre = PRETRAINING_LR.get(key)
    if pre is None:
        for name, value in PRETRAINING_LR.items():
            if key.startswith(name):
                pre = value
                break
    known = pre is not None
    pre = pre or DEFAULT_PRETRAINING_LR
    lr = float(f"{pre / 10:.2g}")
    if known:
        why = (
            f"learning rate {lr:g}: about a tenth of the {family} family's usual pre-training rate ({pre:g}), "
            "so fine-tuning adapts the pre-trained features instead of overwriting them"
        )
    else:
        why = (
            f"learning rate {lr:g}: a tenth of a typical pre-training rate ({pre:g}); "
            f"TuneDesk has no reference rate for the {family or 'unknown'} family"
        )
    return lr, why


NEW_LAYER_LR = 1e-3  # AdamW's usual rate for a freshly initialised layer


def suggested_head_learning_rate(lr: float) -> float:
    """A new head starts from random weights: it trains at least at AdamW's usual rate for a new
    layer (1e-3), and never slower than ten times the pre-trained body."""
    return max(lr * 10, NEW_LAYER_LR)
