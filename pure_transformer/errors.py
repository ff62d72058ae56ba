"""User-facing errors.

Anything a user can cause (a wrong path, an unknown preset, a malformed record)
raises a :class:`UserError` subclass whose message is one line naming the
problem. The CLI prints that line and exits with status 2 instead of showing a
traceback; library callers can catch the specific subclass.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import Iterator


class UserError(Exception):
    """A mistake in input or configuration; the message is shown verbatim."""


class ConfigError(UserError, ValueError):
    """An invalid or unknown configuration, preset or option."""


class DataError(UserError, ValueError):
    """A missing path, unknown dataset or malformed record."""


class TokenizerError(UserError):
    """A tokenizer that cannot be found, loaded or trained."""


class OutputError(UserError):
    """A file or folder a command cannot write: a full disk, a read-only mount, a path under a file."""


def os_reason(e: BaseException) -> str:
    """The operating system's words for ``e`` ("No space left on device"), also out of the message
    safetensors and tokenizers wrap them in ("Error while serializing: I/O error: No space left on
    device (os error 28)")."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return re.sub(r" \(os error \d+\)$", "", str(e).split("I/O error: ")[-1])  # Rust's io::Error, as is


@contextmanager
def writing(path: str | os.PathLike[str],
            errors: tuple[type[BaseException], ...] = (OSError,)) -> Iterator[None]:
    """Turn ``errors`` raised while writing ``path`` into an :class:`OutputError` that names the
    path and the operating system's reason: a full disk is the user's to fix, not a traceback."""
    try:
        yield
    except OutputError:
        raise
    except errors as e:
        raise OutputError(f"cannot write {os.fspath(path)}: {os_reason(e)}") from None
