"""transferbench: fine-tune, LoRA, linear-probe or train from scratch? Measured."""
__version__ = "0.1.0"
