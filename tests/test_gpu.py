"""The GPU path (marker ``gpu``, run by ``make gpu-check``): compiled and CUDA-graph chains equal eager ones on CUDA,
bf16 chains stay finite, runs resume across devices, NCCL and DDP on one GPU.

Without CUDA every ``gpu`` test is skipped, saying so. ``ANILA_GPU_TESTS_ON_CPU=1`` runs them
on the CPU instead, leaving out what only CUDA has (CUDA graphs, NCCL, bf16 autocast), to
check the tests themselves where no GPU is lent. One test here is not marked: the resume
across device kinds, simulated on the CPU with a CUDA-sized generator state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from anila_core.cli import main
from anila_core.fileio import read_jsonl
from anila_core.images.convnets import make_convnet
from anila_core.sampling import compiled as fast
from anila_core.sampling import samplers as samplers_module
from anila_core.sampling.samplers import PSGLD, AniLA, Langevin
from anila_core.training.presets import preset
from anila_core.training.runs import CHECKPOINT
from anila_core.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # image_fixtures beside this file, also when run from another folder

from image_fixtures import write_tiny_cifar10  # noqa: E402
from cli_commands import smoke_argv, torchrun_argv  # noqa: E402

ON_CPU = os.environ.get("ANILA_GPU_TESTS_ON_CPU") == "1"
NO_CUDA = "needs CUDA: no GPU here (torch.cuda.is_available() is False); `make gpu-check` on a GPU machine runs it"

# Compiled and eager transitions differ in rounding only (fused kernels sum in another order); on CUDA
# the fused kernels also use FMA, a little more than on a CPU, still far below a step's size.
TOL = dict(rtol=1e-4, atol=1e-4)
K = 12


@pytest.fixture(scope="module")
def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if ON_CPU:
        return torch.device("cpu")
    pytest.skip(NO_CUDA)


def _cuda_only(device: torch.device, what: str) -> None:
    if device.type != "cuda":
        pytest.skip(f"{what} needs CUDA (the rest of this file ran on the CPU)")


class FlatEnergy(nn.Module):
    """A small energy of image-shaped batches ``(N, 3, 4, 4)``: cheap to compile, and the pixel norm has channels to sum
    over."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(48, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 1)
        )

    def forward(self, x):
        return self.net(x).squeeze(-1)


def _samplers(b: float) -> dict:
    """Every sampler and norm the package has, unadjusted and Metropolis-adjusted; ``b`` where about half the steps
    shrink."""
    out = {"langevin": Langevin(0.05), "langevin-mala": Langevin(0.05, metropolis=True), "psgld": PSGLD(1e-3)}
    for norm in ("coordinate", "pixel", "sample"):
        out[f"anila-{norm}"] = AniLA(0.05, b=b, norm=norm)
        out[f"anila-{norm}-mala"] = AniLA(0.05, b=b, norm=norm, metropolis=True)
    hmc = getattr(samplers_module, "SAMPLERS", {}).get("hmc")  # once the package has one, it is checked too
    if hmc is not None:
        out["hmc"] = hmc(0.05)
    return out


SAMPLER_NAMES = list(_samplers(1.0))


@pytest.fixture(scope="module")
def energy_and_start(device):
    torch.manual_seed(0)
    net = FlatEnergy().to(device)
    x0 = torch.randn(64, 3, 4, 4, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.enable_grad():
        x = x0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(x).sum(), x)
    return net, x0, float(g.abs().median())


def _chain(sampler, net, x0, device, **kw):
    return sampler.sample(net, x0, K, generator=torch.Generator(device=device).manual_seed(7), **kw)


def _new_entries(before: set) -> list[dict]:
    return [r for r in fast.cache_info() if r["name"] not in before]


@pytest.mark.gpu
@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_compiled_and_cuda_graph_chains_equal_the_eager_chain(device, energy_and_start, name):
    net, x0, b = energy_and_start
    sampler = _samplers(b)[name]
    eager = _chain(sampler, net, x0, device, fast=False)
    assert (
        torch.isfinite(eager).all() and (eager - x0).abs().max() > 1e-3
    )  # the chain moved: equality below means something

    before = {r["name"] for r in fast.cache_info()}
    compiled = _chain(sampler, net, x0, device, fast=True)
    made = _new_entries(before)
    assert made and all(r["failed"] is None and r["compile_s"] is not None for r in made), (
        made
    )  # compiled, not the eager fallback
    torch.testing.assert_close(compiled, eager, **TOL)

    if device.type == "cuda":
        sampler = sampler.with_cuda_graphs()
        before = {r["name"] for r in fast.cache_info()}
        graphed = _chain(sampler, net, x0, device, fast=True)
        again = _chain(sampler, net, x0, device, fast=True)  # a replay of the recorded graphs
        made = _new_entries(before)
        assert made and all(r["mode"] == "reduce-overhead" and r["failed"] is None for r in made), made
        torch.testing.assert_close(graphed, eager, **TOL)
        torch.testing.assert_close(again, graphed, rtol=0, atol=0)  # same seed, same graphs: the same numbers


@pytest.mark.gpu
@pytest.mark.parametrize(
    "sampler",
    [Langevin(1.0, noise_scale=0.01), AniLA(1.0, b=0.05, noise_scale=0.01, norm="pixel")],
    ids=["langevin", "anila-pixel"],
)
def test_bf16_autocast_chains_stay_finite_in_float32(device, sampler):
    _cuda_only(device, "bf16 autocast")
    torch.manual_seed(0)
    net = make_convnet((3, 32, 32), width=16).to(device)

    def energy(x):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return net(x).float()

    x0 = torch.rand(32, 3, 32, 32, device=device) * 2 - 1
    x = sampler.sample(energy, x0, 30, generator=torch.Generator(device=device).manual_seed(0), fast=False)
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    assert (x - x0).abs().max() > 1e-3


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_tiny_cifar10(root, n_per_batch=8)
    return root


@pytest.mark.gpu
def test_trainer_with_amp_bf16_on_images_stays_finite(device, cifar_root, monkeypatch):
    monkeypatch.setenv("ANILA_DATA_VERIFY", "0")  # the tiny files' checksums are not the official ones
    config = preset(
        "smoke", "anila", dataset="cifar10", data_root=str(cifar_root), device=device.type, amp="bf16", fast=False
    )
    trainer = Trainer(config, progress=False)
    assert trainer.nets.amp == (device.type == "cuda")  # bf16 on CUDA; a CPU computes in float32 (and says so)
    for _ in range(3):
        stats = trainer.train_step()
    assert torch.isfinite(trainer.samples).all() and trainer.samples.dtype == torch.float32
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in stats.values() if isinstance(v, (torch.Tensor, float)))
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def _train(argv: list[str]) -> int:
    return main([*argv, "--no-progress"])


def _train_ten_iterations(device: str, out) -> int:
    """A smoke AniLA run of 10 iterations on ``device`` into ``out``, checkpointed at 5 and 10."""
    return _train(
        smoke_argv("train", *"--sampler anila --iters 10 --checkpoint-every 5 --device".split(), device, "--out", out)
    )


@pytest.mark.gpu
@pytest.mark.parametrize("first, then", [("cpu", "cuda"), ("cuda", "cpu")])
def test_a_run_resumes_on_the_other_device_and_continues(device, tmp_path, first, then):
    first, then = (first if device.type == "cuda" else "cpu"), (then if device.type == "cuda" else "cpu")
    out = tmp_path / "run"
    assert _train_ten_iterations(first, out) == 0
    rows_before = read_jsonl(out / "metrics.jsonl")
    saved = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)

    assert _train(["train", "--resume", "--iters", "20", "--device", then, "--out", str(out)]) == 0
    state = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)
    rows = read_jsonl(out / "metrics.jsonl")
    assert state["iteration"] == 20 and json.loads((out / "final.json").read_text())["iters"] == 20
    assert json.loads((out / "config.json").read_text())["device"] == then
    strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_s"} for r in rs]  # noqa: E731
    assert strip(rows[: len(rows_before)]) == strip(rows_before)  # the first half kept, not trained again
    assert [r["iter"] for r in rows][-1] == 20 and len(rows) > len(rows_before)
    moved = any(not torch.equal(state["model"][k], saved["model"][k]) for k in saved["model"])
    assert moved and all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.gpu
def test_nccl_process_group_and_ddp_on_one_gpu_through_torchrun(device, tmp_path):
    import torch.distributed as dist

    if device.type == "cuda" and not dist.is_nccl_available():
        pytest.fail("this torch build has no NCCL, which multi-GPU training needs")
    report = tmp_path / "report.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    argv = torchrun_argv(1, ROOT / "tests" / "nccl_worker.py", report, tmp_path / "run", device.type)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads(report.read_text())
    assert r["backend"] == ("nccl" if device.type == "cuda" else "gloo") and r["world_size"] == 1
    assert r["all_reduce"] == [0.0, 1.0, 2.0, 3.0]
    assert r["broadcast"] == {"iteration": 7, "device": device.type} and r["gather"] == [{"rank": 0}]
    assert r["ddp_grad_max"] > 0 and r["ddp_grad_max_diff"] <= 1e-6 * r["ddp_grad_max"]
    assert r["train_exit_code"] == 0 and r["group_still_running"]
    assert (tmp_path / "run" / "final.json").is_file()


def test_resume_on_another_kind_of_device_reseeds_the_chain_generator(tmp_path, capsys):
    """Simulated on the CPU: a checkpoint whose generator state has CUDA's size (16 bytes: Philox seed and offset)."""
    out = tmp_path / "run"
    assert _train_ten_iterations("cpu", out) == 0
    state = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)
    with pytest.raises(RuntimeError):  # what resuming did before: the states do not fit each other's generators
        torch.Generator().set_state(torch.zeros(16, dtype=torch.uint8))
    state["generator"] = torch.arange(16, dtype=torch.uint8)
    torch.save(state, out / CHECKPOINT)
    capsys.readouterr()

    assert _train(["train", "--resume", "--iters", "20", "--device", "cpu", "--out", str(out)]) == 0
    assert "saved on another kind of device" in capsys.readouterr().err
    assert torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)["iteration"] == 20

    # deterministic: the same foreign state gives the same continued run
    from anila_core.training.checkpoint_file import fit_generator_states

    a, b = {"generator": torch.arange(16, dtype=torch.uint8)}, {"generator": torch.arange(16, dtype=torch.uint8)}
    assert fit_generator_states(a, torch.device("cpu")) and fit_generator_states(b, torch.device("cpu"))
    assert torch.equal(a["generator"], b["generator"])
    native = {"generator": torch.Generator().manual_seed(3).get_state()}
    kept = native["generator"].clone()
    assert not fit_generator_states(native, torch.device("cpu")) and torch.equal(native["generator"], kept)
