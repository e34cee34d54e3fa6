"""lm-eval's `simple_evaluate` on in-memory tiny models: a local JSONL task through a task YAML, and the one-line
errors for unknown tasks and Hub tasks offline."""

import pytest
from fixtures import TINY_MC, tiny_llama, tiny_tokenizer

pytest.importorskip("lm_eval", reason="the optional extra paser-hf[lm-eval] is not installed")

from paser_hf.lm_eval_tasks import lm_eval_scores, load_tasks  # noqa: E402


def test_a_local_jsonl_task_scores_in_memory_models_like_our_mc_accuracy(local_task):
    from paser_hf.evaluation import multiple_choice_accuracy

    tasks = load_tasks(["tiny_mc"], include_path=local_task)
    tokenizer = tiny_tokenizer()
    for seed in (0, 1):  # the same task objects serve several models
        model = tiny_llama(seed=seed, init_std=0.5)
        scores = lm_eval_scores(model, tokenizer, tasks, batch_size=4)
        ours = multiple_choice_accuracy(model, tokenizer, TINY_MC, show_progress=False)
        assert set(scores) == {"tiny_mc/acc", "tiny_mc/acc_norm"}
        assert scores["tiny_mc/acc"] == pytest.approx(ours["accuracy"])
        assert scores["tiny_mc/acc_norm"] == pytest.approx(ours["acc_norm"])


def test_a_hub_task_offline_fails_in_one_line_naming_the_local_fix(local_task):
    with pytest.raises(ValueError, match=r"^lm-eval task 'arc_easy' reads its data from the Hub, which cannot be "
                                         r"reached .*--lm_eval_include_path$") as error:
        load_tasks(["arc_easy"], include_path=local_task)
    assert "\n" not in str(error.value)


def test_an_unknown_task_names_the_listing_command(local_task):
    with pytest.raises(ValueError, match=r"'no_such_task' is not an lm-eval .* task, group or tag nor a task YAML "
                                         r"under .*`lm-eval ls tasks`"):
        load_tasks(["no_such_task"], include_path=local_task)
