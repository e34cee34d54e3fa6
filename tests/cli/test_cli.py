"""The `paser` command line and the demo, on tiny saved models; the shipped demo data is checked for correctness."""

import ast
import dataclasses
import json
import re
import subprocess
import sys

import pytest
import torch
from datasets import load_from_disk
from fixtures import tiny_llama, tiny_tokenizer
from transformers import AutoModelForCausalLM, BertConfig, BertModel

from paser_hf.cli import EvaluateArguments, PruneArguments, RecoverArguments, SelectArguments, main
from paser_hf.demo import DEMO_MC, DEMO_TEXT, DEMO_TRAIN, DemoConfig, run_demo
from paser_hf.evaluation import load_mc_jsonl
from paser_hf.pruning import prune_model
from paser_hf.selection.config import PaserConfig

ROWS = [
    {"instruction": f"Add {a} and {b}.", "input": "", "output": f"{a} + {b} = {a + b}."} for a, b in zip(range(12), range(5, 17))
] + [
    {"instruction": f"Write a python function named f{i}.", "input": "", "output": f"def f{i}():\n    return {i}"}
    for i in range(12)
]


def _save(model, tokenizer, path):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Saved tiny original and pruned Llamas, a tiny SentenceTransformer and an Alpaca JSONL file."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    root = tmp_path_factory.mktemp("cli")
    tokenizer = tiny_tokenizer()
    original = tiny_llama()
    pruned = tiny_llama()
    prune_model(pruned, method="magnitude", sparsity=0.5)
    bert = root / "bert"
    BertModel(BertConfig(vocab_size=261, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=512)).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    word = Transformer(str(bert), max_seq_length=128)
    SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension())]).save(str(root / "embedder"))
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return {
        "original": _save(original, tokenizer, root / "original"),
        "pruned": _save(pruned, tokenizer, root / "pruned"),
        "embedder": str(root / "embedder"),
        "data": str(data),
    }


def _select_args(files, output, *extra):
    return ["select", "--dataset", files["data"], "--original_model", files["original"], "--pruned_model",
            files["pruned"], "--output", str(output), "--embedding_model", files["embedder"], "--max_length", "96",
            "--show_progress", "false", *extra]


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


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("select", "recover", "prune", "evaluate", "demo"))


@pytest.mark.parametrize("budget, message", [("1.5", "out of range"), ("0", "out of range"), ("abc", "budget")])
def test_bad_budget_is_one_line_and_exit_2(files, tmp_path, budget, message):
    result = subprocess.run(
        [sys.executable, "-m", "paser_hf.cli", *_select_args(files, tmp_path / "s.jsonl", "--budget", budget)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paser: error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_command_and_missing_files(files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sellect"])
    assert exit_info.value.code == 2
    assert main(["select", "--dataset", str(tmp_path / "nope.jsonl"), "--pruned_model", files["pruned"],
                 "--output", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("paser: error:") and "nope.jsonl" in err[-1]


def test_select_writes_jsonl_subset_and_report(files, tmp_path):
    out = tmp_path / "subset.jsonl"
    config = tmp_path / "select.yaml"
    config.write_text("budget: 0.25\nnum_clusters: 2\nreport_dir: " + str(tmp_path / "figures") + "\n")
    assert main(_select_args(files, out, "--config", str(config))) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and all(set(r) == {"instruction", "input", "output"} for r in rows)
    assert all(r in ROWS for r in rows)
    report = json.loads((tmp_path / "subset.report.json").read_text())
    assert report["num_selected"] == 6 and report["k"] == 2
    assert (tmp_path / "figures" / "report.json").is_file()
    assert list((tmp_path / "figures").glob("*.png"))


@pytest.mark.filterwarnings("ignore:Scoring in bfloat16")
@pytest.mark.parametrize("fastest", ["float32", "bfloat16"])
def test_select_dtype_auto_loads_the_fastest_dtype(files, tmp_path, monkeypatch, capsys, fastest):
    monkeypatch.setattr("paser_hf.models.fastest_dtype", lambda device: fastest)
    out = tmp_path / "subset.jsonl"
    assert main(_select_args(files, out, "--budget", "4", "--num_clusters", "2")) == 0
    assert capsys.readouterr().err.count(f"dtype auto -> {fastest}") == 2
    assert len(out.read_text().splitlines()) == 4


def test_select_saves_a_dataset_folder(files, tmp_path):
    out = tmp_path / "subset"
    assert main(_select_args(files, out, "--budget", "5", "--num_clusters", "2")) == 0
    subset = load_from_disk(str(out))
    assert len(subset) == 5
    assert len(load_from_disk(str(out / "scores"))) == len(ROWS)
    assert json.loads((out / "report" / "report.json").read_text())["budget"] == 5


def _decoder_sparsity(model):
    weights = [m.weight for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in name]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_prune_round_trips(files, tmp_path, method, capsys):
    out = tmp_path / "pruned"
    args = ["prune", "--model", files["original"], "--output_dir", str(out), "--method", method, "--sparsity", "0.5",
            "--calibration_samples", "4", "--calibration_max_length", "32"]
    assert main(args) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    assert _decoder_sparsity(model) == pytest.approx(0.5, abs=0.01)
    assert json.loads((out / "pruning_report.json").read_text())["method"] == method
    assert "sparsity 0.5" in capsys.readouterr().out


def test_evaluate_prints_one_table(files, tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["evaluate", "--model", files["original"], files["pruned"], "--text_file", str(DEMO_TEXT), "--mc_file",
            str(DEMO_MC), "--max_words", "40", "--mc_limit", "4", "--max_length", "64", "--output_json", str(out)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "perplexity" in table and "mc_accuracy" in table
    assert files["original"] in table and files["pruned"] in table
    rows = json.loads(out.read_text())
    assert [r["mc_n"] for r in rows] == [4, 4] and all(r["perplexity"] > 1 for r in rows)


def test_recover_trains_and_keeps_the_zeros(files, tmp_path):
    out = tmp_path / "recovered"
    args = ["recover", "--model_name_or_path", files["pruned"], "--dataset", files["data"], "--output_dir", str(out),
            "--max_steps", "2", "--per_device_train_batch_size", "4", "--max_length", "64", "--save_strategy", "no",
            "--logging_steps", "1", "--learning_rate", "1e-2", "--activation_checkpointing", "false"]
    assert main(args) == 0
    recovered = AutoModelForCausalLM.from_pretrained(out)
    pruned = AutoModelForCausalLM.from_pretrained(files["pruned"])
    assert _decoder_sparsity(recovered) >= _decoder_sparsity(pruned) - 1e-6
    changed = any(not torch.equal(a, b) for a, b in zip(recovered.parameters(), pruned.parameters()))
    assert changed


def test_run_demo_tiny(files, tmp_path):
    config = DemoConfig(output_dir=str(tmp_path / "demo"), original_model=files["original"],
                        embedding_model=files["embedder"], prune_method="magnitude", max_rows=24, max_steps=2,
                        max_length=512, calibration_samples=4, eval_max_words=40, mc_limit=4, show_progress=False)
    result = run_demo(config)
    assert [r["model"] for r in result.rows] == ["original", "pruned", "recovered"]
    assert result.rows[1]["nonzero_params"] < result.rows[0]["nonzero_params"]
    assert {"selection", "training", "total"} <= set(result.timings)
    assert "| recovered" in result.table()
    assert json.loads((tmp_path / "demo" / "demo_results.json").read_text())["selection"]["selected"] == 6


# ------------------------------------------------------------------ the shipped data
def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_demo_instruction_set_shape():
    rows = _jsonl(DEMO_TRAIN)
    assert 300 <= len(rows) <= 400
    assert all(set(r) == {"instruction", "input", "output", "capability"} for r in rows)
    counts = {c: sum(r["capability"] == c for r in rows) for c in {r["capability"] for r in rows}}
    assert set(counts) == {"arithmetic", "python", "rewriting", "facts"} and min(counts.values()) >= 80
    assert len({(r["instruction"], r["input"]) for r in rows}) == len(rows)
    assert all(r["instruction"].strip() and r["output"].strip() for r in rows)


_STEP = re.compile(r"(\d+) ([-+×÷]) (\d+) = (\d+)")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "×": lambda a, b: a * b, "÷": lambda a, b: a / b}


def test_demo_arithmetic_answers_recompute():
    for row in (r for r in _jsonl(DEMO_TRAIN) if r["capability"] == "arithmetic"):
        steps = _STEP.findall(row["output"])
        assert steps, row
        for a, op, b, result in steps:
            assert _OPS[op](int(a), int(b)) == int(result), row
        assert row["output"].endswith(f"The answer is {steps[-1][3]}."), row
        used = {int(x) for step in steps for x in (step[0], step[2], step[3])}
        assert set(map(int, re.findall(r"\d+", row["instruction"]))) <= used, row


def test_demo_python_answers_compile_and_define_the_function():
    for row in (r for r in _jsonl(DEMO_TRAIN) if r["capability"] == "python"):
        code = re.fullmatch(r"```python\n(.*)```", row["output"], re.S).group(1)
        tree = ast.parse(code)
        name = re.search(r"`(\w+)`", row["instruction"]).group(1)
        assert [node.name for node in tree.body] == [name]
        namespace = {}
        exec(compile(tree, name, "exec"), namespace)
        assert callable(namespace[name])


def test_demo_eval_sets():
    mc = load_mc_jsonl(DEMO_MC)
    assert 90 <= len(mc) <= 120
    for row in mc:
        if row["kind"] == "arithmetic":
            a, op, b = re.search(r"What is (\d+) ([+×]) (\d+)\?", row["query"]).groups()
            assert int(row["choices"][row["gold"]]) == _OPS[op](int(a), int(b))
        if row["kind"] == "first_letter":
            word = re.search(r"'(\w+)'", row["query"]).group(1)
            assert row["choices"][row["gold"]] == word[0].upper()
        assert len(set(row["choices"])) == len(row["choices"])
    train_text = DEMO_TRAIN.read_text(encoding="utf-8")
    for row in (r for r in mc if r["kind"] == "capital"):
        country = re.search(r"capital of (.+)\?", row["query"]).group(1)
        assert f"capital of {country}" not in train_text
    assert len(DEMO_TEXT.read_text(encoding="utf-8").split()) >= 2000


@pytest.mark.slow
def test_real_demo_reduced(tmp_path):
    """The demo on SmolLM2 and MiniLM at reduced size: the pruned model is worse and the table is complete."""
    config = DemoConfig(output_dir=str(tmp_path), max_rows=40, max_steps=3, eval_max_words=150, mc_limit=8,
                        calibration_samples=4)
    result = run_demo(config)
    original, pruned, recovered = result.rows
    assert pruned["perplexity"] > original["perplexity"]
    assert recovered["nonzero_params"] == pruned["nonzero_params"]
    assert result.selection["selected"] == 10
