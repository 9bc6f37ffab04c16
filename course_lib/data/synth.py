"""SynthAffWild: synthetic face videos with known AUs, written in the s-Aff-Wild2 format.

Taught in ``01_data``. The real s-Aff-Wild2 set is licence-gated, so the course generates
videos that use exactly its layout and annotation format (one loader serves both) and that
know the truth behind every label.

The generative story, per video:

1. **Who**: an :class:`~course_lib.data.face.Identity` (shape, skin, hair, glasses), a resting
   tonus on a few AUs, a mood (valence/arousal offset) and a voice pitch.
2. **What they feel**: a sequence of expression *episodes* (onset, apex, offset) separated by
   neutral gaps. Each episode has a class (8 ABAW classes, balanced roughly like the real
   set) and an intensity; it switches on AUs from the class's EMFACS-style prototype (happiness
   AU6+AU12, sadness AU1+AU4+AU15, surprise AU1+AU2+AU25+AU26, ...) with randomness.
3. **Talking**: on/off stretches of speech; syllables open the lips (AU25, AU26) in time with
   the audio, whose pitch, energy and rate follow arousal and whose brightness follows valence.
4. **Valence and arousal** follow the circumplex position of the current expression scaled by
   its intensity, plus mood and slow drift, smoothed over time.
5. **Clean labels**: AU present when its intensity reaches ``AU_THRESHOLD``; expression = the
   episode's class while it is clearly visible, Neutral otherwise.
6. **Annotations** (what a model is trained and scored on) are the clean labels plus the
   noise of human annotators (AU threshold jitter and flips, shifted expression boundaries
   and confusions, a drifting VA bias) with stretches of missing labels at rates like the
   real set's.
7. **Nuisances** make single frames ambiguous but leave the sequence readable: head pose
   jitter, lighting, blur, sensor noise, JPEG artefacts, occluders passing over eyes or mouth.

Written under ``root``: ``cropped_aligned/<video>/<NNNNN>.jpg``, the two annotation files,
``audio/<video>.wav`` when asked, ``ground_truth/<video>.npz`` (clean labels, AU intensities,
AU image regions, occlusion flags) and ``metadata.json``. Same seed, same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..files import atomic_write
from ..labels import AU_NAMES, EXPR_CIRCUMPLEX, EXPR_NAMES, MISSING_AU, MISSING_EXPR, MISSING_VA
from .face import (AU_THRESHOLD, REGION_VERTICES, SKIN_TONES, Identity, Occluder, Pose, render_face, region_mask,
                   sample_identity)
from .voice import SAMPLE_RATE, synthesize_voice, wav_bytes

GENERATOR = "SynthAffWild"
VERSION = 2  # 2: every AU active in each split (_ensure_au_coverage)
FPS = 30

_AU = {name: i for i, name in enumerate(AU_NAMES)}

#: EMFACS-style prototypes restricted to the 12 ABAW AUs: class -> {AU: (probability, scale)}.
EXPR_PROTOTYPES: dict[str, dict[str, tuple[float, float]]] = {
    "Neutral": {},
    "Anger": {"AU4": (1.0, 1.0), "AU7": (0.8, 0.9), "AU23": (0.5, 0.9), "AU24": (0.5, 0.8), "AU10": (0.3, 0.6)},
    "Disgust": {"AU10": (1.0, 1.0), "AU4": (0.6, 0.7), "AU15": (0.3, 0.7), "AU25": (0.4, 0.6), "AU6": (0.3, 0.5),
                "AU7": (0.4, 0.6)},
    "Fear": {"AU1": (1.0, 1.0), "AU2": (0.8, 0.9), "AU4": (0.8, 0.8), "AU25": (0.8, 0.8), "AU26": (0.4, 0.7),
             "AU7": (0.3, 0.6)},
    "Happiness": {"AU12": (1.0, 1.0), "AU6": (0.9, 0.9), "AU25": (0.5, 0.7), "AU26": (0.15, 0.5)},
    "Sadness": {"AU15": (1.0, 1.0), "AU1": (0.9, 0.9), "AU4": (0.8, 0.8), "AU24": (0.2, 0.5)},
    "Surprise": {"AU1": (1.0, 1.0), "AU2": (1.0, 1.0), "AU25": (0.9, 0.9), "AU26": (0.8, 0.9)},
    "Other": {"AU7": (0.5, 0.7), "AU10": (0.45, 0.6), "AU24": (0.25, 0.7), "AU23": (0.1, 0.7), "AU25": (0.3, 0.6),
              "AU12": (0.35, 0.5), "AU6": (0.25, 0.5), "AU15": (0.04, 0.5)},
}

#: Share of the non-neutral episodes per class, from the real training split's EXPR counts.
EPISODE_SHARE: dict[str, float] = {"Anger": 4555, "Disgust": 3168, "Fear": 3122, "Happiness": 18135,
                                   "Sadness": 7609, "Surprise": 5228, "Other": 24852}

#: Expressions annotators mix up (used for annotation noise).
CONFUSABLE: dict[str, str] = {"Anger": "Disgust", "Disgust": "Anger", "Fear": "Surprise", "Surprise": "Fear",
                              "Sadness": "Neutral", "Other": "Neutral", "Happiness": "Other"}

#: Fraction of frames whose label is missing, per split and task (real set: train VA 27 %,
#: EXPR 36 %, AU 27 % missing; validation: only EXPR, 43 %).
MISSING_RATES: dict[str, dict[str, float]] = {
    "train": {"va": 0.27, "expr": 0.36, "au": 0.27},
    "validation": {"va": 0.0, "expr": 0.43, "au": 0.0},
}

#: Dataset sizes used by the course in each mode.
COURSE_SIZES: dict[str, dict[str, int]] = {
    "smoke": {"n_videos": 32, "frames_per_video": 45, "test_videos": 6},  # many identities: models must generalise
    "full": {"n_videos": 80, "frames_per_video": 300, "test_videos": 16},
}


@dataclass
class VideoPlan:
    """Everything about one video, decided before any pixel is drawn."""

    name: str
    split: str
    index: int
    identity: Identity
    pitch: float
    au_intensity: np.ndarray  # (T, 12) float
    valence: np.ndarray  # (T,) clean
    arousal: np.ndarray
    expression: np.ndarray  # (T,) clean class id
    episode_class: np.ndarray  # (T,) generative class of the episode (-1 in gaps)
    talking: np.ndarray  # (T,) bool
    poses: list[Pose]
    occluders: list[Occluder | None]
    occluded: np.ndarray  # (T, 2) bool: eyes, mouth
    light: np.ndarray  # (T, 3): gain, gradient angle, gradient strength
    blur: np.ndarray  # (T,) Gaussian radius in pixels
    noise: float
    jpeg_quality: np.ndarray  # (T,) int
    audio: np.ndarray | None = None
    annotations: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.au_intensity.shape[0])


# --------------------------------------------------------------------------------------
# the story
# --------------------------------------------------------------------------------------

def _rgb_tuple(x: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.round(x), 0, 255))  # type: ignore[return-value]


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along time (axis 0), edges handled by reflection."""
    if sigma <= 0:
        return x
    radius = int(3 * sigma) + 1
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(x, [(radius, radius)] + [(0, 0)] * (x.ndim - 1), mode="reflect")
    if x.ndim == 1:
        return np.convolve(pad, k, mode="valid")
    return np.stack([np.convolve(pad[:, j], k, mode="valid") for j in range(x.shape[1])], axis=1)


def _ar1(rng: np.random.Generator, n: int, sigma: float, rho: float) -> np.ndarray:
    """A stationary AR(1) series: slow wandering with standard deviation ``sigma``."""
    out = np.empty(n)
    x = rng.normal(0, sigma)
    innov = rng.normal(0, sigma * np.sqrt(1 - rho**2), n)
    for i in range(n):
        x = rho * x + innov[i]
        out[i] = x
    return out


def _episode_slots(rng: np.random.Generator, n_frames: int) -> list[tuple[int, int, int, int]]:
    """Episodes as (start, onset_end, apex_end, end) frame indices, separated by neutral gaps."""
    factor = float(np.clip(n_frames / 150, 0.4, 1.0))
    slots, t = [], int(rng.integers(0, max(2, int(12 * factor))))
    while True:
        onset = max(2, int(rng.integers(4, 13) * factor))
        apex = max(3, int(rng.integers(10, 41) * factor))
        offset = max(2, int(rng.integers(4, 15) * factor))
        if t + onset + apex + offset > n_frames:
            break
        slots.append((t, t + onset, t + onset + apex, t + onset + apex + offset))
        t += onset + apex + offset + max(1, int(rng.integers(2, 13) * factor))
    return slots


def _envelope(n_frames: int, slot: tuple[int, int, int, int], rng: np.random.Generator) -> np.ndarray:
    start, onset_end, apex_end, end = slot
    env = np.zeros(n_frames)
    env[start:onset_end] = np.linspace(0, 1, onset_end - start, endpoint=False) ** 1.5
    env[onset_end:apex_end] = 1.0 - 0.08 * rng.random() * (1 + np.sin(np.linspace(0, 3 * np.pi, apex_end - onset_end)))
    env[apex_end:end] = np.linspace(1, 0, end - apex_end) ** 1.2
    return env


def _assign_classes(slots_per_video: list[list], splits: list[str], rng: np.random.Generator,
                    cover: tuple[str, ...] = ("train", "validation")) -> list[list[str]]:
    """Draw episode classes like the real balance, but make every class occur in each split of ``cover``.

    Training always gets one episode of each class; validation (and test) too when it has enough
    episodes (macro F1 counts a class missing from the truth as 0, even for a perfect model).
    """
    names = list(EPISODE_SHARE)
    p = np.array(list(EPISODE_SHARE.values()), dtype=np.float64)
    p /= p.sum()
    classes = [[names[i] for i in rng.choice(len(names), size=len(slots), p=p)] for slots in slots_per_video]
    for split in cover:
        split_slots = [(v, k) for v, slots in enumerate(slots_per_video) if splits[v] == split
                       for k in range(len(slots))]
        order = rng.permutation(len(split_slots))
        for name, j in zip(rng.permutation(names), order):  # one guaranteed episode per class
            v, k = split_slots[j]
            classes[v][k] = str(name)
    return classes


def _speech(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """On/off talking stretches (a two-state Markov chain, about half the time talking)."""
    talking = np.zeros(n_frames, dtype=bool)
    state, t = bool(rng.random() < 0.5), 0
    while t < n_frames:
        length = int(rng.integers(15, 70)) if state else int(rng.integers(10, 60))
        talking[t:t + length] = state
        state, t = not state, t + length
    return talking


def plan_video(name: str, split: str, index: int, classes: list[str], slots: list, rng: np.random.Generator,
               n_frames: int, *, audio: bool) -> VideoPlan:
    """The full story of one video: labels, AU intensities, nuisances and (optionally) audio."""
    identity = sample_identity(rng)
    T = n_frames
    au = np.zeros((T, 12))
    tonus = np.zeros(12)
    for name_, chance, top in (("AU7", 0.45, 0.5), ("AU10", 0.35, 0.45), ("AU6", 0.2, 0.4), ("AU4", 0.1, 0.3),
                               ("AU12", 0.1, 0.35)):
        if rng.random() < chance:
            tonus[_AU[name_]] = rng.uniform(0.1, top)
    au += tonus
    mood_v, mood_a = rng.normal(0.0, 0.12), rng.normal(-0.05, 0.1)
    va_target = np.zeros((T, 2))
    episode_class = np.full(T, -1, dtype=np.int64)
    expression = np.zeros(T, dtype=np.int64)
    for cls, slot in zip(classes, slots):
        env = _envelope(T, slot, rng)
        intensity = rng.uniform(0.55, 1.0)
        for au_name, (prob, scale) in EXPR_PROTOTYPES[cls].items():
            if rng.random() < prob:
                contribution = env * intensity * scale * rng.uniform(0.8, 1.2)
                au[:, _AU[au_name]] = np.maximum(au[:, _AU[au_name]], contribution)
        cid = EXPR_NAMES.index(cls)
        va_target += np.outer(env * intensity, EXPR_CIRCUMPLEX[cls])
        span = slice(slot[0], slot[3])
        episode_class[span] = cid
        visible = (env * intensity >= 0.2)
        expression[visible] = cid

    talking = _speech(rng, T)
    talk_smooth = _smooth(talking.astype(float), 2.0)
    arousal_pre = np.clip(va_target[:, 1] + mood_a + 0.12 * talk_smooth, -1, 1)
    valence_pre = np.clip(va_target[:, 0] + mood_v, -1, 1)
    n_samples = int(round(T / FPS * SAMPLE_RATE))
    t_samples = (np.arange(n_samples) + 0.5) / SAMPLE_RATE
    t_frames = (np.arange(T) + 0.5) / FPS
    a_s = np.interp(t_samples, t_frames, arousal_pre)
    v_s = np.interp(t_samples, t_frames, valence_pre)
    talk_s = np.interp(t_samples, t_frames, talk_smooth)
    pitch = float(rng.uniform(100, 230))
    wave, env_s = synthesize_voice(v_s, a_s, talk_s, pitch=pitch, rng=rng, phase0=float(rng.uniform(0, 6.28)))
    syllable = env_s[np.minimum((t_frames * SAMPLE_RATE).astype(int), n_samples - 1)]
    au[:, _AU["AU25"]] = np.maximum(au[:, _AU["AU25"]], talking * (0.32 + 0.55 * syllable))
    au[:, _AU["AU26"]] = np.maximum(au[:, _AU["AU26"]], talking * 0.4 * syllable**1.5)
    au += _smooth(rng.normal(0, 0.03, (T, 12)), 1.5)
    au = np.clip(au, 0.0, 1.0)

    drift = np.stack([_ar1(rng, T, 0.06, 0.98), _ar1(rng, T, 0.06, 0.98)], axis=1)
    va = _smooth(np.stack([valence_pre, arousal_pre], axis=1) + drift, 3.0)
    va = np.clip(va, -0.98, 0.98)

    # nuisances: pose, light, blur, noise, JPEG, occluders
    excitement = 1.0 + 0.8 * (va[:, 1] + 1) / 2
    roll = _ar1(rng, T, 5.0, 0.93) * excitement
    yaw = np.clip(_ar1(rng, T, 0.35, 0.95), -0.8, 0.8)
    scale = 1.0 + _ar1(rng, T, 0.04, 0.95)
    dx, dy = _ar1(rng, T, 0.025, 0.9) * excitement, _ar1(rng, T, 0.02, 0.9)
    poses = [Pose(roll=float(roll[i]), scale=float(scale[i]), dx=float(dx[i]), dy=float(dy[i]), yaw=float(yaw[i]))
             for i in range(T)]
    light = np.stack([np.clip(rng.uniform(0.75, 1.15) + _ar1(rng, T, 0.05, 0.97), 0.5, 1.4),
                      np.full(T, rng.uniform(0, 2 * np.pi)) + _ar1(rng, T, 0.2, 0.98),
                      np.full(T, rng.uniform(0.0, 0.35))], axis=1)
    blur = np.clip(rng.uniform(0.0, 0.5) + 0.1 * rng.standard_normal(T), 0, None)
    blur[rng.random(T) < 0.05] += rng.uniform(0.8, 1.6)  # motion blur now and then
    jpeg = np.clip(rng.uniform(60, 95) + rng.normal(0, 4, T), 35, 98).astype(int)
    occluders: list[Occluder | None] = [None] * T
    occluded = np.zeros((T, 2), dtype=bool)
    for _ in range(rng.poisson(T / 150)):
        length = int(rng.integers(8, 31))
        start = int(rng.integers(0, max(1, T - length)))
        target = int(rng.integers(2))  # 0 eyes, 1 mouth
        y = identity.eye_y if target == 0 else identity.mouth_y + 0.01
        kind = "hand" if rng.random() < 0.6 else "bar"
        if kind == "hand":  # someone's hand: another skin tone, so it does not melt into the face
            color = _rgb_tuple(SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.8, 0.95))
        else:
            color = tuple(int(c) for c in rng.integers(20, 120, 3))
        width = rng.uniform(0.25, 0.4) if target == 0 else rng.uniform(0.2, 0.3)
        height = rng.uniform(0.1, 0.14)
        side = rng.choice([-1, 1])
        for j, i in enumerate(range(start, min(T, start + length))):
            x = 0.5 + side * (0.55 - 1.1 * j / max(1, length - 1))
            occluders[i] = Occluder(kind=kind, x=float(x), y=float(y), width=float(width), height=float(height),
                                    color=tuple(int(c) for c in color))
            occluded[i, target] = abs(x - 0.5) < width / 2 + 0.05
    return VideoPlan(
        name=name, split=split, index=index, identity=identity, pitch=pitch, au_intensity=au,
        valence=va[:, 0], arousal=va[:, 1], expression=expression, episode_class=episode_class,
        talking=talking, poses=poses, occluders=occluders, occluded=occluded, light=light, blur=blur,
        noise=float(rng.uniform(2, 8)), jpeg_quality=jpeg, audio=wave if audio else None,
    )


def annotate(plan: VideoPlan, rng: np.random.Generator, missing: dict[str, float]) -> dict[str, np.ndarray]:
    """The noisy, partly missing labels a human annotator would give ``plan``'s video."""
    T = plan.n_frames
    clean_va = np.stack([plan.valence, plan.arousal], axis=1)
    bias = np.stack([_smooth(_ar1(rng, T, 0.06, 0.97), 5), _smooth(_ar1(rng, T, 0.06, 0.97), 5)], axis=1)
    va = np.round(np.clip(clean_va + bias + rng.normal(0, 0.03, (T, 2)), -1, 1), 4)
    # AUs: each annotator draws the line at a slightly different intensity, and slips now and then
    thresholds = AU_THRESHOLD + rng.normal(0, 0.05, 12)
    au = (plan.au_intensity >= thresholds).astype(np.int64)
    flips = rng.random((T, 12)) < 0.01
    au[flips] = 1 - au[flips]
    # expression: boundaries where the annotator sees the expression, and the odd confusion
    expr = np.zeros(T, dtype=np.int64)
    ec = plan.episode_class
    starts = np.flatnonzero(np.diff(np.concatenate([[-2], ec])) != 0)
    for s in starts:
        cid = int(ec[s])
        if cid < 0:
            continue
        e = s
        while e < T and ec[e] == cid:
            e += 1
        seen = plan.expression[s:e] == cid
        shift = int(rng.integers(-3, 4))
        seen = np.roll(seen, shift) if abs(shift) < seen.size else seen
        label = EXPR_NAMES[cid]
        if rng.random() < 0.05 and label in CONFUSABLE:
            label = CONFUSABLE[label]
        expr[s:e][seen] = EXPR_NAMES.index(label)
    out = {"va": va, "expr": expr, "au": au}
    for task, rate in missing.items():
        mask = _missing_mask(rng, T, rate)
        if task == "va":
            out["va"] = np.where(mask[:, None], MISSING_VA, out["va"])
        elif task == "expr":
            out["expr"] = np.where(mask, MISSING_EXPR, out["expr"])
        else:
            out["au"] = np.where(mask[:, None], MISSING_AU, out["au"])
    return out


def _missing_mask(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """Contiguous stretches of missing labels covering about ``rate`` of ``n`` frames."""
    mask = np.zeros(n, dtype=bool)
    if rate <= 0:
        return mask
    if rng.random() < rate * 0.5:  # sometimes a whole video lacks the task, as in the real set
        mask[:] = True
        return mask
    whole = rate * 0.5
    target = int(round(n * (rate - whole) / (1 - whole)))  # so that the expected total is ``rate``
    while mask.sum() < target:
        length = min(int(rng.integers(max(1, n // 12), max(2, n // 4))), target - int(mask.sum()))
        free = np.flatnonzero(~mask)
        start = int(free[rng.integers(free.size)])
        mask[start:start + length] = True
    return mask


def _ensure_au_coverage(plans: list[VideoPlan], seed: int) -> None:
    """Make every AU active somewhere in each split: an AU that no expression episode of a split
    switched on (AU23 often, in a small set) gets one short activation of its own in one of the
    split's videos, as real faces show AUs outside prototypical expressions too. Splits that
    already show every AU are left untouched."""
    for s_index, split in enumerate(("train", "validation", "test")):
        members = [p for p in plans if p.split == split]
        for k in range(len(AU_NAMES)):
            if not members or any(np.any(p.au_intensity[:, k] >= AU_THRESHOLD) for p in members):
                continue
            rng = np.random.default_rng([seed, 3, s_index, k])
            plan = members[int(rng.integers(len(members)))]
            length = min(plan.n_frames, int(rng.integers(12, 25)))
            start = int(rng.integers(0, plan.n_frames - length + 1))
            bump = np.sin(np.linspace(0, np.pi, length)) ** 2 * rng.uniform(0.55, 0.9)
            plan.au_intensity[start:start + length, k] = np.maximum(plan.au_intensity[start:start + length, k], bump)


def _ensure_expr_coverage(plans: list[VideoPlan]) -> None:
    """Keep at least one labelled frame of every class in each split (unmask where needed)."""
    for split in ("train", "validation", "test"):
        members = [p for p in plans if p.split == split]
        for cid in range(len(EXPR_NAMES)):
            if any(np.any(p.annotations["expr"] == cid) for p in members):
                continue
            for p in members:
                hit = p.expression == cid
                if hit.any():
                    p.annotations["expr"][hit] = cid
                    break


# --------------------------------------------------------------------------------------
# pixels
# --------------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) * 2 - 1
    return yy, xx


def finish_frame(img: Image.Image, light: np.ndarray, blur: float, noise: np.ndarray) -> Image.Image:
    """Lighting gradient, sensor noise and blur on a rendered face."""
    arr = np.asarray(img, dtype=np.float32)
    yy, xx = _grid(img.size[0])
    gain, angle, strength = light
    shade = gain * (1.0 + strength * (np.cos(angle) * xx + np.sin(angle) * yy))
    arr = arr * shade[:, :, None] + noise
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if blur > 0.15:
        out = out.filter(ImageFilter.GaussianBlur(radius=float(blur)))
    return out


def _pack_regions(regions: list[list[np.ndarray]]) -> np.ndarray:
    packed = np.full((12, 2, REGION_VERTICES, 2), np.nan, dtype=np.float32)
    for k, polys in enumerate(regions):
        for j, poly in enumerate(polys[:2]):
            packed[k, j] = poly
    return packed


def _render_video(plan: VideoPlan, root: str, image_size: int, seed: int) -> str:
    """Render and write one video's frames, ground truth and audio (run in a worker)."""
    root_p = Path(root)
    rng = np.random.default_rng([seed, plan.index, 7])
    final = root_p / "cropped_aligned" / plan.name
    partial = root_p / "cropped_aligned" / f".partial-{plan.name}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    bank = rng.normal(0, plan.noise, (4, image_size, image_size, 3)).astype(np.float32)
    regions = np.empty((plan.n_frames, 12, 2, REGION_VERTICES, 2), dtype=np.float32)
    for i in range(plan.n_frames):
        img, regs = render_face(plan.identity, plan.au_intensity[i], plan.poses[i], image_size=image_size,
                                occluder=plan.occluders[i])
        noise = np.roll(bank[i % 4], shift=(int(rng.integers(image_size)), int(rng.integers(image_size))), axis=(0, 1))
        img = finish_frame(img, plan.light[i], float(plan.blur[i]), noise)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(plan.jpeg_quality[i]))
        (partial / f"{i + 1:05d}.jpg").write_bytes(buf.getvalue())
        regions[i] = _pack_regions(regs)
    gt_dir = root_p / "ground_truth"
    atomic_write(gt_dir / f"{plan.name}.npz", _npz_bytes(
        valence=plan.valence.astype(np.float32), arousal=plan.arousal.astype(np.float32),
        expression=plan.expression.astype(np.int8), episode_class=plan.episode_class.astype(np.int8),
        au=(plan.au_intensity >= AU_THRESHOLD).astype(np.int8), au_intensity=plan.au_intensity.astype(np.float16),
        regions=regions.astype(np.float16), occluded=plan.occluded, talking=plan.talking,
        pose=np.array([[p.roll, p.scale, p.dx, p.dy, p.yaw] for p in plan.poses], dtype=np.float32),
    ))
    if plan.audio is not None:
        atomic_write(root_p / "audio" / f"{plan.name}.wav", wav_bytes(plan.audio))
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    return plan.name


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


# --------------------------------------------------------------------------------------
# the data set
# --------------------------------------------------------------------------------------

def video_names(n_videos: int) -> list[str]:
    """Video folder names, in the style of the real set's numbered videos."""
    return [f"{100 + i}" if i % 4 else f"video{100 + i}_1" for i in range(n_videos)]


def _config(n_videos, frames_per_video, image_size, seed, audio, val_fraction, test_videos=0) -> dict:
    config = {"generator": GENERATOR, "version": VERSION, "n_videos": int(n_videos),
              "frames_per_video": int(frames_per_video), "image_size": int(image_size), "seed": int(seed),
              "audio": bool(audio), "val_fraction": float(val_fraction), "fps": FPS,
              "sample_rate": SAMPLE_RATE, "au_threshold": AU_THRESHOLD, "missing": MISSING_RATES}
    if test_videos:  # only then: a data set made without a test split keeps its settings (and caches)
        config["test_videos"] = int(test_videos)
    return config


def plan_dataset(n_videos: int, frames_per_video: int, *, seed: int = 0, audio: bool = False,
                 val_fraction: float = 0.2, test_videos: int = 0) -> list[VideoPlan]:
    """Plan every video (labels, annotations, nuisances) without drawing anything.

    ``n_videos`` are split into training and validation (``val_fraction``); ``test_videos`` more
    videos, of people seen in neither, form the test split. The test videos draw from their own
    random streams, so the training and validation videos are the same with or without them.
    """
    if n_videos < 2 or frames_per_video < 20:
        raise ValueError(f"need at least 2 videos of 20 frames, got {n_videos} x {frames_per_video}")
    if test_videos < 0:
        raise ValueError(f"test_videos must be 0 or more, got {test_videos}")
    root_rng = np.random.default_rng([seed, 0])
    names = video_names(n_videos + test_videos)
    n_val = max(1, int(round(n_videos * val_fraction)))
    order = root_rng.permutation(n_videos)
    splits = ["train"] * n_videos
    for v in order[:n_val]:
        splits[v] = "validation"
    rngs = [np.random.default_rng([seed, 1, v]) for v in range(n_videos)]
    slots = [_episode_slots(rngs[v], frames_per_video) for v in range(n_videos)]
    train_slots = sum(len(s) for v, s in enumerate(slots) if splits[v] == "train")
    if train_slots < len(EPISODE_SHARE):
        raise ValueError(f"{n_videos - n_val} training videos of {frames_per_video} frames hold only "
                         f"{train_slots} expression episodes; need {len(EPISODE_SHARE)} to show every class: "
                         "use more or longer videos")
    classes = _assign_classes(slots, splits, root_rng)
    plans = [plan_video(names[v], splits[v], v, classes[v], slots[v], rngs[v], frames_per_video, audio=audio)
             for v in range(n_videos)]
    if test_videos:  # new people: each video draws its own identity from its own stream
        test_rngs = [np.random.default_rng([seed, 1, v]) for v in range(n_videos, n_videos + test_videos)]
        test_slots = [_episode_slots(rng, frames_per_video) for rng in test_rngs]
        test_classes = _assign_classes(test_slots, ["test"] * test_videos, np.random.default_rng([seed, 4]),
                                       cover=("test",))
        plans += [plan_video(names[v], "test", v, test_classes[i], test_slots[i], test_rngs[i], frames_per_video,
                             audio=audio) for i, v in enumerate(range(n_videos, n_videos + test_videos))]
    _ensure_au_coverage(plans, seed)
    for v, plan in enumerate(plans):  # the test split is annotated like validation
        rates = MISSING_RATES["validation" if plan.split == "test" else plan.split]
        plan.annotations = annotate(plan, np.random.default_rng([seed, 2, v]), rates)
    _ensure_expr_coverage(plans)
    return plans


def _annotation_table(plans: list[VideoPlan]):
    """The annotation table of ``plans`` (the columns and dtypes of :func:`abaw.read_mtl_annotations`)."""
    import pandas as pd

    from .abaw import LABEL_COLUMNS, _make_table

    labels = pd.DataFrame(np.concatenate([np.column_stack([p.annotations["va"], p.annotations["expr"],
                                                           p.annotations["au"]]) for p in plans]),
                          columns=list(LABEL_COLUMNS))
    image = [f"{p.name}/{i + 1:05d}.jpg" for p in plans for i in range(p.n_frames)]
    video = [p.name for p in plans for _ in range(p.n_frames)]
    frame = np.concatenate([np.arange(1, p.n_frames + 1) for p in plans])
    return _make_table(image, video, frame, labels)


def generate_dataset(root: Path | str, *, n_videos: int, frames_per_video: int, image_size: int = 112,
                     seed: int = 0, audio: bool = False, val_fraction: float = 0.2, test_videos: int = 0,
                     workers: int | None = None, overwrite: bool = False, progress_bar: bool = True) -> Path:
    """Generate SynthAffWild into ``root`` in the s-Aff-Wild2 layout; returns ``root``.

    With ``test_videos``, a test split of new people as the challenge hands it out: the list of its
    images (:data:`~course_lib.data.abaw.TEST_LIST`) and, apart, its labels
    (:data:`~course_lib.data.abaw.TEST_LABELS`), which only the final score may read.

    Reuses a complete data set with the same settings, resumes an interrupted one (finished
    videos are kept), and refuses to replace a different one unless ``overwrite=True``.
    ``workers`` processes render videos in parallel (default: one per core, one if small).
    """
    from ..progress import progress
    from .abaw import TEST_LABELS, TEST_LIST, write_mtl_annotations, write_test_list

    root = Path(root)
    config = _config(n_videos, frames_per_video, image_size, seed, audio, val_fraction, test_videos)
    meta_path, partial_path = root / "metadata.json", root / ".generating.json"
    if meta_path.exists():
        existing = json.loads(meta_path.read_text())
        if existing.get("config") == config:
            return root
        if not overwrite:
            diff = sorted(k for k in config if existing.get("config", {}).get(k) != config[k])
            raise FileExistsError(f"{root} holds a different data set (differs in {', '.join(diff)}): "
                                  "pass overwrite=True or choose another folder")
    if overwrite or (partial_path.exists() and json.loads(partial_path.read_text()) != config):
        for sub in ("cropped_aligned", "ground_truth", "audio", Path(TEST_LABELS).parent):
            shutil.rmtree(root / sub, ignore_errors=True)
        for f in ("training_set_annotations.txt", "validation_set_annotations.txt", TEST_LIST, "metadata.json"):
            (root / f).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(partial_path, json.dumps(config).encode())
    plans = plan_dataset(n_videos, frames_per_video, seed=seed, audio=audio, val_fraction=val_fraction,
                         test_videos=test_videos)

    def done(p: VideoPlan) -> bool:
        return ((root / "cropped_aligned" / p.name).is_dir() and (root / "ground_truth" / f"{p.name}.npz").exists()
                and (not audio or (root / "audio" / f"{p.name}.wav").exists()))

    todo = [p for p in plans if not done(p)]
    total_frames = (n_videos + test_videos) * frames_per_video
    if workers is None:
        workers = 1 if total_frames < 1500 else min(os.cpu_count() or 1, len(todo))
    bar = progress(total=sum(p.n_frames for p in todo), desc="rendering frames", unit="frame",
                   disable=not progress_bar)
    if workers <= 1 or len(todo) <= 1:
        for p in todo:
            _render_video(p, str(root), image_size, seed)
            bar.update(p.n_frames)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_render_video, p, str(root), image_size, seed): p for p in todo}
            for fut in futures:
                fut.result()
                bar.update(futures[fut].n_frames)
    bar.close()
    table = _annotation_table(plans)
    split = table["video"].map({p.name: p.split for p in plans})
    write_mtl_annotations(table[split == "train"], root / "training_set_annotations.txt")
    write_mtl_annotations(table[split == "validation"], root / "validation_set_annotations.txt")
    if test_videos:
        (root / TEST_LABELS).parent.mkdir(exist_ok=True)
        write_mtl_annotations(table[split == "test"], root / TEST_LABELS)
        write_test_list(table.loc[split == "test", "image"].tolist(), root / TEST_LIST)
    written = ("train", "validation", "test") if test_videos else ("train", "validation")
    metadata = {"config": config, "fps": FPS, "sample_rate": SAMPLE_RATE if audio else None,
                "image_size": image_size, "splits": {s: [p.name for p in plans if p.split == s] for s in written},
                "frames": {p.name: p.n_frames for p in plans}}
    atomic_write(meta_path, json.dumps(metadata, indent=1).encode())
    partial_path.unlink(missing_ok=True)
    return root


def read_metadata(root: Path | str) -> dict:
    """The ``metadata.json`` of a generated data set (raises FileNotFoundError for real data)."""
    path = Path(root) / "metadata.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {root} is not a complete SynthAffWild data set")
    return json.loads(path.read_text())


def dataset_fingerprint(root: Path | str) -> str:
    """A short hash identifying the data in ``root`` (cache keys for features and checkpoints)."""
    root = Path(root)
    h = hashlib.sha256()
    meta = root / "metadata.json"
    if meta.exists():
        h.update(meta.read_bytes())
    for name in ("training_set_annotations.txt", "validation_set_annotations.txt"):
        path = root / name
        if path.exists():
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def load_ground_truth(root: Path | str, video: str) -> dict[str, np.ndarray]:
    """The clean labels, AU intensities, AU regions and flags of one generated video."""
    path = Path(root) / "ground_truth" / f"{video}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: ground truth exists only for SynthAffWild data")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def au_region_masks(ground_truth: dict[str, np.ndarray], frame_index: int, image_size: int) -> np.ndarray:
    """Boolean masks (12, H, W): where each AU acts in frame ``frame_index`` (0-based)."""
    regions = ground_truth["regions"][frame_index].astype(np.float64)
    return np.stack([region_mask([poly for poly in regions[k] if np.all(np.isfinite(poly))], image_size)
                     for k in range(12)])


def clean_labels(root: Path | str, table) -> dict[str, np.ndarray]:
    """Clean (noise-free, never missing) labels for the rows of an annotation ``table``."""
    va = np.zeros((len(table), 2), dtype=np.float64)
    expr = np.zeros(len(table), dtype=np.int64)
    au = np.zeros((len(table), 12), dtype=np.int64)
    for video, rows in table.groupby("video", sort=False).indices.items():
        gt = load_ground_truth(root, video)
        frames = table["frame"].to_numpy()[rows] - 1
        va[rows] = np.stack([gt["valence"][frames], gt["arousal"][frames]], axis=1)
        expr[rows] = gt["expression"][frames]
        au[rows] = gt["au"][frames]
    return {"va": va, "expr": expr, "au": au}


def oracle_scores(root: Path | str, split: str = "validation") -> dict:
    """P_MTL (and its parts) of the clean labels scored against the noisy annotations.

    What a model that recovered the truth perfectly would score: a scale for the gap a model
    closes, not a proven ceiling (CCC and F1 reward matching the annotators' mean, spread and
    thresholds, which a prediction can do better than the truth; ``01_data`` tests it for VA).
    """
    from ..metrics import p_mtl
    from .abaw import TEST_LABELS, read_mtl_annotations

    name = {"train": "training_set_annotations.txt", "validation": "validation_set_annotations.txt",
            "test": TEST_LABELS}[split]
    table = read_mtl_annotations(Path(root) / name)
    clean = clean_labels(root, table)
    return p_mtl(table[["valence", "arousal"]].to_numpy(), clean["va"], table["expression"].to_numpy(),
                 clean["expr"], table[list(AU_NAMES)].to_numpy(), clean["au"])


def ensure_course_data(mode: str = "smoke", *, audio: bool = True, seed: int = 0,
                       progress_bar: bool = True) -> Path:
    """The data folder the notebooks use: a real copy if ``COURSE_DATA`` holds one, else SynthAffWild.

    A folder with ``training_set_annotations.txt`` and ``cropped_aligned/`` but no
    SynthAffWild metadata is taken as a real s-Aff-Wild2 copy and used as it is. Otherwise the
    synthetic set for ``mode`` is generated under ``<data>/synth-<mode>`` (reused when present;
    regenerated when it was made by another generator version or with other settings).
    """
    from ..config import data_dir

    base = data_dir(create=True)
    if (base / "training_set_annotations.txt").exists() and (base / "cropped_aligned").is_dir() \
            and not (base / "metadata.json").exists():
        return base
    return synthetic_course_data(mode, audio=audio, seed=seed, progress_bar=progress_bar)


def synthetic_course_data(mode: str = "smoke", *, audio: bool = True, seed: int = 0,
                          progress_bar: bool = True) -> Path:
    """SynthAffWild for ``mode`` under ``<data>/synth-<mode>``, even when ``COURSE_DATA`` holds a real copy
    (``07_multimodal_audio`` uses it when the real copy has no audio).

    Reused when present; regenerated when it was made by another generator version or with other settings.
    """
    from ..config import data_dir, mode_settings

    return generate_dataset(data_dir(create=True) / f"synth-{mode}", **mode_settings(COURSE_SIZES, mode), seed=seed,
                            audio=audio, progress_bar=progress_bar, overwrite=True)


__all__ = ["AU_THRESHOLD", "COURSE_SIZES", "EXPR_PROTOTYPES", "Identity", "Occluder", "Pose", "VideoPlan",
           "au_region_masks", "clean_labels", "dataset_fingerprint", "ensure_course_data", "generate_dataset",
           "load_ground_truth", "oracle_scores", "plan_dataset", "read_metadata", "render_face",
           "sample_identity", "synthetic_course_data"]
