"""Sampling: known 2-D targets, the sampler kernel, its compiled transition, global moves, convergence diagnostics and 2-D distances."""
