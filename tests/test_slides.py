"""Slide decks build into self-contained HTML (browser rendering is tested separately)."""

from __future__ import annotations

import re

import pytest

from course_lib.slides import build_decks, parse_deck, render_deck


def test_decks_build_self_contained(repo, tmp_path):
    built = build_decks(repo / "slides", tmp_path)
    sources = sorted((repo / "slides").glob("[0-9][0-9]_*.md"))
    assert [p.stem for p in built] == [p.stem for p in sources] and built
    for deck, source in zip(built, sources):
        page = deck.read_text()
        text = source.read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), f"{deck.name} loads something remote"
        assert "<link" not in page and "@import" not in page and "<script src" not in page
        slides = len(parse_deck(text))
        assert f'data-slide-count="{slides}"' in page and page.count('<section class="slide') == slides
        assert page.count("data:image/png;base64,") == len(re.findall(r"\]\(figure:", text))
    assert (tmp_path / "index.html").is_file()


def test_bad_decks_name_the_problem():
    with pytest.raises(ValueError, match="unknown slide figure 'nope'"):
        render_deck("# T\n\n![x](figure:nope)")
    with pytest.raises(ValueError, match="deck.md: slide 2 is empty"):
        parse_deck("# T\n---\n\n---\nthird", "deck.md")


def test_notes_are_split_from_slides():
    slides = parse_deck("# Title\nbody\nNote:\nsay hello\n---\n## Two")
    assert slides == [("# Title\nbody", "say hello"), ("## Two", "")]
