"""Checks for every value that goes into a manifest.

Kubernetes refuses a bad name or quantity only when the manifest reaches the API
server, with a message about the object rather than the flag; these checks name
the flag instead, as one ``error:`` line (a :class:`~pure_transformer.errors.ConfigError`),
before anything is rendered. The rules are the API server's own (DNS-1123 labels,
label values, resource quantities).
"""

from __future__ import annotations

import hashlib
import re

from ..errors import ConfigError

# k8s.io/apimachinery validation: IsDNS1123Label, IsValidLabelValue, resource.Quantity.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_QUANTITY = re.compile(r"[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?")
MAX_NAME = 63

# Run names become a folder, a label value and part of every object's name, so they follow
# the strictest of the three (a DNS-1123 label); the length cap leaves room for the longest
# object prefix plus a hash (see :func:`object_name`).
MAX_RUN = 40


def dns_label(value: str, flag: str, max_len: int = MAX_NAME) -> str:
    """``value`` if it is a DNS-1123 label (lowercase letters, digits, '-') of at most ``max_len`` chars."""
    if not isinstance(value, str) or len(value) > max_len or not _DNS_LABEL.fullmatch(value):
        raise ConfigError(f"{flag} {value!r} is not a valid name: use at most {max_len} lowercase letters, "
                          "digits and '-', starting and ending with a letter or digit")
    return value


def dns_subdomain(value: str, flag: str) -> str:
    """``value`` if it is a DNS-1123 subdomain (a label, or labels joined by '.'), at most 253 chars."""
    if not isinstance(value, str) or len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise ConfigError(f"{flag} {value!r} is not a valid name: use lowercase letters, digits, '-' and '.'")
    return value


def run_name(value: str) -> str:
    """A ``--run`` name: a DNS-1123 label of at most :data:`MAX_RUN` characters."""
    return dns_label(value, "--run", MAX_RUN)


def label_value(value: str, what: str) -> str:
    """A label value: at most 63 chars of letters, digits, '-', '_', '.', alphanumeric at both ends."""
    if not isinstance(value, str) or len(value) > MAX_NAME or not _LABEL_VALUE.fullmatch(value):
        raise ConfigError(f"{what} {value!r} is not a valid Kubernetes label value")
    return value


def quantity(value: str, flag: str) -> str:
    """A resource quantity such as ``8``, ``500m``, ``64Gi``; kept as a string so YAML never retypes it."""
    if not isinstance(value, str) or not _QUANTITY.fullmatch(value) or not re.search(r"[1-9]", value):
        raise ConfigError(f"{flag} {value!r} is not a positive Kubernetes quantity (e.g. 8, 500m, 64Gi)")
    return value


def positive_int(value: int, flag: str, minimum: int = 1) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{flag} must be an integer >= {minimum}, got {value!r}")
    return value


def object_name(prefix: str, run: str | None, max_len: int = MAX_NAME) -> str:
    """``prefix`` or ``prefix-run``, shortened to ``max_len`` with a hash of the run when too long.

    The hash keeps two long run names that share a beginning from mapping to one object.
    """
    name = f"{prefix}-{run}" if run else prefix
    if len(name) <= max_len:
        return name
    digest = hashlib.sha256(run.encode()).hexdigest()[:8]  # type: ignore[union-attr]
    keep = max_len - len(prefix) - len(digest) - 2
    if keep < 1:
        raise ConfigError(f"object name {name!r} cannot be shortened to {max_len} characters")
    return f"{prefix}-{run[:keep].rstrip('-')}-{digest}"  # type: ignore[index]
