"""The package's notices (features unavailable, a rollback taken): on stderr by default, or collected for a notebook to
show in its own words."""

from __future__ import annotations

import sys
from contextlib import contextmanager

__all__ = ["notice", "collect_notices"]

# the lists of the collect_notices blocks now open, innermost last: a notice goes to the innermost
_COLLECTORS: list[list[str]] = []


def notice(text: str) -> None:
    """Say ``text``: to the innermost :func:`collect_notices` block when one is open, else on stderr (a command line's
    place for it)."""
    if _COLLECTORS:
        _COLLECTORS[-1].append(text)
    else:
        print(text, file=sys.stderr, flush=True)


@contextmanager
def collect_notices():
    """``with collect_notices() as notes:`` keeps the notices of the block in the list ``notes`` instead of printing
    them.

    A notebook then shows them as part of its text; on stderr a student reads them as
    something gone wrong, which a notice (for instance, that FID uses another feature network
    here) is not.
    """
    notes: list[str] = []
    _COLLECTORS.append(notes)
    try:
        yield notes
    finally:
        _COLLECTORS.remove(notes)
