"""Training: the configuration and presets, the loop of Algorithm 1 (trainer) and its parts (chains, networks,
evaluation, state, guard), data sources, runs on disk and distributed training."""
