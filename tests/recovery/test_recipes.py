"""The recovery recipes: their configs use only options of `paser recover`, and `accelerate launch -m
paser_hf.cli.recover` trains with two CPU processes (gloo) and merges keeping the zeros."""

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from fixtures import tiny_llama, tiny_tokenizer
from safetensors.torch import load_file
from trl import ModelConfig

from paser_hf import RecoveryConfig
from paser_hf.cli.recover import RecoverArguments

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"


def known_fields():
    return {f.name for cls in (RecoverArguments, RecoveryConfig, ModelConfig) for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("path", sorted((RECIPES / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_recipe_configs_use_known_arguments(path):
    config = yaml.safe_load(path.read_text())
    assert set(config) - known_fields() == set()


@pytest.mark.parametrize("path", sorted((RECIPES / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_parse(path):
    config = yaml.safe_load(path.read_text())
    assert config["distributed_type"] in {"NO", "MULTI_GPU", "FSDP", "DEEPSPEED"}


def test_recipe_trains_with_two_processes(tmp_path):
    tokenizer = tiny_tokenizer()
    teacher = tiny_llama(seed=0)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for layer in student.model.layers:
            layer.mlp.up_proj.weight[:, ::2] = 0.0
    for model, name in ((teacher, "teacher"), (student, "student")):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    rows = [{"instruction": f"Count to {i}.", "input": "", "output": " ".join(map(str, range(i)))}
            for i in range(2, 14)]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))

    out = tmp_path / "out"
    command = [
        # `--cpu` would pick accelerate's single-process launcher; `--multi_gpu` starts torchrun, and `use_cpu: true`
        # in the config makes each process a CPU rank of a gloo group (DistributedType.MULTI_CPU).
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "-m", "paser_hf.cli.recover", "--config", str(RECIPES / "configs" / "tiny_cpu.yaml"),
        "--model_name_or_path", str(tmp_path / "student"), "--teacher_model_name_or_path", str(tmp_path / "teacher"),
        "--dataset", str(tmp_path / "rows.jsonl"), "--output_dir", str(out), "--merge_adapters", "true",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    logs = [line for line in result.stdout.splitlines() if "'kd_loss'" in line]
    assert len(logs) == 3  # one log line per optimizer step, from the main process only
    assert "'epoch': '0.3333'" in logs[0]  # 12 rows, 2 processes x 2 rows per step
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert len([line for line in result.stdout.splitlines() if line.startswith("trained 3 steps")]) == 1
    merged = load_file(out / "model.safetensors")
    zeros = student.model.layers[0].mlp.up_proj.weight == 0
    assert (merged["model.layers.0.mlp.up_proj.weight"][zeros] == 0).all()
