"""`tadm report`: a static HTML report of an archive (build.py gathers it, html.py renders its
pages, assets.py holds their stylesheet and script)."""
