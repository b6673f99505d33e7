"""The tile server's HTML pages: a deep-zoom viewer of one image (OpenSeadragon on the image's
IIIF info.json) and an index of the archive's images.

OpenSeadragon (BSD-3-Clause, static/openseadragon/LICENSE.txt) ships with the package under
static/openseadragon/, so the pages need nothing from the internet. Every string from the
archive goes through `esc`, and into the page's script through `js`. Links are paths from the
app's root (`root`: "/", or the route prefix), never URLs built from the request's Host.
"""

from __future__ import annotations

import bisect
import html
import json
import sys
from pathlib import Path
from urllib.parse import quote, urlencode

from pipeline.format import visible
from pipeline.summary import plural

STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 100  # images listed per index page

STYLE = """
html, body { margin: 0; height: 100%; background: #1e1e1e; color: #ddd;
  font: 14px/1.4 system-ui, sans-serif; }
header { height: 36px; display: flex; align-items: center; gap: 16px; padding: 0 12px;
  background: #2b2b2b; }
header h1 { font-size: 15px; margin: 0; font-weight: 600; min-width: 0; flex: 1;
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
header > * { flex-shrink: 0; }
a { color: #8cc4ff; }
#viewer { position: absolute; top: 36px; bottom: 0; left: 0; right: 0; }
main { padding: 12px 16px; }
main li { margin: 2px 0; overflow-wrap: anywhere; }
main a.folder { color: #9ab; text-decoration: none; }
main a.folder:hover { text-decoration: underline; }
form { display: flex; gap: 8px; margin-bottom: 8px; }
form input { flex: 1; max-width: 480px; min-width: 0; background: #2b2b2b; color: #ddd;
  border: 1px solid #555; padding: 4px 6px; font: inherit; }
"""


def esc(value: object) -> str:
    return html.escape(visible(str(value)), quote=True)


def js(value: object) -> str:
    """`value` as a JavaScript literal that is safe inside a <script> element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")


def image_id(rel_path: str) -> str:
    """An image's id in the IIIF and viewer URLs: its rel_path, URL-encoded."""
    return quote(rel_path, safe="")


def head(title: str) -> str:
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>"
    )


def viewer_page(root: str, rel_path: str, width: int, height: int) -> str:
    """The viewer of image `rel_path` (width x height HR pixels); `root`, the app's root path,
    ends with "/"."""
    info = f"{root}iiif/{image_id(rel_path)}/info.json"
    options = {
        "id": "viewer",
        "prefixUrl": f"{root}static/openseadragon/images/",
        "tileSources": info,
        "showNavigator": True,
        "maxZoomPixelRatio": 2,
    }
    return (
        f"{head(f'{rel_path} — tadm')}<body>"
        f'<header><a href="{esc(root)}view/">images</a>'
        f'<h1 title="{esc(rel_path)}">{esc(rel_path)}</h1><span>{width} × {height}</span>'
        f'<a href="{esc(info)}">info.json</a></header>'
        f'<div id="viewer"></div>'
        f'<script src="{esc(root)}static/openseadragon/openseadragon.min.js"></script>'
        f"<script>OpenSeadragon({js(options)});</script></body></html>\n"
    )


def under(rel_paths: list[str], prefix: str) -> list[str]:
    """The rel_paths of the sorted `rel_paths` that start with `prefix` (a folder's "a/b/", or
    a name's first letters), found by bisection: millions of names take no scan."""
    if not prefix:
        return rel_paths
    start = bisect.bisect_left(rel_paths, prefix)
    last = ord(prefix[-1])
    if last == sys.maxunicode:
        return [p for p in rel_paths[start:] if p.startswith(prefix)]
    end = bisect.bisect_left(rel_paths, prefix[:-1] + chr(last + 1), start)
    return rel_paths[start:end]


def index_page(root: str, rel_paths: list[str], page: int, prefix: str = "") -> str:
    """Page `page` (1-based) of the list of images, PAGE_SIZE a page: those whose rel_path
    starts with `prefix` (`rel_paths` are they); `root`, the app's root path, ends with "/".
    Each folder of a rel_path links to the list of that folder's images, its name to the
    image's viewer; a form takes any prefix."""
    pages = max(1, -(-len(rel_paths) // PAGE_SIZE))
    shown = rel_paths[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    items = "".join(f"<li>{linked(root, p)}</li>" for p in shown)
    nav = []
    if page > 1:
        nav.append(f'<a href="{esc(listing(root, prefix, page - 1))}">previous</a>')
    if page < pages:
        nav.append(f'<a href="{esc(listing(root, prefix, page + 1))}">next</a>')
    title = plural(len(rel_paths), "image") + (f" under {prefix}" if prefix else "")
    form = (
        f'<form action="{esc(root)}view/"><input name="prefix" value="{esc(prefix)}" '
        'placeholder="folder/ or the start of a name" aria-label="list the images whose name '
        'starts with"><button>list</button></form>'
    )
    return (
        f'{head("images — tadm")}<body><header><h1 title="{esc(title)}">{esc(title)}</h1>'
        f"<span>page {page} of {pages}</span>{' '.join(nav)}</header>"
        f"<main>{form}<ol start={(page - 1) * PAGE_SIZE + 1}>{items}</ol></main></body></html>\n"
    )


def listing(root: str, prefix: str, page: int = 1) -> str:
    """The index's URL of page `page` of the images under `prefix`."""
    query = {"prefix": prefix} if prefix else {}
    query |= {"page": str(page)} if page > 1 else {}
    return f"{root}view/" + (f"?{urlencode(query)}" if query else "")


def linked(root: str, rel_path: str) -> str:
    """`rel_path` with each folder linked to its listing and the name to its viewer."""
    *folders, name = rel_path.split("/")
    links = [
        f'<a class="folder" href="{esc(listing(root, "/".join(folders[: i + 1]) + "/"))}" '
        f'title="the images in this folder">{esc(folder)}/</a>'
        for i, folder in enumerate(folders)
    ]
    return "".join(links) + f'<a href="{esc(root)}view/{esc(image_id(rel_path))}">{esc(name)}</a>'
