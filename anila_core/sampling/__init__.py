"""Sampling: 2-D targets, the sampler kernel, its compiled step and when to compile, global moves, diagnostics."""
