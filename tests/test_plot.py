"""plot_run: one valid, non-blank PNG from metrics.jsonl, and one-line errors.

Records are written with the real MetricsLogger so the file format matches
what training produces.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from pure_transformer.errors import DataError
from pure_transformer.train.plot import DPI, NCOLS, PANEL_SIZE, plot_run
from pure_transformer.train.metrics import MetricsLogger


def _expected_shape(n_panels: int) -> tuple[int, int]:
    rows = math.ceil(n_panels / NCOLS)
    return round(PANEL_SIZE[1] * rows * DPI), round(PANEL_SIZE[0] * NCOLS * DPI)


def _write(run_dir: Path, val: bool = True, mfu: bool = True, extra: bool = False) -> None:
    log = MetricsLogger(run_dir / "logs", tensorboard=False)
    for step in range(1, 41):
        rec = {"tokens_seen": step * 4096, "loss": 8.0 * math.exp(-step / 15) + 2.0,
               "lr": 3e-4 * min(1.0, step / 10), "grad_norm": 1.0 + 0.5 / step,
               "tokens_per_s": 50_000.0 + 100 * step, "peak_mem_gb": 1.5}
        if mfu:
            rec["mfu"] = 0.3 + 0.001 * step
        if step == 7:
            rec["loss"] = float("nan")  # a non-finite step must not break the plot
            rec["nonfinite_skipped"] = 1
        if extra:
            rec["reward"] = step / 40
            rec["letters"] = {"A": 0.25 + step / 160, "B": 0.25, "C": 0.25 - step / 160, "D": 0.25, "None": 0.0}
        log.log(step, rec)
        if val and step % 10 == 0:
            loss = rec["loss"] + 0.1
            log.log(step, {"val_loss": loss, "val_ppl": math.exp(loss),
                           "val_loss/medical": loss, "val_ppl/medical": math.exp(loss),
                           "val_loss/general": loss + 0.3, "val_ppl/general": math.exp(loss + 0.3)})
    log.close()


def _check_png(path: Path, shape: tuple[int, int]) -> None:
    assert path.is_file()
    assert path.read_bytes()[:4] == b"\x89PNG"
    img = imread(path)
    assert img.shape[:2] == shape
    assert np.var(img[..., :3]) > 0


def test_full_run(tmp_path: Path) -> None:
    _write(tmp_path)
    out = plot_run(tmp_path)
    assert out == tmp_path / "curves.png"
    _check_png(out, _expected_shape(5))


def test_custom_out_and_str_path(tmp_path: Path) -> None:
    _write(tmp_path)
    out = plot_run(str(tmp_path), tmp_path / "sub" / "c.png")
    assert out == tmp_path / "sub" / "c.png"
    _check_png(out, _expected_shape(5))


def test_train_only_no_mfu(tmp_path: Path) -> None:
    _write(tmp_path, val=False, mfu=False)
    _check_png(plot_run(tmp_path), _expected_shape(5))


def test_extra_numeric_key_and_answer_shares_get_panels(tmp_path: Path) -> None:
    _write(tmp_path, extra=True)  # reward (a number) and letters (RL's answer shares, a dict)
    _check_png(plot_run(tmp_path), _expected_shape(7))


def test_missing_run_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=f"no metrics to plot: .*{missing.name} not found"):
        plot_run(missing)


def test_missing_metrics_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        plot_run(tmp_path)
    assert str(e.value) == f"no metrics to plot: {tmp_path / 'logs' / 'metrics.jsonl'} not found"
    assert "\n" not in str(e.value)


def test_empty_metrics_file(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        plot_run(tmp_path)


def test_malformed_metrics_file(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{oops\n')
    with pytest.raises(DataError, match="malformed metrics file"):
        plot_run(tmp_path)
