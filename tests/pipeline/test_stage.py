"""The archive and restore stages (ModelStage and write_files at work) chained by hand on
hand-built batches: no Ray at all."""

from __future__ import annotations

import errno
import hashlib
import io
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import encode, photo, write_tree, xmp_packet
from PIL import Image

from pipeline.archive.downscale import Downscale
from pipeline.archive.write import write_lr
from pipeline.decode import decode_batch
from pipeline.format import ARCHIVE_SCHEMA, RESTORE_SCHEMA, Region, decode_lr_png
from pipeline.metadata import Metadata
from pipeline.restore.read import read_lr_batch
from pipeline.restore.upscale import Upscale
from pipeline.restore.write import encode_restored, write_restored
from pipeline.rows import to_batch
from pipeline.stage import write_failure
from pipeline.storage import DstFull, Location

NO_ARCHIVE = Location.parse("/nonexistent/archive")  # for rows that copy nothing from it


@pytest.fixture(scope="module")
def archived(tiny_model: str, tmp_path_factory: pytest.TempPathFactory):
    """decode -> Downscale(verify) -> write_lr on one hand-built batch."""
    files = {
        "a.png": encode(Image.fromarray(photo(64, 48, 1)), "PNG"),
        "b.png": encode(Image.fromarray(photo(64, 48, 2)), "PNG"),
        "c/d.png": encode(Image.fromarray(photo(40, 33, 3)), "PNG"),
        "bad.png": b"nope",
    }
    batch = {
        "path": np.array([f"/src/{k}" for k in files], dtype=object),
        "bytes": np.array(list(files.values()), dtype=object),
    }
    decoded = decode_batch(batch, prefix="/src/", uri_prefix="", scale=16, max_pixels=10**8)
    model_stage = Downscale(tiny_model, storage_options={}, verify=True, torch_threads=2)
    lr = model_stage(decoded)
    dst = Location.parse(str(tmp_path_factory.mktemp("archive")))
    written = write_lr(lr, dst=dst, src=Location.parse("/src"), prefix="/src/")
    return decoded, lr, written, model_stage.model_id, dst


def test_downscale_stage_makes_lr_pngs(archived):
    decoded, lr, _, model_id, _ = archived
    assert list(lr["status"]) == ["ok", "ok", "ok", "error"]
    for i, (w, h) in enumerate([(64, 48), (64, 48), (40, 33)]):
        pixels, header = decode_lr_png(lr["lr_png"][i])
        assert pixels.shape == (math.ceil(h / 16), math.ceil(w / 16), 3)
        assert (header.width, header.height, header.scale, header.model_id) == (w, h, 16, model_id)
        assert (lr["lr_width"][i], lr["lr_height"][i]) == (math.ceil(w / 16), math.ceil(h / 16))
        assert 0 < lr["ssim"][i] <= 1 and lr["psnr"][i] > 0
        assert 10 <= lr["timestep_mean"][i] <= 200  # TPM maps to [10, 200]
        assert lr["seconds"][i] > decoded["seconds"][i]
    assert lr["lr_png"][3] is None and lr["error"][3].startswith("not a readable")
    assert "pixels" not in lr


def test_write_stage_writes_atomically_and_fills_sizes(archived):
    _, lr, rows, _, dst = archived
    assert list(rows) == ARCHIVE_SCHEMA.names
    for i in range(3):
        path = Path(dst.root) / "lr" / f"{rows['rel_path'][i]}.png"
        assert rows["lr_uri"][i] == str(path)
        assert path.read_bytes() == lr["lr_png"][i]
        assert rows["lr_bytes"][i] == path.stat().st_size
        w, h = rows["width"][i], rows["height"][i]
        assert rows["bpp"][i] == pytest.approx(8 * path.stat().st_size / (w * h))
        ratio = rows["source_bytes"][i] / path.stat().st_size
        assert rows["compression_ratio"][i] == pytest.approx(ratio)
    assert rows["lr_uri"][3] is None
    assert sorted(p.name for p in (Path(dst.root) / "lr").rglob("*")) == [
        "a.png.png",
        "b.png.png",
        "c",
        "d.png.png",
    ]


def test_a_quality_floor_sees_transparency_and_the_span_of_16_bit_values(tiny_model: str):
    """Under a floor, pixels not fully opaque (the LR drops their alpha) keep an image; the psnr
    of a 16-bit scan whose values use 12 bits (0-3900: 15 8-bit levels) is of that span, so a
    floor the same photo at full range passes keeps it. An opaque alpha channel loses
    nothing, and keeps nothing."""
    gray = photo(64, 48, 4).mean(axis=2)
    gray = (gray - gray.min()) / (gray.max() - gray.min())  # 0 to 1
    rgba = np.dstack([photo(64, 48, 5), np.full((48, 64), 255, np.uint8)])
    opaque = encode(Image.fromarray(rgba), "PNG")
    rgba[:8, :8, 3] = 0
    palette = Image.fromarray(photo(64, 48, 6)).quantize(16)
    files = {
        "scan12.png": encode(Image.fromarray((gray * 3900).astype(np.uint16)), "PNG"),
        # 4095 is 16 in 8 bits, rounded: its values use 12 bits all the same
        "full12.png": encode(Image.fromarray((gray * 4095).astype(np.uint16)), "PNG"),
        "scan16.png": encode(Image.fromarray((gray * 65535).astype(np.uint16)), "PNG"),
        "logo.png": encode(Image.fromarray(rgba), "PNG"),
        "opaque.png": opaque,
        "palette.gif": encode(palette, "GIF", transparency=int(np.asarray(palette)[0, 0])),
    }
    batch = {
        "path": np.array([f"/src/{k}" for k in files], dtype=object),
        "bytes": np.array(list(files.values()), dtype=object),
    }
    decoded = decode_batch(batch, prefix="/src/", uri_prefix="", scale=16, max_pixels=10**8)
    assert list(decoded["transparent"]) == [False, False, False, True, False, True]
    assert list(decoded["levels"]) == [15, 15, 255, 255, 255, 255]
    measured = Downscale(tiny_model, storage_options={}, verify=True, torch_threads=2)(decoded)
    psnr = dict(zip(files, measured["psnr"], strict=True))
    # Over 255 levels, the dark 12-bit scan's errors of a few levels made a high psnr.
    floor = min(psnr["scan16.png"], psnr["opaque.png"]) - 1
    assert psnr["scan12.png"] < floor and psnr["full12.png"] < floor
    stage = Downscale(tiny_model, storage_options={}, verify=False, min_psnr=floor)
    rows = stage(decode_batch(batch, prefix="/src/", uri_prefix="", scale=16, max_pixels=10**8))
    status = dict(zip(files, rows["status"], strict=True))
    assert status == {
        "scan12.png": "kept",
        "full12.png": "kept",
        "scan16.png": "ok",
        "logo.png": "kept",
        "opaque.png": "ok",
        "palette.gif": "kept",
    }
    reasons = dict(zip(files, rows["kept_reason"], strict=True))
    assert reasons["scan12.png"] == (
        f"psnr {psnr['scan12.png']:.2f} dB over the 15 levels of its 12-bit values below "
        f"--min-psnr {floor:g}"
    )
    assert reasons["logo.png"] == "transparent pixels, whose alpha an LR drops"


def test_a_local_copy_of_a_kept_source_does_not_claim_its_s3_user_metadata(archived, tmp_path):
    """The row of a source kept as it is names what the copy holds: into a local DST, the
    file's metadata, not the S3 object's user metadata the read stage found."""
    _, lr, _, _, _ = archived
    src = write_tree(tmp_path / "src", {"a.png": encode(Image.fromarray(photo(64, 48, 1)), "PNG")})
    batch = {name: column[:1].copy() for name, column in lr.items()}
    batch["status"][0], batch["kept_reason"][0] = "kept", "psnr below --min-psnr"
    batch["metadata"][0] = "s3_metadata"
    batch["lr_png"][0] = None
    out = write_lr(
        batch,
        dst=Location.parse(str(tmp_path / "dst")),
        src=Location.parse(str(src)),
        prefix=f"{src}/",
    )
    assert list(out["status"]) == ["kept"] and out["metadata"][0] is None


def test_a_disk_that_takes_no_more_stops_the_write_stage(archived, tmp_path, monkeypatch):
    """Full or read-only: every image after it would fail too, each its own error row."""
    import pipeline.stage as stage_module

    _, lr, _, _, _ = archived

    def full(fs, path, *_) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stage_module, "write_atomic", full)
    dst = Location.parse(str(tmp_path))
    with pytest.raises(DstFull) as stopped:
        write_lr(lr, dst=dst, src=Location.parse("/src"), prefix="/src/")
    assert str(stopped.value) == (
        f"cannot write {tmp_path}/lr/a.png.png: [Errno 28] No space left on device: DST's disk "
        "takes no more files: free space on it, or make it writable, and run the job again, "
        "which does the images not done yet"
    )


def unrecorded(n: int) -> dict[str, np.ndarray]:
    """The columns of n LR items whose manifest records nothing more: no kept file, no source
    hash, no LR size or hash."""
    empty = np.array([""] * n, dtype=object)
    unknown = np.full(n, -1)
    return {"kept_uri": empty, "source_sha256": empty, "lr_bytes": unknown} | {
        "lr_sha256": empty,
        "source_bytes": unknown,
    }


def test_restore_stages_give_back_the_original_size(archived, tiny_model, tmp_path: Path):
    _, _, rows, model_id, dst = archived
    items = {
        "rel_path": np.array(["a.png", "c/d.png", "gone.png"], dtype=object),
        "lr_uri": np.array([rows["lr_uri"][0], rows["lr_uri"][2], dst.path("lr/gone.png.png")]),
        "source_uri": np.array(["", "", ""], dtype=object),
    } | unrecorded(3)
    read = read_lr_batch(items, archive=dst, model_id=model_id, region=None, options={})
    assert list(read["status"]) == ["ok", "ok", "error"]
    assert "is missing" in read["error"][2] and read["error_kind"][2] == "transient"
    restored = Upscale(tiny_model, storage_options={}, region=None, torch_threads=2)(read)
    out = write_restored(
        restored, dst=Location.parse(str(tmp_path)), archive=dst, image_format="webp"
    )
    assert list(out) == RESTORE_SCHEMA.names
    with Image.open(tmp_path / "c/d.png.webp") as img:
        assert img.size == (40, 33)
    assert out["output_uri"][0] == str(tmp_path / "a.png.webp")
    assert (out["width"][1], out["height"][1]) == (40, 33)
    assert out["psnr"][0] is None  # no source given


def test_restore_region_and_wrong_model(archived, tiny_model):
    _, _, rows, model_id, dst = archived
    items = {
        "rel_path": np.array(["a.png", "b.png"], dtype=object),
        "lr_uri": np.array(rows["lr_uri"][:2]),
        "source_uri": np.array(rows["source_uri"][:2]),
    } | unrecorded(2)
    read = read_lr_batch(items, archive=dst, model_id="f" * 16, region=None, options={})
    assert list(read["status"]) == ["error", "error"]
    assert model_id in read["error"][0] and "f" * 16 in read["error"][0]
    read = read_lr_batch(
        items, archive=dst, model_id=model_id, region=Region(60, 0, 10, 10), options={}
    )
    assert read["error"][0] == "region 60,0,10,10 is not inside the 64x48 image"
    read = read_lr_batch(
        items, archive=dst, model_id=model_id, region=Region(8, 4, 24, 20), options={}
    )
    restored = Upscale(tiny_model, storage_options={}, region=Region(8, 4, 24, 20))(read)
    assert restored["restored"][0].shape == (20, 24, 3)
    assert list(restored["region"]) == ["8,4,24,20", "8,4,24,20"]


def test_psnr_reference_is_only_the_source_archived(archived, tmp_path: Path):
    """The source is read for psnr/ssim only when its bytes are the archived ones (SHA-256): a
    changed source, or a manifest whose source_uri names another file, gives no reference."""
    decoded, _, rows, model_id, dst = archived
    sources = {
        name: encode(Image.fromarray(photo(64, 48, seed)), "PNG")
        for name, seed in (("a.png", 1), ("b.png", 2))
    }
    for name, data in sources.items():
        (tmp_path / name).write_bytes(data)
    sha_a = decoded["source_sha256"][0]
    assert sha_a == hashlib.sha256(sources["a.png"]).hexdigest()

    def reference(source_uri: str, sha256: str, size: int = -1) -> np.ndarray:
        items = (
            {
                "rel_path": np.array(["a.png"], dtype=object),
                "lr_uri": np.array(rows["lr_uri"][:1]),
                "source_uri": np.array([source_uri], dtype=object),
            }
            | unrecorded(1)
            | {"source_sha256": np.array([sha256], dtype=object), "source_bytes": np.array([size])}
        )
        read = read_lr_batch(items, archive=dst, model_id=model_id, region=None, options={})
        assert list(read["status"]) == ["ok"]
        return read["source_pixels"][0]

    assert reference(str(tmp_path / "a.png"), sha_a).shape == (48, 64, 3)
    assert reference(str(tmp_path / "b.png"), sha_a).size == 0  # another image of the same size
    assert reference(str(tmp_path / "a.png"), "").size == 0  # nothing to check it against
    size = len(sources["a.png"])
    assert reference(str(tmp_path / "a.png"), sha_a, size).shape == (48, 64, 3)
    assert reference(str(tmp_path / "a.png"), sha_a, size + 1).size == 0  # not read at all
    os.mkfifo(tmp_path / "fifo")  # a manifest naming a FIFO: never opened (it would block)
    assert reference(str(tmp_path / "fifo"), sha_a, size).size == 0
    (tmp_path / "a.png").write_bytes(sources["b.png"])  # changed since it was archived
    assert reference(str(tmp_path / "a.png"), sha_a).size == 0


def test_the_model_of_a_cpu_stage_is_channels_last(archived, tiny_model):
    """Convolutions run channels-last on a CPU (faster there), in either precision."""
    for precision in ("fp32", "bf16"):
        model = Upscale(tiny_model, {}, None, precision=precision).model
        assert model.precision == precision
        weight = model.unet.conv_in.weight
        assert weight.is_contiguous(memory_format=torch.channels_last) and weight.ndim == 4


def test_restored_png_holds_exactly_the_model_output(archived, tiny_model, tmp_path: Path):
    _, lr, rows, model_id, dst = archived
    items = {
        "rel_path": np.array(["a.png"], dtype=object),
        "lr_uri": np.array(rows["lr_uri"][:1]),
        "source_uri": np.array([""], dtype=object),
    } | unrecorded(1)
    restored = Upscale(tiny_model, {}, None)(
        read_lr_batch(items, archive=dst, model_id=model_id, region=None, options={})
    )
    out = write_restored(
        restored, dst=Location.parse(str(tmp_path)), archive=dst, image_format="png"
    )
    pixels = np.asarray(Image.open(io.BytesIO((tmp_path / "a.png.png").read_bytes())))
    np.testing.assert_array_equal(pixels, restored["restored"][0])
    assert out["status"][0] == "ok"


def test_a_failed_model_call_is_an_error_row_for_its_images(archived, tiny_model):
    _, _, rows, model_id, dst = archived
    items = {
        "rel_path": np.array(["a.png", "b.png"], dtype=object),
        "lr_uri": np.array(rows["lr_uri"][:2]),
        "source_uri": np.array(["", ""], dtype=object),
    } | unrecorded(2)
    read = read_lr_batch(items, archive=dst, model_id=model_id, region=None, options={})
    read["hr_width"] = np.array([640, read["hr_width"][1]])  # a.png's LR is too small for that
    restored = Upscale(tiny_model, {}, None)(read)
    assert list(restored["status"]) == ["error", "ok"]
    assert restored["error"][0].startswith("model failed: ValueError: size 48x640")
    assert restored["restored"][0].size == 0 and restored["restored"][1].shape == (48, 64, 3)
    assert restored["seconds"][0] > read["seconds"][0]


def test_write_stages_refuse_keys_out_of_dst_and_turn_any_failure_into_its_row(tmp_path: Path):
    dst = Location.parse(str(tmp_path / "dst"))
    rows = [
        {"rel_path": rel_path, "status": "ok", "seconds": 0.0, "restored": pixels}
        | {"metadata": None, "conversion": None}
        | Metadata().row()
        for rel_path, pixels in [
            ("../up.png", np.zeros((8, 8, 3), np.uint8)),
            ("/abs.png", np.zeros((8, 8, 3), np.uint8)),
            ("bad.png", np.zeros((8, 8, 7), np.uint8)),  # not an image: encoding raises
            ("good.png", np.zeros((8, 8, 3), np.uint8)),
        ]
    ]
    out = write_restored(to_batch(rows, rows[0]), dst=dst, archive=NO_ARCHIVE, image_format="png")
    assert list(out["status"]) == ["error", "error", "error", "ok"]
    assert "'../up.png.png'" in out["error"][0] and "refused" in out["error"][0]
    assert "'/abs.png.png' is absolute" in out["error"][1]
    assert out["error"][2].startswith("TypeError: ")  # from the encoder, as the row's error
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["dst", "good.png.png"]


def test_a_symlinked_folder_in_dst_takes_no_write_or_removal_out_of_it(tmp_path: Path):
    """DST/sub -> elsewhere, planted before the run: the row is an error (a re-run retries
    once the link is gone), and nothing is written or removed elsewhere."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.jpg").write_bytes(b"a file of someone else's")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "sub").symlink_to(elsewhere)
    dst = Location.parse(str(tmp_path / "dst"))
    rows = [
        {"rel_path": "sub/a.jpg", "status": "ok", "seconds": 0.0, "restored": pixels}
        | {"metadata": None, "conversion": None, "earlier": "sub/a.jpg"}  # a kept copy before
        | Metadata().row()
        for pixels in [np.zeros((8, 8, 3), np.uint8)]
    ]
    out = write_restored(to_batch(rows, rows[0]), dst=dst, archive=NO_ARCHIVE, image_format="png")
    assert list(out["status"]) == ["error"] and list(out["error_kind"]) == ["transient"]
    assert "through a symbolic link: remove the link" in out["error"][0]
    assert sorted(p.name for p in elsewhere.iterdir()) == ["a.jpg"]
    rows[0]["rel_path"] = "b.jpg"  # written in DST itself; the earlier copy to remove is not
    out = write_restored(to_batch(rows, rows[0]), dst=dst, archive=NO_ARCHIVE, image_format="png")
    assert list(out["status"]) == ["error"] and "cannot remove the earlier" in out["error"][0]
    assert (elsewhere / "a.jpg").exists() and (tmp_path / "dst" / "b.jpg.png").exists()


def test_a_write_that_fails_for_its_name_is_an_error_saying_what_to_do(tmp_path: Path):
    dst = Location.parse(str(tmp_path))
    names = [
        "x" * 247 + ".jpg",  # 255 bytes with ".png": the filesystem's limit, written
        "y" * 248 + ".jpg",  # 256
        "c.jpg",  # c.jpg.png, then the folder c.jpg.png/ is needed
        "c.jpg.png/in.jpg",
        "d.jpg.png/in.jpg",  # the folder d.jpg.png/, then the file d.jpg.png is needed
        "d.jpg",
    ]
    rows = [
        {
            "rel_path": name,
            "status": "ok",
            "seconds": 0.0,
            "restored": np.zeros((8, 8, 3), np.uint8),
            "psnr": 30.0,
            "ssim": 0.9,
        }
        | {"metadata": None, "conversion": None}
        | Metadata().row()
        for name in names
    ]
    out = write_restored(to_batch(rows, rows[0]), dst=dst, archive=NO_ARCHIVE, image_format="png")
    assert list(out["status"]) == ["ok", "error", "ok", "error", "ok", "error"]
    # An error row has no figures of an image that was not written.
    assert list(out["psnr"]) == [30.0, None, 30.0, None, 30.0, None]
    assert list(out["ssim"]) == [0.9, None, 0.9, None, 0.9, None]
    # Each fails on every run: permanent, so a re-run does not redo it, --keep-failed keeps it.
    assert list(out["error_kind"][[1, 3, 5]]) == ["permanent"] * 3
    assert "the name is 256 bytes with its suffix" in out["error"][1]
    assert "rename the source" in out["error"][1]
    assert out["error"][3].endswith(
        f"({tmp_path}/c.jpg.png is a file, where a folder must be: a file and a folder of one "
        "name): if two outputs clash, restore one of them into another DST (--only); if DST "
        "holds a file or folder of its own there, remove it and run again with --retry-errors"
    )
    assert f"({tmp_path}/d.jpg.png is a folder: a file and a folder" in out["error"][5]
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary file left


def test_an_s3_key_too_long_is_told_with_s3s_limit():
    """S3 refuses a key over 1024 bytes (KeyTooLongError, which s3fs raises as ENAMETOOLONG);
    the error gives S3's limit, not a local filesystem's. The moto server takes longer keys,
    so the error is built here as s3fs builds it."""
    key = "a" * 1030 + ".jpg.png"
    error = OSError(errno.ENAMETOOLONG, "Your key is too long")
    kind, hint = write_failure(error, f"bucket/{key}", "s3", "rename")
    assert kind == "permanent"
    assert hint == " (the key is 1038 bytes; S3 allows 1024): rename the source"
    kind, hint = write_failure(error, f"/dst/{key}", "file", "rename")
    assert "this filesystem allows fewer" in hint


def test_a_restore_names_the_metadata_its_format_cannot_hold():
    metadata = Metadata(xmp=xmp_packet(), photoshop=b"8BIM\x04\x04\x00\x00", comment=b"c")
    _, names, conversion = encode_restored(photo(40, 30), "webp", metadata, srgb=False)
    assert (names, conversion) == ("xmp", "webp holds no photoshop, comment: not carried")
    _, names, conversion = encode_restored(photo(40, 30), "jpeg", metadata, srgb=True)
    assert (names, conversion) == ("xmp,photoshop,comment", "no ICC profile: taken as sRGB")


def test_a_model_location_is_what_every_node_reads(tmp_path: Path, monkeypatch):
    from pipeline.stage import model_location

    (tmp_path / "models" / "mine").mkdir(parents=True)
    (tmp_path / "home" / "mine").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert model_location("models/mine") == str(tmp_path / "models" / "mine")
    assert model_location("~/mine") == str(tmp_path / "home" / "mine")
    assert model_location("s3://bucket/models/mine") == "s3://bucket/models/mine"
    assert model_location("file:///models/mine") == "file:///models/mine"
    assert model_location("tiny-x16") == "tiny-x16"  # a shipped checkpoint's name
    assert model_location("no-such-model") == "no-such-model"  # load_model names it as given
