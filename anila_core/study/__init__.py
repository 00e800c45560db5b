"""Runs in folders: the sampler study and comparisons of samplers, on one runner of cells."""
