"""One-shot pruning of a Hugging Face decoder LLM, to make the pruned model that recovery training starts from.

Methods (only the Linear layers inside the decoder layers are touched; embeddings and lm_head never are):

- ``magnitude``: zero the weights with the smallest |W_ij|, per layer (or per output row with ``per_row=True``).
- ``wanda``: Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs" (arXiv 2306.11695): score
  S_ij = |W_ij| * ||X_j||_2, where ||X_j||_2 is the norm of input feature j over all calibration tokens, and zero
  the lowest scores within each output row. Layers are pruned in order, each seeing the inputs produced by the
  already-pruned layers before it, as in the paper's code.
- ``d_pruner``: Zhang et al. 2024, "Pruning as a Domain-specific LLM Extractor" (D-Pruner, NAACL Findings, arXiv
  2405.06275): weights scored by their importance for a domain (``domain_texts``) under a next-token loss regularised
  to keep the general importance measured on open-domain ``calibration_texts``; lowest scores zeroed within each
  output row. See `d_pruner_importance`.
- N:M semi-structured (``n_m=(2, 4)``, with ``magnitude``, ``wanda`` or ``d_pruner``): in every group of M
  consecutive input weights of a row, keep the N with the highest scores (NVIDIA's N:M sparsity, 2:4 = 50%).
- ``structured_mlp``: remove the same number of intermediate channels from every gated MLP
  (gate_proj/up_proj/down_proj), so the model really shrinks and ``config.intermediate_size`` stays uniform.
  Channel j scores ||W_down[:, j]||_2 * ||h_j||_2 with calibration texts (the Frobenius norm of that channel's
  contribution to the MLP output over the calibration tokens, h = act(gate(x)) * up(x)); without them the
  data-free proxy ||W_gate[j]||_2 * ||W_up[j]||_2 * ||W_down[:, j]||_2. Both are zero exactly for a dead channel.
- ``layer_drop``: remove whole decoder layers with the lowest Block Influence, BI_i = 1 - mean_t cos(x_i,t,
  x_{i+1},t) between a layer's input and output hidden states (Men et al. 2024, ShortGPT, arXiv 2403.03853).

Supported models: decoder LLMs whose decoder layers are reached by ``model.get_decoder().layers`` (or
``model.model.layers``) and whose projections are ``nn.Linear`` with Llama/Mistral/Qwen-style names (q_proj, k_proj,
v_proj, o_proj, gate_proj, up_proj, down_proj). Models with fused or non-Linear weights in a decoder layer (MoE
expert tensors, GPT-2 Conv1D) raise ValueError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .formatting import detect_format, instruction_text, response_text

METHODS = ("magnitude", "wanda", "d_pruner", "structured_mlp", "layer_drop")
_NEEDS_CALIBRATION = ("wanda", "d_pruner", "layer_drop")
_UNSTRUCTURED = ("magnitude", "wanda", "d_pruner")
#: Dampening of the layer Hessians in D-Pruner's general importance, as a fraction of their mean diagonal (SparseGPT's
#: default; the D-Pruner abstract and its authors' README take the general importance from SparseGPT's error).
GENERAL_IMPORTANCE_DAMPENING = 0.01
#: D-Pruner's defaults: the regulariser weight lambda (on the scale `d_pruner_importance` puts the general importance
#: in; 1 weighs both terms alike), and the sizes of the open-domain set (128 rows, SparseGPT's, whose error the
#: general importance is) and of the domain set (1,000 rows, our reading of the authors' setup).
D_PRUNER_REGULARIZATION_WEIGHT = 1.0
D_PRUNER_GENERAL_SAMPLES = 128
D_PRUNER_DOMAIN_SAMPLES = 1000


@dataclass
class PruningReport:
    """What a pruning run did.

    ``sparsity`` is the fraction of the original decoder-layer Linear weights that are now zero or removed (for
    unstructured and N:M methods: the fraction of zeros in those weights). ``nonzero_parameters_after`` is
    ``num_parameters_after`` less the zeros in the decoder-layer Linear weights.
    """

    method: str
    target_sparsity: float
    sparsity: float
    n_m: tuple[int, int] | None
    num_parameters_before: int
    num_parameters_after: int
    nonzero_parameters_after: int
    linear_weights_before: int
    linear_weights_after: int
    calibration_tokens: int = 0
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def sample_calibration_texts(data, samples: int | None = None, seed: int = 0) -> list[str]:
    """Calibration texts from a `datasets.Dataset`: a seeded sample of ``samples`` rows (all rows when None), each
    row's ``text`` (blank ones skipped) or, for instruction data, its parts joined by newlines: instruction, input
    and output for Alpaca rows, else the instruction side and the response."""
    if samples is not None:
        if samples < 1:
            raise ValueError(f"calibration_samples={samples}; it must be >= 1")
        data = data.shuffle(seed=seed).select(range(min(samples, len(data))))
    if "text" in data.column_names:
        return [t for t in data["text"] if t and t.strip()]
    fmt = detect_format(data.column_names)

    def parts(row: dict) -> tuple:
        if fmt == "alpaca":
            return row["instruction"], row.get("input"), row["output"]
        return instruction_text(row, fmt), response_text(row, fmt)

    return ["\n".join(part for part in parts(row) if part) for row in data]


def prune_model(
    model: nn.Module,
    method: str = "magnitude",
    sparsity: float | None = 0.5,
    n_m: tuple[int, int] | None = None,
    calibration_texts: Sequence[str] | None = None,
    tokenizer=None,
    per_row: bool = False,
    calibration_max_length: int = 512,
    domain_texts: Sequence[str] | None = None,
    regularization_weight: float = D_PRUNER_REGULARIZATION_WEIGHT,
    show_progress: bool = True,
) -> PruningReport:
    """Prune ``model`` in place and return a PruningReport.

    ``sparsity`` is the fraction of weights to zero (magnitude, wanda, d_pruner), of MLP intermediate channels to
    remove (structured_mlp) or of decoder layers to remove (layer_drop). With ``n_m=(N, M)`` it may be None, else it
    must equal 1 - N/M. ``calibration_texts`` and ``tokenizer`` are required by wanda, d_pruner (its open-domain
    set) and layer_drop and make structured_mlp activation-aware; each text is truncated to
    ``calibration_max_length`` tokens. d_pruner also needs ``domain_texts`` and weighs the general importance in
    its loss by ``regularization_weight`` (lambda); ``show_progress`` shows its two passes' progress bars.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown pruning method {method!r}; choose one of {METHODS}.")
    sparsity = _check_sparsity(sparsity, n_m, method)
    if per_row and method != "magnitude":
        raise ValueError("per_row applies to method='magnitude' only (wanda and d_pruner always compare within a row).")
    for name, texts in (("calibration_texts", calibration_texts), ("domain_texts", domain_texts)):
        if isinstance(texts, str):
            raise ValueError(f"{name} must be a list of str, not one str.")
    wants_calibration = method in _NEEDS_CALIBRATION or (method == "structured_mlp" and calibration_texts)
    if wants_calibration and (not calibration_texts or tokenizer is None):
        raise ValueError(f"method={method!r} needs calibration_texts (a non-empty list of str) and a tokenizer.")
    if method == "d_pruner":
        if not domain_texts:
            raise ValueError("method='d_pruner' needs domain_texts (a non-empty list of str from the target domain; "
                             "`paser prune --domain_dataset`).")
        if isinstance(regularization_weight, bool) or not isinstance(regularization_weight, (int, float)) or (
                regularization_weight < 0):
            raise ValueError(f"regularization_weight must be a number >= 0; got {regularization_weight!r}.")
    elif domain_texts is not None:
        raise ValueError(f"domain_texts applies to method='d_pruner' only, not {method!r}.")

    layers = decoder_layers(model)
    if method in _UNSTRUCTURED:
        _check_unstructured(layers, n_m)
    elif method == "structured_mlp":
        _check_gated_mlps(model, layers)

    params_before = count_parameters(model)
    linear_before = sum(m.weight.numel() for layer in layers for _, m in _linears(layer))
    details: dict = {}
    tokens = 0
    if method == "magnitude":
        for layer in layers:
            for _, linear in _linears(layer):
                _zero_lowest(linear.weight, linear.weight.detach().abs(), sparsity, n_m, per_row)
    elif method == "wanda":

        def prune_wanda(layer: nn.Module, norms: dict) -> None:
            for name, linear in _linears(layer):
                if name not in norms:
                    raise ValueError(f"{name} received no input during the calibration forward passes.")
                score = linear.weight.detach().abs().float() * norms[name].unsqueeze(0)
                _zero_lowest(linear.weight, score, sparsity, n_m, per_row=True)

        tokens = _prune_sequentially(model, tokenizer, calibration_texts, calibration_max_length, prune_wanda)
    elif method == "d_pruner":
        scores, details = d_pruner_importance(model, tokenizer, calibration_texts, domain_texts,
                                              regularization_weight, calibration_max_length, show_progress)
        tokens = details.pop("calibration_tokens")
        for layer_index, layer in enumerate(layers):
            for name, linear in _linears(layer):
                _zero_lowest(linear.weight, scores.pop(f"{layer_index}.{name}"), sparsity, n_m, per_row=True)
    elif method == "structured_mlp":
        details = _prune_mlp_channels(model, layers, sparsity, tokenizer, calibration_texts, calibration_max_length)
        tokens = details.pop("calibration_tokens")
    else:
        details = _drop_layers(model, layers, sparsity, tokenizer, calibration_texts, calibration_max_length)
        tokens = details.pop("calibration_tokens")

    layers = decoder_layers(model)
    weights = [m.weight for layer in layers for _, m in _linears(layer)]
    linear_after = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    params_after = count_parameters(model)
    return PruningReport(
        method=method,
        target_sparsity=sparsity,
        sparsity=(linear_before - linear_after + zeros) / linear_before,
        n_m=tuple(n_m) if n_m else None,
        num_parameters_before=params_before,
        num_parameters_after=params_after,
        nonzero_parameters_after=params_after - zeros,
        linear_weights_before=linear_before,
        linear_weights_after=linear_after,
        calibration_tokens=tokens,
        details=details,
    )


def count_parameters(model: nn.Module) -> int:
    """Number of stored parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder layers (``model.get_decoder().layers`` or ``model.model.layers``)."""
    candidates = []
    if hasattr(model, "get_decoder"):
        candidates.append(model.get_decoder())
    candidates.append(getattr(model, "model", None))
    for owner in candidates:
        layers = getattr(owner, "layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return layers
    raise ValueError(
        f"{type(model).__name__} has no decoder layers at model.get_decoder().layers or model.model.layers; "
        "pruning supports Llama/Mistral/Qwen-style Hugging Face decoder models."
    )


def _check_sparsity(sparsity: float | None, n_m, method: str) -> float:
    if n_m is not None:
        if method not in _UNSTRUCTURED:
            raise ValueError(f"n_m applies to the methods {_UNSTRUCTURED} only.")
        if len(n_m) != 2 or not all(isinstance(v, int) for v in n_m) or not 0 < n_m[0] < n_m[1]:
            raise ValueError(f"n_m must be two integers (N, M) with 0 < N < M (e.g. (2, 4)); got {n_m!r}.")
        implied = 1 - n_m[0] / n_m[1]
        if sparsity is not None and abs(sparsity - implied) > 1e-9:
            raise ValueError(f"n_m={tuple(n_m)} means sparsity {implied:g}; got sparsity={sparsity!r} (pass None).")
        return implied
    if sparsity is None or isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise ValueError(f"sparsity must be a number in [0, 1); got {sparsity!r}.")
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1); got {sparsity!r}.")
    return float(sparsity)


def _linears(layer: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(name, m) for name, m in layer.named_modules() if isinstance(m, nn.Linear)]


def _check_unstructured(layers: nn.ModuleList, n_m) -> None:
    for index, layer in enumerate(layers):
        linears = _linears(layer)
        owned = {f"{name}.{p}" for name, m in linears for p, _ in m.named_parameters(recurse=False)}
        for name, param in layer.named_parameters():
            if param.dim() >= 2 and name not in owned:
                raise ValueError(
                    f"decoder layer {index} holds the weight {name!r} outside an nn.Linear (fused experts or "
                    "Conv1D); only nn.Linear projections are supported."
                )
        if not linears:
            raise ValueError(f"decoder layer {index} has no nn.Linear to prune.")
        if n_m is not None:
            for name, m in linears:
                if m.in_features % n_m[1]:
                    raise ValueError(f"{name} has {m.in_features} input features, not a multiple of M={n_m[1]}.")


def _zero_lowest(weight: torch.Tensor, score: torch.Tensor, sparsity: float, n_m, per_row: bool) -> None:
    """Zero, in place, the weights with the lowest scores: exactly floor(count * sparsity) of them."""
    rows, cols = score.shape
    if n_m is not None:
        n, m = n_m
        groups = score.reshape(rows, cols // m, m)
        lowest = torch.topk(groups, m - n, dim=-1, largest=False).indices
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, lowest, True).reshape(rows, cols)
    elif per_row:
        lowest = torch.topk(score, int(cols * sparsity), dim=1, largest=False).indices
        mask = torch.zeros_like(score, dtype=torch.bool).scatter_(1, lowest, True)
    else:
        lowest = torch.topk(score.flatten(), int(score.numel() * sparsity), largest=False).indices
        mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
        mask[lowest] = True
        mask = mask.reshape(rows, cols)
    with torch.no_grad():
        weight.masked_fill_(mask, 0)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


class _Stop(Exception):
    pass


def _tokenize(tokenizer, texts: Sequence[str], max_length: int, device, what: str = "calibration_texts"):
    ids = []
    for text in texts:
        encoded = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length).input_ids
        if encoded.shape[1] > 0:
            ids.append(encoded.to(device))
    if not ids:
        raise ValueError(f"{what} tokenised to nothing.")
    return ids


def _capture_layer_inputs(model: nn.Module, ids: list[torch.Tensor]) -> list[tuple[torch.Tensor, list]]:
    """For each calibration sequence: the hidden states entering layer 0, and every layer's other call arguments."""
    layers = decoder_layers(model)
    captured = []
    current: list = []

    def record(index: int):
        def hook(module, args, kwargs):
            kwargs = dict(kwargs)
            hidden = args[0] if args else kwargs.pop("hidden_states")
            current.append((tuple(args[1:]), kwargs, hidden if index == 0 else None))
            if index == len(layers) - 1:
                raise _Stop

        return hook

    handles = [layer.register_forward_pre_hook(record(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            for input_ids in ids:
                current = []
                try:
                    model(input_ids=input_ids, use_cache=False)
                except _Stop:
                    pass
                captured.append((current[0][2], [(args, kwargs) for args, kwargs, _ in current]))
    finally:
        for handle in handles:
            handle.remove()
    return captured


class _InputStats:
    """Forward hooks accumulating, over all tokens, the input x of every Linear in a module: sum_t x_tj^2 per input
    feature, or with ``gram=True`` the Gram matrix sum_t x_t x_t^T (float64) and the token count T."""

    def __init__(self, module: nn.Module, gram: bool = False):
        self.gram = gram
        self.sums: dict[str, torch.Tensor] = {}
        self.tokens: dict[str, int] = {}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in _linears(module)]

    def _hook(self, name: str):
        def hook(module, args, output):
            x = args[0].detach().reshape(-1, args[0].shape[-1])
            total = x.double().T @ x.double() if self.gram else x.float().pow(2).sum(0)
            self.sums[name] = self.sums[name] + total if name in self.sums else total
            self.tokens[name] = self.tokens.get(name, 0) + x.shape[0]

        return hook

    def result(self) -> dict[str, torch.Tensor]:
        """The input-feature norms ||X_j||_2, or with ``gram`` the mean Gram matrix (1/T) sum_t x_t x_t^T."""
        for handle in self.handles:
            handle.remove()
        if self.gram:
            return {name: total / self.tokens[name] for name, total in self.sums.items()}
        return {name: total.sqrt() for name, total in self.sums.items()}


def _prune_sequentially(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    max_length: int,
    prune_layer: Callable[[nn.Module, dict], None],
    gram: bool = False,
    progress: str | None = None,
) -> int:
    """Prune decoder layers in order: gather each layer's input statistics (`_InputStats`) from the inputs that the
    already pruned earlier layers produce, call ``prune_layer(layer, stats)``, then pass the pruned layer's outputs
    on. ``progress`` names a progress bar over the layers (none when None)."""
    was_training = model.training
    model.eval()
    ids = _tokenize(tokenizer, texts, max_length, _device(model))
    captured = _capture_layer_inputs(model, ids)
    states = [hidden for hidden, _ in captured]
    layers = decoder_layers(model)
    with torch.no_grad():
        for index, layer in enumerate(tqdm(layers, desc=progress, unit="layer", disable=progress is None)):
            calls = [per_layer[index] for _, per_layer in captured]
            stats = _InputStats(layer, gram)
            for hidden, (args, kwargs) in zip(states, calls):
                layer(hidden, *args, **kwargs)
            prune_layer(layer, stats.result())
            states = [_first(layer(hidden, *args, **kwargs)) for hidden, (args, kwargs) in zip(states, calls)]
    model.train(was_training)
    return sum(int(x.numel()) for x in ids)


def general_importance(
    model: nn.Module, tokenizer, texts: Sequence[str], max_length: int = 512, show_progress: bool = False,
    use: Callable[[str, torch.Tensor], None] | None = None,
) -> tuple[dict[str, torch.Tensor], int]:
    """D-Pruner step 1: the general importance of every decoder-layer Linear weight on open-domain ``texts``, the
    error that removing it incurs. As in Optimal Brain Surgeon and SparseGPT, whose error the paper uses, that is
    the least increase of the layer's mean squared output error (1/T) sum_t ||(W - W') x_t||^2 when W_ij is set to
    zero and the rest of row i re-fitted:

        G_ij = W_ij^2 / [H^-1]_jj,    H = (1/T) sum_t x_t x_t^T + d * mean(diag) * I

    over the layer's inputs x_t on the T calibration tokens, with d = GENERAL_IMPORTANCE_DAMPENING (the re-fit also
    pays d * mean(diag) * ||W - W'||^2, which keeps H invertible). Measured on the dense model, one decoder layer
    at a time, each fed the dense outputs of the layer before. Returns ({"<layer index>.<module name>": G as
    float32}, calibration tokens); with ``use``, each G goes to ``use(key, G)`` as it is made instead (the dict
    comes back empty), so that only one layer's G is held at a time."""
    index = {id(layer): i for i, layer in enumerate(decoder_layers(model))}
    importance: dict[str, torch.Tensor] = {}
    use = use or importance.__setitem__

    def measure(layer: nn.Module, grams: dict) -> None:
        for name, linear in _linears(layer):
            if name not in grams:
                raise ValueError(f"{name} received no input during the calibration forward passes.")
            gram = grams[name]
            identity = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
            damping = GENERAL_IMPORTANCE_DAMPENING * (float(gram.diagonal().mean()) or 1.0)
            factor = torch.linalg.cholesky(gram + damping * identity)
            # H^-1 = L^-T L^-1 for H = L L^T: [H^-1]_jj is the squared norm of column j of L^-1
            inverse_diagonal = torch.linalg.solve_triangular(factor, identity, upper=False).pow(2).sum(0)
            weight = linear.weight.detach().double()
            use(f"{index[id(layer)]}.{name}", (weight.pow(2) / inverse_diagonal).float())

    progress = "D-Pruner general importance" if show_progress else None
    tokens = _prune_sequentially(model, tokenizer, texts, max_length, measure, gram=True, progress=progress)
    return importance, tokens


def d_pruner_importance(
    model: nn.Module,
    tokenizer,
    general_texts: Sequence[str],
    domain_texts: Sequence[str],
    regularization_weight: float = D_PRUNER_REGULARIZATION_WEIGHT,
    max_length: int = 512,
    show_progress: bool = False,
) -> tuple[dict[str, torch.Tensor], dict]:
    """D-Pruner's score of every decoder-layer Linear weight: how much the regularised domain loss (step 2)

        L(W') = L_domain(W') + lambda * sum_m c G_m (W'_m - W_m)^2

    rises when W_m alone is set to zero, in the empirical-Fisher approximation of step 3 on the N ``domain_texts``:

        S_m = 1/2 F_m W_m^2 + lambda c G_m W_m^2,    F_m = 1/N sum_n (dL_n/dW_m)^2

    with L_n the mean next-token loss of domain sequence n and G the general importance (`general_importance`, step
    1, on ``general_texts``). The regulariser is quadratic, so its term is exact; its gradient 2 lambda c G (W' - W)
    is zero at W' = W, which is where the weights are scored. (The authors' README describes stepping the weights
    on the domain data with LOMO; here nothing is updated: pruning stays one-shot and needs no optimizer.) The
    first-order term -g_m W_m of a Taylor expansion is left out, as Optimal Brain Damage does: the mean gradient g of a
    pretrained model is sampling noise of size sqrt(F/N), and being first order in W it outweighed the second-order
    terms by ~1e5 on SmolLM2-135M, which made the score |g W| and the pruned model worse than magnitude pruning.

    G is a squared activation error and the loss is in nats, so each Linear's G is put in the loss's units by
    c = sum_m 1/2 F_m W_m^2 / sum_m G_m W_m^2 over its weights: lambda = 1 gives generality as much weight as the
    domain (only the paper's abstract could be read here, so its own lambda and scale are not checked against
    this; the rescaling keeps lambda portable across layers and models).

    Memory: the model, one sequence's gradients of the decoder Linear weights, one float32 buffer per weight (the
    Fisher term, then the regulariser added) and one layer's G at a time. Returns ({"<layer index>.<module name>":
    S}, details).
    """
    weights = {f"{i}.{name}": linear.weight for i, layer in enumerate(decoder_layers(model))
               for name, linear in _linears(layer)}
    domain_ids = [x for x in _tokenize(tokenizer, domain_texts, max_length, _device(model), "domain_texts")
                  if x.shape[1] > 1]
    if not domain_ids:
        raise ValueError("domain_texts tokenised to no sequence of 2 or more tokens; pass longer domain texts.")
    scores = {key: torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
              for key, weight in weights.items()}
    curvature = dict.fromkeys(weights, 0.0)  # sum_m 1/2 F_m W_m^2 per Linear
    was_training = model.training
    flags = {param: param.requires_grad for param in model.parameters()}
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    for weight in weights.values():
        weight.requires_grad_(True)
    try:
        for input_ids in tqdm(domain_ids, desc="D-Pruner domain importance", unit="seq", disable=not show_progress):
            model(input_ids=input_ids, labels=input_ids, use_cache=False).loss.backward()
            with torch.no_grad():
                for key, weight in weights.items():
                    term = weight.grad.float().mul_(weight.float()).pow_(2)  # (g W)^2
                    scores[key].add_(term, alpha=0.5 / len(domain_ids))
                    curvature[key] += 0.5 * float(term.sum()) / len(domain_ids)
                    weight.grad = None
    finally:
        for param, flag in flags.items():
            param.requires_grad_(flag)
        model.train(was_training)

    def add_regularizer(key: str, general: torch.Tensor) -> None:
        penalty = general.mul_(weights[key].detach().float().pow(2))  # G W^2
        total = float(penalty.sum())
        scale = regularization_weight * curvature[key] / total if total > 0 else 0.0
        scores[key].add_(penalty, alpha=scale)

    _, tokens = general_importance(model, tokenizer, general_texts, max_length, show_progress, use=add_regularizer)
    details = {
        "calibration_tokens": tokens,
        "domain_sequences": len(domain_ids),
        "domain_tokens": sum(int(x.numel()) for x in domain_ids),
        "regularization_weight": regularization_weight,
    }
    return scores, details


def _text_config(model: nn.Module):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _check_gated_mlps(model: nn.Module, layers: nn.ModuleList) -> None:
    size = getattr(_text_config(model), "intermediate_size", None)
    for index, layer in enumerate(layers):
        mlp = getattr(layer, "mlp", None)
        parts = [getattr(mlp, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
        if not all(isinstance(p, nn.Linear) for p in parts):
            raise ValueError(
                f"structured_mlp needs a gated MLP with nn.Linear mlp.gate_proj/up_proj/down_proj in every decoder "
                f"layer (Llama, Mistral, Qwen2/3-style); layer {index} has {type(mlp).__name__}."
            )
        if not isinstance(size, int) or parts[0].out_features != size:
            raise ValueError(
                f"structured_mlp needs a uniform config.intermediate_size; layer {index} has "
                f"{parts[0].out_features}, config says {size!r}."
            )


def _select(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping the output rows (dim=0) or input columns (dim=1) listed in ``index``."""
    weight = linear.weight.detach().index_select(dim, index)
    bias = linear.bias is not None
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias:
            new.bias.copy_(linear.bias if dim == 1 else linear.bias.index_select(0, index))
    return new


def _shrink_mlp(mlp: nn.Module, score: torch.Tensor, keep: int) -> None:
    index = torch.topk(score, keep).indices.sort().values
    mlp.gate_proj = _select(mlp.gate_proj, index, 0)
    mlp.up_proj = _select(mlp.up_proj, index, 0)
    mlp.down_proj = _select(mlp.down_proj, index, 1)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = keep


def _prune_mlp_channels(model, layers, sparsity, tokenizer, texts, max_length) -> dict:
    config = _text_config(model)
    before = config.intermediate_size
    keep = max(1, before - round(before * sparsity))

    def down_norm(mlp) -> torch.Tensor:
        return mlp.down_proj.weight.detach().float().norm(dim=0)

    tokens = 0
    if texts:

        def prune_layer(layer: nn.Module, norms: dict) -> None:
            _shrink_mlp(layer.mlp, down_norm(layer.mlp) * norms["mlp.down_proj"], keep)

        tokens = _prune_sequentially(model, tokenizer, texts, max_length, prune_layer)
    else:
        for layer in layers:
            mlp = layer.mlp
            score = mlp.gate_proj.weight.detach().float().norm(dim=1) * mlp.up_proj.weight.detach().float().norm(dim=1)
            _shrink_mlp(mlp, score * down_norm(mlp), keep)
    config.intermediate_size = keep
    return {"intermediate_size_before": before, "intermediate_size_after": keep, "calibration_tokens": tokens}


def _drop_layers(model, layers, sparsity, tokenizer, texts, max_length) -> dict:
    ids = _tokenize(tokenizer, texts, max_length, _device(model))
    similarity = torch.zeros(len(layers), dtype=torch.float64)
    token_count = sum(int(x.numel()) for x in ids)
    inputs: dict[int, torch.Tensor] = {}

    def record_input(index: int):
        def hook(module, args, kwargs):
            inputs[index] = args[0] if args else kwargs["hidden_states"]

        return hook

    def record_output(index: int):
        def hook(module, args, kwargs, output):
            cos = nn.functional.cosine_similarity(inputs.pop(index).float(), _first(output).float(), dim=-1)
            similarity[index] += cos.sum().item()

        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(record_input(i), with_kwargs=True))
        handles.append(layer.register_forward_hook(record_output(i), with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for input_ids in ids:
                model(input_ids=input_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    model.train(was_training)

    influence = 1 - similarity / token_count
    drop = min(len(layers) - 1, round(len(layers) * sparsity))
    dropped = sorted(torch.topk(influence, drop, largest=False).indices.tolist())
    kept = [layer for i, layer in enumerate(layers) if i not in dropped]
    for new_index, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
        layers[new_index] = layer
    del layers[len(kept) :]
    config = _text_config(model)
    config.num_hidden_layers = len(kept)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [t for i, t in enumerate(config.layer_types) if i not in dropped]
    return {
        "dropped_layers": dropped,
        "block_influence": [round(float(v), 6) for v in influence],
        "num_layers_before": len(influence),
        "num_layers_after": len(kept),
        "calibration_tokens": token_count,
    }
