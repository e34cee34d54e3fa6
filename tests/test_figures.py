import json
import warnings

import numpy as np
from datasets import Dataset
from matplotlib.image import imread

from paser_hf import PaserConfig, __version__
from paser_hf.reporting.figures import FIGURES, principal_plane, save_figures
from paser_hf.reporting.report import ClusterStats, SelectionReport

TOPICS = ["bake bread", "python function", "sum numbers", "translate french", "write poem", "sort list"]


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
    concepts = [[TOPICS[l % len(TOPICS)], f"item {i % 7}", "following"] for i, l in enumerate(labels)]
    texts = [f"Please {TOPICS[l % len(TOPICS)]} number {i}." for i, l in enumerate(labels)]
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


def assert_readable_png(path, min_width=500, min_height=250):
    image = imread(path)
    height, width = image.shape[:2]
    assert width >= min_width and height >= min_height, (path, image.shape)
    rgb = image[..., :3]
    ink = (rgb < 0.9).any(axis=-1).mean()  # share of pixels that are not (near) white
    assert 0.01 < ink < 0.9, (path, ink)
    assert rgb.std() > 0.05, path


def test_save_writes_json_markdown_and_readable_figures(tmp_path):
    report = synthetic_report()
    paths = report.save(tmp_path)
    assert set(paths) == {"report.json", "report.md", *FIGURES}
    assert json.loads((tmp_path / "report.json").read_text()) == report.to_dict()
    for name in FIGURES:
        assert paths[name] == tmp_path / f"{name}.png"
        assert_readable_png(paths[name])
        assert paths[name].stat().st_size < 300_000


def test_figures_are_deterministic(tmp_path):
    first = save_figures(synthetic_report(), tmp_path / "a")
    second = save_figures(synthetic_report(), tmp_path / "b")
    for name in FIGURES:
        assert first[name].read_bytes() == second[name].read_bytes(), name


def test_markdown_names_each_cluster_with_examples_and_concepts(tmp_path):
    report = synthetic_report()
    report.save(tmp_path)
    text = (tmp_path / "report.md").read_text()
    for name in FIGURES:
        assert f"({name}.png)" in text
    order = [text.index(f"### Cluster {c}") for c in (3, 2, 1, 0)]  # descending CDS
    assert order == sorted(order)
    section = text[text.index("### Cluster 1") : text.index("### Cluster 0")]
    assert "*python function*" in section and "following" not in section  # in every row: not distinctive
    examples = [line for line in section.splitlines() if line[:2] in {f"{i}." for i in range(1, 6)}]
    assert len(examples) == 5 and all("python function" in line for line in examples)
    assert "report.md" not in report.to_dict() and "details" not in report.to_dict()


def test_typical_rows_are_nearest_the_centre():
    report = synthetic_report()
    details = report.details
    members = np.flatnonzero(details.labels == 2)
    centre = details.coordinates[members].mean(axis=0)
    distance = np.linalg.norm(details.coordinates[members] - centre, axis=1)
    assert details.typical(2, 3) == members[np.argsort(distance)[:3]].tolist()


def test_report_from_json_has_no_details_and_draws_what_it_can(tmp_path):
    report = synthetic_report()
    report.save(tmp_path / "full")
    loaded = SelectionReport.load(tmp_path / "full")
    assert loaded == report and loaded.details is None and loaded.to_dict() == report.to_dict()
    paths = loaded.save(tmp_path / "json_only")
    assert set(paths) == {"report.json", "report.md", "cds_allocation", "k_curve", "concept_rejections"}
    assert "Not drawn" in paths["report.md"].read_text()
    assert_readable_png(paths["concept_rejections"])


def test_fixed_k_and_many_clusters_still_render(tmp_path):
    paths = synthetic_report(n=600, k=24, num_clusters=24).save(tmp_path)
    for name in FIGURES:
        assert_readable_png(paths[name])


def test_principal_plane_fixes_the_axes_signs():
    x = np.random.default_rng(1).normal(size=(50, 6)) * [3, 2, 1, 1, 1, 1]
    a, ratio = principal_plane(x)
    b, _ = principal_plane(-x)  # same axes, so the projection flips with the data
    assert np.allclose(a, -b)
    assert 0 < ratio[1] <= ratio[0] < 1


def test_selector_attaches_details_and_saves(tmp_path):
    from test_selector import base_config, make_selector, planted_rows

    selector = make_selector(base_config())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        selector(Dataset.from_list(planted_rows(8)))
    report = selector.report_
    assert report.details is not None and report.details.coordinates.shape[0] == 24
    assert "Compute" in report.details.texts[0]
    assert json.dumps(report.to_dict())
    paths = report.save(tmp_path)
    for name in FIGURES:
        assert_readable_png(paths[name])
