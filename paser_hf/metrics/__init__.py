"""Our perplexity and multiple-choice accuracy as local `evaluate` modules, which load offline:

    import evaluate
    from paser_hf.metrics import MC_ACCURACY, PERPLEXITY

    evaluate.load(PERPLEXITY).compute(predictions=texts, model=model, tokenizer=tokenizer)
    evaluate.load(MC_ACCURACY).compute(queries=qs, choices=cs, references=golds, model=model, tokenizer=tokenizer)

They score a model object in memory with the same code as `paser_hf.evaluation` (and `paser evaluate`), so the
numbers match. `evaluate.load("perplexity")` and `("accuracy")` are not offline: their scripts live on the Hub.
"""

from pathlib import Path

PERPLEXITY = str(Path(__file__).resolve().parent / "paser_perplexity")
MC_ACCURACY = str(Path(__file__).resolve().parent / "paser_mc_accuracy")
