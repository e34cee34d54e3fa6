"""`paser recover` on tiny saved models: training, the merge that keeps the zeros, and what recipes need."""

import torch
from fixtures import decoder_sparsity
from transformers import AutoModelForCausalLM

from paser_hf.cli import main


def _recover_args(files, out, *extra):
    return ["recover", "--model_name_or_path", files["pruned"], "--dataset", files["data"], "--output_dir", str(out),
            "--max_steps", "2", "--per_device_train_batch_size", "4", "--max_length", "64", "--save_strategy", "no",
            "--logging_steps", "1", "--learning_rate", "1e-2", "--activation_checkpointing", "false", *extra]


def test_recover_trains_and_keeps_the_zeros(files, tmp_path):
    out = tmp_path / "recovered"
    assert main(_recover_args(files, out)) == 0
    recovered = AutoModelForCausalLM.from_pretrained(out)
    pruned = AutoModelForCausalLM.from_pretrained(files["pruned"])
    assert decoder_sparsity(recovered) >= decoder_sparsity(pruned) - 1e-6
    changed = any(not torch.equal(a, b) for a, b in zip(recovered.parameters(), pruned.parameters()))
    assert changed
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_recover_dense_merge_fills_the_zeros(files, tmp_path):
    out = tmp_path / "dense"
    assert main(_recover_args(files, out, "--keep_sparsity", "false")) == 0
    pruned = AutoModelForCausalLM.from_pretrained(files["pruned"])
    assert decoder_sparsity(AutoModelForCausalLM.from_pretrained(out)) < decoder_sparsity(pruned) - 0.01


def test_recover_without_merging_saves_the_adapter_of_the_first_rows(files, tmp_path, capsys):
    out = tmp_path / "adapter"
    assert main(_recover_args(files, out, "--merge_adapters", "false", "--max_rows", "8")) == 0
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    out_text = capsys.readouterr().out
    assert "on 8 rows" in out_text and f"adapter saved to {out}" in out_text


def test_recover_distils_from_the_default_teacher_when_none_is_named(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("paser_hf.models.default_model_path", lambda: files["original"])
    out = tmp_path / "kd"
    assert main(_recover_args(files, out, "--kd_alpha", "0.5", "--dtype", "float32")) == 0
    assert "teacher: SmolLM2-135M-Instruct (built-in offline default)" in capsys.readouterr().err
    assert (out / "model.safetensors").is_file()


def test_recover_without_a_model_is_one_line_and_exit_2(files, tmp_path, capsys):
    assert main(["recover", "--dataset", files["data"], "--output_dir", str(tmp_path / "x")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "paser: error: give the pruned model to recover with --model_name_or_path"


def test_recover_says_in_one_line_when_the_model_folder_holds_no_model(files, tmp_path, capsys):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    assert main(["recover", "--model_name_or_path", str(empty), "--dataset", files["data"],
                 "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("paser: error:") and "no config.json, so not a saved model" in err[-1]
    assert not (tmp_path / "out").exists()
