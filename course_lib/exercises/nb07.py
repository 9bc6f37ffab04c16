"""Checkers for ``07_multimodal_audio``: counting hops, aligning frames to hops, a log-Mel from primitives."""

from __future__ import annotations

import numpy as np

from . import Mismatch, call_answer, exercise


def _as_int(value, what: str) -> int:
    try:
        number = float(np.asarray(value).item())
    except (TypeError, ValueError):
        raise Mismatch(f"return one whole number ({what}); got {type(value).__name__}") from None
    if number != int(number):
        raise Mismatch(f"return a whole number of {what}; got {number}")
    return int(number)


@exercise("07.n_hops", "How many hops does librosa's centred STFT give for a clip?")
def check_n_hops(fn) -> str:
    rng = np.random.default_rng()
    cases = [(16_000, 160), (24_000, 160), (159, 160), (160, 160), (int(rng.integers(1_000, 200_000)), 160),
             (int(rng.integers(1_000, 50_000)), int(rng.choice([80, 128, 441])))]
    for n_samples, hop in cases:
        got = _as_int(call_answer(fn, n_samples, hop), "hops")
        want = 1 + n_samples // hop
        if got == want:
            continue
        hint = f"for {n_samples} samples and a hop of {hop} you said {got} hops, which is not what librosa gives."
        if got == n_samples // hop:
            hint += (" With center=True the signal is padded by n_fft // 2 on both sides and the first frame is "
                     "centred on sample 0, so there is one hop more than n_samples // hop.")
        elif got == int(np.ceil(n_samples / hop)):
            hint += " Frame j is centred on sample j * hop: count the j with j * hop <= n_samples."
        elif got == 1 + (n_samples - 512) // hop:
            hint += " That is the count without padding (center=False); librosa pads, so no frame is lost at the ends."
        raise Mismatch(hint)
    return "Right: 1 + n // hop frames, one centred on every hop from sample 0 to the end."


def _reference_hop(frame: int, fps: float, hop_ms: float) -> int:
    return int(np.floor(np.round((frame + 0.5) * 1000.0 / (fps * hop_ms), 9) + 0.5))


@exercise("07.hop_of_frame", "Which spectrogram hop sits at the centre of video frame i?")
def check_hop_of_frame(fn) -> str:
    rng = np.random.default_rng()
    cases = [(0, 30.0, 10.0), (1, 30.0, 10.0), (10, 30.0, 10.0), (44, 30.0, 10.0), (7, 25.0, 10.0),
             (int(rng.integers(50, 5_000)), 30.0, 10.0), (int(rng.integers(0, 500)), 24.0, 10.0),
             (int(rng.integers(0, 500)), 30.0, 5.0)]
    for frame, fps, hop_ms in cases:
        got = _as_int(call_answer(fn, frame, fps, hop_ms), "hops")
        want = _reference_hop(frame, fps, hop_ms)
        if got == want:
            continue
        hint = f"frame {frame} at {fps:g} fps with a {hop_ms:g} ms hop: you said hop {got}."
        start = frame * 1000.0 / (fps * hop_ms)
        if got in (int(np.floor(start)), int(np.round(start))) and abs(start - want) >= 1:
            hint += " That is the hop at the frame's start; frame i lasts [i/fps, (i+1)/fps), take its centre (i + 0.5)/fps."
        elif got == _reference_hop(frame + 1, fps, hop_ms) or got == _reference_hop(frame - 1, fps, hop_ms):
            hint += " Off by one frame: i is 0-based here (file 00001.jpg is frame 0)."
        elif got in (round((frame + 0.5) * 16_000 / fps), round(frame * 16_000 / fps)):
            hint += " That is a sample index at 16 kHz; count hops of hop_ms milliseconds instead."
        elif got == int(np.floor((frame + 0.5) * 1000.0 / (fps * hop_ms))):
            hint += " Round to the nearest hop instead of rounding down."
        else:
            hint += " Convert the frame's centre time (i + 0.5) / fps seconds into hops of hop_ms milliseconds."
        raise Mismatch(hint)
    return "Right: at 30 fps a frame lasts 3.33 hops, and its centre lands on hop round((i + 0.5) * 3.33)."


def _test_wave(rng: np.random.Generator, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16_000)) / 16_000
    f0 = rng.uniform(100, 250)
    wave = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8)) * 0.1
    wave *= 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 6) * t)
    return (wave + rng.normal(0, 0.01, t.size)).astype(np.float32)


@exercise("07.log_mel", "A 64-band log-Mel spectrogram from librosa's primitives")
def check_log_mel(fn) -> str:
    from ..audio import log_mel  # when checked: `import course_lib` stays light

    rng = np.random.default_rng()
    for seconds in (1.0, float(rng.uniform(0.3, 2.0))):
        wave = _test_wave(rng, seconds)
        got = np.asarray(call_answer(fn, wave.copy(), 16_000), dtype=np.float64)
        want = log_mel(wave).astype(np.float64)
        if got.shape != want.shape:
            hint = f"for {wave.size} samples the result should have shape (64 bands, {want.shape[1]} hops); got {got.shape}."
            if got.ndim == 2 and got.shape[0] == 257:
                hint += " Those are the 257 STFT bins: apply the Mel filterbank librosa.filters.mel(...) @ power."
            elif got.ndim == 2 and got.shape[1] < want.shape[1]:
                hint += " Keep librosa.stft's default center=True (pad_mode='constant')."
            elif got.ndim == 2 and got.shape[1] == 64:
                hint += " Bands first: (n_mels, n_hops), the layout librosa returns."
            raise Mismatch(hint)
        error = float(np.abs(got - want).max())
        if error < 0.05:
            continue
        loud = np.abs(want) > 1
        ratio = float(np.median(got[loud] / want[loud])) if loud.any() else float("nan")
        hint = f"your values differ from the course's log_mel by up to {error:.1f} dB."
        if abs(ratio - 2.0) < 0.05:
            hint += " 20 log10 is for amplitudes; the Mel spectrogram holds power, so use 10 log10."
        elif abs(ratio - np.log(10) / 10) < 0.02:
            hint += " Decibels are 10 log10(power), not the natural log."
        elif 0.3 < ratio < 0.75:
            hint += " Square the STFT magnitude: power = |S|^2 goes through the Mel filters, not |S|."
        else:
            hint += (" Check the STFT settings: n_fft=512, hop_length=160, win_length=320 (20 ms, a Hann window), "
                     "and the floor 10 log10(max(mel, 1e-10)).")
        raise Mismatch(hint)
    return "Right: STFT -> power -> Mel filters -> dB is exactly what librosa.feature.melspectrogram + power_to_db do."
