"""Every script in examples/ runs with `--quick`, offline, as a user would start it, so none of them rots.

Each runs in a subprocess on the real offline models; the wall time is printed (`pytest -s` shows it).
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.example]

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_example(script: str, *args: str, cwd: Path, launcher=(sys.executable,)) -> str:
    """stdout of `launcher examples/<script> --quick args`, run offline in `cwd`; its wall time is printed."""
    start = time.perf_counter()
    done = subprocess.run([*launcher, str(EXAMPLES / script), "--quick", *args], cwd=cwd,
                          env={**os.environ, **OFFLINE}, capture_output=True, text=True, timeout=600)
    print(f"{script} --quick: {time.perf_counter() - start:.1f} s")
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_every_example_is_tested():
    tested = {"select_then_sft.py", "recover_with_kd.py", "distributed_selection.py", "save_and_publish.py",
              "own_embeddings.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_select_then_plain_sft_trainer(tmp_path):
    out = run_example("select_then_sft.py", cwd=tmp_path)
    assert "selected 6 of 24 rows" in out and "trained 2 steps" in out


def test_recovery_trainer_with_lora_and_kd(tmp_path):
    out = run_example("recover_with_kd.py", cwd=tmp_path)
    assert "trained 2 steps (SFT + KD, kd_alpha 0.5)" in out and "pruned" in out and "recovered" in out


def test_selection_under_accelerate_launch_with_two_processes(tmp_path):
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(free_port()))
    out = run_example("distributed_selection.py", cwd=tmp_path, launcher=launcher)
    assert "2 process(es) on cpu; the same subset on every process: True" in out
    assert "process 0: 6 rows selected" in out and "process 1: 6 rows selected" in out


def test_save_and_dry_run_publish(tmp_path):
    bundle = tmp_path / "bundle"
    out = run_example("save_and_publish.py", "--output-dir", str(bundle), cwd=tmp_path)
    assert "dry run: would push to https://huggingface.co/datasets/your-name/paser-demo-subset" in out
    for name in ("README.md", "paser_config.yaml", "report/report.json", "report/k_curve.png", "scores/state.json"):
        assert (bundle / name).is_file(), name
    assert "PASER" in (bundle / "README.md").read_text()


def test_cluster_your_own_embeddings(tmp_path):
    out = run_example("own_embeddings.py", cwd=tmp_path)
    assert "120 rows, 384-d embeddings -> K = " in out and "adjusted Rand index" in out
