"""benchmarks/gpu_path.py stays importable and its --dry-run passes on CPU (tiny random model, seconds)."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_path.py"


def test_gpu_path_dry_run_measures_every_stage_and_writes_one_json(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_path", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "gpu_path.json"
    module.main(["--dry-run", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["dry_run"] and list(result["models"]) == ["tiny"]
    tiny = result["models"]["tiny"]
    assert tiny["scoring"]["floor_tok_s"] > 0
    assert all(tiny["scoring"][f"chunk_{chunk}"]["tok_s"] > 0 for chunk in (64, 256, 1024))
    assert tiny["batch_fitter"]["settled_tokens_per_batch"] <= tiny["batch_fitter"]["start_tokens_per_batch"]
    assert tiny["sft_step"]["s_per_step"] > 0 and tiny["kd_step"]["s_per_step"] > 0
