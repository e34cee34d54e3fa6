"""Our perplexity and MC accuracy as `evaluate` modules: they load offline and give what paser_hf.evaluation gives."""

import pytest
from fixtures import TINY_MC, tiny_llama, tiny_tokenizer

evaluate = pytest.importorskip("evaluate", reason="evaluate comes with the optional extra paser-hf[lm-eval]")

from paser_hf.evaluation import multiple_choice_accuracy, perplexity  # noqa: E402
from paser_hf.metrics import MC_ACCURACY, PERPLEXITY  # noqa: E402


def test_the_modules_load_offline_and_match_our_functions():
    model, tokenizer = tiny_llama(init_std=0.5), tiny_tokenizer()
    texts = ["The cedar grove was quiet.", "Ember and jade, alpha and lumen."]
    got = evaluate.load(PERPLEXITY).compute(predictions=texts, model=model, tokenizer=tokenizer, max_length=16)
    assert got == perplexity(model, tokenizer, texts, max_length=16, show_progress=False)
    got = evaluate.load(MC_ACCURACY).compute(
        queries=[row["query"] for row in TINY_MC], choices=[row["choices"] for row in TINY_MC],
        references=[row["gold"] for row in TINY_MC], model=model, tokenizer=tokenizer)
    assert got == multiple_choice_accuracy(model, tokenizer, TINY_MC, show_progress=False)
