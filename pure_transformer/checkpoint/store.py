"""Checkpoints: safetensors weights, safetensors optimizer tensors, JSON metadata.

Layout of a run folder::

    DIR/step_0000500/  model.safetensors  optimizer.safetensors  meta.json
    DIR/best/          the step with the lowest validation loss (hard links)
    DIR/final/         written when a run completes

Nothing here ever unpickles: tensors travel as safetensors and everything else
(config, counters, RNG and data-stream state) as JSON, so loading a checkpoint
from a stranger cannot execute code.

Writes are atomic. A checkpoint is written to a hidden temporary folder, every
file and the folder are fsynced, and only then is it renamed into place, so a
kill at any instant leaves either the old or the new checkpoint, never a
half-written one under a real name. Loading validates the files and falls back
to the newest valid checkpoint with a warning.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import ConfigError, UserError, os_reason

MODEL_FILE, OPTIM_FILE, META_FILE = "model.safetensors", "optimizer.safetensors", "meta.json"
STEP_RE = re.compile(r"^step_(\d{7,})$")


class CheckpointError(UserError):
    """A checkpoint path that does not exist or holds no valid checkpoint."""


# ------------------------------------------------------------------ writing
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


@functools.cache
def _file_mode() -> int:
    """What open() gives a new file. os.umask can only be read by setting it, so it is
    read once, on the first save (a race only with threads creating files that instant)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file``, fsynced, with the permissions of a normal file
    (safetensors writes 0600, which other users and containers cannot read)."""
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)
    os.chmod(path, _file_mode())
    with open(path, "rb+") as f:
        os.fsync(f.fileno())



def model_tensors(model: torch.nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's state dict (or a gathered one) with shared (tied) tensors stored once."""
    out, seen = {}, set()
    for name, t in (model if isinstance(model, dict) else model.state_dict()).items():
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        out[name] = t
    return out


def optimizer_to_files(optimizer: torch.optim.Optimizer | dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state dict (or a gathered one) into tensors (safetensors) and plain values (JSON)."""
    sd = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_files(tensors: dict[str, torch.Tensor], plain: dict) -> dict:
    """Rebuild the dict that ``Optimizer.load_state_dict`` takes."""
    state: dict[int, dict[str, Any]] = {}
    for flat, value in list(tensors.items()) + list(plain["scalars"].items()):
        idx, key = flat.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def _replace_dir(tmp: Path, final: Path) -> None:
    """Atomically move ``tmp`` to ``final``; an existing ``final`` is replaced."""
    old = final.with_name(f".old-{final.name}")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)


def save_checkpoint(path: str | Path, model: torch.nn.Module | dict[str, torch.Tensor], meta: dict,
                    optimizer: torch.optim.Optimizer | dict | None = None, files: dict[str, str] | None = None,
                    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write ``model`` (+ optimizer), ``meta``, small text ``files`` (name ->
    content, e.g. the tokenizer) and extra safetensors files (name -> tensors,
    e.g. an RL reference model) to the folder ``path``, atomically. ``model`` and
    ``optimizer`` may be state dicts already gathered from shards."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        save_safetensors(tmp / MODEL_FILE, model_tensors(model))
        meta = dict(meta)
        if optimizer is not None:
            tensors, plain = optimizer_to_files(optimizer)
            save_safetensors(tmp / OPTIM_FILE, tensors)
            meta["optimizer"] = plain
        for name, extra in (extra_tensors or {}).items():
            save_safetensors(tmp / name, extra)
        for name, text in (files or {}).items():
            with open(tmp / name, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        _write_json(tmp / META_FILE, meta)  # written last: its presence marks a complete folder
        _fsync_dir(tmp)
        _replace_dir(tmp, final)
    except (OSError, SafetensorError) as e:  # a full disk, a quota, a read-only mount: the last good
        shutil.rmtree(tmp, ignore_errors=True)  # checkpoint stays, and the half-written one must not eat the space
        raise CheckpointError(f"could not write checkpoint to {final.parent}: {os_reason(e)}") from None
    return final


def link_checkpoint(src: Path, name: str) -> Path:
    """Point ``src.parent/name`` (``best``, ``final``) at a copy of ``src`` made of hard
    links (no extra disk while ``src`` exists).

    The copy is a hidden folder, ``.{name}-{src.name}-{inode}``, and ``name`` is a symlink to it,
    swapped with one ``os.replace``: at every instant ``name`` is the old checkpoint or the
    new one, never missing (a kill between two renames of a folder could leave neither).
    Copies no link points at are removed afterwards, and by :func:`recover_run_dir`.
    """
    run = src.parent
    # One name per save of src (its meta file's inode): a resumed run that saves the same step
    # again gets a new copy, and a copy the link points at is never rebuilt in place.
    target = run / f".{name}-{src.name}-{os.stat(src / META_FILE).st_ino}"
    link = run / name
    try:
        if not (target / META_FILE).is_file():  # a copy left half-made by a kill is rebuilt
            tmp = run / f".tmp-{name}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(target, ignore_errors=True)
            tmp.mkdir()
            for f in src.iterdir():
                try:
                    os.link(f, tmp / f.name)
                except OSError:  # file systems without hard links
                    shutil.copy2(f, tmp / f.name)
            _fsync_dir(tmp)
            os.rename(tmp, target)
        new_link = run / f".tmp-link-{name}-{os.getpid()}"
        if new_link.is_symlink():
            new_link.unlink()
        os.symlink(target.name, new_link)
        aside = run / f".old-{name}"
        if link.is_dir() and not link.is_symlink():  # a run from before links: its folder moves aside
            shutil.rmtree(aside, ignore_errors=True)  # first (recover_run_dir brings it back if killed here)
            os.rename(link, aside)
        os.replace(new_link, link)
        shutil.rmtree(aside, ignore_errors=True)
        _fsync_dir(run)
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"could not write checkpoint to {run}: {os_reason(e)}") from None
    recover_run_dir(run)
    return link


def recover_run_dir(run_dir: str | Path) -> None:
    """Undo what a kill can leave behind: a ``best``/``final`` moved aside and not yet
    replaced comes back, and copies no link points at are removed."""
    run = Path(run_dir)
    if not run.is_dir():
        return
    for name in ("best", "final"):
        link, aside = run / name, run / f".old-{name}"
        if not os.path.lexists(link) and aside.is_dir():
            os.rename(aside, link)
        current = os.readlink(link) if link.is_symlink() else None
        for copy in run.glob(f".{name}-*"):
            if copy.name != current:
                shutil.rmtree(copy, ignore_errors=True)


def step_dirs(run_dir: str | Path) -> list[Path]:
    """``step_*`` folders of a run, oldest first."""
    run = Path(run_dir)
    if not run.is_dir():
        return []
    return sorted((p for p in run.iterdir() if p.is_dir() and STEP_RE.match(p.name)),
                  key=lambda p: int(STEP_RE.match(p.name).group(1)))  # type: ignore[union-attr]


def step_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"step_{step:07d}"


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` step folders (``best/`` is separate
    and survives). Also clears temporary folders left by a killed save."""
    run = Path(run_dir)
    recover_run_dir(run)  # first: a moved-aside best/final may be the only copy left
    removed = step_dirs(run)[:-keep_last] if keep_last > 0 else []
    removed += [p for p in run.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    for p in removed:
        if p.is_symlink():
            p.unlink()
        else:
            shutil.rmtree(p, ignore_errors=True)
    return removed


# ------------------------------------------------------------------ the run folder
class RunLock:
    """An exclusive ``flock`` on ``DIR/.lock`` for the life of a run, pretraining and RL alike.

    A second run on the same folder (a Kubernetes restart while the old pod still lives)
    fails at once, naming the holder, instead of pruning checkpoints under the first. The
    kernel drops the lock when its process dies, kill -9 included, so no stale lock is
    ever left to clean up.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        import fcntl
        import socket

        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"--checkpoint-dir {self.run_dir} is a file, not a folder")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise CheckpointError(f"cannot write to {self.run_dir}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise CheckpointError(f"{self.run_dir} is in use by {holder}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} (host {socket.gethostname()})\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None


# ------------------------------------------------------------------ loading
META_TYPES: dict[str, type | tuple[type, ...]] = {
    "kind": str, "config": dict, "tokenizer": str, "answer_format": str, "tokens_seen": int, "rng": dict,
    "data": (dict, list), "cursor": int, "source": str, "init_checkpoint": str, "val_source": (str, type(None)),
    "complete": bool, "stopped": (str, type(None)), "val": dict, "nonfinite": dict, "world_size": int,
    "best_val_loss": (int, float), "best_val_accuracy": (int, float), "optimizer": dict, "task": str,
}
"""The type of every meta.json field a command reads, checked whenever the field is present."""


def read_meta(ckpt: Path) -> dict:
    """``ckpt/meta.json``, checked to be a checkpoint's metadata: a mapping with the model
    config and step every checkpoint has, and each other known field of its type (:data:`META_TYPES`)."""
    try:
        meta = json.loads((ckpt / META_FILE).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{ckpt / META_FILE} is not valid JSON ({e.msg})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{ckpt / META_FILE} must be a JSON object, got {type(meta).__name__}")
    require_meta(meta, ckpt, {"model_config": dict, "step": int})
    require_meta(meta, ckpt, {k: v for k, v in META_TYPES.items() if k in meta})
    return meta


def require_meta(meta: dict, ckpt: Path, fields: dict[str, type | tuple[type, ...]]) -> None:
    """One line naming the first of ``fields`` that ``meta`` lacks or holds with the wrong type
    (a resume needs more of it than loading the weights does)."""
    for key, kind in fields.items():
        if key not in meta:
            raise CheckpointError(f"{ckpt / META_FILE} has no '{key}'; it cannot be "
                                  f"{'resumed' if key not in ('model_config', 'step') else 'loaded'}")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool) and bool not in _types(kind):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in _types(kind))
            raise CheckpointError(f"{ckpt / META_FILE}: {key} must be {names}, got {meta[key]!r}"[:300])


def _types(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def validate_checkpoint(ckpt: Path) -> str | None:
    """None when ``ckpt`` looks loadable, else the reason it is not."""
    try:
        read_meta(ckpt)
        for name in (MODEL_FILE, OPTIM_FILE):
            if (ckpt / name).exists() or name == MODEL_FILE:
                # Opening parses the header and checks that the file covers every tensor it
                # declares (a truncated write fails here) without reading gigabytes twice.
                with safe_open(str(ckpt / name), "pt"):
                    pass
    except CheckpointError as e:
        return str(e)
    except (OSError, ValueError, SafetensorError) as e:
        return f"{type(e).__name__}: {e}".splitlines()[0]
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a step folder or a run folder.

    A run folder means ``final/`` if it is valid, else the newest valid
    ``step_*`` folder. Invalid candidates are skipped with a warning.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint path not found: {p}")
    if (p / META_FILE).exists() or (p / MODEL_FILE).exists():
        reason = validate_checkpoint(p)
        if reason:
            raise CheckpointError(f"checkpoint {p} is corrupt or incomplete ({reason})")
        return p
    skipped: list[tuple[Path, str]] = []
    for cand in [p / "final", *reversed(step_dirs(p))]:
        if not cand.is_dir():
            continue
        reason = validate_checkpoint(cand)
        if reason is None:
            for bad, why in skipped:  # said only when another checkpoint is used instead
                warnings.warn(f"skipping unloadable checkpoint {bad}: {why}", stacklevel=2)
            return cand
        skipped.append((cand, reason))
    if skipped:
        raise CheckpointError(f"no valid checkpoint in {p}; the newest, {skipped[0][0].name}, is unloadable "
                              f"({skipped[0][1]})")
    raise CheckpointError(f"no valid checkpoint in {p} (expected final/ or step_XXXXXXX/ folders)")


def resume_checkpoint(run_dir: str | Path, resume: str | None) -> Path | None:
    """The checkpoint a run in ``run_dir`` starts from.

    ``resume`` None is a fresh run, refused when ``run_dir`` already holds
    checkpoints (it would interleave two runs); "auto" is the newest valid
    checkpoint there, or a fresh run when there is none yet (so a launcher can
    always pass it); anything else is a checkpoint path.
    """
    run = Path(run_dir)
    has_any = run.is_dir() and any(STEP_RE.match(p.name) or p.name == "final" for p in run.iterdir())
    if resume is None:
        if has_any:
            raise ConfigError(f"{run} already holds checkpoints; pass --resume to continue that run, "
                              f"or choose an empty --checkpoint-dir")
        return None
    if resume == "auto":
        return resolve_checkpoint(run) if has_any else None
    return resolve_checkpoint(resume)


def config_difference(saved: Any, here: dict) -> str | None:
    """``"checkpoint has dim 1152, this run 256; n_layers 24, this run 4"``, or None when
    the saved model config agrees with ``here`` on every field both name."""
    if not isinstance(saved, dict):
        return None
    fields = [f"{k} {saved[k]}, this run {v}" for k, v in here.items() if k in saved and saved[k] != v
              and not (isinstance(v, (list, tuple)) and list(v) == saved[k])]
    return "checkpoint has " + "; ".join(fields) if fields else None


def require_model_config(meta: dict, ckpt: Path, here: Any) -> None:
    """Refuse, in one line naming the fields, a checkpoint whose model config is not ``here``'s
    (a :class:`~pure_transformer.model.config.ModelConfig`): before a resume builds anything."""
    difference = config_difference(meta.get("model_config"), here.to_dict())
    if difference:
        raise CheckpointError(f"checkpoint {ckpt} is another model shape: {difference}")


def shape_mismatch(ckpt: Path, model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> str | None:
    """None when every tensor of ``tensors`` has its parameter's shape in ``model``; else one
    phrase naming what differs: the model config fields when meta.json has them ("checkpoint
    has dim 128, this run 64"), else the first tensor that differs."""
    expected = model.state_dict()
    wrong = [(name, tuple(t.shape), tuple(expected[name].shape)) for name, t in tensors.items()
             if name in expected and t.shape != expected[name].shape]
    if not wrong:
        return None
    try:
        saved = json.loads((ckpt / META_FILE).read_text()).get("model_config", {})
    except (OSError, ValueError, AttributeError):
        saved = {}
    fields = config_difference(saved, model.cfg.to_dict()) if hasattr(model, "cfg") else None
    if fields:
        return fields
    name, there, ours = wrong[0]
    return f"{name} is {list(there)} in the checkpoint, {list(ours)} in this model" + (
        f" ({len(wrong) - 1} more tensors differ)" if len(wrong) > 1 else "")


def load_weights(ckpt: Path, model: torch.nn.Module, filename: str = MODEL_FILE) -> None:
    """Load ``ckpt/filename`` into ``model`` (tied weights restored by sharing); a checkpoint
    of another shape is refused in one line before any tensor is copied."""
    tensors = load_file(str(ckpt / filename), device=str(next(model.parameters()).device))
    mismatch = shape_mismatch(ckpt, model, tensors)
    if mismatch:
        raise CheckpointError(f"checkpoint {ckpt} is another model shape: {mismatch}")
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    shared = {name for name, t in model.state_dict().items() if name not in tensors
              and any(t.data_ptr() == o.data_ptr() for o in model.state_dict().values() if o is not t)}
    if unexpected or set(missing) - shared:
        raise CheckpointError(f"checkpoint {ckpt} does not match the model: missing {sorted(set(missing) - shared)}, "
                              f"unexpected {sorted(unexpected)}")


def load_optimizer(ckpt: Path, optimizer: torch.optim.Optimizer, meta: dict, *, reset: bool = False,
                   shard: Callable[[dict], dict] | None = None) -> None:
    """Restore the optimizer state saved with ``ckpt``. A checkpoint whose metadata has
    optimizer state but no optimizer file is refused: resuming on fresh AdamW moments
    silently changes the run. ``reset`` (``--set reset_optimizer=true``) is that choice, said aloud.
    ``shard`` splits the full saved state for sharded parameters (FSDP)."""
    if reset:
        print(f"note: reset_optimizer: AdamW's moments start from zero instead of {ckpt / OPTIM_FILE}")
        return
    if "optimizer" not in meta:
        raise CheckpointError(f"{ckpt} holds no optimizer state; resume with --set reset_optimizer=true to start "
                              "AdamW's moments from zero")
    if not (ckpt / OPTIM_FILE).is_file():
        raise CheckpointError(f"{ckpt} has optimizer state in meta.json but no {OPTIM_FILE}; restore it, or resume "
                              "with --set reset_optimizer=true to start AdamW's moments from zero")
    device = optimizer.param_groups[0]["params"][0].device
    state = optimizer_from_files(load_file(str(ckpt / OPTIM_FILE), device=str(device)), meta["optimizer"])
    optimizer.load_state_dict(shard(state) if shard else state)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[Any, Any, dict, Path]:
    """(model, tokenizer, meta, folder) from any checkpoint path: a step folder
    or a run folder (final, else the newest). Works for pretrain and RL checkpoints."""
    from ..model.config import ModelConfig
    from ..model.transformer import build_model
    from ..tokenizer.bpe import Tokenizer

    ckpt = resolve_checkpoint(path)
    meta = read_meta(ckpt)
    model = build_model(ModelConfig.from_dict(meta["model_config"]), device)
    load_weights(ckpt, model)
    return model, Tokenizer.load(ckpt / meta.get("tokenizer", "tokenizer.json")), meta, ckpt
