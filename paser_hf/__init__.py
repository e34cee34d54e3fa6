"""paser-hf: PASER data selection for pruned-LLM recovery (arXiv 2502.12594) on the Hugging Face stack.

The public API is importable from here. Each name is imported on first use, so `import paser_hf` stays quick
(torch, datasets and trl load only when a name that needs them is touched).
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("paser-hf")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_PUBLIC = {
    "PaserConfig": "selection.config",
    "PaserDatasetSelector": "selection.selector",
    "RandomSelector": "selection.baselines",
    "IfdSelector": "selection.baselines",
    "LongestSelector": "selection.baselines",
    "ClusterBalancedSelector": "selection.baselines",
    "cluster_instructions": "selection.clustering",
    "ClusterResult": "selection.clustering",
    "materialize": "selection.schema",
    "SelectionReport": "reporting.report",
    "BaselineReport": "reporting.report",
    "save_selection": "reporting.card",
    "push_selection_to_hub": "reporting.card",
    "RecoveryConfig": "recovery.config",
    "RecoveryTrainer": "recovery.trainer",
    "merge_adapters_keep_sparsity": "recovery.merge",
    "prune_model": "pruning",
    "perplexity": "evaluation",
    "multiple_choice_accuracy": "evaluation",
    "lm_eval_scores": "lm_eval_tasks",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(__all__) | {name for name in globals() if name.startswith("__")})
