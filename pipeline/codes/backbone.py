"""A backbone by name (a torchvision classification model, or `timm/<name>`: codes.timm_models),
its weights, and the trunk that emits CNN codes.

A torchvision trunk is the whole model with its last nn.Linear (the ImageNet classifier) replaced
by Identity, so its output is the penultimate "CNN code" (512-d for resnet18, 1280-d for
mobilenet_v2); a timm trunk is the model with `reset_classifier(0)`, the pooled pre-logits.
"""
from __future__ import annotations

import contextlib
import difflib
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from .. import UserError
from ..codes import timm_models
from ..codes.weights import Weights


@dataclass
class Backbone:
    trunk: nn.Module  # eval mode, gradients off, last Linear replaced by Identity
    name: str
    dim: int
    weights: Weights
    weights_id: str  # "ResNet18_Weights.IMAGENET1K_V1", "none(seed=0)" or "file:<name>"


def list_backbones(pattern: str = "") -> list[str]:
    """torchvision's classification models, then timm's as timm/<name>; a pattern filters both
    (fnmatch wildcards; a plain word matches anywhere in the name)."""
    import fnmatch

    pat = pattern if not pattern or any(c in pattern for c in "*?[") else f"*{pattern}*"
    tv = [n for n in torchvision.models.list_models(module=torchvision.models) if not pat or fnmatch.fnmatch(n, pat)]
    return tv + timm_models.names(pattern)


def check_name(name: str) -> None:
    if timm_models.is_timm(name):
        return timm_models.check_name(name)
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"unknown backbone {name!r}{hint}; any torchvision classification model works, e.g. "
                        "resnet18, mobilenet_v2, or timm/<name> (`cnncodes features --list-backbones PATTERN`)")


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise UserError(f"{type(model).__name__} has no nn.Linear classifier to replace; pick another backbone")
    return found[-1]


def _set_module(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _load_state_dict_file(path: Path) -> dict:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"could not read weights file {str(path)!r}: {type(e).__name__}: {e}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{str(path)!r} is not a state_dict (a dict of tensors)")
    return sd


def _from_file(name: str, weights: Weights) -> nn.Module:
    weights.sha256  # noqa: B018 - a missing file is a UserError here, before the model is built
    model = torchvision.models.get_model(name, weights=None)
    head, _ = _last_linear(model)
    missing, unexpected = model.load_state_dict(_load_state_dict_file(weights.path), strict=False)
    missing = [k for k in missing if not k.startswith(head + ".")]
    if missing or unexpected:
        raise UserError(
            f"weights {weights.path.name!r} do not fit {name}: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]} (only the classifier '{head}' may be missing)")
    return model


def build_model(name: str, weights: Weights) -> tuple[nn.Module, str]:
    """The full torchvision model with `weights`; returns (model, weights_id)."""
    check_name(name)
    if weights.kind == "none":
        torch.manual_seed(weights.seed)  # random init is a function of the seed, recorded in the id
        return torchvision.models.get_model(name, weights=None), weights.key
    if weights.kind == "file":
        return _from_file(name, weights), weights.key
    w = weights.resolve(name)
    try:
        model = torchvision.models.get_model(name, weights=w)  # torch.hub download + cache
    except Exception as e:  # URLError, SSL, HTTP: all mean the file could not be fetched
        raise UserError(f"could not download {w} ({type(e).__name__}: {e}); offline, pass --weights PATH "
                        "to a local state_dict") from None
    return model, str(w)


def load_backbone(name: str = "resnet18", weights: Weights | str = "DEFAULT", seed: int = 0) -> Backbone:
    """The frozen trunk of `name` with `weights` (a Weights, or an argument to parse with `seed`)."""
    weights = weights if isinstance(weights, Weights) else Weights.parse(weights, seed)
    if timm_models.is_timm(name):
        trunk, wid, dim = timm_models.build(name, weights, _load_state_dict_file)
        return Backbone(trunk.eval().requires_grad_(False), name, dim, weights, wid)
    model, wid = build_model(name, weights)
    head, linear = _last_linear(model)
    _set_module(model, head, nn.Identity())
    model.eval().requires_grad_(False)
    return Backbone(model, name, linear.in_features, weights, wid)


def fold_batchnorm(trunk: nn.Module) -> tuple[nn.Module, bool]:
    """A copy of an eval-mode trunk with each BatchNorm folded into the convolution before it.

    The same function up to float rounding (~1e-6), and it runs 1.05-1.8x faster on CPU
    (mobilenet_v2: 40 -> 73 images/s on 2 cores). torch.fx does the graph surgery; a model fx
    cannot trace is returned unchanged, with False. A timm model (or a classifier around one) is
    traced with timm's own fx settings (timm_models.fold_batchnorm), so its BatchNormAct2d folds too.
    """
    from torch.fx.experimental.optimization import fuse

    if timm_models.uses_timm(trunk):
        return timm_models.fold_batchnorm(trunk)
    try:
        return fuse(trunk.eval()), True
    except Exception:  # untraceable control flow: keep the plain trunk
        return trunk, False


def compiled(module: nn.Module, device_type: str) -> nn.Module:
    """torch.compile(module) with static shapes (a graph per batch size): on a GPU in
    "reduce-overhead" mode, i.e. CUDA graphs, since a batch-16 step is launch-bound there; inductor's
    default elsewhere. Parameters stay shared with `module`, so its state_dict is unchanged. On a
    GPU a compiled call's outputs live in the graph's memory until the next call: clone what is kept.
    """
    return torch.compile(module, mode="reduce-overhead" if device_type == "cuda" else None, dynamic=False)


class FirstCalls:
    """Times the first calls of a compiled model at each key (mode, batch shape) and keeps that
    time apart from the work (GPU synchronised): the first call compiles a graph, and on a GPU the
    second records its CUDA graph (reduce-overhead mode), so there the first two count."""

    def __init__(self, on: bool, device_type: str):
        self.on, self.cuda, self.calls, self.seconds = on, device_type == "cuda", {}, 0.0
        self.first = 2 if self.cuda else 1

    @contextlib.contextmanager
    def __call__(self, key):
        if not self.on or self.calls.get(key, 0) >= self.first:
            yield
            return
        t0 = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        self.calls[key] = self.calls.get(key, 0) + 1

    def mark(self) -> tuple[float, float]:
        """(now, compile seconds so far), for `since`."""
        return time.perf_counter(), self.seconds

    def since(self, mark: tuple[float, float]) -> float:
        """Seconds since `mark` less the compiling done in between: the work's own time."""
        return time.perf_counter() - mark[0] - (self.seconds - mark[1])


def classifier(backbone: Backbone, num_classes: int) -> nn.Module:
    """Trunk + a fresh Linear head: the model that fine-tuning trains and `predict` reloads."""
    head = nn.Linear(backbone.dim, num_classes)
    return nn.Sequential(OrderedDict(trunk=backbone.trunk, head=head))
