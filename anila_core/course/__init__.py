"""The course's exercises: ``check_...`` functions that tell a learner, in a sentence, whether an answer is right and
why (see :mod:`anila_core.course.checks`)."""

from anila_core.course import checks
from anila_core.course.checks import *  # noqa: F403 - the notebooks write ``from anila_core.course import check_...``

__all__ = checks.__all__
