"""The course's exercise checks: each accepts the right answer, rejects wrong ones with the reason, and takes the
placeholder ``...`` without raising; the notebooks hold them as committed."""

import json
import math
from pathlib import Path

import pytest
import torch

from anila_core import AniLA, Langevin
from anila_core.course import checks
from anila_core.course.checks import INVALID, RIGHT, UNANSWERED, WRONG

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = {
    "00": ROOT / "notebooks" / "00_what_is_an_energy_model.ipynb",
    "01": ROOT / "notebooks" / "01_sampling_known_energies.ipynb",
    "02": ROOT / "notebooks" / "02_rings_toy_ebm.ipynb",
    "03": ROOT / "notebooks" / "03_digits_first_image_ebm.ipynb",
    "04": ROOT / "notebooks" / "04_colour_images.ipynb",
    "05": ROOT / "notebooks" / "05_when_training_fails.ipynb",
    "06": ROOT / "notebooks" / "06_when_does_anila_help.ipynb",
    "07": ROOT / "notebooks" / "07_what_ebms_are_for.ipynb",
    "08": ROOT / "notebooks" / "08_your_own_data.ipynb",
}
GRAD = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))

# every check with the arguments besides the answer that a notebook passes
CHECKS = [
    (checks.check_grid_evaluations, ()),
    (checks.check_cold_langevin_step, ()),
    (checks.check_flipped_loss, ()),
    (checks.check_drift_cap, ()),
    (checks.check_divergence_step, ()),
    (checks.check_anila_step_sizes, ()),
    (checks.check_threshold, (GRAD,)),
    (checks.check_energy_gap, ()),
    (checks.check_dark_border, ()),
    (checks.check_sample_norm_ratio, ()),
    (checks.check_crossing_steps, (1.0, 0.1)),
    (checks.check_pixel_norm_ratio, ()),
    (checks.check_drift_length, (100.0, 0.05)),
    (checks.check_clipped_none, ()),
    (checks.check_auroc, ()),
    (checks.check_sliced_vs_grid, ()),
]
IDS = [fn.__name__ for fn, _ in CHECKS]


def _check(fn, answer, extra):
    return fn(answer, *extra)


@pytest.mark.parametrize("fn, extra", CHECKS, ids=IDS)
@pytest.mark.parametrize("placeholder", [..., None])
def test_the_placeholder_is_not_answered_yet(fn, extra, placeholder):
    verdict = _check(fn, placeholder, extra)
    assert verdict.status == UNANSWERED and not verdict
    assert "replace the `...`" in verdict.message.lower()


def _placeholder_function(*args):
    return ...


@pytest.mark.parametrize("fn", [checks.check_cold_langevin_step, checks.check_anila_step_sizes])
def test_a_function_that_returns_the_placeholder_is_not_answered_yet(fn):
    assert fn(_placeholder_function).status == UNANSWERED


@pytest.mark.parametrize("fn, extra", CHECKS, ids=IDS)
@pytest.mark.parametrize("nonsense", ["twelve", object(), [1, 2], True, -3.0, float("nan")])
def test_nonsense_gets_a_verdict_not_a_traceback(fn, extra, nonsense):
    verdict = _check(fn, nonsense, extra)
    assert verdict.status in (INVALID, WRONG), verdict
    assert verdict.message


def test_a_verdict_shows_itself_with_its_reason():
    verdict = checks.check_drift_cap(0.075)
    assert str(verdict).startswith("✔ Right") and "ε·b/2" in str(verdict)
    assert repr(verdict) == str(verdict)
    assert verdict._repr_markdown_().startswith("**✔ Right**")
    assert str(checks.check_drift_cap(...)).startswith("… Not answered yet")


# --------------------------------------------------------------------------- notebook 00


@pytest.mark.parametrize("answer", [100**64, 1e128, "1e128", 1.01e128, torch.tensor(1e128, dtype=torch.float64)])
def test_grid_evaluations_accepts_points_per_axis_to_the_dimension(answer):
    assert checks.check_grid_evaluations(answer).status == RIGHT


@pytest.mark.parametrize(
    "answer, reason",
    [
        (6400, "multiply"),
        (64**100, "the base is"),
        (100**2, "one coordinate per pixel"),
        (100**8, "one per pixel"),
        (1e100, "off by a factor of about 10^28"),
    ],
)
def test_grid_evaluations_names_the_mistake(answer, reason):
    verdict = checks.check_grid_evaluations(answer)
    assert verdict.status == WRONG and reason in verdict.message


def test_grid_evaluations_follows_the_dataset_and_the_grid():
    assert checks.check_grid_evaluations(10 ** (3 * 16 * 16), points_per_axis=10, dataset="digits").status == WRONG
    assert checks.check_grid_evaluations(10**64, points_per_axis=10).status == RIGHT


def _cold(x, grad, step_size, noise_scale, noise):
    return x - step_size / 2 * grad + noise_scale * step_size**0.5 * noise


def test_cold_step_accepts_the_packages_move():
    assert checks.check_cold_langevin_step(_cold).status == RIGHT
    package_move = lambda x, g, e, t, n: Langevin(e, noise_scale=t).move(x, g, n)  # noqa: E731
    assert checks.check_cold_langevin_step(package_move).status == RIGHT


@pytest.mark.parametrize(
    "step, reason",
    [
        (lambda x, g, e, t, n: x + e / 2 * g + t * e**0.5 * n, "uphill"),
        (lambda x, g, e, t, n: x - e * g + t * e**0.5 * n, "half the step size"),
        (lambda x, g, e, t, n: x - e / 2 * g + t * e * n, "τ√ε, not τε"),
        (lambda x, g, e, t, n: x - e / 2 * g + (t * e) ** 0.5 * n, "√(τε)"),
        (lambda x, g, e, t, n: x - t * e / 2 * g + t * e**0.5 * n, "noise only"),
        (lambda x, g, e, t, n: x - e / 2 * g + e**0.5 * n, "τ = 1"),
        (lambda x, g, e, t, n: x - e / 2 * g, "gradient descent"),
        (lambda x, g, e, t, n: -e / 2 * g + t * e**0.5 * n, "add it to x"),
        (lambda x, g, e, t, n: 2 * x, "your step differs"),
    ],
)
def test_cold_step_names_the_slip(step, reason):
    verdict = checks.check_cold_langevin_step(step)
    assert verdict.status == WRONG and reason in verdict.message, verdict


def test_cold_step_reports_a_bug_in_words():
    verdict = checks.check_cold_langevin_step(lambda x, g, e, t, n: x - torch.sqrt(e) * n)
    assert verdict.status == INVALID and "TypeError" in verdict.message and "** 0.5" in verdict.message
    assert "return" in checks.check_cold_langevin_step(lambda *args: None).message
    assert "shape" in checks.check_cold_langevin_step(lambda x, g, e, t, n: x[:1]).message


@pytest.mark.parametrize(
    "question, check",
    [
        (checks.FLIPPED_LOSS_QUESTION, checks.check_flipped_loss),
        (checks.ENERGY_GAP_QUESTION, checks.check_energy_gap),
        (checks.BORDER_QUESTION, checks.check_dark_border),
    ],
)
def test_multiple_choice_accepts_only_the_right_letter_and_says_why(question, check):
    right = question.right_letter
    for letter, choice in question.options.items():
        verdict = check(letter)
        assert verdict.status == (RIGHT if letter == right else WRONG)
        assert choice.why[1:40] in verdict.message
    for spelling in (right.upper(), f"({right})", f" {right}. "):
        assert check(spelling).status == RIGHT
    assert check("z").status == INVALID and '"a"' in check("z").message


def test_the_right_border_answer_measures_the_digits():
    message = checks.check_dark_border(checks.BORDER_QUESTION.right_letter).message
    assert "outer columns are at −1 in 9" in message  # the digits' outer columns are background in nearly every image


def test_a_question_has_exactly_one_right_option():
    with pytest.raises(ValueError, match="exactly one"):
        checks.MultipleChoice(
            "x", "?", {"a": checks.Choice("one", "why", right=True), "b": checks.Choice("two", "why", right=True)}
        )


# --------------------------------------------------------------------------- notebook 01


@pytest.mark.parametrize("eps, b", [(0.05, 3.0), (0.1, 1.0), (1.0, 0.1)])
def test_drift_cap_is_eps_b_over_two(eps, b):
    assert checks.check_drift_cap(eps * b / 2, eps, b).status == RIGHT
    # and that is what the sampler does: no gradient, however steep, moves a coordinate further
    g = torch.logspace(-3, 6, 500).view(-1, 1)
    assert float((AniLA(eps, b).step_sizes(g) * g / 2).max()) == pytest.approx(eps * b / 2)


@pytest.mark.parametrize(
    "answer, reason",
    [
        (0.15, "halve it"),
        (1.5, "ε multiplies"),
        (0.025, "|g| = 1"),
        (math.inf, "has a cap"),
        (0.4, "is not it"),
    ],
)
def test_drift_cap_names_the_mistake(answer, reason):
    verdict = checks.check_drift_cap(answer)
    assert verdict.status == WRONG and reason in verdict.message, verdict


def test_divergence_step_is_four_sigma_squared():
    assert checks.check_divergence_step(0.04).status == RIGHT
    assert checks.check_divergence_step(0.0405).status == RIGHT
    assert checks.check_divergence_step(4.0, target="gaussian").status == RIGHT  # N(0, I): 4σ² = 4
    # the sampler agrees: just below the limit the stiff coordinate contracts, just above it grows
    x = torch.tensor([[1.0, 0.0]])
    for eps, grows in ((0.039, False), (0.041, True)):
        moved = Langevin(eps).move(x, torch.tensor([[1.0 / 0.1**2, 0.0]]), torch.zeros(1, 2))
        assert (abs(float(moved[0, 0])) > 1) == grows


@pytest.mark.parametrize(
    "answer, reason",
    [
        (0.01, "contract"),
        (0.02, "twice that"),
        (400, "flat coordinate"),
        (0.03, "Increase ε"),
        (0.1, "smaller steps"),
    ],
)
def test_divergence_step_names_the_mistake(answer, reason):
    verdict = checks.check_divergence_step(answer)
    assert verdict.status == WRONG and reason in verdict.message, verdict


def test_divergence_step_needs_a_gaussian_target():
    with pytest.raises(ValueError, match="Gaussian"):
        checks.check_divergence_step(0.04, target="rings")


def test_anila_step_sizes_accepts_the_rule():
    assert checks.check_anila_step_sizes(lambda g, e, b: e * b / torch.clamp(g.abs(), min=b)).status == RIGHT
    assert checks.check_anila_step_sizes(lambda g, e, b: AniLA(e, b).step_sizes(g)).status == RIGHT


@pytest.mark.parametrize(
    "rule, reason",
    [
        (lambda g, e, b: e * b / g.abs(), "longer than ε"),
        (lambda g, e, b: e * b / torch.clamp(g, min=b), "negative"),
        (lambda g, e, b: b / torch.clamp(g.abs(), min=b), "multiply by the step size"),
        (lambda g, e, b: e * torch.clamp(g.abs(), min=b) / b, "upside down"),
        (lambda g, e, b: e * b / torch.clamp(g.abs(), max=b), "min where max belongs"),
        (lambda g, e, b: torch.full_like(g, e), "Langevin's step"),
        (lambda g, e, b: e * b / (b + g.abs()), "your step is"),
    ],
)
def test_anila_step_sizes_names_the_slip(rule, reason):
    verdict = checks.check_anila_step_sizes(rule)
    assert verdict.status == WRONG and reason in verdict.message, verdict


# --------------------------------------------------------------------------- notebook 02


def test_threshold_accepts_a_b_in_the_gradients_upper_tail():
    b = float(torch.quantile(GRAD.abs().flatten(), 0.9))
    verdict = checks.check_threshold(b, GRAD)
    assert verdict.status == RIGHT and "steepest" in verdict.message
    assert float(AniLA(1.0, b).clipped_share(GRAD)) == pytest.approx(0.1, abs=0.01)


@pytest.mark.parametrize("b, reason", [(0.05, "crawl"), (10.0, "in name only"), (math.inf, "Langevin exactly")])
def test_threshold_says_which_way_to_move_b(b, reason):
    verdict = checks.check_threshold(b, GRAD)
    assert verdict.status == WRONG and reason in verdict.message, verdict


def test_threshold_needs_gradients():
    with pytest.raises(ValueError, match="grad"):
        checks.check_threshold(1.0, torch.empty(0))


# --------------------------------------------------------------------------- notebook 03


def test_sample_norm_ratio_is_the_root_of_the_pixel_count():
    assert checks.check_sample_norm_ratio(8).status == RIGHT
    assert checks.check_sample_norm_ratio(16, shape=(3, 16, 16)).status == RIGHT
    assert "square root" in checks.check_sample_norm_ratio(64).message
    assert "pools all 64" in checks.check_sample_norm_ratio(1).message


def test_crossing_steps_is_the_range_over_the_capped_drift():
    assert checks.check_crossing_steps(40, 1.0, 0.1).status == RIGHT
    assert checks.check_crossing_steps(400, 1.0, 0.01).status == RIGHT
    assert "ε·b/2" in checks.check_crossing_steps(20, 1.0, 0.1).message
    assert "drift of ε per step" in checks.check_crossing_steps(2, 1.0, 0.1).message
    assert "is enough" in checks.check_crossing_steps(40, 1.0, 0.1, n_steps=40).message
    assert "is not enough" in checks.check_crossing_steps(400, 1.0, 0.01, n_steps=40).message


# --------------------------------------------------------------------------- the notebooks hold them


def _notebook(key):
    return json.loads(NOTEBOOKS[key].read_text())


# --------------------------------------------------------------------------- notebooks 04–08


def test_pixel_norm_ratio_is_b_over_the_pixels_gradient_length():
    assert checks.check_pixel_norm_ratio(0.8).status == RIGHT
    assert checks.check_pixel_norm_ratio("0.80").status == RIGHT
    coordinate = checks.check_pixel_norm_ratio(1.0)  # each channel alone is at most b
    assert coordinate.status == WRONG and "coordinate norm" in coordinate.message
    assert checks.check_pixel_norm_ratio(0.04 / 0.07).status == WRONG  # the channels' sizes added


def test_drift_length_is_half_the_step_times_the_gradient_and_says_whether_it_crosses_the_range():
    crosses = checks.check_drift_length(2.5, 100.0, 0.05)
    assert crosses.status == RIGHT and "more than the whole range" in crosses.message
    inside = checks.check_drift_length(0.05, 1.0, 0.1)
    assert inside.status == RIGHT and "does not cross" in inside.message
    assert "ε·g:" in checks.check_drift_length(5.0, 100.0, 0.05).message


def test_auroc_is_the_share_of_pairs_with_the_outlier_higher():
    from anila_core.images.ood import auroc

    truth = sum(o > i for o in checks.AUROC_OUT for i in checks.AUROC_IN) / (
        len(checks.AUROC_IN) * len(checks.AUROC_OUT)
    )
    assert auroc(torch.tensor(checks.AUROC_IN), torch.tensor(checks.AUROC_OUT)) == pytest.approx(truth)
    assert checks.check_auroc(truth).status == RIGHT
    assert "upside down" in checks.check_auroc(1 - truth).message


@pytest.mark.parametrize(
    "fn, question",
    [
        (checks.check_clipped_none, checks.CLIPPED_NONE_QUESTION),
        (checks.check_sliced_vs_grid, checks.SLICED_VS_GRID_QUESTION),
    ],
)
def test_multiple_choice_of_06_and_08_accepts_only_its_right_letter(fn, question):
    for letter, choice in question.options.items():
        assert fn(letter).status == (RIGHT if choice.right else WRONG)
    assert "equal" in checks.check_clipped_none("b").message  # the package's own steps, checked


@pytest.mark.parametrize("key", sorted(NOTEBOOKS))
def test_each_notebook_has_exercises_with_hidden_solutions(key):
    cells = _notebook(key)["cells"]
    solutions = [c for c in cells if "solution" in c["metadata"].get("tags", [])]
    assert len(solutions) >= (2 if key <= "03" else 1)  # 00–03 hold two or three exercises, 04–08 at least one
    for cell in solutions:
        assert cell["cell_type"] == "code" and cell["metadata"]["jupyter"]["source_hidden"] is True
        assert "hide-input" in cell["metadata"]["tags"]
        assert "check_" in "".join(cell["source"])
    # the learner's cells: a placeholder the check takes as "not answered yet", so the notebook runs as committed
    exercises = [
        c
        for c in cells
        if c["cell_type"] == "code"
        and c not in solutions
        and "check_" in "".join(c["source"])
        and ("= ..." in "".join(c["source"]) or "return ..." in "".join(c["source"]))
    ]
    assert len(exercises) == len(solutions)


@pytest.mark.parametrize("key", sorted(NOTEBOOKS))
def test_the_notebooks_are_committed_without_outputs(key):
    for cell in _notebook(key)["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.mark.parametrize(
    "key, question",
    [
        ("00", checks.FLIPPED_LOSS_QUESTION),
        ("02", checks.ENERGY_GAP_QUESTION),
        ("03", checks.BORDER_QUESTION),
    ],
)
def test_the_notebook_shows_the_options_the_check_knows(key, question):
    text = "".join("".join(c["source"]) for c in _notebook(key)["cells"] if c["cell_type"] == "markdown")
    for letter, choice in question.options.items():
        assert f"**({letter})** {choice.text}" in text
