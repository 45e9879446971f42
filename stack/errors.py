"""Errors a user can cause or fix when starting the local stack."""

from __future__ import annotations


class StackError(RuntimeError):
    """One line naming what is wrong with the local stack and how to fix it."""
