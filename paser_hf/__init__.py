"""paser-hf: PASER data selection for pruned-LLM recovery (arXiv 2502.12594) on the Hugging Face stack."""

from .config import PaserConfig

__version__ = "0.1.0"

__all__ = ["PaserConfig", "__version__"]
