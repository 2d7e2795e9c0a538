"""Fine-tuning: training data, LoRA / full training with checkpoints, adapters."""
