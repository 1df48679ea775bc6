"""The GPU check cannot rot: `benchmarks/gpu_check.py --tiny` runs every part of it on the CPU (a fresh process, as
the script is run on a lent GPU) and writes its one JSON."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers.paths import REPO_ROOT


def test_gpu_check_tiny_runs_every_part_and_writes_one_json(tmp_path):
    output = tmp_path / "gpu_check.json"
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--json", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    assert result["tiny"] is True and result["total_seconds"] < 60
    for part in ("training", "forward", "predict", "onnxruntime_cuda"):
        assert "error" not in result[part], (part, result[part])
    assert result["training"]["images_per_s"] > 0
    assert len(result["forward"]["images_per_s"]) == 8  # {sdpa, eager} × {compiled, not} × {bf16, fp32}
    assert all(rate > 0 for rate in result["forward"]["images_per_s"].values())
    for run in ("single_crop", "fifteen_crops", "two_models_single_crop"):
        assert result["predict"][run]["images_per_s"] > 0
    assert result["predict"]["images"] == 12
    assert result["onnxruntime_cuda"]["provider"] == "CPUExecutionProvider"
    assert result["onnxruntime_cuda"]["images_per_s"] > 0
