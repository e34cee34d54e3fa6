"""Recover a pruned model with `RecoveryTrainer`: LoRA SFT plus logit distillation from the unpruned model.

    python examples/recover_with_kd.py            # 64 demo rows, one epoch (~2-3 min on 2 cores)
    python examples/recover_with_kd.py --quick    # 8 rows, 2 steps (under a minute)

`RecoveryTrainer` is a `trl.SFTTrainer`: Alpaca rows (instruction, input, output) are trained on directly. With
`kd_alpha > 0` the loss is (1 - kd_alpha) * cross-entropy + kd_alpha * KL(teacher || student) on the response
tokens, the teacher being the original model. `merge_adapters_keep_sparsity` folds the LoRA weights back in
without filling the pruned zeros. Offline: the built-in SmolLM2-135M-Instruct and the data shipped with paser-hf.
"""

import argparse
import copy
import tempfile
import time
from importlib.resources import files

from datasets import load_dataset
from peft import LoraConfig

from paser_hf import RecoveryConfig, RecoveryTrainer, merge_adapters_keep_sparsity, perplexity, prune_model
from paser_hf.models import load_model_and_tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run: few rows, two training steps")
    parser.add_argument("--output-dir", default=None, help="trainer output (default: a temporary folder)")
    args = parser.parse_args()
    rows, max_length, words = (8, 64, 60) if args.quick else (64, 256, 400)
    start = time.perf_counter()

    original, tokenizer = load_model_and_tokenizer()  # None: the offline SmolLM2-135M-Instruct
    pruned = copy.deepcopy(original)
    prune_model(pruned, method="magnitude", sparsity=0.5)
    data = files("paser_hf") / "data"
    train = load_dataset("json", data_files=str(data / "demo.jsonl"), split="train").shuffle(seed=0)
    train = train.select(range(rows)).select_columns(["instruction", "input", "output"])
    text = " ".join((data / "demo_eval_text.txt").read_text(encoding="utf-8").split()[:words])
    before = perplexity(pruned, tokenizer, text, max_length=max_length, show_progress=False)["perplexity"]
    prepared = time.perf_counter()

    config = RecoveryConfig(
        output_dir=args.output_dir or tempfile.mkdtemp(prefix="paser-recover-"), kd_alpha=0.5, kd_temperature=1.0,
        max_length=max_length, num_train_epochs=1, max_steps=2 if args.quick else -1, per_device_train_batch_size=4,
        learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False,
        activation_checkpointing=False, disable_tqdm=True,
    )
    trainer = RecoveryTrainer(model=pruned, teacher_model=original, args=config, train_dataset=train,
                              processing_class=tokenizer,
                              peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    result = trainer.train()
    recovered = merge_adapters_keep_sparsity(trainer.model)
    trained = time.perf_counter()

    after = perplexity(recovered, tokenizer, text, max_length=max_length, show_progress=False)["perplexity"]
    end = time.perf_counter()
    print(f"trained {result.global_step} steps (SFT + KD, kd_alpha {config.kd_alpha}), loss {result.training_loss:.3f}")
    print(f"perplexity of the demo text: pruned {before:.2f} -> recovered {after:.2f}")
    print(f"seconds: loading, pruning and evaluating {prepared - start:.1f}, training {trained - prepared:.1f}, "
          f"evaluating {end - trained:.1f}, total {end - start:.1f}")


if __name__ == "__main__":
    main()
