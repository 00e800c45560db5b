"""The published-numbers check: every result number in the README, docs/ and the notebooks' markdown is tied to a
committed result file.

Prose marks a passage that states results with the files they come from::

    <!-- numbers: data/trained/digits-cpu/*/final.json -->
    ... the text, tables and figures' captions ...
    <!-- /numbers -->

Inside such a passage every decimal number (and every whole number of seconds, ``217 s``) must
equal, at the precision it is printed with, a number in one of the named files (any numeric
value in a JSON/JSONL file, that value as a percentage, or a number in a markdown file).
Outside the passages, a decimal number with three or more significant digits (a measured
value, not a setting such as 0.01) is refused: it is a result with no source.
"""

from __future__ import annotations

import glob
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- numbers: (?P<sources>[^>]*?) -->(?P<body>.*?)<!-- /numbers -->", re.S)
# a decimal (0.103, 4.9, 1.17), or a whole number followed by " s" (a wall time)
NUMBER = re.compile(r"(?<![\w.\-/=])(?P<value>\d+\.\d+|\d+(?= s\b))(?![\w.])")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)
# settings and other numbers that are not results, as they appear outside marked passages of one file ("*": any file),
# each with why
NOT_RESULTS = {
    "*": {
        "0.995": "an EMA decay, a setting",
        "0.999": "an EMA decay or Adam's beta2, a setting",
        "2.303": "ln 10, the largest class entropy of ten classes",
    },
    "README.md": {
        "3.10": "a Python version",
        "2310.12667": "the published paper's arXiv identifier",
    },
    "notebooks/00_what_is_an_energy_model.ipynb": {"12.5": "the true share of each of eight equal modes, 1/8"},
    "notebooks/01_sampling_known_energies.ipynb": {"0.100": "the ill-conditioned Gaussian's own stiff sd, a setting"},
    "docs/EXPLORE.md": {
        "1.26": "the panels' slider step for b, a factor of 10^0.1",
        "3.16": "five slider steps, 10^0.5 (or b set to it)",
        "0.316": "a value of b the panels were set to",
    },
}


@dataclass
class Finding:
    """A number that has no source: where it is and why it fails."""

    path: str
    number: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}: {self.number}: {self.why}"


def markdown_texts() -> list[tuple[str, str]]:
    """``(path, markdown)`` of the README, every markdown file under docs/ (the generated study reports aside) and each
    notebook's markdown cells."""
    out = [("README.md", (ROOT / "README.md").read_text())]
    for path in sorted((ROOT / "docs").rglob("*.md")):
        if path.parent.parent.name == "study":
            continue  # sweep.md: generated from its sweep.json, checked by regenerating it
        out.append((str(path.relative_to(ROOT)), path.read_text()))
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        out.append(
            (
                str(path.relative_to(ROOT)),
                "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown"),
            )
        )
    return out


def _numbers_in(value) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)] if math.isfinite(value) else []
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers_in(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers_in(v)]
    return []


def source_values(pattern: str) -> list[float]:
    """Every number in the files ``pattern`` names (a glob relative to the repository), and each as a percentage."""
    paths = sorted(glob.glob(str(ROOT / pattern)))
    if not paths:
        raise FileNotFoundError(f"{pattern}: no such result file in the repository")
    values: list[float] = []
    for path in paths:
        text = Path(path).read_text()
        if path.endswith(".json"):
            values += _numbers_in(json.loads(text))
        elif path.endswith(".jsonl"):
            values += [x for line in text.splitlines() if line.strip() for x in _numbers_in(json.loads(line))]
        else:
            values += [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)]
    return values + [100 * v for v in values]


def matches(printed: str, values: list[float]) -> bool:
    """Whether ``printed`` is one of ``values`` rounded to the digits it is printed with."""
    digits = len(printed.split(".")[1]) if "." in printed else 0
    x = float(printed)
    return any(abs(v - x) <= 0.5 * 10**-digits + 1e-9 for v in values)


def significant_digits(printed: str) -> int:
    return len(printed.replace(".", "").lstrip("0"))


def check_text(path: str, text: str) -> list[Finding]:
    """The numbers of one markdown text that differ from their sources, or have none."""
    findings = []
    text = CODE.sub("", text)
    for block in BLOCK.finditer(text):
        sources = [s.strip() for s in block["sources"].split(",") if s.strip()]
        try:
            values = [v for s in sources for v in source_values(s)]
        except FileNotFoundError as err:
            findings.append(Finding(path, block["sources"], str(err)))
            continue
        for m in NUMBER.finditer(block["body"]):
            if not matches(m["value"], values):
                findings.append(Finding(path, m["value"], f"not in {', '.join(sources)} at its printed precision"))
    outside = BLOCK.sub("", text)
    for m in NUMBER.finditer(outside):
        value = m["value"]
        allowed = NOT_RESULTS["*"].keys() | NOT_RESULTS.get(path, {}).keys()
        if "." in value and significant_digits(value) >= 3 and value not in allowed:
            findings.append(
                Finding(path, value, "a measured-looking number outside any <!-- numbers: FILE --> passage")
            )
    return findings
