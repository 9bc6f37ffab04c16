"""What a data folder holds, and one line for each lesson step that needs what it lacks.

Taught in ``01_data``. SynthAffWild writes four things: the frames, the two annotation files,
the generator's clean labels (``ground_truth/``, with every AU's image region) and a voice
(``audio/``), plus ``metadata.json`` and a test split (its image list, and apart its labels, which
only ``08_evaluation``'s final score reads). A licence holder's s-Aff-Wild2 folder holds the
frames and the annotation files, perhaps the test list: its labels are the annotators', it has
no clean truth, and it has no sound (s-Aff-Wild2 is a static frame subset of Aff-Wild2; the audio
entries used the full Aff-Wild2 videos). Notebooks
ask :meth:`FolderContents.offers` before a step that needs more than the frames and labels;
when the folder lacks it, that prints what is skipped, why, and what would make it run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .abaw import SPLIT_FILES, TEST_LABELS, TEST_LIST, read_mtl_annotations

#: Each optional part: where it lives, why a folder may lack it, and what would provide it.
PARTS: dict[str, tuple[str, str]] = {
    "ground_truth": ("ground_truth/<video>.npz",
                     "only SynthAffWild has clean labels and AU regions; real data has only the annotators' labels"),
    "audio": ("audio/<video>.wav",
              "s-Aff-Wild2 is a static frame subset of Aff-Wild2 without sound; extract each video's track from "
              "the Aff-Wild2 videos: ffmpeg -i <video>.mp4 -ac 1 -ar 16000 -sample_fmt s16 audio/<video>.wav"),
    "metadata": ("metadata.json", "only SynthAffWild records how it was generated (frame rate, splits, settings)"),
    "test_list": (TEST_LIST, "the challenge hands out the list of test images with the test videos; "
                  "put it there as test_set_images.txt (header, then one <video>/<frame>.jpg per line)"),
    "test_labels": (TEST_LABELS, "the organisers keep the test labels and score "
                    "submissions themselves; only SynthAffWild stores them, apart, for one final score"),
}


@dataclass(frozen=True)
class FolderContents:
    """Which optional parts a data folder has for every video of its annotation files."""

    root: Path
    videos: tuple[str, ...]
    ground_truth: bool
    metadata: bool
    missing_audio: int = 0  # videos without a WAV
    test_list: bool = False
    test_labels: bool = False

    @property
    def audio(self) -> bool:
        """True when every video has its WAV."""
        return self.missing_audio == 0

    @property
    def synthetic(self) -> bool:
        """True for a SynthAffWild folder (it has the generator's metadata and truth)."""
        return self.metadata and self.ground_truth

    def offers(self, part: str, step: str) -> bool:
        """True when the folder has ``part``; otherwise print one line: ``step`` is skipped, why, and what
        would make it run."""
        if part not in PARTS:
            raise KeyError(f"unknown part {part!r}: one of {', '.join(PARTS)}")
        if getattr(self, part):
            return True
        where, why = PARTS[part]
        lacking = (f"{self.missing_audio} of {len(self.videos)} videos lack {where}" if part == "audio"
                   and self.missing_audio < len(self.videos) else f"{self.root.name} has no {where}")
        print(f"skipped: {step}. {lacking}: {why}")
        return False


def folder_contents(root: Path | str) -> FolderContents:
    """Look at ``root`` (a SynthAffWild or a real-release folder) and say which parts it has."""
    root = Path(root)
    videos: list[str] = []
    for name in SPLIT_FILES.values():
        if (root / name).exists():
            videos += list(pd.unique(read_mtl_annotations(root / name)["video"]))
    if not videos:
        raise FileNotFoundError(f"{root} holds neither {' nor '.join(SPLIT_FILES.values())}")
    videos = list(dict.fromkeys(videos))
    truth = all((root / "ground_truth" / f"{v}.npz").exists() for v in videos)
    wavs = sum((root / "audio" / f"{v}.wav").exists() for v in videos)
    return FolderContents(root=root, videos=tuple(videos), ground_truth=truth,
                          metadata=(root / "metadata.json").exists(), missing_audio=len(videos) - wavs,
                          test_list=(root / TEST_LIST).exists(), test_labels=(root / TEST_LABELS).exists())


__all__ = ["PARTS", "FolderContents", "folder_contents"]
