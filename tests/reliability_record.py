"""The outcomes the hostile-use tests (tests/test_hostile.py) observed, for docs/RELIABILITY.md, which
tests/test_reliability.py renders."""

#: case id → (what was tried, what happened), in the order the tests ran
HOSTILE: dict[str, tuple[str, str]] = {}


def note(case: str, tried: str, outcome: str) -> None:
    """Record one hostile case that passed its test (called at the end of the test, after its assertions)."""
    HOSTILE[case] = (tried, outcome)
