"""IBSI 1 feature families outside the paper's six classes, where pyradiomics has none or differs
(IBSI reference manual chapter 3): neighbouring grey level dependence (NGLDM, 3.11), grey level distance
zone (GLDZM, 3.10), local intensity (3.2), intensity-volume histogram (IVH, 3.5) and the morphology
features that pyradiomics' shape class does not give. GLSZM and the mesh-based shape features come from
pyradiomics (features.py). Checked against the IBSI digital phantom's reference values
(tests/radiomics/test_ibsi.py).

Texture matrices here follow our 2D convention: ``2D`` merges the matrices of every slice (IBSI 2.5D).
Grey levels are the discretised levels 1..N of the ROI (as for GLCM).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, special
from scipy.spatial import ConvexHull

MORAN_MAX_VOXELS = 2000  # Moran's I and Geary's C are O(N^2) in memory: larger ROIs use a seeded random subset of voxels
PEAK_VOLUME_MM3 = 1000.0  # local intensity peaks: mean in a 1 cm^3 sphere


# ------------------------------------------------------------------------------------ shared matrix statistics


def _emphases(matrix: np.ndarray, prefix: str) -> dict[str, float]:
    """The features common to NGLDM and GLDZM of a matrix m[grey level i, count or distance j] (1-based)."""
    total = matrix.sum()
    i = np.arange(1, matrix.shape[0] + 1, dtype=np.float64)[:, None]
    j = np.arange(1, matrix.shape[1] + 1, dtype=np.float64)[None, :]
    p = matrix / total
    mu_i, mu_j = (i * p).sum(), (j * p).sum()
    nonzero = p[p > 0]
    names = {"ngl": ("ld", "hd", "lgce", "hgce", "dc"), "dzm": ("sd", "ld", "lgze", "hgze", "zd")}[prefix]
    low, high, low_grey, high_grey, size = names
    out = {
        f"{low}e": (matrix / j**2).sum() / total, f"{high}e": (matrix * j**2).sum() / total,
        low_grey: (matrix / i**2).sum() / total, high_grey: (matrix * i**2).sum() / total,
        f"{low}lge": (matrix / (i**2 * j**2)).sum() / total, f"{low}hge": (matrix * i**2 / j**2).sum() / total,
        f"{high}lge": (matrix * j**2 / i**2).sum() / total, f"{high}hge": (matrix * i**2 * j**2).sum() / total,
        "glnu": (matrix.sum(1) ** 2).sum() / total, "glnu_norm": (matrix.sum(1) ** 2).sum() / total**2,
        f"{size}nu": (matrix.sum(0) ** 2).sum() / total, f"{size}nu_norm": (matrix.sum(0) ** 2).sum() / total**2,
        "gl_var": (((i - mu_i) ** 2) * p).sum(), f"{size}_var": (((j - mu_j) ** 2) * p).sum(),
        f"{size}_entr": float(-(nonzero * np.log2(nonzero)).sum()),
    }
    return {k: float(v) for k, v in out.items()}


def _slices(levels: np.ndarray, mask: np.ndarray, dimension: str):
    """The whole volume (3D) or each slice as a (1, H, W) volume (2D: matrices merged over slices)."""
    if dimension == "3D":
        yield levels, mask
    else:
        for z in range(levels.shape[0]):
            if mask[z].any():
                yield levels[z:z + 1], mask[z:z + 1]


def _structure(dimension: str, connectivity: int) -> np.ndarray:
    if dimension == "3D":
        return ndimage.generate_binary_structure(3, connectivity)
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, min(connectivity, 2))
    return structure


# ------------------------------------------------------------------------------------ NGLDM


def ngldm_features(levels: np.ndarray, mask: np.ndarray, dimension: str = "3D", alpha: int = 0) -> dict[str, float]:
    """IBSI 3.11: per ROI voxel, the dependence count j = 1 + the neighbours (Chebyshev distance 1, inside the
    ROI) whose grey level differs by at most ``alpha``; features of the matrix s[i, j]."""
    counts: dict[tuple[int, int], int] = {}
    offsets = [o for o in np.argwhere(_structure(dimension, 3)) - 1 if o.any()]
    for block, inside in _slices(levels, mask, dimension):
        padded = np.pad(np.where(inside, block, -10**6), 1, constant_values=-10**6)
        centre = padded[1:-1, 1:-1, 1:-1]
        dependence = np.ones(block.shape, dtype=np.int64)
        for dz, dy, dx in offsets:
            shifted = padded[1 + dz:padded.shape[0] - 1 + dz, 1 + dy:padded.shape[1] - 1 + dy, 1 + dx:padded.shape[2] - 1 + dx]
            dependence += (np.abs(shifted - centre) <= alpha) & (shifted > -10**6)
        for grey, count in zip(block[inside], dependence[inside]):
            counts[(int(grey), int(count))] = counts.get((int(grey), int(count)), 0) + 1
    matrix = _matrix(counts)
    out = _emphases(matrix, "ngl")
    out["dc_perc"] = float(matrix.sum() / mask.sum())
    p = matrix / matrix.sum()
    out["dc_energy"] = float((p**2).sum())
    return out


def _matrix(counts: dict[tuple[int, int], int]) -> np.ndarray:
    rows = max(k[0] for k in counts)
    cols = max(k[1] for k in counts)
    matrix = np.zeros((rows, cols), dtype=np.float64)
    for (i, j), n in counts.items():
        matrix[i - 1, j - 1] += n
    return matrix


# ------------------------------------------------------------------------------------ GLDZM


def edge_distance(morphological_mask: np.ndarray, dimension: str = "3D") -> np.ndarray:
    """Per voxel, the taxicab distance (6- or, per slice, 4-connected steps) to the nearest voxel outside the
    morphological mask; a border voxel is at distance 1 (IBSI 3.10)."""
    if dimension == "3D":
        return ndimage.distance_transform_cdt(np.pad(morphological_mask, 1), metric="taxicab")[1:-1, 1:-1, 1:-1]
    return np.stack([ndimage.distance_transform_cdt(np.pad(plane, 1), metric="taxicab")[1:-1, 1:-1] for plane in morphological_mask])


def gldzm_features(levels: np.ndarray, mask: np.ndarray, distance: np.ndarray, dimension: str = "3D") -> dict[str, float]:
    """IBSI 3.10: zones (26- or 8-connected voxels of one grey level) by their distance to the ROI edge, the
    smallest ``edge_distance`` of their voxels."""
    counts: dict[tuple[int, int], int] = {}
    connectivity = _structure(dimension, 3)
    for (block, inside), (distance_block, _) in zip(_slices(levels, mask, dimension), _slices(distance, mask, dimension)):
        for grey in np.unique(block[inside]):
            zones, n = ndimage.label(inside & (block == grey), structure=connectivity)
            if n:
                nearest = ndimage.minimum(distance_block, zones, index=np.arange(1, n + 1))
                for d in np.atleast_1d(nearest):
                    counts[(int(grey), int(d))] = counts.get((int(grey), int(d)), 0) + 1
    matrix = _matrix(counts)
    out = _emphases(matrix, "dzm")
    out["z_perc"] = float(matrix.sum() / mask.sum())
    return out


# ------------------------------------------------------------------------------------ local intensity


def local_intensity_features(image: np.ndarray, mask: np.ndarray, spacing) -> dict[str, float]:
    """IBSI 3.2: mean intensity in a 1 cm^3 sphere (voxel centres within its radius; the image's own voxels,
    inside or outside the ROI) centred on the ROI's maximum (local peak; the highest when several voxels share
    the maximum) and on every ROI voxel (global peak)."""
    sx, sy, sz = (float(s) for s in spacing)
    radius = (3 * PEAK_VOLUME_MM3 / (4 * np.pi)) ** (1 / 3)
    reach = [int(np.floor(radius / s)) for s in (sz, sy, sx)]
    zz, yy, xx = np.mgrid[-reach[0]:reach[0] + 1, -reach[1]:reach[1] + 1, -reach[2]:reach[2] + 1]
    ball = ((zz * sz) ** 2 + (yy * sy) ** 2 + (xx * sx) ** 2) <= radius**2
    sums = ndimage.convolve(image.astype(np.float64), ball.astype(np.float64), mode="constant", cval=0.0)
    counts = ndimage.convolve(np.ones(image.shape), ball.astype(np.float64), mode="constant", cval=0.0)
    means = sums / counts
    values = image[mask]
    at_maximum = mask & (image == values.max())
    return {"peak_loc": float(means[at_maximum].max()), "peak_glob": float(means[mask].max())}


# ------------------------------------------------------------------------------------ IVH


def intensity_volume_features(values: np.ndarray, bin_width: float | None = None, value_range=None,
                              bin_count: int | None = None) -> dict[str, float]:
    """IBSI 3.5: the fraction V(i) of the ROI with intensity >= i on the histogram's grid; V_x at intensity fraction x,
    I_x the lowest intensity present in at most a fraction x of the volume, their differences and the area under V.
    The grid (IBSI 3.5's three cases): without discretisation the integer intensities from the minimum to the maximum
    (or over ``value_range``, a re-segmentation range); with ``bin_width`` the centres of fixed-size bins numbered from
    the range's (or the minimum's) lower bound; with ``bin_count`` the grey levels 1..N over the ROI's minimum to
    maximum, so that I_x is a grey level."""
    values, low, high, step = _ivh_grid(np.asarray(values, dtype=np.float64), value_range, bin_width, bin_count)
    grid = np.arange(low, high + step / 2, step)
    fraction = np.array([(values >= i).mean() for i in grid])
    span = high - low if high > low else 1.0
    gamma = (grid - low) / span

    def volume_at(x: float) -> float:
        return float((values >= low + x * span - step * 1e-9).mean())

    def intensity_at(x: float) -> float:
        below = grid[fraction <= x]
        return float(below.min()) if below.size else float(high + step)

    v10, v90, i10, i90 = volume_at(0.1), volume_at(0.9), intensity_at(0.1), intensity_at(0.9)
    return {"v10": v10, "v90": v90, "i10": i10, "i90": i90, "diff_v10_v90": v10 - v90, "diff_i10_i90": i10 - i90,
            "auc": float(np.trapezoid(fraction, gamma)) if grid.size > 1 else 0.0}


def _ivh_grid(values: np.ndarray, value_range, bin_width: float | None, bin_count: int | None):
    """(values on the grid, the grid's first and last point, its step) of IBSI 3.5's discretisation."""
    if bin_count is not None:
        low, high = values.min(), values.max()
        levels = np.ones_like(values) if high == low else np.floor(bin_count * (values - low) / (high - low)) + 1
        return np.clip(levels, 1, bin_count), 1.0, float(bin_count), 1.0
    ranged = value_range is not None and value_range[0] is not None
    low = float(value_range[0]) if ranged else float(values.min())
    high = float(value_range[1]) if value_range is not None and value_range[1] is not None else float(values.max())
    if bin_width is None:
        return values, low, high, 1.0
    levels = np.maximum(np.floor((values - low) / bin_width) + 1, 1)
    last = np.ceil((high - low) / bin_width) + 1
    return low + (levels - 0.5) * bin_width, low + 0.5 * bin_width, low + (last - 0.5) * bin_width, float(bin_width)


# ------------------------------------------------------------------------------------ morphology


def morphology_features(image: np.ndarray, mask: np.ndarray, morphological_mask: np.ndarray, spacing,
                        mesh_volume: float, mesh_area: float, seed: int = 0) -> dict[str, float]:
    """IBSI 3.1 features beyond pyradiomics' shape class, from the mesh volume and area pyradiomics computes
    (compactness, spherical disproportion, asphericity), the mesh's vertices (marching cubes: bounding box and
    convex hull densities), the voxels' PCA (enclosing ellipsoid) and intensities (centre of mass shift,
    integrated intensity, Moran's I, Geary's C)."""
    from skimage.measure import marching_cubes

    sx, sy, sz = (float(s) for s in spacing)
    volume, area = float(mesh_volume), float(mesh_area)
    out = {"comp_1": volume / (np.sqrt(np.pi) * area**1.5), "comp_2": 36 * np.pi * volume**2 / area**3,
           "sph_dispr": area / (36 * np.pi * volume**2) ** (1 / 3), "asphericity": (area**3 / (36 * np.pi * volume**2)) ** (1 / 3) - 1}
    vertices, faces, _, _ = marching_cubes(np.pad(morphological_mask.astype(np.float64), 1), level=0.5, spacing=(sz, sy, sx))
    extent = vertices.max(0) - vertices.min(0)
    box_volume = float(np.prod(extent))
    box_area = 2 * float(extent[0] * extent[1] + extent[1] * extent[2] + extent[0] * extent[2])
    out.update({"vol_dens_aabb": volume / box_volume, "area_dens_aabb": area / box_area})
    hull = ConvexHull(vertices)
    out.update({"vol_dens_conv_hull": volume / hull.volume, "area_dens_conv_hull": area / hull.area})
    positions = np.argwhere(morphological_mask) * np.array([sz, sy, sx])
    eigen = np.sort(np.linalg.eigvalsh(np.cov(positions.T)))[::-1]
    a, b, c = (2 * np.sqrt(max(e, 0.0)) for e in eigen)
    # IBSI's axis lengths use the sample covariance (pyradiomics' the population one: 0.7 % shorter on the phantom)
    out.update({"pca_maj_axis": 2 * a, "pca_min_axis": 2 * b, "pca_least_axis": 2 * c, "pca_elongation": b / a,
                "pca_flatness": c / a})
    out["vol_dens_aee"] = volume / (4 * np.pi / 3 * a * b * c)
    out["area_dens_aee"] = area / _ellipsoid_area(a, b, c)
    intensities = image[mask].astype(np.float64)
    grey_centre = (np.argwhere(mask) * np.array([sz, sy, sx]) * intensities[:, None]).sum(0) / intensities.sum()
    out["com"] = float(np.linalg.norm(positions.mean(0) - grey_centre))
    out["integ_int"] = volume * float(intensities.mean())
    out.update(_spatial_autocorrelation(np.argwhere(mask) * np.array([sz, sy, sx]), intensities, seed))
    return {k: float(v) for k, v in out.items()}


def _ellipsoid_area(a: float, b: float, c: float, terms: int = 20) -> float:
    """Surface area of an ellipsoid with semi-axes a >= b >= c (IBSI 3.1.19's series)."""
    alpha, beta = np.sqrt(max(1 - b**2 / a**2, 0.0)), np.sqrt(max(1 - c**2 / a**2, 0.0))
    if alpha * beta == 0:
        return 4 * np.pi * a * b
    argument = (alpha**2 + beta**2) / (2 * alpha * beta)
    series = sum((alpha * beta) ** v / (1 - 4 * v**2) * special.eval_legendre(v, argument) for v in range(terms + 1))
    return float(4 * np.pi * a * b * series)


def _spatial_autocorrelation(positions: np.ndarray, values: np.ndarray, seed: int) -> dict[str, float]:
    """Moran's I and Geary's C with inverse-distance weights over every pair of ROI voxels."""
    if len(values) > MORAN_MAX_VOXELS:
        keep = np.random.default_rng(seed).choice(len(values), MORAN_MAX_VOXELS, replace=False)
        positions, values = positions[keep], values[keep]
    n = len(values)
    distance = np.sqrt(((positions[:, None, :] - positions[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(distance, np.inf)
    weights = 1.0 / distance
    deviation = values - values.mean()
    denominator = (deviation**2).sum()
    if denominator == 0:
        return {"moran_i": float("nan"), "geary_c": float("nan")}
    moran = n / weights.sum() * (weights * np.outer(deviation, deviation)).sum() / denominator
    geary = (n - 1) / (2 * weights.sum()) * (weights * (values[:, None] - values[None, :]) ** 2).sum() / denominator
    return {"moran_i": float(moran), "geary_c": float(geary)}
