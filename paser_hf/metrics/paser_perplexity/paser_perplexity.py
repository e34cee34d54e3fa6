"""`evaluate` module: sliding-window perplexity of a causal LM in memory over texts joined with blank lines
(`paser_hf.evaluation.perplexity`)."""

import datasets
import evaluate

from paser_hf.evaluation import perplexity

_DESCRIPTION = """Perplexity exp(-(1/T) sum_t log p(x_t | x_<t)) of `model` over `predictions` (texts), joined with
"\\n\\n" as WikiText-2 is, in windows of `max_length` tokens every `stride` tokens. Unlike the Hub's `perplexity`
(one score per text, model loaded by id) it scores one corpus with a model object you already hold."""

_KWARGS = """
Args:
    predictions (list of str): the texts.
    model: a causal LM (`transformers` model) in memory.
    tokenizer: its tokenizer.
    max_length (int): window in tokens (default 1024).
    stride (int, optional): window stride (default: max_length).
Returns:
    perplexity, nll (mean per scored token), tokens, windows.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class PaserPerplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, model, tokenizer, max_length=1024, stride=None):
        return perplexity(model, tokenizer, list(predictions), max_length=max_length, stride=stride,
                          show_progress=False)
