"""Seed 003's audio-visual temporal model and its window dataset (notebook 07, section 7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from course_lib.data.abaw import read_mtl_annotations
from course_lib.labels import AU_NAMES
from course_lib.models.audiovisual import AudioVisualTemporalModel, AudioVisualWindowDataset

C, M, K = 10, 8, 5


def _table(tmp_path, frames=(list(range(1, 8)) + [10, 11, 12, 13])) -> pd.DataFrame:
    """One video whose frame numbers skip 8 and 9 (a gap), plus a second short video."""
    lines = ["image,valence,arousal,expression," + ",".join(AU_NAMES)]
    rng = np.random.default_rng(0)
    for video, numbers in (("a", frames), ("b", range(1, 5))):
        for f in numbers:
            aus = ",".join(str(int(x)) for x in rng.integers(0, 2, 12))
            lines.append(f"{video}/{f:05d}.jpg,0.1,-0.2,{int(rng.integers(0, 8))},{aus}")
    path = tmp_path / "ann.txt"
    path.write_text("\n".join(lines) + "\n")
    return read_mtl_annotations(path)


def test_windows_carry_each_frames_visual_features_and_audio_and_never_cross_a_gap(tmp_path):
    table = _table(tmp_path)
    visual = torch.arange(len(table), dtype=torch.float32)[:, None].repeat(1, C)  # row number in every column
    audio = torch.arange(len(table), dtype=torch.float32)[:, None, None].repeat(1, M, K)
    ds = AudioVisualWindowDataset(visual, audio, table, window=4, stride=2)
    assert len(ds) > 0
    for i in range(len(ds)):
        item = ds[i]
        rows = item["indices"].numpy()
        assert item["visual"].shape == (4, C) and item["audio"].shape == (4, M, K)
        np.testing.assert_array_equal(item["visual"][:, 0].numpy(), rows)
        np.testing.assert_array_equal(item["audio"][:, 0, 0].numpy(), rows)
        real = rows[item["valid"].numpy()]
        assert table.video.iloc[real].nunique() == 1
        assert np.all(np.diff(table.frame.iloc[real].to_numpy()) == 1)  # consecutive frame numbers only
    with pytest.raises(ValueError, match="audio has shape"):
        AudioVisualWindowDataset(visual, audio[:-1], table)
    with pytest.raises(ValueError, match="visual features"):
        AudioVisualWindowDataset(visual[:, 0], audio, table)


@pytest.mark.parametrize("use_audio", [True, False])
def test_model_reads_visual_temporal_and_audio_per_frame_and_ignores_padding(use_audio):
    torch.manual_seed(0)
    model = AudioVisualTemporalModel(C, dim=16, audio_dim=8, heads=2, n_mels=M, context=K, audio_channels=4,
                                     use_audio=use_audio).eval()
    x, a = torch.randn(3, 6, C), torch.randn(3, 6, M, K)
    valid = torch.ones(3, 6, dtype=torch.bool)
    valid[0, 4:] = False
    out = model(x, a, valid)
    assert out["au"].shape == (3, 6, 12) and out["expr"].shape == (3, 6, 8) and out["va"].shape == (3, 6, 2)
    assert out["va"].abs().max() <= 1
    x2, a2 = x.clone(), a.clone()
    x2[0, 4:] += 100.0  # change the padding frames only
    a2[0, 4:] -= 50.0
    out2 = model(x2, a2, valid)
    for key in out:
        torch.testing.assert_close(out2[key][0, :4], out[key][0, :4])  # real frames do not see padding
    x3 = x.clone()
    x3[1, 0] = torch.randn(C)  # a real neighbour changes the other frames through the Transformer
    assert not torch.allclose(model(x3, a, valid)["au"][1, 1:], out["au"][1, 1:])
    if use_audio:
        a3 = a.clone()
        a3[2, 1] = torch.randn(M, K)  # a frame's audio changes that frame's outputs directly
        assert not torch.allclose(model(x, a3, valid)["expr"][2, 1], out["expr"][2, 1])
        with pytest.raises(ValueError, match="audio has shape"):
            model(x, None, valid)
    with pytest.raises(ValueError, match="visual features"):
        model(x[:, 0], a, valid)
