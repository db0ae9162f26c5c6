"""Refusals of the global CP that are not about a document's content or the store."""

from __future__ import annotations


class PermissionDenied(Exception):
    """Authenticated, but this caller may not do this (403)."""


class Unauthenticated(Exception):
    """No credential, or one the global CP does not know (401)."""


class TooBusy(Exception):
    """Writers kept racing; nothing was written (409, retry)."""
