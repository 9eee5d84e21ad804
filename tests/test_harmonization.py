"""ComBat on feature tables: the reference algorithm's numbers, fit on one table and apply to another, clean errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffusionct.cli import main
from diffusionct.errors import DiffusionCTError
from diffusionct.harmonization import ComBat, FeatureTable
from tests.reliability.helpers import assert_clean_error, run_cli

SHIFT = np.array([[0.0, 5.0, -3.0], [2.0, -1.0, 0.5], [10.0, 0.0, -8.0], [0.3, 0.1, 0.0]])  # features x batches
SCALE = np.array([1.0, 1.8, 0.6])


def _study(samples=(10, 12, 8), seed=0):
    """Features = a covariate effect (age) + a batch's shift and scale + noise; ages are integers (exact in float32,
    as neuroCombat stores them)."""
    rng = np.random.default_rng(seed)
    batches = np.repeat(["B30f", "B70f", "FC51"], samples)
    index = np.repeat(np.arange(3), samples)
    age = rng.integers(40, 80, len(index)).astype(float)
    noise = rng.normal(size=(len(index), len(SHIFT))) * SCALE[index, None]
    values = 50.0 + 0.2 * age[:, None] + SHIFT.T[index] + noise * np.array([1.0, 3.0, 10.0, 0.2])
    return values, list(batches), age[:, None]


def test_fit_equals_the_reference_neurocombat():
    neurocombat = pytest.importorskip("neuroCombat")
    pandas = pytest.importorskip("pandas")
    values, batches, age = _study()
    reference = neurocombat.neuroCombat(dat=values.T.copy(), covars=pandas.DataFrame({"batch": batches, "age": age[:, 0]}),
                                        batch_col="batch", continuous_cols=["age"])
    ours = ComBat.fit(values, batches, ["f0", "f1", "f2", "f3"], age, ["age"])
    estimates = reference["estimates"]
    np.testing.assert_allclose(ours.gamma_star, estimates["gamma.star"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.delta_star, estimates["delta.star"], rtol=1e-6)
    np.testing.assert_allclose(np.square(ours.pooled_sd), estimates["var.pooled"][:, 0], rtol=1e-6)
    np.testing.assert_allclose(ours.apply(values, batches, age), reference["data"].T, rtol=1e-6, atol=1e-9)


def test_a_feature_whose_batch_means_agree_converges_as_neurocombat():
    """Features 0 and 1 have equal batch means (gamma exactly 0 in our arithmetic, 1e-17 in neuroCombat's): the
    empirical Bayes iteration must still run to its fixed point (a 0 / 0 change once stopped it after one step)."""
    neurocombat = pytest.importorskip("neuroCombat")
    pandas = pytest.importorskip("pandas")
    values = np.array([[1.0, 1, 6, 0], [3, 5, 8, 2], [2, 3, 7, 1], [0, 2, 0, 6], [4, 4, 2, 8], [2, 3, 1, 7]])
    batches = ["A"] * 3 + ["B"] * 3
    reference = neurocombat.neuroCombat(dat=values.T.copy(), covars=pandas.DataFrame({"batch": batches}), batch_col="batch")
    ours = ComBat.fit(values, batches, ["f0", "f1", "f2", "f3"])
    np.testing.assert_allclose(ours.gamma_star, reference["estimates"]["gamma.star"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.apply(values, batches), reference["data"].T, rtol=1e-6, atol=1e-9)


def test_a_reference_batch_equals_neurocombat_ref_batch(monkeypatch):
    """Onto one batch (the standard kernel): neuroCombat's ref_batch numbers, and that batch's values unchanged."""
    neurocombat = pytest.importorskip("neuroCombat")
    pandas = pytest.importorskip("pandas")
    monkeypatch.setattr(np, "int", int, raising=False)  # neuroCombat 0.2.12's ref_batch path spells np.int (gone in numpy 2)
    values, batches, age = _study()
    reference = neurocombat.neuroCombat(dat=values.T.copy(), covars=pandas.DataFrame({"batch": batches, "age": age[:, 0]}),
                                        batch_col="batch", continuous_cols=["age"], ref_batch="B70f")
    ours = ComBat.fit(values, batches, ["f0", "f1", "f2", "f3"], age, ["age"], reference="B70f")
    estimates = reference["estimates"]
    np.testing.assert_allclose(ours.gamma_star, estimates["gamma.star"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.delta_star, estimates["delta.star"], rtol=1e-6)
    harmonized = ours.apply(values, batches, age)
    np.testing.assert_allclose(harmonized, reference["data"].T, rtol=1e-6, atol=1e-9)
    on_reference = np.array(batches) == "B70f"
    np.testing.assert_allclose(harmonized[on_reference], values[on_reference], rtol=1e-12)
    with pytest.raises(DiffusionCTError, match="reference batch GE:LUNG is not in the training table"):
        ComBat.fit(values, batches, ["f0", "f1", "f2", "f3"], reference="GE:LUNG")


def test_fitted_on_one_table_it_harmonizes_another():
    """New patients of the same batches: the batches' means per feature move together (what ComBat is for), and each
    new sample keeps its own covariate's effect."""
    train_values, train_batches, train_age = _study(samples=(40, 40, 40), seed=1)
    combat = ComBat.fit(train_values, train_batches, ["f0", "f1", "f2", "f3"], train_age, ["age"])
    values, batches, age = _study(samples=(40, 40, 40), seed=2)
    harmonized = combat.apply(values, batches, age)
    groups = [np.asarray(batches) == b for b in ("B30f", "B70f", "FC51")]
    spread_before = np.ptp([values[g].mean(0) for g in groups], axis=0)
    spread_after = np.ptp([harmonized[g].mean(0) for g in groups], axis=0)
    strong = [0, 2]  # the features whose batch shifts stand well above their noise
    assert np.all(spread_after[strong] < 0.35 * spread_before[strong])
    scale_before = np.ptp([values[g].std(0) for g in groups], axis=0)
    scale_after = np.ptp([harmonized[g].std(0) for g in groups], axis=0)
    assert scale_after.sum() < 0.5 * scale_before.sum()  # the batches' scales too
    age_effect = np.asarray(combat.covariate_coefficients)[0] * 10.0  # ten years older, as the fit measured age's effect
    older = combat.apply(values + age_effect, batches, age + 10.0) - harmonized
    np.testing.assert_allclose(older, np.broadcast_to(age_effect, older.shape), rtol=1e-9)  # kept, sample by sample


@pytest.mark.parametrize("case,words", [
    ("unseen batch", "not in the table ComBat was fitted on"),
    ("one-sample batch", "have one sample"),
    ("constant feature", "zero pooled variance"),
    ("missing value", "is nan"),
    ("one batch", "two or more batches"),
])
def test_failure_modes_are_one_clear_error(case, words):
    values, batches, age = _study()
    names = ["f0", "f1", "f2", "f3"]
    with pytest.raises(DiffusionCTError, match=words):
        if case == "unseen batch":
            ComBat.fit(values, batches, names).apply(values[:2], ["B30f", "GE:LUNG"])
        elif case == "one-sample batch":
            ComBat.fit(values[:23], batches[:22] + ["XYZ"], names)
        elif case == "constant feature":
            values[:, 2] = 7.0
            ComBat.fit(values, batches, names)
        elif case == "missing value":
            values[3, 1] = np.nan
            ComBat.fit(values, batches, names)
        else:
            ComBat.fit(values, ["B30f"] * len(values), names)


def test_cli_fit_and_apply_round_trip(tmp_path, capsys):
    values, batches, age = _study()
    table = tmp_path / "train.csv"
    rows = ["tumour,kernel,age,f0,f1,f2,f3"] + [f"t{i},{b},{a:g}," + ",".join(repr(float(v)) for v in row)
                                                for i, (b, a, row) in enumerate(zip(batches, age[:, 0], values))]
    table.write_text("\n".join(rows) + "\n")
    model = tmp_path / "combat.json"
    assert main(["harmonize", "fit", "-i", str(table), "--batch", "kernel", "--covariates", "age", "-o", str(model)]) == 0
    assert json.loads(model.read_text())["format"] == "diffusionct-combat"
    out = tmp_path / "harmonized.csv"
    assert main(["harmonize", "apply", "-i", str(table), "--batch", "kernel", "--model", str(model), "-o", str(out)]) == 0
    read = FeatureTable.read(out, "kernel")
    assert read.ids[0] == "t0" and read.features == ["f0", "f1", "f2", "f3"]
    np.testing.assert_allclose(read.values, ComBat.load(model).apply(values, batches, age), rtol=1e-12)
    code, err = run_cli(["harmonize", "fit", "-i", table, "--batch", "scanner", "-o", tmp_path / "x.json"], capsys)
    assert_clean_error(code, err, "no column(s) scanner")
    model.write_text(json.dumps({**json.loads(model.read_text()), "gamma_star": [[1.0]]}))
    code, err = run_cli(["harmonize", "apply", "-i", table, "--batch", "kernel", "--model", model, "-o", tmp_path / "y.csv"],
                        capsys)
    assert_clean_error(code, err, "damaged ComBat file")
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "y.csv").exists()


def test_feature_dicts_onto_a_reference_kernel_pass_constant_features_through():
    """What `evaluate --combat-train` runs: dicts by batch and tumour, onto the target kernel; a feature ComBat cannot
    scale (constant within a batch) or that is not finite stays as it was, and is counted."""
    from diffusionct.harmonization import combat_onto_reference

    values, batches, _ = _study(samples=(30, 30, 30), seed=3)
    names = ["f0", "f1", "f2", "f3"]

    def dicts(rows):
        return {f"t{i}": {**dict(zip(names, map(float, row))), "shape_volume": 7.0, "odd": float("nan") if i == 0 else 1.0}
                for i, row in enumerate(rows)}

    index = np.asarray(batches)
    training = {b: dicts(values[index == b]) for b in ("B30f", "B70f")}
    new_values, new_batches, _ = _study(samples=(30, 30, 30), seed=4)
    new = dicts(new_values[np.asarray(new_batches) == "B30f"])
    harmonized, passed = combat_onto_reference(training, "B70f", new, "B30f")
    assert passed == 2  # shape_volume (constant) and odd (NaN in a training tumour)
    assert all(harmonized[t]["shape_volume"] == 7.0 for t in new)
    assert np.array_equal([harmonized[t]["odd"] for t in new], [new[t]["odd"] for t in new], equal_nan=True)
    reference = ComBat.fit(np.vstack([values[index == "B30f"], values[index == "B70f"]]), ["B30f"] * 30 + ["B70f"] * 30,
                           names, reference="B70f")
    expected = reference.apply(new_values[np.asarray(new_batches) == "B30f"], ["B30f"] * 30)
    np.testing.assert_allclose([[harmonized[t][n] for n in names] for t in sorted(new)],
                               expected[np.argsort([f"t{i}" for i in range(30)])], rtol=1e-12)
    target_mean = values[index == "B70f"].mean(0)
    moved = np.array([[harmonized[t][n] for n in names] for t in new]).mean(0)
    assert np.abs(moved - target_mean)[[0, 2]].max() < 0.35 * np.abs(new_values[np.asarray(new_batches) == "B30f"].mean(0)
                                                                      - target_mean)[[0, 2]].max()
    with pytest.raises(DiffusionCTError, match="two or more training tumours"):
        combat_onto_reference({"B30f": dict(list(training["B30f"].items())[:1]), "B70f": training["B70f"]}, "B70f", new, "B30f")
