"""timm's backbones by name: `timm/<name>` (e.g. timm/tf_efficientnet_lite0, timm/convnext_tiny).

Each timm name carries a `pretrained_cfg` (input size, crop_pct, interpolation, mean, std); the
eval transform comes from it through timm's own `resolve_data_config`, whatever the weights are
(timm's download, a local state_dict or a random init), so codes are never made with another
model's normalisation. The trunk is the model with `reset_classifier(0)`: its output is the pooled
pre-logits vector (`forward_head(pre_logits=True)`), the code.

Weights: DEFAULT (or a tag, e.g. in1k) is timm's pretrained file, fetched once into the Hugging
Face cache; offline, a cached copy is used and otherwise the error says how to pass a file. A
local file is a state_dict for the architecture; only the classifier's keys may be missing or
extra. timm is imported inside the functions: naming a cache file needs none of it.

BatchNorm folding (`fold_batchnorm`) traces a timm model with timm's own fx settings (its leaf
modules and functions), so the EfficientNet family (BatchNormAct2d, tf_ "same" padding) folds too.
"""
from __future__ import annotations

import difflib
import math
import socket

from .. import UserError

PREFIX = "timm/"
HUB = ("huggingface.co", 443)  # where timm's DEFAULT weights come from


def is_timm(name: str) -> bool:
    return str(name).startswith(PREFIX)


def arch(name: str) -> str:
    return name[len(PREFIX):]


def names(pattern: str = "") -> list[str]:
    """Every timm architecture, as `timm/<name>`, filtered by a wildcard pattern (timm's list_models)."""
    import timm

    pat = pattern.removeprefix(PREFIX) if pattern else ""
    if pat and not any(c in pat for c in "*?["):
        pat = f"*{pat}*"
    return [PREFIX + n for n in timm.list_models(pat or "")]


def check_name(name: str) -> None:
    import timm

    a = arch(name).split(".")[0]
    if not timm.is_model(a):
        close = difflib.get_close_matches(a, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(PREFIX + c for c in close)}?)" if close else ""
        raise UserError(f"unknown timm backbone {name!r}{hint}; `cnncodes features --list-backbones PATTERN` "
                        "lists them")


def _cfg_name(name: str, weights) -> str:
    """The name timm resolves a pretrained_cfg for: arch, or arch.tag for --weights TAG."""
    a = arch(name)
    if weights.kind == "enum" and weights.member != "DEFAULT" and "." not in a:
        return f"{a}.{weights.member}"
    return a


def preprocess(name: str, weights):
    """The eval transform of the name's pretrained_cfg (timm.data.resolve_data_config): resize to
    floor(size / crop_pct), centre crop `size`, its interpolation, mean and std."""
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    from ..images.transforms import Preprocess

    check_name(name)
    cfg_name = _cfg_name(name, weights)
    cfg = get_pretrained_cfg(cfg_name)
    data = resolve_data_config(pretrained_cfg=cfg.to_dict() if cfg else {})
    size = data["input_size"][-1]
    resize = math.floor(size / data.get("crop_pct", 0.875))  # timm's transforms_factory rounds down too
    tag = f".{cfg.tag}" if cfg and cfg.tag else ""
    return Preprocess(resize, size, data.get("interpolation", "bicubic"), tuple(data["mean"]), tuple(data["std"]),
                      f"timm pretrained_cfg of {arch(name).split('.')[0]}{tag}")


def _online(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(HUB, timeout=timeout).close()
        return True
    except OSError:
        return False


def _cached_file(model) -> str | None:
    """A copy of the model's pretrained file already in the Hugging Face cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    hub_id = (model.pretrained_cfg or {}).get("hf_hub_id")
    for fname in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(hub_id, fname) if hub_id else None
        if isinstance(hit, str):
            return hit
    return None


def _pretrained(name: str, weights):
    import timm
    from timm.models import load_checkpoint

    cfg_name = _cfg_name(name, weights)
    if not _online():  # timm would retry the download for a minute before failing
        model = timm.create_model(cfg_name, pretrained=False)
        cached = _cached_file(model)
        if cached is None:
            raise UserError(f"timm's {cfg_name} weights are not cached and huggingface.co cannot be reached; "
                            f"offline, pass --weights PATH to a local state_dict of {arch(name)}")
        load_checkpoint(model, cached)
        return model
    try:
        return timm.create_model(cfg_name, pretrained=True)
    except Exception as e:  # HTTP, SSL, missing file: all mean the weights could not be fetched
        raise UserError(f"could not download timm's {cfg_name} weights ({type(e).__name__}); offline, pass "
                        f"--weights PATH to a local state_dict") from None


def _from_file(name: str, weights, load_state_dict_file):
    import timm

    weights.sha256  # noqa: B018 - a missing file is a UserError here, before the model is built
    model = timm.create_model(arch(name), pretrained=False)
    head = (model.pretrained_cfg or {}).get("classifier") or ""
    heads = head if isinstance(head, (tuple, list)) else (head,)
    try:
        missing, unexpected = model.load_state_dict(load_state_dict_file(weights.path), strict=False)
    except RuntimeError as e:  # a tensor of another shape: weights of another architecture
        raise UserError(f"weights {weights.path.name!r} do not fit {name}: "
                        f"{str(e).splitlines()[-1].strip()[:200]}") from None
    missing = [k for k in missing if not any(k.startswith(h + ".") for h in heads if h)]
    if missing or unexpected:
        raise UserError(
            f"weights {weights.path.name!r} do not fit {name}: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]} (only the classifier {head!r} may be missing)")
    return model


def build(name: str, weights, load_state_dict_file):
    """(trunk: the model with its classifier removed, weights id, code dimension)."""
    import timm
    import torch

    check_name(name)
    if weights.kind == "none":
        torch.manual_seed(weights.seed)  # random init is a function of the seed, recorded in the id
        model, wid = timm.create_model(arch(name), pretrained=False), weights.key
    elif weights.kind == "file":
        model, wid = _from_file(name, weights, load_state_dict_file), weights.key
    else:
        model = _pretrained(name, weights)
        tag = (model.pretrained_cfg or {}).get("tag")
        wid = f"timm:{model.pretrained_cfg.get('architecture', arch(name))}" + (f".{tag}" if tag else "")
    model.reset_classifier(0)  # forward() now ends at the pooled pre-logits
    dim = getattr(model, "head_hidden_size", None) or model.num_features
    return model, wid, int(dim)


def uses_timm(module) -> bool:
    """Whether any part of `module` is a timm layer (a timm trunk, or a classifier around one)."""
    return any(type(m).__module__.startswith("timm.") for m in module.modules())


def fold_batchnorm(trunk):
    """(a copy of the eval-mode trunk with each BatchNorm folded into the convolution before it,
    whether every BatchNorm was folded); (trunk, False) when fx cannot trace it.

    Traced with timm's fx settings (`timm.layers.get_notrace_modules/functions`, what timm's own
    feature extraction uses), so its "same"-padded Conv2dSame and its BatchNormAct2d stay whole
    modules; each pair is folded by torch's `fuse_conv_bn_eval`, as torch.fx's `fuse` does. The walk
    over the graph is written here because `fuse` matches exact types (nn.Conv2d, nn.BatchNorm2d)
    and timm's layers are subclasses of them; timm has no generic fold. A BatchNormAct2d keeps its
    dropout and activation (both run after the normalisation)."""
    from torch import fx, nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    gm = _traced(trunk.eval())
    if gm is None:  # untraceable control flow: keep the plain trunk
        return trunk, False
    mods = dict(gm.named_modules())
    calls = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    once = {t for t in calls if calls.count(t) == 1}  # a module called twice cannot change for one call
    folded = 0
    for node in gm.graph.nodes:
        bn, src = mods.get(node.target) if node.op == "call_module" else None, node.args[0] if node.args else None
        conv = mods.get(src.target) if isinstance(src, fx.Node) and src.op == "call_module" else None
        if (isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None and isinstance(conv, nn.Conv2d)
                and {node.target, src.target} <= once and len(src.users) == 1):
            gm.add_submodule(src.target, fuse_conv_bn_eval(conv, bn))
            act = getattr(bn, "act", None)  # BatchNormAct2d: normalise, then drop, then act
            gm.add_submodule(node.target, nn.Sequential(getattr(bn, "drop", nn.Identity()), act)
                             if isinstance(act, nn.Module) else nn.Identity())
            folded += 1
    left = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gm.modules())
    return (gm if folded else trunk), not left


def _traced(trunk):
    """A GraphModule of a copy of `trunk`, traced as timm's feature extraction traces (timm's leaf
    modules stay whole, its no-trace functions wrapped), or None when fx cannot trace it."""
    import copy

    from timm.layers import get_notrace_functions, get_notrace_modules
    from torch import fx

    leaves = tuple(get_notrace_modules())

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m, name):
            return isinstance(m, leaves) or super().is_leaf_module(m, name)

    model = copy.deepcopy(trunk)
    try:
        tracer = Tracer(autowrap_functions=tuple(f for f in get_notrace_functions() if callable(f)))
        return fx.GraphModule(model, tracer.trace(model))
    except Exception:  # control flow on traced values, or anything else fx refuses
        return None
