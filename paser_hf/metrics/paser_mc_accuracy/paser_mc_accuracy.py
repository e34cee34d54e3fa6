"""`evaluate` module: zero-shot multiple-choice accuracy and acc_norm of a causal LM in memory, scored as
lm-evaluation-harness scores them (`paser_hf.evaluation.multiple_choice_accuracy`)."""

import datasets
import evaluate

from paser_hf.evaluation import multiple_choice_accuracy

_DESCRIPTION = """Each choice's log-likelihood LL_i of " " + choice after the query; accuracy takes argmax LL_i,
acc_norm argmax LL_i / UTF-8 bytes of choice_i, each compared with the reference (the index of the right choice)."""

_KWARGS = """
Args:
    queries (list of str): the questions.
    choices (list of list of str): the choices of each question (2 or more).
    references (list of int): the index of the right choice.
    model: a causal LM (`transformers` model) in memory.
    tokenizer: its tokenizer.
    batch_size (int): sequences per forward pass (default 8).
Returns:
    accuracy, acc_norm, n.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class PaserMcAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({
                "queries": datasets.Value("string"),
                "choices": datasets.Sequence(datasets.Value("string")),
                "references": datasets.Value("int64"),
            }),
        )

    def _compute(self, queries, choices, references, model, tokenizer, batch_size=8):
        rows = [{"query": q, "choices": list(c), "gold": int(g)} for q, c, g in zip(queries, choices, references)]
        return multiple_choice_accuracy(model, tokenizer, rows, batch_size=batch_size, show_progress=False)
