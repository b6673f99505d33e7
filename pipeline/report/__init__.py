"""`tadm report`: a static HTML report of an archive (build.py gathers it, html.py renders it)."""
