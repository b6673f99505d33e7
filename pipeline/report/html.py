"""The report's pages: HTML with an inline SVG histogram (the stylesheet and script are in
assets.py).

Every string that comes from the archive (paths, URIs, model ids, error messages) goes through
`esc`; URLs are built by build.url and escaped here too.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipeline.format import DONE, KEPT, visible
from pipeline.report.assets import SCRIPT_NAME, STYLE_NAME
from pipeline.summary import Summary, any_loss, human, number, plural

if TYPE_CHECKING:
    from pipeline.report.build import Entry

THUMB = 160  # longest side of a thumbnail on the page, CSS pixels
CROP_VIEW = 256  # longest side of a crop on the page, CSS pixels
MAX_BINS = 30  # histogram bars
# An option name in text ("--min-psnr"): a browser may break a line after any hyphen in it
OPTION = re.compile(r"(?<![\w-])--[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")


@dataclass(frozen=True)
class Context:
    """What every page shows besides its own entries."""

    archive: str  # archive URI
    summary: Summary
    psnrs: np.ndarray  # of the verified images archived as an LR (inf where restore was exact)
    kept_psnrs: np.ndarray  # of those verified, then kept as they are (below a quality floor)
    other_files: int  # rows of files that are not images (kept as they are with --keep-failed)
    pages: int
    page_size: int
    first: dict[str, int]  # rank of the first row of each status
    linked: bool  # thumbnails link to the archive's files instead of copies
    worst: int  # the first `worst` entries got a restored crop where possible


def esc(value: object) -> str:
    return html.escape(visible(str(value)), quote=True)


def prose(value: object) -> str:
    """`value` escaped (esc) as text, each option name in it a <code class="option"> that the
    stylesheet keeps on one line, its hyphens real ones that copy as typed."""
    return OPTION.sub(lambda m: f'<code class="option">{m[0]}</code>', esc(value))


def page_name(page: int) -> str:
    """1 -> "index.html", 2 -> "page-2.html"."""
    return "index.html" if page == 1 else f"page-{page}.html"


def page_of(rank: int, page_size: int) -> int:
    return (rank - 1) // page_size + 1


def page(context: Context, number_: int, entries: list[Entry]) -> str:
    """The whole HTML of page `number_` (1-based) showing `entries`."""
    nav = navigation(number_, context.pages)
    total = sum(context.summary.counts.values())
    if entries:
        # Without --verify no image has a PSNR to rank it by: they come by name
        order = "worst first" if context.summary.verified else "by name (archived without --verify)"
        rows = "Files" if context.other_files else "Images"
        heading = prose(f"{rows} {entries[0].rank}–{entries[-1].rank} of {total}, {order}")
    else:
        heading = "No images in this archive"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>tadm report: {esc(context.archive)} (page {number_} of {context.pages})</title>",
        f'<link rel="stylesheet" href="{STYLE_NAME}"><script src="{SCRIPT_NAME}" defer></script>',
        "</head><body>",
        '<header class="top"><h1>tadm report</h1>',
        f'<p class="archive">{esc(context.archive)}</p></header>',
        '<main><p id="missing" class="warning" hidden></p>',
    ]
    if number_ == 1:
        mean = context.summary.mean_psnr
        parts += [totals(context), histogram(context.psnrs, context.kept_psnrs, mean)]
    if context.linked:
        parts.append(
            '<p class="warning">Thumbnails only linked: they are the archive\'s own LR files, '
            "so this report shows them only while the archive stays where it is.</p>"
        )
    parts += [
        f'<section class="gallery"><div class="bar"><h2>{heading}</h2>{nav}</div>',
        '<div class="grid">',
        *(card(entry, context) for entry in entries),
        f"</div>{nav}</section></main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def navigation(current: int, pages: int) -> str:
    if pages == 1:
        return ""

    def link(page_: int, label: str) -> str:
        if page_ == current or not 1 <= page_ <= pages:
            return f'<span class="off">{label}</span>'
        return f'<a href="{page_name(page_)}">{label}</a>'

    near = range(max(1, current - 2), min(pages, current + 2) + 1)
    items = [link(1, "« first"), link(current - 1, "‹ previous")]
    items += [f'<span class="here">{p}</span>' if p == current else link(p, str(p)) for p in near]
    items += [link(current + 1, "next ›"), link(pages, "last »")]
    return f'<nav class="pages">{" ".join(items)}<span class="of">of {pages}</span></nav>'


def totals(context: Context) -> str:
    s = context.summary
    counts = []
    for status in ("ok", KEPT, "skipped", "error"):
        n = s.counts.get(status, 0)
        if not n:
            continue
        text = f"{status} {n:,}"
        if status in (KEPT, "error"):  # a link to the first of them
            rank = context.first[status]
            href = f"{page_name(page_of(rank, context.page_size))}#rank-{rank}"
            text = f'<a class="{status}" href="{href}">{text}</a>'
        counts.append(text)
    if s.verified:
        psnr = f"{s.mean_psnr:.2f} dB", f"over {plural(s.verified, 'verified image')} archived"
        if len(context.kept_psnrs):  # the histogram draws them too
            psnr = psnr[0], f"{psnr[1]} ({len(context.kept_psnrs):,} kept as is left out)"
        ssim = number(s.mean_ssim, ".4f"), "restored vs source"
    else:
        psnr = "n/a", prose("archived without --verify")
        ssim = "n/a", prose("archived without --verify")
    models = ", ".join(f"{esc(m)}: {n:,}" for m, n in sorted(s.models.items())) or "none"
    stored = [
        ("Stored", human(s.lr_bytes), f"LR thumbnails, from {human(s.source_bytes)} of sources"),
        ("Compression", f"{number(s.compression_ratio, '.1f')}×", "source bytes / LR bytes"),
    ]
    if s.kept:  # kept files take the room of their sources: the archive's figures with them
        archive, before = s.lr_bytes + s.kept_bytes, s.source_bytes + s.kept_bytes
        stored = [
            (
                "Stored",
                human(archive),
                f"{human(s.lr_bytes)} of LR thumbnails + {human(s.kept_bytes)} kept as is, "
                f"from {human(before)} of sources",
            ),
            (
                "Compression",
                f"{number(before / archive if archive else None, '.1f')}×",
                f"source bytes / archive bytes; {number(s.compression_ratio, '.1f')}× for the "
                "images shrunk",
            ),
        ]
    total = sum(s.counts.values())
    label, kinds = "Images", []
    if context.other_files:  # files --keep-failed kept as they are: not images
        label = "Files"
        images = plural(total - context.other_files, "image")
        kinds = [f"{images} and {plural(context.other_files, 'other file')}"]
    tiles = [
        (label, f"{total:,}", " · ".join([*kinds, *counts])),
        *stored,
        ("Mean bpp", number(s.mean_bpp, ".4f"), "LR bits per source pixel"),
        ("Mean PSNR", *psnr),
        ("Mean SSIM", *ssim),
    ]
    cells = "".join(
        f'<div class="tile"><div class="label">{label}</div><div class="value">{value}</div>'
        f'<div class="sub">{sub}</div></div>'
        for label, value, sub in tiles
    )
    losses = ""
    if s.with_losses:
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in s.losses.items())
        losses = (
            f'<p class="losses">{plural(s.with_losses, "image")} archived with something not '
            f"carried ({kinds}): their cards say what</p>"
        )
    return (
        f'<section class="totals">{cells}</section><p class="models">Models: {models}</p>{losses}'
    )


def histogram(psnrs: Sequence[float], kept_psnrs: Sequence[float], mean: float | None) -> str:
    """The verified images per PSNR bin (1 dB wide, wider when the range is over MAX_BINS dB)
    in an inline SVG, those archived (`psnrs`, whose `mean` is marked) under those kept as they
    are (`kept_psnrs`), and a caption that says what it counts."""
    psnrs = np.asarray(psnrs, dtype=np.float64)
    archived = psnrs[np.isfinite(psnrs)]
    kept = np.asarray(kept_psnrs, dtype=np.float64)
    kept = kept[np.isfinite(kept)]
    values = np.concatenate([archived, kept])
    if not len(values):
        return ""
    lo, hi = math.floor(values.min()), math.ceil(values.max())
    step = max(1, math.ceil((hi - lo) / MAX_BINS))
    bins = max(1, math.ceil((hi - lo) / step))

    def counted(of: np.ndarray) -> list[int]:
        index = np.minimum(((of - lo) // step).astype(np.int64), bins - 1)
        return np.bincount(index, minlength=bins).tolist()

    archived_counts, kept_counts = counted(archived), counted(kept)
    counts = [a + k for a, k in zip(archived_counts, kept_counts, strict=True)]
    peak = max(counts)
    # Room for labels as large as a phone draws them (report.css: up to 24 units a character)
    width, height, left, right, top, bottom = 720, 240, 14 + 13 * len(str(peak)), 16, 30, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    bar_w = plot_w / bins

    def x_of(db: float) -> float:
        return left + (db - lo) / (bins * step) * plot_w

    shapes = []
    for i, (n, n_kept) in enumerate(zip(counts, kept_counts, strict=True)):
        a = lo + i * step
        title = f"{a}–{a + step} dB: {plural(n, 'image')}"
        if n_kept:
            title += f" ({n - n_kept:,} archived, {n_kept:,} kept as is)"
        # A bar a bin, the part of its kept images on top in their colour
        x, w, y = left + i * bar_w + 1, max(bar_w - 2, 1), top + plot_h * (1 - n / peak)
        bars = [("col", n)] + [("col kept", n_kept)] * bool(n_kept)
        shapes.append(f"<g><title>{title}</title>")
        shapes += [
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{plot_h * m / peak:.1f}" '
            f'class="{kind}"/>'
            for kind, m in bars
        ]
        shapes.append("</g>")
    every = math.ceil((bins + 1) / 12)
    for i in range(0, bins + 1, every):
        x = left + i * bar_w
        shapes.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 5}" class="tick" text-anchor="middle" '
            f'dominant-baseline="hanging">{lo + i * step}</text>'
        )
    for n in sorted({0, peak}):
        y = top + plot_h - plot_h * n / peak
        shapes.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="rule"/>'
        )
        shapes.append(
            f'<text x="{left - 6}" y="{y:.1f}" class="tick" text-anchor="end" '
            f'dominant-baseline="middle">{n}</text>'
        )
    if mean is not None and lo <= mean <= lo + bins * step:
        x = x_of(mean)
        shapes.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" class="mean"/>'
        )
        # centred on its line, or beside it near an end of the plot, where it would be cut
        side = (
            "start" if x < left + plot_w / 4 else "end" if x > left + plot_w * 3 / 4 else "middle"
        )
        shapes.append(
            f'<text x="{x:.1f}" y="{top - 8}" class="mean-label" text-anchor="{side}">'
            f"mean {mean:.2f} dB</text>"
        )
    shapes.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" class="axis" text-anchor="middle">'
        "PSNR (dB), restored vs source</text>"
    )
    exact = len(psnrs) - len(archived)
    caption = [f'<span class="key"></span>{plural(len(archived), "image")} archived as an LR']
    if len(kept):
        why = (
            f"{len(kept):,} kept as they are, below a quality floor (--min-psnr, --min-ssim) or "
            "holding what an LR cannot (transparency, a Motion Photo's video: their cards say)"
        )
        caption.append(
            f'<span class="key kept"></span>{prose(why)}; the mean is the archived images\''
        )
    if exact:
        caption.append(f"not drawn: {plural(exact, 'image')} restored exactly (∞ dB)")
    return (
        '<section class="histogram"><h2>PSNR of the verified images</h2>'
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="histogram of PSNR over {plural(len(values), "image")}">'
        f"{''.join(shapes)}</svg>"
        f'<p class="caption">{"; ".join(caption)}</p></section>'
    )


def fixed(value: float | None, spec: str, unit: str = "") -> str:
    return "–" if value is None or math.isnan(value) else f"{format(value, spec)}{unit}"


def fit(width: int, height: int, side: int) -> tuple[int, int]:
    """width x height scaled so that the longer side is `side`."""
    f = side / max(width, height)
    return max(1, round(width * f)), max(1, round(height * f))


def card(entry: Entry, context: Context) -> str:
    row = entry.row
    status = row["status"] if row["status"] in (*DONE, KEPT, "error") else "error"
    wide = entry.crop is not None
    pictures = [thumbnail(entry)] if entry.thumbnail else []
    if entry.crop is not None:
        crop = entry.crop
        x, y, w, h = crop.region
        view = fit(w, h, CROP_VIEW)
        caption = f"{w}×{h} px at ({x}, {y})"
        alt = f"restored window of {entry.rel_path}"
        pictures.append(picture(crop.restored, view, f"restored · {caption}", "restored", alt))
        if crop.source is not None:
            alt = f"source window of {entry.rel_path}"
            pictures.append(picture(crop.source, view, "source · same window", "source", alt))
    metrics = [
        ("PSNR", fixed(row["psnr"], ".2f", " dB")),
        ("SSIM", fixed(row["ssim"], ".4f")),
        ("bpp", fixed(row["bpp"], ".4f")),
        ("time step", fixed(row["timestep_mean"], ".1f")),
        ("size", f"{row['width']}×{row['height']}" if row["width"] else "–"),
        ("bytes", byte_sizes(row)),
        ("seconds", fixed(row["seconds"], ".2f")),
    ]
    if entry.kept or row["status"] not in DONE:  # no LR: only the measures it has
        metrics = [(label, value) for label, value in metrics if value != "–"]
    dl = "".join(f"<dt>{label}</dt><dd>{esc(value)}</dd>" for label, value in metrics)
    extra = ""
    if entry.kept:
        reason = f": {row['kept_reason']}" if row["kept_reason"] else ""
        extra += f'<p class="kept-reason">source kept as it was{prose(reason)}</p>'
    elif row["status"] not in DONE:
        extra += f'<p class="message">{prose(row["error"] or "error (no message)")}</p>'
    if row["conversion"]:  # what the LR lost stands out from what decoding only did
        lossy = any_loss(pa.array([row["conversion"]], pa.string()))[0].as_py()
        said = "decoded, with a loss" if lossy else "decoded"
        extra += f'<p class="note{" loss" * lossy}">{said}: {prose(row["conversion"])}</p>'
    extra += "".join(f'<p class="note">{prose(note)}</p>' for note in entry.notes)
    rel_path = entry.rel_path or "(no rel_path)"
    pictures_div = f'<div class="pictures">{"".join(pictures)}</div>' if pictures else ""
    return (
        f'<article class="card{" wide" if wide else ""}" id="rank-{entry.rank}" '
        f'data-status="{esc(status)}"><h3><span class="rank">#{entry.rank}</span> '
        f'<span class="path" title="{esc(rel_path)}">{esc(rel_path)}</span>'
        f'<span class="status {esc(status)}">{esc(status)}</span></h3>'
        f'<div class="body">{pictures_div}'
        f'<dl class="metrics">{dl}</dl></div>{extra}</article>'
    )


def byte_sizes(row: dict) -> str:
    if row["source_bytes"] is None:
        return "–"
    if row["lr_bytes"] is None:
        return human(row["source_bytes"])
    return f"{human(row['source_bytes'])} → {human(row['lr_bytes'])}"


def picture(src: str, view: tuple[int, int], caption: str, kind: str, alt: str) -> str:
    return (
        f'<figure class="{kind}"><img src="{esc(src)}" width="{view[0]}" height="{view[1]}" '
        f'alt="{esc(alt)}"><figcaption>{esc(caption)}</figcaption></figure>'
    )


def thumbnail(entry: Entry) -> str:
    """The LR thumbnail, scaled up pixel for pixel; the restored window outlined on it."""
    row = entry.row
    lw, lh = row["lr_width"], row["lr_height"]
    size = fit(lw, lh, THUMB) if lw and lh else (THUMB, THUMB)
    outline = ""
    if entry.crop is not None and row["width"] and row["height"]:
        x, y, w, h = entry.crop.region
        box = [100 * x / row["width"], 100 * y / row["height"]]
        box += [100 * w / row["width"], 100 * h / row["height"]]
        outline = (
            '<span class="window" style="left:{:.2f}%;top:{:.2f}%;width:{:.2f}%;'
            'height:{:.2f}%"></span>'.format(*box)
        )
    lr = f"LR {lw}×{lh}" if lw and lh else "LR"
    scale = f" · x{row['scale']}" if row["scale"] else ""
    width, height = size
    return (
        f'<figure class="thumb"><div class="frame" style="width:{width}px;height:{height}px">'
        f'<img src="{esc(entry.thumbnail)}" width="{width}" height="{height}" '
        f'alt="LR thumbnail of {esc(entry.rel_path)}">'
        f"{outline}</div><figcaption>{esc(lr + scale)}</figcaption></figure>"
    )
