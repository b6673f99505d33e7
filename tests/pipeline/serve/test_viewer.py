"""The viewer's pages show a name as it is: escaped, its bidirectional controls made visible."""

from __future__ import annotations

from pipeline.serve.viewer import index_page, viewer_page

SPOOF = "photo\u202egnp.exe"  # U+202E: a browser would show "photoexe.png"


def test_names_are_escaped_and_their_bidi_controls_shown():
    for page in (
        index_page("http://h/", [SPOOF, "<b>x</b>.png"], 1),
        viewer_page("http://h/", SPOOF, 64, 48),
    ):
        assert "\u202e" not in page and "photo\\u202egnp.exe" in page
    index = index_page("http://h/", [SPOOF, "<b>x</b>.png"], 1)
    assert 'href="http://h/view/photo%E2%80%AEgnp.exe"' in index  # the link keeps the name
    assert "&lt;b&gt;x&lt;/b&gt;.png" in index and "<b>" not in index
