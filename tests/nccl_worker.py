"""Test helper run by torchrun (tests/test_gpu.py): the package's process group on one GPU (NCCL), its collectives, DDP,
and the CLI inside the group.

Usage: ``torchrun --standalone --nproc_per_node 1 tests/nccl_worker.py REPORT_JSON RUN_DIR DEVICE``.
With one process the package starts no group of its own (``WORLD_SIZE=1`` is a single run),
so this helper starts it with the backend the package picks for ``DEVICE``
(:func:`anila_core.training.distributed.backend_for`: NCCL on CUDA), then checks what the
trainer relies on under torchrun: the object collectives, the gradient all-reduce through
``DistributedDataParallel``, and a training command that finds the group running.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from anila_core.cli import main
from anila_core.nets import MLPEnergy
from anila_core.training import distributed
from cli_commands import smoke_argv  # beside this script, which torchrun runs from its folder


def run(report_path: Path, run_dir: Path, device: torch.device) -> int:
    use_cuda = device.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(0)  # NCCL's object collectives send through the current device
    dist.init_process_group(backend=distributed.backend_for(use_cuda))
    report: dict = {"backend": dist.get_backend(), "world_size": dist.get_world_size()}
    try:
        total = distributed.all_reduce_sum(torch.arange(4.0, device=device))
        report["all_reduce"] = total.cpu().tolist()
        report["broadcast"] = distributed.broadcast_object({"iteration": 7, "device": str(device)})
        report["gather"] = distributed.gather_objects({"rank": dist.get_rank()})

        torch.manual_seed(0)
        plain = MLPEnergy(2, 16, 2).to(device)
        wrapped = torch.nn.parallel.DistributedDataParallel(
            MLPEnergy(2, 16, 2).to(device), device_ids=[device.index or 0] if use_cuda else None
        )
        wrapped.module.load_state_dict(plain.state_dict())
        x = torch.randn(32, 2, device=device)
        plain(x).mean().backward()
        wrapped(x).mean().backward()  # DDP all-reduces the gradients (averaged over one rank: unchanged)
        report["ddp_grad_max_diff"] = max(
            float((a.grad - b.grad).abs().max()) for a, b in zip(plain.parameters(), wrapped.module.parameters())
        )
        report["ddp_grad_max"] = max(float(p.grad.abs().max()) for p in plain.parameters())

        flags = ["--sampler", "anila", "--device", device.type, "--iters", "6", "--checkpoint-every", "3"]
        code = main(smoke_argv("train", *flags, out=run_dir))
        report["train_exit_code"] = code
        report["group_still_running"] = dist.is_initialized()  # the command used the group and left it to its owner
    finally:
        report_path.write_text(json.dumps(report))
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]), Path(sys.argv[2]), torch.device(sys.argv[3])))
