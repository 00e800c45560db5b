"""The notebooks' checked exercises: each ``check_...`` takes a learner's answer and says, in a sentence, whether it is
right and why.

Every check returns a :class:`Verdict` that shows itself in a notebook (as Markdown) or when
printed. It never raises on a learner's answer: the placeholder ``...`` (or ``None``) gives
"not answered yet", an answer of the wrong kind (text where a number belongs, a function that
raises) says what was expected. Where the right answer can be computed, it is computed from
the package itself — the samplers' own step maps, the targets, the datasets' shapes — so an
exercise cannot drift away from what the code does. Multiple-choice questions hold their
options here too (:class:`MultipleChoice`), each wrong option with the reason it is wrong.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable

import torch

from anila_core.images.datasets import CHANNELS, DEFAULT_SIZES
from anila_core.sampling.kernel import energy_and_grad
from anila_core.sampling.samplers import AniLA, Langevin
from anila_core.sampling.targets import Gaussian, make_target

__all__ = [
    "Verdict",
    "Choice",
    "MultipleChoice",
    "RIGHT",
    "WRONG",
    "UNANSWERED",
    "INVALID",
    "FLIPPED_LOSS_QUESTION",
    "ENERGY_GAP_QUESTION",
    "BORDER_QUESTION",
    "check_grid_evaluations",
    "check_cold_langevin_step",
    "check_flipped_loss",
    "check_drift_cap",
    "check_divergence_step",
    "check_anila_step_sizes",
    "check_threshold",
    "check_energy_gap",
    "check_dark_border",
    "check_sample_norm_ratio",
    "check_crossing_steps",
    "check_pixel_norm_ratio",
    "check_drift_length",
    "CLIPPED_NONE_QUESTION",
    "check_clipped_none",
    "AUROC_IN",
    "AUROC_OUT",
    "check_auroc",
    "SLICED_VS_GRID_QUESTION",
    "check_sliced_vs_grid",
]

RIGHT, WRONG, UNANSWERED, INVALID = "right", "wrong", "not answered", "cannot check"
_HEADLINES = {
    RIGHT: "✔ Right",
    WRONG: "✘ Not quite",
    UNANSWERED: "… Not answered yet",
    INVALID: "? Cannot check this answer",
}
_PLACEHOLDER_HINT = (
    "Replace the `...` with your answer and run the cell again (the collapsed cell below holds a solution)."
)


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict:
    """What a check says: the ``exercise``, its ``status`` (``right``, ``wrong``, ``not answered``, ``cannot check``)
    and the reason."""

    exercise: str
    status: str
    message: str

    @property
    def correct(self) -> bool:
        """Whether the answer was right."""
        return self.status == RIGHT

    def __bool__(self) -> bool:
        return self.correct

    def __str__(self) -> str:
        return f"{_HEADLINES[self.status]} ({self.exercise}): {self.message}"

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        return f"**{_HEADLINES[self.status]}** ({self.exercise}): {self.message}"


def _right(exercise: str, message: str) -> Verdict:
    return Verdict(exercise, RIGHT, message)


def _wrong(exercise: str, message: str) -> Verdict:
    return Verdict(exercise, WRONG, message)


def _unanswered(exercise: str) -> Verdict:
    return Verdict(exercise, UNANSWERED, _PLACEHOLDER_HINT)


def _invalid(exercise: str, message: str) -> Verdict:
    return Verdict(exercise, INVALID, message)


def _is_placeholder(answer) -> bool:
    return answer is Ellipsis or answer is None


def _number(answer):
    """The answer as an ``int`` or ``float``, or ``None`` when it is no single real number (text that reads as one
    counts)."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, numbers.Integral):
        return int(answer)
    if isinstance(answer, numbers.Real):  # Python and numpy floats
        return float(answer)
    if isinstance(answer, torch.Tensor):
        if answer.numel() != 1 or answer.dtype == torch.bool or answer.is_complex():
            return None
        return answer.item()
    if isinstance(answer, str):
        try:
            return float(answer.strip().replace("_", "").replace(" ", ""))
        except ValueError:
            return None
    return None


def _read_number(answer, exercise: str, expected: str) -> tuple[float | None, Verdict | None]:
    """A numeric answer as ``(value, None)``, or ``(None, verdict)`` for the placeholder or an answer that is no number
    (``expected`` says what is)."""
    if _is_placeholder(answer):
        return None, _unanswered(exercise)
    value = _number(answer)
    if value is None:
        return None, _invalid(exercise, f"expected {expected}; got {answer!r}.")
    return value, None


def _close(a: float, b: float, rel: float) -> bool:
    return abs(a - b) <= rel * abs(b)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


# --------------------------------------------------------------------------- multiple choice


@dataclass(frozen=True)
class Choice:
    """One option of a :class:`MultipleChoice`: its text, whether it is the right one, and why (or why not)."""

    text: str
    why: str
    right: bool = False


@dataclass(frozen=True)
class MultipleChoice:
    """A question with lettered options; exactly one is right. Shows itself as Markdown in a notebook."""

    exercise: str
    question: str
    options: dict[str, Choice]

    def __post_init__(self):
        if sum(c.right for c in self.options.values()) != 1:
            raise ValueError(f"{self.exercise}: expected exactly one right option")

    @property
    def right_letter(self) -> str:
        return next(letter for letter, c in self.options.items() if c.right)

    def _repr_markdown_(self) -> str:
        return f"{self.question}\n\n" + "\n".join(f"* **({k})** {c.text}" for k, c in self.options.items())

    def __str__(self) -> str:
        return f"{self.question}\n" + "\n".join(f"({k}) {c.text}" for k, c in self.options.items())

    def check(self, answer, extra: str = "") -> Verdict:
        """The verdict on ``answer``, a letter such as ``"b"`` (``"(b)"`` and ``"B"`` count too); ``extra`` is added to
        a right answer's reason."""
        if _is_placeholder(answer):
            return _unanswered(self.exercise)
        letters = ", ".join(f'"{k}"' for k in self.options)
        if not isinstance(answer, str):
            return _invalid(self.exercise, f"expected one letter as a string, one of {letters}; got {answer!r}.")
        letter = answer.strip().strip("().").strip().lower()
        if letter not in self.options:
            return _invalid(self.exercise, f"expected one of {letters}; got {answer!r}.")
        choice = self.options[letter]
        why = choice.why[0].upper() + choice.why[1:]
        if choice.right:
            return _right(self.exercise, f"({letter}) {why}" + (f" {extra}" if extra else ""))
        return _wrong(self.exercise, f"({letter}) {why} Read the options again and try another letter.")


# --------------------------------------------------------------------------- notebook 00: what an energy model is


def check_grid_evaluations(answer, points_per_axis: int = 100, dataset: str = "digits") -> Verdict:
    """How many energy evaluations a grid of ``points_per_axis`` values per coordinate needs to compute Z for one image
    of ``dataset``.

    The right answer is ``points_per_axis ** d`` with ``d`` the number of coordinates of one
    image (channels × side², from :mod:`anila_core.images.datasets`): 100⁶⁴ = 10¹²⁸ for the 8×8 digits.
    """
    exercise = "the cost of Z on a grid"
    if _is_placeholder(answer):
        return _unanswered(exercise)
    value = _number(answer)
    if value is None or not value > 0 or (isinstance(value, float) and math.isinf(value)):
        return _invalid(
            exercise, f"expected a positive number of energy evaluations, such as `1e10` or `10**10`; got {answer!r}."
        )
    side = DEFAULT_SIZES[dataset]
    dim = CHANNELS[dataset] * side * side
    p = points_per_axis
    log_right = dim * math.log10(p)
    log_answer = math.log10(value)
    years = log_right - 9 - math.log10(3.156e7)  # at 10⁹ energies per second, 3.156e7 seconds per year
    if abs(log_answer - log_right) <= 0.01:
        return _right(
            exercise,
            f"{p}^{dim} = 10^{log_right:.0f} grid points, one energy each. At a billion energies per second "
            f"that is about 10^{years:.0f} years (the universe is about 1.4·10^10 years old). One image, and "
            f"the sum Z is already out of reach: that is why EBMs are trained from samples, never from Z.",
        )
    mistakes = {
        math.log10(
            p * dim
        ): f"{p} × {dim} counts {dim} separate one-dimensional grids. A grid of the whole space takes every "
        f"combination of the coordinates' values, so the counts multiply: {p} × {p} × … ({dim} factors) = {p}^{dim}.",
        math.log10(p + dim): f"adding counts one axis after the other; a grid takes every combination: {p}^{dim}.",
        p
        * math.log10(
            dim
        ): f"that is {dim}^{p}: the base is the number of values per axis ({p}), the exponent the number of "
        f"coordinates ({dim}).",
        2
        * math.log10(
            p
        ): f"{p}² is the 2-D toy's grid. An image has one coordinate per pixel: {side} × {side} = {dim} of them.",
        side
        * math.log10(
            p
        ): f"{p}^{side} treats the image as {side} coordinates; it has {side} × {side} = {dim}, one per pixel.",
        math.log10(p): f"{p} points cover one axis; the image has {dim} axes, one per pixel.",
    }
    for log_mistake, why in mistakes.items():
        if abs(log_answer - log_mistake) <= 0.01:
            return _wrong(exercise, why)
    off = log_right - log_answer
    return _wrong(
        exercise,
        f"that is about 10^{log_answer:.3g}, off by a factor of about 10^{abs(off):.0f} ("
        f"{'too few' if off > 0 else 'too many'}). Count it: one coordinate per pixel, {p} values for "
        f"each, and every combination of them is one grid point.",
    )


def _cold_step_cases():
    """Inputs for the cold-step check: fixed positions, gradients and noise, at three (ε, τ) settings with distinct
    roles."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    grad = 3 * torch.randn(6, 2, generator=gen, dtype=torch.float64)
    noise = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    return [(x, grad, noise, eps, tau) for eps, tau in ((0.1, 0.3), (0.02, 1.0), (0.5, 0.05))]


def _call(fn, args, exercise):
    """``(result, None)`` from the learner's function, or ``(None, verdict)`` when it raised or returned the
    placeholder."""
    try:
        result = fn(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
    except Exception as err:  # a learner's bug, reported in words instead of a traceback
        return None, _invalid(
            exercise,
            f"your function raised {type(err).__name__}: {err}. (The tensors are torch tensors; "
            f"the numbers are Python floats, so use `** 0.5` or `math.sqrt` on them.)",
        )
    if result is Ellipsis:
        return None, _unanswered(exercise)
    if result is None:
        return None, _invalid(exercise, "your function returned None: did you forget the `return`?")
    if not isinstance(result, torch.Tensor):
        try:
            result = torch.as_tensor(result, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            return None, _invalid(
                exercise, f"expected your function to return a tensor; it returned {type(result).__name__}."
            )
    return result.double(), None


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    try:
        a, b = torch.broadcast_tensors(a, b)
    except RuntimeError:
        return False
    return bool(torch.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True))


def check_cold_langevin_step(step_fn: Callable) -> Verdict:
    """Whether ``step_fn(x, grad, step_size, noise_scale, noise)`` is the Langevin move at noise scale τ, ``x −
    (ε/2)·grad + τ·√ε·noise``.

    The reference is the package's own move, ``Langevin(step_size, noise_scale=τ).move(x, grad, noise)``;
    common slips (uphill drift, a missing ½, noise of sd ε, τ in the wrong place, no noise) are named.
    """
    exercise = "the cold Langevin step"
    if _is_placeholder(step_fn):
        return _unanswered(exercise)
    if not callable(step_fn):
        return _invalid(
            exercise,
            f"expected a function `step(x, grad, step_size, noise_scale, noise)`; got {type(step_fn).__name__}.",
        )
    slips = [
        (
            lambda x, g, n, e, t: x + e / 2 * g + t * e**0.5 * n,
            "your drift goes uphill, +(ε/2)∇E. The density is exp(−E): likely places have LOW energy, so the chain "
            "moves against "
            "the gradient, x − (ε/2)∇E.",
        ),
        (
            lambda x, g, n, e, t: x - e * g + t * e**0.5 * n,
            "the drift is (ε/2)∇E, half the step size times the gradient: the Euler step, over time ε, of the Langevin "
            "diffusion dX = −½∇E dt + dW.",
        ),
        (
            lambda x, g, n, e, t: x - e / 2 * g + t * e * n,
            "the noise's standard deviation is τ√ε, not τε: like a Brownian motion over a time ε, its variance grows "
            "like ε.",
        ),
        (
            lambda x, g, n, e, t: x - e / 2 * g + (t * e) ** 0.5 * n,
            "τ multiplies the noise's standard deviation, τ√ε, not the variance inside the root, √(τε).",
        ),
        (lambda x, g, n, e, t: x - t * e / 2 * g + t * e**0.5 * n, "τ scales the noise only; the drift stays (ε/2)∇E."),
        (
            lambda x, g, n, e, t: x - e / 2 * g + e**0.5 * n,
            "that is the step at τ = 1: multiply the noise by `noise_scale` (τ).",
        ),
        (
            lambda x, g, n, e, t: x - e / 2 * g,
            "without the noise this is gradient descent: every chain slides into the nearest minimum and stays there, "
            "so the "
            "chains never spread out like the density.",
        ),
        (lambda x, g, n, e, t: -e / 2 * g + t * e**0.5 * n, "that is the change of x only; add it to x."),
    ]
    results = []  # (x, grad, noise, ε, τ, the learner's x') per case
    for x, grad, noise, eps, tau in _cold_step_cases():
        got, problem = _call(step_fn, (x, grad, eps, tau, noise), exercise)
        if problem is not None:
            return problem
        expected = Langevin(eps, noise_scale=tau).move(x, grad, noise)
        if got.shape != expected.shape:
            return _invalid(
                exercise, f"expected one new position per chain, shape {tuple(expected.shape)}; got {tuple(got.shape)}."
            )
        results.append((x, grad, noise, eps, tau, got, expected))
    if all(_same(got, expected) for *_, got, expected in results):
        return _right(
            exercise,
            "x′ = x − (ε/2)∇E + τ√ε·ξ, the same as the package's "
            "`Langevin(step_size, noise_scale=τ).move(x, grad, noise)`. "
            "With τ < 1 the chain samples (for small steps) exp(−E/τ²), a sharper density than the model's: the 'cold' "
            "sampling "
            "image EBMs use for cleaner pictures (notebook 03), which no longer samples the model itself.",
        )
    for slip, why in slips:
        if all(_same(got, slip(x, grad, noise, eps, tau)) for x, grad, noise, eps, tau, got, _ in results):
            return _wrong(exercise, why)
    x, grad, noise, eps, tau, got, expected = next(r for r in results if not _same(r[-2], r[-1]))
    return _wrong(
        exercise,
        f"your step differs from x − (ε/2)∇E + τ√ε·ξ (at ε = {eps:g}, τ = {tau:g} by up to "
        f"{_fmt(float((got - expected).abs().max()))}). Three pieces: x itself; the drift against the gradient, "
        f"half a step long; the noise, sd τ√ε.",
    )


FLIPPED_LOSS_QUESTION = MultipleChoice(
    "the flipped loss",
    "A typo flips the loss: the loop minimises mean E(samples) − mean E(data) instead of mean E(data) − mean "
    "E(samples). "
    "What happens?",
    {
        "a": Choice(
            "Nothing changes: the normaliser Z absorbs the sign.",
            "Z absorbs a constant added to E, never a flipped gradient: every step now goes the other way.",
        ),
        "b": Choice(
            "The energy rises on the data and sinks where the chains are; the chains follow it down, away from the "
            "data, "
            "and the energy gap grows without bound.",
            "Each step now pushes the data's energy up and the samples' energy down — maximum likelihood run "
            "backwards. "
            "The sampler follows the model into the valleys it digs away from the data, nothing pulls them back, and "
            "the gap E(data) − E(samples) runs away; the package's trainer stops such a run when |gap| exceeds "
            "`max_energy_gap`.",
            right=True,
        ),
        "c": Choice(
            "Training still converges, only more slowly.",
            "The sign sets the direction of every step: a flipped loss climbs the negative log-likelihood instead of "
            "descending it, at the same speed.",
        ),
        "d": Choice(
            "The samples get sharper, as with a lower temperature.",
            "a temperature divides E by a positive number and keeps the data below the samples; the flip swaps which "
            "of "
            "the two is pushed down.",
        ),
    },
)


def check_flipped_loss(answer) -> Verdict:
    """The letter of :data:`FLIPPED_LOSS_QUESTION` (what a flipped training loss does)."""
    return FLIPPED_LOSS_QUESTION.check(answer)


# --------------------------------------------------------------------------- notebook 01: samplers on known energies


def _drift_cap(step_size: float, b: float) -> float:
    """The largest drift per coordinate of AniLA's move, |γ·g/2| over a wide range of gradient sizes, from the sampler's
    own step map."""
    g = torch.logspace(-4, 8, 2001, dtype=torch.float64).view(-1, 1)
    gamma = AniLA(step_size, b).step_sizes(g)
    return float((gamma * g / 2).max())


def check_drift_cap(answer, step_size: float = 0.05, b: float = 3.0) -> Verdict:
    """The largest distance AniLA's drift moves one coordinate in one step, at ``step_size`` ε and threshold ``b``:
    ε·b/2.

    Computed from :meth:`AniLA.step_sizes` over gradients from 10⁻⁴ to 10⁸.
    """
    exercise = f"AniLA's drift cap at ε = {step_size:g}, b = {b:g}"
    if _is_placeholder(answer):
        return _unanswered(exercise)
    value = _number(answer)
    if value is None:
        return _invalid(exercise, f"expected a number (a distance per step); got {answer!r}.")
    cap = _drift_cap(step_size, b)
    eps = step_size
    if math.isinf(value):
        return _wrong(
            exercise,
            f"AniLA's drift has a cap. Where |g| > b the step shrinks to γ = εb/|g|, so the drift "
            f"(γ/2)|g| = εb/2 = {_fmt(cap)}, however steep the energy. (Langevin's drift ε|g|/2 has none.)",
        )
    if _close(value, cap, 0.01):
        return _right(
            exercise,
            f"ε·b/2 = {_fmt(cap)}. Where |g| ≤ b the drift is ε|g|/2 ≤ εb/2; where |g| > b the step shrinks to "
            f"εb/|g|, so the drift is (εb/|g|)·|g|/2 = εb/2 whatever the steepness: a chain far out on a steep "
            f"wall walks in at that constant speed. Langevin's drift ε|g|/2 has no cap (at |g| = 100 it would "
            f"be {_fmt(eps * 50)}), and AniLA's noise shrinks too, to sd √(εb/|g|).",
        )
    mistakes = [
        (eps * b, "that is ε·b: the drift is (γ/2)·g, so halve it."),
        (b / 2, "that is b/2: the step size ε multiplies everything, γ = ε·b/max(b, |g|)."),
        (eps / 2, "that is ε/2, the drift at |g| = 1; the cap is reached at |g| = b, where γ is still ε."),
        (eps, "that is ε, the step size; the drift is γ|g|/2 with γ = εb/|g| once |g| > b."),
        (b, "that is b, the threshold on the gradient, not a distance moved; multiply by ε/2."),
        ((eps * b) ** 0.5, "that is √(εb), about the noise's size; the drift is γ|g|/2 with γ = εb/|g| once |g| > b."),
    ]
    for mistake, why in mistakes:
        if not _close(mistake, cap, 0.01) and _close(value, mistake, 0.01):
            return _wrong(exercise, why)
    return _wrong(
        exercise,
        f"{_fmt(value)} is not it. Write the drift (γ/2)|g| with γ = ε·b/max(b, |g|), once for |g| ≤ b and "
        f"once for |g| > b: what is its largest value?",
    )


def _langevin_factors(target: Gaussian, step_size: float) -> torch.Tensor:
    """Per coordinate, what one noiseless Langevin step multiplies the distance to a Gaussian's mean by (the move is
    linear there)."""
    mean = target.mean.double().view(1, -1)
    x = mean + 1.0  # one unit from the mean along every coordinate
    _, grad = energy_and_grad(target.energy, x)
    moved = Langevin(step_size).move(x, grad, torch.zeros_like(x))
    return (moved - mean).flatten()


def check_divergence_step(answer, target: str = "ill_gaussian") -> Verdict:
    """The smallest step size at which unadjusted Langevin diverges on a Gaussian target (``ill_gaussian``: 4·0.1² =
    0.04).

    One noiseless step multiplies each coordinate's distance to the mean by a factor
    ``1 − ε·k`` (``k = 1/(2σ²)``); the check measures ``k`` with the package's Langevin step
    on the target's own energy and solves ``1 − ε·k = −1`` for the stiffest coordinate.
    """
    exercise = f"where Langevin diverges on {target}"
    if _is_placeholder(answer):
        return _unanswered(exercise)
    value = _number(answer)
    if value is None or not value > 0:
        return _invalid(exercise, f"expected a step size, a number > 0; got {answer!r}.")
    gauss = make_target(target)
    if not isinstance(gauss, Gaussian):
        raise ValueError(f"target: expected a Gaussian target (its Langevin move is linear), got {target!r}")
    rates = 1.0 - _langevin_factors(gauss, 1.0)  # k per coordinate: the factor is 1 − ε·k
    stiff = int(rates.argmax())
    limit = 2.0 / float(rates[stiff])
    sd = float(gauss.scales[stiff])
    factor = float(_langevin_factors(gauss, float(value))[stiff]) if math.isfinite(value) else -math.inf
    if _close(value, limit, 0.05):
        return _right(
            exercise,
            f"ε = 4σ² = {_fmt(limit)} for the stiff coordinate (σ = {sd:g}). One step multiplies its distance to "
            f"the mean by 1 − ε/(2σ²); at ε = {_fmt(limit)} that factor reaches −1, and beyond it every step "
            f"overshoots the mode by more than the chain's distance from it, so the chains swing outwards and "
            f"grow geometrically. The flat coordinate (σ = {float(gauss.scales.max()):g}) would tolerate "
            f"ε < {_fmt(4 * float(gauss.scales.max()) ** 2)}: the stiffest direction sets Langevin's step size.",
        )
    flat_limit = 4 * float(gauss.scales.max()) ** 2
    mistakes = [
        (
            sd**2,
            f"at ε = σ² = {_fmt(sd**2)} one step multiplies the stiff coordinate by 1 − ε/(2σ²) = 0.5 (plus noise): "
            "the "
            f"chains contract.",
        ),
        (
            2 * sd**2,
            f"at ε = 2σ² = {_fmt(2 * sd**2)} the factor 1 − ε/(2σ²) is 0: the drift lands on the mode in one step, the "
            f"fastest setting, not the edge. The factor reaches −1 at twice that.",
        ),
        (
            flat_limit,
            f"{_fmt(flat_limit)} is where the flat coordinate (σ = {float(gauss.scales.max()):g}) would diverge; the "
            "stiff "
            f"one (σ = {sd:g}) goes long before.",
        ),
    ]
    for mistake, why in mistakes:
        if _close(value, mistake, 0.05):
            return _wrong(exercise, why)
    if abs(factor) < 1:
        return _wrong(
            exercise,
            f"at ε = {_fmt(value)} one step multiplies the stiff coordinate by {factor:.3g}, inside (−1, 1): the "
            f"chains still contract. Increase ε until that factor, 1 − ε/(2σ²) with σ = {sd:g}, reaches −1.",
        )
    return _wrong(
        exercise,
        f"at ε = {_fmt(value)} the factor is {factor:.3g}: the chains do diverge, but they already do at smaller "
        f"steps. Find the smallest ε where 1 − ε/(2σ²), σ = {sd:g}, reaches −1.",
    )


def check_anila_step_sizes(step_sizes_fn: Callable) -> Verdict:
    """Whether ``step_sizes_fn(grad, step_size, b)`` is AniLA's step map per coordinate, ``ε·b / max(b, |g|)`` (the
    package's :meth:`AniLA.step_sizes`)."""
    exercise = "AniLA's step sizes"
    if _is_placeholder(step_sizes_fn):
        return _unanswered(exercise)
    if not callable(step_sizes_fn):
        return _invalid(
            exercise, f"expected a function `step_sizes(grad, step_size, b)`; got {type(step_sizes_fn).__name__}."
        )
    grad = torch.tensor(
        [[0.0, 0.5, -0.5], [2.0, -2.0, 3.0], [-10.0, 100.0, 1e-4], [-1.0, 1.0, -300.0]], dtype=torch.float64
    )
    slips = [
        (
            lambda g, e, b: e * b / g.abs(),
            "where |g| < b your step is longer than ε (and infinite at g = 0). The max(b, |g|) keeps the full step ε "
            "wherever the "
            "energy is flat enough; only steep coordinates are shrunk.",
        ),
        (
            lambda g, e, b: e * b / torch.clamp(g, min=b),
            "steep *negative* gradients keep the full step in your map. AniLA compares b with the size |g|: a steep "
            "descent is as "
            "steep as a steep ascent.",
        ),
        (
            lambda g, e, b: b / torch.clamp(g.abs(), min=b),
            "that is the relative step a(g) = b/max(b, |g|); multiply by the step size ε.",
        ),
        (
            lambda g, e, b: e * torch.clamp(g.abs(), min=b) / b,
            "upside down: your steps grow where the energy is steep, so the drift grows like |g|² — the opposite of "
            "AniLA's cap.",
        ),
        (
            lambda g, e, b: e * b / torch.clamp(g.abs(), max=b),
            "min where max belongs: your steps are never shorter than ε and are longest where the energy is flattest.",
        ),
        (
            lambda g, e, b: torch.full_like(g, e),
            "that is Langevin's step, ε everywhere; AniLA shrinks it where |g| > b.",
        ),
    ]
    settings = ((0.1, 1.0), (0.02, 3.0))
    outputs = []
    for eps, b in settings:
        got, problem = _call(step_sizes_fn, (grad, eps, b), exercise)
        if problem is not None:
            return problem
        expected = AniLA(eps, b).step_sizes(grad)
        try:
            got = torch.broadcast_to(got, expected.shape)
        except RuntimeError:
            return _invalid(
                exercise,
                f"expected one step size per coordinate, shape {tuple(expected.shape)}; got {tuple(got.shape)}.",
            )
        outputs.append((eps, b, got, expected))
    if all(_same(got, expected) for _, _, got, expected in outputs):
        return _right(
            exercise,
            "γ = ε·b/max(b, |g|), as `AniLA(step_size, b).step_sizes(grad)`: the full step ε where |g| ≤ b, and "
            "ε·b/|g| where the energy is steeper, so the drift γ|g|/2 never exceeds ε·b/2. As b → ∞ it is "
            "Langevin's ε everywhere.",
        )
    for slip, why in slips:
        if all(_same(got, slip(grad, eps, b)) for eps, b, got, _ in outputs):
            return _wrong(exercise, why)
    eps, b, got, expected = next(o for o in outputs if not _same(o[2], o[3]))
    bad = (~torch.isclose(got, expected, rtol=1e-6, atol=1e-9, equal_nan=True)).nonzero()[0].tolist()
    g = float(grad[tuple(bad)])
    return _wrong(
        exercise,
        f"at ε = {eps:g}, b = {b:g} and g = {g:g} your step is {_fmt(float(got[tuple(bad)]))}, AniLA's is "
        f"{_fmt(float(expected[tuple(bad)]))}. The rule: the full step ε where |g| ≤ b, ε·b/|g| where |g| > b.",
    )


# --------------------------------------------------------------------------- notebook 02: training on the rings


def check_threshold(b, grad: torch.Tensor, target_share: float = 0.1, low: float = 0.05, high: float = 0.2) -> Verdict:
    """Whether AniLA with threshold ``b`` shrinks between ``low`` and ``high`` of the steps at gradients ``grad``
    (aiming at ``target_share``).

    The share is the package's own count, :meth:`AniLA.clipped_share` (coordinates with
    ``|g| > b``); the suggestion in the message is the ``1 − target_share`` quantile of ``|g|``.
    """
    exercise = f"a threshold b that shrinks about {target_share:.0%} of the steps"
    if not isinstance(grad, torch.Tensor) or grad.numel() == 0:
        raise ValueError("grad: expected a non-empty tensor of gradients ∇E at the chains' positions")
    if _is_placeholder(b):
        return _unanswered(exercise)
    value = _number(b)
    if value is None or not value > 0:
        return _invalid(exercise, f"b must be a number > 0; got {b!r}.")
    sizes = grad.detach().double().abs().flatten()
    share = float(AniLA(1.0, float(value)).clipped_share(grad.detach().double()))
    suggested = float(torch.quantile(sizes, 1 - target_share))
    median = float(sizes.median())
    if low <= share <= high:
        return _right(
            exercise,
            f"at b = {_fmt(value)} AniLA shrinks {share:.1%} of the steps at these chains: only the steepest "
            f"coordinates, where a full step would overshoot, while the rest take Langevin's steps. (The "
            f"{1 - target_share:.0%} quantile of |∂E/∂xᵢ|, {_fmt(suggested)}, gives {target_share:.0%} exactly.)",
        )
    if share > high:
        return _wrong(
            exercise,
            f"at b = {_fmt(value)} AniLA would shrink {share:.0%} of the steps: b sits below most of the gradients "
            f"(their median is {_fmt(median)}), so most coordinates crawl at the capped speed ε·b/2 and the "
            f"chains may not reach the data in K steps. Raise b toward the upper tail of |g| — look at the "
            f"histogram: which value leaves about {target_share:.0%} of the gradients to its right?",
        )
    what = (
        "b = inf is Langevin exactly"
        if math.isinf(value)
        else f"at b = {_fmt(value)} AniLA shrinks only {share:.1%} of the steps"
    )
    return _wrong(
        exercise,
        f"{what}: b is above almost every gradient, so AniLA takes Langevin's steps nearly everywhere and "
        f"differs from it in name only. Lower b toward the upper tail of |g| — which value leaves about "
        f"{target_share:.0%} of the gradients to its right?",
    )


ENERGY_GAP_QUESTION = MultipleChoice(
    "reading the energy gap",
    "During a run, the energy gap mean E(data) − mean E(samples) stays well below zero, evaluation after evaluation. "
    "What does it tell you?",
    {
        "a": Choice(
            "The model is excellent: the data have much lower energy than anything else.",
            "the gap compares the data with the chains' samples, not with everything else. A strongly negative gap "
            "says "
            "the samples sit high up the landscape where the data are not: the chains have not arrived.",
        ),
        "b": Choice(
            "The chains lag behind the model: they end at higher energy than the data, because of too few steps, too "
            "small a step, or a drift that AniLA caps.",
            "the loss is this gap; its gradient pushes the data down and the samples up, and each iteration the chains "
            "must catch up with the new energy. A gap that stays negative says they do not: more steps K, a larger ε, "
            "or "
            "a larger b for AniLA let them arrive (notebook 02, section (d)).",
            right=True,
        ),
        "c": Choice(
            "The chains found spurious low-energy regions away from the data.",
            "that shows the other way round: samples at lower energy than the data make the gap positive.",
        ),
        "d": Choice(
            "The learning rate is too small for the loss to move.",
            "a small learning rate makes the loss change slowly, it does not set its sign. The sign says where the "
            "chains ended relative to the data.",
        ),
    },
)


def check_energy_gap(answer) -> Verdict:
    """The letter of :data:`ENERGY_GAP_QUESTION` (what a persistently negative energy gap means)."""
    return ENERGY_GAP_QUESTION.check(answer)


# --------------------------------------------------------------------------- notebook 03: digits


BORDER_QUESTION = MultipleChoice(
    "the dark border of the step-size map",
    "AniLA's map of γ/ε on the trained digits model is dark (short steps) in the leftmost and rightmost columns of the "
    "image and light (full steps) in the middle. Why?",
    {
        "a": Choice(
            "The ConvNet pads its input with zeros, so an edge pixel has fewer neighbours and the energy depends on "
            "it less.",
            "if the energy depended less on the edge pixels, their gradients would be *smaller* and their steps "
            "full: the edges would be light, not dark.",
        ),
        "b": Choice(
            "In every training digit the outer columns are background, at −1, the end of the pixel range; the "
            "energy learns to fall steeply toward −1 there, so |∂E/∂x| is large at those pixels and AniLA shrinks "
            "their steps.",
            "dark means |∂E/∂x| > b. The data pin the outer columns to −1 in (almost) every image, while the pixels "
            "in the middle vary from digit to digit. The short-run chains start from uniform noise and must be driven "
            "all the way down to −1 there, so the energy slopes steeply toward −1 and keeps sloping past it: the "
            "samples end clamped at −1 with that steep gradient still on them.",
            right=True,
        ),
        "c": Choice(
            "AniLA uses a smaller threshold b at the border.",
            "b is one number for every pixel; only the gradient |∂E/∂x| differs from pixel to pixel.",
        ),
        "d": Choice(
            "The clamp to [−1, 1] stops the chains at the edges of the image, so their steps there are cut short.",
            "the clamp acts on pixel *values*, not on places in the picture: it clips every pixel to [−1, 1] after the "
            "K steps. The map shows γ/ε = b/max(b, |∂E/∂x|), in which the clamp does not appear.",
        ),
    },
)


def _edge_statistics() -> tuple[float, float]:
    """Share of the digits' training pixels at the background value −1: in the leftmost and rightmost columns, and in
    the columns between."""
    from anila_core.images.datasets import load_dataset

    images = load_dataset("digits", split="train").images
    background = images <= -1 + 1e-6
    edges = torch.zeros(images.shape[-1], dtype=torch.bool)
    edges[[0, -1]] = True
    return float(background[..., edges].float().mean()), float(background[..., ~edges].float().mean())


def check_dark_border(answer) -> Verdict:
    """The letter of :data:`BORDER_QUESTION`; a right answer also gets the share of background pixels in the outer
    columns and between them, measured on the digits."""
    verdict = BORDER_QUESTION.check(answer)
    if not verdict.correct:
        return verdict
    outer, inner = _edge_statistics()
    return BORDER_QUESTION.check(
        answer,
        f"Measured on the training digits: the two outer columns are at −1 in {outer:.1%} of "
        f"the images' pixels there, the six columns between them in {inner:.0%}.",
    )


def check_sample_norm_ratio(answer, shape: tuple[int, ...] = (1, 8, 8)) -> Verdict:
    """How many times one pixel's ``|g|`` the ``sample`` norm is when every pixel of an image of ``shape`` has the same
    ``|g|``: √(number of pixels).

    Computed with :meth:`AniLA.gradient_size` under the ``sample`` and ``pixel`` norms.
    """
    exercise = "the sample norm against one pixel"
    if _is_placeholder(answer):
        return _unanswered(exercise)
    value = _number(answer)
    if value is None:
        return _invalid(exercise, f"expected a number (a ratio); got {answer!r}.")
    ones = torch.ones(1, *shape, dtype=torch.float64)
    per_sample = float(AniLA(1.0, 1.0, norm="sample").gradient_size(ones).flatten()[0])
    per_pixel = float(AniLA(1.0, 1.0, norm="pixel").gradient_size(ones).flatten()[0])
    ratio = per_sample / per_pixel
    n = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    if _close(value, ratio, 0.01):
        return _right(
            exercise,
            f"‖g‖ = √(Σᵢ gᵢ²) = √{n}·|g₁| = {ratio:g}·|g₁| when all {n} pixels are alike. So with norm='sample' "
            f"a threshold b tuned for single pixels is exceeded by almost every image, and every step of it is "
            f"shrunk; to shrink as much as the per-pixel map, b must be about {ratio:g} times larger.",
        )
    if _close(value, ratio**2, 0.01):
        return _wrong(exercise, f"{ratio**2:g} is the sum of the {n} squared sizes; the norm is its square root.")
    if _close(value, 1.0, 0.01):
        return _wrong(exercise, f"the sample norm pools all {n} pixels of the image: √(Σᵢ gᵢ²), not one pixel's |g|.")
    if _close(value, math.sqrt(shape[-1]), 0.01):
        return _wrong(exercise, f"√{shape[-1]} counts one row; the image has {n} pixels.")
    return _wrong(exercise, f"{_fmt(value)} is not it. Write the norm √(Σᵢ gᵢ²) with every gᵢ = |g₁|, over {n} pixels.")


def check_crossing_steps(
    answer, step_size: float, b: float, distance: float = 2.0, n_steps: int | None = None
) -> Verdict:
    """The fewest AniLA steps for a coordinate whose gradient stays above ``b`` to drift across ``distance`` (the pixel
    range [−1, 1]: 2).

    The cap per step comes from the sampler's own step map; ``n_steps`` (the run's K), when
    given, is compared with it in the message.
    """
    exercise = f"steps across the range at ε = {step_size:g}, b = {b:g}"
    if _is_placeholder(answer):
        return _unanswered(exercise)
    value = _number(answer)
    if value is None or not value > 0:
        return _invalid(exercise, f"expected a number of steps > 0; got {answer!r}.")
    cap = _drift_cap(step_size, b)
    needed = distance / cap
    if abs(value - needed) <= max(1.0, 0.01 * needed):
        k = ""
        if n_steps is not None:
            k = f" The run's K = {n_steps} {'is enough' if n_steps >= needed else 'is not enough'}: " + (
                "a pixel clipped all the way can still cross."
                if n_steps >= needed
                else "a pixel whose gradient stays above b cannot get from one end of the range to the other in one "
                "chain."
            )
        return _right(
            exercise,
            f"a clipped coordinate drifts at most ε·b/2 = {_fmt(cap)} per step, so {distance:g} takes at least "
            f"{distance:g}/{_fmt(cap)} = {_fmt(needed)} steps (the noise, τ√γ, is tiny in cold sampling).{k}",
        )
    mistakes = [
        (
            distance / (step_size * b),
            "you moved ε·b per step; the drift is (γ/2)|g|, at most ε·b/2 — twice as many steps.",
        ),
        (distance / step_size, "that is the count at a drift of ε per step; AniLA's clipped drift is ε·b/2."),
    ]
    for mistake, why in mistakes:
        if abs(value - mistake) <= max(1.0, 0.01 * mistake):
            return _wrong(exercise, why)
    return _wrong(
        exercise,
        f"{_fmt(value)} steps is not it. The clipped drift per step is ε·b/2; how many of those make {distance:g}?",
    )


# --------------------------------------------------------------------------- notebook 04: colour images

#: the pixel of notebook 04's exercise: its three channel gradients and AniLA's threshold
PIXEL_GRADIENT = (0.03, 0.04, 0.0)
PIXEL_THRESHOLD = 0.04


def check_pixel_norm_ratio(answer) -> Verdict:
    """Whether ``answer`` is γ/ε for a pixel with channel gradients :data:`PIXEL_GRADIENT` under ``norm="pixel"`` at b =
    :data:`PIXEL_THRESHOLD`."""
    exercise = "the pixel norm"
    value, problem = _read_number(answer, exercise, "one number, γ/ε in (0, 1]")
    if problem is not None:
        return problem
    g = torch.tensor(PIXEL_GRADIENT, dtype=torch.float64).view(1, 3, 1, 1)
    expected = float(
        AniLA(1.0, PIXEL_THRESHOLD, norm="pixel").step_sizes(g)[0, 0, 0, 0]
    )  # the package's own map, ε = 1
    length = float(g.norm())
    if _close(value, expected, 1e-3):
        return _right(
            exercise,
            f"the pixel's gradient has length √(0.03² + 0.04²) = {length:.2f} > b = {PIXEL_THRESHOLD:g}, so all three "
            f"channels take γ/ε = b/|g| = {expected:.2f}, though no single channel is steeper than b: the pixel norm "
            "shrinks at least as often as the coordinate norm.",
        )
    slips = {
        1.0: "that is the coordinate norm's answer (each channel alone is at most 0.04 = b) or the largest channel's. "
        "The pixel norm "
        "takes the length of the three-channel gradient, √(g_R² + g_G² + g_B²).",
        PIXEL_THRESHOLD
        / 0.07: "you added the channels' sizes (0.07); the pixel norm takes the length √(g_R² + g_G² + g_B²).",
        length / PIXEL_THRESHOLD: "upside down: γ/ε = b / max(b, |g|) is at most 1.",
        PIXEL_THRESHOLD * 1.0: "that is b itself (the capped step ε·b/|g| needs |g|, the pixel gradient's length).",
    }
    for slip, why in slips.items():
        if _close(value, slip, 1e-3):
            return _wrong(exercise, why)
    return _wrong(
        exercise, f"{_fmt(value)} is not it. The pixel's gradient length is √(0.03² + 0.04² + 0²); compare it with b."
    )


# --------------------------------------------------------------------------- notebook 05: when training fails


def check_drift_length(answer, step_size: float, grad: float) -> Verdict:
    """Whether ``answer`` is the length of one drift step, ``step_size · grad / 2``, for a pixel whose gradient is
    ``grad``."""
    exercise = "how far one step goes"
    value, problem = _read_number(answer, exercise, "one number, a distance in pixel units")
    if problem is not None:
        return problem
    g = torch.full((1, 1), float(grad), dtype=torch.float64)
    # the package's own move: Langevin's step size times the gradient, halved (noise left out)
    expected = float(0.5 * Langevin(step_size).step_sizes(g) * g)
    if _close(value, expected, 1e-3):
        crosses = expected > 2
        return _right(
            exercise,
            f"ε·g/2 = {_fmt(expected)}"
            + (
                ", more than the whole range [−1, 1] (width 2): one step throws a typical pixel from one wall of the "
                "box to "
                "the other, and the clamp leaves it at ±1. Hence the saturated samples."
                if crosses
                else f", {expected / 2:.0%} of the range's width: a typical pixel does not cross the range in one "
                "step, but the "
                "steep ones (the rms hides them) do, and those end at ±1."
            ),
        )
    if _close(value, 2 * expected, 1e-3):
        return _wrong(exercise, "that is ε·g: the drift is ε/2 times the gradient.")
    if _close(value, expected / step_size, 1e-3) or _close(value, float(grad), 1e-3):
        return _wrong(exercise, "multiply by the step size ε: the drift is (ε/2)·g.")
    return _wrong(
        exercise, f"{_fmt(value)} is not it: the drift term of the update x − (ε/2)·∇E moves the pixel by ε·g/2."
    )


# --------------------------------------------------------------------------- notebook 06: when does AniLA help

CLIPPED_NONE_QUESTION = MultipleChoice(
    "AniLA that never clips",
    "An AniLA setting of the study clipped 0.0 % of the coordinates over its whole training run and ended at the same "
    "grid TV "
    "as Langevin at the same step size. What does that say about AniLA's anisotropic step?",
    {
        "a": Choice(
            "That it samples as well as Langevin, with no tuning needed.",
            "the run never used the anisotropic step: it says nothing about how well that step samples.",
        ),
        "b": Choice(
            "Nothing: with |∇E| < b at every coordinate, γ = ε everywhere, so this run *is* Langevin, step for step.",
            "since γ = ε·b/max(b, |g|) equals ε wherever |g| ≤ b, a run that never clips draws the same chain as "
            "Langevin "
            "from the same noise. A comparison speaks about the anisotropic step only where the clipped share is well "
            "above 0.",
            right=True,
        ),
        "c": Choice(
            "That clipping is harmless, so a smaller b would do as well.",
            "a smaller b clips, which makes it a different sampler; this run cannot say what that one does (the "
            "heatmaps of "
            "section (b) show it).",
        ),
        "d": Choice(
            "That the target is too easy for any sampler to fail on.",
            "the run never tried the anisotropic step, easy target or not; and the stability region of section (c) "
            "shows "
            "samplers failing on this target.",
        ),
    },
)


def check_clipped_none(answer) -> Verdict:
    """The letter of :data:`CLIPPED_NONE_QUESTION`; a right answer also gets the package's own check that b above every
    |g| gives Langevin's steps."""
    verdict = CLIPPED_NONE_QUESTION.check(answer)
    if not verdict.correct:
        return verdict
    g = torch.linspace(-29.0, 29.0, 59, dtype=torch.float64).view(1, -1)
    same = torch.equal(AniLA(0.01, 30.0).step_sizes(g), Langevin(0.01).step_sizes(g))
    return CLIPPED_NONE_QUESTION.check(
        answer,
        f"Checked on the package's samplers: for |g| ≤ 29 < b = 30 AniLA's step sizes "
        f"{'equal' if same else 'differ from'} Langevin's.",
    )


# --------------------------------------------------------------------------- notebook 07: what EBMs are for

#: the energies of notebook 07's exercise: three held-out digits, then two outliers
AUROC_IN = (1.0, 2.0, 3.0)
AUROC_OUT = (2.5, 4.0)


def check_auroc(answer) -> Verdict:
    """Whether ``answer`` is the AUROC of flagging :data:`AUROC_OUT` against :data:`AUROC_IN` by a high energy (the
    package's ``ood.auroc``)."""
    from anila_core.images.ood import auroc

    exercise = "the AUROC by hand"
    value, problem = _read_number(answer, exercise, "one number in [0, 1]")
    if problem is not None:
        return problem
    expected = auroc(torch.tensor(AUROC_IN), torch.tensor(AUROC_OUT))
    pairs = len(AUROC_IN) * len(AUROC_OUT)
    won = round(expected * pairs)
    if _close(value, expected, 1e-3):
        return _right(
            exercise,
            f"{won} of the {pairs} (digit, outlier) pairs have the outlier higher in energy: AUROC = {won}/{pairs} "
            f"= {expected:.3f}, as `ood.auroc` computes it from ranks. 1 would be a perfect detector, 0.5 a coin.",
        )
    if _close(value, 1 - expected, 1e-3):
        return _wrong(
            exercise, "upside down: count the pairs where the *outlier* has the higher energy (a high energy flags it)."
        )
    if _close(value, won, 1e-3):
        return _wrong(exercise, f"that is the number of pairs won; divide by the {pairs} pairs.")
    return _wrong(
        exercise,
        f"{_fmt(value)} is not it: take every (digit, outlier) pair, {pairs} of them, and count the share where "
        "the outlier's energy is higher.",
    )


# --------------------------------------------------------------------------- notebook 08: your own data

SLICED_VS_GRID_QUESTION = MultipleChoice(
    "two distances that disagree",
    "On the swiss roll, a run's sliced Wasserstein distance to the held-out points falls during training while its KDE "
    "grid "
    "TV rises. Which reading is right?",
    {
        "a": Choice(
            "One of the two is computed wrongly: two distances between the same sets cannot move in opposite "
            "directions.",
            "they measure different things. Sliced Wasserstein compares one-dimensional projections of the *samples*; "
            "the grid TV compares the model's *density* exp(−E) with a smoothed density of the data, cell by cell.",
        ),
        "b": Choice(
            "The samples spread out to the roll's extent, which the projections reward, while exp(−E) fills the gaps "
            "between the roll's arms, which the grid TV, cell by cell, counts against it.",
            "a filled disc of the roll's size has nearly the projections of the roll, so the sliced distance falls as "
            "the "
            "samples reach that size; the density in the gaps between the arms, where the data have none, is what the "
            "grid "
            "TV sees growing. The model learned the roll's extent, not its spiral.",
            right=True,
        ),
        "c": Choice(
            "The KDE grid TV rises because the held-out points change during training.",
            "the held-out fifth is fixed by a seed when the file is read; it is the same at every evaluation.",
        ),
        "d": Choice(
            "The model is overfitting the training points, which only the grid TV can detect.",
            "an overfit model would put its mass on the training points, *sharper* than the roll, not blur it into a "
            "disc.",
        ),
    },
)


def check_sliced_vs_grid(answer) -> Verdict:
    """The letter of :data:`SLICED_VS_GRID_QUESTION`."""
    return SLICED_VS_GRID_QUESTION.check(answer)
