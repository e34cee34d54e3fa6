"""Rows as the recovery trainer sees them: format detection, prompt/completion conversion and tokenisation.

PASER scores a row by the Jensen-Shannon divergence of the original and pruned models' next-token distributions
over its response tokens (arXiv 2502.12594, Eq. 4); here those are exactly the tokens recovery trains on. So every
input format is turned into trl's prompt-completion form and tokenised as `trl.SFTTrainer` tokenises such rows:
the prompt alone (with the generation prompt when conversational), then prompt + completion; the completion
starts where the two token sequences stop agreeing; strings get the tokenizer's EOS appended to the completion.

Formats:
- ``alpaca``: ``instruction``, ``input`` (optional), ``output``. With a chat template the user turn is the
  instruction, followed by a blank line and the input when there is one; without one, `ALPACA_TEMPLATE`.
- ``prompt_completion``: trl's ``prompt`` / ``completion``, strings or lists of messages.
- ``conversational``: ``messages``; the last assistant turn is the response, the turns before it the prompt.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

ALPACA_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
ALPACA_TEMPLATE_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"

_FORMAT_COLUMNS = {
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "conversational": ("messages",),
}


def detect_format(column_names: Sequence[str], requested: Optional[str] = None) -> str:
    """The dataset format named by `requested`, or the only one whose columns are all present."""
    columns = set(column_names)
    if requested is not None:
        missing = [c for c in _FORMAT_COLUMNS[requested] if c not in columns]
        if missing:
            raise ValueError(
                f"dataset_format={requested!r} needs the column(s) {missing}, but the dataset has {sorted(columns)}. "
                "Rename the columns (Dataset.rename_column) or pick the matching dataset_format."
            )
        return requested
    found = [name for name, needed in _FORMAT_COLUMNS.items() if all(c in columns for c in needed)]
    if len(found) == 1:
        return found[0]
    expected = "; ".join(f"{name}: {list(cols)}" for name, cols in _FORMAT_COLUMNS.items())
    if not found:
        raise ValueError(
            f"Cannot tell the dataset format from its columns {sorted(columns)}. Expected one of: {expected}. "
            "Rename the columns, set PaserConfig.dataset_format, or pass a formatting_func."
        )
    raise ValueError(
        f"The columns {sorted(columns)} match several formats {found}; set PaserConfig.dataset_format to one of them."
    )


def has_chat_template(tokenizer) -> bool:
    return getattr(tokenizer, "chat_template", None) is not None


def resolve_chat_template(tokenizer, requested: Optional[bool]) -> bool:
    """Whether rows get the chat template: `requested`, or None for "when the tokenizer has one"."""
    if requested is None:
        return has_chat_template(tokenizer)
    if requested and not has_chat_template(tokenizer):
        raise ValueError("use_chat_template=True but the tokenizer has no chat template; set it to None or False.")
    return requested


def _alpaca_user_text(instruction: str, input_text: Optional[str]) -> str:
    instruction = (instruction or "").strip()
    input_text = (input_text or "").strip()
    return f"{instruction}\n\n{input_text}" if input_text else instruction


def to_prompt_completion(row: dict, dataset_format: str, chat: bool) -> dict:
    """One row as trl prompt-completion: lists of messages when `chat`, else strings (Alpaca template)."""
    if dataset_format == "alpaca":
        instruction, input_text, output = row.get("instruction"), row.get("input"), row.get("output") or ""
        if chat:
            user = _alpaca_user_text(instruction, input_text)
            return {
                "prompt": [{"role": "user", "content": user}],
                "completion": [{"role": "assistant", "content": output}],
            }
        input_text = (input_text or "").strip()
        template = ALPACA_TEMPLATE_WITH_INPUT if input_text else ALPACA_TEMPLATE
        prompt = template.format(instruction=(instruction or "").strip(), input=input_text)
        return {"prompt": prompt, "completion": output}
    if dataset_format == "prompt_completion":
        return {"prompt": row["prompt"], "completion": row["completion"] if row["completion"] is not None else ""}
    messages = row["messages"] or []
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if last is None:
        return {"prompt": list(messages), "completion": []}
    return {"prompt": list(messages[:last]), "completion": [messages[last]]}


def text_of(value) -> str:
    """A prompt or completion as plain text: the string itself, or its messages' contents joined by lines."""
    if isinstance(value, str):
        return value
    return "\n".join(str(m.get("content") or "") for m in (value or []))


def instruction_text(row: dict, dataset_format: str) -> str:
    """The instruction side of a row (instruction + input; the user turns), for embeddings and concepts."""
    if dataset_format == "alpaca":
        return _alpaca_user_text(row.get("instruction"), row.get("input"))
    if dataset_format == "prompt_completion":
        return text_of(row["prompt"])
    pc = to_prompt_completion(row, dataset_format, chat=True)
    return "\n".join(str(m.get("content") or "") for m in pc["prompt"] if m.get("role") != "system")


def response_text(row: dict, dataset_format: str) -> str:
    """The response a row trains on (Alpaca output, completion, last assistant turn)."""
    pc = to_prompt_completion(row, dataset_format, chat=True)
    return text_of(pc["completion"])


def _ids(tokenizer, value, **chat_kwargs) -> list:
    if isinstance(value, str):
        return list(tokenizer(value)["input_ids"])
    out = tokenizer.apply_chat_template(value, tokenize=True, return_dict=True, **chat_kwargs)
    return list(out["input_ids"])


def tokenize_prompt_completion(prompt, completion, tokenizer, max_length: int) -> dict:
    """Token ids of prompt + completion and the index where the completion starts, as trl's SFTTrainer builds them.

    Returns ``input_ids`` (truncated to `max_length`, keep-start as trl does), ``response_start``,
    ``num_response_tokens`` (after truncation) and ``truncated``.
    """
    if isinstance(prompt, str) != isinstance(completion, str):
        raise ValueError("prompt and completion must both be strings or both be lists of messages.")
    if isinstance(prompt, str):
        eos = tokenizer.eos_token or ""
        if completion and not completion.endswith(eos):
            completion = completion + eos
        prompt_ids = _ids(tokenizer, prompt)
        full_ids = _ids(tokenizer, prompt + completion) if completion else prompt_ids
    else:
        prompt_ids = _ids(tokenizer, prompt, add_generation_prompt=True)
        full_ids = _ids(tokenizer, prompt + completion) if completion else prompt_ids
    start = 0
    for a, b in zip(prompt_ids, full_ids):
        if a != b:
            break
        start += 1
    truncated = len(full_ids) > max_length
    full_ids = full_ids[:max_length]
    start = min(start, len(full_ids))
    return {
        "input_ids": full_ids,
        "response_start": start,
        "num_response_tokens": len(full_ids) - start,
        "truncated": truncated,
    }


def make_row_formatter(
    dataset_format: str, chat: bool, formatting_func: Optional[Callable[[dict], dict]] = None
) -> Callable[[dict], dict]:
    """A function row -> {"prompt", "completion"}; a user `formatting_func` must return exactly those keys."""
    if formatting_func is None:
        return lambda row: to_prompt_completion(row, dataset_format, chat)

    def formatter(row):
        out = formatting_func(row)
        if not isinstance(out, dict) or not {"prompt", "completion"} <= set(out):
            raise ValueError(
                "formatting_func must return a dict with 'prompt' and 'completion' (strings, or lists of messages), "
                f"got {type(out).__name__}: {str(out)[:200]!r}"
            )
        return {"prompt": out["prompt"], "completion": out["completion"]}

    return formatter


def to_trl_dataset(dataset, tokenizer, dataset_format: Optional[str] = None, use_chat_template: Optional[bool] = None):
    """The dataset in a form `trl.SFTTrainer` trains on the same tokens PASER scored.

    Alpaca rows become prompt-completion (messages when the tokenizer has a chat template); prompt-completion and
    conversational datasets are returned unchanged. Other columns are kept.
    """
    fmt = detect_format(dataset.column_names, dataset_format)
    if fmt != "alpaca":
        return dataset
    chat = has_chat_template(tokenizer) if use_chat_template is None else use_chat_template
    drop = [c for c in ("instruction", "input", "output") if c in dataset.column_names]
    return dataset.map(
        lambda row: to_prompt_completion(row, "alpaca", chat), remove_columns=drop, desc="Alpaca -> prompt/completion"
    )
