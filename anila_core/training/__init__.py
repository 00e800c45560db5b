"""Training: the configuration and presets, the loop of Algorithm 1, data sources, runs on disk and distributed training."""
