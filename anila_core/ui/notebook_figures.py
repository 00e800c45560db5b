"""A matplotlib figure inside a notebook widget: made without being shown, hosted by a widget, shown anew on change."""

from __future__ import annotations

from contextlib import contextmanager

import ipywidgets as widgets
import matplotlib.pyplot as plt

__all__ = ["figure_not_shown", "figure_host", "redisplay"]


@contextmanager
def figure_not_shown():
    """``plt.ioff()`` for a figure that a panel places itself, leaving interactive mode as the session wants it.

    pyplot loads its backend when the first figure is made, and in IPython that turns
    interactive mode on. Inside a plain ``plt.ioff()`` block that first figure's switch-on
    is undone when the block ends, and the inline backend then shows no later figure of the
    notebook; this block turns it back on when the backend asked for it.
    """
    was_interactive = plt.isinteractive()
    with plt.ioff():
        yield
        turned_on_inside = plt.isinteractive()
    if turned_on_inside and not was_interactive:
        plt.ion()


def figure_host(fig) -> tuple[widgets.DOMWidget, widgets.Output | None]:
    """``(widget, output)``: the widget showing ``fig``, and the ``Output`` to re-display it in (``None`` under ipympl).

    Under ipympl the canvas itself is a widget and redraws in place. Otherwise the figure is
    taken off pyplot's list, so that an inline backend never shows it a second time at the end
    of a cell, and an ``Output`` widget displays it instead (:func:`redisplay`).
    """
    if isinstance(fig.canvas, widgets.DOMWidget):
        return fig.canvas, None
    plt.close(fig)
    output = widgets.Output()
    return output, output


def redisplay(output: widgets.Output, fig) -> None:
    """Show ``fig`` as it is now in ``output``, in place of what was there."""
    from IPython.display import display

    with output:
        output.clear_output(wait=True)
        display(fig)
