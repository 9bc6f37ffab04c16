"""The audio branch: log-Mel spectrograms aligned to video frames, a small CNN, and fusion.

Taught in ``07_multimodal_audio``. Seed 003 (ABAW2) adds the sound track to the face: a
64-band log-Mel spectrogram (20 ms window, 10 ms hop) goes through a small CNN, and its
embedding is concatenated with the per-frame visual features before the task heads. The
pieces, in the order the notebook builds them:

1. :func:`log_mel`: samples -> (n_mels, n_hops) log power in dB, with librosa.
2. :func:`frame_audio`: one window of ``context`` hops centred on each video frame.
   Frame ``i`` (0-based; file ``00001.jpg`` is ``i = 0``) covers ``[i / fps, (i + 1) / fps)``
   seconds, so its centre is at ``(i + 0.5) / fps`` seconds. librosa centres hop ``j`` at
   ``j * hop`` seconds (``center=True``), so the frame's centre is at the fractional hop
   ``(i + 0.5) / fps / hop`` and the nearest hop is :func:`hop_of_frame`. At 30 fps and a
   10 ms hop a frame lasts 3.33 hops: frame 0 is centred on hop 1.67 (nearest 2), frame 1 on
   hop 5, frame 2 on 8.33 (8), ... The window is the ``context`` hops whose middle is nearest
   that centre; hops before the start or after the end repeat the edge hop (edge padding).
3. :func:`audio_features`: the window of every row of an annotation table, with the per-video
   log-Mels cached on disk, and :func:`band_stats` / :func:`normalize_bands` to standardise
   each Mel band with the training split's mean and standard deviation.
4. :class:`AudioCNN` and :class:`AudioVisualModel` (visual only, audio only, or both fused),
   and :class:`AudioVisualDataset`, whose items feed ``fit(..., input_key=("pooled", "audio"))``.
5. :func:`occlusion_flags`: which frames have the eyes or the mouth hidden, or a person
   talking, from the SynthAffWild ground truth, for "occluded vs clear" evaluation.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import pandas as pd
import torch
from torch import nn

from .config import cache_dir
from .data.datasets import FrameLabels
from .data.synth import dataset_fingerprint, load_ground_truth, read_metadata
from .data.voice import SAMPLE_RATE, read_wav
from .features import CachedFeatures, FeatureRows
from .files import atomic_write
from .labels import AU_NAMES, EXPR_NAMES
from .progress import progress

#: Seed 003's log-Mel settings: 64 bands, 20 ms window, 10 ms hop.
N_MELS: int = 64
WIN_MS: float = 20.0
HOP_MS: float = 10.0
#: Hops per window around a frame: 31 hops = 0.31 s, about one syllable and 9 frames at 30 fps.
CONTEXT: int = 31
_CACHE_FORMAT = 1


# --------------------------------------------------------------------------- the spectrogram


def stft_sizes(sample_rate: int = SAMPLE_RATE, win_ms: float = WIN_MS, hop_ms: float = HOP_MS) -> dict[str, int]:
    """Window, hop and FFT length in samples: ``n_fft`` is the next power of two >= the window.

    At 16 kHz: a 20 ms window is 320 samples, a 10 ms hop 160, and ``n_fft`` 512 (the window
    is zero-padded to 512 points, which interpolates the spectrum; it adds no resolution).
    """
    win = int(round(sample_rate * win_ms / 1000.0))
    hop = int(round(sample_rate * hop_ms / 1000.0))
    if win < 1 or hop < 1:
        raise ValueError(f"window {win_ms} ms and hop {hop_ms} ms give {win} and {hop} samples at {sample_rate} Hz")
    return {"win_length": win, "hop_length": hop, "n_fft": 1 << (win - 1).bit_length()}


def log_mel(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, n_mels: int = N_MELS, win_ms: float = WIN_MS,
            hop_ms: float = HOP_MS) -> np.ndarray:
    """Log-Mel spectrogram ``(n_mels, n_hops)`` float32, in dB of power (``10 log10``, floor -100 dB).

    librosa's ``melspectrogram`` with a Hann window of ``win_ms``, hop ``hop_ms``, ``n_fft`` the
    next power of two (:func:`stft_sizes`), frames centred on the hops (``center=True``, zero
    padding: hop ``j`` is centred at ``j * hop_ms`` ms, there are ``1 + len(wave) // hop`` hops),
    Slaney Mel filters from 0 Hz to Nyquist; then ``power_to_db`` with ``ref=1`` and no
    ``top_db`` clipping, so levels are absolute and comparable between clips.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"wave must be 1-D (mono samples), got shape {wave.shape}")
    sizes = stft_sizes(sample_rate, win_ms, hop_ms)
    power = librosa.feature.melspectrogram(y=wave, sr=sample_rate, n_fft=sizes["n_fft"],
                                           hop_length=sizes["hop_length"], win_length=sizes["win_length"],
                                           window="hann", center=True, pad_mode="constant", power=2.0,
                                           n_mels=n_mels, fmin=0.0, fmax=sample_rate / 2.0)
    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None).astype(np.float32)


# --------------------------------------------------------------------------- alignment to frames


def hops_per_frame(fps: float, hop_ms: float = HOP_MS) -> float:
    """How many spectrogram hops one video frame lasts: ``1000 / (fps * hop_ms)`` (3.33 at 30 fps)."""
    return 1000.0 / (float(fps) * float(hop_ms))


def frame_centre_hop(frame: int | np.ndarray, fps: float, hop_ms: float = HOP_MS) -> np.ndarray:
    """The (fractional) hop index of the centre of 0-based video frame(s): ``(i + 0.5) / fps / hop``."""
    centre = (np.asarray(frame, dtype=np.float64) + 0.5) * hops_per_frame(fps, hop_ms)
    return np.round(centre, 9)  # 35.0000000001 and 34.9999999999 are both hop 35


def hop_of_frame(frame: int | np.ndarray, fps: float, hop_ms: float = HOP_MS) -> np.ndarray:
    """The hop nearest the centre of 0-based video frame(s) (halves round up)."""
    return np.floor(frame_centre_hop(frame, fps, hop_ms) + 0.5).astype(np.int64)


def window_starts(n_frames: int, fps: float, hop_ms: float = HOP_MS, context: int = CONTEXT) -> np.ndarray:
    """First hop of each frame's window: the ``context`` hops whose middle is nearest the frame centre.

    The middle of hops ``s .. s + context - 1`` is ``s + (context - 1) / 2``; for an odd
    ``context`` that is :func:`hop_of_frame` at position ``context // 2`` of the window.
    """
    if context < 1:
        raise ValueError(f"context must be >= 1 hop, got {context}")
    centre = frame_centre_hop(np.arange(int(n_frames)), fps, hop_ms)
    return np.floor(centre - (context - 1) / 2.0 + 0.5).astype(np.int64)


def frame_audio(logmel: np.ndarray, n_frames: int, fps: float, hop_ms: float = HOP_MS,
                context: int = CONTEXT) -> np.ndarray:
    """Windows ``(n_frames, n_mels, context)`` of a log-Mel ``(n_mels, n_hops)``, one per video frame.

    Window ``i`` holds the ``context`` hops centred on frame ``i``'s centre (see the module
    docstring and :func:`window_starts`); hops outside the spectrogram repeat its first or last
    hop (edge padding), so every frame gets a full window, also at the ends of a video.
    """
    logmel = np.asarray(logmel)
    if logmel.ndim != 2 or logmel.shape[1] < 1:
        raise ValueError(f"logmel must be (n_mels, n_hops), got shape {logmel.shape}")
    idx = window_starts(n_frames, fps, hop_ms, context)[:, None] + np.arange(context)[None, :]
    idx = np.clip(idx, 0, logmel.shape[1] - 1)
    return np.ascontiguousarray(logmel[:, idx].transpose(1, 0, 2))


# --------------------------------------------------------------------------- a data set's audio


def audio_path(root: Path | str, video: str) -> Path:
    """Where the audio of ``video`` lives: ``<root>/audio/<video>.wav`` (16-bit mono PCM)."""
    return Path(root) / "audio" / f"{video}.wav"


def _safe_name(video: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", video)
    return safe if safe == video else f"{safe}-{hashlib.sha1(video.encode()).hexdigest()[:8]}"


def _fps_of(root: Path, fps: float | dict[str, float] | None, video: str) -> float:
    if isinstance(fps, dict):
        if video not in fps:
            raise KeyError(f"no fps given for video {video!r} (fps= holds {len(fps)} videos)")
        return float(fps[video])
    if fps is not None:
        return float(fps)
    try:
        return float(read_metadata(root)["fps"])
    except FileNotFoundError:
        raise ValueError(f"{root} has no metadata.json (a real data copy?): pass fps= (one number, or "
                         "{video: fps}) so that frames can be aligned with the audio") from None


def video_log_mel(root: Path | str, video: str, *, sample_rate: int = SAMPLE_RATE, n_mels: int = N_MELS,
                  win_ms: float = WIN_MS, hop_ms: float = HOP_MS) -> np.ndarray:
    """The log-Mel of one video's WAV (resampled to ``sample_rate`` if it has another rate)."""
    path = audio_path(root, video)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: the audio branch needs one WAV per video in {Path(root) / 'audio'}. "
            "SynthAffWild writes them with generate_dataset(..., audio=True); for a real copy extract the "
            f"track, e.g. ffmpeg -i {video}.mp4 -ac 1 -ar {sample_rate} -sample_fmt s16 audio/{video}.wav")
    wave, rate = read_wav(path)
    if rate != sample_rate:
        wave = librosa.resample(wave, orig_sr=rate, target_sr=sample_rate)
    return log_mel(wave, sample_rate, n_mels, win_ms, hop_ms)


def audio_cache_dir(root: Path | str, *, sample_rate: int = SAMPLE_RATE, n_mels: int = N_MELS,
                    win_ms: float = WIN_MS, hop_ms: float = HOP_MS, create: bool = True) -> Path:
    """``cache_dir("audio", key)``: the key joins the settings and the data set's fingerprint."""
    key = (f"logmel{_CACHE_FORMAT}-{n_mels}mel-{win_ms:g}ms-{hop_ms:g}ms-{sample_rate}Hz-"
           f"{dataset_fingerprint(root)}")
    return cache_dir("audio", key, create=create)


def audio_features(root: Path | str, table: pd.DataFrame, *, context: int = CONTEXT, n_mels: int = N_MELS,
                   win_ms: float = WIN_MS, hop_ms: float = HOP_MS, sample_rate: int = SAMPLE_RATE,
                   fps: float | dict[str, float] | None = None, cache: bool = True,
                   normalize: tuple[torch.Tensor, torch.Tensor] | None = None,
                   progress_bar: bool = False) -> torch.Tensor:
    """The log-Mel window of every row of ``table``: float32 ``(len(table), n_mels, context)``, in dB.

    Row ``r`` (video ``v``, 1-based frame number ``f``) gets window ``f - 1`` of
    :func:`frame_audio` over ``<root>/audio/<v>.wav``. ``fps`` defaults to the data set's
    ``metadata.json`` (a real copy needs it passed). With ``cache=True`` each video's log-Mel
    is stored once under :func:`audio_cache_dir` (keyed by the data's fingerprint and the
    settings) and reused; the windows are cut on every call, which is fast. A video without
    its WAV raises ``FileNotFoundError`` naming the file.

    ``normalize=(mean, std)`` from :func:`band_stats` of the *training* rows standardises each
    Mel band (:func:`normalize_bands`); without it the windows are raw dB.
    """
    root = Path(root)
    if "video" not in table.columns or "frame" not in table.columns:
        raise ValueError("the table needs 'video' and 'frame' columns: build it with read_mtl_annotations")
    table = table.reset_index(drop=True)
    folder = audio_cache_dir(root, sample_rate=sample_rate, n_mels=n_mels, win_ms=win_ms, hop_ms=hop_ms) \
        if cache else None
    out = torch.empty((len(table), n_mels, context), dtype=torch.float32)
    groups = table.groupby("video", sort=False).indices
    for video, rows in progress(groups.items(), desc="audio", total=len(groups), disable=not progress_bar):
        cached = folder / f"{_safe_name(str(video))}.npy" if folder is not None else None
        if cached is not None and cached.exists():
            logmel = np.load(cached)
        else:
            logmel = video_log_mel(root, str(video), sample_rate=sample_rate, n_mels=n_mels, win_ms=win_ms,
                                   hop_ms=hop_ms)
            if cached is not None:
                buf = io.BytesIO()
                np.save(buf, logmel)
                atomic_write(cached, buf.getvalue())
        if logmel.shape[0] != n_mels:
            raise ValueError(f"cached log-Mel of {video!r} has {logmel.shape[0]} bands, not {n_mels}: "
                             f"delete {folder}")
        frames = table["frame"].to_numpy()[rows].astype(np.int64) - 1
        if frames.min() < 0:
            raise ValueError(f"video {video!r}: frame numbers start at 1 (file 00001.jpg), got {frames.min() + 1}")
        video_fps = _fps_of(root, fps, str(video))
        n_frames = int(frames.max()) + 1
        last_centre = float(frame_centre_hop(n_frames - 1, video_fps, hop_ms))
        if last_centre > logmel.shape[1] - 1 + hops_per_frame(video_fps, hop_ms):
            warnings.warn(f"the audio of {video!r} ends {(last_centre - logmel.shape[1] + 1) * hop_ms / 1000:.2f} s "
                          f"before its frame {n_frames}: is fps={video_fps:g} right? (edge hops repeat)",
                          stacklevel=2)
        windows = frame_audio(logmel, n_frames, video_fps, hop_ms, context)
        out[torch.from_numpy(rows)] = torch.from_numpy(windows[frames])
    if normalize is not None:
        out = normalize_bands(out, *normalize)
    return out


def band_stats(audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band mean and standard deviation ``(n_mels, 1)`` over all rows and hops of ``audio``.

    Compute them on the **training** windows only and apply them to every split, as with any
    input normalisation: the validation set must not shape the model. Loud low bands and
    near-silent high bands then reach the CNN on the same scale.
    """
    if audio.ndim != 3:
        raise ValueError(f"audio must be (rows, n_mels, context), got shape {tuple(audio.shape)}")
    flat = audio.transpose(0, 1).reshape(audio.shape[1], -1).double()
    return flat.mean(1, keepdim=True).float(), flat.std(1, keepdim=True).clamp_min(1e-3).float()


def normalize_bands(audio: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(audio - mean) / std`` per Mel band (stats from :func:`band_stats`)."""
    return (audio - mean) / std


def occlusion_flags(root: Path | str, table: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per row of ``table``: ``eyes`` / ``mouth`` occluded and ``talking`` (bool arrays), from the ground truth.

    Only SynthAffWild knows these (``ground_truth/<video>.npz``); a real copy raises
    ``FileNotFoundError``.
    """
    table = table.reset_index(drop=True)
    flags = {k: np.zeros(len(table), dtype=bool) for k in ("eyes", "mouth", "talking")}
    for video, rows in table.groupby("video", sort=False).indices.items():
        gt = load_ground_truth(root, str(video))
        frames = table["frame"].to_numpy()[rows].astype(np.int64) - 1
        if frames.max() >= len(gt["talking"]):
            raise ValueError(f"video {video!r}: frame {frames.max() + 1} is beyond its {len(gt['talking'])} "
                             "ground-truth frames")
        flags["eyes"][rows] = gt["occluded"][frames, 0]
        flags["mouth"][rows] = gt["occluded"][frames, 1]
        flags["talking"][rows] = gt["talking"][frames]
    return flags


# --------------------------------------------------------------------------- data set


class AudioVisualDataset(FrameLabels):
    """One frame per item: ``pooled`` visual features (C,), ``audio`` window (n_mels, context) and the labels.

    ``visual`` is the split's :class:`~course_lib.features.CachedFeatures` (rows matched to
    ``table`` by image name) or a tensor (len(table), C) in table order (e.g. features of
    edited frames); ``audio`` is :func:`audio_features` of the same ``table``, in its order.
    Either may be ``None`` for a one-modality model. Labels, masks and ``index`` are those of
    :class:`~course_lib.data.datasets.FrameDataset`, so ``fit(model, loader,
    input_key=("pooled", "audio"))`` trains an :class:`AudioVisualModel`.
    """

    def __init__(self, visual: CachedFeatures | torch.Tensor | None, audio: torch.Tensor | None,
                 table: pd.DataFrame) -> None:
        self._init_labels(table)
        n = len(self.table)
        self.visual: torch.Tensor | None = None
        if isinstance(visual, CachedFeatures):
            self.visual = FeatureRows(visual, self.table, ("pooled",), preload=True).data["pooled"]
        elif visual is not None:
            self.visual = torch.as_tensor(visual, dtype=torch.float32)
        if self.visual is not None and (self.visual.ndim != 2 or len(self.visual) != n):
            raise ValueError(f"visual features have shape {tuple(self.visual.shape)}, expected ({n}, C)")
        if audio is not None and (audio.ndim != 3 or len(audio) != n):
            raise ValueError(f"audio has shape {tuple(audio.shape)}, expected ({n}, n_mels, context): "
                             "make it with audio_features(root, table) of the same table")
        self.audio = audio

    def _inputs(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {}
        if self.visual is not None:
            item["pooled"] = self.visual[i]
        if self.audio is not None:
            item["audio"] = self.audio[i]
        return item


# --------------------------------------------------------------------------- models


class AudioCNN(nn.Module):
    """A small 2-D CNN over a log-Mel window: ``(B, n_mels, context)`` or ``(B, 1, n_mels, context)`` -> ``(B, dim)``.

    Three 3x3 conv blocks (BatchNorm, ReLU; max-pooling 2x2 after the first two) treat the
    window as an image of frequency x time. The time axis is then averaged away (where in
    the window a syllable falls does not matter much) while 4 coarse frequency bands are kept
    (the spectral tilt carries valence), and a linear layer makes the embedding.
    """

    def __init__(self, n_mels: int = N_MELS, context: int = CONTEXT, dim: int = 64, channels: int = 16) -> None:
        super().__init__()
        self.n_mels, self.context, self.dim = int(n_mels), int(context), int(dim)
        c = int(channels)

        def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                       nn.ReLU(inplace=True)]
            return layers + ([nn.MaxPool2d(2, ceil_mode=True)] if pool else [])

        self.features = nn.Sequential(*block(1, c, True), *block(c, 2 * c, True), *block(2 * c, 4 * c, False),
                                      nn.AdaptiveAvgPool2d((4, 1)))
        self.project = nn.Linear(4 * c * 4, self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != self.n_mels:
            raise ValueError(f"audio has shape {tuple(x.shape)}, expected (B, {self.n_mels}, T) "
                             f"or (B, 1, {self.n_mels}, T)")
        return torch.relu(self.project(self.features(x).flatten(1)))


class AudioVisualModel(nn.Module):
    """AU, EXPR and VA from a frame's visual features and/or its audio window, fused by concatenation.

    ``forward(visual (B, C), audio (B, n_mels, context))`` returns ``{"au": (B, 12) logits,
    "expr": (B, 8) logits, "va": (B, 2) in [-1, 1]}``. The visual features are projected
    (LayerNorm, Linear to ``dim``, GELU), the audio goes through an :class:`AudioCNN` to
    ``audio_dim``; as in seed 003 the two are concatenated and read by the three linear heads.

    ``use_audio=False`` is the visual-only baseline (the audio argument is ignored, may be
    ``None``), ``use_visual=False`` the audio-only model; all three share the heads' design.
    ``modality_dropout=p`` (training only, both modalities on): each frame loses one of its
    two embeddings (zeroed, chosen at random) with probability ``p``, so the heads learn to
    cope when one modality is missing or useless (a covered mouth, a silent stretch).
    """

    def __init__(self, visual_dim: int, *, use_audio: bool = True, use_visual: bool = True, dim: int = 128,
                 audio_dim: int = 64, dropout: float = 0.1, n_mels: int = N_MELS, context: int = CONTEXT,
                 modality_dropout: float = 0.0, audio_channels: int = 16) -> None:
        super().__init__()
        if not (use_audio or use_visual):
            raise ValueError("use_audio and use_visual are both False: the model would see nothing")
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        self.use_audio, self.use_visual = bool(use_audio), bool(use_visual)
        self.modality_dropout = float(modality_dropout)
        self.visual_dim = int(visual_dim)
        self.visual = nn.Sequential(nn.LayerNorm(visual_dim), nn.Linear(visual_dim, dim), nn.GELU()) \
            if use_visual else None
        self.audio = AudioCNN(n_mels, context, audio_dim, audio_channels) if use_audio else None
        fused = (dim if use_visual else 0) + (audio_dim if use_audio else 0)
        self.fused_dim = fused
        self.drop = nn.Dropout(dropout)
        self.au = nn.Linear(fused, len(AU_NAMES))
        self.expr = nn.Linear(fused, len(EXPR_NAMES))
        self.va = nn.Linear(fused, 2)

    def embed(self, visual: torch.Tensor | None = None, audio: torch.Tensor | None = None) -> torch.Tensor:
        """The fused embedding ``(B, fused_dim)``: [visual projection, audio embedding]."""
        parts = []
        if self.visual is not None:
            if visual is None or visual.ndim != 2 or visual.shape[1] != self.visual_dim:
                raise ValueError(f"visual features have shape {None if visual is None else tuple(visual.shape)}, "
                                 f"expected (B, {self.visual_dim})")
            parts.append(self.visual(visual))
        if self.audio is not None:
            if audio is None:
                raise ValueError("this model uses audio: pass the (B, n_mels, context) windows")
            parts.append(self.audio(audio))
        if len(parts) == 2 and self.training and self.modality_dropout > 0:
            r = torch.rand(parts[0].shape[0], 1, device=parts[0].device)
            drop_audio = r < self.modality_dropout / 2
            drop_visual = (r >= self.modality_dropout / 2) & (r < self.modality_dropout)
            parts = [parts[0].masked_fill(drop_visual, 0.0), parts[1].masked_fill(drop_audio, 0.0)]
        return torch.cat(parts, dim=1)

    def forward(self, visual: torch.Tensor | None = None, audio: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        h = self.drop(self.embed(visual, audio))
        return {"au": self.au(h), "expr": self.expr(h), "va": torch.tanh(self.va(h))}


__all__ = ["CONTEXT", "HOP_MS", "N_MELS", "WIN_MS", "AudioCNN", "AudioVisualDataset", "AudioVisualModel",
           "audio_cache_dir", "audio_features", "audio_path", "band_stats", "frame_audio", "frame_centre_hop",
           "hop_of_frame", "hops_per_frame", "log_mel", "normalize_bands", "occlusion_flags", "stft_sizes",
           "video_log_mel", "window_starts"]
