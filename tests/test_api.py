"""The package's Python API: the README example runs as written, and the names resolve lazily."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs_as_written(tmp_path: Path) -> None:
    code = re.search(r"<!-- api-example -->\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = eval(proc.stdout.strip().splitlines()[-2])  # the printed {mode: accuracy} dict
    assert sorted(scores) == ["cloze", "generate/letter"] and all(0 <= v <= 1 for v in scores.values())  # debug: letter
    assert (tmp_path / "runs/api/hf/model.safetensors").is_file()
    assert (tmp_path / "runs/api/rl/final/meta.json").is_file()


@pytest.mark.fast
def test_names_resolve_on_use() -> None:
    probe = ("import sys, pure_transformer as pt\nassert 'torch' not in sys.modules\n"
             "from pure_transformer.checkpoint.store import load_model\nassert pt.load_model is load_model\n"
             "print(sorted(pt.__all__) == sorted(dir(pt)))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
