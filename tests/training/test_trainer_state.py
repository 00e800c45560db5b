"""Runs you can trust: checkpoints checked against their config, divergence that never points at a broken state, the
compiled path decided once, a loop one can read."""

import ast
import copy
import hashlib
import math
import traceback
from pathlib import Path

import pytest
import torch

import anila_core
import anila_core.sampling.compile_rule as compile_rule
from anila_core.cli import main
from anila_core.training.chains import ChainState
from anila_core.training.presets import preset
from anila_core.training.guard import TrainingDiverged
from anila_core.training.runs import CHECKPOINT, Run
from anila_core.training.run_loading import load_trainer
from anila_core.training.checkpoint_checks import validate_checkpoint
from anila_core.training.kinds import data_kind
from anila_core.training.trainer import Trainer

PACKAGE = Path(anila_core.__file__).parent


def smoke(**kw):
    return preset("smoke", "langevin", device="cpu", **kw)


CONFIG = smoke(iters=20, ema=0.9)


@pytest.fixture(scope="module")
def good_state() -> dict:
    """The checkpoint state of CONFIG after 10 of its 20 iterations (buffer chains, EMA, Adam moments)."""
    trainer = Trainer(CONFIG, progress=False)
    trainer.run(iters=10)
    return copy.deepcopy(trainer.state_dict())


def _set(key, value):
    def edit(state):
        state[key] = value

    return edit


def _first_weight(name):
    def edit(state):
        state[name]["net.0.weight"] = torch.zeros(3, 3)

    return edit


def _nan_weight(name):
    def edit(state):
        state[name]["net.0.weight"][0, 0] = float("nan")

    return edit


def _optimizer_moment(state):
    state["optimizer"]["state"][0]["exp_avg"] = torch.zeros(3, 3)


def _optimizer_params(state):
    del state["optimizer"]["param_groups"][0]["params"][-1]


CORRUPTIONS = {
    "buffer-of-10-chains": (
        lambda s: s.__setitem__("buffer", s["buffer"][:10]),
        "replay buffer holds 10 chain(s) of shape (2,)",
        "expects buffer_size = 500 chains of shape (2,)",
    ),
    "buffer-missing": (_set("buffer", None), "replay buffer is NoneType", "buffer_size = 500"),
    "iteration-negative": (_set("iteration", -5), "its iteration is -5", "expected an integer in [0, 20]"),
    "iteration-past-iters": (_set("iteration", 21), "its iteration is 21", "expected an integer in [0, 20]"),
    "iteration-not-an-integer": (_set("iteration", "10"), "its iteration is '10'", "expected an integer"),
    "generator-cuda-sized": (
        _set("generator", torch.zeros(16, dtype=torch.uint8)),
        "chain generator state is a torch.uint8 tensor of 16",
        "expected the state of a cpu torch.Generator, a torch.uint8 tensor of 5056 bytes",
    ),
    "generator-float": (
        _set("generator", torch.zeros(5056)),
        "chain generator state is a torch.float32 tensor",
        "5056 bytes",
    ),
    "torch-rng-missing": (
        lambda s: s.pop("torch_rng"),
        "global RNG state (torch_rng) is a NoneType",
        "cpu torch.Generator",
    ),
    "history-not-a-list": (_set("history", "rows"), "its history is str", "expected a list of evaluation rows (dicts)"),
    "history-row-not-a-dict": (
        lambda s: s["history"].append(3),
        "a list whose row 1 is not a dict",
        "expected a list of evaluation rows",
    ),
    "optimizer-moment-shape": (
        _optimizer_moment,
        "optimizer's exp_avg for net.0.weight has shape (3, 3)",
        "expected shape (32, 2), the shape of that parameter",
    ),
    "optimizer-parameter-count": (
        _optimizer_params,
        "optimizer holds 5 parameter(s) in 1 group(s)",
        "expected one group of 6",
    ),
    "optimizer-not-a-state-dict": (
        _set("optimizer", [1, 2]),
        "optimizer state is not an Adam state_dict (got list)",
        "'param_groups'",
    ),
    "ema-shape": (
        _first_weight("ema_model"),
        "its EMA model does not match this configuration's architecture: net.0.weight has shape (3, 3)",
        "expected a checkpoint written with the same network settings",
    ),
    "ema-missing": (_set("ema_model", None), "its EMA model does not match", "holds no weights for it (got NoneType)"),
    "model-shape": (
        _first_weight("model"),
        "net.0.weight has shape (3, 3) in the checkpoint, (32, 2) in this configuration",
        "same network settings",
    ),
    "model-nan": (
        _nan_weight("model"),
        "its model's net.0.weight holds NaN or infinite values",
        "expected finite parameters",
    ),
    "ema-nan": (
        _nan_weight("ema_model"),
        "its EMA model's net.0.weight holds NaN or infinite values",
        "expected finite parameters",
    ),
    "lr-factor-zero": (_set("lr_factor", 0.0), "its lr_factor is 0.0", "expected a number in (0, 1]"),
    "ranks-not-a-list": (
        _set("ranks", {"0": None}),
        "its 'ranks' is a dict",
        "expected a list of per-rank chain states",
    ),
    "rank-buffer": (
        lambda s: s.__setitem__("ranks", [ChainState.from_dict(s).to_dict() | {"buffer": torch.zeros(10, 2)}]),
        "rank 0's replay buffer holds 10 chain(s)",
        "buffer_size = 500",
    ),
    "fast-not-a-bool": (_set("fast", "auto"), "its fast is 'auto'", "expected True or False"),
    "format-other": (_set("format", 2), "format 2", "reads format 1"),
    "settings-other": (
        lambda s: s["config"].__setitem__("lr", 0.5),
        "was trained with other settings: lr 0.5 in the checkpoint",
        "only iters, device, data_root, on_divergence, max_rollbacks may change on resume",
    ),
    "model-missing": (lambda s: s.pop("model"), "lacks 'model'", "expected a complete checkpoint"),
}


def test_the_untouched_state_is_valid_and_resumes(good_state):
    validate_checkpoint(good_state, CONFIG)
    trainer = Trainer(CONFIG, progress=False)
    trainer.load_state_dict(copy.deepcopy(good_state))
    assert trainer.iteration == 10 and len(trainer.history) == 1


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_corrupted_checkpoint_is_refused_with_what_and_what_was_expected(good_state, name):
    corrupt, what, expected = CORRUPTIONS[name]
    state = copy.deepcopy(good_state)
    corrupt(state)
    with pytest.raises(ValueError) as err:
        validate_checkpoint(state, CONFIG)
    message = str(err.value)
    assert what in message and expected in message, message
    # raised by the check itself, not by torch failing somewhere deeper
    assert Path(traceback.extract_tb(err.tb)[-1].filename).name == "checkpoint_checks.py"
    # Trainer.load_state_dict checks first: the refused state changes nothing
    trainer = Trainer(CONFIG, progress=False)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.raises(ValueError, match="^checkpoint: ") as again:
        trainer.load_state_dict(state)
    assert str(again.value) == message
    assert trainer.iteration == 0 and all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def _tree(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("name", ["buffer-of-10-chains", "model-nan", "iteration-negative"])
def test_resuming_a_corrupted_run_is_refused_before_any_file_changes(tmp_path, good_state, name):
    out = tmp_path / "run"
    run = Run(out, smoke(iters=10), progress=False)
    run.train()
    state = torch.load(out / CHECKPOINT, weights_only=False)
    CORRUPTIONS[name][0](state)
    torch.save(state, out / CHECKPOINT)
    (out / "metrics.jsonl").write_text((out / "metrics.jsonl").read_text() + '{"iter": 99}\n')  # a resume would drop it
    before = _tree(out)
    with pytest.raises(ValueError) as err:
        Run(out, resume=True, iters=20, progress=False)
    assert str(err.value).startswith(f"{out / CHECKPOINT}: ") and CORRUPTIONS[name][1] in str(err.value)
    assert _tree(out) == before


def test_the_data_shape_known_without_data_is_the_trainers():
    for config in (smoke(), preset("smoke", "anila", dataset="digits", device="cpu")):
        trainer = Trainer(config, progress=False)
        assert data_kind(config).shape() == trainer.data_shape
        if trainer.dataset is not None:  # the shape known without the data is the loaded images'
            assert tuple(trainer.dataset.shape) == trainer.data_shape


# --------------------------------------------------------------------------- divergence


def test_a_checkpoint_with_non_finite_parameters_is_never_called_the_last_good_one(tmp_path):
    trainer = Trainer(smoke(), progress=False)
    trainer.guard.record_checkpoint(10, tmp_path / "good.pt", trainer.model)
    with torch.no_grad():
        next(trainer.model.parameters())[0, 0] = float("nan")
    trainer.guard.record_checkpoint(20, tmp_path / "broken.pt", trainer.model)
    with pytest.raises(TrainingDiverged) as err:
        trainer.check_parameters()
    assert f"the last good checkpoint is {tmp_path / 'good.pt'} (iteration 10)" in str(err.value)
    assert "broken.pt" not in str(err.value)


def test_rollback_with_no_finite_state_says_so_instead_of_restoring_a_broken_one():
    trainer = Trainer(smoke(on_divergence="rollback"), progress=False)
    with torch.no_grad():
        next(trainer.model.parameters())[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged) as err:
        trainer.run()
    assert "there is no state with finite parameters to roll back to" in str(err.value)
    assert err.value.iteration == 1 and trainer.rollbacks == []


def test_an_optimizer_overflow_is_a_divergence_that_names_the_step_and_the_learning_rate():
    with pytest.raises(TrainingDiverged) as err:
        Trainer(smoke(lr=1e39), progress=False).run()
    assert err.value.iteration == 1
    assert "optimizer step" in err.value.cause and "learning rate 1e+39" in err.value.cause
    assert str(err.value).startswith(
        f"training diverged at iteration 1: {err.value.cause}; no checkpoint was written yet"
    )


def test_an_optimizer_overflow_rolls_back_and_the_run_completes():
    trainer = Trainer(smoke(lr=1e39, max_energy_gap=100.0, on_divergence="rollback", max_rollbacks=400), progress=False)
    trainer.run()
    assert trainer.iteration == 30
    first = trainer.rollbacks[0]
    assert first["iter"] == 1 and "optimizer step" in first["cause"] and first["restored_iter"] == 0
    assert [r["lr_factor"] for r in trainer.rollbacks] == [0.5 ** (i + 1) for i in range(len(trainer.rollbacks))]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert math.isfinite(trainer.history[-1]["grid_tv"])


# --------------------------------------------------------------------------- the compiled path, decided once


def test_an_extended_run_keeps_the_compiled_path_decision_and_equals_the_uninterrupted_one(tmp_path, monkeypatch):
    n = 10
    config = smoke(fast="auto")
    # between n·K·M and 2n·K·M chain-steps: a run created for 2n iterations would compile, one for n would not
    monkeypatch.setattr(compile_rule, "AUTO_MIN_CHAIN_STEPS", 2 * n * config.n_steps * config.batch_size)
    assert Trainer(config.replace(iters=2 * n), progress=False).fast
    straight = Trainer(config.replace(iters=n), progress=False)
    assert not straight.fast
    straight.run(iters=2 * n)

    Run(tmp_path / "split", config.replace(iters=n), progress=False).train()
    assert torch.load(tmp_path / "split" / CHECKPOINT, weights_only=False)["fast"] is False
    resumed = Run(tmp_path / "split", resume=True, iters=2 * n, progress=False)
    assert resumed.trainer.config.iters == 2 * n and not resumed.trainer.fast
    resumed.train()
    for a, b in zip(straight.model.parameters(), resumed.trainer.model.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(straight.samples, resumed.trainer.samples)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert strip(straight.history) == strip(resumed.trainer.history)


# --------------------------------------------------------------------------- library errors name library arguments


def test_loading_a_run_from_python_names_the_arguments_and_the_cli_names_its_flags(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError) as err:
        load_trainer(empty)
    assert str(err.value).startswith(f"out_dir: {empty} has no config.json") and "--" not in str(err.value)
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    with pytest.raises(ValueError) as err:
        Run(used, smoke(), progress=False)
    assert "pass resume=True to continue that run" in str(err.value) and "--" not in str(err.value)
    assert main(["train", "--resume", "--out", str(empty), "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith(f"error: --out: {empty} has no config.json")
    assert main(["train", "--preset", "smoke", "--out", str(used), "--no-progress"]) == 2
    assert "pass --resume to continue that run" in capsys.readouterr().err


# --------------------------------------------------------------------------- a loop one can read


def test_no_function_in_trainer_py_is_over_60_lines_and_the_loop_fits_one_screen():
    tree = ast.parse((PACKAGE / "training" / "trainer.py").read_text())
    functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    assert functions
    lengths = {f.name: f.end_lineno - f.lineno + 1 for f in functions}
    assert max(lengths.values()) <= 60, {k: v for k, v in lengths.items() if v > 60}
    # run sets the CPU threads and hands over to _run, which holds the loop
    loop = next(
        node for f in functions if f.name in ("run", "_run") for node in ast.walk(f) if isinstance(node, ast.While)
    )
    assert loop.end_lineno - loop.lineno + 1 <= 40


def test_the_chain_state_keys_are_spelled_in_one_place(good_state):
    spelled = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value == "torch_rng":
                spelled.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert spelled == []  # only as ChainState's field name
    assert set(ChainState.keys()) <= set(good_state)
    assert ChainState.from_dict(good_state).to_dict().keys() == set(ChainState.keys())
