"""Recovery training of a pruned model: LoRA SFT and logit distillation (paper Sec. 4)."""
