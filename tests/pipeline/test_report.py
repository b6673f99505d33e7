"""pipeline.report on hand-written archives: order, pages, escaping, hostile rel_paths, error
rows, restored crops with a tiny real model, linked thumbnails."""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import re
import struct
import tempfile
import urllib.parse
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import display_p3_icc, encode, photo
from PIL import Image

from pipeline import buckets
from pipeline.format import ARCHIVE_SCHEMA, LrHeader, decode_lr_png, encode_lr_png
from pipeline.manifest import ManifestWriter, merged
from pipeline.metadata import Metadata
from pipeline.report import assets, build, html
from pipeline.report.build import REPORT_COLUMNS, build_report, centre_window, entries_of
from pipeline.report.ranking import Ranking
from pipeline.storage import Location
from pipeline.summary import human
from tadm import TADM


@pytest.fixture(scope="module")
def model_id(tiny_model: str) -> str:
    return TADM.from_pretrained(tiny_model).model_id


def write_manifest(archive: Path, rows: list[dict]) -> None:
    writer = ManifestWriter(Location.parse(str(archive / "manifest")), ARCHIVE_SCHEMA)
    writer.add(rows)
    writer.flush()


def archived(archive: Path, rel_path: str, width: int, height: int, model_id: str, **row) -> dict:
    """Write a source image and its LR file (pixels of the right size for a x16 model) and
    return its manifest row."""
    source = archive.parent / "src" / rel_path
    source.parent.mkdir(parents=True, exist_ok=True)
    data = encode(Image.fromarray(photo(width, height, seed=len(rel_path))), "PNG")
    source.write_bytes(data)
    lr = photo(math.ceil(width / 16), math.ceil(height / 16), seed=1)
    lr_png = encode_lr_png(lr, LrHeader(width, height, 16, model_id))
    lr_file = archive / "lr" / f"{rel_path}.png"
    lr_file.parent.mkdir(parents=True, exist_ok=True)
    lr_file.write_bytes(lr_png)
    return {
        "source_uri": str(source),
        "rel_path": rel_path,
        "status": "ok",
        "width": width,
        "height": height,
        "source_bytes": len(data),
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "lr_uri": str(lr_file),
        "lr_width": lr.shape[1],
        "lr_height": lr.shape[0],
        "lr_bytes": len(lr_png),
        "bpp": 8 * len(lr_png) / (width * height),
        "scale": 16,
        "model_id": model_id,
        "seconds": 0.5,
    } | row


def report(archive: Path, out: Path, model: str, worst: int = 0, page_size: int = 100):
    return build_report(
        str(archive), str(out), worst=worst, page_size=page_size, model=model, storage_options={}
    )


class Tags(HTMLParser):
    """Every start tag of a page, with its attributes, and the page's text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [
            a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())
        ]


def cards(page: Path) -> list[str]:
    """The card ids of a page, in order ("rank-1", ...)."""
    return [a["id"] for a in Tags(page.read_text()).find("article")]


def ranked_rows(archive: Path) -> tuple[list[dict], Ranking, bool]:
    """The rows of the manifest of `archive` as the report ranks them, its Ranking (closed),
    and whether its buckets were spilled (then the runs were files)."""
    parts = merged(Location.parse(str(archive / "manifest")), ARCHIVE_SCHEMA, REPORT_COLUMNS)
    assert parts is not None
    with parts, Ranking(parts) as ranking:
        assert {isinstance(run, str) for run in ranking.runs} == {parts.n > 1}
        return list(ranking.rows()), ranking, parts.n > 1


@pytest.mark.parametrize("spilled", [False, True])
def test_order_is_lowest_psnr_first_then_unmeasured_then_kept_then_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spilled: bool
):
    if spilled:  # the buckets are sorted apart, into files, and merged
        monkeypatch.setattr(buckets, "MEMORY_ROWS", 2)
    rows = [
        {"rel_path": "k", "status": "kept", "psnr": 9.0, "kept_uri": "/archive/kept/k"},
        {"rel_path": "b", "status": "ok", "psnr": 30.0},
        {"rel_path": "e", "status": "error", "psnr": None},
        {"rel_path": "c", "status": "ok", "psnr": None},
        {"rel_path": "a", "status": "skipped", "psnr": 20.0},
        {"rel_path": "d", "status": "ok", "psnr": math.nan},
        {"rel_path": "f", "status": "ok", "psnr": math.inf},
        {"rel_path": "g", "status": "ok", "psnr": 25.0},
        {"rel_path": None, "status": "error", "psnr": None},
        {"rel_path": "n", "status": None, "psnr": 1.0},
    ]
    write_manifest(tmp_path, rows)
    ranked, ranking, was_spilled = ranked_rows(tmp_path)
    assert was_spilled == spilled
    entries = entries_of(ranked, 1)
    order = ["a", "g", "b", "f", "c", "d", "k", None, "e", "n"]
    assert [e.row["rel_path"] for e in entries] == order
    assert [e.rank for e in entries] == list(range(1, 11))
    assert entries[7].notes == ["rel_path is not a plain relative path: no files written for it"]
    assert ranking.n == 10 and ranking.first == {"kept": 7, "error": 8}
    assert sorted(ranking.psnrs) == [20.0, 25.0, 30.0, math.inf] and ranking.lr_rows == 6
    assert ranking.kept_psnrs.tolist() == [9.0] and ranking.summary.counts["error"] == 2
    assert [e.rank for e in entries_of(ranked[4:7], 5)] == [5, 6, 7]
    assert [html.page_name(p) for p in (1, 2, 3)] == ["index.html", "page-2.html", "page-3.html"]


def test_spilled_ranking_merges_its_runs_in_the_order_of_one_sort(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Hundreds of rows of every group, PSNRs that tie and paths that differ in a byte: sorted
    bucket by bucket and merged, as one sort of them all in Python orders them."""
    rng = np.random.default_rng(7)
    statuses = ["ok", "skipped", "kept", "error", None]
    rows = [
        {
            "rel_path": f"d{rng.integers(3)}/é{i:03d}.png" if i else None,
            "status": statuses[rng.integers(5)],
            "psnr": [None, math.inf, float(rng.integers(20, 24))][rng.integers(3)],
            "kept_uri": None,
        }
        for i in range(400)
    ]
    write_manifest(tmp_path, rows)
    monkeypatch.setattr(buckets, "MEMORY_ROWS", 50)
    spilled, ranking, was_spilled = ranked_rows(tmp_path)
    assert was_spilled and len(ranking.runs) == 0  # closed: the run files are gone

    def key(row: dict) -> tuple:
        scored = row["psnr"] is not None
        group = {"kept": 2, "error": 3, "ok": 1 - scored, "skipped": 1 - scored}
        g = group.get(row["status"], 4)
        return g, row["psnr"] if g == 0 else 0.0, row["rel_path"] or ""

    assert [key(r) for r in spilled] == sorted(key(r) for r in rows)
    assert sorted(map(str, spilled)) == sorted(map(str, ranked_rows(tmp_path)[0]))
    assert not list(Path(tempfile.gettempdir()).glob(f"{buckets.SPILL_PREFIX}*/run-*"))


def test_centre_window_is_clipped_to_the_image():
    assert tuple(centre_window(1000, 600)) == (372, 172, 256, 256)
    assert tuple(centre_window(96, 300)) == (0, 22, 96, 256)
    assert tuple(centre_window(64, 48)) == (0, 0, 64, 48)


def test_histogram_counts_psnr_per_db_and_leaves_out_inf():
    svg = html.histogram([20.2, 20.7, 21.5, 23.9, math.inf], [], mean=21.6)
    counts = [int(n) for n in re.findall(r"<title>\d+–\d+ dB: (\d+) images?</title>", svg)]
    assert counts == [2, 1, 0, 1]
    assert "over 4 images" in svg and "mean 21.60 dB" in svg
    assert "4 images archived as an LR; not drawn: 1 image restored exactly (∞ dB)" in svg
    assert html.histogram([], [], None) == ""
    assert "0 images" not in html.histogram([25.0, 25.0], [], 25.0)  # one bar, 25-26 dB


def test_histogram_draws_the_images_kept_below_a_quality_floor():
    """Measured, then kept as they are: the images below the floor a reader looks for."""
    svg = html.histogram([24.5], [20.2, 20.4, 21.3], mean=24.5)
    titles = re.findall(r"<title>([^<]*)</title>", svg)
    assert titles[:2] == [
        "20–21 dB: 2 images (0 archived, 2 kept as is)",
        "21–22 dB: 1 image (0 archived, 1 kept as is)",
    ]
    assert titles[-1] == "24–25 dB: 1 image"
    assert svg.count('class="col kept"') == 2 and "over 4 images" in svg
    assert "1 image archived as an LR" in svg and "3 kept as they are, below a quality floor" in svg
    assert "or holding what an LR cannot (transparency" in svg


def test_paged_report_of_a_big_archive(tmp_path: Path, model_id: str, tiny_model: str):
    archive, out = tmp_path / "archive", tmp_path / "out"
    rows = [
        archived(archive, f"img{i}.png", 32, 32, model_id, psnr=float(30 - i % 7) + i / 100)
        for i in range(12)
    ]
    write_manifest(archive, rows)
    written = report(archive, out, tiny_model, page_size=5)
    assert (written.pages, written.thumbnails, written.crops) == (3, "copied", 0)
    assert sorted(p.name for p in out.glob("*.html")) == [
        "index.html",
        "page-2.html",
        "page-3.html",
    ]
    ranks = [cards(out / html.page_name(p)) for p in (1, 2, 3)]
    assert ranks == [[f"rank-{r}" for r in range(a, b)] for a, b in ((1, 6), (6, 11), (11, 13))]
    by_psnr = sorted(rows, key=lambda r: r["psnr"])
    first = Tags((out / "index.html").read_text())
    images = [a for a in first.find("img") if a["alt"].startswith("LR thumbnail of ")]
    assert [a["alt"] for a in images] == [f"LR thumbnail of {r['rel_path']}" for r in by_psnr[:5]]
    thumbs = [a["src"] for a in images]
    assert thumbs == [f"lr/{r['rel_path']}.png" for r in by_psnr[:5]]
    for src in thumbs:  # the archive's LR file, byte for byte
        assert (out / src).read_bytes() == (archive / src).read_bytes()
    # navigation: every page links its neighbours; only page 1 has the totals and histogram
    second = Tags((out / "page-2.html").read_text())
    hrefs = {a["href"] for a in second.find("a")}
    assert {"index.html", "page-3.html"} <= hrefs
    assert "PSNR of the verified images" in "".join(first.text)
    assert "PSNR of the verified images" not in "".join(second.text)
    assert "Images 6–10 of 12, worst first" in "".join(second.text)


def test_strings_from_the_manifest_are_escaped(tmp_path: Path, model_id: str, tiny_model: str):
    archive, out = tmp_path / "archive", tmp_path / "out"
    evil = '<script>alert(1)</script>&"q"#?.png'
    rows = [
        archived(archive, evil, 40, 40, model_id, conversion="<b>RGBA</b> -> RGB"),
        {
            "rel_path": "x<img src=x onerror=alert(2)>.jpg",
            "status": "error",
            "error": "<img src=y onerror=alert(3)> & co",
            "source_bytes": 3,
        },
        {"rel_path": "photo\u202egnp.exe", "status": "error", "error": "x", "source_bytes": 1},
        {"rel_path": "esc\x1b[31mred.png", "status": "error", "error": "y", "source_bytes": 1},
    ]
    write_manifest(archive, rows)
    report(archive, out, tiny_model)
    page = (out / "index.html").read_text()
    tags = Tags(page)
    assert [t for t, _ in tags.tags if t == "script"] == ["script"]  # only report.js
    assert all("onerror" not in attrs for _, attrs in tags.tags)
    assert [a["src"] for a in tags.find("img")] == [
        "lr/%3Cscript%3Ealert%281%29%3C/script%3E%26%22q%22%23%3F.png.png"
    ]
    assert (out / "lr" / f"{evil}.png").read_bytes() == (
        archive / "lr" / f"{evil}.png"
    ).read_bytes()
    text = "".join(tags.text)
    for shown in (evil, "<img src=y onerror=alert(3)> & co", "<b>RGBA</b> -> RGB"):
        assert shown in text  # shown as text, not markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;q&quot;" in page
    assert "\u202e" not in page and "photo\\u202egnp.exe" in text  # shown, not obeyed
    assert "\x1b" not in page and "esc\\u001b[31mred.png" in text


def test_option_names_in_text_are_marked_whole():
    """report.css keeps a <code class="option"> on one line; its hyphens stay real ones."""
    assert html.prose("below --min-psnr 18 & <b>") == (
        'below <code class="option">--min-psnr</code> 18 &amp; &lt;b&gt;'
    )
    assert html.prose("a--b, x-- and --") == "a--b, x-- and --"
    assert re.search(r"code\.option \{[^}]*white-space: nowrap", assets.STYLE)


def test_hostile_rel_paths_are_listed_without_files(tmp_path: Path, model_id: str, tiny_model: str):
    archive, out = tmp_path / "archive", tmp_path / "reports" / "out"
    good = archived(archive, "good.png", 48, 48, model_id, psnr=22.0)
    hostile = ["../../up.png", "/tmp/abs.png", "a\\..\\b.png", "a/./b.png", "a//b.png"]
    # the LR file a careless report would read for "../../up.png" (ARCHIVE/lr/../../up.png.png)
    # and copy to OUT_DIR/lr/../../up.png.png, outside OUT_DIR
    (tmp_path / "up.png.png").write_bytes((archive / "lr" / "good.png.png").read_bytes())
    (tmp_path / "reports").mkdir()
    rows = [good] + [dict(good, rel_path=p, psnr=10.0 + i) for i, p in enumerate(hostile)]
    write_manifest(archive, rows)
    before = set(tmp_path.rglob("*"))
    report(archive, out, tiny_model, worst=len(rows))
    assert set(tmp_path.rglob("*")) - set(out.rglob("*")) - {out} == before  # nothing outside
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == [
        ".tadm-report",
        "crops/000006-restored.png",
        "crops/000006-source.png",
        "index.html",
        "lr/good.png.png",
        "report.css",
        "report.js",
    ]
    tags = Tags((out / "index.html").read_text())
    assert len(tags.find("article")) == 6
    text = "".join(tags.text)
    assert text.count("rel_path is not a plain relative path: no files written for it") == 5
    for rel_path in hostile:
        assert rel_path in text


def test_kept_sources_show_why_and_are_not_errors(tmp_path: Path, model_id: str, tiny_model: str):
    archive, out = tmp_path / "archive", tmp_path / "out"
    reason = "psnr 10.11 dB below --min-psnr 18"
    rows = [
        archived(archive, "a.png", 40, 40, model_id, psnr=24.0),
        {"rel_path": "text.png", "status": "kept", "kept_reason": reason, "psnr": 10.11},
        {"rel_path": "bad.gif", "status": "error", "error": "animated: 3 frames"},
    ]
    rows[1] |= {"kept_uri": str(archive / "kept" / "text.png"), "source_bytes": 300_000}
    write_manifest(archive, rows)
    report(archive, out, tiny_model)
    page = Tags((out / "index.html").read_text())
    # The headline is the archive's, kept files with the LR thumbnails: they take their room.
    lr, source = rows[0]["lr_bytes"], rows[0]["source_bytes"]
    assert (
        f"{human(lr)} of LR thumbnails + {human(300_000)} kept as is, from "
        f"{human(source + 300_000)} of sources" in page.text
    )
    ratio = f"{(source + 300_000) / (lr + 300_000):.1f}×"
    assert ratio in page.text
    assert f"source bytes / archive bytes; {source / lr:.1f}× for the images shrunk" in page.text
    assert [a["data-status"] for a in page.find("article")] == ["ok", "kept", "error"]
    assert f"source kept as it was: {reason}" in "".join(page.text)
    assert "10.11 dB" in page.text  # the measure that kept it
    # drawn in the histogram, not counted in the mean of the archived images
    assert page.find("rect", **{"class": "col kept"})
    text = "".join(page.text)
    assert "10–11 dB: 1 image (0 archived, 1 kept as is)" in text
    assert "over 1 verified image archived (1 kept as is left out)" in text
    assert page.find("a", href="index.html#rank-2", **{"class": "kept"})  # "kept 1" links there
    assert "ok 1 · kept 1 · error 1" in "".join(page.text)


def test_kept_sources_skipped_by_a_rerun_are_still_shown_as_kept(
    tmp_path: Path, model_id: str, tiny_model: str
):
    """A re-run skips a kept source as done: its row is "skipped" with the kept_uri of its
    copy, and the report shows it as kept (after the images, with why), never as an image
    whose LR file is missing."""
    archive, out = tmp_path / "archive", tmp_path / "out"
    reason = "psnr 10.11 dB below --min-psnr 18"
    rows = [
        archived(archive, "a.png", 40, 40, model_id, psnr=24.0),
        {"rel_path": "b.png", "status": "skipped", "kept_reason": reason, "psnr": 10.11},
    ]
    rows[1] |= {"kept_uri": str(archive / "kept" / "b.png"), "source_bytes": 3_000}
    write_manifest(archive, rows)
    written = report(archive, out, tiny_model, worst=2)
    page = Tags((out / "index.html").read_text())
    text = "".join(page.text)
    assert [a["id"] for a in page.find("article")] == ["rank-1", "rank-2"]
    assert [a["data-status"] for a in page.find("article")] == ["ok", "skipped"]
    assert f"source kept as it was: {reason}" in text
    assert "no thumbnail" not in text and "no restored crop" not in text
    assert [a["alt"] for a in page.find("img")] == [
        "LR thumbnail of a.png",
        "restored window of a.png",
        "source window of a.png",
    ]
    assert written.crops == 1


def test_files_kept_that_are_not_images_are_counted_as_files(
    tmp_path: Path, model_id: str, tiny_model: str
):
    """--keep-failed keeps every file: notes.txt, a hidden .x.jpg, or a photo in a hidden
    folder, that archive took for no image, is a file beside the images (it was counted as an
    image)."""
    archive, out = tmp_path / "archive", tmp_path / "out"
    not_image = "not an image file: only images are archived"
    rows = [archived(archive, "a.png", 40, 40, model_id, psnr=24.0)]
    for rel_path in ("notes.txt", "d/.x.jpg", ".darktable/c.png", "e/bad.JPG"):
        reason = "not a readable image" if rel_path.endswith("JPG") else not_image
        kept = {"kept_uri": str(archive / "kept" / rel_path), "kept_reason": reason}
        rows.append({"rel_path": rel_path, "status": "kept", "source_bytes": 12} | kept)
    write_manifest(archive, rows)
    report(archive, out, tiny_model)
    text = "".join(Tags((out / "index.html").read_text()).text)
    assert "Files5" in text and "2 images and 3 other files · ok 1 · kept 4" in text
    assert "Files 1–5 of 5, worst first" in text
    rows = rows[:1] + rows[-1:]  # images only: as it was
    write_manifest(tmp_path / "images", rows)
    report(tmp_path / "images", out, tiny_model)
    text = "".join(Tags((out / "index.html").read_text()).text)
    assert "Images2ok 1 · kept 1" in text and "Images 1–2 of 2, worst first" in text


def test_what_an_lr_lost_stands_out_and_is_counted(tmp_path: Path, model_id: str, tiny_model: str):
    archive, out = tmp_path / "archive", tmp_path / "out"
    rows = [
        archived(archive, "a.png", 40, 40, model_id, conversion="RGBA -> RGB, alpha dropped"),
        archived(archive, "b.jpg", 40, 40, model_id, conversion="EXIF orientation 6 applied"),
    ]
    write_manifest(archive, rows)
    report(archive, out, tiny_model)
    page = (out / "index.html").read_text()
    assert (
        '<p class="losses">1 image archived with something not carried (alpha dropped 1): '
        "their cards say what</p>" in page
    )
    assert '<p class="note loss">decoded, with a loss: RGBA -&gt; RGB, alpha dropped</p>' in page
    assert '<p class="note">decoded: EXIF orientation 6 applied</p>' in page
    # no PSNR to rank them by
    assert (
        'Images 1–2 of 2, by name (archived without <code class="option">--verify</code>)' in page
    )


def test_error_rows_come_last_with_their_message(tmp_path: Path, model_id: str, tiny_model: str):
    archive, out = tmp_path / "archive", tmp_path / "out"
    rows = [
        archived(archive, "a.png", 40, 40, model_id, psnr=24.0),
        archived(archive, "b.png", 40, 40, model_id),  # archived without --verify
        {"rel_path": "bad/empty.jpg", "status": "error", "error": "empty file (0 bytes)"},
        {"rel_path": "bad/junk.png", "status": "error", "error": "not a readable image"},
    ]
    write_manifest(archive, rows)
    report(archive, out, tiny_model, page_size=2)
    assert cards(out / "page-2.html") == ["rank-3", "rank-4"]
    page2 = Tags((out / "page-2.html").read_text())
    assert [a["data-status"] for a in page2.find("article")] == ["error", "error"]
    assert page2.find("img") == []
    assert {"empty file (0 bytes)", "not a readable image"} <= set(page2.text)
    first = Tags((out / "index.html").read_text())
    assert first.find("a", href="page-2.html#rank-3")  # "error 2" in the totals links there
    assert "ok 2 · error 2" in "".join(first.text)
    assert not (out / "lr" / "bad").exists()
    (out / "page-9.html").write_text("an earlier report's page")  # a smaller --page-size
    (out / "notes.html").write_text("the user's own file")
    report(archive, out, tiny_model, page_size=4)
    assert sorted(p.name for p in out.glob("*.html")) == ["index.html", "notes.html"]


def test_worst_images_get_a_restored_crop_and_the_source_crop(
    tmp_path: Path, model_id: str, tiny_model: str
):
    archive, out = tmp_path / "archive", tmp_path / "out"
    rows = [
        archived(archive, "big.png", 300, 280, model_id, psnr=18.0),
        archived(archive, "small.png", 64, 48, model_id, psnr=21.0),
        archived(archive, "fine.png", 64, 64, model_id, psnr=35.0),
    ]
    write_manifest(archive, rows)
    written = report(archive, out, tiny_model, worst=2)
    assert written.crops == 2
    assert sorted(p.name for p in (out / "crops").iterdir()) == [
        "000001-restored.png",
        "000001-source.png",
        "000002-restored.png",
        "000002-source.png",
    ]
    windows = {1: ("big.png", (22, 12, 256, 256)), 2: ("small.png", (0, 0, 64, 48))}
    for rank, (name, (x, y, w, h)) in windows.items():
        restored = np.asarray(Image.open(out / "crops" / f"{rank:06d}-restored.png"))
        source = np.asarray(Image.open(out / "crops" / f"{rank:06d}-source.png"))
        assert restored.shape == source.shape == (h, w, 3)
        original = np.asarray(Image.open(tmp_path / "src" / name))
        np.testing.assert_array_equal(source, original[y : y + h, x : x + w])
    tags = Tags((out / "index.html").read_text())
    assert len(tags.find("article", **{"class": "card wide"})) == 2
    assert [a["src"] for a in tags.find("img", alt="restored window of big.png")] == [
        "crops/000001-restored.png"
    ]
    assert [a["src"] for a in tags.find("img", alt="source window of small.png")] == [
        "crops/000002-source.png"
    ]
    # Again with a smaller --worst: the second entry's crops, linked from nowhere now, go.
    (out / "crops" / "mine.png").write_bytes(b"the user's own file")
    (tmp_path / "src" / "big.png").unlink()  # and the first one's source crop
    assert report(archive, out, tiny_model, worst=1).crops == 1
    assert sorted(p.name for p in (out / "crops").iterdir()) == ["000001-restored.png", "mine.png"]


def test_progress_says_the_crops_then_the_thumbnails(
    tmp_path: Path, model_id: str, tiny_model: str, caplog: pytest.LogCaptureFixture
):
    """One line an update, each job's lines together: the thumbnails' did not wait for the
    crops between the worst images' and the pages' (their rate counted the crops' time)."""
    archive, out = tmp_path / "archive", tmp_path / "out"
    rows = [archived(archive, f"img{i}.png", 32, 32, model_id, psnr=20.0 + i) for i in range(6)]
    write_manifest(archive, rows)
    caplog.set_level(logging.INFO, "tadm")
    report(archive, out, tiny_model, worst=2, page_size=2)
    lines = [r.getMessage() for r in caplog.records if r.name == "tadm"]
    assert all("\n" not in line and "\r" not in line for line in lines)
    jobs = [line.split(": ")[1] for line in lines]
    assert [job for job, _ in itertools.groupby(jobs)] == ["restored crops", "thumbnails"]
    assert lines[-1].startswith("report: thumbnails: 6/6 images (100%), 0 errors, ")


def test_crops_are_in_the_colours_their_image_states(
    tmp_path: Path, model_id: str, tiny_model: str
):
    """A crop carries its image's ICC profile (a Display P3 photo's colours are not sRGB's),
    as its LR file holds it; a PNG's gAMA alone is converted to sRGB."""
    archive, out = tmp_path / "archive", tmp_path / "out"
    gamma_1 = b"gAMA" + struct.pack(">I", 100000)
    stated = {"p3.png": Metadata(icc=display_p3_icc()), "linear.png": Metadata(png_colour=gamma_1)}
    rows = []
    for psnr, (name, metadata) in enumerate(stated.items()):  # p3.png first, the worst
        rows.append(archived(archive, name, 64, 48, model_id, psnr=18.0 + psnr))
        lr_file = archive / "lr" / f"{name}.png"
        lr, header = decode_lr_png(lr_file.read_bytes())
        lr_file.write_bytes(encode_lr_png(lr, replace(header, metadata=metadata)))
        rows[-1]["lr_bytes"] = lr_file.stat().st_size
    write_manifest(archive, rows)
    report(archive, out, tiny_model, worst=2)
    for kind in ("restored", "source"):
        with Image.open(out / "crops" / f"000001-{kind}.png") as p3:
            assert p3.info["icc_profile"] == display_p3_icc()
        with Image.open(out / "crops" / f"000002-{kind}.png") as linear:
            assert "icc_profile" not in linear.info and "gamma" not in linear.info
    source = np.asarray(Image.open(out / "crops" / "000002-source.png"))
    original = np.asarray(Image.open(tmp_path / "src" / "linear.png"))
    assert (source.astype(int) - original.astype(int)).mean() > 20  # linear -> sRGB: lighter


def test_no_source_crop_when_the_source_changed_or_is_gone(
    tmp_path: Path, model_id: str, tiny_model: str
):
    archive, out = tmp_path / "archive", tmp_path / "out"
    rows = [
        archived(archive, "changed.png", 48, 48, model_id, psnr=20.0),
        archived(archive, "gone.png", 48, 48, model_id, psnr=21.0),
        archived(archive, "fifo.png", 48, 48, model_id, psnr=22.0),
    ]
    write_manifest(archive, rows)
    (tmp_path / "src" / "changed.png").write_bytes(encode(Image.fromarray(photo(48, 48, 9)), "PNG"))
    (tmp_path / "src" / "gone.png").unlink()
    (tmp_path / "src" / "fifo.png").unlink()
    os.mkfifo(tmp_path / "src" / "fifo.png")  # reading it would block the report for good
    assert report(archive, out, tiny_model, worst=3).crops == 3
    assert sorted(p.name for p in (out / "crops").iterdir()) == [
        "000001-restored.png",
        "000002-restored.png",
        "000003-restored.png",
    ]
    text = "".join(Tags((out / "index.html").read_text()).text)
    assert (
        f"no source crop: source {tmp_path / 'src' / 'changed.png'} changed since it was archived"
        in text
    )
    assert f"no source crop: source {tmp_path / 'src' / 'gone.png'} cannot be read" in text
    assert f"no source crop: source {tmp_path / 'src' / 'fifo.png'} is not a regular file" in text


def test_lr_of_another_model_or_missing_is_a_note(
    tmp_path: Path, model_id: str, tiny_model: str, other_model: str
):
    archive, out = tmp_path / "archive", tmp_path / "out"
    other_id = TADM.from_pretrained(other_model).model_id
    rows = [
        archived(archive, "other.png", 48, 48, other_id, psnr=20.0),
        archived(archive, "missing.png", 48, 48, model_id, psnr=21.0),
    ]
    (archive / "lr" / "missing.png.png").unlink()
    write_manifest(archive, rows)
    assert report(archive, out, tiny_model, worst=2).crops == 0
    text = "".join(Tags((out / "index.html").read_text()).text)
    assert (
        f"no restored crop: archived by model {other_id}, the report runs model {model_id}" in text
    )
    assert "no thumbnail: cannot read" in text and "missing.png.png" in text
    assert not (out / "crops").exists()


def test_thumbnails_of_a_large_local_archive_are_linked(
    tmp_path: Path,
    model_id: str,
    tiny_model: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
):
    monkeypatch.setattr(build, "LINK_ABOVE", 2)
    archive, out = tmp_path / "archive", tmp_path / "reports" / "out"
    names = ("a", "b", "c #1")
    write_manifest(archive, [archived(archive, f"d/{n}.png", 32, 32, model_id) for n in names])
    caplog.set_level(logging.INFO, "tadm")
    assert report(archive, out, tiny_model).thumbnails == "linked"
    lines = [r.getMessage() for r in caplog.records if r.name == "tadm"]
    assert lines[-1].startswith("report: pages: 3/3 images (100%), 0 errors, ")  # no copy: pages
    assert not (out / "lr").exists()
    tags = Tags((out / "index.html").read_text())
    srcs = [a["src"] for a in tags.find("img")]
    assert srcs == [f"../../archive/lr/d/{n}.png.png" for n in ("a", "b", "c%20%231")]
    for src, name in zip(srcs, names, strict=True):
        linked = (out / urllib.parse.unquote(src)).resolve()
        assert linked == archive / "lr" / "d" / f"{name}.png.png"
    assert "Thumbnails only linked" in "".join(tags.text)


def test_bad_arguments_and_missing_manifest_raise(tmp_path: Path, tiny_model: str):
    with pytest.raises(ValueError, match="has no manifest"):
        report(tmp_path, tmp_path / "out", tiny_model)
    write_manifest(tmp_path, [{"rel_path": "a", "status": "error", "error": "x"}])
    with pytest.raises(ValueError, match="--page-size 0: must be 1 or more"):
        report(tmp_path, tmp_path / "out", tiny_model, page_size=0)
    with pytest.raises(ValueError, match="--worst -1"):
        report(tmp_path, tmp_path / "out", tiny_model, worst=-1)
    with pytest.raises(ValueError, match="must be a local folder"):
        report(tmp_path, "s3://bucket/report", tiny_model)
    with pytest.raises(ValueError, match="^model cannot be loaded: unknown model 'no-such-model'"):
        report(tmp_path, tmp_path / "out", "no-such-model")
    (tmp_path / "file").write_text("")
    for out in (tmp_path / "file", tmp_path / "file" / "out"):
        with pytest.raises(ValueError, match=rf"^OUT_DIR '{out}' cannot be a folder \(.*\): give"):
            report(tmp_path, out, tiny_model)


def test_out_dir_of_other_files_is_refused_and_left_as_it_was(
    tmp_path: Path, model_id: str, tiny_model: str
):
    """A report overwrites index.html and removes the pages and crops it no longer has: into a
    folder of someone else's files (their own page-5.html) it writes nothing. An earlier
    report's folder is taken, with or without its marker file."""
    archive, out = tmp_path / "archive", tmp_path / "docs"
    write_manifest(archive, [archived(archive, "a.png", 32, 32, model_id)])
    own = {"index.html": "my site", "page-5.html": "my page", "crops/000009-source.png": "x"}
    for name, text in own.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    message = (
        rf"^OUT_DIR '{out}' holds files of no earlier report \('crops', 'index.html', "
        r"'page-5.html'\), which a report would overwrite or remove: give a new or empty"
    )
    with pytest.raises(ValueError, match=message):
        report(archive, out, tiny_model)
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == set(own)
    assert all((out / name).read_text() == text for name, text in own.items())

    earlier = tmp_path / "earlier"
    report(archive, earlier, tiny_model)
    assert (earlier / build.MARKER).read_text() == f"tadm report of {archive}\n"
    (earlier / build.MARKER).unlink()  # a report's three files say it is one too
    (earlier / "page-7.html").write_text("a page of that report")
    report(archive, earlier, tiny_model)
    assert (earlier / build.MARKER).exists() and not (earlier / "page-7.html").exists()


def test_thumbnail_that_is_not_a_png_is_not_copied(tmp_path: Path, model_id: str, tiny_model: str):
    archive, out = tmp_path / "archive", tmp_path / "out"
    row = archived(archive, "a.png", 32, 32, model_id)
    (archive / "lr" / "a.png.png").write_bytes(b"secret text, not an image")
    write_manifest(archive, [row])
    report(archive, out, tiny_model)
    assert not (out / "lr").exists()
    assert f"no thumbnail: {archive / 'lr' / 'a.png.png'} is not a PNG file" in (
        (out / "index.html").read_text()
    )
