"""The command lines the tests run most: a subcommand at the smoke preset (on the digits), the tiny sweep, torchrun."""

import sys


def smoke_argv(command: str, *flags, out=None) -> list[str]:
    """``COMMAND --preset smoke FLAGS``, then ``--out OUT --no-progress`` when ``out`` is given; every value a string
    (paths and numbers may be passed as they are)."""
    argv = [command, "--preset", "smoke", *map(str, flags)]
    return argv if out is None else [*argv, "--out", str(out), "--no-progress"]


def digits_argv(command: str, data_root, *flags, out=None) -> list[str]:
    """:func:`smoke_argv` on the 8×8 digits found in ``data_root``."""
    return smoke_argv(command, "--dataset", "digits", "--data-root", data_root, *flags, out=out)


#: a tiny grid on the command line: two cells (Langevin, AniLA at b = 3) of 10 iterations, evaluated at 5 and 10
TINY_SWEEP = smoke_argv(
    "sweep", *"--samplers langevin anila --step-size 0.01 --b 3 --n-steps 5 --iters 10 --eval-every 5".split()
) + ["--no-progress"]


def torchrun_argv(processes: int, script, *args) -> list[str]:
    """``python -m torch.distributed.run`` starting ``processes`` copies of ``script`` on this machine alone."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
        str(script),
        *map(str, args),
    ]
