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
from pure_transformer.train.logger import MetricsLogger
from pure_transformer.train.plot import DPI, NCOLS, PANEL_SIZE, plot_run


def _expected_shape(n_panels: int) -> tuple[int, int]:
    rows = math.ceil(n_panels / NCOLS)
    return round(PANEL_SIZE[1] * rows * DPI), round(PANEL_SIZE[0] * NCOLS * DPI)


def _write(run_dir: Path, val: bool = True, mfu: bool = True, extra: bool = False, mcq: bool = False) -> None:
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
            rec["data_wait_s"] = 0.01 * step  # a key no fixed panel draws
        log.log(step, rec)
        if val and step % 10 == 0:
            loss = rec["loss"] + 0.1
            log.log(step, {"val_loss": loss, "val_ppl": math.exp(loss),
                           "val_loss/medical": loss, "val_ppl/medical": math.exp(loss),
                           "val_loss/general": loss + 0.3, "val_ppl/general": math.exp(loss + 0.3),
                           **({"val_mcq_acc": step / 80, "val_mcq_acc/medqa": step / 80, "val_mcq_acc/synthetic": step / 40,
                               "val_mcq_no_answer": 1 - step / 40} if mcq else {})})
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


@pytest.mark.fast
def test_custom_out_and_str_path(tmp_path: Path) -> None:
    _write(tmp_path)
    out = plot_run(str(tmp_path), tmp_path / "sub" / "c.png")
    assert out == tmp_path / "sub" / "c.png"
    _check_png(out, _expected_shape(5))


@pytest.mark.fast
def test_train_only_no_mfu(tmp_path: Path) -> None:
    _write(tmp_path, val=False, mfu=False)
    _check_png(plot_run(tmp_path), _expected_shape(5))


def test_mcq_accuracy_gets_its_panel_and_time_none(tmp_path: Path) -> None:
    from pure_transformer.train.logger import read_metrics
    from pure_transformer.train.plot import _pretrain_figure

    _write(tmp_path, mcq=True)
    records = read_metrics(tmp_path / "logs" / "metrics.jsonl")
    assert all("time" in r for r in records)  # every line is stamped, and the stamp gets no panel
    _check_png(plot_run(tmp_path), _expected_shape(6))
    ax = [a for a in _pretrain_figure(records).axes if a.get_visible()][5]
    assert ax.get_title().startswith("validation questions")
    assert [line.get_label() for line in ax.lines] == ["accuracy", "medqa", "synthetic", "names no option"]
    assert list(ax.lines[0].get_ydata()) == [0.125, 0.25, 0.375, 0.5]


def test_extra_numeric_key_gets_a_panel(tmp_path: Path) -> None:
    _write(tmp_path, extra=True)
    _check_png(plot_run(tmp_path), _expected_shape(6))


def _write_rl(run_dir: Path, steps: int = 30) -> list[dict]:
    # The keys grpo_train logs, with the real logger: per-step records and validation records.
    log = MetricsLogger(run_dir / "logs", tensorboard=False, group="rl")
    for step in range(steps + 1):
        if step % 10 == 0:
            acc = 0.3 + step / 100
            log.log(step, {"val_accuracy": acc, "val_ci_low": acc - 0.08, "val_ci_high": acc + 0.08,
                           "val_invalid_rate": 0.5 - step / 100})
        if step == 0:
            continue
        log.log(step, {"accuracy": step / 60, "reward": step / 60, "kl": 1e-3 * step, "clip_frac": 0.01,
                       "masked_frac": 0.002, "entropy": 0.3 - step / 300, "grad_norm": 0.1,
                       "response_len": 40.0 - step / 3,
                       "gen_time_s": 0.8, "train_time_s": 1.6, "lr": 1e-4,
                       "letters": {"A": 0.2, "B": 0.2, "C": 0.2 + step / 300, "D": 0.2, "None": 0.2 - step / 300}})
    log.close()
    from pure_transformer.train.logger import read_metrics

    return read_metrics(run_dir / "logs" / "metrics.jsonl")


def test_rl_run_gets_rl_panels_all_drawn(tmp_path: Path) -> None:
    from pure_transformer.train.plot import _rl_figure

    records = _write_rl(tmp_path)
    _check_png(plot_run(tmp_path), _expected_shape(9))
    axes = [ax for ax in _rl_figure(records).axes if ax.get_visible()]
    titles = [ax.get_title() for ax in axes]
    assert len(axes) == 9 and "not logged" not in " ".join(t.get_text() for ax in axes for t in ax.texts)
    assert all(ax.lines or ax.collections for ax in axes), titles
    assert titles[1].startswith("validation accuracy") and any(ax.collections for ax in axes[1:2])  # the CI band
    assert "generation 33%" in titles[6]


@pytest.mark.fast
def test_missing_run_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=f"no metrics to plot: .*{missing.name} not found"):
        plot_run(missing)


@pytest.mark.fast
def test_missing_metrics_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        plot_run(tmp_path)
    assert str(e.value) == f"no metrics to plot: {tmp_path / 'logs' / 'metrics.jsonl'} not found"
    assert "\n" not in str(e.value)


@pytest.mark.fast
def test_empty_metrics_file(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        plot_run(tmp_path)


@pytest.mark.fast
def test_malformed_metrics_file(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{oops\n{"step": 2, "loss": 1.0}\n')
    with pytest.raises(DataError, match=r"metrics.jsonl line 2 is not JSON"):
        plot_run(tmp_path)


@pytest.mark.fast
def test_torn_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    # A power loss mid-write leaves half a record at the end: every later read (and --resume) goes on.
    from pure_transformer.train.logger import read_metrics

    _write(tmp_path)
    log = tmp_path / "logs" / "metrics.jsonl"
    whole = read_metrics(log)
    log.write_text(log.read_text() + '{"step": 41, "loss": 2.')
    with pytest.warns(UserWarning, match="skipping the torn last line"):
        assert read_metrics(log) == whole
    with pytest.warns(UserWarning):
        MetricsLogger(tmp_path / "logs", resume_step=40, tensorboard=False).close()
    assert log.read_text().endswith("}\n") and read_metrics(log) == whole  # rewritten whole


@pytest.mark.fast
def test_tensorboard_tags_are_grouped_and_config_is_text(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pure_transformer.train.logger import tensorboard_tag

    assert [tensorboard_tag(k, "rl") for k in ("val_loss", "val_ppl/medqa", "reward")] == \
        ["val/loss", "val/ppl/medqa", "rl/reward"]
    log = MetricsLogger(tmp_path / "logs", group="rl", config={"lr": 1e-4, "betas": [0.9, 0.95]})
    log.log(1, {"reward": 0.5, "letters": {"A": 0.25, "None": 0.75}})
    log.log(1, {"val_accuracy": 0.4})
    log.close()
    events = EventAccumulator(str(tmp_path / "logs"), size_guidance={"tensors": 0}).Reload()
    assert set(events.Tags()["scalars"]) == {"rl/reward", "rl/letters/A", "rl/letters/None", "val/accuracy"}
    (text,) = events.Tensors("rl/config/text_summary")
    assert '"lr": 0.0001' in text.tensor_proto.string_val[0].decode()


@pytest.mark.fast
def test_a_paused_bar_says_why() -> None:
    """The bar names a pause while it lasts (step-0 validation held it at 0/N with no word)."""
    import io

    from pure_transformer.train.progress import ProgressBar, SteadyRate, labelled

    out = io.StringIO()
    bar = ProgressBar(total=10, file=out, clock=SteadyRate(), ascii=True)
    with labelled(bar, "validating"):
        during = out.getvalue().rsplit("\r", 1)[-1]
    after = out.getvalue().rsplit("\r", 1)[-1]
    bar.close()
    assert during.startswith("validating: ") and "0/10" in during
    assert not after.startswith("validating") and "0/10" in after
