"""Checkers for ``02_backbones_and_features``: counting tokens, and tokens back to a feature map."""

from __future__ import annotations

import numpy as np

from . import Mismatch, call_answer, exercise


@exercise("02.count_patch_tokens", "How many patch tokens does a ViT make?")
def check_count_patch_tokens(fn) -> str:
    cases = [(224, 16), (112, 16), (112, 8), (224, 14), (126, 14), (96, 32)]
    for size, patch in cases:
        got = call_answer(fn, size, patch)
        want = (size // patch) ** 2
        if got == want:
            continue
        hint = f"for a {size} px image and {patch} px patches you gave {got}, expected {want}."
        if got == want + 1:
            hint += " The class token is not a patch token: count only the patches."
        elif got == size // patch:
            hint += " That is the patches along one side; the grid is square."
        raise Mismatch(hint)
    return "Right: (image_size // patch)^2, e.g. 196 tokens for 224 px with 16 px patches."


@exercise("02.tokens_to_map", "Turn patch tokens (N, C) back into a feature map (C, h, w)")
def check_tokens_to_map(fn) -> str:
    rng = np.random.default_rng()
    for h, w, c in ((7, 7, 5), (4, 6, 3), (14, 14, 8)):
        fmap = rng.normal(size=(c, h, w))
        tokens = fmap.reshape(c, h * w).T.copy()  # how a CNN's map is flattened into tokens, row by row
        got = np.asarray(call_answer(fn, tokens.copy(), h, w))
        if got.shape != (c, h, w):
            raise Mismatch(f"return an array of shape (C, h, w) = {(c, h, w)}; got {got.shape}")
        if np.allclose(got, fmap):
            continue
        if np.allclose(got, tokens.reshape(c, h, w)):
            raise Mismatch("a plain reshape scrambles the map: tokens are (N, C), so move C first "
                           "(transpose) and then split N into h rows of w.")
        raise Mismatch("the values are not where they belong: token n = row * w + column.")
    return "Right: tokens.T.reshape(C, h, w); token n sits at row n // w, column n % w."
