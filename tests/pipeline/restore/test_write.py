"""The restore's write stage: what a restored file carries, and the images a format cannot hold."""

from __future__ import annotations

import hashlib
import io
import struct

import numpy as np
import pytest
from conftest import display_p3_icc, make_bucket, photo, xmp_packet
from PIL import Image

from pipeline.decode import decode_image
from pipeline.format import RESTORE_SCHEMA
from pipeline.metadata import JPEG_LIMITS, METADATA_FIELDS, Metadata, s3_metadata_text, s3_tags_text
from pipeline.restore.write import encode_restored, write_restored
from pipeline.rows import error_kind
from pipeline.storage import Location


def big_exif(size: int = 70_000) -> bytes:
    """EXIF of `size` bytes: a TIFF structure with a Make tag, then padding."""
    exif = Image.Exif()
    exif[0x010F] = "TADM Camera Co."
    data = exif.tobytes()[6:]
    return data + bytes(size - len(data))


def big_xmp(size: int = 70_000) -> bytes:
    """An XMP packet of `size` bytes, padded with spaces."""
    packet = xmp_packet()
    return packet.replace(b"<?xpacket end", b" " * (size - len(packet)) + b"<?xpacket end")


def test_a_jpeg_restore_leaves_out_exif_and_xmp_over_one_segment_and_says_so():
    metadata = Metadata(exif=big_exif(), icc=display_p3_icc(), xmp=big_xmp(), comment=b"c")
    data, names, conversion = encode_restored(photo(40, 30), "jpeg", metadata, srgb=False)
    assert names == "icc,comment"
    assert conversion == (
        f"jpeg holds no exif over {JPEG_LIMITS['exif']:,} bytes (70,000 here): not carried; "
        f"jpeg holds no xmp over {JPEG_LIMITS['xmp']:,} bytes (70,000 here): not carried"
    )
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "JPEG" and img.size == (40, 30)
    assert decode_image(data).metadata == Metadata(icc=display_p3_icc(), comment=b"c")
    for image_format in ("png", "webp"):  # they hold both at any size
        _, names, _ = encode_restored(photo(40, 30), image_format, metadata, srgb=False)
        assert names.startswith("exif,icc,xmp"), image_format


def test_webp_notes_what_it_has_no_place_for_beside_what_is_too_big_for_jpeg():
    metadata = Metadata(exif=big_exif(), photoshop=b"8BIM\x04\x04\x00\x00", comment=b"c")
    _, names, conversion = encode_restored(photo(40, 30), "webp", metadata, srgb=False)
    assert (names, conversion) == ("exif", "webp holds no photoshop, comment: not carried")
    _, names, conversion = encode_restored(photo(40, 30), "jpeg", metadata, srgb=True)
    assert names == "photoshop,comment"
    assert conversion == (
        "no ICC profile: taken as sRGB; "
        "jpeg holds no exif over 65,527 bytes (70,000 here): not carried"
    )


GAMMA_1 = b"gAMA" + struct.pack(">I", 100000)  # linear pixels
P3_PRIMARIES = b"cHRM" + struct.pack(">8I", 31270, 32900, 68000, 32000, 26500, 69000, 15000, 6000)


def test_to_srgb_converts_through_the_profile_which_overrides_the_png_chunks():
    """A profile's conversion makes the pixels sRGB; the PNG chunks it overrides go with it
    (tests/pipeline/restore/test_srgb.py: pixels with those chunks alone)."""
    metadata = Metadata(icc=display_p3_icc(), png_colour=GAMMA_1 + P3_PRIMARIES, density=b"1 1 m")
    data, names, conversion = encode_restored(photo(40, 30), "png", metadata, srgb=True)
    assert (names, conversion) == ("density", "ICC 'Display P3' -> sRGB")
    assert b"gAMA" not in data and b"cHRM" not in data
    _, names, conversion = encode_restored(photo(40, 30), "png", metadata, srgb=False)
    assert (names, conversion) == ("icc,density,png_colour", None)


@pytest.mark.parametrize(
    ("image_format", "width", "height", "limit"),
    [("jpeg", 16, 70_000, 65500), ("jpeg", 70_000, 16, 65500), ("webp", 16, 20_000, 16383)],
)
def test_an_image_over_the_formats_sides_is_a_permanent_error_saying_what_to_do(
    image_format: str, width: int, height: int, limit: int
):
    pixels = np.zeros((height, width, 3), np.uint8)
    with pytest.raises(ValueError) as raised:
        encode_restored(pixels, image_format, Metadata(icc=display_p3_icc()), srgb=True)
    assert str(raised.value) == (
        f"{image_format.upper()} holds at most {limit} pixels a side, this image is "
        f"{width}x{height}: restore it with --format png"
    )
    assert error_kind(raised.value) == "permanent"


def test_write_restored_makes_an_image_too_large_for_jpeg_a_permanent_error_row(tmp_path):
    """...and writes the image beside it, without the EXIF a JPEG cannot hold."""
    images = [np.zeros((70_000, 16, 3), np.uint8), photo(40, 30)]
    metadata = [Metadata(), Metadata(exif=big_exif())]
    batch = {
        "rel_path": np.array(["tall.png", "a.png"], dtype=object),
        "status": np.array(["ok", "ok"], dtype=object),
        "restored": np.array([None, None], dtype=object),
        "metadata": np.array([None, "exif"], dtype=object),
        "conversion": np.array([None, None], dtype=object),
        "seconds": np.array([0.0, 0.0]),
    }
    batch["restored"][:] = images
    for name in METADATA_FIELDS:
        batch[name] = np.array([m.row()[name] for m in metadata], dtype=object)
    out = write_restored(
        batch,
        dst=Location.parse(str(tmp_path)),
        archive=Location.parse(str(tmp_path)),
        image_format="jpeg",
    )
    assert list(out) == RESTORE_SCHEMA.names
    assert list(out["status"]) == ["error", "ok"]
    assert list(out["error_kind"]) == ["permanent", None]
    assert out["error"][0] == (
        "JPEG holds at most 65500 pixels a side, this image is 16x70000: "
        "restore it with --format png"
    )
    assert not (tmp_path / "tall.png.jpeg").exists()
    assert out["metadata"][1] is None
    assert out["conversion"][1] == "jpeg holds no exif over 65,527 bytes (70,000 here): not carried"
    with Image.open(tmp_path / "a.png.jpeg") as img:
        assert img.size == (40, 30) and "exif" not in img.info


def test_a_local_restore_or_a_region_says_the_s3_user_metadata_stays_in_the_lr(tmp_path):
    """A local file, or a region, has no place for the S3 user metadata and object tags an LR
    holds of an S3 source: its row says so (a whole image restored to S3 carries them), and,
    last, what archiving did to the image."""
    tags = s3_tags_text([("project", "apollo")])
    m = Metadata(s3_metadata=s3_metadata_text({"camera": "x100"}), s3_tags=tags)
    batch = {
        "rel_path": np.array(["a.png", "b.png"], dtype=object),
        "status": np.array(["ok", "ok"], dtype=object),
        "restored": np.array([None, None], dtype=object),
        "region": np.array([None, "0,0,8,8"], dtype=object),
        "metadata": np.array(["s3_metadata,s3_tags"] * 2, dtype=object),
        "conversion": np.array([None, None], dtype=object),
        "archived": np.array(["RGBA -> RGB, alpha dropped", None], dtype=object),
        "seconds": np.array([0.0, 0.0]),
    }
    batch["restored"][:] = [photo(40, 30), photo(8, 8)]
    batch |= {name: np.array([value] * 2, dtype=object) for name, value in m.row().items()}
    here = Location.parse(str(tmp_path))
    out = write_restored(batch, dst=here, archive=here, image_format="png")
    assert list(out["status"]) == ["ok", "ok"] and list(out["metadata"]) == [None, None]
    assert list(out["conversion"]) == [
        "not carried: S3 user metadata, S3 object tags (in the LR only: a local file holds none)"
        "; when archived: RGBA -> RGB, alpha dropped",
        "not carried: S3 user metadata, S3 object tags (in the LR only: a region holds none)",
    ]


def test_a_kept_source_is_copied_only_with_the_bytes_it_was_kept_with(tmp_path):
    """A kept file is copied a chunk at a time (a video may be larger than memory), and only
    while it is the source the archive kept; the manifest records each output's SHA-256."""
    archive = tmp_path / "archive"
    (archive / "kept").mkdir(parents=True)
    video = b"frames" * 10_000
    (archive / "kept/v.mp4").write_bytes(video)
    (archive / "kept/w.mp4").write_bytes(b"bit rot")
    kept = {"v.mp4": video, "w.mp4": b"the one"}  # as the archive manifest records them
    batch = {
        "rel_path": np.array(list(kept), dtype=object),
        "status": np.array(["kept", "kept"], dtype=object),
        "kept_path": np.array([str(archive / "kept" / name) for name in kept], dtype=object),
        "kept_key": np.array(list(kept), dtype=object),
        "kept_data": np.array([b"", b""], dtype=object),
        "source_sha256": np.array([hashlib.sha256(d).hexdigest() for d in kept.values()]),
        "source_bytes": np.array([len(d) for d in kept.values()]),
        "metadata": np.array([None, None], dtype=object),
        "conversion": np.array([None, None], dtype=object),
        "seconds": np.array([0.0, 0.0]),
    }
    dst = tmp_path / "restored"
    out = write_restored(
        batch,
        dst=Location.parse(str(dst)),
        archive=Location.parse(str(archive)),
        image_format="png",
    )
    assert list(out["status"]) == ["kept", "error"]
    assert out["output_sha256"][0] == hashlib.sha256(video).hexdigest()
    assert (dst / "v.mp4").read_bytes() == video
    assert out["error_kind"][1] == "permanent"
    assert out["error"][1] == (
        f"kept file {archive}/kept/w.mp4 differs from the source it kept (its SHA-256 is "
        f"{hashlib.sha256(b'bit rot').hexdigest()}, not the one recorded)"
    )
    assert sorted(p.name for p in dst.iterdir()) == ["v.mp4"]


def test_a_local_copy_of_a_kept_file_on_s3_says_its_metadata_and_tags_are_not_carried(
    s3_env, tmp_path
):
    make_bucket(s3_env, "kept-restore")
    archive = Location.parse("s3://kept-restore/archive")
    fs = archive.filesystem()
    fs.pipe_file(archive.path("kept/v.mp4"), b"frames", Metadata={"a": "1"}, Tagging="b=2")
    fs.pipe_file(archive.path("kept/w.mp4"), b"frames")
    batch = {
        "rel_path": np.array(["v.mp4", "w.mp4"], dtype=object),
        "status": np.array(["kept", "kept"], dtype=object),
        "kept_path": np.array([archive.path(f"kept/{n}") for n in ("v.mp4", "w.mp4")], object),
        "kept_key": np.array(["v.mp4", "w.mp4"], dtype=object),
        "kept_data": np.array([b"", b""], dtype=object),
        "source_sha256": np.array([hashlib.sha256(b"frames").hexdigest()] * 2),
        "source_bytes": np.array([6, 6]),
        "metadata": np.array([None, None], dtype=object),
        "conversion": np.array([None, None], dtype=object),
        "seconds": np.array([0.0, 0.0]),
    }
    dst = Location.parse(str(tmp_path / "restored"))
    out = write_restored(batch, dst=dst, archive=archive, image_format="png")
    assert list(out["status"]) == ["kept", "kept"]
    assert list(out["conversion"]) == [
        "not carried: S3 user metadata, S3 object tags (a local file holds none)",
        None,
    ]


def test_a_restored_file_changed_since_is_not_replaced_by_a_redo(tmp_path):
    """A redo under the same name (--region, another model) replaces what a restore wrote only
    while it has the bytes that restore recorded: a user's edit stays."""
    dst = tmp_path / "restored"
    dst.mkdir()
    (dst / "a.png.png").write_bytes(b"as restored")
    (dst / "b.png.png").write_bytes(b"as restored, then edited")
    recorded = hashlib.sha256(b"as restored").hexdigest()
    batch = {
        "rel_path": np.array(["a.png", "b.png"], dtype=object),
        "status": np.array(["ok", "ok"], dtype=object),
        "restored": np.array([None, None], dtype=object),
        "replaces": np.array([recorded, recorded], dtype=object),
        "metadata": np.array([None, None], dtype=object),
        "conversion": np.array([None, None], dtype=object),
        "seconds": np.array([0.0, 0.0]),
    }
    batch["restored"][:] = [photo(40, 30), photo(40, 30)]
    for name in METADATA_FIELDS:
        batch[name] = np.array([b"", b""], dtype=object)
    location = Location.parse(str(dst))
    out = write_restored(batch, dst=location, archive=location, image_format="png")
    assert list(out["status"]) == ["ok", "error"] and out["error_kind"][1] == "transient"
    assert out["error"][1] == (
        "DST/b.png.png was changed since a restore wrote it: it is left as it is "
        "(--overwrite replaces it)"
    )
    assert (dst / "b.png.png").read_bytes() == b"as restored, then edited"
    with Image.open(dst / "a.png.png") as img:
        assert img.size == (40, 30)


def test_a_file_no_restore_recorded_is_taken_only_with_the_bytes_restored_now(tmp_path):
    """What a restore killed before recording it wrote is taken as it is by the re-run (its
    bytes are the ones restored now); any other file in the way stays, a transient error."""
    dst, archive = tmp_path / "restored", tmp_path / "archive"
    (archive / "kept").mkdir(parents=True)
    (archive / "kept/v.mp4").write_bytes(b"frames")
    pixels = photo(40, 30)
    written, _, _ = encode_restored(pixels, "png", Metadata(), False)
    dst.mkdir()
    (dst / "a.png.png").write_bytes(written)  # a killed restore's output
    (dst / "b.png.png").write_bytes(b"a file of mine")
    (dst / "v.mp4").write_bytes(b"frames")  # a killed restore's copy
    (dst / "w.mp4").write_bytes(b"frames, edited")
    (tmp_path / "mine.png").write_bytes(written)
    (dst / "c.png.png").symlink_to(tmp_path / "mine.png")  # a user's link, to those bytes
    why = "DST/... exists, no restore of this image into DST recorded it"
    names = ["a.png", "b.png", "v.mp4", "w.mp4", "c.png"]
    batch = {
        "rel_path": np.array(names, dtype=object),
        "status": np.array(["ok", "ok", "kept", "kept", "ok"], dtype=object),
        "restored": np.array([None] * 5, dtype=object),
        "in_the_way": np.array([why] * 5, dtype=object),
        "kept_path": np.array(["", ""] + [str(archive / "kept/v.mp4")] * 2 + [""], dtype=object),
        "kept_key": np.array(["", "", "v.mp4", "w.mp4", ""], dtype=object),
        "kept_data": np.array([b""] * 5, dtype=object),
        "source_sha256": np.array(["", ""] + [hashlib.sha256(b"frames").hexdigest()] * 2 + [""]),
        "source_bytes": np.array([-1, -1, 6, 6, -1]),
        "metadata": np.array([None] * 5, dtype=object),
        "conversion": np.array([None] * 5, dtype=object),
        "seconds": np.array([0.0] * 5),
    }
    batch["restored"][:] = [pixels, pixels, None, None, pixels]
    for name in METADATA_FIELDS:
        batch[name] = np.array([b""] * 5, dtype=object)
    out = write_restored(
        batch,
        dst=Location.parse(str(dst)),
        archive=Location.parse(str(archive)),
        image_format="png",
    )
    assert list(out["status"]) == ["ok", "error", "kept", "error", "error"]
    assert list(out["error_kind"]) == [None, "transient", None, "transient", "transient"]
    assert out["error"][1] == out["error"][3] == out["error"][4] == why
    assert (dst / "c.png.png").is_symlink()
    assert out["output_sha256"][0] == hashlib.sha256(written).hexdigest()
    assert (dst / "b.png.png").read_bytes() == b"a file of mine"
    assert (dst / "w.mp4").read_bytes() == b"frames, edited"


def test_a_link_at_an_earlier_output_is_left_even_to_the_bytes_recorded(tmp_path):
    """No restore writes a symbolic link: one at the earlier output's name is a user's, left
    with its target, whatever bytes the target has."""
    dst = tmp_path / "restored"
    dst.mkdir()
    (tmp_path / "mine.png").write_bytes(b"as restored")
    (dst / "a.jpg.png").symlink_to(tmp_path / "mine.png")
    batch = {
        "rel_path": np.array(["a.jpg"], dtype=object),
        "status": np.array(["ok"], dtype=object),
        "restored": np.array([None], dtype=object),
        "earlier": np.array(["a.jpg.png"], dtype=object),
        "earlier_sha256": np.array([hashlib.sha256(b"as restored").hexdigest()], dtype=object),
        "metadata": np.array([None], dtype=object),
        "conversion": np.array([None], dtype=object),
        "seconds": np.array([0.0]),
    }
    batch["restored"][:] = [photo(40, 30)]
    for name in METADATA_FIELDS:
        batch[name] = np.array([b""], dtype=object)
    location = Location.parse(str(dst))
    out = write_restored(batch, dst=location, archive=location, image_format="jpeg")
    assert out["status"][0] == "ok"
    assert "the earlier restored image a.jpg.png was changed since" in out["conversion"][0]
    assert (dst / "a.jpg.png").is_symlink() and (dst / "a.jpg.jpeg").is_file()
