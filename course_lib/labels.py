"""The label sets of the ABAW multi-task challenge, in the challenge's own order.

Taught in ``00_welcome_and_setup`` (what the three tasks are) and used everywhere. The facts
are those of ``ABAW_FACTS.md``; anything marked unconfirmed there is one constant here.
"""

from __future__ import annotations

#: The 12 action units of s-Aff-Wild2, in annotation-column order.
AU_NAMES: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26",
)

#: FACS names of the 12 AUs (what moves on the face).
AU_DESCRIPTIONS: dict[str, str] = {
    "AU1": "inner brow raiser",
    "AU2": "outer brow raiser",
    "AU4": "brow lowerer",
    "AU6": "cheek raiser",
    "AU7": "lid tightener",
    "AU10": "upper lip raiser",
    "AU12": "lip corner puller",
    "AU15": "lip corner depressor",
    "AU23": "lip tightener",
    "AU24": "lip pressor",
    "AU25": "lips part",
    "AU26": "jaw drop",
}

#: Which part of the face each AU moves (upper face: brows and eyes; lower face: mouth, jaw).
AU_REGION: dict[str, str] = {
    "AU1": "brows", "AU2": "brows", "AU4": "brows", "AU6": "cheeks/eyes", "AU7": "eyes",
    "AU10": "mouth", "AU12": "mouth", "AU15": "mouth", "AU23": "mouth", "AU24": "mouth",
    "AU25": "mouth", "AU26": "jaw",
}

#: The 8 expression classes; the index is the class id in the annotation files.
EXPR_NAMES: tuple[str, ...] = (
    "Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other",
)

#: ABAW2's expression task used only the first 7 classes.
EXPR_NAMES_ABAW2: tuple[str, ...] = EXPR_NAMES[:7]

#: Where each expression sits on the valence/arousal circumplex. The six basic emotions use
#: the pleasure/arousal values of Russell & Mehrabian (1977); Neutral is the origin and
#: "Other" (a catch-all class) is placed near it, slightly aroused. Used for pictures and by
#: the synthetic data generator.
EXPR_CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "Neutral": (0.0, 0.0),
    "Anger": (-0.51, 0.59),
    "Disgust": (-0.60, 0.35),
    "Fear": (-0.64, 0.60),
    "Happiness": (0.81, 0.51),
    "Sadness": (-0.63, -0.27),
    "Surprise": (0.40, 0.67),
    "Other": (0.05, 0.15),
}

#: Missing-label markers of the annotation files.
MISSING_VA: float = -5.0
MISSING_EXPR: int = -1
MISSING_AU: int = -1

#: Header of the s-Aff-Wild2 MTL annotation files (exact text unconfirmed; parsers skip line 1).
MTL_HEADER: str = "image,valence,arousal,expression," + ",".join(AU_NAMES)

#: Header of a challenge submission / test list.
SUBMISSION_HEADER: str = "image,valence,arousal,expression,aus"

#: Label statistics of the real s-Aff-Wild2 training split (ABAW_FACTS.md).
REAL_TRAIN_ROWS: int = 142_333
REAL_TRAIN_LABELLED: dict[str, int] = {"va": 103_917, "expr": 90_645, "au": 103_316}
REAL_TRAIN_EXPR_COUNTS: tuple[int, ...] = (23976, 4555, 3168, 3122, 18135, 7609, 5228, 24852)
REAL_TRAIN_AU_POSITIVES: tuple[int, ...] = (
    18713, 8745, 20342, 30605, 41337, 38286, 26783, 2460, 2980, 5003, 70584, 10756,
)

#: Published P_MTL on real s-Aff-Wild2, per split, as reported (ABAW_FACTS.md); a split a paper
#: does not report is left out. Validation and test scores differ (the test set is other videos
#: and is scored once), so they are never compared with each other, nor with synthetic scores.
REFERENCE_P_MTL: dict[str, dict[str, float]] = {
    "ABAW4 baseline (VGGFACE)": {"validation": 0.30},
    "ABAW7 baseline (VGGFACE + MixAugment)": {"validation": 0.32},
    "seed 002: DINOv2 + task-adaptive cross-attention + AU-GCN (ABAW7)": {"validation": 1.2542, "test": 1.1640},
    "seed 000: cross-attentive module + AU relation graph (ABAW4)": {"validation": 1.288},
    "seed 001: progressive learning (ABAW7 winner)": {"test": 1.5286},
    "ABAW4 winner (Situ-RUCAIM3)": {"validation": 1.7607, "test": 1.4361},
}
