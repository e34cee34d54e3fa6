"""Shared test fixtures: tiny offline models and tokenizers, planted instruction rows and a selector on them.

The tokenizer is byte-level (256 byte tokens plus the special tokens, vocab 261); the models are random Llamas.
`make_selector` pairs a tiny model with a copy whose logits are scrambled on every row that holds a digit, so
the math rows are the damaged capability.
"""


from __future__ import annotations

import json
import math
import types
import zlib

import numpy as np
import torch
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from paser_hf import PaserConfig, PaserDatasetSelector, __version__
from paser_hf.reporting.report import ClusterStats, SelectionReport

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer(chat_template: bool = True, pad_token: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer, no merges: 256 byte tokens plus the special tokens (vocab 261)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>" if pad_token else None,
        additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    if chat_template:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llama(vocab_size: int = 261, seed: int = 0, hidden_size: int = 32, layers: int = 2,
               max_positions: int = 512, pad_token_id: int | None = 0, init_std: float | None = None) -> LlamaForCausalLM:
    """A random Llama in eval mode (4 heads, 2 key-value heads, MLP width 2 x hidden): the one tiny model of the
    tests. `init_std`, if given, redraws every matrix from N(0, init_std^2) so that logits are far from uniform."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        pad_token_id=pad_token_id,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(config).eval()
    if init_std is not None:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.normal_(0, init_std)
    return model


TOPICS = {
    "math": ("Compute {a} plus {b}.", "{a} + {b} = {c}."),
    "cook": ("Describe how to bake {w} bread.", "Mix flour, water and {w} yeast, then bake it."),
    "code": ("Write a python function named {w}.", "def {w}(): return None"),
}
WORDS = ["alpha", "brisk", "cedar", "dune", "ember", "fjord", "grove", "haze", "iris", "jade", "kelp", "lumen"]


def planted_rows(per_topic=12):
    rows = []
    for i in range(per_topic):
        for topic, (instr, out) in TOPICS.items():
            a, b, w = i + 2, 3 * i + 1, WORDS[i % len(WORDS)]
            rows.append(
                {
                    "instruction": instr.format(a=a, b=b, w=w),
                    "input": "",
                    "output": out.format(a=a, b=b, c=a + b, w=w),
                    "topic": topic,
                }
            )
    return rows


class TopicEmbedder:
    """A stand-in SentenceTransformer: one direction per topic keyword plus a little seeded noise."""

    keys = ("plus", "bread", "python")

    def encode(self, texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False):
        out = np.zeros((len(texts), 8), dtype=np.float32)
        for r, text in enumerate(texts):
            for j, key in enumerate(self.keys):
                out[r, j] = 1.0 if key in text else 0.0
            out[r, 3:] = np.random.default_rng(zlib.crc32(text.encode())).normal(0, 0.05, 5)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class DamagedOnDigits(nn.Module):
    """The original model, but with its logits scrambled on every row that contains a digit (the math topic)."""

    def __init__(self, model, digit_ids):
        super().__init__()
        self.inner = model
        self.config = model.config
        self.digit_ids = torch.tensor(sorted(digit_ids))

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        logits = self.inner(input_ids=input_ids, attention_mask=attention_mask).logits
        damaged = torch.isin(input_ids, self.digit_ids).any(dim=1)
        noise = torch.randn(logits.shape, generator=torch.Generator().manual_seed(0)) * 4.0
        return types.SimpleNamespace(logits=logits + damaged[:, None, None] * noise)


def make_selector(config, pruned=None, **kwargs):
    tok = tiny_tokenizer()
    original = tiny_llama(seed=0)
    if pruned is None:
        digits = {tok.convert_tokens_to_ids(str(d)) for d in range(10)}
        pruned = DamagedOnDigits(original, digits)
    return PaserDatasetSelector(original, pruned, tok, config=config, embedder=TopicEmbedder(), **kwargs)


def base_config(**overrides):
    values = dict(budget=0.25, num_clusters=3, show_progress=False, seed=0)
    values.update(overrides)
    return PaserConfig(**values)


REPORT_TOPICS = ["bake bread", "python function", "sum numbers", "translate french", "write poem", "sort list"]


def synthetic_report(n=240, k=4, seed=0, num_clusters=None, details=True):
    """A selection report with per-row details built directly (blobs in 8-d, JSD rising with the cluster id)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    centres = rng.normal(0, 1, (k, 8))
    coordinates = centres[labels] + rng.normal(0, 0.15, (n, 8))
    jsd = np.clip(0.05 + 0.08 * labels + rng.normal(0, 0.03, n), 0, 1)
    jsd[0] = np.nan  # an empty response, never scored
    budget = n // 5
    status = np.full(n, "not_reached", dtype=object)
    status[0] = "skipped_empty_response"
    allocated, selected, rejected = [], [], []
    for c in range(k):
        members = np.flatnonzero((labels == c) & np.isfinite(jsd))
        want = budget * (c + 1) // sum(range(1, k + 1))
        take, drop = members[:want], members[want : want + c]
        status[take], status[drop] = "selected", "rejected_inconsistent"
        allocated.append(want)
        selected.append(len(take))
        rejected.append(len(drop))
    concepts = [[REPORT_TOPICS[l % len(REPORT_TOPICS)], f"item {i % 7}", "following"] for i, l in enumerate(labels)]
    texts = [f"Please {REPORT_TOPICS[l % len(REPORT_TOPICS)]} number {i}." for i, l in enumerate(labels)]
    config = PaserConfig(budget=budget, seed=seed, num_clusters=num_clusters)
    curve = {} if num_clusters else {2: 0.62, 3: 0.41, 4: 0.30, 5: 0.29}
    stats = [
        ClusterStats(
            cluster=c,
            size=int((labels == c).sum()),
            candidates=int(((labels == c) & np.isfinite(jsd)).sum()),
            cds=float(np.nanmean(jsd[labels == c])),
            allocated=allocated[c],
            selected=selected[c],
            rejected=rejected[c],
            mean_ies=0.01,
        )
        for c in range(k)
    ]
    report = SelectionReport(
        num_rows=n,
        budget=budget,
        num_selected=int((status == "selected").sum()),
        k=k,
        k_curve=curve,
        clusters=stats,
        clustering={"k": k, "k_requested": k, "empty_clusters": 0, "method": "dense", "t": 2.5,
                    "t_rule": "lambda_2", "diffusion_dim": 8},
        concept_graph={"nodes": 40, "edges": 90},
        num_truncated=0,
        scored_tokens=12345,
        num_skipped_empty_response=1,
        allocation_fallback=None,
        timings={"clustering": 0.1},
        config=config.to_dict(),
        dataset_format="alpaca",
        models={"original": "org/original-model", "pruned": "org/pruned-model", "vocabulary": 261,
                "paser_hf_version": __version__, "dataset_fingerprint": "abc123"},
        warnings=[],
    )
    if details:
        scores = Dataset.from_dict({
            "index": np.arange(n), "paser_cluster": labels, "paser_jsd": jsd, "paser_ies": jsd / 10,
            "paser_concepts": concepts, "paser_status": status.tolist(),
        })
        report.attach(scores, coordinates, texts)
    return report


CLI_ROWS = [
    {"instruction": f"Add {a} and {b}.", "input": "", "output": f"{a} + {b} = {a + b}."}
    for a, b in zip(range(12), range(5, 17))
] + [
    {"instruction": f"Write a python function named f{i}.", "input": "", "output": f"def f{i}():\n    return {i}"}
    for i in range(12)
]


def save_cli_files(root) -> dict:
    """Saved tiny original and magnitude-pruned Llamas, a tiny SentenceTransformer and `CLI_ROWS` as Alpaca JSONL
    under `root`: their paths, as the `paser` commands and the demo take them."""
    import json

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel

    from paser_hf.pruning import prune_model

    tokenizer = tiny_tokenizer()
    original = tiny_llama()
    pruned = tiny_llama()
    prune_model(pruned, method="magnitude", sparsity=0.5)
    bert = root / "bert"
    BertModel(BertConfig(vocab_size=261, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=512)).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    word = Transformer(str(bert), max_seq_length=128)
    SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension())]).save(str(root / "embedder"))
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in CLI_ROWS))
    paths = {"embedder": str(root / "embedder"), "data": str(data)}
    for name, model in (("original", original), ("pruned", pruned)):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = str(root / name)
    return paths


def decoder_sparsity(model) -> float:
    """Fraction of zeros in the Linear weights of the decoder layers."""
    weights = [m.weight for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in name]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


#: Token rows for the scoring tests: (input_ids, response_start), of 7, 12, 3 and 5 tokens.
TOKEN_ROWS = [
    ([1, 10, 11, 12, 13, 14, 15], 4),
    ([1, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30], 6),
    ([1, 40, 41], 2),
    ([1, 50, 51, 52, 53], 1),
]


def jsd_scorer(original, pruned, **kwargs):
    """A `JsdScorer` over the tiny byte vocabulary (pad id 0, 261 logits)."""
    from paser_hf.selection.divergence import JsdScorer

    return JsdScorer(original, pruned, pad_token_id=0, vocab=261, **kwargs)


def blobs(n_per, centres, scale, seed=0):
    """`n_per` Gaussian points (std `scale`) around each of `centres`, and the blob of each point."""
    rng = np.random.default_rng(seed)
    x = np.vstack([c + scale * rng.standard_normal((n_per, len(c))) for c in centres])
    return x, np.repeat(np.arange(len(centres)), n_per)


#: Questions whose right answer (choice 0) repeats the question's last word, so a model that copies scores well.
TINY_MC = [{"query": f"Say {word}. Answer:", "choices": [word, "zzz", "qqq"], "gold": 0}
           for word in ("alpha", "cedar", "ember", "grove", "jade", "lumen")]


def write_local_task(folder):
    """A task YAML named `tiny_mc` over a local JSONL file (no Hub access), as a user would write one."""
    data = folder / "tiny_mc.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in TINY_MC))
    (folder / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "output_type: multiple_choice\n"
        "test_split: test\n"
        'doc_to_text: "{{query}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{gold}}"\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    return str(folder)


def reference_divergence(student_row, teacher_row, kind, temperature, beta):
    """The distillation divergence of one position, float64, written out from the definitions (reference of
    `paser_hf.recovery.losses.divergence`)."""
    q = torch.softmax(student_row.double() / temperature, -1).tolist()
    p = torch.softmax(teacher_row.double() / temperature, -1).tolist()

    def kl(a, b):
        return sum(x * (math.log(x) - math.log(y)) for x, y in zip(a, b) if x > 0)

    if kind == "forward_kl":
        value = kl(p, q)
    elif kind == "reverse_kl":
        value = kl(q, p)
    else:
        m = [beta * x + (1 - beta) * y for x, y in zip(p, q)]
        value = beta * kl(p, m) + (1 - beta) * kl(q, m)
    return value * temperature**2


def assert_gradient_matches_finite_differences(loss, z: torch.Tensor, directions: int = 6) -> None:
    """``<grad loss(z), u>`` from one backward pass against the central difference of `loss` along random ``u``, in
    float64 (the fused losses' backward reuses their saved tensors, so `torch.autograd.gradcheck`, which runs
    several backward passes through one graph, cannot call them)."""
    leaf = z.detach().clone().requires_grad_()
    loss(leaf).backward()
    gen = torch.Generator().manual_seed(0)
    for _ in range(directions):
        u = torch.randn(z.shape, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            numeric = (loss(z + 1e-6 * u) - loss(z - 1e-6 * u)) / 2e-6
        torch.testing.assert_close((leaf.grad * u).sum(), numeric, rtol=1e-6, atol=1e-8)
