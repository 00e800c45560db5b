"""The package's layout rules (docs/ARCHITECTURE.md): small modules, and what differs between kinds of data asked of
the data kinds alone."""

import re
from pathlib import Path

import anila_core

PACKAGE = Path(anila_core.__file__).parent
#: the exercise catalogue is one list of exercises, long by nature
LONG_ALLOWED = {"course/checks.py"}
#: where the kind of a run's data may be asked directly: the config's own properties and the data kinds
KIND_QUESTIONS_ALLOWED = ("training/config.py", "training/kinds/")


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > 500}
    assert set(long) <= LONG_ALLOWED, f"modules over 500 lines: {long}"


def test_no_branch_on_the_kind_of_data_outside_the_data_kinds():
    found = []
    for path in _modules():
        where = str(path.relative_to(PACKAGE))
        if where.startswith(KIND_QUESTIONS_ALLOWED):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if re.search(r"\.is_(image|points)\b|startswith\([\"']points:", line):
                found.append(f"{where}:{number}: {line.strip()}")
    assert not found, "ask the run's data kind (training/kinds) instead:\n" + "\n".join(found)
