"""A random 3D digital chest phantom, evaluated analytically on any axial plane.

Every structure is an analytic shape in patient millimetres (x to the patient's left, y posterior,
z along the body), so a plane can be rendered at any z and slice thickness is modelled by averaging
planes across the slice (see :mod:`diffusionct.simulate.simulator`). A phantom is fully determined by
its seed.

Materials (HU), typical values from the CT literature (Hounsfield-unit tables in Lev & Gonzalez,
*CT angiography and CT perfusion imaging*, 2002; Kalender, *Computed Tomography*, 3rd ed., 2011;
lung nodule densities after the Fleischner Society glossary, Hansell et al., Radiology 2008):

=====================  =========  ==================================================
material               HU         note
=====================  =========  ==================================================
air                    -1000      outside the body, airway lumen
lung parenchyma        -900..-800 per case; texture at 1.5, 5 and 20 mm and a dependent
                                  (posterior) gradient of 10-50 HU, kept in -950..-700
subcutaneous fat       -100       fat -50..-150
muscle                 50         40..60
mediastinum / soft     35
blood (heart, vessels) 40         unenhanced blood 30..45
trabecular bone        250        cancellous 200..400
cortical bone          1000       700..1900
solid tumour           20..50     per tumour; texture at two scales; large ones may have a
                                  necrotic core 15-30 HU lower
ground-glass opacity   -600       -750..-300, +/- 40 HU texture
=====================  =========  ==================================================

Anatomy varies from case to case: body width 25-35 cm with an AP/lateral ratio of 0.65-0.85 and a
low-order irregular outline, fat and muscle layers, lung size (x0.85-1.12), heart position and
size, vessel trees branching down to ~1 mm diameter and airways down to ~1.5 mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

HU = {
    "air": -1000.0, "lung": -850.0, "fat": -100.0, "muscle": 50.0, "soft": 35.0, "blood": 40.0,
    "trabecular": 250.0, "cortical": 1000.0, "tumour_solid": 35.0, "tumour_ggo": -600.0,
}
TUMOUR_SHAPES = ("round", "lobulated", "spiculated")
TUMOUR_TEXTURES = ("solid", "part-solid", "ground-glass")


class SmoothField:
    """A smooth random 3D field (random Fourier features): zero mean, unit variance, ~``scale_mm`` grain."""

    def __init__(self, rng: np.random.Generator, scale_mm: float, components: int = 24):
        self.k = rng.normal(0.0, 1.0 / scale_mm, size=(components, 3))
        self.phase = rng.uniform(0, 2 * np.pi, size=components)
        self.amp = np.sqrt(2.0 / components)

    def __call__(self, x: np.ndarray, y: np.ndarray, z: float) -> np.ndarray:
        out = np.zeros(np.broadcast_shapes(x.shape, y.shape))
        for (kx, ky, kz), phase in zip(self.k, self.phase):
            out += np.cos(kx * x + ky * y + (kz * z + phase))
        return out * self.amp


@dataclass
class Segment:
    """A capsule: the points within ``radius`` of the segment from ``a`` to ``b`` (mm)."""

    a: np.ndarray
    b: np.ndarray
    radius: float


@dataclass
class Tumour:
    centre: np.ndarray
    radius: float
    shape: str
    texture: str
    lobes: np.ndarray  # (k, 3) unit directions of lobes
    lobe_heights: np.ndarray
    spicules: list[Segment]
    texture_field: SmoothField
    fine_field: SmoothField
    solid_hu: float = HU["tumour_solid"]
    necrosis_hu: float = 0.0  # HU drop of a necrotic core (0: none)

    @property
    def diameter_mm(self) -> float:
        return 2 * self.radius


@dataclass
class ChestPhantom:
    """A random chest; call :meth:`render` for the HU and tumour labels of the plane at ``z``."""

    seed: int
    z_centre: float
    body_axes: tuple[float, float]
    fat_mm: float
    muscle_mm: float
    heart: tuple[float, float, float]  # centre x, y, radius
    vessels: list[Segment]
    airways: list[Segment]
    tumours: list[Tumour]
    lung_fields: list[SmoothField]  # fine, medium and coarse parenchymal texture
    soft_field: SmoothField
    rib_period_mm: float
    rib_phase_mm: float
    outline: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (k, amplitude, phase) of the body outline
    lung_scale: float = 1.0
    lung_hu: float = -850.0
    lung_gradient_hu: float = 30.0  # denser toward the back (dependent lung)

    # ----------------------------------------------------------------------------- geometry
    def _body(self, x, y, z):
        a, b = self.body_axes
        wobble = 1 + 0.04 * np.sin((z - self.z_centre) / 60.0)
        return a * wobble, b * wobble

    @property
    def half_width_mm(self) -> float:
        """The largest lateral half-width of the body over z (for fitting it in a field of view)."""
        return self.body_axes[0] * 1.04 * (1 + np.abs(self.outline[:, 1]).sum())

    def _ellipse(self, x, y, cx, cy, a, b):
        return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 < 1

    def _outline_radius(self, x, y, a, b):
        """Relative radius of the body outline at each point's angle (1: the ellipse)."""
        radius = np.ones(np.broadcast_shapes(np.shape(x), np.shape(y)))
        if self.outline.size:
            angle = np.arctan2(y / b, x / a)
            for k, amplitude, phase in self.outline:
                radius = radius + amplitude * np.cos(k * angle + phase)
        return radius

    @staticmethod
    def _outline(x, y, a, b, radius, depth=0.0):
        """Inside the body outline shrunk by ``depth`` mm: an ellipse whose radius varies with the angle."""
        return ((x / (a * radius - depth)) ** 2 + (y / (b * radius - depth)) ** 2) < 1

    def lung_masks(self, x, y, z):
        a, b = self._body(x, y, z)
        inner_a, inner_b = a - self.fat_mm - self.muscle_mm, b - self.fat_mm - self.muscle_mm
        shrink = 1 - 0.15 * np.tanh(((z - self.z_centre) / 120.0) ** 2)  # lungs taper toward the apex
        la, lb = 0.38 * inner_a * shrink * self.lung_scale, 0.78 * inner_b * shrink * min(self.lung_scale, 1.1)
        left = self._ellipse(x, y, 0.5 * inner_a, -0.05 * inner_b, la, lb)
        right = self._ellipse(x, y, -0.5 * inner_a, -0.05 * inner_b, la, lb)
        hx, hy, hr = self.heart
        heart = self._ellipse(x, y, hx, hy, hr, hr * 0.85)
        return (left | right) & ~heart

    # ----------------------------------------------------------------------------- rendering
    def render(self, x: np.ndarray, y: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
        """HU image and tumour label image (0 = none, k = tumour k) on the plane ``z``.

        ``x`` and ``y`` are 2D coordinate grids in mm (columns to the patient's left, rows posterior).
        """
        a, b = self._body(x, y, z)
        hu = np.full(x.shape, HU["air"])
        radius = self._outline_radius(x, y, a, b)
        hu[self._outline(x, y, a, b, radius)] = HU["fat"]
        hu[self._outline(x, y, a, b, radius, depth=self.fat_mm)] = HU["muscle"]
        cavity_a, cavity_b = a - self.fat_mm - self.muscle_mm, b - self.fat_mm - self.muscle_mm
        cavity = self._outline(x, y, a, b, radius, depth=self.fat_mm + self.muscle_mm)
        hu[cavity] = HU["soft"] + 8 * self.soft_field(x[cavity], y[cavity], z)
        self._render_ribs(hu, x, y, z, cavity_a, cavity_b)
        lungs = self.lung_masks(x, y, z) & cavity
        hu[lungs] = self._parenchyma(x[lungs], y[lungs], z, cavity_b)
        self._render_segments(hu, x, y, z, self.vessels, HU["blood"], within=lungs)
        self._render_airways(hu, x, y, z, lungs)
        hx, hy, hr = self.heart
        fat_pad = self._ellipse(x, y, hx, hy, hr + 3, (hr + 3) * 0.85)
        hu[fat_pad] = HU["fat"]
        hu[self._ellipse(x, y, hx, hy, hr, hr * 0.85)] = HU["blood"]
        self._render_spine(hu, x, y, cavity_b)
        labels = np.zeros(x.shape, dtype=np.uint8)
        for index, tumour in enumerate(self.tumours, start=1):
            self._render_tumour(hu, labels, index, tumour, x, y, z, lungs)
        return hu, labels

    def _parenchyma(self, x, y, z, cavity_b):
        fine, medium, coarse = (field(x, y, z) for field in self.lung_fields)
        dependent = self.lung_gradient_hu * np.clip(y / cavity_b, -1, 1)
        return np.clip(self.lung_hu + 20 * fine + 25 * medium + 15 * coarse + dependent, -950, -700)

    def _render_ribs(self, hu, x, y, z, cavity_a, cavity_b):
        # oblique ribs cut the plane as small ovals around the chest wall; they drift with z
        drift = 2 * np.pi * (z - self.rib_phase_mm) / (self.rib_period_mm * 14)
        for k in range(14):
            angle = drift + 2 * np.pi * k / 14
            if abs(np.sin(angle)) > 0.97:  # no ribs at the sternum and the spine
                continue
            cx, cy = 0.965 * cavity_a * np.cos(angle), 0.965 * cavity_b * np.sin(angle)
            win = _window(x, y, (cx - 9, cx + 9), (cy - 9, cy + 9))
            if win is None:
                continue
            # the oval's long axis follows the chest wall
            u = (x[win] - cx) * -np.sin(angle) + (y[win] - cy) * np.cos(angle)
            v = (x[win] - cx) * np.cos(angle) + (y[win] - cy) * np.sin(angle)
            r = (u / 7.0) ** 2 + (v / 4.5) ** 2
            region = hu[win]
            region[r < 1] = HU["cortical"]
            region[r < 0.45] = HU["trabecular"]

    def _render_spine(self, hu, x, y, cavity_b):
        cy = cavity_b * 0.78
        body = (x**2 + (y - cy) ** 2) < 17**2
        inner = (x**2 + (y - cy) ** 2) < 15**2
        hu[body] = HU["cortical"]
        hu[inner] = HU["trabecular"]
        canal_y = cy + 27
        arch = (x**2 + (y - canal_y) ** 2) < 12**2
        canal = (x**2 + (y - canal_y) ** 2) < 8**2
        hu[arch] = HU["cortical"] * 0.7
        hu[canal] = HU["soft"] - 15

    def _render_segments(self, hu, x, y, z, segments, value, within=None, inside_value=None, wall=0.0):
        for seg in segments:
            lo, hi = min(seg.a[2], seg.b[2]) - seg.radius - wall, max(seg.a[2], seg.b[2]) + seg.radius + wall
            if not lo <= z <= hi:
                continue
            reach = seg.radius + wall
            win = _window(x, y, (min(seg.a[0], seg.b[0]) - reach, max(seg.a[0], seg.b[0]) + reach),
                          (min(seg.a[1], seg.b[1]) - reach, max(seg.a[1], seg.b[1]) + reach))
            if win is None:
                continue
            dist = _distance_to_segment(x[win], y[win], z, seg)
            outer = dist < reach
            if within is not None:
                outer &= within[win]
            region = hu[win]
            region[outer] = value
            if inside_value is not None:
                region[(dist < seg.radius) & outer] = inside_value

    def _render_airways(self, hu, x, y, z, lungs):
        # trachea and main bronchi (outside the lungs, in the mediastinum) plus the intrapulmonary tree
        self._render_segments(hu, x, y, z, self.airways[:3], HU["soft"], inside_value=HU["air"], wall=2.0)
        self._render_segments(hu, x, y, z, self.airways[3:], HU["soft"], within=lungs, inside_value=HU["air"], wall=1.0)

    def _render_tumour(self, hu, labels, index, tumour, x, y, z, lungs):
        dz = z - tumour.centre[2]
        reach = tumour.radius * 1.6 + max((s.radius + np.linalg.norm(s.b - s.a) for s in tumour.spicules), default=0)
        if abs(dz) > reach:
            return
        cx, cy = tumour.centre[0], tumour.centre[1]
        win = _window(x, y, (cx - reach, cx + reach), (cy - reach, cy + reach))
        if win is None:
            return
        hu, labels, x, y = hu[win], labels[win], x[win], y[win]
        dx, dy = x - cx, y - cy
        dist = np.sqrt(dx**2 + dy**2 + dz**2) + 1e-9
        radius = np.full(x.shape, tumour.radius)
        if tumour.lobes.size:
            cos = (dx[..., None] * tumour.lobes[:, 0] + dy[..., None] * tumour.lobes[:, 1] + dz * tumour.lobes[:, 2]) / dist[..., None]
            radius = tumour.radius * (1 + (tumour.lobe_heights * np.exp((cos - 1) / 0.08)).sum(-1))
        inside = dist < radius
        for spicule in tumour.spicules:
            inside |= _distance_to_segment(x, y, z, spicule) < spicule.radius
        if not inside.any():
            return
        texture = tumour.texture_field(x[inside], y[inside], z) + 0.5 * tumour.fine_field(x[inside], y[inside], z)
        solid = tumour.solid_hu + 20 * texture
        if tumour.necrosis_hu > 0:
            solid = solid - tumour.necrosis_hu * (dist < 0.45 * radius)[inside]
        if tumour.texture == "solid":
            values = solid
        elif tumour.texture == "ground-glass":
            values = HU["tumour_ggo"] + 40 * texture
        else:  # part-solid: a solid core inside a ground-glass halo
            core = (dist < 0.5 * radius)[inside]
            values = np.where(core, solid, HU["tumour_ggo"] + 40 * texture)
        hu[inside] = values
        labels[inside] = index


def _window(x: np.ndarray, y: np.ndarray, x_range, y_range) -> tuple[slice, slice] | None:
    """Index window of a regular grid (``x`` varies along columns, ``y`` along rows) covering a box."""
    xs, ys = x[0], y[:, 0]
    c0, c1 = np.searchsorted(xs, x_range[0]), np.searchsorted(xs, x_range[1], side="right")
    r0, r1 = np.searchsorted(ys, y_range[0]), np.searchsorted(ys, y_range[1], side="right")
    if c1 <= c0 or r1 <= r0:
        return None
    return slice(r0, r1), slice(c0, c1)


def _distance_to_segment(x, y, z, seg: Segment) -> np.ndarray:
    ab = seg.b - seg.a
    length2 = float(ab @ ab) or 1e-9
    px, py, pz = x - seg.a[0], y - seg.a[1], z - seg.a[2]
    t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / length2, 0.0, 1.0)
    return np.sqrt((px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (pz - t * ab[2]) ** 2)


def _random_direction(rng, bias=None, spread=0.6):
    d = rng.normal(size=3)
    if bias is not None:
        d = bias / np.linalg.norm(bias) + spread * d / np.linalg.norm(d)
    return d / np.linalg.norm(d)


def _tree(rng, root, direction, radius, length, generations, min_radius=0.4) -> list[Segment]:
    """A branching tree of capsules: each segment splits in two thinner, shorter children."""
    segments = []
    stack = [(np.asarray(root, float), np.asarray(direction, float), radius, length, 0)]
    while stack:
        start, d, r, length_mm, gen = stack.pop()
        end = start + d * length_mm
        segments.append(Segment(start, end, r))
        if gen + 1 >= generations or r * 0.72 < min_radius:
            continue
        for _ in range(2):
            stack.append((end, _random_direction(rng, d, 0.7), r * 0.72, length_mm * rng.uniform(0.65, 0.85), gen + 1))
    return segments


def random_phantom(seed: int, z_centre: float = 0.0, n_tumours: int | None = None) -> ChestPhantom:
    """A random chest with 1-3 lung tumours near the plane ``z_centre`` (mm)."""
    rng = np.random.default_rng([seed, 7919])
    a = rng.uniform(125, 175)
    b = a * rng.uniform(0.65, 0.85)
    fat, muscle = rng.uniform(6, 30), rng.uniform(7, 15)
    inner_a, inner_b = a - fat - muscle, b - fat - muscle
    heart = (rng.uniform(-0.05, 0.15) * inner_a, rng.uniform(-0.35, -0.1) * inner_b, rng.uniform(38, 52))
    vessels: list[Segment] = []
    for side in (-1, 1):
        hilum = np.array([side * 0.3 * inner_a, -0.05 * inner_b, z_centre + rng.uniform(-10, 10)])
        for _ in range(4):
            direction = _random_direction(rng, np.array([side * 1.0, rng.uniform(-1, 1), rng.uniform(-0.8, 0.8)]), 0.5)
            vessels += _tree(rng, hilum, direction, rng.uniform(3.5, 5.5), rng.uniform(22, 32), 8, min_radius=0.5)
    trachea_top = np.array([0.0, -0.25 * inner_b, z_centre + 150])
    carina = np.array([0.0, -0.2 * inner_b, z_centre + 25])
    airways = [Segment(trachea_top, carina, 8.0)]
    for side in (-1, 1):
        main_end = carina + np.array([side * 0.28 * inner_a, 0.05 * inner_b, -20])
        airways.append(Segment(carina, main_end, 5.5))
    for side, main in zip((-1, 1), airways[1:3]):
        airways += _tree(rng, main.b, _random_direction(rng, np.array([side, 0.2, -0.5]), 0.4), 3.5, 20, 6, 0.75)
    phantom = ChestPhantom(
        seed=seed, z_centre=z_centre, body_axes=(a, b), fat_mm=fat, muscle_mm=muscle, heart=heart,
        vessels=vessels, airways=airways, tumours=[],
        lung_fields=[SmoothField(rng, 1.5), SmoothField(rng, 5.0), SmoothField(rng, 20.0)],
        soft_field=SmoothField(rng, 10.0), rib_period_mm=rng.uniform(22, 28), rib_phase_mm=rng.uniform(0, 25),
        outline=np.stack([np.arange(2, 5), rng.normal(0, 0.025, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1),
        lung_scale=rng.uniform(0.85, 1.12), lung_hu=rng.uniform(-900, -800), lung_gradient_hu=rng.uniform(10, 50),
    )
    count = int(rng.integers(1, 4)) if n_tumours is None else n_tumours
    phantom.tumours = [_random_tumour(rng, phantom, z_centre) for _ in range(count)]
    return phantom


def _random_tumour(rng, phantom: ChestPhantom, z_centre: float) -> Tumour:
    radius = float(np.exp(rng.uniform(np.log(2.5), np.log(20.0))))  # diameters 5-40 mm, small ones common
    shape = str(rng.choice(TUMOUR_SHAPES))
    texture = str(rng.choice(TUMOUR_TEXTURES))
    # a centre well inside a lung: sample in-plane points and keep one with lung all around it
    centre = None
    for _ in range(200):
        cx, cy = rng.uniform(-phantom.body_axes[0], phantom.body_axes[0]), rng.uniform(-phantom.body_axes[1], phantom.body_axes[1])
        cz = z_centre + rng.uniform(-0.3, 0.3) * radius
        ring = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        xs = np.r_[cx, cx + 0.8 * radius * np.cos(ring)]
        ys = np.r_[cy, cy + 0.8 * radius * np.sin(ring)]
        if phantom.lung_masks(xs, ys, cz).all():
            centre = np.array([cx, cy, cz])
            break
    if centre is None:  # tiny lungs: fall back to the centre of the left lung
        inner_a = phantom.body_axes[0] - phantom.fat_mm - phantom.muscle_mm
        centre, radius = np.array([0.5 * inner_a, 0.0, z_centre]), min(radius, 8.0)
    lobes = np.zeros((0, 3))
    heights = np.zeros(0)
    if shape in ("lobulated", "spiculated"):
        k = int(rng.integers(3, 7))
        lobes = np.stack([_random_direction(rng) for _ in range(k)])
        heights = rng.uniform(0.15, 0.35, size=k)
    spicules = []
    if shape == "spiculated":
        for _ in range(int(rng.integers(6, 14))):
            d = _random_direction(rng)
            start = centre + d * radius * 0.8
            spicules.append(Segment(start, start + d * radius * rng.uniform(0.4, 0.9), rng.uniform(0.5, 1.0)))
    necrosis = rng.uniform(15, 30) if radius > 12 and texture != "ground-glass" and rng.random() < 0.4 else 0.0
    return Tumour(centre, radius, shape, texture, lobes, heights, spicules, SmoothField(rng, rng.uniform(2.0, 4.0)),
                  SmoothField(rng, rng.uniform(0.8, 1.5)), solid_hu=rng.uniform(20, 50), necrosis_hu=necrosis)
