"""`tadm report`: a static HTML report of an archive (ranking.py orders the manifest's rows,
build.py gathers the rest, html.py renders the pages, assets.py holds their stylesheet and
script)."""

CROP = 256  # side of the restored window, in HR pixels
LINK_ABOVE = 10_000  # a local archive with more images has its thumbnails linked, not copied
