"""Extract CNN codes with a frozen backbone and cache them to HDF5 (resumable, validated).

Usage: cnncodes features --data DIR --backbone resnet18 --weights DEFAULT|none|PATH --out FILE.h5
       cnncodes features --list-backbones [PATTERN]     (torchvision names, then timm/<name>)

The settings become one `codes.extract.Extraction`; the cache is checked first, from its
fingerprint (names, the weight file's sha256, the transform, precision, library versions, the
image list): a hit builds no network, and with a weights file or random weights imports neither
torch nor torchvision (enum weights need torchvision to name their transform).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path

from .. import UserError
from ..codes.extract import Extraction, cache_hit, write_plain
from ..codes.view_codes import views_wanted, add_views
from ..codes.settings import OnImages
from ..codes.timm_models import is_timm
from ..codes.weights import Weights, features_path
from ..core import dist
from ..core.cli import command_line, opt, parse_splits, positive
from ..core.devices import PRECISION_HELP, PRECISIONS, device_type
from ..core.files import exclusive
from ..images.scan import ImageFolderScan, scan
from ..images.transforms import Preprocess
from ..images.exclude import apply_exclusions
from ..images.splits import parse_fractions
from ..images.views import MAX_TTA

# each augmented view is a backbone pass per train image and N x D floats more in the file (and in
# classify's memory): 1000 views of a 2048-d code are 8 MB per image, far past where new random
# crops of one image still teach a head anything; a larger count is a typo, not a plan
MAX_VIEWS = 1000


@dataclass(frozen=True)
class Config(OnImages):
    out: str = opt("", "output .h5; empty means features/<dataset>/<backbone>-<weights>.h5")
    resize: int = opt(0, "eval transform: resize the shorter side to this; 0 = the weights' own (torchvision enum "
                         "weights carry it, e.g. 232 for mobilenet_v2), else 256")
    crop: int = opt(0, "eval transform: centre crop size; 0 = the weights' own, else 224")
    interpolation: str = opt("", "eval transform: resize interpolation; empty = the weights' own, else bilinear",
                             ("", "bilinear", "bicubic", "nearest"))
    fast_decode: bool = opt(True, "let the JPEG decoder downscale large images while decoding (recorded)")
    decode: str = opt("auto", "cpu: PIL in --workers processes; gpu: JPEGs decoded in batches by nvJPEG on the GPU, "
                              "PIL for the rest; torchvision: the gpu path on whatever --device is (libjpeg-turbo "
                              "on a CPU); auto: gpu on a GPU, else cpu", ("auto", "cpu", "gpu", "torchvision"))
    precision: str = opt("auto", PRECISION_HELP, PRECISIONS)
    compile: bool = opt(False, "torch.compile the trunk (CUDA graphs on a GPU); the compile time is reported and "
                               "recorded apart (compile_seconds), and compiled codes are cached apart")
    shard_size: int = opt(512, "images per resumable shard (rounded up to a multiple of --batch-size)")
    force: bool = opt(False, "recompute even when an existing file was made from other inputs")
    exclude: str = opt("", "a list of image paths to leave out, one per line (audit's exclude.txt): recorded as "
                           "skipped, and part of the fingerprint")
    views: int = opt(0, "augmented views per train image (RandomResizedCrop + flip, seeded per image and view), "
                        "stored beside the codes; adding views to a file computes only the new ones")
    list_backbones: str = opt("", "print the backbones --backbone can name (torchvision's, then timm/<name>), "
                                  "filtered by a pattern (resnet, '*lite*'), and exit", nargs="?", const="*")
    tta: int = opt(1, f"test-time views per val image: 1 = the centre crop only, 5 = five crops, 10 = ten crops, "
                      f"up to {MAX_TTA}")

    def __post_init__(self):
        super().__post_init__()
        positive(shard_size=self.shard_size, tta=self.tta)
        if not 0 <= self.views <= MAX_VIEWS or self.tta > MAX_TTA:
            raise UserError(f"--views must be 0 to {MAX_VIEWS} and --tta 1 to {MAX_TTA} (got {self.views}, {self.tta})")
        if self.resize < 0 or self.crop < 0 or (self.resize and self.crop > self.resize):
            raise UserError(f"--resize and --crop must be 0 (the weights' own) or sizes with crop <= resize "
                            f"(got {self.resize}, {self.crop})")

    def preprocess(self, weights: Weights) -> Preprocess:
        """The eval transform: the flags where given, the rest from the weights (torchvision is
        imported for enum weights only when a flag is left to them)."""
        given = {k: v for k, v in (("resize", self.resize), ("crop", self.crop), ("interpolation", self.interpolation))
                 if v}
        # a timm backbone keeps its pretrained_cfg's mean and std whatever the flags say of sizes
        flags = len(given) == 3 and not is_timm(self.backbone)
        base = Preprocess(source="flags") if flags else weights.preprocess(self.backbone)
        pre = replace(base, **given, source=base.source + (" and flags" if given and len(given) < 3 else ""))
        if pre.crop > pre.resize:
            raise UserError(f"the eval transform would crop {pre.crop} px from images resized to {pre.resize}; "
                            "give --crop no larger than --resize")
        return pre

    @property
    def out_path(self) -> Path:
        return Path(self.out) if self.out else features_path(self.data, self.backbone, Weights.parse(self.weights))


def extract(cfg: Config) -> Path:
    """Run the stage; returns the path of the complete, validated features file."""
    out = cfg.out_path
    if out.is_dir():
        raise UserError(f"--out {str(out)!r} is a folder; give the path of a .h5 file")
    # a bad folder is reported before anything is created
    s = scan(cfg.data, parse_splits(cfg.splits), parse_fractions(cfg.split))
    if s.rule:
        print(s.split_note())
    if cfg.exclude:
        s = apply_exclusions(s, cfg.exclude)
    out.parent.mkdir(parents=True, exist_ok=True)
    ranks = dist.from_env()  # under torchrun: this process's rank; else rank 0 of 1
    with exclusive(out, "features run") if ranks.main else contextlib.nullcontext():
        dist.init(ranks, device_type(cfg.device))
        try:
            return _extract(cfg, out, s, ranks)
        finally:
            dist.close(ranks)


def job_for(cfg: Config, s: ImageFolderScan) -> Extraction:
    """The extraction these settings ask for on the scanned images."""
    weights = Weights.parse(cfg.weights, cfg.seed)
    return Extraction(s, cfg.backbone, weights, cfg.preprocess(weights), device_type(cfg.device), cfg.decode,
                      cfg.compile, cfg.fast_decode, cfg.batch_size, cfg.shard_size, cfg.workers, cfg.seed,
                      command_line(cfg, "features"), cfg.precision)


def _extract(cfg: Config, out: Path, s: ImageFolderScan, ranks: dist.Ranks = dist.Ranks()) -> Path:
    from ..codes.autoprec import for_extraction

    job = job_for(cfg, s)
    print(f"eval transform: {job.pre.describe()}")
    job = for_extraction(out, job, cfg.force, ranks)
    if not cache_hit(out, job, cfg.force):
        write_plain(out, job, ranks, cfg.force)
    wanted = views_wanted(cfg.views, cfg.tta, list(s.splits))
    if wanted and ranks.main:  # views: on rank 0 alone
        add_views(out, job, wanted, cfg.force)
    dist.barrier(ranks)
    return out


def run(cfg: Config) -> None:
    if cfg.list_backbones:
        from ..codes.backbone import list_backbones

        names = list_backbones("" if cfg.list_backbones == "*" else cfg.list_backbones)
        print("\n".join(names) if names else f"no backbone matches {cfg.list_backbones!r}")
        return
    extract(cfg)
