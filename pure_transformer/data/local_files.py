"""Local data files: which files a path names, which split a file name says, and its siblings.

A path is a file, a folder (every supported file below it) or a glob. The words
``train``/``training``, ``validation``/``valid``/``val``/``dev`` and ``test`` in a
file's name say which split it holds; a ``*train*`` file's other splits are the
sibling files with that word replaced. :mod:`.registry` decides what to do with
them (``LocalSpec``).
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

from ..errors import DataError
from .sources import Split

BUILDERS: dict[str, str] = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text", ".csv": "csv"}
"""File suffix -> the ``datasets`` builder that reads it."""


def has_header(path: Path) -> bool:
    """Whether a CSV file's first row names its columns (a ``question`` column) rather than holding a question."""
    import csv

    with path.open(newline="", encoding="utf-8") as handle:
        first = next(csv.reader(handle), [])
    return any(cell.strip().lower() == "question" for cell in first)



def expand_local(name: str) -> tuple[Path, ...]:
    path = Path(name)
    if any(c in name for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(name, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"glob '{name}' matches no files")
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in BUILDERS)
        if not files:
            raise DataError(f"folder '{name}' has no {'/'.join(BUILDERS)} files")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"no such file or folder: '{name}'")
    unsupported = [f for f in files if f.suffix not in BUILDERS]
    if unsupported:
        raise DataError(f"unsupported file type '{unsupported[0]}'; use {', '.join(BUILDERS)}")
    builders = {BUILDERS[f.suffix] for f in files}
    if len(builders) > 1:
        raise DataError(f"'{name}' mixes file types ({', '.join(sorted(builders))}); use one kind per source")
    return tuple(files)


SPLIT_WORDS: dict[Split, tuple[str, ...]] = {"train": ("train", "training"),
                                            "validation": ("validation", "valid", "val", "dev"), "test": ("test",)}
"""The words in a file name that say which split it holds (``phrases_no_exclude_test.jsonl``: test)."""


def named_split(path: Path) -> Split | None:
    words = set(re.split(r"[^a-z0-9]+", path.stem.lower()))
    return next((split for split, names in SPLIT_WORDS.items() if words & set(names)), None)


def sibling_files(files: tuple[Path, ...], split: str) -> tuple[Path, ...]:
    """``x_train.jsonl`` -> ``x_validation.jsonl`` (or ``x_val``/``x_dev``), if all exist."""
    for alias in SPLIT_WORDS[split]:  # type: ignore[index]
        found = []
        for f in files:
            if "train" not in f.stem:
                return ()
            head, _, tail = f.stem.rpartition("train")
            candidate = f.with_name(head + alias + tail + f.suffix)
            if not candidate.is_file():
                break
            found.append(candidate)
        else:
            return tuple(found)
    return ()
