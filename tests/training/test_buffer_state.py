"""The training buffer keeps each chain's sampler state (pSGLD's running average) across iterations, checkpoints and
resumes."""

from __future__ import annotations

import io

import torch

from anila_core.training.presets import preset
from anila_core.training.trainer import Trainer


def psgld_config(**overrides):
    # reinit 0.5: both restarted and carried-over chains occur in every batch
    return preset(
        "smoke",
        "psgld",
        device="cpu",
        step_size=0.003,
        reinit=0.5,
        iters=8,
        eval_every=100,
        checkpoint_every=100,
        **overrides,
    )


def test_a_buffer_chain_continues_with_its_own_running_average():
    trainer = Trainer(psgld_config(), progress=False)
    seen = []
    run = trainer.sampler.run

    def spy(energy_fn, state, *args, **kwargs):
        seen.append({k: v.clone() for k, v in state.extra.items()})
        return run(energy_fn, state, *args, **kwargs)

    trainer.sampler.run = spy
    trainer.train_step()
    assert bool(trainer.chains.has_sampler_state.any())
    stored = trainer.chains.sampler_state["v"].clone()
    filled = trainer.chains.has_sampler_state.clone()
    trainer.train_step()
    kept, index = trainer.chains._kept, trainer.chains._index
    assert bool(kept.any()) and bool((~kept).any())
    # chains drawn from filled slots and not restarted start from the V they ended with
    assert torch.equal(seen[1]["v"][kept], stored[index[kept]])
    assert bool(filled[index[kept]].all())
    # the others start afresh at V = g² of their start: not the stored value
    fresh = ~kept & filled[index]
    if fresh.any():
        assert not torch.equal(seen[1]["v"][fresh], stored[index[fresh]])


def test_a_psgld_buffer_run_resumes_bit_for_bit_from_its_checkpoint():
    whole = Trainer(psgld_config(), progress=False)
    whole.run()
    first = Trainer(psgld_config(), progress=False)
    first.run(iters=4)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = Trainer(psgld_config(), progress=False)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(resumed.chains.sampler_state["v"], first.chains.sampler_state["v"])
    resumed.run()
    for a, b in zip(resumed.model.parameters(), whole.model.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(resumed.chains.buffer, whole.chains.buffer)
    assert torch.equal(resumed.chains.sampler_state["v"], whole.chains.sampler_state["v"])


def test_memoryless_samplers_store_no_sampler_state():
    trainer = Trainer(preset("smoke", "anila", device="cpu", iters=2), progress=False)
    trainer.train_step()
    assert trainer.chains.sampler_state == {} and not bool(trainer.chains.has_sampler_state.any())
