"""Test helper run by torchrun (tests/training/test_ddp.py): the real CLI, then a fingerprint of each rank's final state
in ``<report dir>/rank<R>.json``.

Usage: ``torchrun --nproc_per_node 2 tests/ddp_worker.py REPORT_DIR -- <CLI arguments> [-- <CLI arguments> ...]``.
Each ``--`` starts one ``python -m anila_core`` command, run in turn in the same processes
and the same process group, which this helper starts and ends (one launch instead of several
keeps the test short; a command finds the group running and leaves it so). The fingerprint of
each command (a hash of the parameters and of the last negative samples) lets the test check
that every rank ends with the same model while running chains of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

import anila_core.training.runs as runs
from anila_core.training import distributed
from anila_core.cli import main


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run(report_dir: Path, commands: list[list[str]]) -> int:
    torch.set_num_threads(1)  # two ranks share the CI machine's cores
    seen = {}
    original = runs.Run.train

    def train(self, *args, **kwargs):
        seen["trainer"] = self.trainer
        return original(self, *args, **kwargs)

    runs.Run.train = train
    rank = int(os.environ.get("RANK", "0"))
    reports = []
    with distributed.process_group(use_cuda=False):
        for argv in commands:
            seen.clear()
            code = main(argv)
            # rank 0 writes the files after the others return: the next command may read them
            torch.distributed.barrier()
            trainer = seen.get("trainer")
            report = {"rank": rank, "world_size": int(os.environ.get("WORLD_SIZE", "1")), "exit_code": code}
            if trainer is not None:
                report.update(
                    iteration=trainer.iteration,
                    params=_digest(trainer.model.parameters()),
                    samples=_digest([trainer.samples]) if trainer.samples is not None else None,
                    history_rows=len(trainer.history),
                )
            reports.append(report)
            if code != 0:
                break
    (report_dir / f"rank{rank}.json").write_text(json.dumps(reports))
    return max(r["exit_code"] for r in reports)


def _commands(args: list[str]) -> list[list[str]]:
    commands, current = [], None
    for arg in args:
        if arg == "--":
            current = []
            commands.append(current)
        elif current is not None:
            current.append(arg)
    return commands


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]), _commands(sys.argv[2:])))
