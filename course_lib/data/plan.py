"""Planning SynthAffWild: every video's story, from who is filmed to what the annotators wrote.

Taught in ``01_data``. :func:`plan_dataset` decides everything about every video before any
pixel is drawn (:mod:`course_lib.data.synth` then renders and writes it), so the same seed gives
the same data set. The generative story, per video:

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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..labels import AU_NAMES, EXPR_CIRCUMPLEX, EXPR_NAMES, MISSING_AU, MISSING_EXPR, MISSING_VA
from .face import AU_THRESHOLD, SKIN_TONES, Identity, Occluder, Pose, sample_identity
from .voice import SAMPLE_RATE, synthesize_voice

#: Frames per second of every video (the audio follows the frames at this rate).
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


def video_names(n_videos: int) -> list[str]:
    """Video folder names, in the style of the real set's numbered videos."""
    return [f"{100 + i}" if i % 4 else f"video{100 + i}_1" for i in range(n_videos)]


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


__all__ = ["CONFUSABLE", "EPISODE_SHARE", "EXPR_PROTOTYPES", "FPS", "MISSING_RATES", "VideoPlan", "annotate",
           "plan_dataset", "plan_video", "video_names"]
