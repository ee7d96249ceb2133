from distillery_assets.poetry.gutenberg import pick_short, split_numbered_poems

BOOK = """Header junk
*** START OF THIS PROJECT GUTENBERG EBOOK POEMS ***

I. LIFE.


I.

SUCCESS.

[Published in a magazine.]

Success is _counted_ sweetest
By those who ne'er succeed.
To comprehend a nectar
Requires sorest need.



II.

    Our share of night to bear,
    Our share of morning,
    Our blank in bliss to fill,
    Our blank in scorning.

*** END OF THIS PROJECT GUTENBERG EBOOK POEMS ***
license text
"""


def test_split_numbered_poems_titles_notes_italics_indent():
    poems = split_numbered_poems(BOOK.replace("\n", "\r\n"))
    assert [p.title for p in poems] == ["Success", None]
    assert poems[0].text.startswith("Success is counted sweetest\nBy those")
    assert "[" not in poems[0].text and "_" not in poems[0].text
    assert poems[1].text.split("\n")[0] == "Our share of night to bear,"
    assert "license" not in poems[1].text


def test_pick_short_respects_line_bounds():
    poems = split_numbered_poems(BOOK)
    assert len(pick_short(poems, limit=10, max_lines=4)) == 2
    assert pick_short(poems, limit=10, min_lines=5) == []
    assert len(pick_short(poems, limit=1)) == 1
