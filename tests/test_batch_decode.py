"""Batched decode (torchvision.io.decode_jpeg on the extraction device, PIL for the rest) against
the PIL path: the same skip list, nearly the same pixels and codes, a different fingerprint. Runs
on the CPU; the CUDA test skips cleanly without a GPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import HYMENOPTERA, MOBILENET, make_image, needs_shared
from pipeline.images.batch_decode import batches, decode_batch
from pipeline.codes.store import read_codes
from pipeline.images.transforms import Preprocess
from pipeline.images.scan import scan
from pipeline.images.datasets import eval_images
from pipeline.codes.extract import Extraction
from pipeline.stages.features import Config, extract
from pipeline.codes.weights import Weights

PRE = Preprocess(resize=40, crop=32)


@pytest.fixture
def odd_folder(tmp_path):
    """One class of ordinary JPEGs, one of everything else photos come as."""
    root = tmp_path / "odd"
    for i in range(4):
        make_image(root / "train" / "plain" / f"{i}.jpg", (200, 60, 60), size=(64, 48), seed=i)
    d = root / "train" / "odd"
    make_image(d / "a.png", (60, 60, 200), size=(50, 70))
    make_image(d / "b.jpg", (60, 200, 60), size=(64, 48), mode="CMYK")
    make_image(d / "c.gif", (60, 60, 200), size=(48, 48), mode="P")
    make_image(d / "grey.jpg", (90, 90, 90), size=(60, 45), mode="L")
    good = (d / "b.jpg").read_bytes()
    whole = (root / "train" / "plain" / "0.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(whole[:300])  # cut in the header
    (d / "half.jpg").write_bytes(whole[:len(whole) // 2])  # cut in the image data
    (d / "text.jpg").write_bytes(b"not an image at all")
    (d / "png-named.jpg").write_bytes((d / "a.png").read_bytes())
    assert good[:3] == b"\xff\xd8\xff"
    return root


def _pil_path(root, recs):
    ds = eval_images(root, recs, PRE)
    return [ds[i] for i in range(len(recs))]


def test_the_skip_list_and_the_pixels_match_the_pil_path(odd_folder):
    recs = scan(odd_folder, ("train",)).splits["train"].items
    files = [(odd_folder / r.path, (odd_folder / r.path).read_bytes()) for r in recs]
    x, reasons, how = decode_batch(files, PRE, "cpu")
    pil = _pil_path(odd_folder, recs)
    assert reasons == [why for _, why in pil]  # the same files skipped, for the same reasons
    assert {r.path.split("/")[-1] for r, why in zip(recs, reasons) if why} == {"truncated.jpg", "half.jpg", "text.jpg"}
    by_name = {r.path.split("/")[-1]: h for r, h in zip(recs, how)}
    assert by_name["0.jpg"] == by_name["b.jpg"] == by_name["grey.jpg"] == "batched"
    assert by_name["a.png"] == by_name["png-named.jpg"] == "pil"
    for (img, why), got in zip(pil, x):
        if not why:  # different resize code, same picture: a few grey levels apart on average
            assert (img.float() - got.float()).abs().mean() < 6


def test_batches_yield_what_the_dataloader_would(odd_folder):
    recs = scan(odd_folder, ("train",)).splits["train"].items
    order = [[0, 1, 2], [3, 4, 5], list(range(6, len(recs)))]
    got = list(batches(odd_folder, recs, order, PRE, torch.device("cpu"), threads=2))
    assert [len(r) for _, r in got] == [3, 3, len(recs) - 6] and all(x.dtype == torch.uint8 for x, _ in got)
    assert sum((r for _, r in got), []) == [why for _, why in _pil_path(odd_folder, recs)]


def test_the_decoder_is_part_of_the_fingerprint(folder):
    s = scan(folder)
    w = Weights.parse("none", 0)
    fp = {d: Extraction(s, "resnet18", w, PRE, "cpu", decode=d).inputs for d in ("cpu", "torchvision", "auto")}
    assert fp["cpu"] != fp["torchvision"] and fp["auto"] == fp["cpu"]  # auto on a CPU is PIL
    assert "decode_jpeg on cpu" in fp["torchvision"]["transform"]["decode"]
    assert Extraction(s, "resnet18", w, PRE, "cuda").inputs["transform"]["decode"] \
        .startswith("torchvision decode_jpeg on cuda")


def test_extraction_with_batched_decode_gives_nearly_the_same_codes(odd_folder, tmp_path):
    kw = dict(data=odd_folder, backbone="resnet18", weights="none", device="cpu", workers=0, resize=40, crop=32,
              interpolation="bilinear", splits="train")
    a = read_codes(extract(Config(**kw, out=str(tmp_path / "pil.h5"), decode="cpu"))).splits["train"]
    b = read_codes(extract(Config(**kw, out=str(tmp_path / "tv.h5"), decode="torchvision"))).splits["train"]
    assert a.paths == b.paths and a.skipped == b.skipped and len(a.skipped) == 4
    cos = (a.codes * b.codes).sum(1) / np.linalg.norm(a.codes, axis=1) / np.linalg.norm(b.codes, axis=1)
    assert cos.min() > 0.98, cos


@needs_shared
def test_hymenoptera_batched_decode_matches_pil_accuracy(hymenoptera_codes, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tv = read_codes(extract(Config(data=HYMENOPTERA, backbone="mobilenet_v2", weights=str(MOBILENET), device="cpu",
                                   out=str(tmp_path / "tv.h5"), decode="torchvision")))
    pil = read_codes(hymenoptera_codes)
    accs = []
    for c in (pil, tv):
        tr, va = c.splits["train"], c.splits["val"]
        accs.append(make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=5000))
                    .fit(tr.codes, tr.labels).score(va.codes, va.labels))
    assert abs(accs[0] - accs[1]) <= 1 / 153 + 1e-9, accs  # within one val image
    for split in ("train", "val"):
        a, b = pil.splits[split], tv.splits[split]
        assert a.paths == b.paths and a.skipped == b.skipped
        cos = (a.codes * b.codes).sum(1) / np.linalg.norm(a.codes, axis=1) / np.linalg.norm(b.codes, axis=1)
        print(f"{split}: cosine PIL vs batched decode: mean {cos.mean():.4f}, min {cos.min():.4f}")
        assert cos.mean() > 0.97


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nvJPEG)")
def test_gpu_decode_matches_cpu_decode(odd_folder):
    recs = scan(odd_folder, ("train",)).splits["train"].items
    files = [(odd_folder / r.path, (odd_folder / r.path).read_bytes()) for r in recs]
    xc, rc, _ = decode_batch(files, PRE, "cpu")
    xg, rg, _ = decode_batch(files, PRE, "cuda")
    assert rc == rg and xg.device.type == "cuda"
    assert (xc.float() - xg.cpu().float()).abs().mean() < 3


def test_a_device_error_is_raised_not_taken_for_a_bad_file(odd_folder, monkeypatch):
    import pipeline.images.batch_decode as B

    def out_of_memory(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory")
    monkeypatch.setattr(B, "decode_jpeg", out_of_memory)
    recs = scan(odd_folder, ("train",)).splits["train"].items
    files = [(odd_folder / r.path, (odd_folder / r.path).read_bytes()) for r in recs]
    with pytest.raises(torch.OutOfMemoryError):
        decode_batch(files, PRE, "cpu")


def test_batched_decode_turns_a_phone_photo_upright_as_pil_does(tmp_path):
    a = np.zeros((48, 96, 3), np.uint8)
    a[:, :48] = (220, 30, 30)
    a[:, 48:] = (30, 30, 220)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: stored landscape, shown portrait
    f = tmp_path / "phone.jpg"
    Image.fromarray(a).save(f, exif=exif, quality=95)
    pre = Preprocess(resize=40, crop=32)
    x, why, how = decode_batch([(f, f.read_bytes())], pre, "cpu")
    pil, _, _ = decode_batch([(f, None)], pre, "cpu")  # no bytes: the PIL path
    assert how == ["batched"] and why == [""]
    assert (x.int() - pil.int()).abs().float().mean() < 8  # same picture, upright in both
