"""`tadm report` end to end: a real archive of every kind of input (tadm archive --verify with a
tiny model), its report, and that report opened from disk in headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import debian_tool, run_cli
from PIL import Image

from pipeline.format import ARCHIVE_SCHEMA, MANIFEST_DIR
from pipeline.manifest import ManifestWriter, read_manifest
from pipeline.storage import Location

WINDOW = (1200, 1600)
BROWSER_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; missing, the tests that need it fail under CI (make test installs it)
    and are skipped elsewhere."""
    return debian_tool("chromium", "chromium")


def browse(
    chromium: str, page: Path, profile: Path, *args: str, window: tuple[int, int] = WINDOW
) -> str:
    """Open `page` from disk in headless Chromium with `args`; its stdout."""
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={window[0]},{window[1]}",
        *args,
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def start_tags(dom: str, tag: str) -> list[str]:
    return re.findall(rf"<{tag}\b[^>]*>", dom)


# A page framed `width` CSS pixels wide (headless Chromium's window is 500 at least), measured
# once it has loaded into body[data-probe] (JSON): what sticks out past the frame (an element
# not inside a box that scrolls), the smallest text of the histogram as drawn, and each option
# name ("--min-psnr") that a line break cuts, the page laid out at every width from 300 to 1400.
PROBE = """<!doctype html><html><body style="margin:0">
<iframe src="{src}" style="width:{width}px;height:1600px;border:0"></iframe>
<script>
addEventListener("load", () => {{
  const frame = document.querySelector("iframe").contentWindow, page = frame.document;
  function* ancestors(e) {{ for (let a = e.parentElement; a; a = a.parentElement) yield a; }}
  const scrolls = (e) => [...ancestors(e)].some(
    (a) => ["auto", "scroll"].includes(frame.getComputedStyle(a).overflowX));
  const outside = [];
  for (const e of page.body.querySelectorAll("*")) {{
    const box = e.getBoundingClientRect();
    if (box.width && (box.left < -0.5 || box.right > frame.innerWidth + 0.5) && !scrolls(e))
      outside.push(`${{e.tagName.toLowerCase()}}.${{e.className}} ${{box.left}}-${{box.right}}`);
  }}
  const labels = [...page.querySelectorAll(".histogram text")];
  const smallest = Math.min(...labels.map((t) => t.getBoundingClientRect().height));
  const pageWidth = page.documentElement.scrollWidth;
  const main = page.querySelector("main");
  const cut = new Set();
  for (let width = 300; width <= 1400; width += 7) {{
    main.style.width = `${{width}}px`;
    const walker = page.createTreeWalker(main, frame.NodeFilter.SHOW_TEXT);
    for (let node; (node = walker.nextNode()); ) {{
      for (const m of node.data.matchAll(/--[A-Za-z0-9][A-Za-z0-9-]*/g)) {{
        const range = page.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
        if (tops.size > 1) cut.add(`${{m[0]}} at ${{width}}px`);
      }}
    }}
  }}
  document.body.dataset.probe = JSON.stringify({{pageWidth, outside, smallest, cut: [...cut]}});
}});
</script></body></html>
"""


def probe(chromium: str, page: Path, width: int, tmp_path: Path) -> dict:
    """What PROBE measures of `page` framed `width` CSS pixels wide."""
    framed = tmp_path / f"probe-{width}.html"
    framed.write_text(PROBE.format(src=page.as_uri(), width=width))
    window = (max(width, 500), 1600)
    flags = ("--allow-file-access-from-files", "--dump-dom")  # the frame's page is another file
    dom = browse(chromium, framed, tmp_path / "profile", *flags, window=window)
    found = re.search(r'data-probe="([^"]*)"', start_tags(dom, "body")[0])
    assert found, "the probe did not run"
    return json.loads(html.unescape(found[1]))


@pytest.fixture(scope="module")
def zoo_report(zoo: Path, tiny_model: str, ray_cluster: str, tmp_path_factory) -> tuple[Path, Path]:
    """The zoo archived with --verify (11 images, 6 error rows) and its report: 3 restored
    crops, 10 images a page."""
    root = tmp_path_factory.mktemp("report")
    archive, out = root / "archive", root / "report"
    args = ("--model", tiny_model)
    assert run_cli("archive", zoo, archive, *args, "--verify", "--batch-size", 4) == 1  # errors
    assert run_cli("report", archive, out, *args, "--worst", 3, "--page-size", 10) == 0
    return archive, out


def test_report_files(zoo_report):
    archive, out = zoo_report
    rows = read_manifest(Location.parse(str(archive / MANIFEST_DIR)), ARCHIVE_SCHEMA).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    assert (len(rows), len(ok)) == (17, 11)
    assert sorted(p.name for p in out.glob("*.html")) == ["index.html", "page-2.html"]
    copied = sorted(str(p.relative_to(out / "lr")) for p in (out / "lr").rglob("*.png"))
    assert copied == sorted(f"{r['rel_path']}.png" for r in ok)
    worst = sorted(ok, key=lambda r: r["psnr"])[:3]
    for rank, row in enumerate(worst, start=1):
        restored = Image.open(out / "crops" / f"{rank:06d}-restored.png")
        source = Image.open(out / "crops" / f"{rank:06d}-source.png")
        assert restored.size == source.size == (min(row["width"], 256), min(row["height"], 256))


def test_chromium_shows_every_entry_with_its_images(chromium, zoo_report, tmp_path: Path):
    _, out = zoo_report
    names = ("index.html", "page-2.html")
    pages = [browse(chromium, out / name, tmp_path / "profile", "--dump-dom") for name in names]
    articles = [start_tags(dom, "article") for dom in pages]
    assert [len(a) for a in articles] == [10, 7]
    statuses = [re.search(r'data-status="(\w+)"', a).group(1) for p in articles for a in p]
    assert statuses == ["ok"] * 11 + ["error"] * 6  # worst first, error rows last
    images = [start_tags(dom, "img") for dom in pages]
    assert [len(i) for i in images] == [10 + 3 + 3, 1]  # thumbnails, restored and source crops
    for dom, imgs in zip(pages, images, strict=True):
        assert all('data-loaded="yes"' in img for img in imgs), imgs
        assert f'data-images-loaded="{len(imgs)}/{len(imgs)}"' in start_tags(dom, "body")[0]
    assert pages[1].count('class="message"') == 6


def test_screenshot_shows_the_images(chromium, zoo_report, tmp_path: Path):
    """The report against a copy without its image files: the pixels differ where the images
    are, and the copy says they did not load."""
    _, out = zoo_report
    bare = tmp_path / "bare"
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns("*.png"))
    shots = []
    for report in (out, bare):
        shot = tmp_path / f"{report.name}.png"
        browse(chromium, report / "index.html", tmp_path / "profile", f"--screenshot={shot}")
        shots.append(np.asarray(Image.open(shot).convert("RGB")).astype(int))
    full, empty = shots
    assert full.shape == empty.shape == (WINDOW[1], WINDOW[0], 3)
    changed = np.abs(full - empty).sum(axis=2) > 30
    assert changed.sum() > 3 * 256 * 256  # at least the three restored crops' worth
    dom = browse(chromium, bare / "index.html", tmp_path / "profile", "--dump-dom")
    assert 'data-images-loaded="0/16"' in start_tags(dom, "body")[0]
    assert "16 of 16 images on this page did not load" in dom


@pytest.mark.parametrize("width", [360, 390, 1280])
def test_pages_fit_a_phone_and_a_desktop(chromium, zoo_report, width: int, tmp_path: Path):
    """Nothing sticks out of the window, and the histogram's labels stay readable: at 390 px
    they were drawn 5 px high."""
    _, out = zoo_report
    for name in ("index.html", "page-2.html"):
        measured = probe(chromium, out / name, width, tmp_path)
        assert measured["outside"] == [], name
        assert measured["pageWidth"] == width, name
    index = probe(chromium, out / "index.html", width, tmp_path)
    assert index["smallest"] >= 9


def test_option_names_are_never_cut_by_a_line_break(chromium, tmp_path: Path):
    """Wherever a line ends, "--min-psnr" is never "--min-" on one line and "psnr" on the next,
    and it copies as typed: real hyphens."""
    archive, out = tmp_path / "archive", tmp_path / "report"
    writer = ManifestWriter(Location.parse(str(archive / MANIFEST_DIR)), ARCHIVE_SCHEMA)
    kept = "psnr 10.11 dB below --min-psnr 18, kept as it is; archive again without --min-psnr"
    failed = "not a readable image: run again with --retry-errors, or keep it with --keep-failed"
    writer.add(
        [
            {"rel_path": "dark.png", "status": "kept", "kept_reason": kept, "psnr": 10.11},
            {"rel_path": "some/bad.jpg", "status": "error", "error": failed},
        ]
    )
    writer.flush()
    assert run_cli("report", archive, out) == 0
    measured = probe(chromium, out / "index.html", 1280, tmp_path)
    assert measured["cut"] == []
    dom = browse(chromium, out / "index.html", tmp_path / "profile", "--dump-dom")
    text = html.unescape(re.sub(r"<[^>]*>", "", dom))
    assert kept in text and failed in text


def test_bad_archive_exits_2_with_one_line(tmp_path: Path, capsys):
    assert run_cli("report", tmp_path / "nothing", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("tadm report: error: ARCHIVE") and err.count("\n") == 1
    assert run_cli("report", tmp_path, tmp_path / "out", "--page-size", "x") == 2
    assert "--page-size: must be an integer, got 'x'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("{archive}", "is ARCHIVE"),
        ("{archive}/..", "holds ARCHIVE"),
        ("{archive}/lr", "lies in ARCHIVE's lr/ folder"),
        ("{archive}/manifest", "lies in ARCHIVE's manifest/ folder"),
    ],
)
def test_an_out_dir_that_could_overwrite_the_archive_is_refused(
    out: str, message: str, zoo_report, capsys
):
    """OUT_DIR/lr/<rel_path>.png would be the archive's own LR file when OUT_DIR is ARCHIVE."""
    archive, _ = zoo_report
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in archive.rglob("*") if p.is_file()}
    assert run_cli("report", archive, out.format(archive=archive)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tadm report: error: OUT_DIR ") and message in err[0]
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in archive.rglob("*") if p.is_file()}
    assert after == before
