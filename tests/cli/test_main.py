"""The `paser` dispatcher: the command list, every command's options in its help, unknown commands."""

import dataclasses

import pytest
from trl import ModelConfig

from paser_hf.cli import main
from paser_hf.cli.evaluate import EvaluateArguments
from paser_hf.cli.prune import PruneArguments
from paser_hf.cli.recover import RecoverArguments
from paser_hf.cli.select import SelectArguments
from paser_hf.demo import DemoConfig
from paser_hf.recovery.config import RecoveryConfig
from paser_hf.selection.config import PaserConfig


def _field_names(*classes):
    return [f.name for cls in classes for f in dataclasses.fields(cls) if f.init]


@pytest.mark.parametrize(
    "command, classes",
    [
        ("select", (SelectArguments, PaserConfig)),
        ("prune", (PruneArguments,)),
        ("evaluate", (EvaluateArguments,)),
        ("demo", (DemoConfig,)),
        ("recover", (RecoverArguments,)),
    ],
)
def test_help_lists_every_field(command, classes, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in [*_field_names(*classes), "config"]:
        assert f"--{name}" in text, name
    if command == "recover":
        for name in ("kd_alpha", "kd_loss", "teacher_model_name_or_path", "learning_rate", "lora_r", "use_peft"):
            assert f"--{name}" in text, name


def test_recover_help_lists_every_recovery_and_model_field(capsys):
    with pytest.raises(SystemExit):
        main(["recover", "--help"])
    text = capsys.readouterr().out
    for name in _field_names(RecoveryConfig, ModelConfig):
        assert f"--{name}" in text, name


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("select", "recover", "prune", "evaluate", "demo"))


def test_unknown_command_and_missing_files(files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sellect"])
    assert exit_info.value.code == 2
    assert main(["select", "--dataset", str(tmp_path / "nope.jsonl"), "--pruned_model", files["pruned"],
                 "--output", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("paser: error:") and "nope.jsonl" in err[-1]


@pytest.mark.parametrize("command, bad", [("select", "dataset"), ("select", "pruned_model"), ("evaluate", "model")])
def test_a_bad_file_is_one_error_line_and_exit_2(files, tmp_path, capsys, command, bad):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n')
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    paths = {"dataset": str(broken), "pruned_model": str(not_a_model), "model": str(not_a_model)}
    args = {"select": ["--dataset", files["data"], "--pruned_model", files["pruned"], "--output",
                       str(tmp_path / "o.jsonl")],
            "evaluate": ["--model", files["original"]]}[command]
    args[args.index(f"--{bad}") + 1] = paths[bad]
    assert main([command, *args]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("paser: error:")]
    assert len(errors) == 1 and paths[bad] in errors[0]
