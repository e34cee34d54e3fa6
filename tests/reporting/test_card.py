"""Hub publishing up to the network call: `Dataset.push_to_hub` and `HfApi` methods are mocked.

The real push was not run: the Hub cannot be reached from the machines these tests run on.
"""

from pathlib import Path

import numpy as np
import pytest
import yaml
from datasets import Dataset, load_from_disk
from fixtures import synthetic_report
from huggingface_hub import DatasetCard, HfApi

from paser_hf import PaserConfig, __version__
from paser_hf.paper import PASER_BIBTEX
from paser_hf.reporting.card import dataset_card, push_selection_to_hub, save_selection, size_category
from paser_hf.reporting.figures import FIGURES

DATASETS_README = """---
dataset_info:
  features:
  - name: instruction
    dtype: string
  splits:
  - name: train
    num_bytes: 1234
    num_examples: 48
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
- config_name: scores
  data_files:
  - split: train
    path: scores/train-*
tags:
- existing-tag
---
"""


@pytest.fixture
def bundle():
    report = synthetic_report()
    rows = np.flatnonzero(report.details.status == "selected")
    subset = Dataset.from_dict({"instruction": [report.details.texts[int(i)] for i in rows]})
    return subset, report, report.details.scores


def test_card_says_how_the_subset_was_chosen(bundle):
    _, report, _ = bundle
    card = dataset_card(report, repo_id="me/subset", source_dataset="tatsu-lab/alpaca", source_revision="dce01c9",
                        license="cc-by-nc-4.0", has_scores=True, figures=list(FIGURES))
    text, meta = card.text, card.data.to_dict()
    needles = ("PASER", "arXiv:2502.12594", "org/original-model", "org/pruned-model", "`tatsu-lab/alpaca`",
               "`dce01c9`", f"B = {report.budget} rows", f"K = {report.k}", "elbow",
               f"| Seed | {report.config['seed']} |", f"paser-hf {__version__}", report.cluster_table(),
               'load_dataset("me/subset", "scores"', PASER_BIBTEX)
    for needle in needles:
        assert needle in text, needle
    for name, spec in FIGURES.items():
        assert f"(report/{name}.png)" in text and f"*{spec.title}.* {spec.caption}" in text
    assert "author" not in PASER_BIBTEX.replace("author list", "")
    assert "eprint        = {2502.12594}" in PASER_BIBTEX and "archivePrefix = {arXiv}" in PASER_BIBTEX
    assert meta["license"] == "cc-by-nc-4.0" and meta["source_datasets"] == ["tatsu-lab/alpaca"]
    assert meta["size_categories"] == ["n<1K"] and "paser" in meta["tags"]
    assert meta["paser"]["k"] == report.k and meta["paser"]["source_revision"] == "dce01c9"


def test_card_flags_ablations_and_fixed_k():
    report = synthetic_report(num_clusters=4)
    report.config["use_concept_graph"] = False
    text = dataset_card(report).text
    assert "use_concept_graph switched off" in text and "fixed by the user (num_clusters = 4)" in text
    assert "Source dataset | an instruction dataset, revision not recorded" in text


def test_size_category():
    assert [size_category(n) for n in (5, 1000, 52_002, 2_580_000)] == ["n<1K", "1K<n<10K", "10K<n<100K", "1M<n<10M"]


def test_push_selection_to_hub_calls_and_staged_files(bundle, monkeypatch, tmp_path):
    subset, report, scores = bundle
    pushes, uploads, downloads = [], [], []

    def fake_push(self, repo_id, **kwargs):
        pushes.append((self, repo_id, kwargs))
        return "pushed"

    def fake_download(self, repo_id, filename, **kwargs):
        downloads.append((self.token, repo_id, filename, kwargs))
        path = tmp_path / "README.md"
        path.write_text(DATASETS_README)
        return str(path)

    def fake_upload(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        staged = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        uploads.append((self.token, kwargs, staged))
        return "commit-info"

    monkeypatch.setattr(Dataset, "push_to_hub", fake_push)
    monkeypatch.setattr(HfApi, "hf_hub_download", fake_download)
    monkeypatch.setattr(HfApi, "upload_folder", fake_upload)

    result = push_selection_to_hub(subset, "me/subset", report=report, scores=scores, private=True, token="hf_x",
                                   source_dataset="tatsu-lab/alpaca", source_revision="dce01c9",
                                   pruned_model="org/original-model, 50% magnitude pruning")
    assert result == "commit-info"
    assert [(ds is subset, ds is scores, repo) for ds, repo, _ in pushes] == [(True, False, "me/subset"),
                                                                              (False, True, "me/subset")]
    assert pushes[0][2]["split"] == "train" and pushes[0][2]["private"] is True and pushes[0][2]["token"] == "hf_x"
    assert pushes[0][2].get("config_name", "default") == "default"
    assert pushes[1][2]["config_name"] == "scores" and pushes[1][2]["token"] == "hf_x"
    assert downloads == [("hf_x", "me/subset", "README.md", {"repo_type": "dataset"})]

    (token, kwargs, staged), = uploads
    assert token == "hf_x" and kwargs["repo_id"] == "me/subset" and kwargs["repo_type"] == "dataset"
    assert not Path(kwargs["folder_path"]).exists()  # the staging folder is cleaned up
    expected = {"README.md", "paser_config.yaml", "report/report.json", "report/report.md",
                *(f"report/{name}.png" for name in FIGURES)}
    assert set(staged) == expected
    card = DatasetCard(staged["README.md"].decode())
    meta = card.data.to_dict()
    assert meta["configs"] == yaml.safe_load(DATASETS_README.split("---")[1])["configs"]  # what datasets wrote
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 48
    assert meta["tags"][0] == "existing-tag" and "paser" in meta["tags"]
    assert meta["paser"]["original_model"] == "org/original-model" and "tatsu-lab/alpaca" in card.text
    assert meta["paser"]["pruned_model"] == "org/original-model, 50% magnitude pruning"
    assert "| Pruned model | `org/original-model, 50% magnitude pruning` |" in card.text
    config = yaml.safe_load(staged["paser_config.yaml"])
    assert PaserConfig(**config).to_dict() == report.config


def test_push_without_scores_pushes_one_config(bundle, monkeypatch, tmp_path):
    subset, report, _ = bundle
    pushes, cards = [], []
    monkeypatch.setattr(Dataset, "push_to_hub", lambda self, repo_id, **kw: pushes.append(kw))
    readme = tmp_path / "README.md"
    readme.write_text("---\nconfigs:\n- config_name: default\n  data_files: data/*\n---\n")
    monkeypatch.setattr(HfApi, "hf_hub_download", lambda self, *a, **kw: str(readme))
    monkeypatch.setattr(HfApi, "upload_folder",
                        lambda self, **kw: cards.append((Path(kw["folder_path"]) / "README.md").read_text()))
    push_selection_to_hub(subset, "me/subset", report=report)
    assert len(pushes) == 1 and pushes[0]["private"] is None and pushes[0]["token"] is None
    assert '"scores"' not in cards[0] and "config_name: default" in cards[0]


def test_save_selection_reloads_with_load_from_disk(bundle, tmp_path):
    subset, report, scores = bundle
    folder = save_selection(subset, tmp_path / "bundle", report=report, scores=scores,
                            source_dataset="tatsu-lab/alpaca")
    assert load_from_disk(str(folder)).to_dict() == subset.to_dict()
    assert load_from_disk(str(folder / "scores"))["paser_status"] == scores["paser_status"]
    card = DatasetCard.load(folder / "README.md")
    assert "load_from_disk" in card.text and card.data.to_dict()["paser"]["source_dataset"] == "tatsu-lab/alpaca"
    assert PaserConfig(**yaml.safe_load((folder / "paser_config.yaml").read_text())).to_dict() == report.config
    for name in FIGURES:
        assert (folder / "report" / f"{name}.png").stat().st_size > 10_000


def test_saved_subset_carries_the_teacher_top_k_and_the_card_says_what_it_is(tmp_path):
    report = synthetic_report(details=False)
    report.models["teacher_topk"] = {"model": "org/original-model", "k": 2, "temperature": 1.0,
                                     "template": "the tokenizer's chat template", "max_length": 1024}
    subset = Dataset.from_dict({
        "instruction": ["a", "b"], "teacher_topk_ids": [[3, 4], [5, 6]], "teacher_topk_logprobs": [[-0.1, -3], [-1, -2]],
        "teacher_tail_logmass": [[-4.0], [-0.9]], "teacher_topk_start": [2, 3], "teacher_topk_count": [1, 1],
        "teacher_topk_input_hash": [11, 12],
    })
    folder = save_selection(subset, tmp_path / "with", report=report)
    assert load_from_disk(str(folder))["teacher_topk_ids"] == [[3, 4], [5, 6]]
    card = DatasetCard.load(folder / "README.md")
    assert card.data.to_dict()["paser"]["teacher_topk"]["k"] == 2
    assert "top-2 next-token distribution of `org/original-model` at temperature 1" in card.text
    assert "chat template" in card.text and "1024 tokens" in card.text

    folder = save_selection(subset, tmp_path / "without", report=report, include_teacher_topk=False)
    assert load_from_disk(str(folder)).column_names == ["instruction"]
    assert "teacher_topk" not in DatasetCard.load(folder / "README.md").text
