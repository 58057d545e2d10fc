"""The one base class of every error this package raises on purpose.

The command line catches `VisionStudiesError` and prints its message; anything else is a programming error
and keeps its traceback. Each domain error also derives from the built-in it always was (``ValueError``,
``OSError``, ...), so code that caught those still does.
"""

from __future__ import annotations

__all__ = ["VisionStudiesError"]


class VisionStudiesError(Exception):
    """A failure with a message that says what went wrong and what to do; raised on purpose, never a bug."""
