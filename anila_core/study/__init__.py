"""The sampler study: grids of training runs in parallel, resumable, summarised as tables and heatmaps."""
