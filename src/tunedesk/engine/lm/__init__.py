"""Language models: LoRA adapters, LM data and chat format, LM export and generation."""
