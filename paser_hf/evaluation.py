"""Offline evaluation of a causal LM: sliding-window perplexity and zero-shot multiple-choice accuracy.

- Perplexity: PPL = exp(-(1/T) sum_t log p(x_t | x_<t)) over the tokens of the text (a list of texts is joined
  with "\\n\\n", as WikiText-2 is). Windows of ``max_length`` tokens start every ``stride`` tokens and only the
  tokens not scored by an earlier window are scored, each with up to ``max_length - 1`` tokens of context
  (the Hugging Face "perplexity of fixed-length models" recipe). A window's first token has no context inside
  it, so with ``stride == max_length`` (disjoint windows) the first token of each window is not scored.
- Multiple choice, as lm-evaluation-harness scores it (Gao et al., "A framework for few-shot language model
  evaluation"): each choice's log-likelihood LL_i = sum_k log p(c_k | query, c_<k) of the continuation
  " " + choice after the query; accuracy takes argmax_i LL_i, acc_norm takes argmax_i LL_i / len(choice_i
  in UTF-8 bytes). The continuation tokens are those of tokenize(query + " " + choice) after tokenize(query).

`evaluate_model` runs both on one model and `format_table` prints one row per model (`paser evaluate`, the demo).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _encode(tokenizer, text: str, add_special_tokens: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def perplexity(
    model,
    tokenizer,
    texts_or_joined_text: str | Sequence[str],
    max_length: int = 1024,
    stride: int | None = None,
    show_progress: bool = True,
) -> dict:
    """Sliding-window perplexity; returns {"perplexity", "nll" (mean per scored token), "tokens", "windows"}.

    ``stride`` defaults to ``max_length`` (disjoint windows) and must be in [1, max_length].
    """
    text = texts_or_joined_text if isinstance(texts_or_joined_text, str) else "\n\n".join(texts_or_joined_text)
    stride = max_length if stride is None else stride
    if max_length < 2 or not 1 <= stride <= max_length:
        raise ValueError(f"need max_length >= 2 and 1 <= stride <= max_length; got {max_length}, {stride}.")
    ids = torch.tensor(_encode(tokenizer, text, add_special_tokens=True), dtype=torch.long)
    if ids.numel() < 2:
        raise ValueError("the text has fewer than 2 tokens: nothing to score.")
    total = ids.numel()
    starts = list(range(0, total - 1, stride))
    was_training = model.training
    model.eval()
    nll_sum = 0.0
    scored = 0
    windows = 0
    done = 0
    device = _device(model)
    with torch.no_grad():
        for begin in tqdm(starts, desc="perplexity", disable=not show_progress):
            end = min(begin + max_length, total)
            first = max(done, begin + 1)
            if first < end:
                window = ids[begin:end].unsqueeze(0).to(device)
                logits = model(input_ids=window, use_cache=False).logits
                logits = logits[0, first - begin - 1 : end - begin - 1].float()
                targets = window[0, first - begin : end - begin]
                nll_sum -= torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).sum().item()
                scored += end - first
                windows += 1
            done = end
            if end == total:
                break
    model.train(was_training)
    nll = nll_sum / scored
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": scored, "windows": windows}


def load_mc_jsonl(path: str | Path) -> list[dict]:
    """Read multiple-choice rows {"query": str, "choices": [str, ...], "gold": int} from a JSONL file."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            _check_row(row, f"{path}:{number}")
            rows.append(row)
    return rows


def _check_row(row: dict, where: str) -> None:
    choices = row.get("choices")
    if not isinstance(row.get("query"), str) or not isinstance(choices, list) or len(choices) < 2:
        raise ValueError(f"{where}: a row needs 'query' (str) and 'choices' (a list of 2+ str).")
    gold = row.get("gold")
    if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < len(choices):
        raise ValueError(f"{where}: 'gold' must be an index into 'choices'; got {gold!r}.")


def continuation_tokens(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation token ids such that context + continuation tokenises the joined string.

    Trailing whitespace of the context moves to the continuation; the continuation ids are the tail of
    tokenize(context + continuation) after len(tokenize(context)) ids, as in lm-evaluation-harness.
    """
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + continuation
    whole = _encode(tokenizer, stripped + continuation, add_special_tokens=False)
    context_ids = _encode(tokenizer, stripped, add_special_tokens=False)
    return context_ids, whole[len(context_ids) :]


def _loglikelihoods(
    model,
    requests: list[tuple[list[int], list[int]]],
    batch_size: int,
    pad_id: int,
    max_length: int,
    show_progress: bool,
) -> list[float]:
    """Sum of log p(continuation | context) per request, in batches (longest first), right padding masked."""
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]) - len(requests[i][1]))
    results = [0.0] * len(requests)
    device = _device(model)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc="multiple choice", disable=not show_progress):
        inputs, spans = [], []
        for i in batch:
            context, cont = requests[i]
            sequence = (context + cont)[-(max_length + 1) :][:-1]
            inputs.append(sequence)
            spans.append((len(sequence) - len(cont), cont))
        width = max(len(s) for s in inputs)
        input_ids = torch.full((len(inputs), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(inputs), width), dtype=torch.long)
        for row, sequence in enumerate(inputs):
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            attention[row, : len(sequence)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=False).logits
        for row, (i, (start, cont)) in enumerate(zip(batch, spans)):
            log_probs = torch.log_softmax(logits[row, start : start + len(cont)].float(), dim=-1)
            target = torch.tensor(cont, device=log_probs.device)
            results[i] = log_probs.gather(1, target[:, None]).sum().item()
    return results


def choice_loglikelihoods(
    model,
    tokenizer,
    rows: Sequence[dict],
    batch_size: int = 8,
    max_length: int | None = None,
    show_progress: bool = True,
) -> list[list[float]]:
    """LL_i = sum_k log p(c_k | query, c_<k) of " " + choice_i after the query, for every choice of every row.

    ``max_length`` (default: config.max_position_embeddings) left-truncates over-long inputs.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    if max_length is None:
        max_length = getattr(model.config, "max_position_embeddings", None) or 2048
    pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
    requests = []
    for row in rows:
        for choice in row["choices"]:
            context, cont = continuation_tokens(tokenizer, row["query"], " " + choice)
            if not context or not cont:
                raise ValueError(f"query {row['query'][:40]!r} or choice {choice!r} tokenises to nothing.")
            if len(cont) > max_length:
                raise ValueError(f"choice {choice[:40]!r} is longer than max_length={max_length} tokens.")
            requests.append((context, cont))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        scores = _loglikelihoods(model, requests, batch_size, pad_id, max_length, show_progress)
    model.train(was_training)
    grouped, position = [], 0
    for row in rows:
        grouped.append(scores[position : position + len(row["choices"])])
        position += len(row["choices"])
    return grouped


def multiple_choice_accuracy(
    model,
    tokenizer,
    rows: Iterable[dict],
    batch_size: int = 8,
    limit: int | None = None,
    seed: int = 0,
    max_length: int | None = None,
    show_progress: bool = True,
) -> dict:
    """Zero-shot accuracy (argmax LL_i) and acc_norm (argmax LL_i / UTF-8 bytes of choice_i); returns
    {"accuracy", "acc_norm", "n"}. ``limit`` scores a subset of that many rows drawn with ``random.Random(seed)``.
    """
    rows = list(rows)
    for number, row in enumerate(rows):
        _check_row(row, f"row {number}")
    if limit is not None and limit < len(rows):
        rows = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), limit))]
    if not rows:
        raise ValueError("no rows to score.")
    scores = choice_loglikelihoods(model, tokenizer, rows, batch_size, max_length, show_progress)
    correct = correct_norm = 0
    for row, lls in zip(rows, scores):
        norm = [ll / max(1, len(c.encode("utf-8"))) for ll, c in zip(lls, row["choices"])]
        correct += int(max(range(len(lls)), key=lls.__getitem__) == row["gold"])
        correct_norm += int(max(range(len(norm)), key=norm.__getitem__) == row["gold"])
    return {"accuracy": correct / len(rows), "acc_norm": correct_norm / len(rows), "n": len(rows)}


def read_eval_text(path, max_words: int | None = None) -> str:
    """Plain text (.txt, .raw, .tokens) or JSONL rows with a "text" field (joined with blank lines, as WikiText)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such text file")
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        if not rows or not all(isinstance(r, dict) and isinstance(r.get("text"), str) for r in rows):
            raise ValueError(f"{path}: every JSONL row needs a 'text' string")
        text = "\n\n".join(r["text"] for r in rows)
    else:
        text = path.read_text(encoding="utf-8")
    if max_words is not None:
        ends = [m.end() for m in re.finditer(r"\S+", text)]
        if len(ends) > max_words:
            text = text[: ends[max_words - 1]]
    if not text.strip():
        raise ValueError(f"{path}: the text is empty")
    return text


def evaluate_model(model, tokenizer, text: str | None = None, mc_rows: Sequence[dict] | None = None,
                   max_length: int = 256, stride: int | None = None, batch_size: int = 8,
                   show_progress: bool = True) -> dict:
    """{"perplexity", "mc_accuracy", "mc_acc_norm", "mc_n"} for whichever of `text` and `mc_rows` is given."""
    row = {}
    if text is not None:
        row["perplexity"] = perplexity(model, tokenizer, text, max_length=max_length, stride=stride,
                                       show_progress=show_progress)["perplexity"]
    if mc_rows:
        result = multiple_choice_accuracy(model, tokenizer, mc_rows, batch_size=batch_size, show_progress=show_progress)
        row.update(mc_accuracy=result["accuracy"], mc_acc_norm=result["acc_norm"], mc_n=result["n"])
    return row


def nonzero_parameters(model) -> int:
    """Parameters of `model` that are not zero (pruned zeros are stored but do not count)."""
    return sum(int((p != 0).sum()) for p in model.parameters())


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "-" if value is None else str(value)


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A markdown table of `columns` (missing values shown as '-')."""
    columns = [c for c in columns if any(c in r for r in rows)]
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(values) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(columns), rule, *(line(row) for row in cells)])
