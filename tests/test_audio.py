"""course_lib.audio: log-Mel, alignment to frames, cached features, the models, a tiny fit."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from course_lib import audio
from course_lib.data import synth
from course_lib.data.abaw import read_mtl_annotations
from course_lib.data.voice import read_wav
from course_lib.features import extract_features

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

SR = 16_000


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    # seed 1: enough expression episodes at this size (see test_features)
    return synth.generate_dataset(tmp_path_factory.mktemp("audio") / "synth", n_videos=6, frames_per_video=40,
                                  val_fraction=0.34, seed=1, audio=True, progress_bar=False)


@pytest.fixture(scope="module")
def tables(root):
    return {split: read_mtl_annotations(root / name) for split, name in
            (("train", "training_set_annotations.txt"), ("validation", "validation_set_annotations.txt"))}


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --------------------------------------------------------------------------- log-Mel


def test_stft_sizes():
    assert audio.stft_sizes() == {"win_length": 320, "hop_length": 160, "n_fft": 512}
    assert audio.stft_sizes(8_000, 25.0, 10.0) == {"win_length": 200, "hop_length": 80, "n_fft": 256}
    assert audio.stft_sizes(16_000, 32.0)["n_fft"] == 512  # a window of exactly 512 needs no padding


def test_log_mel_matches_librosa_primitives_and_a_hand_computation():
    import librosa

    rng = np.random.default_rng(0)
    t = np.arange(8_000) / SR
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    got = audio.log_mel(wave)
    assert got.dtype == np.float32 and got.shape == (64, 1 + 8_000 // 160)

    # librosa primitives: STFT -> power -> Mel filters -> dB
    spec = librosa.stft(wave, n_fft=512, hop_length=160, win_length=320, window="hann", center=True,
                        pad_mode="constant")
    mel = librosa.filters.mel(sr=SR, n_fft=512, n_mels=64) @ (np.abs(spec) ** 2)
    np.testing.assert_allclose(got, 10 * np.log10(np.maximum(mel, 1e-10)), atol=1e-3)

    # by hand, column j: zero-pad n_fft/2 both sides, a periodic Hann of 320 centred in 512 points
    padded = np.pad(wave.astype(np.float64), 256)
    n = np.arange(320)
    window = np.zeros(512)
    window[96:416] = 0.5 - 0.5 * np.cos(2 * np.pi * n / 320)
    filters = librosa.filters.mel(sr=SR, n_fft=512, n_mels=64).astype(np.float64)
    for j in (0, 7, 25, 50):
        frame = padded[j * 160: j * 160 + 512] * window
        power = np.abs(np.fft.rfft(frame)) ** 2
        np.testing.assert_allclose(got[:, j], 10 * np.log10(np.maximum(filters @ power, 1e-10)), atol=1e-2)

    # absolute level: 6 dB louder wave, 6 dB higher spectrogram (no per-clip top_db normalisation)
    np.testing.assert_allclose(audio.log_mel(2 * wave) - got, 20 * np.log10(2), atol=1e-2)
    with pytest.raises(ValueError, match="1-D"):
        audio.log_mel(np.zeros((2, 100)))


# --------------------------------------------------------------------------- alignment


def test_hop_arithmetic():
    assert audio.hops_per_frame(30) == pytest.approx(10 / 3)
    assert audio.hops_per_frame(25) == pytest.approx(4.0)
    # frame i is centred at (i + 0.5) / fps s: at 30 fps frame 10 at 350 ms = hop 35, frame 0 at hop 1.67 -> 2
    assert audio.hop_of_frame(10, 30) == 35
    assert list(audio.hop_of_frame(np.arange(4), 30)) == [2, 5, 8, 12]
    assert list(audio.hop_of_frame(np.arange(3), 25)) == [2, 6, 10]
    for context in (1, 8, 9, 31, 32):
        starts = audio.window_starts(60, 30, context=context)
        middle = starts + (context - 1) / 2
        assert np.all(np.abs(middle - audio.frame_centre_hop(np.arange(60), 30)) <= 0.5 + 1e-9)


@pytest.mark.parametrize("fps", [30, 25])
def test_tone_burst_peaks_at_the_window_centre(fps):
    n_frames, context = 24, 9
    wave = np.zeros(int(round(n_frames / fps * SR)), dtype=np.float32)
    rng = np.random.default_rng(1)
    wave += 1e-3 * rng.normal(size=wave.size).astype(np.float32)
    for k in (3, 11, 20):
        burst = wave.copy()
        a, b = int(k * SR / fps), int((k + 1) * SR / fps)
        burst[a:b] += 0.5 * np.sin(2 * np.pi * 1000 * np.arange(b - a) / SR)
        windows = audio.frame_audio(audio.log_mel(burst), n_frames, fps, context=context)
        assert windows.shape == (n_frames, 64, context)
        power = (10 ** (windows[k] / 10)).sum(axis=0)  # Mel power summed over the bands, per hop of the window
        energy = 10 * np.log10(power)
        # the burst fills the frame, so several hops hear all of it: its centre of energy must sit at
        # the window's centre, up to the half hop by which a frame centre can miss the hop grid
        centroid = float((np.arange(context) * power).sum() / power.sum())
        burst_centre = (k + 0.5) * SR / fps / 160 - audio.window_starts(n_frames, fps, context=context)[k]
        assert abs(centroid - burst_centre) < 0.15, f"burst in frame {k}: centre of energy at {centroid:.2f}"
        assert abs(centroid - context // 2) <= 0.5 + 0.15
        assert abs(int(energy.argmax()) - context // 2) <= 1
        far = 10 * np.log10((10 ** (windows[(k + 6) % n_frames] / 10)).sum(axis=0))
        assert far.max() < energy.max() - 30  # six frames away the burst is out of the window


def test_frame_audio_pads_with_the_edge_hops():
    logmel = np.arange(3 * 10, dtype=np.float32).reshape(3, 10)
    windows = audio.frame_audio(logmel, 3, fps=30, context=7)  # frame 0 centred on hop 1.67 -> hops -1..5
    np.testing.assert_array_equal(windows[0, :, 0], logmel[:, 0])
    np.testing.assert_array_equal(windows[0, :, 1:], logmel[:, 0:6])
    last = audio.frame_audio(logmel, 3, fps=10, context=7)[2]  # frame 2 centred on hop 25: past the end
    assert np.all(last == logmel[:, -1:])
    with pytest.raises(ValueError, match="n_mels, n_hops"):
        audio.frame_audio(np.zeros(5), 2, 30)


# --------------------------------------------------------------------------- a data set's audio


def test_audio_features_are_the_frame_windows_and_cached(root, tables, fresh_cache, monkeypatch):
    table = tables["validation"]
    feats = audio.audio_features(root, table, context=11)
    assert feats.shape == (len(table), 64, 11) and feats.dtype == torch.float32
    row = 17
    video, frame = table.video.iloc[row], int(table.frame.iloc[row])
    wave, _ = read_wav(root / "audio" / f"{video}.wav")
    want = audio.frame_audio(audio.log_mel(wave), 40, synth.read_metadata(root)["fps"], context=11)[frame - 1]
    np.testing.assert_allclose(feats[row].numpy(), want, atol=1e-5)
    folder = audio.audio_cache_dir(root)
    assert folder.is_relative_to(fresh_cache) and synth.dataset_fingerprint(root) in folder.name
    assert len(list(folder.glob("*.npy"))) == table.video.nunique()

    def no_recompute(*args, **kwargs):
        raise AssertionError("the cached log-Mel should have been reused")

    monkeypatch.setattr(audio, "video_log_mel", no_recompute)
    again = audio.audio_features(root, table.iloc[::-1], context=11)  # another order, another context: cached
    torch.testing.assert_close(again, feats.flip(0))
    assert audio.audio_features(root, table, context=5).shape == (len(table), 64, 5)


def test_missing_wav_and_missing_fps_are_clear(root, tables, tmp_path, fresh_cache):
    real = tmp_path / "real-copy"  # a copy without audio/ and without metadata.json, like a real set
    real.mkdir()
    for name in ("training_set_annotations.txt", "validation_set_annotations.txt"):
        shutil.copy(root / name, real / name)
    table = tables["validation"]
    with pytest.raises(FileNotFoundError, match=rf"audio/{table.video.iloc[0]}\.wav not found"):
        audio.audio_features(real, table, fps=30)
    shutil.copytree(root / "audio", real / "audio")
    with pytest.raises(ValueError, match="pass fps="):
        audio.audio_features(real, table)
    assert audio.audio_features(real, table, fps=30, cache=False).shape[0] == len(table)


def test_band_normalisation(root, tables, fresh_cache):
    train = audio.audio_features(root, tables["train"])
    mean, std = audio.band_stats(train)
    assert mean.shape == std.shape == (64, 1)
    normed = audio.normalize_bands(train, mean, std)
    per_band = normed.transpose(0, 1).reshape(64, -1)
    torch.testing.assert_close(per_band.mean(1), torch.zeros(64), atol=1e-3, rtol=0)
    torch.testing.assert_close(per_band.std(1), torch.ones(64), atol=1e-3, rtol=0)
    val = audio.audio_features(root, tables["validation"], normalize=(mean, std))
    torch.testing.assert_close(val, audio.normalize_bands(audio.audio_features(root, tables["validation"]), mean, std))


def test_occlusion_flags_follow_the_ground_truth(root, tables):
    table = tables["train"]
    flags = audio.occlusion_flags(root, table)
    assert set(flags) == {"eyes", "mouth", "talking"} and all(len(v) == len(table) for v in flags.values())
    for row in (0, 39, 40, len(table) - 1):
        gt = synth.load_ground_truth(root, table.video.iloc[row])
        i = int(table.frame.iloc[row]) - 1
        assert flags["eyes"][row] == gt["occluded"][i, 0] and flags["mouth"][row] == gt["occluded"][i, 1]
        assert flags["talking"][row] == gt["talking"][i]
    assert 0 < flags["talking"].sum() < len(table)


# --------------------------------------------------------------------------- models


def test_audio_cnn_shapes():
    cnn = audio.AudioCNN(n_mels=64, context=31, dim=48, channels=4)
    assert cnn(torch.randn(5, 64, 31)).shape == (5, 48)
    assert cnn(torch.randn(5, 1, 64, 21)).shape == (5, 48)  # any context: the time axis is averaged
    with pytest.raises(ValueError, match="expected"):
        cnn(torch.randn(5, 40, 31))


@pytest.mark.parametrize("switches", [{}, {"use_audio": False}, {"use_visual": False}])
def test_model_outputs(switches):
    torch.manual_seed(0)
    model = audio.AudioVisualModel(20, dim=16, audio_dim=8, audio_channels=4, context=9, **switches).eval()
    out = model(torch.randn(3, 20), torch.randn(3, 64, 9))
    assert out["au"].shape == (3, 12) and out["expr"].shape == (3, 8) and out["va"].shape == (3, 2)
    assert out["va"].abs().max() <= 1


def test_switched_off_modalities_are_ignored():
    torch.manual_seed(0)
    visual, sound = torch.randn(4, 20), torch.randn(4, 64, 9)
    seeing = audio.AudioVisualModel(20, use_audio=False, dim=16, context=9).eval()
    a = seeing(visual, sound)
    b = seeing(visual, 5 * torch.randn(4, 64, 9))
    c = seeing(visual, None)
    for key in ("au", "expr", "va"):
        torch.testing.assert_close(a[key], b[key])
        torch.testing.assert_close(a[key], c[key])
    assert seeing.audio is None
    hearing = audio.AudioVisualModel(20, use_visual=False, dim=16, audio_channels=4, context=9).eval()
    torch.testing.assert_close(hearing(visual, sound)["au"], hearing(torch.randn(4, 20), sound)["au"])
    both = audio.AudioVisualModel(20, dim=16, audio_channels=4, context=9).eval()
    assert not torch.allclose(both(visual, sound)["au"], both(visual, 5 * torch.randn(4, 64, 9))["au"])
    with pytest.raises(ValueError, match="see nothing"):
        audio.AudioVisualModel(20, use_audio=False, use_visual=False)


def test_modality_dropout_only_while_training():
    torch.manual_seed(0)
    model = audio.AudioVisualModel(20, dim=16, audio_dim=8, audio_channels=4, context=9, modality_dropout=0.9)
    visual, sound = torch.randn(64, 20), torch.randn(64, 64, 9)
    model.train()
    h = model.embed(visual, sound)
    dropped_visual = (h[:, :16] == 0).all(1)
    dropped_audio = (h[:, 16:] == 0).all(1)
    assert dropped_visual.any() and dropped_audio.any() and not (dropped_visual & dropped_audio).any()
    model.eval()
    assert not (model.embed(visual, sound)[:, :16] == 0).all(1).any()


# --------------------------------------------------------------------------- training


class Stem(nn.Module):
    """A stand-in backbone: 28 px patches, a 4 x 4 grid of 16-dim tokens."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, kernel_size=28, stride=28)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.conv(images).flatten(2).transpose(1, 2)
        return {"tokens": tokens, "pooled": tokens.mean(1)}


def test_tiny_fit_on_audio_and_cached_visual_features(root, tables, fresh_cache, one_thread):
    from course_lib.train import TrainConfig, fit, predict

    visual = {split: extract_features(Stem(), t, root, key="stem-audio-test", split=split, progress_bar=False)
              for split, t in tables.items()}
    sound = {split: audio.audio_features(root, t, context=11) for split, t in tables.items()}
    stats = audio.band_stats(sound["train"])
    sets = {split: audio.AudioVisualDataset(visual[split], audio.normalize_bands(sound[split], *stats), t)
            for split, t in tables.items()}
    item = sets["train"][3]
    assert item["pooled"].shape == (16,) and item["audio"].shape == (64, 11) and item["index"] == 3
    assert {"va", "expr", "au", "has_va", "has_expr", "has_au"} <= set(item)
    torch.manual_seed(0)
    model = audio.AudioVisualModel(16, dim=16, audio_dim=8, audio_channels=4, context=11, modality_dropout=0.2)
    loader = DataLoader(sets["train"], batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    result = fit(model, loader, DataLoader(sets["validation"], batch_size=64), config=TrainConfig(epochs=2),
                 input_key=("pooled", "audio"), progress_bar=False)
    assert len(result.history) == 2 and np.isfinite(result.history.loss).all()
    out = predict(model, DataLoader(sets["validation"], batch_size=64), input_key=("pooled", "audio"))
    assert out["au_pred"].shape == (len(tables["validation"]), 12)
    # visual features given as a tensor in table order, audio left out: a visual-only data set
    only = audio.AudioVisualDataset(visual["validation"].to_tensor(what="pooled"), None, tables["validation"])
    assert "audio" not in only[0] and only[0]["pooled"].shape == (16,)
    with pytest.raises(ValueError, match="same table"):
        audio.AudioVisualDataset(None, sound["train"][:5], tables["train"])
