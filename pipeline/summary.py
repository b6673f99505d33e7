"""What an archive holds, from its manifest: the numbers `tadm inspect` prints."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.format import DONE, KEPT


def plural(n: int, noun: str) -> str:
    """ "1 image", "2 images"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass(frozen=True)
class Summary:
    counts: dict[str, int]  # rows by status
    source_bytes: int  # of archived images (status ok or skipped)
    lr_bytes: int  # of their LR PNGs
    mean_bpp: float | None
    compression_ratio: float | None  # source_bytes / lr_bytes
    mean_psnr: float | None  # over rows with psnr (archived with --verify)
    mean_ssim: float | None
    verified: int  # rows with psnr
    models: dict[str, int]  # "model_id (xscale, precision)" -> archived images
    # Sources kept as they are (status kept, skipped after a kept run, or an error row's copy
    # of an earlier run), and their bytes (an error row's: its source's as it is now)
    kept: int = 0
    kept_bytes: int = 0
    # Archived images whose conversion notes a loss (LOSSES), and images by kind of loss
    with_losses: int = 0
    losses: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        counts = ", ".join(f"{status} {n}" for status, n in sorted(self.counts.items()))
        lines = [
            f"images: {sum(self.counts.values())} ({counts})",
            f"source bytes: {self.source_bytes:,} ({human(self.source_bytes)})",
            f"LR bytes: {self.lr_bytes:,} ({human(self.lr_bytes)})",
            f"compression ratio: {number(self.compression_ratio, '.1f', 'x')}",
            f"mean bpp: {number(self.mean_bpp, '.4f')}",
        ]
        if self.verified:
            lines.append(
                f"mean psnr: {self.mean_psnr:.2f} dB over {plural(self.verified, 'image')}"
            )
            lines.append(f"mean ssim: {number(self.mean_ssim, '.4f')}")
        elif self.models:
            lines.append("mean psnr: n/a (archived without --verify)")
        else:
            lines.append("mean psnr: n/a (no image archived as LR)")
        lines += [
            f"model {model}: {plural(n, 'image')}" for model, n in sorted(self.models.items())
        ]
        if self.with_losses:
            kinds = ", ".join(f"{kind} {n}" for kind, n in self.losses.items())
            lines.append(
                f"conversion: {plural(self.with_losses, 'image')} archived with something not "
                f"carried ({kinds}): --conversions lists them"
            )
        if self.kept:
            stored = self.lr_bytes + self.kept_bytes
            before = self.source_bytes + self.kept_bytes
            saved = before - stored
            lines += [
                f"kept as is: {plural(self.kept, 'file')}, "
                f"{self.kept_bytes:,} bytes "
                f"({human(self.kept_bytes)})",
                f"archive bytes (LR + kept): {stored:,} ({human(stored)})",
                f"space saved: {saved:,} ({human(saved)}, "
                f"{100 * saved / before if before else 0:.1f}% of {human(before)})",
            ]
        return lines


# The manifest columns summarize, errors and inspect --check read: a merged manifest of
# millions of rows fits in memory with these alone (read_manifest's `columns`).
SUMMARY_COLUMNS = [
    "status",
    "error",
    "conversion",
    "kept_uri",
    "source_bytes",
    "source_sha256",
    "lr_bytes",
    "lr_sha256",
    "bpp",
    "psnr",
    "ssim",
    "model_id",
    "scale",
    "precision",
]


# The notes of an archive row's conversion (pipeline/decode.py's, "; "-separated) that say
# something of the source is not in its LR, by kind of loss. The other notes lose nothing of
# the source: an orientation applied (the metadata's reset to 1), a conversion to RGB of pixels
# that are not (gray, palette, CMYK) or to sRGB through the source's ICC profile, an EXIF
# thumbnail kept.
LOSSES = {
    "alpha dropped": r"RGB, alpha dropped(; |\z)",
    "16-bit to 8-bit": r"(^|; )(16-bit |I\S* (16|32)-bit grayscale -> )",
    "metadata not carried": r"(^|; )not carried: ",
    "unreadable EXIF dropped": r"(^|; )EXIF unreadable ",
    "ICC profile dropped": r"(^|; )(\w+ )?ICC profile (unreadable|unusable|of )",
    "XMP not UTF-8": r"(^|; )XMP not UTF-8",
    "MPO's other images": r"(^|; )MPO: first of ",
    "thumbnails dropped": r"(^|; )thumbnails dropped: ",
}


def archived(table: pa.Table) -> pa.Table:
    """The rows of a merged archive manifest whose image the archive holds as an LR: ok or
    skipped, and not kept."""
    kept = pc.fill_null(pc.not_equal(table["kept_uri"], ""), False)
    return table.filter(pc.and_(pc.is_in(table["status"], pa.array(DONE)), pc.invert(kept)))


# What the conversion of a file kept as it is says its copy leaves out (pipeline/archive/write.py:
# an S3 object's user metadata and tags, in a local copy). Older manifests' kept rows hold
# decoding's notes instead, of pixels never archived, which say nothing of the copy.
COPY_LOSSES = r"\(a local file holds none\)|: reading them was refused"


def held(table: pa.Table) -> pa.Table:
    """The rows of a merged archive manifest whose conversion says what the archive holds of
    their source: those archived as an LR, and those kept as they are whose copy leaves
    something out (COPY_LOSSES)."""
    kept = pc.fill_null(pc.not_equal(table["kept_uri"], ""), False)
    done = pc.is_in(table["status"], pa.array((*DONE, KEPT)))
    copy_loss = pc.match_substring_regex(table["conversion"], COPY_LOSSES)
    kept_loss = pc.and_(pc.and_(kept, done), pc.fill_null(copy_loss, False))
    return table.filter(pc.or_(pc.and_(done, pc.invert(kept)), kept_loss))


def losses(conversion: pa.ChunkedArray) -> dict[str, pa.ChunkedArray]:
    """For each kind of loss (LOSSES), whether each conversion notes one (false for null)."""
    return {
        kind: pc.fill_null(pc.match_substring_regex(conversion, pattern), False)
        for kind, pattern in LOSSES.items()
    }


def any_loss(conversion: pa.ChunkedArray) -> pa.ChunkedArray:
    """Whether each conversion notes a loss of any kind (false for null)."""
    pattern = "|".join(f"(?:{p})" for p in LOSSES.values())
    return pc.fill_null(pc.match_substring_regex(conversion, pattern), False)


@dataclass
class Totals:
    """Running sums of the rows of a merged archive manifest, added a bucket of rel_paths at a
    time (`add`; see manifest.merged), whose `summary` is that of all of them: a manifest of
    millions of rows is summed in the memory of a bucket."""

    counts: Counter[str] = field(default_factory=Counter)
    source_bytes: int = 0
    lr_bytes: int = 0
    bpp: tuple[float, int] = (0.0, 0)  # sum and count of finite values
    psnr: tuple[float, int] = (0.0, 0)
    ssim: tuple[float, int] = (0.0, 0)
    models: Counter[str] = field(default_factory=Counter)
    kept: int = 0
    kept_bytes: int = 0
    with_losses: int = 0
    losses: Counter[str] = field(default_factory=Counter)

    def add(self, table: pa.Table) -> Totals:
        kept = pc.fill_null(pc.not_equal(table["kept_uri"], ""), False)  # an error row's too
        done = archived(table)
        for status in pc.value_counts(table["status"]).to_pylist():
            self.counts[str(status["values"])] += status["counts"]
        self.source_bytes += total(done["source_bytes"])
        self.lr_bytes += total(done["lr_bytes"])
        self.bpp = added(self.bpp, done["bpp"])
        self.psnr = added(self.psnr, done["psnr"])
        self.ssim = added(self.ssim, done["ssim"])
        groups = done.group_by(["model_id", "scale", "precision"]).aggregate([([], "count_all")])
        for group in groups.to_pylist():  # a null and an empty precision read the same
            self.models[model_name(group)] += group["count_all"]
        self.kept += pc.sum(kept).as_py() or 0
        self.kept_bytes += total(table.filter(kept)["source_bytes"])
        conversion = held(table)["conversion"]
        self.with_losses += pc.sum(any_loss(conversion)).as_py() or 0
        for kind, hit in losses(conversion).items():
            self.losses[kind] += pc.sum(hit).as_py() or 0
        return self

    def summary(self) -> Summary:
        return Summary(
            counts=dict(sorted(self.counts.items())),
            source_bytes=self.source_bytes,
            lr_bytes=self.lr_bytes,
            mean_bpp=average(self.bpp),
            compression_ratio=self.source_bytes / self.lr_bytes if self.lr_bytes else None,
            mean_psnr=average(self.psnr),
            mean_ssim=average(self.ssim),
            verified=self.psnr[1],
            models=dict(sorted(self.models.items())),
            kept=self.kept,
            kept_bytes=self.kept_bytes,
            with_losses=self.with_losses,
            losses={kind: n for kind in LOSSES if (n := self.losses[kind])},
        )


def summarize(table: pa.Table) -> Summary:
    """Summary of a merged archive manifest (see manifest.read_manifest), column by column."""
    return Totals().add(table).summary()


def added(running: tuple[float, int], values: pa.ChunkedArray) -> tuple[float, int]:
    """A running sum and count with `values`' numbers added (a manifest's NaN or null is no
    figure to average)."""
    numbers = finite(values)
    return running[0] + (pc.sum(numbers).as_py() or 0.0), running[1] + len(numbers)


def average(running: tuple[float, int]) -> float | None:
    return running[0] / running[1] if running[1] else None


def model_name(row: dict) -> str:
    """ "model_id (x16, fp16)"; without the precision for rows written before its column."""
    precision = f", {row['precision']}" if row.get("precision") else ""
    return f"{row['model_id']} (x{row['scale']}{precision})"


def errors(table: pa.Table) -> list[dict[str, str]]:
    """The rel_path and error of every error row of a merged archive manifest."""
    rows = table.filter(pc.equal(table["status"], "error")).select(["rel_path", "error"])
    return [{"rel_path": r["rel_path"] or "", "error": r["error"] or ""} for r in rows.to_pylist()]


def kept(table: pa.Table) -> list[dict[str, str]]:
    """The rel_path and kept_reason of every source of a merged archive manifest kept as it
    is (below a quality floor, holding what an LR cannot, or failed, with --keep-failed), as
    summarize counts them: skipped by a later run too, and for an error row that records the
    copy of an earlier run, its error."""
    copied = pc.fill_null(pc.not_equal(table["kept_uri"], ""), False)
    rows = table.filter(copied).select(["rel_path", "kept_reason", "error"])
    return [
        {"rel_path": r["rel_path"] or "", "kept_reason": r["kept_reason"] or r["error"] or ""}
        for r in rows.to_pylist()
    ]


def conversions(table: pa.Table) -> list[dict[str, str]]:
    """The rel_path and conversion of every file of a merged archive manifest archived, or
    kept, with a loss its conversion notes (LOSSES)."""
    done = held(table)
    lossy = done.filter(any_loss(done["conversion"])).select(["rel_path", "conversion"])
    return [
        {"rel_path": r["rel_path"] or "", "conversion": r["conversion"]} for r in lossy.to_pylist()
    ]


def finite(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """The values that are numbers (a manifest's NaN or null is no figure to average)."""
    return values.filter(pc.fill_null(pc.is_finite(values), False))


def total(values: pa.ChunkedArray) -> int:
    """The sum of integers, nulls left out; 0 for none."""
    return pc.sum(values).as_py() or 0


def number(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + unit


def human(n: int) -> str:
    """1536 -> "1.5 KiB"."""
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
