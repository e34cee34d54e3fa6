import json
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict
from fixtures import tiny_llama, tiny_tokenizer
from torch import nn

from paser_hf import (
    BaselineReport,
    ClusterBalancedSelector,
    IfdSelector,
    LongestSelector,
    PaserConfig,
    RandomSelector,
    __version__,
)
from paser_hf.formatting import make_row_formatter, tokenize_prompt_completion
from paser_hf.selection.baselines import IfdScorer
from paser_hf.selection.scoring import pack_by_tokens


def make_rows(n):
    """Alpaca rows of varied lengths, without digits (so a digit can mark a row)."""
    words = ["alpha", "brisk", "cedar", "dune", "ember", "fjord", "grove", "haze", "iris", "jade", "kelp", "lumen"]
    return [
        {
            "instruction": f"Repeat the word {words[i % 12]}" + " again" * (i % 4),
            "input": "",
            "output": f"{words[i % 12]} " * (1 + i % 5),
            "id": i,
        }
        for i in range(n)
    ]


def config(**overrides):
    values = dict(budget=0.25, show_progress=False, seed=0)
    values.update(overrides)
    return PaserConfig(**values)


# ---------------------------------------------------------------------------------------------- random


def test_random_is_seeded_and_keeps_rows_in_order():
    data = Dataset.from_list(make_rows(40))
    selector = RandomSelector(config(seed=1))
    subset = selector(data)
    again = RandomSelector(config(seed=1))
    again.select(data)
    other = RandomSelector(config(seed=2))
    other(data)
    idx = selector.selected_indices_
    assert len(subset) == 10 and list(idx) == sorted(set(idx.tolist()))
    assert np.array_equal(idx, again.selected_indices_)
    assert not np.array_equal(idx, other.selected_indices_)
    assert subset.column_names == data.column_names and subset["id"] == idx.tolist()

    scores = selector.scores_
    assert scores.column_names == ["index", "random_key", "status"]
    keys = np.array(scores["random_key"])
    assert scores["index"] == list(range(40))
    assert np.array_equal(keys, np.random.default_rng(1).random(40))
    assert keys[idx].max() < np.delete(keys, idx).min()
    assert [s == "selected" for s in scores["status"]] == np.isin(np.arange(40), idx).tolist()
    assert set(scores["status"]) == {"selected", "not_selected"}

    report = selector.report_.to_dict()
    assert report["method"] == "random" and report["models"] == {"paser_hf_version": __version__}
    assert report["warnings"] == [] and report["budget_unit"] == "rows" and report["tokens"] == {}
    assert (report["num_rows"], report["budget"], report["num_selected"]) == (40, 10, 10)
    assert report["config"] == selector.config.to_dict() and set(report["timings"]) == {"selection"}


@pytest.mark.parametrize("budget, rows", [(0.25, 10), (0.3, 12), (0.001, 1), (1.0, 40), (7, 7), (7.0, 7), (40, 40)])
def test_random_budget_semantics(budget, rows):
    subset = RandomSelector(config(budget=budget))(Dataset.from_list(make_rows(40)))
    assert len(subset) == rows


def test_random_budget_above_rows():
    with pytest.raises(ValueError, match="only 40"):
        RandomSelector(config(budget=41))(Dataset.from_list(make_rows(40)))


def test_report_save(tmp_path):
    selector = RandomSelector(config())
    selector(Dataset.from_list(make_rows(8)))
    path = selector.report_.save(tmp_path / "out")
    assert path == tmp_path / "out" / "report.json"
    assert json.loads(path.read_text()) == selector.report_.to_dict()
    assert isinstance(selector.report_, BaselineReport)


# ---------------------------------------------------------------------------------------------- IFD


def reference_losses(model, tok, rows, chat, max_length=1024):
    """Slow reference, one row at a time: full logits and F.cross_entropy over the response tokens, with and
    without the instruction (response alone after BOS; without BOS from the second response token on)."""
    formatter = make_row_formatter("alpaca", chat)
    bos = tok.bos_token_id
    prefix = [] if bos is None else [bos]
    out = []
    for row in rows:
        pc = formatter(row)
        tokens = tokenize_prompt_completion(pc["prompt"], pc["completion"], tok, max_length)
        ids, start = tokens["input_ids"], tokens["response_start"]
        first = 0 if bos is not None and start >= 1 else 1
        response = ids[start:]
        target = torch.tensor(response[first:])
        alone = prefix + response
        with torch.no_grad():
            z_full = model(torch.tensor([ids])).logits[0]
            z_alone = model(torch.tensor([alone])).logits[0]
        conditioned = F.cross_entropy(z_full[start + first - 1 : len(ids) - 1], target).item()
        unconditioned = F.cross_entropy(z_alone[len(prefix) + first - 1 : len(alone) - 1], target).item()
        out.append((len(ids), conditioned, unconditioned))
    return np.array(out)


@pytest.mark.parametrize("chat, bos", [(True, True), (False, False)])
def test_ifd_matches_slow_reference(chat, bos):
    rows = make_rows(12)
    tok = tiny_tokenizer(chat_template=chat)
    if not bos:
        tok.bos_token = None
        assert tok.bos_token_id is None
    model = tiny_llama(seed=3).train()
    selector = IfdSelector(model, tok, config(budget=4, scoring_tokens_per_batch=150, jsd_chunk_tokens=7),
                           max_ifd=None)
    selector(Dataset.from_list(rows))
    assert model.training  # the training flag is restored

    ref = reference_losses(model.eval(), tok, rows, chat)
    groups = pack_by_tokens(sorted(ref[:, 0].astype(int).tolist(), reverse=True), 150)
    assert len(groups) > 2 and any(len(g) > 1 for g in groups)  # several padded batches
    assert len(set(ref[:, 0])) > 4  # of mixed lengths
    scores = selector.scores_
    np.testing.assert_allclose(scores["loss_conditioned"], ref[:, 1], rtol=1e-4)
    np.testing.assert_allclose(scores["loss_response"], ref[:, 2], rtol=1e-4)
    np.testing.assert_allclose(scores["ifd"], ref[:, 1] / ref[:, 2], rtol=1e-4)
    ifd = np.array(scores["ifd"])
    assert sorted(selector.selected_indices_) == sorted(np.argsort(-ifd)[:4])

    report = selector.report_.to_dict()
    json.dumps(report)
    assert report["method"] == "ifd" and report["models"]["scoring"]
    assert report["details"]["bos_prefix"] is bos and report["details"]["num_scored"] == 12
    assert report["details"]["scored_tokens"] == int(ref[:, 0].sum())
    assert set(report["timings"]) == {"prepare", "scoring", "selection"}


IFD = [0.5, 1.2, 0.9, 1.0, 0.7, np.nan, 1.05, 0.95]  # row 5 has an empty response


@pytest.fixture
def injected(monkeypatch):
    """IfdSelector with losses L(y | x) = IFD, L(y) = 1 injected in place of the model's."""

    def fake_losses(self, batch):
        rows = batch["paser_index"]
        return {"loss_conditioned": [IFD[i] for i in rows], "loss_response": [1.0] * len(rows)}

    monkeypatch.setattr(IfdScorer, "__call__", fake_losses)
    rows = make_rows(8)
    rows[5]["output"] = "  "
    return Dataset.from_list(rows)


@pytest.mark.parametrize(
    "budget, max_ifd, expected, above_used",
    [
        (3, 1.0, [2, 4, 7], 0),  # below 1 by descending IFD: 7, 2, 4, 0
        (4, 1.0, [0, 2, 4, 7], 0),
        (6, 1.0, [0, 2, 3, 4, 6, 7], 2),  # then at/above 1, nearest first: 3, 6, 1
        (3, None, [1, 3, 6], 0),  # no threshold: 1.2, 1.05, 1.0
        (2, 0.8, [0, 4], 0),
        (3, 0.8, [0, 2, 4], 1),
    ],
)
def test_ifd_ranking_and_threshold(injected, budget, max_ifd, expected, above_used):
    selector = IfdSelector(tiny_llama(), tiny_tokenizer(), config(budget=budget), max_ifd=max_ifd)
    if above_used:
        with pytest.warns(UserWarning, match=f"{above_used} of the {budget} selected rows have IFD >= max_ifd"):
            subset = selector(injected)
    else:
        subset = selector(injected)
    assert selector.selected_indices_.tolist() == expected == subset["id"]
    status = selector.scores_["status"]
    assert [i for i, s in enumerate(status) if s == "selected"] == expected
    assert status[5] == "skipped_empty_response"
    details = selector.report_.details
    assert details["num_at_or_above_max_ifd_selected"] == above_used
    assert details["num_at_or_above_max_ifd"] == (0 if max_ifd is None else int(np.sum(np.array(IFD) >= max_ifd)))
    assert details["num_skipped_empty_response"] == 1 and details["num_scored"] == 7


def test_ifd_never_selects_empty_or_cut_away_responses():
    rows = make_rows(4)
    rows[1]["instruction"] = "Repeat " + "very " * 30 + "slowly."
    rows[2]["output"] = ""
    selector = IfdSelector(tiny_llama(), tiny_tokenizer(), config(budget=1.0, max_length=80))
    with pytest.warns(UserWarning) as caught:
        subset = selector(Dataset.from_list(rows))
    messages = [str(w.message) for w in caught]
    assert any("fewer than the budget of 4" in m for m in messages)
    assert any("truncated" in m for m in messages)
    assert subset["id"] == [0, 3]
    status = selector.scores_["status"]
    assert status[1] == "skipped_truncated_response" and status[2] == "skipped_empty_response"
    assert np.isnan(selector.scores_["ifd"][1]) and np.isnan(selector.scores_["ifd"][2])
    details = selector.report_.details
    assert details["num_skipped_truncated_response"] == 1 and details["num_skipped_empty_response"] == 1
    assert details["num_truncated"] == 1 and selector.report_.num_selected == 2


class NanOnToken(nn.Module):
    """A model whose logits are NaN on every sequence containing one token id."""

    def __init__(self, model, token_id):
        super().__init__()
        self.inner = model
        self.config = model.config
        self.token_id = token_id

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        logits = self.inner(input_ids=input_ids, attention_mask=attention_mask).logits
        bad = (input_ids == self.token_id).any(dim=1)
        return types.SimpleNamespace(logits=logits.masked_fill(bad[:, None, None], float("nan")))


def test_ifd_nan_logits_name_the_row():
    tok = tiny_tokenizer()
    rows = make_rows(5)
    rows[3]["output"] = "seven 7"
    model = NanOnToken(tiny_llama(), tok.convert_tokens_to_ids("7"))
    with pytest.raises(FloatingPointError, match="row 3"):
        IfdSelector(model, tok, config())(Dataset.from_list(rows))


@pytest.mark.parametrize(
    "make", [lambda: RandomSelector(config()), lambda: IfdSelector(tiny_llama(), tiny_tokenizer())]
)
@pytest.mark.parametrize(
    "data, error, message",
    [
        (DatasetDict({"train": Dataset.from_list(make_rows(2))}), TypeError, r"selector\(dataset\['train'\]\)"),
        (make_rows(2), TypeError, r"Dataset\.from_list"),
        (Dataset.from_list([]), ValueError, "empty"),
    ],
)
def test_bad_datasets(make, data, error, message):
    with pytest.raises(error, match=message):
        make()(data)


@pytest.mark.parametrize("model, tok", [(None, tiny_tokenizer()), (tiny_llama(), None)])
def test_ifd_needs_model_and_tokenizer(model, tok):
    with pytest.raises(ValueError, match=r"IfdSelector\(model, tokenizer, config\)"):
        IfdSelector(model, tok)(Dataset.from_list(make_rows(2)))


def test_ifd_bad_settings():
    with pytest.raises(ValueError, match="max_ifd"):
        IfdSelector(tiny_llama(), tiny_tokenizer(), max_ifd=0)
    with pytest.raises(ValueError, match="Cannot tell the dataset format"):
        IfdSelector(tiny_llama(), tiny_tokenizer(), config())(Dataset.from_list([{"text": "a"}]))
    with pytest.raises(ValueError, match="no chat template"):
        IfdSelector(tiny_llama(), tiny_tokenizer(chat_template=False), config(use_chat_template=True))(
            Dataset.from_list(make_rows(2))
        )


# ---------------------------------------------------------------------------------------------- budgets in tokens
def prepared_rows(data, cfg):
    from paser_hf.selection.prepare import PreparedRows, prepare_dataset

    return PreparedRows.of(prepare_dataset(data, tiny_tokenizer(), cfg, "alpaca", True))


def test_random_token_budget_takes_rows_by_key_within_one_row():
    data = Dataset.from_list(make_rows(40))
    cfg = config(budget=0.3, budget_unit="tokens", seed=3)
    lengths = prepared_rows(data, cfg).lengths
    selector = RandomSelector(cfg, tokenizer=tiny_tokenizer())
    selector(data)
    budget = round(0.3 * lengths.sum())
    order = np.argsort(np.random.default_rng(3).random(40), kind="stable")
    taken = np.cumsum(lengths[order])
    expected = np.sort(order[: int(np.searchsorted(taken, budget)) + 1])  # up to the first row reaching B
    assert selector.selected_indices_.tolist() == expected.tolist()
    assert budget <= lengths[expected].sum() < budget + lengths.max()
    report = selector.report_
    assert (report.budget, report.budget_unit, report.tokens["selected"]) == (budget, "tokens", lengths[expected].sum())
    with pytest.raises(ValueError, match="needs the tokenizer"):
        RandomSelector(cfg)(data)


def test_longest_takes_the_longest_responses_first():
    rows = make_rows(12)
    rows[4]["output"] = ""  # never selected, however the budget
    data = Dataset.from_list(rows)
    selector = LongestSelector(tiny_tokenizer(), config(budget=4))
    subset = selector(data)
    response = prepared_rows(data, config()).response_tokens
    # outputs repeat a word 1 + i % 5 times: rows 4 and 9 have 5 words (4 is empty now), then rows 3 and 8 have 4
    order = sorted((i for i in range(12) if i != 4), key=lambda i: (-response[i], i))
    assert order[:4] == [9, 3, 8, 2]
    assert selector.selected_indices_.tolist() == sorted(order[:4]) and subset["id"] == sorted(order[:4])
    assert selector.scores_["response_tokens"] == response.tolist()
    assert selector.report_.method == "longest"

    cfg = config(budget=0.5, budget_unit="tokens")
    lengths = prepared_rows(data, cfg).lengths
    tokens = LongestSelector(tiny_tokenizer(), cfg)
    tokens(data)
    chosen = tokens.selected_indices_
    assert 0.5 * lengths.sum() <= lengths[chosen].sum() < 0.5 * lengths.sum() + lengths.max()
    assert response[chosen].min() >= max(response[i] for i in range(12) if i not in chosen and i != 4)


def test_cluster_balanced_gives_each_cluster_an_equal_share_capped_and_handed_on():
    from fixtures import TopicEmbedder, planted_rows

    rows = planted_rows(12)
    rows = [r for r in rows if r["topic"] != "code"] + [r for r in rows if r["topic"] == "code"][:4]  # 12, 12, 4
    data = Dataset.from_list(rows)
    selector = ClusterBalancedSelector(tiny_tokenizer(), config(budget=18, num_clusters=3), embedder=TopicEmbedder())
    subset = selector(data)
    topics = np.array(data["topic"])
    assert all(len(set(topics[selector.clustering_.labels == c])) == 1 for c in range(3))  # one cluster per topic
    # equal shares 6, 6, 6; the code cluster holds 4, so its other 2 rows go to the two others: 7, 7, 4
    counts = {t: subset["topic"].count(t) for t in ("math", "cook", "code")}
    assert counts == {"math": 7, "cook": 7, "code": 4}
    assert sorted(selector.report_.details["allocated"]) == [4, 7, 7]
    again = ClusterBalancedSelector(tiny_tokenizer(), config(budget=18, num_clusters=3), embedder=TopicEmbedder())
    again(data)
    other = ClusterBalancedSelector(tiny_tokenizer(), config(budget=18, num_clusters=3, seed=5),
                                    embedder=TopicEmbedder())
    other(data)
    assert np.array_equal(selector.selected_indices_, again.selected_indices_)
    assert not np.array_equal(selector.selected_indices_, other.selected_indices_)
    keys = np.array(selector.scores_["random_key"])
    labels = np.array(selector.scores_["cluster"])
    for c in range(3):  # inside a cluster, rows go by ascending random key
        members = np.flatnonzero(labels == c)
        chosen = np.intersect1d(members, selector.selected_indices_)
        assert keys[chosen].max() <= keys[np.setdiff1d(members, chosen)].min(initial=1.0)


def test_ifd_token_budget_within_one_row():
    data = Dataset.from_list(make_rows(16))
    cfg = config(budget=0.4, budget_unit="tokens")
    lengths = prepared_rows(data, cfg).lengths
    selector = IfdSelector(tiny_llama(), tiny_tokenizer(), cfg, max_ifd=None)
    selector(data)
    ifd = np.array(selector.scores_["ifd"])
    chosen = selector.selected_indices_
    assert 0.4 * lengths.sum() <= lengths[chosen].sum() < 0.4 * lengths.sum() + lengths.max()
    assert ifd[chosen].min() >= np.delete(ifd, chosen).max()


def test_every_selector_is_exported_and_cites_its_paper():
    import paser_hf

    citations = {"PaserDatasetSelector": "2502.12594", "RandomSelector": "random", "IfdSelector": "Li et al",
                 "LongestSelector": "Zhao et al", "ClusterBalancedSelector": "Ivison et al"}
    selectors = [name for name in paser_hf.__all__ if name.endswith("Selector")]
    assert sorted(selectors) == sorted(citations)
    for name in selectors:
        assert citations[name] in getattr(paser_hf, name).__doc__
