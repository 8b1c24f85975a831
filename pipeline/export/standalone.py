"""Label images with the model.onnx beside this script. Needs only onnxruntime, numpy and Pillow.

Usage: python predict.py IMAGE_OR_DIR_OR_MANIFEST... [--model FILE.onnx] [--batch-size 32] [--reject]

Written by `cnncodes export` (this file is pipeline/export/standalone.py, copied). The recipe is
read from the ONNX file's metadata: decode with Pillow (JPEGs with its draft mode when the recipe
says so), any mode to RGB (16-bit scaled to 8 bits), turned upright by its EXIF orientation and
converted to sRGB from an embedded colour profile, as cnncodes decodes it; the shorter side resized
to `resize` with Pillow's filter of that name (what
torchvision's Resize does to a PIL image), a centre crop of `crop` (torchvision's rounding and
padding). The model takes that uint8 crop and normalises it itself.

Prints what `cnncodes predict` prints: a `path<TAB>class<TAB>probability` header and one row per
image (`margin` instead of `probability` for a head without probabilities, LinearSVC: the winning
class's decision value), then a summary line on stderr. With --reject each row keeps its class and
adds a `status` field: `unknown` when the image's `distance` output (the run's rejection rule, in
the file) exceeds the threshold in the metadata, else `known`, as `cnncodes predict --reject` does.
Exit code 1 when an image could not be read
(each is named on stderr), 2 on a bad argument or model file.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps

UNKNOWN, KNOWN = "unknown", "known"  # the status of an image the --reject rule turns away, or keeps (runs.scoring)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
FILTERS = {"nearest": Image.Resampling.NEAREST, "nearest-exact": Image.Resampling.NEAREST,
           "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
           "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING, "lanczos": Image.Resampling.LANCZOS}


class Refused(Exception):
    """A bad argument or model file: one line on stderr, exit code 2."""


class BadImage(Exception):
    """A file that cannot be used as an image; the message says why."""


def to_8bit(im):
    """16-bit grayscale scaled to 8 bits (Pillow's convert("RGB") would clip it at 255)."""
    if not (im.mode.startswith("I;16") or im.mode == "I"):
        return im
    a = np.asarray(im).astype(np.float64)
    if im.mode.startswith("I;16") or a.max() > 255:
        a = a / 257.0
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def to_srgb(im):
    """`im` in sRGB when it carries another colour profile; as it is otherwise (or when unreadable)."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK", "L"):
        return im
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(src).lower().replace(" ", ""):
            return im
        return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (OSError, ValueError, ImageCms.PyCMSError):
        return im


def load_rgb(path, draft=None):
    """The image fully decoded, as RGB; BadImage with the reason when it cannot be (a named pipe or
    device is not opened: it would wait for ever)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise BadImage("not a regular file (a named pipe, device or folder): skipped")
        with Image.open(path) as im:
            if draft:
                im.draft("RGB", (draft, draft))  # JPEG: decode at 1/2..1/8 scale, never below `draft`
            im.load()
            return to_srgb(ImageOps.exif_transpose(to_8bit(im))).convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        msg = str(e).replace(str(path), "").strip(" :'\"") or type(e).__name__
        raise BadImage(f"undecodable: {msg}") from None


def resized_size(w: int, h: int, size: int) -> tuple[int, int]:
    """(width, height) with the shorter side `size`, the longer truncated as torchvision does."""
    if w <= h:
        return size, int(size * h / w)
    return int(size * w / h), size


def centre_crop(a: np.ndarray, crop: int) -> np.ndarray:
    """H x W x 3 -> crop x crop x 3: torchvision's CenterCrop (zero padding when smaller)."""
    h, w = a.shape[:2]
    if crop > h or crop > w:
        ph, pw = max(crop - h, 0), max(crop - w, 0)
        a = np.pad(a, ((ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2), (0, 0)))
        h, w = a.shape[:2]
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    return a[top:top + crop, left:left + crop]


def preprocess(path, recipe: dict) -> np.ndarray:
    """One image file -> uint8 3 x crop x crop, as the recipe says."""
    im = load_rgb(path, recipe["draft"])
    size = resized_size(im.width, im.height, recipe["resize"])
    if size != im.size:
        im = im.resize(size, resample=recipe["filter"])
    return np.ascontiguousarray(centre_crop(np.asarray(im), recipe["crop"]).transpose(2, 0, 1))


def recipe_of(meta: dict) -> dict:
    """The preprocessing recipe from the ONNX metadata_props."""
    try:
        interp = meta["interpolation"]
        if interp not in FILTERS:
            raise Refused(f"the model's interpolation {interp!r} is not one Pillow has")
        resize = int(meta["resize"])
        return {"resize": resize, "crop": int(meta["crop"]), "filter": FILTERS[interp],
                "draft": resize if meta["decode"].startswith("PIL draft") else None,
                "classes": json.loads(meta["classes"]), "score": meta["score"],
                "reject": json.loads(meta["reject"]) if "reject" in meta else None}
    except (KeyError, ValueError) as e:
        raise Refused(f"the model file's metadata lacks the cnncodes recipe ({type(e).__name__}: {e})") from None


def list_images(args) -> list[Path]:
    """Image files, folders (searched recursively, sorted) and CSV manifests (their path column,
    relative to the manifest's folder), in the order given: as cnncodes predict lists them."""
    out = []
    for a in map(Path, args):
        if a.suffix.lower() == ".csv" and a.is_file():
            with open(a, newline="", encoding="utf-8-sig") as fh:
                rows = csv.DictReader(fh)
                if "path" not in (rows.fieldnames or []):
                    raise Refused(f"manifest {str(a)!r} has no 'path' column")
                out += [Path(r["path"]) if Path(r["path"]).is_absolute() else a.parent / r["path"] for r in rows]
        elif a.is_dir():
            out += sorted(p for p in a.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
        elif a.is_file():
            out.append(a)
        else:
            raise Refused(f"{str(a)!r} does not exist")
    if not out:
        raise Refused("no images found in " + ", ".join(map(str, args)))
    return out


def open_model(path: Path):
    """(onnxruntime session, recipe)."""
    import onnxruntime as ort

    if not path.is_file():
        raise Refused(f"model file {str(path)!r} does not exist")
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for a damaged file
        raise Refused(f"{str(path)!r} is not a readable ONNX model ({type(e).__name__})") from None
    return sess, recipe_of(sess.get_modelmeta().custom_metadata_map)


def label(paths: list[Path], sess, recipe: dict, batch_size: int, reject: bool = False):
    """(path, class or None, score or why, status) per image, in order, a batch in memory at a time;
    the status is "" without `reject`, else "unknown" when the rule's distance exceeds its threshold
    and "known" when not."""
    classes, names = recipe["classes"], ["scores", "distance"] if reject else ["scores"]
    limit = float(recipe["reject"]["threshold"]) if reject else float("inf")
    if reject and (isinstance(recipe["reject"]["threshold"], (bool, str)) or not np.isfinite(limit)):
        raise Refused(f"the model's rejection threshold {recipe['reject']['threshold']!r} is not a finite number")
    for i in range(0, len(paths), batch_size):
        crops, why = {}, {}
        for k, p in enumerate(paths[i:i + batch_size]):
            try:
                crops[k] = preprocess(p, recipe)
            except BadImage as e:
                why[k] = str(e)
        out = sess.run(names, {"image": np.stack(list(crops.values()))}) if crops else [[], []]
        scores, far = dict(zip(crops, out[0])), dict(zip(crops, out[-1]))
        for k, p in enumerate(paths[i:i + batch_size]):
            if k in why:
                yield str(p), None, why[k], ""
            else:
                status = (UNKNOWN if far[k] > limit else KNOWN) if reject else ""
                yield str(p), classes[int(scores[k].argmax())], float(scores[k].max()), status


def main(argv=None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description="Label images with an ONNX model exported by cnncodes.")
    ap.add_argument("images", nargs="+", help="image files, folders (searched recursively) or CSV manifests")
    ap.add_argument("--model", type=Path, default=here / "model.onnx", help="the .onnx file (default: beside me)")
    ap.add_argument("--batch-size", type=int, default=32, help="images per batch")
    ap.add_argument("--reject", action="store_true", help="add a status column: 'unknown' when an image is far "
                    "from every training image (the rule and threshold the file holds, as cnncodes predict --reject)")
    args = ap.parse_args(argv)
    try:
        if args.batch_size < 1:
            raise Refused(f"--batch-size must be at least 1 (got {args.batch_size})")
        paths = list_images(args.images)
        sess, recipe = open_model(args.model)
        if args.reject and not recipe["reject"]:
            raise Refused(f"{str(args.model)!r} holds no rejection rule (exported with --no-reject, or from a run "
                          "that records none)")
    except Refused as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 2
    print(f"path\tclass\t{recipe['score']}" + "\tstatus" * args.reject)
    good = bad = far = 0
    for path, cls, v, status in label(paths, sess, recipe, args.batch_size, args.reject):
        if cls is None:
            print(f"{path}: not labelled: {v}", file=sys.stderr)
            bad += 1
        else:
            print(f"{path}\t{cls}\t{v:.4f}" + (f"\t{status}" if status else ""))
            good += 1
            far += status == UNKNOWN
    print(f"labelled {good} of {good + bad} images with {args.model}" + (f"; {bad} could not be read" if bad else "")
          + (f"; {far} far from every training image (status unknown)" if args.reject else ""), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
