"""Synthetic Happywhale: a deterministic mini-competition of whale and dolphin photos.

Why it exists: the real competition is 60 GB behind a Kaggle login, while every stage of the
pipeline (crops, training, retrieval, new-individual threshold, submission) needs a dataset
with the same layout and the same difficulty *structure* to be tested and demonstrated. The
generator reproduces that structure, not just the file format:

* species differ by body shape, dorsal fin shape and colour pattern, so species is easy;
* individuals of one species differ ONLY by persistent marks (fin notches, scars, pigment
  spots, fin-tip shape, a slight tone), defined in body coordinates so they move with the
  animal, so telling individuals apart needs a model trained on them (an ImageNet model
  mostly sees sea, pose and light, which vary per photo);
* every photo varies pose, scale, submersion, sea, sky, light, spray, blur, noise and JPEG;
* photo counts per individual are heavy-tailed and test holds individuals absent from train.

Everything is a pure function of (seed, individual index, photo index) through
`np.random.default_rng([seed, ...])` sub-streams: the same spec gives byte-identical CSVs
and JPEGs, and the first individuals of a larger spec equal those of a smaller one.

Body coordinates: u runs along the body from 0 (fluke tip) to 1 (snout); v is height in
body lengths (up is positive); n is the height normalised between belly (0) and back (1).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from wildid.data.competition import write_tables
from wildid.io import atomic_path

Point = tuple[float, float]
Colour = tuple[float, float, float]
Box = tuple[int, int, int, int]

RENDER_SCALE = 2  # draw at 2x and downsample: cheap anti-aliasing of edges and marks
PROFILE_SAMPLES = 200  # points along the body contour
FIN_SAMPLES = 120  # points along each fin edge; notches need several points across
MAX_PHOTOS = 30  # cap of the per-individual photo count distribution
PHOTO_EXPONENT = 1.1  # P(n photos) ~ n ** -PHOTO_EXPONENT: many 1-2, a few 20+
NEW_MAX_PHOTOS = 5  # "new" test individuals are rarely photographed, as in Happywhale
NOTCH_GAP = 0.15  # minimum distance between two notches along the trailing edge
_SPECIES_STREAM, _MARKS_STREAM, _PHOTO_STREAM, _TEXTURE_STREAM, _SPLIT_STREAM = range(5)


@dataclass(frozen=True)
class SynthSpec:
    """What to generate. Counts scale linearly with `individuals`."""

    individuals: int = 150  # individuals in the whole dataset (train + new ones)
    size: int = 256  # longer side of each photo, px (photos are 3:2 landscape)
    seed: int = 0
    new_fraction: float = 0.2  # ~fraction of TEST photos from individuals absent from train
    species: int = 6  # number of species used (at most len(SPECIES))
    test_fraction: float = 0.2  # ~fraction of photos of known individuals that go to test


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    train_images: int
    test_images: int
    individuals: int
    new_test_images: int


# ----------------------------------------------------------------------------- species


@dataclass(frozen=True)
class FinShape:
    """Dorsal fin of a species, in body lengths (before per-individual variation)."""

    center: float  # u of the middle of the fin base
    base: float  # length of the base along the back
    height: float
    sweep: float  # tip offset towards the tail, in fin heights
    falcate: float  # concavity of the trailing edge (0: straight, triangular fin)
    bulge: float  # convexity of the leading edge


@dataclass(frozen=True)
class Species:
    """What all individuals of a species share: shape, fin and colour pattern."""

    name: str
    weight: float  # relative frequency: species are unbalanced, as in Happywhale
    top: tuple[Point, ...]  # (u, v) control points of the back contour
    bottom: tuple[Point, ...]  # (u, v) control points of the belly contour
    fin: FinShape
    back: Colour
    belly: Colour
    boundary: float  # n of the back/belly colour boundary
    pattern: str  # plain | orca | tricolor | cape


SPECIES: tuple[Species, ...] = (
    Species(
        "bottlenose_dolphin", 0.26,
        ((0, .003), (.05, .014), (.12, .03), (.3, .08), (.5, .112), (.65, .115), (.78, .097),
         (.86, .075), (.895, .05), (.91, .026), (1, .012)),
        ((0, -.003), (.05, -.012), (.12, -.026), (.3, -.075), (.5, -.105), (.7, -.095),
         (.85, -.058), (.92, -.026), (1, -.008)),
        FinShape(.56, .14, .13, .55, .28, .12), (.42, .45, .48), (.78, .79, .8), .35, "plain",
    ),
    Species(
        "humpback_whale", 0.18,
        ((0, .003), (.05, .012), (.12, .025), (.3, .075), (.5, .105), (.7, .11), (.85, .092),
         (.95, .06), (1, .02)),
        ((0, -.003), (.05, -.012), (.12, -.025), (.3, -.07), (.5, -.11), (.7, -.11),
         (.85, -.09), (.95, -.055), (1, -.02)),
        FinShape(.33, .09, .055, .45, .3, .25), (.13, .13, .15), (.3, .3, .32), .2, "knobs",
    ),
    Species(
        "beluga_whale", 0.14,
        ((0, .003), (.05, .014), (.12, .03), (.3, .085), (.5, .118), (.7, .118), (.8, .1),
         (.86, .086), (.92, .1), (.965, .085), (.99, .045), (1, .02)),
        ((0, -.003), (.05, -.012), (.12, -.028), (.3, -.08), (.5, -.11), (.7, -.1),
         (.85, -.07), (.95, -.04), (1, -.01)),
        FinShape(.5, .28, .028, .0, .0, .15), (.86, .87, .84), (.9, .9, .88), .2, "plain",
    ),
    Species(
        "killer_whale", 0.12,
        ((0, .003), (.05, .015), (.12, .035), (.3, .1), (.5, .13), (.7, .125), (.85, .09),
         (.95, .05), (1, .01)),
        ((0, -.003), (.05, -.014), (.12, -.032), (.3, -.1), (.5, -.13), (.7, -.12),
         (.85, -.085), (.95, -.05), (1, -.01)),
        FinShape(.55, .13, .21, .12, .06, .06), (.04, .04, .05), (.93, .93, .92), .3, "orca",
    ),
    Species(
        "blue_whale", 0.09,
        ((0, .002), (.05, .008), (.12, .017), (.3, .045), (.5, .062), (.75, .064), (.9, .05),
         (.97, .03), (1, .008)),
        ((0, -.002), (.05, -.008), (.12, -.016), (.3, -.043), (.5, -.06), (.75, -.06),
         (.9, -.045), (.97, -.025), (1, -.006)),
        FinShape(.24, .06, .04, .6, .3, .2), (.36, .44, .52), (.5, .56, .62), .2, "plain",
    ),
    Species(
        "short_finned_pilot_whale", 0.08,
        ((0, .003), (.05, .013), (.12, .03), (.3, .085), (.5, .107), (.65, .11), (.8, .097),
         (.9, .088), (.96, .065), (.99, .035), (1, .0)),
        ((0, -.003), (.05, -.012), (.12, -.028), (.3, -.08), (.5, -.1), (.7, -.095),
         (.85, -.07), (.95, -.04), (1, -.01)),
        FinShape(.62, .17, .11, .7, .35, .15), (.09, .09, .1), (.2, .2, .22), .15, "cape",
    ),
    Species(
        "spinner_dolphin", 0.07,
        ((0, .003), (.05, .011), (.12, .024), (.3, .065), (.5, .09), (.65, .09), (.78, .075),
         (.84, .056), (.87, .03), (.9, .018), (1, .007)),
        ((0, -.003), (.05, -.01), (.12, -.022), (.3, -.065), (.5, -.085), (.7, -.075),
         (.84, -.04), (.9, -.018), (1, -.005)),
        FinShape(.55, .12, .13, .05, .0, .05), (.22, .24, .27), (.9, .9, .9), .3, "tricolor",
    ),
    Species(
        "melon_headed_whale", 0.06,
        ((0, .003), (.05, .013), (.12, .03), (.3, .083), (.5, .105), (.68, .105), (.82, .08),
         (.92, .045), (1, .0)),
        ((0, -.003), (.05, -.012), (.12, -.028), (.3, -.078), (.5, -.1), (.7, -.09),
         (.85, -.05), (.95, -.02), (1, -.002)),
        FinShape(.55, .13, .14, .75, .35, .12), (.17, .18, .2), (.35, .36, .38), .2, "cape",
    ),
)  # fmt: skip


def species_names(count: int = len(SPECIES)) -> list[str]:
    return [s.name for s in SPECIES[:count]]


# -------------------------------------------------------------------------- individuals


@dataclass(frozen=True)
class Notch:
    """A nick cut into the trailing edge of the dorsal fin: the classic photo-ID mark."""

    t: float  # position along the trailing edge: 0 at the tip, 1 at the base
    depth: float  # fraction of the local fin width
    width: float  # fraction of the trailing edge length
    sharp: bool  # V-shaped (True) or U-shaped


@dataclass(frozen=True)
class Spot:
    """A pigment blotch; (u, n) on the body, or (chord, height) fractions on the fin."""

    u: float
    n: float
    radius: float  # body lengths (fin spots: fin heights)
    aspect: float  # minor / major axis
    angle: float  # radians
    light: bool  # light mark, or dark (swapped where the skin would hide it)


@dataclass(frozen=True)
class Scar:
    """A scratch or tooth rake: a polyline in (u, n) drawn as a light line."""

    points: tuple[Point, ...]
    width: float  # body lengths


@dataclass(frozen=True)
class Individual:
    """One animal: its species, photo count and persistent marks (same in every photo)."""

    index: int
    individual_id: str
    species: Species
    photos: int
    tone: float  # relative brightness of the skin
    fin_height: float  # factor on the species fin height
    fin_sweep: float  # added to the species sweep
    fin_cut: float  # fraction of the fin height missing at the tip (0: intact)
    notches: tuple[Notch, ...]
    spots: tuple[Spot, ...]
    scars: tuple[Scar, ...]
    fin_spot: Spot | None

    def marks(self) -> tuple[object, ...]:
        """Everything that identifies the animal within its species."""
        return (
            self.tone, self.fin_height, self.fin_sweep, self.fin_cut,
            self.notches, self.spots, self.scars, self.fin_spot,
        )  # fmt: skip


def _hex(*parts: object, chars: int) -> str:
    """Deterministic Kaggle-like hex name: no RNG state, so it never shifts other draws."""
    text = ":".join(str(p) for p in ("wildid-synth", *parts))
    return hashlib.blake2b(text.encode(), digest_size=chars // 2).hexdigest()


def image_name(seed: int, individual: int, photo: int) -> str:
    return _hex(seed, "image", individual, photo, chars=14) + ".jpg"


def _photo_count(rng: np.random.Generator) -> int:
    n = np.arange(1, MAX_PHOTOS + 1)
    p = n**-PHOTO_EXPONENT
    return int(rng.choice(n, p=p / p.sum()))


def _depth_at(species: Species, u: float) -> float:
    top = np.interp(u, *zip(*species.top, strict=True))
    bottom = np.interp(u, *zip(*species.bottom, strict=True))
    return float(top - bottom)


def _notches(rng: np.random.Generator) -> tuple[Notch, ...]:
    """1-4 notches kept at least NOTCH_GAP apart, so each stays a separate, visible nick.

    Positions are drawn as sorted uniforms in the slack left after the gaps, then spread
    by the gaps: every draw succeeds (rejection sampling can paint itself into a corner).
    """
    count = int(rng.choice([1, 2, 3, 4], p=[0.3, 0.32, 0.23, 0.15]))
    lo, hi = 0.12, 0.85
    slack = hi - lo - NOTCH_GAP * (count - 1)
    ts = np.sort(rng.uniform(0.0, slack, size=count)) + lo + NOTCH_GAP * np.arange(count)
    return tuple(
        Notch(
            float(t),
            float(rng.uniform(0.3, 0.6)),
            float(rng.uniform(0.05, 0.11)),
            bool(rng.random() < 0.5),
        )
        for t in ts
    )


def _spots(rng: np.random.Generator, mottled: bool) -> tuple[Spot, ...]:
    """Blotches on the upper flank (the part usually above water); blue whales are mottled."""
    count = int(rng.integers(10, 18)) if mottled else int(rng.integers(1, 5))
    lo, hi = (0.015, 0.03) if mottled else (0.022, 0.045)
    return tuple(
        Spot(
            u=float(rng.uniform(0.22, 0.86)),
            n=float(rng.uniform(0.45, 0.93)),
            radius=float(rng.uniform(lo, hi)),
            aspect=float(rng.uniform(0.45, 1.0)),
            angle=float(rng.uniform(0, math.pi)),
            light=bool(rng.random() < 0.6),
        )
        for _ in range(count)
    )


def _scars(rng: np.random.Generator, species: Species) -> tuple[Scar, ...]:
    """Single scratches and tooth rakes (2-4 parallel lines) at fixed body positions."""
    scars: list[Scar] = []
    for _ in range(int(rng.integers(1, 4))):
        u0, n0 = float(rng.uniform(0.2, 0.82)), float(rng.uniform(0.5, 0.92))
        angle, length = float(rng.uniform(-0.9, 0.9)), float(rng.uniform(0.05, 0.14))
        depth = _depth_at(species, u0)
        du, dn = math.cos(angle) * length, math.sin(angle) * length / depth
        bend = float(rng.uniform(-0.25, 0.25))
        lines = int(rng.choice([1, 2, 3, 4], p=[0.55, 0.2, 0.15, 0.1]))
        gap = float(rng.uniform(0.018, 0.028)) / depth
        width = float(rng.uniform(0.009, 0.015))
        for k in range(lines):
            off = (k - (lines - 1) / 2) * gap
            pts = [
                (u0 + du * s, float(np.clip(n0 + dn * s + off + bend * s * (1 - s), 0.3, 0.98)))
                for s in (0.0, 0.5, 1.0)
            ]
            scars.append(Scar(tuple(pts), width))
    return tuple(scars)


def individual_params(seed: int, index: int, species: int = 6) -> Individual:
    """The persistent identity of individual `index`: depends on (seed, index) only.

    `species` is how many species are in use (the first ones of SPECIES).
    """
    choices = SPECIES[: max(1, min(species, len(SPECIES)))]
    weights = np.array([s.weight for s in choices])
    rng = np.random.default_rng([seed, index, _SPECIES_STREAM])
    sp = choices[int(rng.choice(len(choices), p=weights / weights.sum()))]
    photos = _photo_count(rng)
    marks = np.random.default_rng([seed, index, _MARKS_STREAM])
    cut = float(marks.uniform(0.1, 0.25)) if marks.random() < 0.3 else 0.0
    fin_spot = None
    if marks.random() < 0.35:
        fin_spot = Spot(
            float(marks.uniform(0.3, 0.7)), float(marks.uniform(0.2, 0.6)),
            float(marks.uniform(0.08, 0.13)), float(marks.uniform(0.5, 1)),
            float(marks.uniform(0, math.pi)), bool(marks.random() < 0.7),
        )  # fmt: skip
    return Individual(
        index=index,
        individual_id=_hex(seed, "individual", index, chars=12),
        species=sp,
        photos=photos,
        tone=float(np.clip(marks.normal(0, 0.05), -0.1, 0.1)),
        fin_height=float(marks.uniform(0.85, 1.15)),
        fin_sweep=float(marks.uniform(-0.2, 0.2)),
        fin_cut=cut,
        notches=_notches(marks),
        spots=_spots(marks, mottled=sp.name == "blue_whale"),
        scars=_scars(marks, sp),
        fin_spot=fin_spot,
    )


# ------------------------------------------------------------------------------ photos


@dataclass(frozen=True)
class Photo:
    """Everything that changes between two photos of the same animal (relative units)."""

    flip: bool  # facing left instead of right (mirrors the marks, as a real flip does)
    scale: float  # body length as a fraction of the photo width
    angle: float  # degrees
    arch: float  # how much the back arches at the surface (ends dip), body lengths
    above: float  # fraction of the body depth above water at the fin
    x_pos: float  # position within the feasible horizontal range, 0..1
    y_pos: float  # water line position within the feasible vertical range, 0..1
    crop: int  # 0: whole animal in frame; -1 / +1: cut by the left / right border
    horizon: float | None  # horizon height as a fraction of the photo height
    sea: Colour
    sky: Colour
    wave_freq: float
    wave_contrast: float
    swell: float  # water line amplitude, fraction of the photo height
    crest: tuple[float, float, float] | None  # wave in front: centre, width, height
    light: tuple[float, float, float]  # (from above, from the camera, specular)
    clarity: float  # how much of the submerged body shows through the water
    foam: int
    spray: int
    haze: float
    exposure: float
    contrast: float
    cast: Colour
    gamma: float
    blur: float  # gaussian sigma, output pixels
    motion: tuple[int, float] | None  # motion blur length (px) and angle (degrees)
    noise: float  # sensor noise sigma, 0..1 units
    quality: int  # JPEG quality
    texture: tuple[int, ...]  # seed of the sub-stream for wave, foam and noise textures


SEAS: tuple[Colour, ...] = (
    (.05, .18, .32), (.07, .25, .27), (.2, .27, .27), (.24, .31, .39), (.04, .1, .17),
    (.12, .25, .2), (.1, .2, .3),
)  # fmt: skip
SKIES: tuple[Colour, ...] = (
    (.62, .76, .9), (.75, .77, .8), (.88, .88, .86), (.9, .76, .62), (.47, .5, .54),
)  # fmt: skip


def _jitter(rng: np.random.Generator, colour: Colour, amount: float) -> Colour:
    c = np.clip(np.array(colour) * rng.uniform(1 - amount, 1 + amount, 3), 0, 1)
    return (float(c[0]), float(c[1]), float(c[2]))


def photo_params(seed: int, individual: int, photo: int) -> Photo:
    """Scene, pose and camera of photo `photo` of individual `individual`."""
    rng = np.random.default_rng([seed, individual, _PHOTO_STREAM, photo])
    u = rng.uniform
    crest = (u(0.1, 0.9), u(0.08, 0.25), u(0.2, 0.6)) if rng.random() < 0.15 else None
    crop = int(rng.choice([-1, 1])) if rng.random() < 0.12 else 0
    motion = (int(rng.integers(3, 8)), float(u(0, 180))) if rng.random() < 0.15 else None
    cast = (float(u(0.9, 1.1)), float(u(0.92, 1.08)), float(u(0.9, 1.1)))
    return Photo(
        flip=bool(rng.random() < 0.5),
        scale=float(u(0.35, 0.8)),
        angle=float(np.clip(rng.normal(0, 4), -10, 10)),
        arch=float(u(0.01, 0.08)),
        above=float(np.clip(rng.beta(4, 3), 0.25, 0.9)),
        x_pos=float(u()),
        y_pos=float(u()),
        crop=crop,
        horizon=float(u(0.03, 0.3)) if rng.random() < 0.4 else None,
        sea=_jitter(rng, SEAS[int(rng.integers(len(SEAS)))], 0.2),
        sky=_jitter(rng, SKIES[int(rng.integers(len(SKIES)))], 0.08),
        wave_freq=float(u(12, 40)),
        wave_contrast=float(u(0.06, 0.25)),
        swell=float(u(0.0, 0.012)),
        crest=(float(crest[0]), float(crest[1]), float(crest[2])) if crest else None,
        light=(float(u(0.4, 1.0)), float(u(0.3, 0.8)), float(u(0.0, 0.35))),
        clarity=float(u(0.05, 0.35)),
        foam=int(rng.integers(2, 14)),
        spray=int(rng.integers(20, 90)) if rng.random() < 0.25 else 0,
        haze=float(u(0.0, 0.25)),
        exposure=float(u(0.75, 1.25)),
        contrast=float(u(0.8, 1.2)),
        cast=cast,
        gamma=float(u(0.8, 1.25)),
        blur=float(u(0.3, 1.1)) if rng.random() < 0.5 else 0.0,
        motion=motion,
        noise=float(u(0.004, 0.03)),
        quality=int(rng.integers(65, 96)),
        texture=(seed, individual, _TEXTURE_STREAM, photo),
    )


# ---------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Geometry:
    """An individual's outline in body coordinates (fixed across its photos)."""

    u: np.ndarray  # PROFILE_SAMPLES positions along the body
    top: np.ndarray  # v of the back at u
    bottom: np.ndarray  # v of the belly at u
    fin: np.ndarray  # (k, 2) fin polygon (u, v), its base sunk into the body
    leading: np.ndarray  # (FIN_SAMPLES, 2) leading edge, tip to base
    trailing: np.ndarray  # (FIN_SAMPLES, 2) trailing edge with notches, tip to base
    fin_height: float


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    radius = int(3 * sigma)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    padded = np.pad(values, radius, mode="edge")
    return np.convolve(padded, kernel / kernel.sum(), mode="valid")


def _bezier(p0: np.ndarray, c: np.ndarray, p1: np.ndarray, count: int) -> np.ndarray:
    t = np.linspace(0, 1, count)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * c + t**2 * p1


def _rot90(vectors: np.ndarray) -> np.ndarray:
    """Rotate (u, v) vectors a quarter turn counter-clockwise."""
    return np.stack([-vectors[..., 1], vectors[..., 0]], axis=-1)


def _notch_depths(ind: Individual, width: np.ndarray) -> np.ndarray:
    t = np.linspace(0, 1, len(width))
    depth = np.zeros_like(t)
    for notch in ind.notches:
        x = np.abs(t - notch.t) / notch.width
        shape = np.clip(1 - x, 0, 1) if notch.sharp else np.sqrt(np.clip(1 - x**2, 0, 1))
        depth = np.maximum(depth, notch.depth * shape)
    return depth * width


def _fin_edges(ind: Individual, top_at: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Leading and (notched) trailing edges, both from the tip down to the base."""
    fin = ind.species.fin
    height = fin.height * ind.fin_height
    sink = min(0.012, 0.5 * height)
    front = np.array([fin.center + fin.base / 2, top_at[0] - sink])
    rear = np.array([fin.center - fin.base / 2, top_at[1] - sink])
    tip = np.array([fin.center - (fin.sweep + ind.fin_sweep) * height, top_at[2] + height])
    chord = tip - front
    outward = -_rot90(chord) / np.linalg.norm(chord)
    leading = _bezier(front, (front + tip) / 2 + fin.bulge * np.linalg.norm(chord) * outward, tip,
                      FIN_SAMPLES)[::-1]  # fmt: skip
    span = rear - tip
    inward = _rot90(span) / np.linalg.norm(span)
    trailing = _bezier(tip, (tip + rear) / 2 + fin.falcate * np.linalg.norm(span) * inward, rear,
                       FIN_SAMPLES)  # fmt: skip
    tangent = np.gradient(trailing, axis=0)
    normal = _rot90(tangent) / np.linalg.norm(tangent, axis=1, keepdims=True)
    width = np.linalg.norm(leading - trailing, axis=1)
    trailing = trailing + normal * _notch_depths(ind, width)[:, None]
    ceiling = tip[1] - ind.fin_cut * height  # a missing tip leaves a flat top
    leading[:, 1] = np.minimum(leading[:, 1], ceiling)
    trailing[:, 1] = np.minimum(trailing[:, 1], ceiling)
    return leading, trailing, height


def body_geometry(ind: Individual) -> Geometry:
    sp = ind.species
    u = np.linspace(0, 1, PROFILE_SAMPLES)
    top = _smooth(np.interp(u, *zip(*sp.top, strict=True)), 2.5)
    bottom = _smooth(np.interp(u, *zip(*sp.bottom, strict=True)), 2.5)
    bottom = np.minimum(bottom, top - 0.002)
    fin = sp.fin
    at = np.interp([fin.center + fin.base / 2, fin.center - fin.base / 2, fin.center], u, top)
    leading, trailing, height = _fin_edges(ind, at)
    base_u = np.linspace(trailing[-1, 0], leading[-1, 0], 20)
    base = np.stack([base_u, np.interp(base_u, u, top) - 2 * min(0.012, 0.5 * height)], axis=1)
    polygon = np.concatenate([leading[::-1], trailing, base])
    return Geometry(u, top, bottom, polygon, leading, trailing, height)


# ------------------------------------------------------------------------------- pose


@dataclass(frozen=True)
class Pose:
    """Body -> image transform: bend (arch), then a similarity (flip, rotate, scale, move)."""

    matrix: np.ndarray  # 2x2: (u - 0.5, v) -> image offset
    offset: np.ndarray  # image position of (u = 0.5, v = 0)
    arch: float

    def camber(self, u: np.ndarray) -> np.ndarray:
        return self.arch * (1 - (2 * u - 1) ** 2)

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        bent = np.stack([uv[:, 0] - 0.5, uv[:, 1] + self.camber(uv[:, 0])], axis=1)
        return bent @ self.matrix.T + self.offset

    def to_body(self, xy: np.ndarray) -> np.ndarray:
        q = (xy - self.offset) @ np.linalg.inv(self.matrix).T
        u = q[:, 0] + 0.5
        return np.stack([u, q[:, 1] - self.camber(u)], axis=1)


def _linear(photo: Photo, length_px: float) -> np.ndarray:
    theta = math.radians(photo.angle)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return length_px * rot @ np.diag([-1.0 if photo.flip else 1.0, -1.0])


def _outline(geom: Geometry) -> np.ndarray:
    body = np.concatenate(
        [np.stack([geom.u, geom.top], 1), np.stack([geom.u, geom.bottom], 1)[::-1]]
    )
    return np.concatenate([body, geom.fin])


def _place(geom: Geometry, photo: Photo, width: int, height: int) -> tuple[Pose, float]:
    """Pose and water line height such that the fin is in frame and above water."""
    margin = 0.03 * width
    scale, center = photo.scale, geom.fin[:, 0].mean()
    anchor_v = np.interp(center, geom.u, geom.top)
    anchor_v -= photo.above * (anchor_v - np.interp(center, geom.u, geom.bottom))
    for _ in range(8):
        matrix = _linear(photo, scale * width)
        pose = Pose(matrix, np.zeros(2), photo.arch)
        pts, fin = pose.to_image(_outline(geom)), pose.to_image(geom.fin)
        anchor = pose.to_image(np.array([[center, anchor_v]]))[0]
        y_lo = max(0.35 * height, margin + anchor[1] - pts[:, 1].min())
        y_hi = 0.92 * height
        if y_lo <= y_hi:
            break
        scale *= 0.85
    water = y_lo + photo.y_pos * max(0.0, min(y_hi, y_lo + 0.45 * height) - y_lo)
    x_lo, x_hi = margin - pts[:, 0].min(), width - margin - pts[:, 0].max()
    tx = x_lo + photo.x_pos * (x_hi - x_lo) if x_lo <= x_hi else (x_lo + x_hi) / 2
    if photo.crop:  # cut the animal by a border, but never the fin
        overhang = (0.15 + 0.2 * photo.x_pos) * scale * width
        tx = x_lo - overhang if photo.crop < 0 else x_hi + overhang
        tx = float(np.clip(tx, margin - fin[:, 0].min(), width - margin - fin[:, 0].max()))
    offset = np.array([tx, water - anchor[1]])
    return Pose(matrix, offset, photo.arch), water


def _fill(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 8).astype(np.int32)], 1, cv2.LINE_8, shift=3)
    return mask.astype(bool)


def _water_line(photo: Photo, water: float, width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng([*photo.texture, 0])
    x = np.arange(width) / width
    k1, k2, p1, p2 = rng.uniform(4, 9), rng.uniform(11, 23), *rng.uniform(0, 2 * math.pi, 2)
    swell = photo.swell * height * (0.65 * np.sin(2 * math.pi * k1 * x / 4 + p1)
                                    + 0.35 * np.sin(2 * math.pi * k2 * x / 4 + p2))  # fmt: skip
    return water + swell


def _crest(photo: Photo, width: int, height_px: float) -> np.ndarray:
    if photo.crest is None:
        return np.zeros(width)
    centre, spread, rise = photo.crest
    x = np.arange(width) / width
    return -rise * height_px * np.exp(-0.5 * ((x - centre) / spread) ** 2)


# ------------------------------------------------------------------------------ colour


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


def _mix(col: np.ndarray, where: np.ndarray, colour: Colour | np.ndarray, alpha: float = 1.0):
    a = where.astype(np.float32)[:, None] * alpha if where.dtype == bool else where[:, None]
    col *= 1 - a
    col += a * np.asarray(colour, np.float32)


def _ellipse(u, v, cu, cv, radius, aspect, angle) -> np.ndarray:  # noqa: ANN001
    du, dv = u - cu, v - cv
    c, s = math.cos(angle), math.sin(angle)
    a, b = du * c + dv * s, -du * s + dv * c
    return (a / radius) ** 2 + (b / (radius * aspect)) ** 2 <= 1


def _pattern(sp: Species, col: np.ndarray, u: np.ndarray, n: np.ndarray, fin: np.ndarray) -> None:
    """Species colour patches, shared by all individuals of the species."""
    body = ~fin
    if sp.pattern == "orca":
        _mix(col, body & _ellipse(u, n, 0.8, 0.64, 0.065, 0.3, -0.15), (0.93, 0.93, 0.92))
        saddle = _ellipse(u, n, sp.fin.center - 0.1, 0.97, 0.1, 0.28, 0.1)
        _mix(col, body & saddle, (0.5, 0.5, 0.52), 0.85)
        lobe = 0.3 + 0.25 * np.exp(-(((u - 0.28) / 0.07) ** 2))
        _mix(col, body & (n < lobe) & (u < 0.42), (0.93, 0.93, 0.92))
    elif sp.pattern == "tricolor":
        _mix(col, body & (n < 0.68 - 0.12 * u) & (n > 0.3), (0.55, 0.57, 0.6))
    elif sp.pattern == "cape":
        _mix(col, fin | (n > 0.7 + 0.15 * np.abs(u - 0.55)), np.asarray(sp.back) * 0.55, 0.8)
    elif sp.pattern == "knobs":
        for k in range(5):
            knob = body & _ellipse(u, n, 0.86 + 0.025 * k, 0.86, 0.008, 3, 0.0)
            _mix(col, knob, np.asarray(sp.back) * 1.8)
    eye = body & _ellipse(u, n, 0.9 if sp.name != "blue_whale" else 0.92, 0.45, 0.007, 4, 0.0)
    _mix(col, eye, (0.03, 0.03, 0.03))


def _mark_colour(col: np.ndarray, where: np.ndarray, light: bool) -> np.ndarray:
    """Light or dark, swapped where the skin has the same tone (keeps marks visible)."""
    lum = col[where].mean(axis=1)
    want_light = lum < 0.55 if light else lum < 0.28
    light_c, dark_c = np.array([0.9, 0.89, 0.86]), np.array([0.1, 0.1, 0.11])
    return np.where(want_light[:, None], light_c, dark_c).astype(np.float32)


def _segment_distance(pu, pv, a: Point, b: Point) -> np.ndarray:  # noqa: ANN001
    du, dv = b[0] - a[0], b[1] - a[1]
    t = np.clip(((pu - a[0]) * du + (pv - a[1]) * dv) / max(du * du + dv * dv, 1e-12), 0, 1)
    return np.hypot(pu - a[0] - t * du, pv - a[1] - t * dv)


def _to_v(geom: Geometry, u: float, n: float) -> float:
    lo, hi = np.interp(u, geom.u, geom.bottom), np.interp(u, geom.u, geom.top)
    return float(lo + n * (hi - lo))


def _marks(ind: Individual, geom: Geometry, col: np.ndarray, uv: np.ndarray,
           fin: np.ndarray) -> None:  # fmt: skip
    """Draw the individual's spots, scars and fin patch on the skin colour (albedo)."""
    u, v = uv[:, 0], uv[:, 1]
    body = ~fin
    for spot in ind.spots:
        where = body & _ellipse(u, v, spot.u, _to_v(geom, spot.u, spot.n), spot.radius,
                                spot.aspect, spot.angle)  # fmt: skip
        if where.any():
            col[where] = _mark_colour(col, where, spot.light)
    for scar in ind.scars:
        pts = [(p[0], _to_v(geom, p[0], p[1])) for p in scar.points]
        segments = zip(pts, pts[1:], strict=False)
        dist = np.minimum(*(_segment_distance(u, v, a, b) for a, b in segments))
        where = body & (dist < scar.width / 2)
        if where.any():
            col[where] = _mark_colour(col, where, True)
    if ind.fin_spot is not None:
        s = ind.fin_spot
        k = int(round((1 - s.n) * (FIN_SAMPLES - 1)))
        centre = geom.leading[k] + s.u * (geom.trailing[k] - geom.leading[k])
        radius = s.radius * geom.fin_height
        where = fin & _ellipse(u, v, centre[0], centre[1], radius, s.aspect, s.angle)
        if where.any():
            col[where] = _mark_colour(col, where, s.light)


def _skin(ind: Individual, geom: Geometry, photo: Photo, uv: np.ndarray) -> np.ndarray:
    """Shaded colour of body/fin pixels given their body coordinates."""
    sp = ind.species
    u = np.clip(uv[:, 0], 0, 1)
    top, bottom = np.interp(u, geom.u, geom.top), np.interp(u, geom.u, geom.bottom)
    n = (uv[:, 1] - bottom) / np.maximum(top - bottom, 1e-6)
    fin = n > 1.0
    w = _smoothstep((n - sp.boundary) / 0.16 + 0.5)[:, None]
    tone = 1 + ind.tone
    col = (np.asarray(sp.belly) * (1 - w) + np.asarray(sp.back) * w).astype(np.float32) * tone
    _mix(col, fin, np.asarray(sp.back) * 0.85 * tone)
    _pattern(sp, col, u, n, fin)
    _marks(ind, geom, col, uv, fin)
    above, front, shine = photo.light
    phi = (np.clip(n, 0, 1) - 0.5) * math.pi
    shade = 0.45 + 0.6 * np.clip(above * np.sin(phi) + front * np.cos(phi), 0, 1)
    shade = np.where(fin, 0.45 + 0.6 * (0.4 * above + 0.6 * front), shade)
    spec = shine * np.exp(-(((n - 0.88) / 0.06) ** 2)) * ~fin
    return np.clip(col * shade[:, None] + spec[:, None], 0, 1)


# -------------------------------------------------------------------------------- scene


def _noise_field(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    grid = rng.standard_normal((cells, int(cells * 1.5))).astype(np.float32)
    return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _background(photo: Photo, height: int, width: int) -> np.ndarray:
    """Sky above an optional horizon, sea with perspective ripples and glints below."""
    rng = np.random.default_rng([*photo.texture, 1])
    y = np.arange(height, dtype=np.float32)[:, None] / height
    x = np.arange(width, dtype=np.float32)[None, :] / width
    horizon = photo.horizon if photo.horizon is not None else -0.6
    depth = np.clip(y - horizon, 0.004, None)
    n1, n2 = _noise_field(rng, (height, width), 5), _noise_field(rng, (height, width), 14)
    wiggle = 0.8 * np.sin(2 * math.pi * x * rng.uniform(1, 4) + rng.uniform(0, 6.3))
    phase = photo.wave_freq * np.log(depth + 0.02) + 1.8 * n1 + wiggle
    waves = 0.6 * np.sin(phase) + 0.4 * np.sin(2.7 * phase + 2.5 * n2)
    sea, sky = np.asarray(photo.sea, np.float32), np.asarray(photo.sky, np.float32)
    near = np.exp(-depth * 5)[..., None] * 0.45
    shade = (1 + photo.wave_contrast * waves - 0.25 * y)[..., None]
    glint = (np.clip(waves - 0.6, 0, None) * 1.2 * photo.wave_contrast * 3)[..., None]
    image = (sea * (1 - near) + sky * near) * shade + sky * glint
    if photo.horizon is not None:
        clouds = 1 + 0.06 * n2[..., None]
        grad = (0.8 + 0.2 * np.clip(y / max(horizon, 1e-3), 0, 1))[..., None]
        image = np.where((y < horizon)[..., None], sky * grad * clouds, image)
    return image.astype(np.float32)


def _foam(photo: Photo, shape: tuple[int, int], visible: np.ndarray, line: np.ndarray,
          length_px: float) -> np.ndarray:  # fmt: skip
    """Alpha of white water where the animal breaks the surface, plus optional spray."""
    rng = np.random.default_rng([*photo.texture, 2])
    alpha = np.zeros(shape, np.float32)
    cols = np.flatnonzero(visible.any(axis=0))
    if cols.size == 0:
        return alpha
    x0, x1 = int(cols.min()), int(cols.max())
    for _ in range(photo.foam):
        cx = int(rng.uniform(x0 - 0.05 * length_px, x1 + 0.05 * length_px))
        cx = int(np.clip(cx, 0, shape[1] - 1))
        cy = int(line[cx] + rng.normal(0, 0.01 * length_px))
        axes = (max(1, int(rng.uniform(0.01, 0.05) * length_px)),
                max(1, int(rng.uniform(0.004, 0.012) * length_px)))  # fmt: skip
        cv2.ellipse(alpha, (cx, cy), axes, 0, 0, 360, float(rng.uniform(0.4, 0.9)), -1)
    for _ in range(photo.spray):
        cx = int(rng.uniform(x0, x1))
        cy = int(line[int(np.clip(cx, 0, shape[1] - 1))] - abs(rng.normal(0, 0.06)) * length_px)
        radius = max(1, int(rng.uniform(0.002, 0.008) * length_px))
        cv2.circle(alpha, (cx, cy), radius, float(rng.uniform(0.5, 1.0)), -1)
    return cv2.GaussianBlur(alpha, (0, 0), 0.6 * RENDER_SCALE)


def _camera(photo: Photo, image: np.ndarray) -> np.ndarray:
    """Exposure, contrast, colour cast, gamma, haze, blur and sensor noise."""
    rng = np.random.default_rng([*photo.texture, 3])
    image = image * photo.exposure
    image = (image - image.mean()) * photo.contrast + image.mean()
    image = np.clip(image * np.asarray(photo.cast, np.float32), 0, 1) ** photo.gamma
    image = image * (1 - photo.haze) + np.asarray(photo.sky, np.float32) * photo.haze
    if photo.blur > 0:
        image = cv2.GaussianBlur(image, (0, 0), photo.blur)
    if photo.motion is not None:
        length, angle = photo.motion
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1 / length
        rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle, 1.0)
        kernel = cv2.warpAffine(kernel, rot, (length, length))
        image = cv2.filter2D(image, -1, kernel / max(kernel.sum(), 1e-6))
    image = image + rng.normal(0, photo.noise, image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def _bbox(mask: np.ndarray, scale: int, width: int, height: int) -> Box | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    x1, y1 = int(cols[0]) // scale, int(rows[0]) // scale
    x2, y2 = int(cols[-1]) // scale + 1, int(rows[-1]) // scale + 1
    return (max(0, x1), max(0, y1), min(width, x2), min(height, y2))


def photo_shape(size: int) -> tuple[int, int]:
    """(height, width) of a photo whose longer side is `size` (3:2 landscape)."""
    return int(size * 2 / 3), size


def _surface(photo: Photo, water: float, fin_only: np.ndarray, ys: np.ndarray,
             width: int, height: int, length_px: float) -> np.ndarray:  # fmt: skip
    """Water line per column; a wave crest is dropped and the sea lowered if it hid the fin."""
    base = _water_line(photo, water, width, height)
    total = max(int(fin_only.sum()), 1)
    for line in (base + _crest(photo, width, 0.12 * length_px), base):
        if (fin_only & (ys < line[None, :])).sum() >= 0.75 * total:
            return line
    rows = np.flatnonzero(fin_only.any(axis=1))
    return np.maximum(base, rows.max() + 1 - 0.2 * (rows.max() - rows.min()))


def render_photo(ind: Individual, photo: Photo, size: int) -> tuple[np.ndarray, dict[str, Box]]:
    """Draw one photo (RGB uint8) and return its exact fullbody and backfin boxes."""
    out_h, out_w = photo_shape(size)
    height, width = out_h * RENDER_SCALE, out_w * RENDER_SCALE
    geom = body_geometry(ind)
    pose, water = _place(geom, photo, width, height)
    length_px = float(np.linalg.norm(pose.matrix[:, 0]))
    outline = _outline(geom)
    body_poly = pose.to_image(outline[: 2 * PROFILE_SAMPLES])
    body = _fill(body_poly, (height, width))
    fin_only = _fill(pose.to_image(geom.fin), (height, width)) & ~body
    animal = body | fin_only
    ys = np.arange(height, dtype=np.float32)[:, None]
    line = _surface(photo, water, fin_only, ys, width, height, length_px)
    below = ys - line[None, :]
    image = _background(photo, height, width)
    rr, cc = np.nonzero(animal)
    uv = pose.to_body(np.stack([cc, rr], axis=1).astype(np.float64))
    skin = _skin(ind, geom, photo, uv)
    depth = below[rr, cc]
    alpha = np.where(depth <= 0, 1.0, photo.clarity * np.exp(-depth / (0.05 * length_px)))
    image[rr, cc] = image[rr, cc] * (1 - alpha[:, None]) + skin * alpha[:, None]
    visible = animal & (below <= 0)
    foam = _foam(photo, (height, width), visible, line, length_px)[..., None]
    image = image * (1 - foam) + np.float32(0.95) * foam
    image = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_AREA)
    boxes = {
        "fullbody": _bbox(visible, RENDER_SCALE, out_w, out_h),
        "backfin": _bbox(fin_only & (below <= 0), RENDER_SCALE, out_w, out_h),
    }
    if boxes["fullbody"] is None or boxes["backfin"] is None:
        raise RuntimeError(f"synth: animal not visible (individual {ind.index}); a bug")
    return _camera(photo, image), boxes  # type: ignore[return-value]


# -------------------------------------------------------------------------------- split


def _split(individuals: list[Individual], spec: SynthSpec) -> dict[tuple[int, int], str]:
    """(individual index, photo index) -> 'train' | 'test'.

    New individuals (all photos in test) are chosen among rarely photographed ones until
    they make ~new_fraction of test; each known individual sends ~test_fraction of its
    photos to test but keeps at least one in train; singletons stay in train.
    """
    rng = np.random.default_rng([spec.seed, _SPLIT_STREAM])
    counts = np.array([ind.photos for ind in individuals])
    k = np.where(counts >= 2, np.minimum(counts - 1, rng.binomial(counts, spec.test_fraction)), 0)
    if k.sum() == 0 and (counts >= 2).any():
        k[int(np.argmax(counts))] = 1  # an empty test split is not a competition
    ratio = spec.new_fraction / (1 - spec.new_fraction)
    new: list[int] = []
    for i in rng.permutation(len(individuals)):
        if counts[i] > NEW_MAX_PHOTOS or len(new) + 1 >= len(individuals):
            continue
        target = ratio * (k.sum() - k[new].sum() - k[i])
        taken = counts[new].sum()
        if taken + counts[i] <= 1.15 * target or (not new and spec.new_fraction > 0):
            new.append(int(i))
    split: dict[tuple[int, int], str] = {}
    for ind, count, n_test in zip(individuals, counts, k, strict=True):
        test = set(range(count)) if ind.index in new else set(rng.permutation(count)[:n_test])
        for j in range(count):
            split[ind.index, j] = "test" if j in test else "train"
    return split


# ------------------------------------------------------------------------------- writing


def _validate(spec: SynthSpec) -> None:
    problems = []
    if spec.individuals < 3:
        problems.append("individuals must be >= 3")
    if spec.size < 64:
        problems.append("size must be >= 64 px")
    if not 1 <= spec.species <= len(SPECIES):
        problems.append(f"species must be in 1..{len(SPECIES)}")
    if not 0 <= spec.new_fraction < 1 or not 0 <= spec.test_fraction < 1:
        problems.append("new_fraction and test_fraction must be in [0, 1)")
    if problems:
        raise ValueError(f"SynthSpec {spec}: " + "; ".join(problems))


def _write_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())


def synthesize(
    out: str | Path, spec: SynthSpec = SynthSpec(), progress: bool = True
) -> SynthSummary:
    """Write a synthetic competition (images, train.csv, solution.csv, boxes.csv) to `out`.

    Existing files of the same names are replaced; other files in `out` are left alone.
    """
    _validate(spec)
    root = Path(out)
    individuals = [individual_params(spec.seed, i, spec.species) for i in range(spec.individuals)]
    split = _split(individuals, spec)
    rows: dict[str, list[dict[str, str]]] = {"train": [], "test": []}
    boxes: list[dict[str, object]] = []
    for (index, j), part in tqdm(split.items(), desc="synth", unit="photo", disable=not progress):
        ind = individuals[index]
        photo = photo_params(spec.seed, index, j)
        image, found = render_photo(ind, photo, spec.size)
        name = image_name(spec.seed, index, j)
        _write_jpeg(root / f"{part}_images" / name, image, photo.quality)
        rows[part].append(
            {"image": name, "species": ind.species.name, "individual_id": ind.individual_id}
        )
        for kind, (x1, y1, x2, y2) in found.items():
            boxes.append({"image": name, "kind": kind, "x1": x1, "y1": y1, "x2": x2, "y2": y2})
    train = pd.DataFrame(rows["train"]).sort_values("image", ignore_index=True)
    test = pd.DataFrame(rows["test"]).sort_values("image", ignore_index=True)
    box_df = pd.DataFrame(boxes).sort_values(["image", "kind"], ignore_index=True)
    write_tables(root, train, test, box_df)
    known = set(train["individual_id"])
    return SynthSummary(
        root=root,
        train_images=len(train),
        test_images=len(test),
        individuals=spec.individuals,
        new_test_images=int((~test["individual_id"].isin(known)).sum()),
    )


# ------------------------------------------------------------------------------- preview


def _preview_cells(root: Path, individuals: int, per_individual: int) -> list[list[str]]:
    train = pd.read_csv(root / "train.csv", dtype=str)
    counts = train.groupby("individual_id").size().reset_index(name="n")
    top = counts.sort_values(["n", "individual_id"], ascending=[False, True]).head(individuals)
    return [
        sorted(train.loc[train["individual_id"] == i, "image"])[:per_individual]
        for i in top["individual_id"]
    ]


def preview_grid(root: Path, out_png: Path, individuals: int = 6, per_individual: int = 5) -> Path:
    """Save a PNG grid: one row per most-photographed train individual, boxes drawn.

    Fullbody boxes are green, backfin boxes red. Drawn with OpenCV on a plain canvas, so
    it needs no plotting library and no global matplotlib state.
    """
    root, out_png = Path(root), Path(out_png)
    boxes = pd.read_csv(root / "boxes.csv", dtype={"image": str, "kind": str})
    lookup = {(r.image, r.kind): (r.x1, r.y1, r.x2, r.y2) for r in boxes.itertuples()}
    train = pd.read_csv(root / "train.csv", dtype=str).set_index("image")
    cells = _preview_cells(root, individuals, per_individual)
    tiles: list[np.ndarray] = []
    cell_w, cell_h, label_h = 256, 171, 16
    for names in cells:
        row = np.full((cell_h + label_h, cell_w * per_individual, 3), 255, np.uint8)
        for k, name in enumerate(names):
            img = cv2.imread(str(root / "train_images" / name), cv2.IMREAD_COLOR)
            h, w = img.shape[:2]
            for kind, colour in (("fullbody", (0, 200, 0)), ("backfin", (0, 0, 255))):
                if (name, kind) in lookup:
                    x1, y1, x2, y2 = (int(c) for c in lookup[name, kind])
                    cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), colour, 1)
            img = cv2.resize(img, (cell_w, int(h * cell_w / w)), interpolation=cv2.INTER_AREA)
            row[label_h : label_h + img.shape[0], k * cell_w : (k + 1) * cell_w] = img[:cell_h]
        if names:
            ind = train.loc[names[0]]
            label = f"{ind['individual_id']}  {ind['species']}"
            cv2.putText(row, label, (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        tiles.append(row)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    grid = np.concatenate(tiles) if tiles else np.full((10, 10, 3), 255, np.uint8)
    with atomic_path(out_png) as tmp:
        if not cv2.imwrite(str(tmp), grid):
            raise OSError(f"{out_png}: cannot write PNG")
    return out_png
