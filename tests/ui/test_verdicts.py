"""The run-comparison rule of the notebooks' verdicts (an erratic loser still loses, equal runs tie, crossing runs have
no winner), and the check of notebook outputs for noise."""

import math

import pytest

from anila_core.ui.verdicts import compare_runs, comparison_sentence


def rows(values, every=100):
    return [{"iter": every * (i + 1), "grid_tv": v} for i, v in enumerate(values)]


def test_an_erratic_run_behind_at_every_evaluation_loses():
    # the case of notebook 02's earlier runs (AniLA at b = 3 and b = 30): b = 3 jumps about (0.15 → 0.40 → 0.22 …)
    # but is above b = 30 at every evaluation of the last half; a rule that reads how much a run moved over its last
    # evaluations called this "no clear winner"
    steady = rows([0.5, 0.3, 0.12, 0.11, 0.10, 0.10, 0.101, 0.10])
    erratic = rows([0.5, 0.4, 0.35, 0.41, 0.18, 0.40, 0.229, 0.33])
    result = compare_runs({"b = 3": erratic, "b = 30": steady}, "grid_tv")
    assert result.outcome == "winner" and result.first == "b = 30" and result.second == "b = 3"
    assert result.iters == (400, 500, 600, 700, 800) and result.first_ahead == 5
    sentence = comparison_sentence(result, "grid TV")
    assert sentence.startswith("**b = 30 is ahead of b = 3**") and "0.100 against 0.330" in sentence


def test_two_equal_runs_tie_and_name_no_winner():
    same = rows([0.4, 0.2, 0.15, 0.14])
    result = compare_runs({"A": same, "B": [dict(r) for r in same]}, "grid_tv")
    assert result.outcome == "tie" and result.first_ahead == result.second_ahead == 0
    assert comparison_sentence(result).startswith("**A tie**")


def test_values_equal_at_the_printed_precision_are_equal():
    a = rows([0.3, 0.2004, 0.1004, 0.1001])
    b = rows([0.3, 0.2001, 0.1001, 0.0998])  # 0.100 against 0.100 at three decimals
    assert compare_runs({"a": a, "b": b}, "grid_tv").outcome == "tie"
    finer = compare_runs({"a": a, "b": b}, "grid_tv", decimals=4)
    assert finer.outcome == "winner" and finer.first == "b"


def test_runs_that_cross_have_no_clear_winner_and_the_count_is_given():
    a = rows([0.5, 0.3, 0.20, 0.25, 0.18, 0.30])
    b = rows([0.5, 0.3, 0.25, 0.20, 0.22, 0.21])
    result = compare_runs({"a": a, "b": b}, "grid_tv")
    assert result.outcome == "mixed" and result.first == "b"  # b ends lower (0.21 against 0.30)
    # the last half is iterations 300–600: a leads at 300 and 500, b at 400 and 600
    assert (result.first_ahead, result.second_ahead) == (2, 2) and result.compared == 4
    assert "ahead at 2" in comparison_sentence(result)


def test_higher_is_better_metrics_and_missing_values():
    a = [
        {"iter": 1, "acc": 0.5},
        {"iter": 2, "acc": None},
        {"iter": 3, "acc": 0.7},
        {"iter": 4, "acc": math.nan},
        {"iter": 5, "acc": 0.8},
    ]
    b = [{"iter": i, "acc": 0.4} for i in range(1, 6)]
    result = compare_runs({"a": a, "b": b}, "acc", lower_is_better=False)
    assert (
        result.outcome == "winner" and result.first == "a" and result.iters == (3, 5)
    )  # None and NaN rows are skipped


def test_too_few_shared_evaluations_and_bad_arguments():
    assert compare_runs({"a": rows([0.1]), "b": rows([0.2])}, "grid_tv").outcome == "too few"
    with pytest.raises(ValueError, match="two runs"):
        compare_runs({"a": rows([0.1])}, "grid_tv")
    with pytest.raises(ValueError, match="last_share"):
        compare_runs({"a": rows([0.1]), "b": rows([0.2])}, "grid_tv", last_share=0)


def test_notebook_noise_finds_stderr_and_warnings_and_passes_clean_outputs():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from notebook_noise import noise_in_outputs

    def nb(*outputs):
        return {
            "cells": [
                {"cell_type": "markdown", "source": "UserWarning: in prose is fine"},
                {"cell_type": "code", "id": "c1", "outputs": list(outputs)},
            ]
        }

    clean = nb(
        {"output_type": "stream", "name": "stdout", "text": "iteration 10: gap -0.1\n"},
        {"output_type": "display_data", "data": {"text/plain": "<Figure>", "image/png": "..."}},
    )
    assert noise_in_outputs(clean) == []
    stderr = noise_in_outputs(
        nb({"output_type": "stream", "name": "stderr", "text": "notice: FID uses other features\n"})
    )
    assert len(stderr) == 1 and "stderr" in stderr[0] and "(c1)" in stderr[0]
    printed = nb({"output_type": "stream", "name": "stdout", "text": "x.py:3: UserWarning: Converting a tensor\n"})
    assert "warning on stdout" in noise_in_outputs(printed)[0]
    assert (
        noise_in_outputs(nb({"output_type": "stream", "name": "stderr", "text": "\n"})) == []
    )  # an empty line is no message
