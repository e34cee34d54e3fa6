import json
import warnings

import numpy as np
from datasets import Dataset
from fixtures import synthetic_report
from matplotlib.image import imread

from paser_hf.reporting.figures import FIGURES, principal_plane, save_figures
from paser_hf.reporting.report import SelectionReport


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
    for name, spec in FIGURES.items():
        assert f"({name}.png)" in text and f"### {spec.title}" in text and spec.caption in text
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
    from fixtures import base_config, make_selector, planted_rows

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
