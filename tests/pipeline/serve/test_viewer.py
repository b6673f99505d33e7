"""The viewer's pages show a name as it is: escaped, its bidirectional controls made visible;
they link with paths from the app's root, never with a host."""

from __future__ import annotations

import sys

from pipeline.serve.viewer import PAGE_SIZE, index_page, under, viewer_page

SPOOF = "photo\u202egnp.exe"  # U+202E: a browser would show "photoexe.png"


def test_names_are_escaped_and_their_bidi_controls_shown():
    for page in (
        index_page("/", [SPOOF, "<b>x.png"], 1),
        viewer_page("/", SPOOF, 64, 48),
    ):
        assert "\u202e" not in page and "photo\\u202egnp.exe" in page
    index = index_page("/", [SPOOF, "<b>x.png", "<i>/y.png"], 1, prefix="<p>")
    assert 'href="/view/photo%E2%80%AEgnp.exe"' in index  # the link keeps the name
    assert "&lt;b&gt;x.png" in index and "&lt;i&gt;/</a>" in index and 'value="&lt;p&gt;"' in index
    assert "<b>" not in index and "<i>" not in index and "<p>" not in index


def test_links_are_paths_under_the_root():
    page = viewer_page("/tiles/", "a b.png", 64, 48)
    assert '<script src="/tiles/static/openseadragon/openseadragon.min.js">' in page
    assert '"tileSources": "/tiles/iiif/a%20b.png/info.json"' in page
    assert '"prefixUrl": "/tiles/static/openseadragon/images/"' in page
    assert 'href="/tiles/view/"' in page
    assert "http" not in page  # no scheme, no host
    assert 'href="/tiles/view/a%20b.png"' in index_page("/tiles/", ["a b.png"], 1)


def test_each_folder_of_a_name_lists_its_images_and_pages_keep_the_folder():
    index = index_page("/", ["a b/c/d.jpg"], 1)
    assert '<a class="folder" href="/view/?prefix=a+b%2F" title="the images in' in index
    assert 'href="/view/?prefix=a+b%2Fc%2F" title="the images in this folder">c/</a>' in index
    assert '<a href="/view/a%20b%2Fc%2Fd.jpg">d.jpg</a>' in index
    names = [f"d/{i:04d}.jpg" for i in range(3 * PAGE_SIZE)]
    page = index_page("/", names, 2, prefix="d/")
    assert "300 images under d/" in page and "page 2 of 3" in page
    assert 'href="/view/?prefix=d%2F">previous' in page
    assert 'href="/view/?prefix=d%2F&amp;page=3">next' in page


def test_names_under_a_prefix_are_found_by_bisection():
    names = sorted(["a/1.jpg", "a/2.jpg", "ab.jpg", "a.jpg", "b/a/1.jpg", "\U0010ffffx", "z"])
    assert under(names, "") == names
    assert under(names, "a/") == ["a/1.jpg", "a/2.jpg"]
    assert under(names, "a") == ["a.jpg", "a/1.jpg", "a/2.jpg", "ab.jpg"]
    assert under(names, "b/a/") == ["b/a/1.jpg"] and under(names, "c") == []
    assert under(names, chr(sys.maxunicode)) == ["\U0010ffffx"]
