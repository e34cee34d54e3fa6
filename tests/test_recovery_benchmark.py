"""The statistics of benchmarks/recovery.py: token-weighted means per capability, damage recovered, and paired
bootstrap intervals, against hand computations."""

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("recovery_benchmark", BENCHMARKS / "recovery.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


CAPS = ["general", "general", "math", "code"]


def entry(nll, kl, tokens, **extra):
    return {"rows": {"report": {"nll": nll, "kl": kl, "tokens": tokens}}, **extra}


def test_capability_means_weigh_rows_by_their_response_tokens(bench):
    means = bench.split_means(entry([3.0, 10.0, 4.0, 1.0], [0.3, 1.0, 0.2, 0.1], [1, 4, 2, 1]), CAPS, "report")
    assert means["general"] == pytest.approx((13.0 / 5, 1.3 / 5))
    assert means["math"] == pytest.approx((2.0, 0.1))
    assert means["code"] == pytest.approx((1.0, 0.1))


def test_capability_means_follow_a_resample_with_repeats(bench):
    e = entry([3.0, 10.0, 4.0, 1.0], [0.3, 1.0, 0.2, 0.1], [1, 4, 2, 1])
    means = bench.split_means(e, CAPS, "report", np.array([0, 0, 2, 3]))
    assert means["general"] == pytest.approx((3.0, 0.3))


def test_token_shares_count_each_selected_rows_tokens_under_its_capability(bench):
    encoded = [{"ids": [5, 6, 7], "capability": "general"}, {"ids": [5], "capability": "math"},
               {"ids": [5, 6, 7, 8], "capability": "code"}]
    shares = bench.token_shares([0, 2], encoded)
    assert shares == pytest.approx({"general": 300 / 7, "math": 0.0, "code": 400 / 7})


def test_damage_recovered_is_the_share_of_the_gap_closed(bench):
    original = {"general": (2.0, 0.0), "math": (1.0, 0.0), "code": (1.0, 0.0)}
    pruned = {"general": (4.0, 0.8), "math": (3.0, 0.5), "code": (2.0, 1.0)}
    method = {"general": (3.0, 0.2), "math": (3.0, 0.5), "code": (1.5, 0.25)}
    out = bench.damage_recovered(method, pruned, original)
    assert out["general_nll"] == pytest.approx(0.5) and out["general_kl"] == pytest.approx(0.75)
    assert out["math_nll"] == pytest.approx(0.0) and out["code_kl"] == pytest.approx(0.75)
    assert out["nll"] == pytest.approx((0.5 + 0.0 + 0.5) / 3)


def paired_results(random_nlls, paser_nlls, paser_tokens=100):
    """Original NLL 1, pruned 3 on every row; per seed, random and PASER runs with the given NLL on every row."""
    tokens = [1, 1, 1, 1]
    runs = {
        "original": entry([1.0] * 4, [0.0] * 4, tokens, pruning="none", method="original"),
        "s/no_recovery": entry([3.0] * 4, [1.0] * 4, tokens, pruning="s", method="no_recovery"),
    }
    for seed, (random_nll, paser_nll) in enumerate(zip(random_nlls, paser_nlls)):
        for method, nll, count in (("random_tokens", random_nll, 100), ("paser_tokens", paser_nll, paser_tokens)):
            runs[f"s/{method}/seed{seed}"] = entry([nll] * 4, [0.5] * 4, tokens, pruning="s", method=method,
                                                   unit="tokens", seed=seed, train_tokens=count,
                                                   train_seconds=count / 10)
    return {"runs": runs, "pruning": {"s": {}}, "capabilities": {"report": CAPS}}


def test_paired_difference_and_its_interval_match_a_hand_computation(bench):
    results = paired_results([2.0, 2.2], [1.5, 1.9], paser_tokens=110)
    levels, differences = bench.method_intervals(results, "report", draws=200)
    (diff,) = differences
    # seed 0: (3-1.5)/2 - (3-2)/2 = 25 points; seed 1: (3-1.9)/2 - (3-2.2)/2 = 15 points; the mean is 20
    assert diff["nll"][0] == pytest.approx(20.0)
    # identical rows: only the seed pairs vary, so the interval spans exactly the two seeds' values
    assert diff["nll"][1] == pytest.approx(15.0) and diff["nll"][2] == pytest.approx(25.0)
    assert diff["kl"] == (0.0, 0.0, 0.0)
    assert diff["tokens_ratio"] == pytest.approx(1.1)
    paser = next(level for level in levels if level["method"] == "paser_tokens")
    assert paser["nll"][0] == pytest.approx(100 * (0.75 + 0.55) / 2)


def test_adding_runs_of_one_method_leaves_the_other_intervals_as_they_were(bench):
    before = paired_results([2.0, 2.0, 2.0], [1.5, 1.9, 1.7])
    after = paired_results([2.0, 2.0, 2.0], [1.5, 1.9, 1.7])
    extra = {f"s/longest/seed{seed}": entry([nll] * 4, [0.5] * 4, [1, 1, 1, 1], pruning="s", method="longest",
                                            unit="tokens", seed=seed, train_tokens=100, train_seconds=10.0)
             for seed, nll in enumerate([2.5, 1.0, 1.8])}
    after["runs"] = {**extra, **after["runs"]}
    first, second = (bench.method_intervals(r, "report", draws=200)[1] for r in (before, after))
    assert [d["method"] for d in second] == ["longest", "paser_tokens"]
    assert second[1] == first[0]


def test_method_levels_count_the_runs_trained_in_float32(bench):
    results = paired_results([2.0, 2.2], [1.5, 1.9])
    results["runs"]["s/paser_tokens/seed1"]["train_bf16"] = False
    results["runs"]["s/random_tokens/seed0"]["train_bf16"] = True
    levels, _ = bench.method_intervals(results, "report", draws=20)
    assert {level["method"]: level["float32_train_runs"] for level in levels} == {"random_tokens": 0,
                                                                                   "paser_tokens": 1}


def test_power_splits_seed_and_row_variance_and_projects_the_half_width(bench):
    results = paired_results([2.0, 2.0, 2.0], [1.5, 1.9, 1.7])
    (row,) = bench.power(results, "report", draws=50)
    # differences 25, 5, 15 points: sample variance 100; identical rows give no row variance
    assert row["differences"] == [25.0, 5.0, 15.0]
    assert row["var_seeds"] == pytest.approx(100.0) and row["var_rows"] == pytest.approx(0.0)
    assert row["half_width"]["3 seeds, 1 rows"] == pytest.approx(round(1.96 * (100 / 3) ** 0.5, 2))


def test_table_names_the_runs_evaluated_or_trained_without_bf16(bench):
    def rows(nll):
        return dict(nll=[nll] * 4, kl=[nll - 1.0] * 4, tokens=[1] * 4)

    results = {"capabilities": {"report": CAPS}, "runs": {
        "original": entry(**rows(1.0), pruning="none", method="original", eval_dtype="bfloat16"),
        "structured/no_recovery": entry(**rows(3.0), pruning="structured", method="no_recovery",
                                        eval_dtype="float32"),
        "structured/random_tokens/seed0": entry(**rows(2.0), pruning="structured", method="random_tokens",
                                                eval_dtype="bfloat16", train_bf16=True),
        "structured/random_tokens/seed1": entry(**rows(2.5), pruning="structured", method="random_tokens",
                                                eval_dtype="float32", train_bf16=False),
    }}
    shares = {"pool": {"general": 50.0, "math": 25.0, "code": 25.0}}
    text = bench.table(results, "report", [], shares)
    assert ("Runs evaluated (and PASER-scored) in float32 rather than bfloat16: structured/no_recovery, "
            "structured/random_tokens/seed1.") in text
    assert "Runs trained in float32 rather than under bf16 autocast: structured/random_tokens/seed1." in text
    bf16_only = {**results, "runs": {k: v for k, v in results["runs"].items() if v["eval_dtype"] == "bfloat16"}}
    assert "float32" not in bench.table(bf16_only, "report", [], shares)


def planned(bench, **given):
    args = {"pilot": False, "prunings": ["structured"], "methods": None, "seeds": None, **given}
    return bench.planned_runs(argparse.Namespace(**args))


def test_the_grid_runs_each_method_for_its_own_seed_count(bench):
    runs = planned(bench)
    paser = [r for r in runs if r[1] == "paser_tokens"]
    assert paser == [("structured", "paser_tokens", "tokens", s) for s in range(5)]
    assert [r[3] for r in runs if r[1] == "paser_no_degradation"] == [0]
    assert runs[:2] == [("structured", "random_tokens", "tokens", 0), ("structured", "paser_tokens", "tokens", 0)]


def test_seeds_sets_the_count_of_a_one_seed_method_and_of_a_five_seed_one(bench):
    runs = planned(bench, prunings=["wanda_2_4"], methods=["paser_no_degradation", "random_tokens"], seeds=3)
    assert sorted((r[1], r[3]) for r in runs) == [(m, s) for m in ("paser_no_degradation", "random_tokens")
                                                   for s in range(3)]
    assert {r[0] for r in runs} == {"wanda_2_4"}
