"""fine-tune-optimizers: whole-model pipeline search (Kenning-compatible configs)."""
