"""Pruning on tiny random Llama models: exact sparsity, Wanda and D-Pruner against slow references, N:M, structured
shrinking, and D-Pruner keeping the weights a planted domain needs."""

import copy

import fixtures
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import AutoModelForCausalLM, LlamaForCausalLM, PreTrainedTokenizerFast

from paser_hf.pruning import (
    GENERAL_IMPORTANCE_DAMPENING,
    PruningReport,
    d_pruner_importance,
    decoder_layers,
    general_importance,
    prune_model,
)

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "ran",
    "fast",
    "slow",
    "big",
    "small",
    "red",
    "blue",
    "and",
    "or",
    "then",
    "it",
    "was",
    "is",
]
TEXTS = [
    "the cat sat on the mat and the dog ran fast",
    "a big red dog was slow then it sat",
    "the small blue cat ran and it is fast",
]


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")


def tiny_llama(seed: int = 0, layers: int = 2) -> LlamaForCausalLM:
    return fixtures.tiny_llama(vocab_size=len(WORDS) + 2, seed=seed, layers=layers, max_positions=64, pad_token_id=1,
                               init_std=0.2)


def decoder_linears(model):
    return [
        (f"{i}.{n}", m)
        for i, layer in enumerate(decoder_layers(model))
        for n, m in layer.named_modules()
        if isinstance(m, nn.Linear)
    ]


def ids_of(text: str) -> torch.Tensor:
    return word_tokenizer()(text, return_tensors="pt").input_ids


def test_magnitude_exact_sparsity_per_layer_and_smallest_removed():
    model = tiny_llama()
    original = copy.deepcopy(model)
    report = prune_model(model, method="magnitude", sparsity=0.3)
    assert isinstance(report, PruningReport)
    for (name, pruned), (_, dense) in zip(decoder_linears(model), decoder_linears(original)):
        zero = pruned.weight == 0
        assert int(zero.sum()) == int(dense.weight.numel() * 0.3), name
        assert dense.weight[zero].abs().max() <= dense.weight[~zero].abs().min(), name
        assert torch.equal(pruned.weight[~zero], dense.weight[~zero])
    assert torch.equal(model.model.embed_tokens.weight, original.model.embed_tokens.weight)
    assert torch.equal(model.lm_head.weight, original.lm_head.weight)
    total = sum(m.weight.numel() for _, m in decoder_linears(model))
    expected = sum(int(m.weight.numel() * 0.3) for _, m in decoder_linears(model)) / total
    assert report.sparsity == pytest.approx(expected)
    assert report.num_parameters_after == report.num_parameters_before
    assert report.to_dict()["method"] == "magnitude"


def test_magnitude_per_row():
    model = tiny_llama()
    original = copy.deepcopy(model)
    prune_model(model, method="magnitude", sparsity=0.5, per_row=True)
    for (_, pruned), (_, dense) in zip(decoder_linears(model), decoder_linears(original)):
        zero = pruned.weight == 0
        assert (zero.sum(1) == dense.in_features // 2).all()
        for row in range(dense.out_features):
            w = dense.weight[row].abs()
            assert w[zero[row]].max() <= w[~zero[row]].min()


def reference_wanda_masks(dense: LlamaForCausalLM, layer_index: int, sparsity=None, n_m=None) -> dict:
    """Slow Wanda: per-feature input norms from hooks on a dense forward, then a scalar loop over the scores."""
    layer = decoder_layers(dense)[layer_index]
    seen = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, out, n=n: seen.setdefault(n, []).append(args[0][0]))
        for n, m in layer.named_modules()
        if isinstance(m, nn.Linear)
    ]
    with torch.no_grad():
        for text in TEXTS:
            dense(input_ids=ids_of(text))
    for h in hooks:
        h.remove()
    masks = {}
    for name, module in layer.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        tokens = torch.cat(seen[name]).detach()  # (all calibration tokens, in_features)
        weight = module.weight.detach()
        rows, cols = weight.shape
        norm = [sum(float(tokens[t, j]) ** 2 for t in range(tokens.shape[0])) ** 0.5 for j in range(cols)]
        mask = torch.zeros(rows, cols, dtype=torch.bool)
        for i in range(rows):
            score = [abs(float(weight[i, j])) * norm[j] for j in range(cols)]
            if n_m is None:
                groups = [list(range(cols))]
                drop = int(cols * sparsity)
            else:
                groups = [list(range(g, g + n_m[1])) for g in range(0, cols, n_m[1])]
                drop = n_m[1] - n_m[0]
            for group in groups:
                for j in sorted(group, key=lambda j: score[j])[:drop]:
                    mask[i, j] = True
        masks[name] = mask
    return masks


@pytest.mark.parametrize("sparsity,n_m", [(0.5, None), (None, (2, 4))])
def test_wanda_matches_slow_reference_layer_by_layer(sparsity, n_m):
    dense = tiny_llama()
    model = copy.deepcopy(dense)
    report = prune_model(
        model, method="wanda", sparsity=sparsity, n_m=n_m, calibration_texts=TEXTS, tokenizer=word_tokenizer()
    )
    assert report.calibration_tokens == sum(ids_of(t).numel() for t in TEXTS)
    for index in range(2):
        # layer `index` is pruned seeing the inputs from the already-pruned layers before it
        reference = reference_wanda_masks(dense, index, sparsity, n_m)
        pruned_layer = decoder_layers(model)[index]
        for name, module in pruned_layer.named_modules():
            if isinstance(module, nn.Linear):
                assert torch.equal(module.weight == 0, reference[name]), (index, name)
        decoder_layers(dense)[index].load_state_dict(pruned_layer.state_dict())
    assert report.sparsity == pytest.approx(0.5)


def test_n_m_pattern_holds_in_every_group():
    model = tiny_llama()
    report = prune_model(
        model, method="wanda", sparsity=None, n_m=(1, 4), calibration_texts=TEXTS, tokenizer=word_tokenizer()
    )
    for name, module in decoder_linears(model):
        groups = (module.weight != 0).reshape(module.out_features, -1, 4)
        assert (groups.sum(-1) == 1).all(), name
    assert report.sparsity == pytest.approx(0.75)
    model = tiny_llama()
    prune_model(model, method="magnitude", n_m=(2, 4))
    for name, module in decoder_linears(model):
        assert ((module.weight != 0).reshape(module.out_features, -1, 4).sum(-1) == 2).all(), name


@pytest.mark.parametrize("calibrated", [False, True])
def test_structured_mlp_shrinks_and_keeps_outputs_when_removed_channels_are_dead(tmp_path, calibrated):
    model = tiny_llama(seed=1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in decoder_layers(model):
            dead = torch.randperm(64, generator=generator)[:16]
            layer.mlp.down_proj.weight[:, dead] = 0  # these channels contribute nothing to the output
    x = ids_of(TEXTS[0])
    with torch.no_grad():
        before = model(input_ids=x).logits
    kwargs = {"calibration_texts": TEXTS, "tokenizer": word_tokenizer()} if calibrated else {}
    report = prune_model(model, method="structured_mlp", sparsity=0.25, **kwargs)
    removed = 2 * 16 * 3 * 32  # layers x channels x (gate row + up row + down column) x hidden
    assert report.num_parameters_before - report.num_parameters_after == removed
    assert model.config.intermediate_size == 48
    for layer in decoder_layers(model):
        assert layer.mlp.gate_proj.weight.shape == (48, 32) and layer.mlp.down_proj.weight.shape == (32, 48)
        assert (layer.mlp.down_proj.weight != 0).all()
    linear_weights = 2 * (2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64)  # q, o; k, v (2 kv heads of 8); MLP
    assert report.sparsity == pytest.approx(removed / linear_weights)
    with torch.no_grad():
        after = model(input_ids=x).logits
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.intermediate_size == 48
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=x).logits, after)


def test_wanda_pruned_model_round_trips(tmp_path):
    model = tiny_llama()
    prune_model(model, method="wanda", n_m=(2, 4), sparsity=None, calibration_texts=TEXTS, tokenizer=word_tokenizer())
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    for (_, a), (_, b) in zip(decoder_linears(model), decoder_linears(reloaded)):
        assert torch.equal(a.weight, b.weight)


def test_layer_drop_removes_the_identity_layer_and_reloads(tmp_path):
    model = tiny_llama(layers=3)
    with torch.no_grad():  # layer 1 becomes the identity: its residual branches output zero
        decoder_layers(model)[1].self_attn.o_proj.weight.zero_()
        decoder_layers(model)[1].mlp.down_proj.weight.zero_()
    x = ids_of(TEXTS[1])
    with torch.no_grad():
        before = model(input_ids=x).logits
    report = prune_model(model, method="layer_drop", sparsity=0.34, calibration_texts=TEXTS, tokenizer=word_tokenizer())
    assert report.details["dropped_layers"] == [1]
    assert model.config.num_hidden_layers == 2 and len(decoder_layers(model)) == 2
    assert [layer.self_attn.layer_idx for layer in decoder_layers(model)] == [0, 1]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=x).logits, before)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=x).logits, before)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": -0.1}, "sparsity"),
        ({"sparsity": None}, "sparsity"),
        ({"method": "wanda"}, "calibration_texts"),
        ({"method": "wanda", "calibration_texts": TEXTS}, "tokenizer"),
        ({"method": "wanda", "calibration_texts": TEXTS[0], "tokenizer": word_tokenizer()}, "list of str"),
        ({"n_m": (4, 2)}, "n_m"),
        ({"n_m": (0, 4)}, "n_m"),
        ({"n_m": (2, 4), "sparsity": 0.3}, "sparsity"),
        ({"n_m": (1, 5), "sparsity": None}, "multiple"),
        ({"method": "structured_mlp", "n_m": (2, 4)}, "n_m"),
        ({"method": "sparsegpt"}, "Unknown"),
        ({"per_row": True, "method": "structured_mlp"}, "per_row"),
        ({"method": "d_pruner", "calibration_texts": TEXTS, "tokenizer": word_tokenizer()}, "needs domain_texts"),
        ({"method": "d_pruner", "calibration_texts": TEXTS, "domain_texts": [], "tokenizer": word_tokenizer()},
         "needs domain_texts"),
        ({"method": "d_pruner", "domain_texts": TEXTS, "tokenizer": word_tokenizer()}, "needs calibration_texts"),
        ({"method": "d_pruner", "calibration_texts": [], "domain_texts": TEXTS, "tokenizer": word_tokenizer()},
         "needs calibration_texts"),
        ({"method": "d_pruner", "calibration_texts": TEXTS, "domain_texts": ["", "the"], "tokenizer": word_tokenizer()},
         "domain_texts tokenised to no sequence"),
        ({"method": "d_pruner", "calibration_texts": TEXTS, "domain_texts": "the cat", "tokenizer": word_tokenizer()},
         "domain_texts must be a list"),
        ({"method": "d_pruner", "calibration_texts": TEXTS, "domain_texts": TEXTS, "tokenizer": word_tokenizer(),
          "regularization_weight": -1}, "regularization_weight"),
        ({"method": "wanda", "calibration_texts": TEXTS, "domain_texts": TEXTS, "tokenizer": word_tokenizer()},
         "applies to method='d_pruner' only"),
    ],
)
def test_bad_input_raises_value_error(kwargs, message):
    model = tiny_llama()
    dense = copy.deepcopy(model)
    with pytest.raises(ValueError, match=message):
        prune_model(model, **kwargs)
    for a, b in zip(model.parameters(), dense.parameters()):
        assert torch.equal(a, b)


def test_unsupported_models_raise_clearly():
    with pytest.raises(ValueError, match="decoder layers"):
        prune_model(nn.Sequential(nn.Linear(4, 4)), method="magnitude")
    model = tiny_llama()
    for layer in decoder_layers(model):
        layer.mlp = nn.Sequential(nn.Linear(32, 64), nn.Linear(64, 32))
    with pytest.raises(ValueError, match="gate_proj"):
        prune_model(model, method="structured_mlp", sparsity=0.5)


def test_calibration_texts_join_each_rows_parts_and_sample_with_a_seed():
    from datasets import Dataset

    from paser_hf.pruning import sample_calibration_texts

    alpaca = Dataset.from_list([{"instruction": f"Do {i}.", "input": "now" if i % 2 else "", "output": f"Done {i}."}
                                for i in range(10)])
    texts = sample_calibration_texts(alpaca)
    assert texts[:2] == ["Do 0.\nDone 0.", "Do 1.\nnow\nDone 1."]
    sample = sample_calibration_texts(alpaca, 4, seed=3)
    assert sample == sample_calibration_texts(alpaca.shuffle(seed=3).select(range(4)))
    assert len(sample_calibration_texts(alpaca, 50)) == 10
    pairs = Dataset.from_list([{"prompt": "Q: 2+2?", "completion": " 4"}])
    assert sample_calibration_texts(pairs) == ["Q: 2+2?\n 4"]
    text = Dataset.from_list([{"text": "a line"}, {"text": "  "}])
    assert sample_calibration_texts(text) == ["a line"]
    with pytest.raises(ValueError, match="calibration_samples=0"):
        sample_calibration_texts(alpaca, 0)


# D-Pruner: the general texts never use the domain's words
GENERAL_TEXTS = ["the cat sat on the mat and the dog ran", "a dog was on it then it sat",
                 "the cat ran and it is on a mat"]
DOMAIN_TEXTS = ["big red small blue slow fast red big", "red blue big small fast slow", "slow big red fast blue small",
                "blue slow red big fast small", "fast fast red blue big small slow", "small red big slow blue"]
DOMAIN_WORDS = ["big", "small", "red", "blue", "fast", "slow"]


def linear_inputs(model, layer_index: int, name: str, texts) -> torch.Tensor:
    """The inputs of one Linear over all tokens of a dense forward of each text, (tokens, in_features)."""
    module = decoder_layers(model)[layer_index].get_submodule(name)
    seen = []
    handle = module.register_forward_hook(lambda mod, args, out: seen.append(args[0][0].detach()))
    with torch.no_grad():
        for text in texts:
            model(input_ids=ids_of(text))
    handle.remove()
    return torch.cat(seen)


def test_general_importance_is_the_least_output_error_of_removing_each_weight():
    model = tiny_llama().double()
    importance, tokens = general_importance(model, word_tokenizer(), TEXTS)
    assert tokens == sum(ids_of(t).numel() for t in TEXTS)
    for layer_index, name in [(0, "self_attn.k_proj"), (1, "mlp.down_proj")]:
        x = linear_inputs(model, layer_index, name, TEXTS)
        weight = decoder_layers(model)[layer_index].get_submodule(name).weight.detach()
        count, width = x.shape
        damping = GENERAL_IMPORTANCE_DAMPENING * float((x * x).sum(0).mean()) / count
        # the error of changing a row by d is ||A d||^2 = (1/T) sum_t (d . x_t)^2 + damping ||d||^2
        a = torch.cat([x / count**0.5, damping**0.5 * torch.eye(width, dtype=x.dtype)])
        expected = torch.empty_like(weight)
        for j in range(width):  # in every row i, d_j = W_ij is forced and the rest of the row re-fitted
            rest = [k for k in range(width) if k != j]
            forced = a[:, j : j + 1] * weight[:, j]  # one column per row i
            refit = torch.linalg.lstsq(a[:, rest], -forced).solution
            expected[:, j] = (forced + a[:, rest] @ refit).pow(2).sum(0)
        torch.testing.assert_close(importance[f"{layer_index}.{name}"].double(), expected, rtol=1e-4, atol=1e-9)


def test_d_pruner_scores_are_the_fisher_and_regulariser_terms_from_per_sequence_gradients():
    model = tiny_llama().double()
    lam = 0.7
    scores, details = d_pruner_importance(model, word_tokenizer(), TEXTS, DOMAIN_TEXTS, lam)
    general, _ = general_importance(model, word_tokenizer(), TEXTS)
    weights = {f"{i}.{n}": m.weight for i, layer in enumerate(decoder_layers(model))
               for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
    grads = []
    for text in DOMAIN_TEXTS:
        ids = ids_of(text)
        logits = model(input_ids=ids).logits[0, :-1]
        loss = nn.functional.cross_entropy(logits, ids[0, 1:])  # the mean next-token loss of this sequence
        grads.append(torch.autograd.grad(loss, list(weights.values())))
    assert set(scores) == set(weights) and details["domain_sequences"] == len(DOMAIN_TEXTS)
    for k, (key, weight) in enumerate(weights.items()):
        per_sequence = torch.stack([g[k] for g in grads])
        fisher = per_sequence.pow(2).mean(0)
        w = weight.detach()
        penalty = general[key].double() * w**2
        scale = (0.5 * fisher * w**2).sum() / penalty.sum()  # G in the loss's units
        expected = 0.5 * fisher * w**2 + lam * scale * penalty
        torch.testing.assert_close(scores[key].double(), expected, rtol=1e-4, atol=1e-7 * float(expected.max()))
        assert weight.requires_grad and weight.grad is None


@pytest.mark.parametrize("sparsity,n_m", [(0.3, None), (None, (2, 4))])
def test_d_pruner_reaches_the_exact_sparsity_in_every_row_and_group(sparsity, n_m):
    model = tiny_llama()
    report = prune_model(model, method="d_pruner", sparsity=sparsity, n_m=n_m, calibration_texts=TEXTS,
                         domain_texts=DOMAIN_TEXTS, tokenizer=word_tokenizer(), show_progress=False)
    for name, module in decoder_linears(model):
        kept = module.weight != 0
        if n_m is None:
            assert (kept.sum(1) == module.in_features - int(module.in_features * 0.3)).all(), name
        else:
            assert (kept.reshape(module.out_features, -1, 4).sum(-1) == 2).all(), name
    total = sum(m.weight.numel() for _, m in decoder_linears(model))
    zeros = sum(m.out_features * int(m.in_features * report.target_sparsity) for _, m in decoder_linears(model))
    assert report.sparsity == pytest.approx(zeros / total)
    assert report.calibration_tokens == sum(ids_of(t).numel() for t in TEXTS)
    assert report.details["domain_tokens"] == sum(ids_of(t).numel() for t in DOMAIN_TEXTS)


def planted_domain_model() -> tuple:
    """A tiny Llama whose first layer's MLP channels 0-7 fire only on the domain's words: only domain tokens carry
    hidden feature 0, which nothing else writes, and those channels read feature 0 alone. Returns the model and the
    columns of the first layer's down_proj that only the domain uses."""
    model = tiny_llama(seed=2)
    tokenizer = word_tokenizer()
    planted = list(range(8))
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        embed[:, 0] = 0
        embed[tokenizer.convert_tokens_to_ids(DOMAIN_WORDS), 0] = 1.0
        for layer in decoder_layers(model):
            layer.self_attn.o_proj.weight[0] = 0
            layer.mlp.down_proj.weight[0] = 0
        mlp = decoder_layers(model)[0].mlp
        for proj in (mlp.gate_proj, mlp.up_proj):
            proj.weight[planted] = 0
            proj.weight[planted, 0] = 3.0
        down = mlp.down_proj.weight[1:, planted]  # row 0 stays all zeros
        mlp.down_proj.weight[1:, planted] = down.sign() * (0.3 + down.abs())  # no planted weight near 0
    return model, planted


def test_domain_only_weights_survive_a_domain_aware_prune_and_fall_to_a_general_only_prune():
    tokenizer = word_tokenizer()
    runs = {
        "domain-aware": {"method": "d_pruner", "domain_texts": DOMAIN_TEXTS},
        "general-only": {"method": "wanda"},
    }
    for run, kwargs in runs.items():
        model, planted = planted_domain_model()
        prune_model(model, sparsity=0.5, calibration_texts=GENERAL_TEXTS, tokenizer=tokenizer, show_progress=False,
                    **kwargs)
        domain_only = decoder_layers(model)[0].mlp.down_proj.weight[1:, planted]
        if run == "domain-aware":
            assert (domain_only != 0).all(), run
        else:
            assert (domain_only == 0).all(), run
