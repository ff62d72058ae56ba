"""User-facing errors.

Anything a user can cause (a wrong path, an unknown preset, a malformed record)
raises a :class:`UserError` subclass whose message is one line naming the
problem. The CLI prints that line and exits with status 2 instead of showing a
traceback; library callers can catch the specific subclass.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in input or configuration; the message is shown verbatim."""


class ConfigError(UserError, ValueError):
    """An invalid or unknown configuration, preset or option."""


class DataError(UserError, ValueError):
    """A missing path, unknown dataset or malformed record."""


class TokenizerError(UserError):
    """A tokenizer that cannot be found, loaded or trained."""
