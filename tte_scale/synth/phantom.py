"""Chest-CT phantom in HU rendered on any axis-aligned grid (pure numpy, vectorized).

Legend: vol_IJK the float32 canvas in NIfTI order; xyz a list of three RAS coordinate arrays
(mm) broadcastable to a sub-block of it. Anatomy is defined in the patient frame (RAS minus
the patient's position); each structure is painted only inside its bounding box, so the cost is
about (voxels of the grid) + (voxels of the structures).

Each latent factor changes large-scale statistics that survive resampling to ~5 mm:
emphysema darkens the lungs (and adds bullae), cardiomegaly scales the heart, effusion fills
the dependent (posterior) lung with fluid, pa_enlargement widens the pulmonary arteries, clot
replaces contrast in them with 40 HU filling defects and adds peripheral infarcts, calcification
adds bright plaques on the aorta and coronaries, nodules adds soft-tissue spheres in the lungs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tte_scale.synth.geometry import Geometry, voxel_axes
from tte_scale.synth.model import FACTORS

__all__ = [
    "Patient",
    "Canvas",
    "sample_patient",
    "render_phantom",
    "render_sphere",
    "lung_frames",
    "blob_center",
    "HU_MIN",
    "HU_MAX",
]

HU_MIN, HU_MAX = -1024, 3071
AIR, FAT, SOFT, FLUID, BONE = -1000.0, -100.0, 45.0, 15.0, 650.0


@dataclass(frozen=True, slots=True)
class Patient:
    """Body habitus, position and contrast timing of one scan."""

    origin: np.ndarray
    """RAS mm of the patient frame's origin (carina level, midline) in scanner coordinates."""
    scale: float
    """In-plane body size factor (1 = average adult)."""
    fat_mm: float
    """Subcutaneous fat thickness (mm)."""
    pa_hu: float
    """Contrast in the right heart and pulmonary arteries (CT pulmonary angiography)."""
    aorta_hu: float
    """Contrast in the left heart and aorta."""
    age_z: float
    """Standardized age (aorta widens with age)."""


def sample_patient(rng: np.random.Generator, scale: float, fat_mm: float, age_z: float) -> Patient:
    """Per-scan position and contrast around the subject's fixed habitus."""
    origin = np.array([rng.normal(0, 12), rng.normal(-10, 12), rng.normal(20, 20)])
    return Patient(
        origin=origin,
        scale=scale,
        fat_mm=fat_mm,
        pa_hu=float(rng.normal(330, 50)),
        aorta_hu=float(rng.normal(230, 40)),
        age_z=age_z,
    )


class Canvas:
    """A float32 volume painted structure by structure inside bounding boxes."""

    def __init__(self, geom: Geometry, fill: float, origin: np.ndarray | None = None) -> None:
        self.vol_IJK = np.full(geom.shape, fill, np.float32)
        self.axes = voxel_axes(geom)
        self.origin = np.zeros(3) if origin is None else np.asarray(origin, float)

    def block(self, lo, hi):
        """Slices of the voxels whose patient-frame coordinates lie in [lo, hi], and their xyz."""
        sl, xyz = [], [None, None, None]
        for a, (p, w) in enumerate(self.axes):
            idx = np.nonzero((w - self.origin[p] >= lo[p]) & (w - self.origin[p] <= hi[p]))[0]
            if idx.size == 0:
                return None, None
            sl.append(slice(int(idx[0]), int(idx[-1]) + 1))
            shape = [1, 1, 1]
            shape[a] = idx.size
            xyz[p] = (w[sl[-1]] - self.origin[p]).reshape(shape)
        return tuple(sl), xyz

    def paint(self, lo, hi, inside: Callable, value, where: Callable | None = None) -> None:
        """Set voxels with ``inside(xyz)`` (and ``where(current)``) to ``value`` (scalar or f(xyz))."""
        sl, xyz = self.block(np.asarray(lo, float), np.asarray(hi, float))
        if sl is None:
            return
        sub = self.vol_IJK[sl]
        m = np.broadcast_to(inside(xyz), sub.shape)
        if where is not None:
            m = m & where(sub)
        if not m.any():
            return
        v = value(xyz) if callable(value) else value
        sub[m] = np.broadcast_to(v, sub.shape)[m] if np.ndim(v) else v


def ellipsoid(c, r):
    c, r = np.asarray(c, float), np.asarray(r, float)
    return c - r, c + r, lambda xyz: sum(((xyz[i] - c[i]) / r[i]) ** 2 for i in range(3)) <= 1.0


def capsule(p0, p1, r):
    """Points within r of the segment p0-p1."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    dd = float(d @ d) or 1e-9

    def inside(xyz):
        t = np.clip(sum((xyz[i] - p0[i]) * d[i] for i in range(3)) / dd, 0.0, 1.0)
        return sum((xyz[i] - p0[i] - t * d[i]) ** 2 for i in range(3)) <= r * r

    return np.minimum(p0, p1) - r, np.maximum(p0, p1) + r, inside


def zcyl(cx, cy, a, b, z0, z1):
    """Elliptic cylinder along z."""
    return (
        np.array([cx - a, cy - b, z0]),
        np.array([cx + a, cy + b, z1]),
        lambda xyz: ((xyz[0] - cx) / a) ** 2 + ((xyz[1] - cy) / b) ** 2 <= 1.0,
    )


def render_sphere(
    geom: Geometry, center_ras, radius: float, value: float = 1000.0, background: float = AIR
) -> np.ndarray:
    """A single sphere at a world position: the reference for affine tests. float32 [I, J, K]."""
    cv = Canvas(geom, background)
    cv.paint(*ellipsoid(center_ras, [radius] * 3), value)
    return cv.vol_IJK


def _texture(rng, amp: float) -> Callable:
    """Smooth pseudo-random texture: a sum of random plane waves (resolution independent)."""
    k = rng.normal(size=(4, 3))
    k *= (2 * np.pi / rng.uniform(15, 60, size=(4, 1))) / np.linalg.norm(k, axis=1, keepdims=True)
    ph = rng.uniform(0, 2 * np.pi, 4)
    return lambda xyz: amp / 2 * sum(np.cos(sum(k[n, i] * xyz[i] for i in range(3)) + ph[n]) for n in range(4))


def _cavity(pat: Patient) -> tuple[float, float, float, float, float, float]:
    """Half width / depth of the body, the muscle wall and the thoracic cavity (mm)."""
    s = pat.scale
    bw, bd = 160 * s + pat.fat_mm, 110 * s + 0.8 * pat.fat_mm  # body half width / depth
    mw, md = bw - pat.fat_mm, bd - 0.8 * pat.fat_mm  # muscle
    return bw, bd, mw, md, mw - 16, md - 16  # thoracic cavity (inside the ribs)


def lung_frames(pat: Patient) -> list[tuple[list[float], list[float]]]:
    """(centre, radii) of the right and left lung ellipsoids in the patient frame (mm)."""
    *_, cw, cd = _cavity(pat)
    return [
        ([0.47 * cw, -0.05 * cd, 15], [0.48 * cw, 0.85 * cd, 145]),
        ([-0.50 * cw, -0.05 * cd, 10], [0.44 * cw, 0.85 * cd, 140]),
    ]


def blob_center(pat: Patient, blob) -> np.ndarray:
    """Patient-frame centre (mm) of a sparse.Blob placed in lung-normalized coordinates."""
    c, r = lung_frames(pat)[blob.side]
    return np.asarray(c, float) + np.asarray(r, float) * blob.u


def render_phantom(
    geom: Geometry, pat: Patient, x_F: np.ndarray, rng: np.random.Generator, blobs: tuple = ()
) -> np.ndarray:
    """The chest CT of one scan as int16 HU [I, J, K] (noise, FOV circle and clipping included).

    ``blobs`` (sparse.Blob: the sparse profile's lesion and distractors) are painted into the
    lungs after the other structures and before the noise.
    """
    f = dict(zip(FACTORS, (float(v) for v in x_F)))
    s = pat.scale
    cv = Canvas(geom, AIR, pat.origin)
    big = 1e4
    bw, bd, mw, md, cw, cd = _cavity(pat)
    # Table under the patient (scanner hardware: same in every scan of this geometry).
    cv.paint([-230, -bd - 22, -big], [230, -bd - 14, big], lambda xyz: True, 80.0)
    cv.paint(*zcyl(0, 0, bw, bd, -big, big), FAT)
    cv.paint(*zcyl(0, 0, mw, md, -big, big), SOFT)
    rib_lo, rib_hi, in_rib = zcyl(0, -5, mw - 4, md - 4, -big, 150)
    cv.paint(rib_lo, rib_hi, lambda xyz: in_rib(xyz) & (np.sin(2 * np.pi * xyz[2] / 24.0) > 0.25), BONE)
    cv.paint(*zcyl(0, -5, cw, cd, -big, big), SOFT)
    cv.paint(*ellipsoid([0.3 * cw, 0, -200], [0.9 * cw, 0.8 * cd, 90]), 60.0)  # liver under the diaphragm
    cav_lo, cav_hi, in_cav = zcyl(0, -5, cw, cd, -big, big)

    # Lungs: darker with emphysema, denser posteriorly (gravity), smooth texture.
    lung_hu = -850.0 - 110.0 * f["emphysema"]
    tex = _texture(rng, 40.0)
    lungs = lung_frames(pat)
    for c, r in lungs:
        lo, hi, inside = ellipsoid(c, r)
        cv.paint(
            lo,
            hi,
            lambda xyz, inside=inside: inside(xyz) & in_cav(xyz),
            lambda xyz, c=c, r=r: lung_hu + tex(xyz) - 40.0 * (xyz[1] - c[1]) / r[1],
        )
    is_lung = lambda cur: cur < -500  # noqa: E731
    for _ in range(rng.poisson(14 * f["emphysema"])):
        side = lungs[rng.integers(2)]
        c = np.array(side[0]) + np.array(side[1]) * rng.uniform([-0.6, -0.6, 0.0], [0.6, 0.6, 0.7])
        cv.paint(*ellipsoid(c, [rng.uniform(6, 18)] * 3), -990.0, where=is_lung)
    # Vessels fanning out from the hila (diluted contrast).
    for c, r in lungs:
        hilum = np.array([np.sign(c[0]) * 30 * s, 5.0, 10.0])
        for _ in range(6):
            tip = np.array(c) + np.array(r) * rng.uniform([-0.7, -0.7, -0.7], [0.7, 0.7, 0.7])
            cv.paint(*capsule(hilum, tip, rng.uniform(2.0, 3.5)), 150.0, where=is_lung)
    for _ in range(rng.poisson(12 * f["nodules"]) if f["nodules"] > 0 else rng.poisson(0.3)):
        side = lungs[rng.integers(2)]
        c = np.array(side[0]) + np.array(side[1]) * rng.uniform(-0.6, 0.6, 3)
        cv.paint(*ellipsoid(c, [3.0 + 11.0 * f["nodules"] * rng.uniform(0.4, 1.0)] * 3), 35.0, where=is_lung)
    # Effusion: a dependent (posterior, patient supine) fluid layer in each pleural space.
    if f["effusion"] > 0:
        for c, r in lungs:
            level = c[1] - r[1] + 75.0 * f["effusion"] * rng.uniform(0.6, 1.0)
            lo, hi, inside = ellipsoid(c, r)
            cv.paint(lo, [hi[0], level, hi[2]], lambda xyz, inside=inside: inside(xyz) & in_cav(xyz), FLUID)

    # Heart: pericardial fat, myocardium, blood pools (right = pulmonary contrast).
    hc = np.array([-0.22 * cw, 0.30 * cd, -45.0])
    hr = np.array([0.40 * cw, 0.40 * cd, 58.0]) * (1.0 + 0.45 * f["cardiomegaly"])
    cv.paint(*ellipsoid(hc, hr * 1.12), -80.0)
    cv.paint(*ellipsoid(hc, hr), 55.0)
    lo, hi, inside = ellipsoid(hc, hr * 0.8)
    cv.paint(lo, hi, inside, lambda xyz: np.where(xyz[0] > hc[0], pat.pa_hu, pat.aorta_hu * 0.9))
    for _ in range(rng.poisson(25 * f["calcification"])):
        u = rng.normal(size=3)
        p = hc + hr * u / np.linalg.norm(u)
        cv.paint(*ellipsoid(p, [rng.uniform(1.5, 3.5)] * 3), float(rng.uniform(800, 1200)))

    # Aorta: ascending, arch, descending; calcified plaques on its wall.
    ra = 14.0 * s * (1.0 + 0.08 * pat.age_z)
    asc0, asc1 = np.array([10 * s, 20 * s, -35.0]), np.array([10 * s, 20 * s, 45.0])
    desc0, desc1 = np.array([-22 * s, -45 * s, -220.0]), np.array([-22 * s, -45 * s, 50.0])
    for p0, p1, r in ((asc0, asc1, ra), (asc1, desc1, ra * 0.9), (desc0, desc1, ra * 0.85)):
        cv.paint(*capsule(p0, p1, r), pat.aorta_hu)
    for _ in range(rng.poisson(40 * f["calcification"])):
        p0, p1 = (asc0, asc1) if rng.random() < 0.3 else (desc0, desc1)
        t = rng.uniform(0.1, 1.0)
        ang = rng.uniform(0, 2 * np.pi)
        p = p0 + t * (p1 - p0) + ra * np.array([np.cos(ang), np.sin(ang), 0.0])
        cv.paint(*ellipsoid(p, [rng.uniform(2.0, 4.5)] * 3), float(rng.uniform(800, 1300)))

    # Pulmonary arteries: trunk widened by pa_enlargement; clot = filling defects in the lumen.
    rp = 13.0 * s * (1.0 + 0.7 * f["pa_enlargement"])
    bif = np.array([-8 * s, 12 * s, 12.0])
    vessels = [
        (np.array([-5 * s, 40 * s, -30.0]), bif, rp),
        (bif, np.array([60 * s, 0.0, 8.0]), 0.72 * rp),
        (bif, np.array([-62 * s, -10 * s, 18.0]), 0.72 * rp),
    ]
    for sign, end in ((1, vessels[1][1]), (-1, vessels[2][1])):
        for d in ([15, -10, -60], [25, -25, 10], [10, 10, 45]):
            vessels.append((end, end + np.array([sign * d[0] * s, d[1] * s, d[2]]), 0.45 * rp))
    for p0, p1, r in vessels:
        cv.paint(*capsule(p0, p1, r), pat.pa_hu)
    if f["clot"] > 0:
        in_lumen = lambda cur: cur > 120  # noqa: E731
        # Central clots first (saddle / main arteries), then lobar ones.
        for n in range(2 + rng.poisson(8 * f["clot"])):
            p0, p1, r = vessels[n % 3 if n < 3 else rng.integers(len(vessels))]
            c = p0 + rng.uniform(0.3, 1.0) * (p1 - p0)
            cv.paint(*ellipsoid(c, [r * (1.2 + 1.5 * f["clot"])] * 3), 40.0, where=in_lumen)
        for _ in range(rng.poisson(5 * f["clot"])):
            side = lungs[rng.integers(2)]
            c = np.array(side[0]) + np.array(side[1]) * rng.uniform([-0.8, -0.8, -0.6], [0.8, 0.8, 0.3])
            cv.paint(*ellipsoid(c, [rng.uniform(12, 25)] * 3), float(rng.uniform(-100, 30)), where=is_lung)

    # Spine (vertebral bodies with discs, canal) and sternum.
    yv = -0.72 * bd
    disc = lambda xyz: np.where(np.mod(xyz[2], 27.0) < 6.0, 80.0, 260.0)  # noqa: E731
    cv.paint(*zcyl(0, yv, 19 * s, 17 * s, -big, big), 600.0)
    cv.paint(*zcyl(0, yv, 16 * s, 14 * s, -big, big), disc)
    cv.paint(*zcyl(0, yv - 26 * s, 8 * s, 8 * s, -big, big), 20.0)
    cv.paint([-14 * s, md - 14, -80], [14 * s, md - 2, 60], lambda xyz: True, 400.0)

    for b in blobs:  # lesion / distractors: soft tissue replacing lung (vessels kept)
        cv.paint(*ellipsoid(blob_center(pat, b), b.radii_mm), float(b.hu), where=lambda cur: cur < 100)

    vol = cv.vol_IJK
    vol += np.float32(geom.noise_hu) * rng.standard_normal(size=vol.shape, dtype=np.float32)
    # Outside the reconstruction circle scanners write air (or padding).
    (pi, wi), (pj, wj) = cv.axes[0], cv.axes[1]
    if cv.axes[2][0] != 2:  # the circle is in the axial plane; other grids only come from tests
        return np.clip(np.rint(vol, out=vol), HU_MIN, HU_MAX, out=vol).astype(np.int16)
    ctr = geom.fov_center
    rad = 0.5 * min(geom.shape[0] * geom.spacing[0], geom.shape[1] * geom.spacing[1])
    outside = ((wi - ctr[pi])[:, None] ** 2 + (wj - ctr[pj])[None, :] ** 2) > rad**2
    vol[outside] = HU_MIN
    return np.clip(np.rint(vol, out=vol), HU_MIN, HU_MAX, out=vol).astype(np.int16)
