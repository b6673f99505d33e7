"""Shared fixtures: a real local Ray, a real local S3 endpoint (moto's server), tiny TADM
checkpoints, and folders of test images, including every kind of bad input."""

from __future__ import annotations

import collections
import hashlib
import http.client
import http.server
import io
import os
import shutil
import struct
import subprocess
import threading
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
import tifffile
import torch
from PIL import Image

from tadm import TADM

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


# ---- services --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server on 127.0.0.1 (a real HTTP endpoint, no mocks in-process)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def make_bucket(endpoint: str, name: str) -> None:
    import boto3

    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys).create_bucket(
        Bucket=name
    )


ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)


class CuttingProxy(http.server.ThreadingHTTPServer):
    """An HTTP proxy on 127.0.0.1 in front of the moto server at `upstream` that counts the
    requests it relays by method, and sends the first `cuts` GETs' bodies half, then closes
    the connection, as a connection lost mid-transfer does; with `refuse_tags`, it answers a
    request for an object's tags as S3 does one that its policy does not allow."""

    def __init__(self, upstream: str, cuts: int, refuse_tags: bool = False) -> None:
        self.upstream = urllib.parse.urlsplit(upstream).netloc
        self.cuts = cuts
        self.refuse_tags = refuse_tags
        self.requests: collections.Counter[str] = collections.Counter()
        super().__init__(("127.0.0.1", 0), CuttingHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class CuttingHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CuttingProxy

    def log_message(self, *args) -> None:
        pass

    def relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.server.refuse_tags and "tagging" in urllib.parse.urlsplit(self.path).query:
            self.server.requests[self.command] += 1
            body = ACCESS_DENIED
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=10)
        upstream.request(self.command, self.path, self.rfile.read(length), dict(self.headers))
        response = upstream.getresponse()
        body = response.read()
        self.server.requests[self.command] += 1
        cut = self.command == "GET" and self.server.cuts > 0 and len(body) > 1
        self.server.cuts -= cut
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("connection", "transfer-encoding"):
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if cut else body)
        self.close_connection = cut

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = relay


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The AWS_* variables pointing at the moto server, for this test only."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    return s3_endpoint


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """One local Ray for the whole session (2 CPUs); yields its address for subprocesses."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


# ---- models ----------------------------------------------------------------------------------


def save_tiny(path: Path, seed: int, scale: int = 16) -> str:
    torch.manual_seed(seed)
    TADM.from_preset("tiny", scale=scale).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Folder of a random-init tiny x16 TADM (seed 0)."""
    return save_tiny(tmp_path_factory.mktemp("tiny-x16"), seed=0)


@pytest.fixture(scope="session")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Another tiny x16 TADM with other weights, hence another model_id."""
    return save_tiny(tmp_path_factory.mktemp("tiny-x16-other"), seed=1)


# ---- images ----------------------------------------------------------------------------------


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth colour gradient with a little noise: (height, width, 3) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 220
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **options)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG (Pillow cannot write 16-bit RGB): (H, W) or (H, W, 3) uint16."""
    height, width = pixels.shape[:2]
    colour_type = 2 if pixels.ndim == 3 else 0
    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def bomb_png(width: int, height: int) -> bytes:
    """A tiny file whose header claims width x height pixels."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def exif_rotated_jpeg(width: int, height: int) -> bytes:
    """A JPEG stored width x height with EXIF orientation 6 (shown rotated: height x width)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(photo(width, height, 7)), "JPEG", exif=exif, quality=92)


def good_images() -> dict[str, bytes]:
    """rel_path -> file bytes of every kind of readable input, 64-100 px."""
    rgb = Image.fromarray(photo(96, 80, 1))
    gray16 = (photo(72, 64, 3)[..., 0].astype(np.uint16) * 257) + 100
    rgb16 = photo(64, 72, 4).astype(np.uint16) * 257
    palette = Image.fromarray(photo(64, 64, 5)).convert("P", palette=Image.Palette.ADAPTIVE)
    return {
        "nested/deeper/rgb.jpg": encode(rgb, "JPEG", quality=90),
        "gray.png": encode(Image.fromarray(photo(80, 64, 2)).convert("L"), "PNG"),
        "rgba.png": encode(transparent_corner(photo(64, 80, 6)), "PNG"),
        "gray16.png": png16(np.minimum(gray16, 65535).astype(np.uint16)),
        "rgb16.png": png16(rgb16),
        "palette.png": encode(palette, "PNG", transparency=0),
        "cmyk.jpg": encode(Image.fromarray(photo(64, 64, 8)).convert("CMYK"), "JPEG"),
        "rotated.jpg": exif_rotated_jpeg(80, 64),
        "odd.webp": encode(Image.fromarray(photo(67, 53, 9)), "WEBP", lossless=True),
        "Upper.TIF": encode(Image.fromarray(photo(65, 70, 10)), "TIFF"),
        "nested/plain.bmp": encode(Image.fromarray(photo(64, 64, 11)), "BMP"),
    }


def transparent_corner(pixels: np.ndarray) -> Image.Image:
    """RGBA of `pixels`, its top left 8x8 pixels fully transparent."""
    alpha = np.full(pixels.shape[:2], 255, np.uint8)
    alpha[:8, :8] = 0
    return Image.fromarray(np.dstack([pixels, alpha]))


def bad_images() -> dict[str, bytes]:
    """rel_path -> bytes of inputs that must each become one error row."""
    whole = encode(Image.fromarray(photo(96, 96, 12)), "PNG")
    return {
        "bad/corrupt.jpg": bytes(np.random.default_rng(0).integers(0, 256, 2000, np.uint8)),
        "bad/truncated.png": whole[: len(whole) // 2],
        "bad/empty.jpg": b"",
        "bad/not-an-image.png": b"hello, I am a text file\n",
        "bad/too-small.png": encode(Image.fromarray(photo(12, 40, 13)), "PNG"),
        "bad/bomb.png": bomb_png(20000, 20000),
    }


def record_lrs(archive: Path, rel_paths: list[str], model_id: str) -> None:
    """Rows of ARCHIVE/lr/<rel_path>.png as they are now, in a manifest part of their own, as
    an archive job that wrote them would add."""
    from pipeline.format import ARCHIVE_SCHEMA
    from pipeline.manifest import to_table, write_part
    from pipeline.storage import Location

    rows = []
    for rel_path in rel_paths:
        data = (archive / "lr" / f"{rel_path}.png").read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        rows.append({"rel_path": rel_path, "status": "ok", "lr_sha256": sha256})
        rows[-1] |= {"lr_bytes": len(data), "scale": 16, "model_id": model_id}
    write_part(Location.parse(str(archive / "manifest")), to_table(rows, ARCHIVE_SCHEMA))


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel_path, data in files.items():
        path = root / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every kind of good and bad input, plus files archive must ignore."""
    root = write_tree(tmp_path_factory.mktemp("zoo"), good_images() | bad_images())
    (root / "notes.txt").write_text("not an image extension")
    (root / ".hidden.jpg").write_bytes(encode(Image.fromarray(photo(64, 64)), "JPEG"))
    return root


@pytest.fixture(scope="session")
def small_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three good photos of different sizes, one nested."""
    root = tmp_path_factory.mktemp("photos")
    return write_tree(
        root,
        {
            "a.png": encode(Image.fromarray(photo(96, 64, 20)), "PNG"),
            "b.jpg": encode(Image.fromarray(photo(67, 83, 21)), "JPEG", quality=95),
            "sub/c.png": encode(Image.fromarray(photo(96, 64, 22)), "PNG"),
        },
    )


def can_hide_a_folder() -> bool:
    """Whether this process may start a process in a mount namespace of its own (`unshare -m`: root,
    as a test container often is), where a tmpfs hides a folder from that process alone."""
    probe = ["unshare", "-m", "--propagation", "private", "true"]
    try:
        return subprocess.run(probe, capture_output=True).returncode == 0
    except OSError:  # no unshare
        return False


def run_cli(*argv: str) -> int:
    """`tadm ARGV...` in this process (Ray already running: the session's cluster)."""
    from jobs.cli import main

    return main([str(a) for a in argv])


def cli_env(ray_address: str) -> dict[str, str]:
    """Environment for a `tadm` subprocess that joins the session's Ray cluster."""
    return os.environ | {"RAY_ADDRESS": ray_address}


# ---- real-world files: metadata, colour profiles, phone and modern formats --------------------


def s15f16(*values: float) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in values)


def icc_profile(description: str, primaries: tuple[tuple[float, float, float], ...]) -> bytes:
    """An ICC v2 RGB display profile: `primaries` are the red, green and blue colourants (XYZ,
    D50), the tone curve is sRGB's (a parametric curve). LittleCMS and exiftool read it."""
    # sRGB's curve: Y = ((aX + b)^g for X >= d, else cX), type 3 parametric
    curve = b"para\0\0\0\0\0\x03\0\0" + s15f16(2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)
    tags = {
        b"rXYZ": b"XYZ \0\0\0\0" + s15f16(*primaries[0]),
        b"gXYZ": b"XYZ \0\0\0\0" + s15f16(*primaries[1]),
        b"bXYZ": b"XYZ \0\0\0\0" + s15f16(*primaries[2]),
        b"rTRC": curve,
        b"gTRC": curve,
        b"bTRC": curve,
    }
    return display_profile(description, b"RGB ", tags)


def gray_icc(description: str, gamma: float) -> bytes:
    """An ICC v2 gray display profile whose tone curve is a plain `gamma`."""
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))  # u8Fixed8
    return display_profile(description, b"GRAY", {b"kTRC": curve})


def display_profile(description: str, space: bytes, tags: dict[bytes, bytes]) -> bytes:
    """An ICC v2 display profile of colour `space` with these tags, and a description, a
    copyright and D50 as its white point."""
    text = description.encode("ascii") + b"\0"
    tags = {
        b"desc": b"desc\0\0\0\0"
        + struct.pack(">I", len(text))
        + text
        + b"\0" * 8  # no Unicode description
        + b"\0" * 3
        + b"\0" * 67,  # no ScriptCode description
        b"cprt": b"text\0\0\0\0No copyright, use freely\0",
        b"wtpt": b"XYZ \0\0\0\0" + s15f16(0.9642, 1.0, 0.8249),
    } | tags
    table_end = 128 + 4 + 12 * len(tags)
    body, entries = b"", b""
    for signature, data in tags.items():
        data += b"\0" * (-len(data) % 4)
        entries += signature + struct.pack(">II", table_end + len(body), len(data))
        body += data
    size = table_end + len(body)
    header = (
        struct.pack(">I", size)
        + b"\0" * 4
        + bytes([2, 0x10, 0, 0])  # version 2.1
        + b"mntr"
        + space
        + b"XYZ "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\0" * 24  # platform, flags, manufacturer, model, attributes
        + struct.pack(">I", 0)  # perceptual intent
        + s15f16(0.9642, 1.0, 0.8249)  # D50
        + b"\0" * 48  # creator, ID, reserved
    )
    return header + struct.pack(">I", len(tags)) + entries + body


def display_p3_icc() -> bytes:
    """A Display P3 profile (P3 primaries, D65 white adapted to D50, sRGB's tone curve)."""
    primaries = ((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841))
    return icc_profile("Display P3", primaries)


XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:xmpRights="http://ns.adobe.com/xap/1.0/rights/" '
    'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="{orientation}">'
    "<dc:creator><rdf:Seq><rdf:li>Ada Photographer</rdf:li></rdf:Seq></dc:creator>"
    '<xmpRights:UsageTerms><rdf:Alt><rdf:li xml:lang="x-default">CC BY 4.0</rdf:li>'
    "</rdf:Alt></xmpRights:UsageTerms>"
    '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
)


def xmp_packet(orientation: int = 1) -> bytes:
    """An XMP packet: creator "Ada Photographer", usage terms "CC BY 4.0", tiff:Orientation."""
    return XMP.replace("{orientation}", str(orientation)).encode()


def camera_exif(orientation: int) -> Image.Exif:
    """EXIF as a camera writes it: make, model, capture date, GPS position, orientation."""
    exif = Image.Exif()
    exif[0x010F] = "TADM Camera Co."  # Make
    exif[0x0110] = "Model 1"  # Model
    exif[0x0112] = orientation
    exif[0x8298] = "(c) Ada Photographer"  # Copyright
    exif.get_ifd(0x8769)[0x9003] = "2024:05:17 10:30:00"  # DateTimeOriginal
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    return exif


THUMBNAIL = encode(Image.fromarray(photo(40, 30, 1)), "JPEG")
MAKER_NOTE = b"Nikon\x00" + bytes(range(200))  # opaque bytes that must stay where they are


def exif_entry(order: str, tag: int, kind: int, count: int, value: bytes | int) -> bytes:
    """One 12-byte IFD entry: an inline value (bytes padded, or a LONG) or an offset."""
    if isinstance(value, int):
        return struct.pack(order + "HHII", tag, kind, count, value)
    return struct.pack(order + "HHI", tag, kind, count) + value.ljust(4, b"\x00")


def exif_ifd(order: str, entries: list[bytes], next_ifd: int) -> bytes:
    """An IFD: its entry count, entries and the offset of the next IFD (0: none)."""
    return (
        struct.pack(order + "H", len(entries))
        + b"".join(entries)
        + struct.pack(order + "I", next_ifd)
    )


def thumbnail_exif(
    order: str = "<", maker_note_last: bool = False, thumbnail: bool = True
) -> bytes:
    """A camera's EXIF: IFD0 (Make, orientation, a link to the Exif IFD), the Exif IFD (a
    maker note stored apart), then IFD1 and its JPEG thumbnail; with `maker_note_last`, the
    maker note after the thumbnail."""
    header = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    ifd0_at, ifd0_size = 8, 2 + 3 * 12 + 4
    exif_at, exif_size = ifd0_at + ifd0_size, 2 + 2 * 12 + 4
    values_at = exif_at + exif_size
    ifd1_at = values_at + (0 if maker_note_last else len(MAKER_NOTE))
    ifd1_size = 2 + 2 * 12 + 4
    thumbnail_at = ifd1_at + ifd1_size
    note_at = thumbnail_at + len(THUMBNAIL) if maker_note_last else values_at
    ifd0 = exif_ifd(
        order,
        [
            exif_entry(order, 0x010F, 2, 4, b"Cam\x00"),  # Make
            exif_entry(order, 0x0112, 3, 1, struct.pack(order + "H", 6)),  # Orientation
            exif_entry(order, 0x8769, 4, 1, exif_at),  # ExifIFD
        ],
        ifd1_at if thumbnail else 0,
    )
    exif_table = exif_ifd(
        order,
        [
            exif_entry(order, 0x9000, 7, 4, b"0232"),  # ExifVersion
            exif_entry(order, 0x927C, 7, len(MAKER_NOTE), note_at),  # MakerNote
        ],
        0,
    )
    ifd1 = exif_ifd(
        order,
        [
            exif_entry(order, 0x0201, 4, 1, thumbnail_at),  # JPEGInterchangeFormat
            exif_entry(order, 0x0202, 4, 1, len(THUMBNAIL)),  # JPEGInterchangeFormatLength
        ],
        0,
    )
    if not thumbnail:
        return header + ifd0 + exif_table + MAKER_NOTE
    if maker_note_last:
        return header + ifd0 + exif_table + ifd1 + THUMBNAIL + MAKER_NOTE
    return header + ifd0 + exif_table + MAKER_NOTE + ifd1 + THUMBNAIL


def tiff_ifd_bytes(
    order: str, big: bool, at: int, entries: list[tuple[int, int, int, bytes]]
) -> bytes:
    """An IFD at offset `at` of a TIFF (a BigTIFF's when `big`) of `entries` (tag, field type,
    count, values), no next IFD: values that do not fit in an entry follow it, at even offsets."""
    width, number = (8, "Q") if big else (4, "I")
    head = struct.pack(order + ("Q" if big else "H"), len(entries))
    apart = at + len(head) + len(entries) * (4 + 2 * width) + width
    table, values = b"", b""
    for tag, kind, count, value in entries:
        if len(value) <= width:
            field = value.ljust(width, b"\x00")
        else:
            field = struct.pack(order + number, apart + len(values))
            values += value + b"\x00" * (len(value) % 2)
        table += struct.pack(f"{order}HH{number}", tag, kind, count) + field
    return head + table + bytes(width) + values


def rationals(order: str, *values: tuple[int, int]) -> bytes:
    return b"".join(struct.pack(order + "II", *value) for value in values)


# An unknown TIFF field type, and a tag Pillow and ExifTool know no name for
UNKNOWN_FIELD_TYPE = 99
UNNAMED_TAG = 48879
# Private tags camera_tiff has tifffile write in the places of the Exif and GPS IFD pointers
EXIF_PLACEHOLDER, GPS_PLACEHOLDER = 34700, 34800


def camera_tiff(order: str = "<", big: bool = False, orientation: int = 1) -> bytes:
    """A camera's TIFF (a BigTIFF when `big`) in byte order `order`: Make, Model, Artist and
    `orientation` in its first IFD; an Exif IFD (ExposureTime 1/250, DateTimeOriginal, a
    MakerNote, an entry of an unknown field type) and a GPS IFD (48 51' 29.5" N, 2 17' 40" E)
    after its pixels."""
    pointer = "Q" if big else "I"
    out = io.BytesIO()
    tifffile.imwrite(
        out,
        photo(64, 48, 3),
        photometric="rgb",
        byteorder=order,
        bigtiff=big,
        metadata=None,
        software=False,
        resolution=(300, 300),
        resolutionunit="INCH",
        extratags=[
            (271, "s", 0, "TADM Camera Co.", True),
            (272, "s", 0, "Model 1", True),
            (274, "H", 1, orientation, True),
            (315, "s", 0, "Ada Photographer", True),
            (EXIF_PLACEHOLDER, pointer, 1, 0, True),  # tifffile writes no Exif IFD pointer
            (GPS_PLACEHOLDER, pointer, 1, 0, True),
        ],
    )
    data = out.getvalue()
    data += bytes(len(data) % 2)
    exif = tiff_ifd_bytes(
        order,
        big,
        len(data),
        [
            (33434, 5, 1, rationals(order, (1, 250))),  # ExposureTime
            (36864, 7, 4, b"0232"),  # ExifVersion
            (36867, 2, 20, b"2024:05:17 10:30:00\x00"),  # DateTimeOriginal
            (37500, 7, len(MAKER_NOTE), MAKER_NOTE),  # MakerNote
            (UNNAMED_TAG, UNKNOWN_FIELD_TYPE, 1, b""),
        ],
    )
    gps = tiff_ifd_bytes(
        order,
        big,
        len(data) + len(exif),
        [
            (0, 1, 4, bytes([2, 3, 0, 0])),  # GPSVersionID
            (1, 2, 2, b"N\x00"),  # GPSLatitudeRef
            (2, 5, 3, rationals(order, (48, 1), (51, 1), (2950, 100))),  # GPSLatitude
            (3, 2, 2, b"E\x00"),  # GPSLongitudeRef
            (4, 5, 3, rationals(order, (2, 1), (17, 1), (40, 1))),  # GPSLongitude
        ],
    )
    pointers = {
        EXIF_PLACEHOLDER: (34665, len(data)),
        GPS_PLACEHOLDER: (34853, len(data) + len(exif)),
    }
    width, number = (8, "Q") if big else (4, "I")
    first = struct.unpack_from(order + number, data, 8 if big else 4)[0]
    count = struct.unpack_from(order + ("Q" if big else "H"), data, first)[0]
    entries = first + (8 if big else 2)
    for entry in range(entries, entries + count * (4 + 2 * width), 4 + 2 * width):
        tag = struct.unpack_from(order + "H", data, entry)[0]
        if tag in pointers:
            tag, offset = pointers[tag]
            kind = 18 if big else 4  # IFD8, as ExifTool follows a BigTIFF's GPS IFD; LONG
            pointer = struct.pack(f"{order}HH{number}{number}", tag, kind, 1, offset)
            data = data[:entry] + pointer + data[entry + 4 + 2 * width :]
    return data + exif + gps


def debian_tool(command: str, package: str) -> str:
    """The path of `command`, from Debian's `package`; missing, the test fails under CI (make
    test installs it, as root) and is skipped elsewhere."""
    path = shutil.which(command)
    if path is None:
        reason = f"{command} is missing: apt-get install -y {package} (make test does, as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def exiftool() -> str:
    return debian_tool("exiftool", "libimage-exiftool-perl")


def photoshop_resource(resource_id: int, data: bytes, name: bytes = b"") -> bytes:
    """One Photoshop image resource: 8BIM, id, Pascal name padded even, size, data padded."""
    pascal = bytes([len(name)]) + name
    pascal += b"\x00" * (len(pascal) % 2)
    return (
        b"8BIM"
        + struct.pack(">H", resource_id)
        + pascal
        + struct.pack(">I", len(data))
        + data
        + b"\x00" * (len(data) % 2)
    )


def real_world_images() -> dict[str, bytes]:
    """rel_path -> bytes of files as cameras, phones and apps write them, 96-160 px."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    p3 = display_p3_icc()
    base = Image.fromarray(photo(128, 96, 30))
    return {
        "camera/exif.jpg": encode(base, "JPEG", quality=92, exif=camera_exif(6)),
        "colour/p3.png": encode(Image.fromarray(photo(112, 96, 31)), "PNG", icc_profile=p3),
        "colour/p3.jpg": encode(
            Image.fromarray(photo(96, 112, 32)), "JPEG", quality=95, icc_profile=p3
        ),
        "xmp.jpg": encode(Image.fromarray(photo(96, 96, 33)), "JPEG", xmp=xmp_packet()),
        "phone/photo.heic": encode(
            Image.fromarray(photo(128, 96, 34)),
            "HEIF",
            quality=90,
            exif=camera_exif(1),
            icc_profile=p3,
        ),
        "phone/photo.avif": encode(
            Image.fromarray(photo(96, 128, 35)),
            "AVIF",
            quality=90,
            exif=camera_exif(1),
            xmp=xmp_packet(),
        ),
        "web/still.gif": encode(Image.fromarray(photo(96, 80, 36)).convert("P"), "GIF"),
        "news/iptc.jpg": newsroom_jpeg(Image.fromarray(photo(112, 96, 37))),
        "screenshot.png": encode(text_image(160, 96), "PNG"),
    }


IPTC_FIELDS = {  # IPTC-IIM record 2: dataset -> value, as newsroom JPEGs carry them
    120: b"Harbour at dawn",  # Caption-Abstract
    80: b"Ada Photographer",  # By-line
    116: b"(c) Ada Photographer",  # CopyrightNotice
    25: b"harbour",  # Keywords
}


def newsroom_jpeg(img: Image.Image) -> bytes:
    """A JPEG as newsroom tools write it: camera EXIF, IPTC in Photoshop's APP13 image
    resources, a comment, and the density of a 300 dpi scan."""
    iptc = b"".join(
        b"\x1c\x02" + struct.pack(">BH", tag, len(value)) + value
        for tag, value in IPTC_FIELDS.items()
    )
    payload = b"Photoshop 3.0\x00" + photoshop_resource(0x0404, iptc)
    data = encode(
        img, "JPEG", quality=92, exif=camera_exif(1), comment=b"desk 4, roll 12", dpi=(300, 300)
    )
    return data[:2] + b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def text_image(width: int, height: int) -> Image.Image:
    """A screenshot-like page: black text on white, what TADM cannot carry."""
    from PIL import ImageDraw

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    for line in range(height // 12):
        draw.text((4, 2 + 12 * line), f"Line {line}: the quick brown fox 0123", fill="black")
    return img


def multi_frame_images() -> dict[str, bytes]:
    """rel_path -> an animated or multi-page file of two or three frames."""
    frames = [Image.fromarray(photo(64, 64, seed)) for seed in (40, 41, 42)]

    def animated(fmt: str, n: int) -> bytes:
        return encode(frames[0], fmt, save_all=True, append_images=frames[1:n])

    return {
        "anim/animated.gif": animated("GIF", 3),
        "anim/animated.png": animated("PNG", 2),
        "anim/animated.webp": animated("WEBP", 3),
        "anim/pages.tif": animated("TIFF", 2),
    }
