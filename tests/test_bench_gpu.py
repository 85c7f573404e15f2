"""The GPU check script runs end to end (here on the CPU, small) and renders its section."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytest.importorskip("torch")


@pytest.mark.slow  # (a short benchmark run: ~25 s on a 2-core CPU)
def test_quick_run_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    from napari_sciz.bench import gpu

    assert gpu.main(["--device", "cpu", "--quick"]) == 0
    text = capsys.readouterr().out
    assert "## GPU checks" in text and "identical after rounding to the dtype: yes" in text
    assert "| fp32 |" in text and "| bf16 |" in text
    assert "16x128x128 uint16 at 64x" in text and "| auto | hybrid |" in text


def test_without_cuda_the_script_says_so() -> None:
    import torch

    if torch.cuda.is_available():  # pragma: no cover - GPU machines run the real check
        pytest.skip("a GPU is present")
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "no CUDA device here" in done.stderr
