"""Under nbmake every notebook of the session (these and apps/) also fails on stray output: text on stderr or a warning
in any cell (tests/notebook_noise.py says what counts)."""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from notebook_noise import noise_in_outputs  # noqa: E402

try:  # nbmake is a test extra: without it the notebooks are not collected, and nothing here applies
    from nbmake import pytest_items
    from nbmake.nb_result import NotebookError
except ImportError:  # pragma: no cover
    pytest_items = None


if pytest_items is not None and not getattr(pytest_items.NotebookRun, "_anila_checks_noise", False):

    class _QuietNotebookRun(pytest_items.NotebookRun):
        """nbmake's run, reused rather than repeated: the executed notebook it returns is read for noise, at no extra
        cost."""

        _anila_checks_noise = True

        def execute(self):
            result = super().execute()
            if result.error is None:
                noise = noise_in_outputs(result.nb)
                if noise:
                    summary = f"{len(noise)} stray output(s): stderr or warnings"
                    result.error = NotebookError(summary=summary, trace="\n".join(noise), failing_cell_index=-1)
            return result

    pytest_items.NotebookRun = _QuietNotebookRun
