"""A voice-like audio track whose prosody follows arousal and whose timbre follows valence.

Taught in ``01_data`` and used in ``07_multimodal_audio``. While a person talks, a glottal
source (a harmonic series) is shaped into syllables:

- **pitch** rises with arousal (and carries a slow vibrato),
- **energy** rises with arousal,
- **syllable rate** rises with arousal (3 to 6 syllables per second),
- **brightness** (spectral tilt) rises with valence: pleasant speech has stronger high harmonics,

over a background of low-level noise. The same syllable envelope opens the mouth in the video
(AU25/AU26), so lips and sound move together.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

SAMPLE_RATE: int = 16_000


def syllable_envelope(arousal: np.ndarray, talking: np.ndarray, sample_rate: int = SAMPLE_RATE,
                      phase0: float = 0.0) -> np.ndarray:
    """Per-sample syllable envelope in [0, 1] (0 when not talking); rate 3-6 Hz with arousal."""
    rate = 3.0 + 1.5 * (np.clip(arousal, -1, 1) + 1.0)
    phase = phase0 + 2 * np.pi * np.cumsum(rate) / sample_rate
    env = (0.5 - 0.5 * np.cos(phase)) ** 1.5
    return env * talking


def synthesize_voice(valence: np.ndarray, arousal: np.ndarray, talking: np.ndarray, *,
                     pitch: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE,
                     noise_level: float = 0.02, phase0: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Synthesize speech-like audio from per-sample valence, arousal and talking (0/1, smoothed).

    Returns ``(audio, envelope)``: float32 samples in [-1, 1] and the syllable envelope, which
    the video uses to move the lips.
    """
    n = valence.size
    env = syllable_envelope(arousal, talking, sample_rate, phase0)
    f0 = pitch * (1.0 + 0.35 * arousal) * (1.0 + 0.02 * np.sin(2 * np.pi * 5.5 * np.arange(n) / sample_rate))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    tilt = 1.7 - 0.7 * valence  # lower tilt = brighter = more pleasant
    source = np.zeros(n)
    for k in range(1, 13):
        source += np.sin(k * phase) * k ** (-tilt)
    source /= np.max(np.abs(source)) + 1e-9
    energy = 0.3 * 10.0 ** (0.6 * arousal)  # +-0.5 arousal is +-6 dB
    voice = source * env * energy
    white = rng.normal(0.0, 1.0, n)
    brown = np.cumsum(white)
    brown -= np.convolve(brown, np.ones(400) / 400, mode="same")  # remove drift: pinkish noise
    brown /= np.std(brown) + 1e-9
    audio = voice + noise_level * (0.6 * brown + 0.4 * white)
    audio /= max(1.0, float(np.max(np.abs(audio))) / 0.95)
    return audio.astype(np.float32), env.astype(np.float32)


def wav_bytes(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit mono PCM WAV of ``audio`` (floats in [-1, 1])."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def read_wav(path: Path | str) -> tuple[np.ndarray, int]:
    """Read a 16-bit mono WAV written by :func:`wav_bytes`: float32 samples and the sample rate."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit mono WAV, got {w.getnchannels()} channels, "
                             f"{8 * w.getsampwidth()}-bit")
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data.astype(np.float32) / 32767.0, rate
