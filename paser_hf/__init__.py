"""paser-hf: PASER data selection for pruned-LLM recovery (arXiv 2502.12594) on the Hugging Face stack."""

from importlib import import_module

from .config import PaserConfig

__version__ = "0.1.0"

_LAZY = {
    "PaserDatasetSelector": "selector",
    "RandomSelector": "baselines",
    "IfdSelector": "baselines",
    "BaselineReport": "baselines",
    "SelectionReport": "report",
    "cluster_instructions": "clustering",
    "ClusterResult": "clustering",
    "RecoveryConfig": "recovery",
    "RecoveryTrainer": "recovery",
    "prune_model": "pruning",
    "perplexity": "evaluation",
    "multiple_choice_accuracy": "evaluation",
}

__all__ = ["PaserConfig", "__version__", *_LAZY]


def __getattr__(name):
    """Heavy parts (torch, datasets, trl) are imported on first use, so `import paser_hf` stays quick."""
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
