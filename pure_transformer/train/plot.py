"""Training curves from a run's ``logs/metrics.jsonl`` as one PNG.

:func:`plot_run` picks the layout from what the run logged:

- a pretraining run: loss (validation overlaid) against tokens seen, learning
  rate, throughput (with MFU on a twin axis when logged), per-source validation
  perplexity and gradient norm, and, when logged, the greedy accuracy on the
  validation questions (what ``best/`` tracks; per source when several) with the
  share that names no option; any other numeric key gets a panel of its own;
- a GRPO run (its records carry ``reward``): reward and sample accuracy,
  validation accuracy with its 95% band, KL, entropy, response length, clip and
  mask fractions, the generation/training time split, gradient norm, and the
  share of each parsed answer (a collapse onto one letter shows there).

It renders through ``Figure`` + ``FigureCanvasAgg`` rather than pyplot, so it
needs no display, touches no global backend state and is safe in threads.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from ..errors import DataError, writing
from .logger import read_metrics

NCOLS = 3
PANEL_SIZE = (5.0, 3.5)  # inches per panel; with DPI this fixes the PNG's pixel size
DPI = 100
MAX_EXTRA_PANELS = 6  # a log with dozens of unknown keys should not yield a poster

# Keys drawn by the fixed pretraining panels (or meaningless as a curve), so not "extra".
_KNOWN = {"step", "tokens_seen", "loss", "lr", "grad_norm", "tokens_per_s", "peak_mem_gb",
          "mfu", "nonfinite_skipped", "val_loss", "val_ppl", "val_mcq_acc", "val_mcq_no_answer", "time"}


def _series(records: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the records holding a finite number under ``key``."""
    pts = [(r["step"], float(r[key])) for r in records
           if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
           and math.isfinite(r[key]) and "step" in r]
    if not pts:
        return np.empty(0), np.empty(0)
    steps, values = zip(*pts)
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def _empty(ax: Axes, title: str, why: str = "not logged") -> None:
    ax.set_title(title)
    ax.set_xticks([])  # default 0..1 ticks on an empty panel would read as data
    ax.set_yticks([])
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="grey")


def _load(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"no metrics to plot: {path} not found")
    records = [r for r in read_metrics(path) if isinstance(r, dict)]  # a bad line is a DataError
    if not records:
        raise DataError(f"no metrics to plot: {path} is empty")
    return records


def _figure(n_panels: int) -> tuple[Figure, list[Axes]]:
    nrows = math.ceil(n_panels / NCOLS)
    fig = Figure(figsize=(PANEL_SIZE[0] * NCOLS, PANEL_SIZE[1] * nrows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself to fig; savefig then renders with Agg
    axes = list(fig.subplots(nrows, NCOLS, squeeze=False).flat)
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _lines(ax: Axes, records: list[dict[str, Any]], keys: dict[str, str], title: str, *, smooth: int = 0,
           missing: str = "not logged") -> None:
    """One line per key (legend label = value); a faint raw line under a moving average when ``smooth``;
    ``missing`` says why when no record has any of the keys."""
    drawn = False
    for i, (key, label) in enumerate(keys.items()):
        s, v = _series(records, key)
        if not len(s):
            continue
        drawn = True
        if smooth and len(v) >= smooth:
            ax.plot(s, v, lw=0.8, alpha=0.3, color=f"C{i}")
            avg = np.convolve(v, np.ones(smooth) / smooth, mode="valid")
            ax.plot(s[smooth - 1:], avg, lw=1.5, color=f"C{i}", label=f"{label} ({smooth}-step mean)")
        else:
            ax.plot(s, v, lw=1, color=f"C{i}", label=label)
    if not drawn:
        _empty(ax, title, missing)
        return
    ax.set_title(title)
    ax.set_xlabel("step")
    if len(keys) > 1 or smooth:
        ax.legend(fontsize="small")


def _answer_shares(ax: Axes, shares: list[dict[str, Any]]) -> None:
    steps = np.array([r["step"] for r in shares])
    for key in shares[0]["letters"]:
        ax.plot(steps, [r["letters"].get(key, 0.0) for r in shares], lw=1, label=key)
    ax.set_title("answers (share of samples)")
    ax.set_xlabel("step")
    ax.set_ylim(0, 1.2)  # headroom: the legend sits above the curves, not on them
    ax.legend(fontsize="small", ncol=5, loc="upper center")


def _rl_figure(records: list[dict[str, Any]]) -> Figure:
    fig, axes = _figure(9)
    steps = [r for r in records if "reward" in r]
    smooth = 5 if len(steps) >= 20 else 0
    same = all(r.get("accuracy") == r.get("reward") for r in steps)  # no format term: one line says both
    _lines(axes[0], steps, {"reward": "reward = sample accuracy"} if same else
           {"reward": "reward", "accuracy": "sample accuracy"}, "reward (training samples)", smooth=smooth)

    ax = axes[1]
    s, v = _series(records, "val_accuracy")
    if len(s):
        ls, lo = _series(records, "val_ci_low")
        hs, hi = _series(records, "val_ci_high")
        if len(ls) == len(s) == len(hs):
            ax.fill_between(s, lo, hi, alpha=0.25, label="95% CI")
        ax.plot(s, v, "o-", ms=3, label="greedy accuracy")
        ns, nv = _series(records, "val_invalid_rate")
        if len(ns):
            ax.plot(ns, nv, "--", lw=1, color="grey", label="names no option")
        ax.set_ylim(0, 1)
        ax.set_title("validation accuracy (held-out questions)")
        ax.set_xlabel("step")
        ax.legend(fontsize="small")
    else:
        _empty(ax, "validation accuracy")

    _lines(axes[2], steps, {"kl": "KL to reference"}, "KL to reference",
           missing="not measured: no KL term (kl_coef 0),\nso no reference pass")
    _lines(axes[3], steps, {"entropy": "entropy"}, "entropy (per token)")
    _lines(axes[4], steps, {"response_len": "tokens"}, "response length", smooth=smooth)
    _lines(axes[5], steps, {"clip_frac": "clipped", "masked_frac": "off-policy masked"}, "clip and mask fractions")

    ax = axes[6]
    gs, gv = _series(steps, "gen_time_s")
    ts, tv = _series(steps, "train_time_s")
    if len(gs) and len(gs) == len(ts):
        ax.stackplot(gs, gv, tv, labels=["generation", "training"], alpha=0.8)
        ax.set_title(f"time per step (generation {gv.sum() / max(gv.sum() + tv.sum(), 1e-9):.0%})")
        ax.set_xlabel("step")
        ax.set_ylabel("s")
        ax.legend(fontsize="small", loc="upper left")
    else:
        _empty(ax, "time per step")

    _lines(axes[7], steps, {"grad_norm": "grad norm"}, "grad norm")
    shares = [r for r in records if isinstance(r.get("letters"), dict)]
    if shares:
        _answer_shares(axes[8], shares)
    else:
        _empty(axes[8], "answers (share of samples)")
    return fig


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Plot ``run_dir/logs/metrics.jsonl`` to ``out`` (default ``run_dir/curves.png``); returns the PNG path."""
    run_dir = Path(run_dir)
    metrics = run_dir / "logs" / "metrics.jsonl"
    if not run_dir.is_dir():
        raise DataError(f"no metrics to plot: {run_dir} not found")
    records = _load(metrics)
    rl = any("reward" in r for r in records)
    fig = _rl_figure(records) if rl else _pretrain_figure(records)
    where = run_dir.resolve()
    fig.suptitle(f"{where.parent.name}/{where.name}: {'GRPO' if rl else 'pretraining'}")
    out_path = Path(out) if out is not None else run_dir / "curves.png"
    with writing(out_path):
        if not out_path.parent.exists():  # a file there: savefig's "Not a directory" says it best
            out_path.parent.mkdir(parents=True)
        fig.savefig(out_path, format="png")
    return out_path


def _pretrain_figure(records: list[dict[str, Any]]) -> Figure:
    train = [r for r in records if "loss" in r or "tokens_seen" in r]

    # Validation records carry no tokens_seen, so map every step to tokens through
    # the training records; without any, fall back to plotting against step.
    tok_steps, tok_vals = _series(train, "tokens_seen")
    if len(tok_steps):
        xlabel = "tokens seen"

        def to_x(steps: np.ndarray) -> np.ndarray:
            return np.interp(steps, tok_steps, tok_vals)
    else:
        xlabel = "step"

        def to_x(steps: np.ndarray) -> np.ndarray:
            return steps

    numeric = {k for r in records for k, v in r.items()
               if k not in _KNOWN and "/" not in k and isinstance(v, (int, float)) and not isinstance(v, bool)}
    extra = sorted(numeric)[:MAX_EXTRA_PANELS]
    mcq = bool(len(_series(records, "val_mcq_acc")[0]))
    fixed = 6 if mcq else 5
    fig, axes = _figure(fixed + len(extra))
    ax_loss, ax_lr, ax_tps, ax_ppl, ax_gn = axes[:5]
    if mcq:
        _mcq_panel(axes[5], records, to_x, xlabel)

    # Loss, with validation loss overlaid on the same token axis.
    s, v = _series(records, "loss")
    vs, vv = _series(records, "val_loss")
    if len(s) or len(vs):
        ax_loss.plot(to_x(s), v, lw=1, label="train")
        if len(vs):
            ax_loss.plot(to_x(vs), vv, "o-", ms=3, label="val")
        ax_loss.set_title("loss")
        ax_loss.set_xlabel(xlabel)
        ax_loss.xaxis.set_major_formatter(EngFormatter())  # 1.2M, not 1200000 running into its neighbour
        ax_loss.legend()
    else:
        _empty(ax_loss, "loss")

    for ax, key, title in ((ax_lr, "lr", "learning rate"), (ax_gn, "grad_norm", "grad norm")):
        s, v = _series(records, key)
        if len(s):
            ax.plot(s, v, lw=1)
            ax.set_title(title)
            ax.set_xlabel("step")
        else:
            _empty(ax, title)

    s, v = _series(records, "tokens_per_s")
    if len(s):
        ax_tps.plot(s, v, lw=1, color="C0")
        ax_tps.set_ylabel("tokens/s", color="C0")
        ax_tps.yaxis.set_major_formatter(EngFormatter())
        ax_tps.set_title("throughput")
        ax_tps.set_xlabel("step")
        ms, mv = _series(records, "mfu")
        if len(ms):  # MFU is a fraction, tokens/s is ~1e4-1e6: a shared axis would flatten it
            twin = ax_tps.twinx()
            twin.plot(ms, mv, lw=1, color="C1")
            twin.set_ylabel("MFU", color="C1")
    else:
        _empty(ax_tps, "throughput")

    # One line per source; the aggregate val_ppl only when no per-source key exists.
    sources = sorted({k for r in records for k in r if k.startswith("val_ppl/")}) or ["val_ppl"]
    drawn = False
    for key in sources:
        s, v = _series(records, key)
        if len(s):
            ax_ppl.plot(to_x(s), v, "o-", ms=3, label=key.removeprefix("val_ppl/"))
            drawn = True
    if drawn:
        ax_ppl.set_yscale("log")
        ax_ppl.set_title("validation perplexity")
        ax_ppl.set_xlabel(xlabel)
        ax_ppl.xaxis.set_major_formatter(EngFormatter())
        ax_ppl.legend(fontsize="small")
    else:
        _empty(ax_ppl, "validation perplexity")

    for ax, key in zip(axes[fixed:], extra):
        s, v = _series(records, key)
        ax.plot(s, v, lw=1)
        ax.set_title(key)
        ax.set_xlabel("step")

    return fig


def _mcq_panel(ax: Axes, records: list[dict[str, Any]], to_x: Any, xlabel: str) -> None:
    """Greedy accuracy on the validation questions (per source when there are several), and the
    share of answers that name no option."""
    sources = sorted({k for r in records for k in r if k.startswith("val_mcq_acc/")})
    keys = {"val_mcq_acc": "accuracy", **({k: k.removeprefix("val_mcq_acc/") for k in sources}
                                          if len(sources) > 1 else {})}
    for i, (key, label) in enumerate(keys.items()):
        s, v = _series(records, key)
        ax.plot(to_x(s), v, "o-", ms=3, lw=1.5 if i == 0 else 1, color=f"C{i}", label=label)
    ns, nv = _series(records, "val_mcq_no_answer")
    if len(ns):
        ax.plot(to_x(ns), nv, "--", lw=1, color="grey", label="names no option")
    ax.set_ylim(0, 1)
    ax.set_title("validation questions (greedy; best/ tracks it)")
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.legend(fontsize="small")
