"""Select a recovery subset with PASER, then train on it with a plain `trl.SFTTrainer`.

    python examples/select_then_sft.py            # 120 demo rows, 30 selected, one LoRA epoch (~2-3 min on 2 cores)
    python examples/select_then_sft.py --quick    # 24 rows, 2 steps (under a minute)

Offline: the built-in SmolLM2-135M-Instruct, pruned here by 50% magnitude, and the instruction set shipped with
paser-hf. The rows are in trl's prompt-completion form, so `SFTTrainer` trains on exactly the tokens PASER scored.
"""

import argparse
import copy
import tempfile
import time
from importlib.resources import files

from datasets import load_dataset
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer

from paser_hf import PaserConfig, PaserDatasetSelector, prune_model
from paser_hf.models import load_model_and_tokenizer


def as_prompt_completion(row):
    """An Alpaca row as trl conversational prompt-completion."""
    user = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
    return {"prompt": [{"role": "user", "content": user}],
            "completion": [{"role": "assistant", "content": row["output"]}]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run: few rows, two training steps")
    parser.add_argument("--output-dir", default=None, help="trainer output (default: a temporary folder)")
    args = parser.parse_args()
    rows, max_length = (24, 64) if args.quick else (120, 256)
    start = time.perf_counter()

    original, tokenizer = load_model_and_tokenizer()  # None: the offline SmolLM2-135M-Instruct
    pruned = copy.deepcopy(original)
    prune_model(pruned, method="magnitude", sparsity=0.5)

    dataset = load_dataset("json", data_files=str(files("paser_hf") / "data" / "demo.jsonl"), split="train")
    dataset = dataset.shuffle(seed=0).select(range(rows))
    dataset = dataset.map(as_prompt_completion, remove_columns=dataset.column_names)

    selector = PaserDatasetSelector(original, pruned, tokenizer,
                                    config=PaserConfig(budget=0.25, max_length=max_length, show_progress=False))
    loaded = time.perf_counter()
    dataset = selector(dataset)
    selected = time.perf_counter()
    print(f"selected {len(dataset)} of {rows} rows in {selector.report_.k} clusters")
    print(selector.report_.cluster_table())

    config = SFTConfig(
        output_dir=args.output_dir or tempfile.mkdtemp(prefix="paser-sft-"), max_length=max_length,
        num_train_epochs=1, max_steps=2 if args.quick else -1, per_device_train_batch_size=4, learning_rate=1e-3,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False, disable_tqdm=True,
        activation_checkpointing=False,
    )
    trainer = SFTTrainer(model=pruned, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    result = trainer.train()
    end = time.perf_counter()
    print(f"trained {result.global_step} steps, loss {result.training_loss:.3f}")
    print(f"seconds: loading and pruning {loaded - start:.1f}, selection {selected - loaded:.1f}, "
          f"training {end - selected:.1f}, total {end - start:.1f}")


if __name__ == "__main__":
    main()
