"""Every result number in the README, docs/ and the notebooks' markdown comes from a committed result file
(tests/published_numbers.py says how)."""

import json

import pytest

from published_numbers import ROOT, check_text, markdown_texts, matches, source_values

# Generated files: their numbers are those of the run that wrote them, checked by regenerating them
GENERATED = {
    "docs/RELIABILITY.md": "written by `make reliability` from the cases it runs",
}


TEXTS = [t for t in markdown_texts() if t[0] not in GENERATED]


@pytest.mark.parametrize("path, text", TEXTS, ids=[path for path, _ in TEXTS])
def test_every_result_number_has_its_source(path, text):
    findings = check_text(path, text)
    assert not findings, "numbers without a source or differing from it:\n" + "\n".join(map(str, findings))


def test_the_check_fails_on_a_number_that_differs_from_its_file():
    final = "data/trained/digits-cpu/langevin/final.json"
    fid = json.loads((ROOT / final).read_text())["fid"]
    good = f"<!-- numbers: {final} -->FID {fid:.3f} after 1000 iterations<!-- /numbers -->"
    assert check_text("x.md", good) == []
    wrong = good.replace(f"{fid:.3f}", f"{fid + 0.007:.3f}")
    assert [f.number for f in check_text("x.md", wrong)] == [f"{fid + 0.007:.3f}"]
    # a measured-looking number outside any passage has no source; a setting such as 0.01 is not a result
    assert [f.number for f in check_text("x.md", "grid TV 0.1234 at ε = 0.01")] == ["0.1234"]
    assert "no such result file" in check_text("x.md", "<!-- numbers: nowhere.json -->1.5<!-- /numbers -->")[0].why


def test_a_printed_number_matches_at_its_own_precision():
    assert matches("0.180", [0.18025]) and not matches("0.187", [0.18025])
    assert matches("71.1", [0.7114 * 100]) and matches("404", [403.6])
    assert not matches("0.0359", [0.0352])
    assert 0.994 in source_values("data/trained/rings-demo/comparison.md")  # a markdown source's numbers, as printed


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in (ROOT / "docs" / "study").glob("*/sweep.json")))
def test_study_reports_are_regenerated_from_their_results(folder):
    from anila_core.study.reports import markdown_report
    from anila_core.study.results import load_sweep

    out = ROOT / "docs" / "study" / folder
    assert (out / "sweep.md").read_text() == markdown_report(load_sweep(out)), (
        f"run: python -m anila_core sweep ... --out {out} (or write_report)"
    )
