"""The base of every error a user can cause; the CLI prints its message without a traceback."""

from __future__ import annotations


class TokenpulseError(Exception):
    """A problem the user can fix; the message names the thing and the fix."""
