"""The pretraining corpus: thousands of synthetic identities, disjoint from every course split.

Taught in ``02_backbones_and_features`` (transfer). Every ABAW system starts from a backbone
pretrained on far more faces than the target set (AffectNet, MAE on faces, DINOv2, face
recognition). The course's analogue is this corpus: faces of identities drawn from their own
seed range (:data:`CORPUS_SEED`, never used by :func:`~course_lib.data.synth.generate_dataset`),
each shown in a handful of independent frames with every nuisance on (pose, light, blur,
noise, JPEG, occluders), labelled with the renderer's clean AU intensities.

AU intensities are drawn so that the backbone learns each AU rather than their co-occurrence:
half the frames switch every AU on or off *independently* (the rare AU15, AU23 and AU24 as
often as AU12), the other half come from the expression prototypes of SynthAffWild (natural
co-occurrence, so that the corpus also looks like faces that feel something).

Frames are rendered once, in shards of :data:`SHARD_IDENTITIES` identities (per shard
uint8 pixels after JPEG in ``.npy``, AU intensities, occlusion flags and identity numbers in ``.npz``), written
atomically, so an interrupted build resumes; readers memory-map the pixels (``.npy``), so memory stays
bounded whatever the corpus size.
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import atomic_write
from ..labels import AU_NAMES
from ..progress import progress
from .face import SKIN_TONES, Occluder, Pose, render_face, sample_identity
from .plan import EXPR_PROTOTYPES
from .synth import finish_frame

#: Identities of the corpus are numbered from here: the course's data sets use seeds 0..999.
CORPUS_SEED: int = 1_000_000
#: Identities per shard file.
SHARD_IDENTITIES: int = 100
#: AUs whose region an eye (0) or mouth (1) occluder hides: their target is unobservable there.
EYE_AUS: tuple[int, ...] = tuple(AU_NAMES.index(a) for a in ("AU1", "AU2", "AU4", "AU6", "AU7"))
MOUTH_AUS: tuple[int, ...] = tuple(AU_NAMES.index(a) for a in ("AU10", "AU12", "AU15", "AU23", "AU24", "AU25",
                                                                 "AU26"))
_PROTOTYPES = [name for name in EXPR_PROTOTYPES if name != "Neutral"]


@dataclass(frozen=True)
class CorpusSpec:
    """Which identities (``first`` .. ``first + n_identities - 1``), how many frames each, what size."""

    n_identities: int
    frames_per_identity: int = 20
    first: int = CORPUS_SEED
    image_size: int = 112

    @property
    def n_frames(self) -> int:
        return self.n_identities * self.frames_per_identity

    def as_dict(self) -> dict:
        return {"n_identities": self.n_identities, "frames_per_identity": self.frames_per_identity,
                "first": self.first, "image_size": self.image_size, "version": 1}


def sample_au_intensities(rng: np.random.Generator) -> np.ndarray:
    """12 AU intensities in [0, 1]: independent switches half the time, an expression prototype otherwise."""
    if rng.random() < 0.5:
        on = rng.random(12) < 0.4
        au = np.where(on, rng.uniform(0.0, 1.0, 12), rng.uniform(0.0, 0.12, 12))
    else:
        au = rng.uniform(0.0, 0.12, 12)
        intensity = rng.uniform(0.2, 1.0)
        for name, (prob, scale) in EXPR_PROTOTYPES[_PROTOTYPES[rng.integers(len(_PROTOTYPES))]].items():
            if rng.random() < prob:
                k = AU_NAMES.index(name)
                au[k] = max(au[k], intensity * scale * rng.uniform(0.8, 1.2))
        extra = rng.random(12) < 0.1  # an AU outside the prototype now and then
        au = np.where(extra, np.maximum(au, rng.uniform(0.0, 1.0, 12)), au)
    return np.clip(au, 0.0, 1.0)


def _sample_occluder(rng: np.random.Generator, eye_y: float, mouth_y: float) -> tuple[Occluder, np.ndarray]:
    target = int(rng.integers(2))  # 0 eyes, 1 mouth
    y = eye_y if target == 0 else mouth_y + 0.01
    kind = "hand" if rng.random() < 0.6 else "bar"
    if kind == "hand":
        color = tuple(int(c) for c in np.clip(SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.8, 0.95),
                                              0, 255))
    else:
        color = tuple(int(c) for c in rng.integers(20, 120, 3))
    width = rng.uniform(0.25, 0.4) if target == 0 else rng.uniform(0.2, 0.3)
    x = 0.5 + rng.uniform(-0.55, 0.55)
    occluded = np.zeros(2, dtype=bool)
    occluded[target] = abs(x - 0.5) < width / 2 + 0.05
    return Occluder(kind=kind, x=float(x), y=float(y), width=float(width), height=float(rng.uniform(0.1, 0.14)),
                    color=color), occluded


def render_identity(identity_number: int, frames: int, image_size: int = 112) -> dict[str, np.ndarray]:
    """``frames`` independent frames of corpus identity ``identity_number`` (deterministic in it)."""
    rng = np.random.default_rng([identity_number, 13])
    identity = sample_identity(rng)
    tonus = np.where(rng.random(12) < 0.15, rng.uniform(0.05, 0.3, 12), 0.0)
    pixels = np.empty((frames, image_size, image_size, 3), dtype=np.uint8)
    au = np.empty((frames, 12), dtype=np.float32)
    occluded = np.zeros((frames, 2), dtype=bool)
    for i in range(frames):
        a = np.clip(sample_au_intensities(rng) + tonus, 0.0, 1.0)
        pose = Pose(roll=float(rng.normal(0, 8)), scale=float(1 + rng.normal(0, 0.05)),
                    dx=float(rng.normal(0, 0.035)), dy=float(rng.normal(0, 0.03)),
                    yaw=float(np.clip(rng.normal(0, 0.4), -0.85, 0.85)))
        occluder = None
        if rng.random() < 0.2:
            occluder, occluded[i] = _sample_occluder(rng, identity.eye_y, identity.mouth_y)
        img, _ = render_face(identity, a, pose, image_size=image_size, occluder=occluder)
        light = np.array([rng.uniform(0.6, 1.3), rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.4)])
        blur = float(rng.uniform(0.0, 0.6) + (rng.uniform(0.8, 1.6) if rng.random() < 0.08 else 0.0))
        noise = rng.normal(0, rng.uniform(2, 8), (image_size, image_size, 3)).astype(np.float32)
        img = finish_frame(img, light, blur, noise)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(35, 96)))
        buf.seek(0)
        pixels[i] = np.asarray(Image.open(buf).convert("RGB"))
        au[i] = a
    return {"pixels": pixels, "au": au, "occluded": occluded,
            "identity": np.full(frames, identity_number, dtype=np.int64)}


def _render_shard(stem: str, numbers: list[int], frames: int, image_size: int) -> str:
    """Render one shard: ``<stem>.pixels.npy`` (memory-mappable), then ``<stem>.npz`` (labels; marks it done)."""
    parts = [render_identity(n, frames, image_size) for n in numbers]
    buf = io.BytesIO()
    np.save(buf, np.concatenate([p["pixels"] for p in parts]))
    atomic_write(Path(f"{stem}.pixels.npy"), buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, **{k: np.concatenate([p[k] for p in parts]) for k in ("au", "occluded", "identity")})
    atomic_write(Path(f"{stem}.npz"), buf.getvalue())
    return stem


class Corpus:
    """A rendered corpus on disk: ``len``, ``pixels(indices)``, and the label arrays ``au``,
    ``occluded``, ``identity`` (whole arrays in memory; pixels memory-mapped per shard)."""

    def __init__(self, root: Path, spec: CorpusSpec) -> None:
        self.root, self.spec = Path(root), spec
        self._pixels = []
        labels: dict[str, list[np.ndarray]] = {"au": [], "occluded": [], "identity": []}
        for stem in _shard_stems(self.root, spec):
            with np.load(f"{stem}.npz") as data:
                for k in labels:
                    labels[k].append(data[k])
            self._pixels.append(np.load(f"{stem}.pixels.npy", mmap_mode="r"))
        self.au = np.concatenate(labels["au"])
        self.occluded = np.concatenate(labels["occluded"])
        self.identity = np.concatenate(labels["identity"])
        sizes = [len(p) for p in self._pixels]
        self._starts = np.cumsum([0] + sizes)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def pixels(self, indices: np.ndarray) -> np.ndarray:
        """uint8 (len(indices), H, W, 3) for global frame ``indices``."""
        indices = np.asarray(indices)
        shard = np.searchsorted(self._starts, indices, side="right") - 1
        out = np.empty((len(indices),) + self._pixels[0].shape[1:], dtype=np.uint8)
        for s in np.unique(shard):
            hit = shard == s
            out[hit] = self._pixels[s][indices[hit] - self._starts[s]]
        return out


def _shard_stems(root: Path, spec: CorpusSpec) -> list[Path]:
    """One file stem per shard; a shard of fewer than :data:`SHARD_IDENTITIES` says how many it holds."""
    stems = []
    for k in range(-(-spec.n_identities // SHARD_IDENTITIES)):
        count = min(SHARD_IDENTITIES, spec.n_identities - k * SHARD_IDENTITIES)
        size = "" if count == SHARD_IDENTITIES else f"-{count}id"
        stems.append(root / f"shard-{spec.first + k * SHARD_IDENTITIES}{size}-{spec.frames_per_identity}f-"
                            f"{spec.image_size}px")
    return stems


def build_corpus(root: Path | str, spec: CorpusSpec, *, workers: int | None = None,
                 progress_bar: bool = True) -> Corpus:
    """Render the shards of ``spec`` that ``root`` lacks (resumable), then open the corpus."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(root / f"corpus-{spec.first}-{spec.n_identities}x{spec.frames_per_identity}.json",
                 json.dumps(spec.as_dict(), indent=1).encode())
    todo = []
    for k, stem in enumerate(_shard_stems(root, spec)):
        first = spec.first + k * SHARD_IDENTITIES
        numbers = list(range(first, min(first + SHARD_IDENTITIES, spec.first + spec.n_identities)))
        if not Path(f"{stem}.npz").exists():
            todo.append((str(stem), numbers))
    workers = workers or min(os.cpu_count() or 1, max(1, len(todo)))
    bar = progress(total=sum(len(n) for _, n in todo) * spec.frames_per_identity, desc="rendering corpus",
                   unit="frame", disable=not progress_bar or not todo)
    if workers <= 1:
        for path, numbers in todo:
            _render_shard(path, numbers, spec.frames_per_identity, spec.image_size)
            bar.update(len(numbers) * spec.frames_per_identity)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_render_shard, path, numbers, spec.frames_per_identity, spec.image_size):
                       len(numbers) for path, numbers in todo}
            for fut in futures:
                fut.result()
                bar.update(futures[fut] * spec.frames_per_identity)
    bar.close()
    return Corpus(root, spec)


__all__ = ["CORPUS_SEED", "Corpus", "CorpusSpec", "EYE_AUS", "MOUTH_AUS", "build_corpus", "render_identity",
           "sample_au_intensities"]
