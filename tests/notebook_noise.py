"""What a notebook's executed outputs must not hold: text on stderr and warnings, which a student reads as something
gone wrong."""

from __future__ import annotations

import re

__all__ = ["noise_in_outputs"]

# a warning shown through the warnings module reads "<file>:<line>: SomethingWarning: message"; a printed one at least
# names its class
_WARNING = re.compile(r"\b\w*Warning\b:")


def noise_in_outputs(nb) -> list[str]:
    """One line per stray output of an executed notebook (a dict or NotebookNode): each stderr stream, and each output
    naming a warning.

    Stdout and rich outputs are the notebook's own text; stderr is where libraries write what
    the notebook did not choose to show (warnings, notices, progress bars without widgets).
    """
    found = []
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for index, cell in enumerate(code_cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = "".join(out.get("text", ""))
                if out.get("name") == "stderr" and text.strip():
                    found.append(f"code cell {index} ({cell.get('id')}): stderr: {text.strip()[:300]}")
                elif _WARNING.search(text):
                    found.append(f"code cell {index} ({cell.get('id')}): a warning on stdout: {text.strip()[:300]}")
            elif out.get("output_type") in ("display_data", "execute_result"):
                text = "".join(out.get("data", {}).get("text/plain", ""))
                if _WARNING.search(text):
                    found.append(
                        f"code cell {index} ({cell.get('id')}): a warning in a displayed output: {text.strip()[:300]}"
                    )
    return found
