"""Publishing a PASER subset: a dataset card that says how the subset was chosen, and the bundle (subset,
optional per-row scores, selection config, report) pushed to the Hugging Face Hub or saved to a folder.

Bundle layout, the same on the Hub and on disk: the subset (Hub: config ``default``), the per-row scores of
every input row (Hub: config ``scores``; disk: ``scores/``), ``README.md`` (the card), ``paser_config.yaml``
and ``report/`` (``report.json``, ``report.md``, the PNG figures).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import List, Optional

import yaml
from huggingface_hub import DatasetCard, DatasetCardData, HfApi

from ..paper import PASER_ARXIV, PASER_BIBTEX, PASER_TITLE
from ..selection.schema import TEACHER_COLUMNS, TEACHER_IDS
from .figures import FIGURES

CONFIG_FILE = "paser_config.yaml"
REPORT_DIR = "report"
SCORES_CONFIG = "scores"
CARD_TAGS = ["paser", "data-selection", "pruning", "llm-recovery", f"arxiv:{PASER_ARXIV}"]


def size_category(n: int) -> str:
    """The Hub's size category for `n` rows."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    return next((name for bound, name in bounds if n < bound), "n>1B")


def _k_rule(report) -> str:
    config, clustering = report.config, report.clustering or {}
    if config.get("num_clusters") is not None:
        rule = f"fixed by the user (num_clusters = {config['num_clusters']})"
    elif len(report.k_curve) >= 2:
        ks = sorted(int(k) for k in report.k_curve)
        rule = (f"elbow of the symmetric-NMF error curve over K = {ks[0]}..{ks[-1]} "
                f"(tolerance {config.get('elbow_tolerance')})")
    else:
        rule = "the only value the row count allows"
    dropped = int(clustering.get("empty_clusters", 0) or 0)
    if dropped:
        rule += f"; {dropped} NMF cluster(s) won no row and were dropped"
    return rule


def _budget(report) -> str:
    budget, unit = report.config.get("budget"), report.budget_unit
    share = f" ({budget:g} of the {unit})" if isinstance(budget, float) and budget <= 1 else ""
    text = f"B = {report.budget} {unit}{share}; {report.num_selected} rows selected"
    if report.tokens:
        text += (f", {report.tokens['selected']:,} training tokens ({report.tokens['selected_per_row']:.1f} per row; "
                 f"the source rows average {report.tokens['pool_per_row']:.1f})")
    return text


def _allocation(report) -> str:
    if report.allocation == "size_cds":
        return "`size_cds`: in proportion to cluster size x CDS"
    return "`cds`: in proportion to CDS (paper Eq. 6)"


def _walk(report) -> str:
    weight = "cluster size x mean divergence" if report.allocation == "size_cds" else "mean divergence (CDS)"
    if report.budget_unit == "tokens":
        return (f"The token budget is split across clusters in proportion to their {weight}, and inside a cluster "
                "rows are taken by mean JSD (divergence per training token).")
    return (f"The budget is split across clusters in proportion to their {weight}, and inside a cluster rows are "
            "taken by JSD / log((|x| + |y|)²).")


def card_metadata(report, source_dataset: Optional[str] = None, source_revision: Optional[str] = None,
                  license: Optional[str] = None, pretty_name: Optional[str] = None,
                  original_model: Optional[str] = None, pruned_model: Optional[str] = None) -> dict:
    """The card metadata this package adds (the YAML header), as a dict for `DatasetCardData`. The model
    names default to those in the report."""
    paser = {
        "method": "PASER",
        "arxiv": PASER_ARXIV,
        "paser_hf_version": report.models.get("paser_hf_version"),
        "original_model": original_model or report.models.get("original"),
        "pruned_model": pruned_model or report.models.get("pruned"),
        "source_dataset": source_dataset,
        "source_revision": source_revision,
        "source_rows": report.num_rows,
        "budget": report.budget,
        "budget_unit": report.budget_unit,
        "allocation": report.allocation,
        "num_selected": report.num_selected,
        "k": report.k,
        "seed": report.config.get("seed"),
    }
    metadata = {
        "pretty_name": pretty_name,
        "license": license,
        "task_categories": ["text-generation"],
        "size_categories": [size_category(report.num_selected)],
        "source_datasets": [source_dataset] if source_dataset else None,
        "tags": list(CARD_TAGS),
        "paser": {key: value for key, value in paser.items() if value is not None},
    }
    return {key: value for key, value in metadata.items() if value is not None}


def teacher_topk_text(about: dict) -> str:
    """The card's description of the stored teacher columns; `about` is the report's ``models["teacher_topk"]``."""
    return (
        f"- `teacher_topk_ids`, `teacher_topk_logprobs`, `teacher_tail_logmass`: for offline distillation, the "
        f"top-{about['k']} next-token distribution of `{about['model']}` at temperature {about['temperature']:g} for "
        f"each response token (ids, float16 log-probabilities, and the log of the mass outside the top {about['k']}), "
        f"P x {about['k']} values per row, computed on rows formatted with {about['template']} and truncated to "
        f"{about['max_length']} tokens; `teacher_topk_start`, `teacher_topk_count` and `teacher_topk_input_hash` say "
        "which P tokens they predict and of which token sequence. `RecoveryTrainer` with `kd_alpha > 0` and no "
        "teacher trains on them; tokenise with the same tokenizer, template and max length."
    )


def card_text(report, *, repo_id: Optional[str] = None, source_dataset: Optional[str] = None,
              source_revision: Optional[str] = None, has_scores: bool = False, figures=(),
              pretty_name: Optional[str] = None, original_model: Optional[str] = None,
              pruned_model: Optional[str] = None, has_teacher_topk: bool = False) -> str:
    """The card's markdown body: what the subset is, how it was chosen, per-cluster table, figures, files,
    citation. `repo_id` None writes the local-folder loading instructions; `has_teacher_topk` describes the stored
    teacher columns (`teacher_topk_text`)."""
    config, models, clustering = report.config, report.models, report.clustering or {}
    source = f"`{source_dataset}`" if source_dataset else "an instruction dataset"
    revision = f"`{source_revision}`" if source_revision else "not recorded"
    ablations = [name for name in ("use_clustering", "use_degradation_allocation", "use_concept_graph")
                 if config.get(name) is False]
    lines = [
        f"# {pretty_name or 'PASER recovery subset'}",
        "",
        f"{report.num_selected} of the {report.num_rows} rows of {source}, chosen with **PASER** "
        f"([{PASER_TITLE}](https://arxiv.org/abs/{PASER_ARXIV}), arXiv:{PASER_ARXIV}) to recover the pruned model "
        "below by fine-tuning on few, well-chosen instructions. Made with paser-hf "
        f"{models.get('paser_hf_version')}; every column of the source rows is kept.",
        "",
        "## How the subset was chosen",
        "",
        "| | |",
        "|---|---|",
        f"| Method | PASER (arXiv:{PASER_ARXIV}): S²RIC clustering, CDAIS budget allocation, NTM concept check |",
        f"| Source dataset | {source}, revision {revision} |",
        f"| Source rows | {report.num_rows} (datasets fingerprint `{models.get('dataset_fingerprint')}`) |",
        f"| Original model | `{original_model or models.get('original')}` |",
        f"| Pruned model | `{pruned_model or models.get('pruned')}` |",
        f"| Budget | {_budget(report)} |",
        f"| Allocation | {_allocation(report)} |",
        f"| Clusters | K = {report.k}: {_k_rule(report)} |",
        f"| Diffusion map | {clustering.get('method', '?')} path, d = {clustering.get('diffusion_dim', '?')}, "
        f"t = {clustering.get('t', float('nan')):.4g} ({clustering.get('t_rule', '?')}) |",
        f"| Seed | {config.get('seed')} |",
        f"| Package | paser-hf {models.get('paser_hf_version')} |",
        "",
        "1. **Clustering (S²RIC).** Each instruction is embedded "
        f"(`{config.get('embedding_model') or 'all-MiniLM-L6-v2'}`), mapped to diffusion coordinates of its "
        "similarity graph and clustered by symmetric NMF; a cluster stands for one capability.",
        "2. **Degradation-aware budget (CDAIS).** Both models read every row with teacher forcing; a row's "
        "score is the mean Jensen-Shannon divergence of their next-token distributions over the response "
        f"tokens (temperature {config.get('jsd_temperature')}, max length {config.get('max_length')} tokens). "
        + _walk(report),
        "3. **Negative-transfer check (NTM).** A row is accepted only if its RAKE key phrases agree with the "
        "concept graph of the rows accepted before it; unfilled budget moves on to other clusters.",
        "",
    ]
    if ablations:
        lines += [f"**Ablation:** {', '.join(ablations)} switched off, so this is not the full PASER method.", ""]
    if report.allocation_fallback:
        lines += [f"**Allocation fallback:** {report.allocation_fallback}.", ""]
    lines += [
        "### Clusters, in selection order",
        "",
        "CDS is the mean JSD (bits) in the cluster; `allocated` is its first share of the budget, `selected` what "
        f"it finally gave. Typical instructions and key concepts of each cluster are in "
        f"[`{REPORT_DIR}/report.md`]({REPORT_DIR}/report.md).",
        "",
        report.cluster_table(),
        "",
    ]
    shown = [name for name in FIGURES if name in figures]
    if shown:
        lines += ["### Figures", ""]
        for name in shown:
            spec = FIGURES[name]
            lines += [f"![{spec.title}]({REPORT_DIR}/{name}.png)", "", f"*{spec.title}.* {spec.caption}", ""]
    if report.warnings:
        lines += ["### Warnings from the selection", "", *[f"- {w}" for w in report.warnings], ""]
    if repo_id is None:
        load = 'from datasets import load_from_disk\n\nsubset = load_from_disk("path/to/this/folder")'
        scores_load = 'scores = load_from_disk("path/to/this/folder/scores")'
    else:
        load = f'from datasets import load_dataset\n\nsubset = load_dataset("{repo_id}", split="train")'
        scores_load = f'scores = load_dataset("{repo_id}", "{SCORES_CONFIG}", split="train")'
    lines += ["## Files", "", "```python", load]
    if has_scores:
        lines.append(scores_load)
    lines += [
        "```",
        "",
        "- the subset: the selected rows in their original order, all source columns kept",
    ]
    if has_teacher_topk:
        lines.append(teacher_topk_text(report.models["teacher_topk"]))
    if has_scores:
        lines.append(
            f"- `{SCORES_CONFIG}`: one row per source row: `index`, `paser_cluster`, `paser_jsd`, `paser_ies`, "
            "`paser_concepts` and `paser_status` (selected, rejected_inconsistent, not_reached or skipped_*)"
        )
    lines += [
        f"- `{CONFIG_FILE}`: every setting of the selection; `PaserConfig(**yaml.safe_load(...))` rebuilds it",
        f"- `{REPORT_DIR}/`: `report.json` (the full selection report), `report.md` and the figures",
        "",
        "## Citation",
        "",
        "```bibtex",
        PASER_BIBTEX,
        "```",
        "",
    ]
    return "\n".join(lines)


def dataset_card(report, *, base: Optional[DatasetCardData] = None, repo_id: Optional[str] = None,
                 source_dataset: Optional[str] = None, source_revision: Optional[str] = None,
                 license: Optional[str] = None, pretty_name: Optional[str] = None, has_scores: bool = False,
                 figures=(), original_model: Optional[str] = None, pruned_model: Optional[str] = None,
                 has_teacher_topk: bool = False) -> DatasetCard:
    """The dataset card. `base` is the metadata already in the repository's card (what `push_to_hub`
    wrote: `configs`, `dataset_info`); it is kept, tags are merged and this package's fields added.

    `original_model` / `pruned_model` name the models when the report's names (`config._name_or_path`)
    do not tell them apart, e.g. "HuggingFaceTB/SmolLM2-135M-Instruct, 50% magnitude pruning".
    """
    metadata = base.to_dict() if base is not None else {}
    ours = card_metadata(report, source_dataset, source_revision, license, pretty_name, original_model, pruned_model)
    ours["tags"] = list(dict.fromkeys([*(metadata.get("tags") or []), *ours["tags"]]))
    if has_teacher_topk:
        ours["paser"]["teacher_topk"] = dict(report.models["teacher_topk"])
    metadata.update(ours)
    body = card_text(report, repo_id=repo_id, source_dataset=source_dataset, source_revision=source_revision,
                     has_scores=has_scores, figures=figures, pretty_name=pretty_name, original_model=original_model,
                     pruned_model=pruned_model, has_teacher_topk=has_teacher_topk)
    return DatasetCard(f"---\n{DatasetCardData(**metadata).to_yaml()}\n---\n\n{body}")


def write_bundle(directory, report, card_factory) -> List[str]:
    """Write `paser_config.yaml`, `report/` and `README.md` (from `card_factory(figure_names)`) into
    `directory`; returns the written paths relative to it."""
    directory = Path(directory)
    header = f"# PaserConfig of this PASER selection (paser-hf {report.models.get('paser_hf_version')})\n"
    (directory / CONFIG_FILE).write_text(header + yaml.safe_dump(report.config, sort_keys=False), encoding="utf-8")
    written = report.save(directory / REPORT_DIR)
    figures = [name for name, path in written.items() if path.suffix == ".png"]
    card_factory(figures).save(directory / "README.md")
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def with_teacher_topk(subset, report, include: bool):
    """(`subset` without the stored teacher columns unless `include`, whether it has them described in `report`)."""
    if not include:
        return subset.remove_columns([c for c in TEACHER_COLUMNS if c in subset.column_names]), False
    present = TEACHER_IDS in subset.column_names
    if present and "teacher_topk" not in report.models:
        raise ValueError("The subset has teacher top-k columns but the report does not say how they were made; "
                         "pass include_teacher_topk=False or the report of the selection that captured them.")
    return subset, present


def save_selection(subset, directory, *, report, scores=None, source_dataset: Optional[str] = None,
                   source_revision: Optional[str] = None, license: Optional[str] = None,
                   pretty_name: Optional[str] = None, original_model: Optional[str] = None,
                   pruned_model: Optional[str] = None, include_teacher_topk: bool = True) -> Path:
    """Save the bundle to `directory`: `load_from_disk(directory)` gives the subset back, and
    `load_from_disk(directory / "scores")` the per-row scores when `scores` (`selector.scores_`) is given. The
    teacher top-k columns of a ``PaserConfig(teacher_topk=k)`` selection are kept (and described in the card)
    unless `include_teacher_topk` is False."""
    subset, has_topk = with_teacher_topk(subset, report, include_teacher_topk)
    directory = Path(directory)
    subset.save_to_disk(str(directory))
    if scores is not None:
        scores.save_to_disk(str(directory / SCORES_CONFIG))
    write_bundle(directory, report, lambda figures: dataset_card(
        report, source_dataset=source_dataset, source_revision=source_revision, license=license,
        pretty_name=pretty_name, has_scores=scores is not None, figures=figures, original_model=original_model,
        pruned_model=pruned_model, has_teacher_topk=has_topk))
    return directory


def push_selection_to_hub(subset, repo_id: str, *, report, scores=None, private: Optional[bool] = None,
                          token: Optional[str] = None, source_dataset: Optional[str] = None,
                          source_revision: Optional[str] = None, license: Optional[str] = None,
                          pretty_name: Optional[str] = None, original_model: Optional[str] = None,
                          pruned_model: Optional[str] = None, include_teacher_topk: bool = True):
    """Push the subset (`Dataset.push_to_hub`, config ``default``, split ``train``), optionally `scores`
    (`selector.scores_`) as config ``scores``, then one commit with the card, the config YAML and the report.
    The teacher top-k columns are pushed (and described) unless `include_teacher_topk` is False.

    The card keeps the metadata `push_to_hub` wrote (read back from the repository's README); the other
    keywords are those of `dataset_card`. Returns the `CommitInfo` of the last commit.
    """
    subset, has_topk = with_teacher_topk(subset, report, include_teacher_topk)
    api = HfApi(token=token)
    summary = f"PASER subset: {report.num_selected} of {report.num_rows} rows, K = {report.k}"
    subset.push_to_hub(repo_id, split="train", private=private, token=token, commit_message=summary)
    if scores is not None:
        scores.push_to_hub(repo_id, config_name=SCORES_CONFIG, split="train", private=private, token=token,
                           commit_message="PASER per-row scores")
    readme = api.hf_hub_download(repo_id, "README.md", repo_type="dataset")
    base = DatasetCard.load(readme).data
    with tempfile.TemporaryDirectory(prefix="paser-hub-") as staging:
        write_bundle(staging, report, lambda figures: dataset_card(
            report, base=base, repo_id=repo_id, source_dataset=source_dataset, source_revision=source_revision,
            license=license, pretty_name=pretty_name, has_scores=scores is not None, figures=figures,
            original_model=original_model, pruned_model=pruned_model, has_teacher_topk=has_topk))
        return api.upload_folder(repo_id=repo_id, folder_path=staging, repo_type="dataset",
                                 commit_message=f"{summary}: dataset card, selection config and report")
