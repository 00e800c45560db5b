"""Whether a checkpoint can resume a run of a configuration: each part checked, one ``ValueError`` saying what fails."""

from __future__ import annotations

import math
import numbers

import torch

from anila_core import __version__
from anila_core.device import resolve_device
from anila_core.training.chains import ChainState
from anila_core.training.config import RESUMABLE_FIELDS, TrainConfig, changed_settings, describe_changes
from anila_core.training.kinds import data_kind
from anila_core.training.networks import build_energy

__all__ = ["CHECKPOINT_FORMAT", "validate_checkpoint", "check_same_data"]

#: the on-disk format of ``checkpoint.pt``: the keys :meth:`anila_core.training.state.TrainState.state_dict` writes
CHECKPOINT_FORMAT = 1


def validate_checkpoint(
    state: dict,
    config: TrainConfig,
    data_shape: tuple[int, ...] | None = None,
    device: torch.device | str | None = None,
    model: torch.nn.Module | None = None,
) -> None:
    """Refuse a checkpoint that cannot resume a run of ``config``: one ``ValueError`` saying what is wrong and expected.

    Checked: the format, the settings (those a resume may not change), the iteration (within
    ``[0, config.iters]``), the model's and the EMA's names, shapes and finiteness, the
    optimiser's moments, the replay buffer's size and shape, the generator states (the right
    kind for ``device``'s generator), the history and the rollback record. ``data_shape`` and
    ``device`` default to what ``config`` implies; nothing is read from disk (but the files of
    data of your own, for their shape) and no global random state changes, so a loader can call
    it before anything else. ``model``: the network the weights must fit (a module given in
    memory); by default the one ``config`` builds.
    """
    if not isinstance(state, dict):
        raise ValueError(
            f"checkpoint: expected a dict written by anila_core's Trainer.state_dict, got {type(state).__name__}"
        )
    _check_format(state)
    _check_settings(state.get("config"), config)
    for key in ("model", "optimizer", "iteration", "wall_s", "history"):
        if key not in state:
            raise ValueError(
                f"checkpoint: lacks {key!r}; expected a complete checkpoint written by anila_core's Trainer.state_dict"
            )
    _check_iteration(state["iteration"], config.iters)
    kind = data_kind(config)
    shape = tuple(data_shape) if data_shape is not None else kind.shape()
    with torch.random.fork_rng(devices=[]):  # building the reference network draws its initial weights
        reference = build_energy(config, shape, model)
    _check_weights("model", state["model"], reference)
    if config.ema > 0:
        _check_weights("EMA model", state.get("ema_model"), reference)
    _check_optimizer(state["optimizer"], reference)
    _check_optimizer_settings(state["optimizer"], reference, config, state["iteration"])
    device = torch.device(device) if device is not None else resolve_device(config.device)
    ranks = state.get("ranks")
    if ranks is not None and not isinstance(ranks, list):
        raise ValueError(
            f"checkpoint: its 'ranks' is a {type(ranks).__name__}; expected a list of per-rank chain states"
        )
    for where, chains in [("", state)] + [(f"rank {i}'s ", r) for i, r in enumerate(ranks or [])]:
        _check_chains(where, chains, config, shape, device, kind.own_data_stream)
    _check_records(state)
    _check_history(state["history"], state["iteration"], config)


def _check_format(state: dict) -> None:
    fmt = state.get("format")
    if fmt is None:
        raise ValueError(
            f"checkpoint: has no format number, so no anila_core Trainer wrote it; expected an anila_core "
            f"checkpoint of format {CHECKPOINT_FORMAT}"
        )
    if fmt != CHECKPOINT_FORMAT:
        writer = state.get("anila_core_version")
        by = f" (written by anila_core {writer})" if writer else ""
        raise ValueError(
            f"checkpoint: format {fmt!r}{by} cannot be read by anila_core {__version__}, "
            f"which reads format {CHECKPOINT_FORMAT}; resume it with the version that wrote it"
        )


def _check_settings(saved, config: TrainConfig) -> None:
    """The settings the checkpoint was trained with must be ``config``'s, but for those a resume may change."""
    if not isinstance(saved, dict):
        return  # a checkpoint without its config: the weights' shapes are checked instead
    mine = config.with_fixed_schedule().to_dict()  # what a Trainer of this config fixes when it starts
    differ = changed_settings(saved, mine)
    if differ:
        changes = describe_changes(differ, saved, mine, "in the checkpoint", "in this configuration")
        raise ValueError(
            f"checkpoint: was trained with other settings: {changes}; "
            f"expected the settings of the run it belongs to (only {', '.join(RESUMABLE_FIELDS)} may "
            "change on resume)"
        )


def _check_iteration(iteration, iters: int) -> None:
    if not isinstance(iteration, numbers.Integral) or isinstance(iteration, bool) or not 0 <= iteration <= iters:
        raise ValueError(
            f"checkpoint: its iteration is {iteration!r}; expected an integer in [0, {iters}] "
            f"(from 0 up to this configuration's iters = {iters})"
        )


def _check_weights(what: str, saved, reference: torch.nn.Module) -> None:
    """``saved`` must be a state_dict of ``reference``'s names and shapes, with finite values."""
    mismatch = _state_mismatch(reference, saved)
    if mismatch:
        raise ValueError(
            f"checkpoint: its {what} does not match this configuration's architecture: {mismatch}; "
            "expected a checkpoint written with the same network settings"
        )
    for key, value in saved.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(
                f"checkpoint: its {what}'s {key} holds NaN or infinite values; expected finite parameters "
                "(a state saved after a divergence cannot be resumed)"
            )


def _state_mismatch(model: torch.nn.Module, saved) -> str:
    """How a saved ``state_dict`` differs from ``model``'s in names and shapes ('' when it fits)."""
    if not isinstance(saved, dict):
        return f"the checkpoint holds no weights for it (got {type(saved).__name__})"
    mine = model.state_dict()
    problems = []
    for key in list(mine) + [k for k in saved if k not in mine]:
        if key not in saved:
            problems.append(f"{key} is missing from the checkpoint")
        elif key not in mine:
            problems.append(f"the checkpoint's {key} has no place in this network")
        elif not isinstance(saved[key], torch.Tensor):
            problems.append(f"{key} is a {type(saved[key]).__name__} in the checkpoint, a tensor in this configuration")
        elif tuple(saved[key].shape) != tuple(mine[key].shape):
            problems.append(
                f"{key} has shape {tuple(saved[key].shape)} in the checkpoint, {tuple(mine[key].shape)} "
                "in this configuration"
            )
        elif saved[key].dtype != mine[key].dtype:
            problems.append(
                f"{key} has dtype {saved[key].dtype} in the checkpoint, {mine[key].dtype} in this configuration"
            )
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def _check_optimizer(saved, reference: torch.nn.Module) -> None:
    """``saved`` must be an Adam state_dict: one group over ``reference``'s parameters, moments of their shapes."""
    params = list(reference.named_parameters())
    if not (
        isinstance(saved, dict)
        and isinstance(saved.get("state"), dict)
        and isinstance(saved.get("param_groups"), list)
        and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in saved["param_groups"])
    ):
        raise ValueError(
            f"checkpoint: its optimizer state is not an Adam state_dict (got {type(saved).__name__}); "
            "expected a dict with 'state' and 'param_groups', as torch.optim.Adam.state_dict() writes"
        )
    indices = [i for group in saved["param_groups"] for i in group["params"]]
    if len(saved["param_groups"]) != 1 or len(indices) != len(params):
        raise ValueError(
            f"checkpoint: its optimizer holds {len(indices)} parameter(s) in "
            f"{len(saved['param_groups'])} group(s); expected one group of {len(params)}, the parameters "
            "of this configuration's network"
        )
    for index, (name, p) in zip(indices, params):
        moments = saved["state"].get(index)
        if moments is None:
            continue  # no step taken yet
        for key in ("exp_avg", "exp_avg_sq"):
            value = moments.get(key) if isinstance(moments, dict) else None
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(p.shape):
                got = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else f"{type(value).__name__}"
                raise ValueError(
                    f"checkpoint: its optimizer's {key} for {name} has {got}; expected shape "
                    f"{tuple(p.shape)}, the shape of that parameter"
                )
            if value.dtype != p.dtype:
                raise ValueError(
                    f"checkpoint: its optimizer's {key} for {name} has dtype {value.dtype}; expected "
                    f"{p.dtype}, the dtype of that parameter"
                )
            if not bool(torch.isfinite(value).all()) or (key == "exp_avg_sq" and bool((value < 0).any())):
                raise ValueError(
                    f"checkpoint: its optimizer's {key} for {name} holds NaN"
                    f"{', infinite or negative' if key == 'exp_avg_sq' else ' or infinite'} values; "
                    "expected the finite moments Adam keeps (the file is damaged or was altered)"
                )
        step = moments.get("step") if isinstance(moments, dict) else None
        if step is not None:
            number = (
                float(step)
                if isinstance(step, (torch.Tensor, numbers.Real))
                and not isinstance(step, bool)
                and (not isinstance(step, torch.Tensor) or step.numel() == 1)
                else None
            )
            if number is None or not math.isfinite(number) or number < 0 or number != int(number):
                raise ValueError(
                    f"checkpoint: its optimizer's step count for {name} is {step!r}; expected a whole "
                    "number >= 0 "
                    "(the Adam steps taken)"
                )


#: Adam's settings that change what a step computes: a resumed optimiser must have the configuration's
_ADAM_SETTINGS = ("betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay")


def _check_optimizer_settings(saved: dict, reference: torch.nn.Module, config: TrainConfig, iteration: int) -> None:
    """The saved Adam group's settings must be those a trainer makes from ``config`` (the learning rate: in range)."""
    group = saved["param_groups"][0]
    mine = torch.optim.Adam(reference.parameters(), lr=config.lr, betas=(config.beta1, config.beta2)).param_groups[0]
    for key in _ADAM_SETTINGS:
        if key not in group or key not in mine:
            continue  # a setting one torch version has and the other lacks
        theirs, ours = group[key], mine[key]
        if key == "betas" and isinstance(theirs, (list, tuple)):
            theirs = tuple(theirs)
        if theirs != ours:
            raise ValueError(
                f"checkpoint: its optimizer's {key} is {group[key]!r}, this configuration's is {ours!r}; "
                "expected the "
                "Adam settings of the run (beta1, beta2, lr in config.json; no weight decay, no "
                "maximize): the file "
                "is from another optimiser or was altered"
            )
    lr = group.get("lr")
    if not isinstance(lr, numbers.Real) or isinstance(lr, bool) or not 0 <= lr <= config.lr * (1 + 1e-6):
        raise ValueError(
            f"checkpoint: its optimizer's learning rate is {lr!r}; expected a number in [0, lr = "
            f"{config.lr}] "
            f"(the {config.lr_schedule} schedule never exceeds lr)"
        )


def _check_history(history: list, iteration: int, config: TrainConfig) -> None:
    """Every row a dict with an integer ``iter`` and numbers for its measures, in increasing order, agreeing with the
    iteration."""
    previous = 0
    for i, row in enumerate(history):
        it = row.get("iter")
        if not isinstance(it, int) or isinstance(it, bool) or not previous < it <= iteration:
            raise ValueError(
                f"checkpoint: its history's row {i} has iter {it!r}; expected an integer above the "
                "previous row's "
                f"({previous}) and at most the checkpoint's iteration ({iteration}): rows in training "
                "order"
            )
        for key in ("energy_gap", "loss", "grid_tv", "grid_kl", "mmd", "sliced_wasserstein", "fid", "kid"):
            value = row.get(key)
            if key in row and value is not None and (not isinstance(value, numbers.Real) or isinstance(value, bool)):
                raise ValueError(f"checkpoint: its history's row {i} has {key} = {value!r}; expected a number")
        if "energy_gap" not in row:
            raise ValueError(
                f"checkpoint: its history's row {i} lacks energy_gap; expected the evaluation rows a run writes"
            )
        previous = it
    # evaluations happen at least every eval_every iterations: a counter far past the last row disagrees with the
    # history
    if iteration - previous > config.eval_every:
        raise ValueError(
            f"checkpoint: its iteration is {iteration} but its history ends at iteration {previous}, "
            "with an "
            f"evaluation every {config.eval_every}; expected the rows of every evaluation up to the "
            "iteration "
            "(the file is damaged or was altered)"
        )


def _check_generator(what: str, saved, device: torch.device) -> None:
    """``saved`` must be a state that ``device``'s ``torch.Generator`` accepts (a byte tensor of its size)."""
    expected = torch.Generator(device=device).get_state()
    if not isinstance(saved, torch.Tensor) or saved.dtype != expected.dtype or saved.numel() != expected.numel():
        got = (
            f"a {saved.dtype} tensor of {saved.numel()} element(s)"
            if isinstance(saved, torch.Tensor)
            else f"a {type(saved).__name__}"
        )
        raise ValueError(
            f"checkpoint: its {what} is {got}; expected the state of a {device.type} torch.Generator, "
            f"a {expected.dtype} tensor of {expected.numel()} bytes"
        )


def _check_chains(
    where: str, chains, config: TrainConfig, shape: tuple[int, ...], device: torch.device, own_data_stream: bool
) -> None:
    """One rank's :class:`ChainState` (``where`` says which, '' for rank 0's at the top level)."""
    if not isinstance(chains, dict):
        raise ValueError(
            f"checkpoint: {where}chain state is a {type(chains).__name__}; expected a dict with "
            f"{list(ChainState.keys())}"
        )
    state = ChainState.from_dict(chains)
    if config.chains == "buffer":
        want = (config.buffer_size, *shape)
        got = tuple(state.buffer.shape) if isinstance(state.buffer, torch.Tensor) else None
        if got != want or not state.buffer.is_floating_point():
            held = f"holds {got[0]} chain(s) of shape {got[1:]}" if got else f"is {type(state.buffer).__name__}"
            raise ValueError(
                f"checkpoint: {where}replay buffer {held}; this configuration expects buffer_size = "
                f"{config.buffer_size} chains of shape {tuple(shape)} (a float tensor {want})"
            )
        if state.buffer.dtype != torch.float32:
            raise ValueError(
                f"checkpoint: {where}replay buffer has dtype {state.buffer.dtype}; expected "
                "torch.float32, the "
                "dtype the chains are sampled in"
            )
        bad = int((~torch.isfinite(state.buffer.flatten(1))).any(1).sum())
        if bad:
            raise ValueError(
                f"checkpoint: {where}replay buffer holds NaN or infinite values in {bad} of its "
                f"{config.buffer_size} chains; expected finite chains (the file is damaged or was "
                "altered)"
            )
        _check_sampler_state(where, state.sampler_state, config.buffer_size)
    _check_generator(f"{where}chain generator state", state.generator, device)
    _check_generator(f"{where}global RNG state (torch_rng)", state.torch_rng, torch.device("cpu"))
    if own_data_stream:  # the data source's batch stream, on a CPU generator of its own
        source = state.source if isinstance(state.source, dict) else {}
        _check_generator(f"{where}data stream state (source)", source.get("generator"), torch.device("cpu"))


def _check_sampler_state(where: str, saved, buffer_size: int) -> None:
    """The buffer chains' sampler state: absent (older checkpoints), or one row per buffer slot and a boolean mask."""
    if saved is None:
        return
    expected = f"a dict {{'state': {{name: tensor ({buffer_size}, ...)}}, 'has_state': bool tensor ({buffer_size},)}}"
    mask = saved.get("has_state") if isinstance(saved, dict) else None
    tensors = saved.get("state") if isinstance(saved, dict) else None
    if (
        not isinstance(mask, torch.Tensor)
        or mask.dtype != torch.bool
        or tuple(mask.shape) != (buffer_size,)
        or not isinstance(tensors, dict)
    ):
        raise ValueError(f"checkpoint: {where}buffer's sampler state is malformed; expected {expected}")
    for name, value in tensors.items():
        if (
            not isinstance(value, torch.Tensor)
            or value.shape[:1] != (buffer_size,)
            or not bool(torch.isfinite(value).all())
        ):
            raise ValueError(
                f"checkpoint: {where}buffer's sampler state {name!r} is not a finite tensor with "
                f"{buffer_size} rows; "
                f"expected {expected}"
            )


def _check_records(state: dict) -> None:
    """The history, the clock, the rollback record and the saved compiled-path decision."""
    history = state["history"]
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        what = (
            type(history).__name__
            if not isinstance(history, list)
            else f"a list whose row {next(i for i, r in enumerate(history) if not isinstance(r, dict))} is not a dict"
        )
        raise ValueError(f"checkpoint: its history is {what}; expected a list of evaluation rows (dicts)")
    wall = state["wall_s"]
    if not isinstance(wall, numbers.Real) or not math.isfinite(wall) or wall < 0:
        raise ValueError(f"checkpoint: its wall_s is {wall!r}; expected a finite number of seconds >= 0")
    factor = state.get("lr_factor", 1.0)
    if not isinstance(factor, numbers.Real) or not 0 < factor <= 1:
        raise ValueError(
            f"checkpoint: its lr_factor is {factor!r}; expected a number in (0, 1] (halved at each rollback)"
        )
    if not isinstance(state.get("rollbacks", []), list):
        raise ValueError(
            f"checkpoint: its rollbacks is a {type(state['rollbacks']).__name__}; expected a list of rollback records"
        )
    if not isinstance(state.get("fast", False), bool):
        raise ValueError(
            f"checkpoint: its fast is {state['fast']!r}; expected True or False (whether the run samples compiled)"
        )


def check_same_data(saved, config: TrainConfig, fingerprint: str | None) -> None:
    """A run on data of your own resumes on the same data: the checkpoint's hash of them must be the files' hash now."""
    if saved is None or fingerprint is None or saved == fingerprint:
        return
    raise ValueError(
        f"checkpoint: the data of {config.dataset} changed since the run was trained on them (their hash "
        "was "
        f"{str(saved)[:12]}…, it is {fingerprint[:12]}… now); expected the same files: put them back, "
        "or start a new run for the new data"
    )
