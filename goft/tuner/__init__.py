"""GOFT as a PEFT method, shaped like ``peft/tuners/<method>/``: config, layer, model, trainer, registration."""
