"""Which backbone weights: the user's argument, parsed once into one small value.

`Weights.parse(arg)` gives everything the project derives from `--weights`: its kind (enum, none,
file), a short tag for file names, the key that enters the cache fingerprint, and for a file its
sha256. Parsing imports neither torch nor torchvision, so a cache hit can be decided before any
network exists; only `resolve` (the torchvision enum member) imports torchvision.

The Makefile asks this module for its default paths instead of re-implementing them:
    python -m pipeline.codes.weights features-path [--find] DATA BACKBONE WEIGHTS
(`--find`: the file a stage that reads codes uses when BACKBONE and WEIGHTS were left at their
defaults, `found_features`).
"""
from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import UserError
from ..core.files import plain_name, sha256_file

FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


@dataclass(frozen=True)
class Weights:
    arg: str  # as the user wrote it: DEFAULT, IMAGENET1K_V2, ResNet18_Weights.IMAGENET1K_V1, none, a path
    kind: str  # "enum" (torchvision's weights, downloaded), "none" (seeded random init) or "file"
    seed: int = 0  # the init of kind "none"

    @classmethod
    def parse(cls, arg: str, seed: int = 0) -> Weights:
        arg = str(arg)
        if arg.lower() == "none":
            return cls("none", "none", seed)
        if Path(arg).suffix in FILE_SUFFIXES or "/" in arg or "\\" in arg or Path(arg).exists():
            return cls(arg, "file", seed)
        if not re.fullmatch(r"[A-Za-z0-9_.]+", arg):
            raise UserError(f"--weights {arg!r} is neither DEFAULT, none, a weights enum name nor a file path")
        return cls(arg, "enum", seed)

    @property
    def member(self) -> str:
        """The enum member's name: ResNet18_Weights.IMAGENET1K_V2 -> IMAGENET1K_V2, default -> DEFAULT."""
        name = self.arg.split(".")[-1]
        return "DEFAULT" if name.upper() == "DEFAULT" else name

    @property
    def tag(self) -> str:
        """Short name for file names: a file's stem, else the enum member (V1 and V2 never share a file)."""
        return Path(self.arg).stem if self.kind == "file" else self.member if self.kind == "enum" else "none"

    @property
    def path(self) -> Path | None:
        return Path(self.arg) if self.kind == "file" else None

    @functools.cached_property
    def sha256(self) -> str | None:
        """The weight file's sha256 (None for enum and none weights); UserError when it is missing."""
        if self.kind != "file":
            return None
        if not self.path.is_file():
            raise UserError(f"weights file {self.arg!r} does not exist")
        return sha256_file(self.path)

    @property
    def key(self) -> str:
        """What identifies the weights in a cache fingerprint, known without torchvision: the file
        name (its sha256 is recorded beside it), the seed of a random init, or the enum member,
        whose meaning is fixed by the torchvision version that is recorded too."""
        if self.kind == "file":
            return f"file:{self.path.name}"
        return f"none(seed={self.seed})" if self.kind == "none" else f"enum:{self.member}"

    def resolve(self, backbone: str):
        """torchvision's WeightsEnum member for kind "enum"; UserError naming the valid choices."""
        import torchvision

        enum = torchvision.models.get_model_weights(backbone)
        try:
            return enum.DEFAULT if self.member == "DEFAULT" else enum[self.member]
        except KeyError:
            raise UserError(f"unknown weights {self.arg!r} for {backbone}: use DEFAULT, none, one of "
                            f"{[w.name for w in enum]}, or a path to a state_dict") from None

    def preprocess(self, backbone: str):
        """The eval transform these weights were trained with: torchvision's enum weights carry it
        (`weights.transforms()`: mobilenet_v2 resizes to 232, efficientnet_b3 uses 320/300
        bicubic); a timm backbone's is its pretrained_cfg's, whatever the weights (codes.timm_models);
        a torchvision file or random weights get the tutorial's 256/224 bilinear."""
        from ..images.transforms import Preprocess

        if backbone.startswith("timm/"):
            from .timm_models import preprocess

            return preprocess(backbone, self)
        if self.kind != "enum":
            return Preprocess(source=f"default for {self.kind} weights")
        member = self.resolve(backbone)
        t = member.transforms()
        return Preprocess(t.resize_size[0], t.crop_size[0], t.interpolation.value, tuple(t.mean), tuple(t.std),
                          f"{member}.transforms()")

    @classmethod
    def from_record(cls, weights_id: str, weights_arg: str, override: str = "") -> Weights:
        """The weights a run recorded (`weights_id` as Backbone.weights_id wrote it), to rebuild
        the exact backbone; `override` replaces the path of a file that has moved."""
        if weights_id.startswith("none(seed="):
            return cls("none", "none", int(weights_id[len("none(seed="):-1]))
        if weights_id.startswith("file:"):
            return cls(override or weights_arg, "file")
        return cls(weights_id.split(".")[-1], "enum")


def features_path(data: Path | str, backbone: str, weights: Weights) -> Path:
    """The default cache file: features/<dataset>/<backbone>-<weights tag>.h5 (a manifest's dataset
    is its file name without .csv). The dataset is one plain folder name, whatever the data is
    called: a manifest named `...csv` (stem '..') must not send the cache to features/../."""
    data = Path(data)
    name = data.stem if data.suffix.lower() == ".csv" else data.resolve().name
    name, file = plain_name(name), plain_name(f"{backbone}-{weights.tag}")
    return Path("features") / (name if name.strip(".") else "dataset") / f"{file}.h5"


def found_features(data: Path | str, backbone: str, weights: Weights) -> Path:
    """The features file a stage that reads codes (classify, audit) uses when the user named no
    backbone or weights: the one for `backbone` and `weights` when it exists, else the dataset's
    only features file, whatever it was made with; several and none of them the named one: a
    UserError listing them. None at all: the named path (the stage then says it is missing)."""
    want = features_path(data, backbone, weights)
    if want.is_file():
        return want
    found = sorted(p for p in want.parent.glob("*.h5") if p.is_file())
    if len(found) > 1:
        raise UserError(f"{want.as_posix()} does not exist and {want.parent.as_posix()}/ holds {len(found)} features "
                        f"files: {', '.join(p.name for p in found)}; say which with BACKBONE= and WEIGHTS= "
                        f"(as made) or FEATURES=")
    return found[0] if found else want


USAGE = "usage: python -m pipeline.codes.weights features-path [--find] DATA BACKBONE WEIGHTS\n"


def main(argv: list[str]) -> int:
    find = argv[1:2] == ["--find"]
    if argv[:1] != ["features-path"] or len(argv) != 4 + find:
        sys.stderr.write(USAGE)
        return 2
    data, backbone, weights = argv[1 + find:]
    try:
        path = (found_features if find else features_path)(data, backbone, Weights.parse(weights))
    except UserError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    print(path.as_posix())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
