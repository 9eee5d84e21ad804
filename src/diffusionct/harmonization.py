"""ComBat: feature-level harmonization (Johnson et al. 2007; Fortin et al. 2018), fitted on one table, applied to others.

Image standardization changes the images; ComBat changes the feature table. Per feature f and batch i (a scanner or
kernel), a sample's value is y = alpha_f + x beta_f + gamma_if + delta_if e, with x the covariates to keep (age, ...).
The fit (the same steps as the reference implementation, neuroCombat 0.2.12, which ``tests/test_harmonization.py``
checks to 1e-6):

1. least squares of every feature on the batch one-hots and the covariates; the grand mean alpha is the batch
   coefficients weighted by the batches' sizes, the pooled variance sigma^2 the residuals' mean square;
2. standardized data z = (y - alpha - x beta) / sigma; per batch, gamma_hat its mean and delta_hat its variance;
3. empirical Bayes: gamma ~ N(gamma_bar, tau^2) and delta ~ InvGamma(a, b) over the features of a batch, their
   posteriors iterated to a fixed point (relative change below 1e-4) give gamma* and delta*;
4. harmonized y* = sigma (z - gamma*_i) / sqrt(delta*_i) + alpha + x beta.

With a reference batch (neuroCombat's ``ref_batch``; M-ComBat), alpha is that batch's coefficient and sigma^2 its own
residuals' mean square, and its gamma* = 0, delta* = 1: the other batches are brought onto the reference (e.g. the
standard kernel), whose own values stay as they are. That is the comparison with image standardization, which also
maps to one standard kernel.

Unlike neuroCombat's ``neuroCombatFromTraining`` (marked under development; it replaces each sample's covariate
effect by the training mean), :meth:`ComBat.apply` keeps each new sample's own covariates. The fitted parameters are
stored as JSON (no pickle). A batch not seen in fitting cannot be harmonized: ComBat has no estimate for it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from diffusionct.errors import DiffusionCTError

FORMAT = "diffusionct-combat"
VERSION = 1
CONVERGENCE = 1e-4  # relative change of gamma* and delta* that ends the empirical-Bayes iteration (neuroCombat's)
MAX_ITERATIONS = 10_000


@dataclass
class ComBat:
    """A fitted ComBat: per feature the grand mean, covariate coefficients and pooled SD; per batch gamma* and delta*."""

    features: list[str]
    batches: list[str]
    covariates: list[str]
    grand_mean: list[float]
    covariate_coefficients: list[list[float]]  # covariates x features
    pooled_sd: list[float]
    gamma_star: list[list[float]]  # batches x features
    delta_star: list[list[float]]
    samples_per_batch: list[int]
    reference: str | None = None  # the batch the others are brought onto (None: the pooled mean and variance)

    @classmethod
    def fit(cls, values: np.ndarray, batches: list[str], features: list[str], covariates: np.ndarray | None = None,
            covariate_names: list[str] = (), reference: str | None = None) -> "ComBat":
        """ComBat fitted on ``values`` (samples x features), with each sample's batch and covariates
        (samples x covariates); with ``reference``, onto that batch."""
        y = _checked_values(values, features, "the training table")
        if len(features) < 2:
            raise DiffusionCTError("ComBat pools its batch estimates over the features: give two or more features")
        x = _covariates(covariates, covariate_names, len(y))
        levels, index, counts = np.unique(np.asarray(batches, dtype=str), return_inverse=True, return_counts=True)
        if len(levels) < 2:
            raise DiffusionCTError(f"ComBat needs two or more batches to harmonize, the training table has {len(levels)}")
        lonely = [str(level) for level, count in zip(levels, counts) if count < 2]
        if lonely:
            raise DiffusionCTError(f"batch(es) {', '.join(lonely)} have one sample: ComBat needs two or more per batch "
                                   "to estimate its variance; add samples or leave the batch out")
        onehot = np.eye(len(levels))[index]
        design = np.column_stack([onehot, x])
        if np.linalg.matrix_rank(design) < design.shape[1]:
            raise DiffusionCTError("the covariates are collinear with the batches (e.g. constant within each batch): "
                                   "ComBat cannot tell a covariate's effect from a batch's; drop that covariate")
        if reference is not None and str(reference) not in levels:
            raise DiffusionCTError(f"reference batch {reference} is not in the training table (batches: {', '.join(levels)})")
        ref = None if reference is None else int(np.flatnonzero(levels == str(reference))[0])
        coefficients = np.linalg.solve(design.T @ design, design.T @ y)  # (batches + covariates) x features
        grand_mean = counts / len(y) @ coefficients[:len(levels)] if ref is None else coefficients[ref]
        residual = y - design @ coefficients
        variance = (residual**2).mean(axis=0) if ref is None else (residual[index == ref] ** 2).mean(axis=0)
        constant = [f for f, v in zip(features, variance) if not v > 0]
        if constant:
            raise DiffusionCTError(f"feature(s) {', '.join(constant[:5])} do not vary beyond the batches and covariates "
                                   "(zero pooled variance): ComBat cannot scale them; leave them out")
        beta = coefficients[len(levels):]
        z = (y - grand_mean - x @ beta) / np.sqrt(variance)
        gamma_star, delta_star = _empirical_bayes(z, index, len(levels), ref)  # the reference is left as it is
        return cls(list(features), [str(level) for level in levels], list(covariate_names), grand_mean.tolist(),
                   beta.tolist(), np.sqrt(variance).tolist(), gamma_star.tolist(), delta_star.tolist(), counts.tolist(),
                   None if reference is None else str(reference))

    def apply(self, values: np.ndarray, batches: list[str], covariates: np.ndarray | None = None) -> np.ndarray:
        """Harmonized ``values`` (samples x features, in :attr:`features`' order) of samples of fitted batches."""
        y = _checked_values(values, self.features, "the table to harmonize")
        x = _covariates(covariates, self.covariates, len(y))
        unseen = sorted(set(map(str, batches)) - set(self.batches))
        if unseen:
            raise DiffusionCTError(f"batch(es) {', '.join(unseen)} were not in the table ComBat was fitted on (fitted: "
                                   f"{', '.join(self.batches)}); refit with samples of them")
        index = np.array([self.batches.index(str(b)) for b in batches])
        beta = np.asarray(self.covariate_coefficients, dtype=np.float64).reshape(len(self.covariates), len(self.features))
        sd, kept = np.asarray(self.pooled_sd), np.asarray(self.grand_mean) + x @ beta
        z = (y - kept) / sd
        gamma, delta = np.asarray(self.gamma_star)[index], np.asarray(self.delta_star)[index]
        return (z - gamma) / np.sqrt(delta) * sd + kept

    def save(self, path: str | Path) -> None:
        from diffusionct.io.files import write_text_atomic

        write_text_atomic(Path(path), json.dumps({"format": FORMAT, "version": VERSION, **asdict(self)}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "ComBat":
        from diffusionct.io.files import read_json

        path = Path(path)
        data = read_json(path, "ComBat file")
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise DiffusionCTError(f"{path}: not a ComBat file of this version; make one with `diffusionct harmonize fit`")
        try:
            combat = cls(**{k: v for k, v in data.items() if k not in ("format", "version")})
            shapes_ok = (len(combat.grand_mean) == len(combat.pooled_sd) == len(combat.features)
                         and np.shape(combat.gamma_star) == np.shape(combat.delta_star) == (len(combat.batches), len(combat.features))
                         and np.shape(combat.covariate_coefficients) in ((len(combat.covariates), len(combat.features)), (0,)))
            finite = all(math.isfinite(v) for v in np.ravel([combat.grand_mean, combat.pooled_sd]))
        except (TypeError, ValueError):
            shapes_ok = finite = False
        if not (shapes_ok and finite):
            raise DiffusionCTError(f"{path}: damaged ComBat file (its parameters do not fit its features and batches); refit it")
        return combat


def harmonizable_columns(batch_tables: list[np.ndarray], others: list[np.ndarray] = ()) -> list[int]:
    """Columns ComBat can fit and apply: finite in every table and varying within each batch's training table
    (ComBat scales a feature by its spread within the batches; a constant one has none)."""
    stacked = np.vstack([*batch_tables, *others])
    return [j for j in range(stacked.shape[1])
            if np.isfinite(stacked[:, j]).all() and all(np.ptp(t[:, j]) > 0 for t in batch_tables)]


def combat_onto_reference(training: dict[str, dict[str, dict[str, float]]], reference: str,
                          new: dict[str, dict[str, float]], batch: str) -> tuple[dict[str, dict[str, float]], int]:
    """ComBat fitted on feature dicts of the training tumours, by batch (``training[batch][tumour][feature]``), onto the
    ``reference`` batch, applied to ``new`` tumours of ``batch``. Features ComBat cannot fit (constant within a batch,
    missing or not finite somewhere) pass through unchanged; returns the harmonized dicts and how many passed through."""
    batches = sorted(training)
    short = [b for b in batches if len(training[b]) < 2]
    if short:
        raise DiffusionCTError(f"ComBat needs two or more training tumours of each batch; {', '.join(short)} has fewer: "
                               "give a training set with more tumours")
    names = sorted(set.intersection(*(set(f) for tumours in (*training.values(), new) for f in tumours.values())))
    tables = {b: np.array([[f[n] for n in names] for f in training[b].values()], dtype=np.float64) for b in batches}
    keys = sorted(new)
    test = np.array([[new[k][n] for n in names] for k in keys], dtype=np.float64)
    columns = harmonizable_columns(list(tables.values()), [test])
    chosen = [names[j] for j in columns]
    model = ComBat.fit(np.vstack([tables[b][:, columns] for b in batches]),
                       [b for b in batches for _ in range(len(tables[b]))], chosen, reference=reference)
    harmonized = model.apply(test[:, columns], [batch] * len(keys))
    out = {k: dict(new[k]) for k in keys}
    for i, k in enumerate(keys):
        out[k].update(zip(chosen, harmonized[i].tolist()))
    passed = len(set().union(*(set(f) for f in new.values()))) - len(chosen)
    return out, passed


def _checked_values(values: np.ndarray, features: list[str], what: str) -> np.ndarray:
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != len(features):
        raise DiffusionCTError(f"{what} has {y.shape[-1] if y.ndim == 2 else '?'} feature columns, expected {len(features)}")
    bad = ~np.isfinite(y)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise DiffusionCTError(f"{what}: feature {features[column]} of sample {row + 1} is {y[row, column]} "
                               f"({int(bad.sum())} values not finite); leave those samples or features out")
    return y


def _covariates(covariates: np.ndarray | None, names, samples: int) -> np.ndarray:
    if covariates is None or len(names) == 0:
        return np.zeros((samples, 0))
    x = np.asarray(covariates, dtype=np.float64).reshape(samples, len(names))
    if not np.isfinite(x).all():
        raise DiffusionCTError(f"covariate(s) {', '.join(names)}: a value is missing or not a number")
    return x


def _empirical_bayes(z: np.ndarray, index: np.ndarray, batches: int, reference: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """gamma* and delta* (batches x features): the posterior of each batch's location and scale, features pooled.
    The reference batch is left as it is (gamma* 0, delta* 1): its z has mean 0 by construction, which the
    iteration's relative change would divide by."""
    gamma_star, delta_star = [], []
    for i in range(batches):
        if i == reference:
            gamma_star.append(np.zeros(z.shape[1]))
            delta_star.append(np.ones(z.shape[1]))
            continue
        batch = z[index == i]
        gamma_hat = batch.mean(axis=0)
        delta_hat = batch.var(axis=0, ddof=1)
        delta_hat[delta_hat == 0] = 1.0
        gamma_bar, tau2 = gamma_hat.mean(), gamma_hat.var(ddof=1)
        m, s2 = delta_hat.mean(), delta_hat.var(ddof=1)
        a, b = (2 * s2 + m**2) / s2, (m * s2 + m**3) / s2  # inverse-gamma prior by moments
        n = len(batch)
        gamma, delta = gamma_hat.copy(), delta_hat.copy()
        for _ in range(MAX_ITERATIONS):
            gamma_new = (tau2 * n * gamma_hat + delta * gamma_bar) / (tau2 * n + delta)
            delta_new = (0.5 * ((batch - gamma_new) ** 2).sum(axis=0) + b) / (n / 2.0 + a - 1.0)
            change = max(_relative_change(gamma_new, gamma).max(), _relative_change(delta_new, delta).max())
            gamma, delta = gamma_new, delta_new
            if change <= CONVERGENCE:
                break
        gamma_star.append(gamma)
        delta_star.append(delta)
    return np.array(gamma_star), np.array(delta_star)


def _relative_change(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """neuroCombat's convergence measure |new - old| / old (signed by old, as it is), with no change where a value
    stays what it was: a gamma of exactly 0 (a feature whose batch means agree) would make it 0 / 0, and a NaN
    change would never converge (neuroCombat's own float noise keeps its gammas off 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(new == old, 0.0, np.abs(new - old) / old)


@dataclass
class FeatureTable:
    """A feature CSV: an id column, a batch column, covariate columns and feature columns (``features`` writes one
    row per tumour; add the batch, e.g. the kernel, as a column)."""

    ids: list[str]
    batches: list[str]
    covariates: np.ndarray  # samples x covariates
    features: list[str]
    values: np.ndarray  # samples x features
    id_column: str = "tumour"
    batch_column: str = "batch"

    @classmethod
    def read(cls, path: str | Path, batch_column: str, covariate_columns: list[str] = (),
             features: list[str] | None = None) -> "FeatureTable":
        """The table at ``path``; ``features``: these columns (a fitted ComBat's), else every other column."""
        from diffusionct.io.files import read_csv_rows

        path = Path(path)
        rows = read_csv_rows(path, "feature table")
        if len(rows) < 2:
            raise DiffusionCTError(f"{path}: no rows below the header")
        header, body = rows[0], rows[1:]
        missing = [c for c in [batch_column, *covariate_columns, *(features or [])] if c not in header]
        if missing:
            raise DiffusionCTError(f"{path}: no column(s) {', '.join(missing)}; columns: {', '.join(header[:12])}"
                                   + (" ..." if len(header) > 12 else ""))
        if any(len(r) != len(header) for r in body):
            raise DiffusionCTError(f"{path}: rows of other lengths than the header")
        names = features if features is not None else [c for c in header[1:] if c not in (batch_column, *covariate_columns)]
        return cls([r[0] for r in body], [r[header.index(batch_column)] for r in body],
                   _numbers(path, body, [header.index(c) for c in covariate_columns], covariate_columns),
                   list(names), _numbers(path, body, [header.index(c) for c in names], names), header[0], batch_column)

    def write(self, path: str | Path, values: np.ndarray) -> None:
        """The table with ``values`` in place of its features (id and batch columns first)."""
        from diffusionct.io.files import csv_text, write_text_atomic

        write_text_atomic(Path(path), csv_text([self.id_column, self.batch_column, *self.features],
                                               ([i, b, *(repr(float(v)) for v in row)]
                                                for i, b, row in zip(self.ids, self.batches, values))))


def _numbers(path: Path, rows: list[list[str]], columns: list[int], names: list[str]) -> np.ndarray:
    out = np.empty((len(rows), len(columns)))
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            try:
                out[i, j] = float(row[column]) if row[column].strip() else math.nan
            except ValueError:
                raise DiffusionCTError(f"{path}: column {names[j]}, row {i + 2}: '{row[column]}' is not a number") from None
    return out
