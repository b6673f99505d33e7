"""The viewer's pages show a name as it is: escaped, its bidirectional controls made visible;
they link with paths from the app's root, never with a host."""

from __future__ import annotations

from pipeline.serve.viewer import index_page, viewer_page

SPOOF = "photo\u202egnp.exe"  # U+202E: a browser would show "photoexe.png"


def test_names_are_escaped_and_their_bidi_controls_shown():
    for page in (
        index_page("/", [SPOOF, "<b>x</b>.png"], 1),
        viewer_page("/", SPOOF, 64, 48),
    ):
        assert "\u202e" not in page and "photo\\u202egnp.exe" in page
    index = index_page("/", [SPOOF, "<b>x</b>.png"], 1)
    assert 'href="/view/photo%E2%80%AEgnp.exe"' in index  # the link keeps the name
    assert "&lt;b&gt;x&lt;/b&gt;.png" in index and "<b>" not in index


def test_links_are_paths_under_the_root():
    page = viewer_page("/tiles/", "a b.png", 64, 48)
    assert '<script src="/tiles/static/openseadragon/openseadragon.min.js">' in page
    assert '"tileSources": "/tiles/iiif/a%20b.png/info.json"' in page
    assert '"prefixUrl": "/tiles/static/openseadragon/images/"' in page
    assert 'href="/tiles/view/"' in page
    assert "http" not in page  # no scheme, no host
    assert 'href="/tiles/view/a%20b.png"' in index_page("/tiles/", ["a b.png"], 1)
