"""Which of two training runs did better, decided from every evaluation of the last half of training rather than from
the last value alone.

A rule that reads only the end of a run misfires both ways: two runs that end close may have
been apart all along, and a run whose metric jumps about (an erratic run) makes any final gap
look like noise, even when the other run was ahead at every single evaluation. So the rule
here compares the runs *at each shared evaluation* over the last half of training:

* ahead at every one of them (by more than the precision printed) → a winner;
* equal at the printed precision at every one → a tie;
* anything else → no clear winner, with how many evaluations each led.

The notebooks print these sentences next to the curves they summarise, so what the text says
is what the figure shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

__all__ = ["RunComparison", "compare_runs", "comparison_sentence"]


@dataclass(frozen=True)
class RunComparison:
    """The outcome of :func:`compare_runs`: ``outcome`` is ``"winner"``, ``"tie"``, ``"mixed"`` or ``"too few"``.

    ``first`` is the run with the better final value (``second`` the other); ``first_ahead``
    and ``second_ahead`` count the compared evaluations each led; ``iters`` are those
    evaluations' iterations and ``values`` each run's metric there.
    """

    metric: str
    outcome: str
    first: str
    second: str
    first_ahead: int
    second_ahead: int
    iters: tuple[int, ...]
    values: dict[str, tuple[float, ...]]

    @property
    def compared(self) -> int:
        """How many evaluations were compared."""
        return len(self.iters)


def _series(history: Sequence[Mapping], metric: str) -> dict[int, float]:
    out = {}
    for row in history:
        value = row.get(metric)
        if value is not None and isinstance(value, (int, float)) and math.isfinite(value):
            out[int(row["iter"])] = float(value)
    return out


def compare_runs(
    histories: Mapping[str, Sequence[Mapping]],
    metric: str,
    lower_is_better: bool = True,
    decimals: int = 3,
    last_share: float = 0.5,
) -> RunComparison:
    """Compare two runs' ``metric`` at every evaluation they share in the last ``last_share`` of training.

    ``histories``: two runs' rows (``trainer.history`` or ``metrics.jsonl``), each a dict with
    ``iter`` and the metric. Values that print the same at ``decimals`` decimals count as equal,
    so a verdict never contradicts the table beside it. With fewer than two shared evaluations
    in that window the outcome is ``"too few"``.
    """
    if len(histories) != 2:
        raise ValueError(f"histories: expected two runs, got {len(histories)}")
    if not 0 < last_share <= 1:
        raise ValueError(f"last_share: expected a share in (0, 1], got {last_share!r}")
    (a, ha), (b, hb) = histories.items()
    sa, sb = _series(ha, metric), _series(hb, metric)
    shared = sorted(set(sa) & set(sb))
    sign = 1.0 if lower_is_better else -1.0
    # which run ends better: the one the sentence names first
    if shared and sign * (round(sb[shared[-1]], decimals) - round(sa[shared[-1]], decimals)) < 0:
        a, b, sa, sb = b, a, sb, sa
    end = shared[-1] if shared else 0
    window = tuple(i for i in shared if i >= end * (1 - last_share)) if shared else ()
    values = {a: tuple(sa[i] for i in window), b: tuple(sb[i] for i in window)}
    diffs = [sign * (round(sb[i], decimals) - round(sa[i], decimals)) for i in window]
    a_ahead = sum(d > 0 for d in diffs)
    b_ahead = sum(d < 0 for d in diffs)
    if len(window) < 2:
        outcome = "too few"
    elif a_ahead == len(window):
        outcome = "winner"
    elif a_ahead == 0 and b_ahead == 0:
        outcome = "tie"
    else:
        outcome = "mixed"
    return RunComparison(metric, outcome, a, b, a_ahead, b_ahead, window, values)


def comparison_sentence(result: RunComparison, name: str | None = None, decimals: int = 3) -> str:
    """One Markdown sentence for ``result``: the verdict in bold, then the evaluations it rests on."""
    name = name or result.metric
    a, b = result.first, result.second
    n = result.compared
    span = f"iterations {result.iters[0]}–{result.iters[-1]}" if n else "no shared evaluation"

    def last(label):
        return f"{result.values[label][-1]:.{decimals}f}" if n else "n/a"

    if result.outcome == "too few":
        return (
            f"**Too few evaluations to compare {a} and {b}** on {name}: {n} shared in the last half of training; "
            "the verdict needs at least two."
        )
    if result.outcome == "winner":
        return (
            f"**{a} is ahead of {b}** on {name} at every one of the {n} evaluations of the last half of training "
            f"({span}); at the last, {last(a)} against {last(b)}."
        )
    if result.outcome == "tie":
        return (
            f"**A tie** on {name}: {a} and {b} print the same at all {n} evaluations of the last half ({span}), "
            f"ending at {last(a)}."
        )
    return (
        f"**No clear winner** on {name}: over the {n} evaluations of the last half ({span}) {a} was ahead at "
        f"{result.first_ahead} and {b} at {result.second_ahead}"
        + (
            f" (equal at {n - result.first_ahead - result.second_ahead})"
            if result.first_ahead + result.second_ahead < n
            else ""
        )
        + f"; at the last, {last(a)} against {last(b)}."
    )
