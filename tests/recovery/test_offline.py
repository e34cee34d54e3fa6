"""Offline distillation: the sparse (top-k + rest) loss against slow references and the online path, and
`RecoveryTrainer` trained on stored teacher distributions with no teacher, in one process and under accelerate."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, load_from_disk
from fixtures import reference_divergence, save_cli_files, tiny_llama, tiny_tokenizer

from paser_hf import PaserConfig, RecoveryConfig, RecoveryTrainer
from paser_hf.recovery.losses import divergence
from paser_hf.recovery.offline import stored_divergence
from paser_hf.selection.teacher import capture_teacher_topk, topk_with_tail

ROOT = Path(__file__).resolve().parents[2]
COMMON = {
    "use_cpu": True, "bf16": False, "report_to": "none", "save_strategy": "no", "logging_steps": 1,
    "per_device_train_batch_size": 4, "max_length": 64, "activation_checkpointing": False,
    "dataloader_num_workers": 0, "seed": 0, "disable_tqdm": True,
}
ALPACA = [{"instruction": f"List {i} colours.", "input": "" if i % 2 else f"about {i}", "output": f"red, blue and {i} more"}
          for i in range(8)]
STORED = ["teacher_topk_ids", "teacher_topk_logprobs", "teacher_tail_logmass", "teacher_topk_start",
          "teacher_topk_count", "teacher_topk_input_hash"]


def logits_pair(n=6, vocab=13, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, vocab, generator=gen) * 2, torch.randn(n, vocab, generator=gen) * 2


def reference_grouped(student_row, teacher_row, k, kind, temperature, beta):
    """One position in float64 from the definitions: teacher top-k + rest (rest tempered as if spread evenly over
    the other ids), student mass on the same ids + the rest; the divergence of those two grouped distributions."""
    p1 = torch.softmax(teacher_row.double(), -1)
    top = p1.argsort(descending=True)[:k].tolist()
    others = [i for i in range(len(p1)) if i not in top]
    rest = float(sum(p1[i] for i in others))
    weights = [float(p1[i]) ** (1 / temperature) for i in top]
    if others:
        weights.append(len(others) * (rest / len(others)) ** (1 / temperature))
    q_all = torch.softmax(student_row.double() / temperature, -1)
    q = [float(q_all[i]) for i in top] + ([float(sum(q_all[i] for i in others))] if others else [])
    grouped_p = torch.tensor(weights, dtype=torch.float64).log()
    return reference_divergence(torch.tensor(q).log(), grouped_p, kind, 1.0, beta) * temperature**2


def stored_of(teacher_logits, k):
    return topk_with_tail(torch.log_softmax(teacher_logits, -1), k)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_whole_vocabulary_equals_the_online_divergence(kind, temperature):
    student, teacher = logits_pair()
    values, ids, tail = stored_of(teacher, teacher.size(-1))
    assert torch.isinf(tail).all()
    got = stored_divergence(student, ids, values, tail, kind, temperature, 0.3)
    torch.testing.assert_close(got, divergence(student, teacher, kind, temperature, 0.3), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_top_k_with_the_rest_matches_the_grouped_reference(kind, temperature):
    student, teacher = logits_pair()
    values, ids, tail = stored_of(teacher, 4)
    got = stored_divergence(student, ids, values, tail, kind, temperature, 0.3)
    want = [reference_grouped(s, t, 4, kind, temperature, 0.3) for s, t in zip(student, teacher)]
    assert got.tolist() == pytest.approx(want, rel=1e-4, abs=1e-6)
    if temperature == 1.0:  # grouping ids never increases the divergence
        assert (got <= divergence(student, teacher, kind, 1.0, 0.3) + 1e-6).all()


def test_sparse_loss_has_finite_gradients_at_every_k():
    student, teacher = logits_pair()
    for k in (1, 5, teacher.size(-1)):
        z = student.clone().requires_grad_(True)
        values, ids, tail = stored_of(teacher, k)
        stored_divergence(z, ids, values, tail, "jsd", 2.0).sum().backward()
        assert torch.isfinite(z.grad).all()


def offline_config(tmp_path, **kwargs):
    return RecoveryConfig(output_dir=str(tmp_path), **{**COMMON, **kwargs})


def captured(teacher, k, max_length=64):
    return capture_teacher_topk(Dataset.from_list(ALPACA), teacher, tiny_tokenizer(), k=k,
                                config=PaserConfig(max_length=max_length, show_progress=False))


def test_stored_whole_vocabulary_gives_the_online_loss(tmp_path):
    teacher = tiny_llama(seed=1, init_std=0.2)
    data = captured(teacher, k=261)
    args = offline_config(tmp_path, kd_alpha=0.3, kd_temperature=2.0, kd_loss="jsd", kd_chunk_size=5)
    offline = RecoveryTrainer(model=tiny_llama(seed=2), args=args, train_dataset=data,
                              processing_class=tiny_tokenizer())
    online = RecoveryTrainer(model=tiny_llama(seed=2), teacher_model=teacher, args=args,
                             train_dataset=data.remove_columns(STORED), processing_class=tiny_tokenizer())
    assert offline.teacher_model is None and offline.current_kd_alpha() == 0.3
    batch = next(iter(offline.get_train_dataloader()))  # trl's column pruning kept the stored columns
    assert batch["teacher_topk_ids"].shape == (int(batch["teacher_topk_count"].sum()), 261)
    with torch.no_grad():
        got = offline.compute_loss(offline.model, dict(batch))
        want = online.compute_loss(online.model, {k: v for k, v in batch.items() if not k.startswith("teacher_")})
    torch.testing.assert_close(got, want, rtol=2e-3, atol=1e-5)  # float16 storage of the log-probabilities


def test_rows_tokenised_otherwise_are_an_error_before_training(tmp_path):
    data = captured(tiny_llama(seed=1), k=8, max_length=24)
    with pytest.raises(ValueError, match=r"Row \d+ of the train_dataset: .*other token ids.*max_length 64"):
        RecoveryTrainer(model=tiny_llama(seed=2), args=offline_config(tmp_path, kd_alpha=1.0), train_dataset=data,
                        processing_class=tiny_tokenizer())


def test_offline_kd_moves_the_student_towards_the_teacher(tmp_path):
    teacher = tiny_llama(seed=1, init_std=0.2)
    data = captured(teacher, k=16)
    args = offline_config(tmp_path, kd_alpha=1.0, max_steps=6, learning_rate=1e-2)
    trainer = RecoveryTrainer(model=tiny_llama(seed=2), args=args, train_dataset=data,
                              processing_class=tiny_tokenizer())
    trainer.train()
    kd = [entry["kd_loss"] for entry in trainer.state.log_history if "kd_loss" in entry]
    assert kd[-1] < 0.7 * kd[0]


def test_capture_and_training_run_under_two_processes(tmp_path):
    """`paser teacher-logits` and `paser recover` (offline KD) under `accelerate launch`, 2 CPU processes (gloo)."""
    paths = save_cli_files(tmp_path)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "topk"
    capture = [*launch, "-m", "paser_hf.cli.teacher_logits", "--dataset", paths["data"], "--model", paths["original"],
               "--output", str(out), "--k", "8", "--max_length", "64", "--scoring_shard_rows", "5",
               "--dtype", "float32"]
    result = subprocess.run(capture, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    multi = load_from_disk(str(out))
    single = capture_teacher_topk(Dataset.from_json(paths["data"]), tiny_llama(), tiny_tokenizer(), k=8,
                                  config=PaserConfig(max_length=64, show_progress=False))
    assert multi.column_names == single.column_names
    assert multi["teacher_topk_ids"] == single["teacher_topk_ids"]
    flat = [np.concatenate([np.asarray(row, dtype=np.float32) for row in d["teacher_topk_logprobs"]])
            for d in (multi, single)]
    np.testing.assert_allclose(flat[0], flat[1], atol=2e-3)

    train = [*launch, "-m", "paser_hf.cli.recover", "--config", str(ROOT / "recipes" / "configs" / "tiny_cpu.yaml"),
             "--model_name_or_path", paths["pruned"], "--dataset", str(out), "--kd_alpha", "1.0", "--max_length", "64",
             "--output_dir", str(tmp_path / "recovered"), "--merge_adapters", "false"]
    result = subprocess.run(train, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "distributions stored in the dataset" in result.stderr
    assert [line for line in result.stdout.splitlines() if "'kd_loss'" in line]
