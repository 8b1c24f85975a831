import pytest
from PIL import Image

from conftest import make_image
from pipeline import UserError
from pipeline.images.decode import BadImage, load_rgb
from pipeline.images.scan import scan


def test_scan_sorted_with_labels(folder):
    s = scan(folder)
    assert s.classes == ["ants", "bees"]
    assert [len(s.splits[k].items) for k in ("train", "val")] == [12, 8]
    paths = [r.path for r in s.splits["train"].items]
    assert paths == sorted(paths) and paths[0] == "train/ants/img000.jpg"
    assert {r.label for r in s.splits["val"].items if r.path.startswith("val/bees/")} == {1}


def test_non_images_and_empty_files_are_skipped_with_reason(folder):
    (folder / "train/ants/notes.txt").write_text("hello")
    (folder / "train/ants/placeholder.gif").write_bytes(b"GIF89a")
    (folder / "train/bees/empty.jpg").write_bytes(b"")
    s = scan(folder)
    reasons = dict(s.splits["train"].skipped)
    assert reasons["train/ants/notes.txt"].startswith("not an image type (.txt)")
    assert "gif" in reasons["train/ants/placeholder.gif"]
    assert "0 bytes" in reasons["train/bees/empty.jpg"]
    assert len(s.splits["train"].items) == 12


def test_digest_changes_with_image_list(folder):
    before = scan(folder).digest()
    assert scan(folder).digest() == before
    make_image(folder / "val/ants/new.png", (1, 2, 3))
    assert scan(folder).digest() != before


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK"])
def test_modes_become_rgb(tmp_path, mode):
    ext = "jpg" if mode == "CMYK" else "png"
    p = make_image(tmp_path / f"x.{ext}", (10, 200, 30), mode=mode)
    assert Image.open(p).mode == mode
    img = load_rgb(p)
    assert img.mode == "RGB" and img.size == (64, 48)


def test_truncated_and_garbage_files_raise_badimage(tmp_path):
    p = make_image(tmp_path / "ok.jpg", (10, 200, 30), size=(300, 200))
    data = p.read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    for name in ("trunc.jpg", "junk.jpg"):
        with pytest.raises(BadImage, match="undecodable"):
            load_rgb(tmp_path / name)


def test_draft_decode_keeps_shorter_side_at_least_requested(tmp_path):
    p = make_image(tmp_path / "big.jpg", (10, 200, 30), size=(2000, 1500))
    img = load_rgb(p, draft=256)
    assert min(img.size) >= 256 and img.size[0] < 2000


def test_missing_root_split_empty_class_and_class_mismatch(tmp_path, folder):
    with pytest.raises(UserError, match="does not exist"):
        scan(tmp_path / "nope")
    with pytest.raises(UserError, match="split 'test' is missing"):
        scan(folder, ("train", "test"))
    make_image(folder / "train/wasps/w.png", (9, 9, 9))
    with pytest.raises(UserError, match="class folders differ"):
        scan(folder)
    (folder / "val/wasps").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        scan(folder)


def test_an_absent_data_path_other_than_the_demo_is_an_error_not_a_download(tmp_path):
    from conftest import cli
    r = cli("data", "--data", tmp_path / "my_photoz")
    assert r.returncode == 2 and "does not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "my_photoz").exists()


@pytest.mark.parametrize("orientation,turned", [(1, False), (3, False), (6, True), (8, True)])
def test_a_phone_photo_is_decoded_upright_as_a_viewer_shows_it(tmp_path, orientation, turned):
    """Phones store the sensor's pixels and an EXIF tag saying how to turn them."""
    import numpy as np

    a = np.zeros((40, 80, 3), np.uint8)
    a[:, :40] = (220, 30, 30)  # red left half, blue right half as stored
    a[:, 40:] = (30, 30, 220)
    exif = Image.Exif()
    exif[0x0112] = orientation
    f = tmp_path / "phone.jpg"
    Image.fromarray(a).save(f, exif=exif, quality=95)
    im = load_rgb(f)
    assert im.size == ((40, 80) if turned else (80, 40))
    with Image.open(f) as raw:
        from PIL import ImageOps
        want = np.asarray(ImageOps.exif_transpose(raw).convert("RGB")).astype(int)
    assert np.abs(np.asarray(im).astype(int) - want).max() <= 2


def test_a_colour_profile_other_than_srgb_is_converted_and_srgb_left_alone(tmp_path, monkeypatch):
    import numpy as np
    from PIL import ImageCms

    from pipeline.images import decode

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    f = tmp_path / "srgb.jpg"
    Image.new("RGB", (32, 32), (200, 100, 50)).save(f, icc_profile=srgb, quality=95)
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (32, 32), (200, 100, 50)).save(plain, quality=95)
    assert np.array_equal(np.asarray(load_rgb(f)), np.asarray(load_rgb(plain)))  # sRGB: untouched
    seen = []
    monkeypatch.setattr(ImageCms, "getProfileDescription", lambda p: "Display P3")  # as a phone's says
    monkeypatch.setattr(ImageCms, "profileToProfile", lambda im, *a, **k: seen.append(a) or im.convert("RGB"))
    decode.load_rgb(f)
    assert len(seen) == 1  # another profile: converted to sRGB (by littlecms)
