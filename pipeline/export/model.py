"""A run folder as one torch module: uint8 N x 3 x crop x crop in, (scores N x C, label N) out.

The module does what `predict` does after decoding, in one graph: normalisation (the same
arithmetic as images.transforms.normalize), the trunk with BatchNorm folded (codes.backbone), and
the head. A linear head on codes (softmax, linsvc, linear, sgd) becomes one linear layer with its
StandardScaler folded in (W' = W / scale, b' = b - W @ (mean / scale), in float64, then float32),
then its link: softmax (multinomial; a binary LogisticRegression is softmax over [0, d], i.e. the
sigmoid), one-vs-rest sigmoids normalised (SGDClassifier's log loss, as scikit-learn's
predict_proba), or none (decision values, "margin": a binary LinearSVC scores [-d, d], as predict).
k-NN is a matrix product against the stored L2-normalised codes (float32, predict's numbers), top-k
and a vote; a k-NN head on more than CODES_MAX training codes is refused before anything is written.

With the run's --reject rule (heads.reject) the module has a third output, `distance`: for a head
on codes the cosine distance to the nearest stored training code (the run's reject.npy, float16,
cast to float32 in the graph: predict's arithmetic), for a fine-tune 1 - the top probability; an
image is "unknown" when it exceeds the rule's threshold (in the metadata).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import UserError
from ..runs.scoring import Source, backbone_for, check_rule, head_dim, reject_reference  # the checks predict makes
from ..codes.backbone import classifier, fold_batchnorm, load_backbone
from ..images.transforms import Preprocess
from ..heads.reject import REFERENCE_MAX
from ..runs import folder as runs

# One rule for every export: the file holds at most this many training codes, for a k-NN vote and
# for the --reject rule each. The rule's references are a subsample of this size since classify
# keeps one (heads.reject, its rate on val kept; an older run's bigger set is refused); a k-NN
# vote cannot be subsampled without changing its answers, so a bigger k-NN head is refused. At
# 10,000 x 512 float32 the codes add 20 MB and x1.00-1.25 to a resnet18 file's ms per image at
# batch 1; 100,000 would add 206 MB and x1.6-1.7 (bench/knn_export.py, docs/export.md). Predict's
# own k-NN is exact up to codes.index.EXACT_MAX (50,000): under this cap the file's vote is predict's.
CODES_MAX = REFERENCE_MAX


class Normalise(nn.Module):
    """uint8 NCHW -> (x - 255 mean) / (255 std) in float32, as images.transforms.normalize."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def forward(self, x):
        return (x.float() - self.mean) / self.std


class Link(nn.Module):
    """Scores from a linear layer's output: softmax, normalised one-vs-rest sigmoids, or as they are."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, z):
        if self.kind == "softmax":
            return z.softmax(1)
        if self.kind == "ovr":  # scikit-learn's _predict_proba_lr: a row of zeros becomes uniform
            p = torch.sigmoid(z)
            s = p.sum(1, keepdim=True)
            return torch.where(s == 0, torch.ones_like(p), p) / torch.where(s == 0, torch.full_like(s, z.shape[1]), s)
        return z


class KnnVote(nn.Module):
    """CachedKNN after a Normalizer: the k stored codes nearest in Euclidean distance (ranked by
    x.f - |f|^2 / 2, the same order), and the share of their votes per class."""

    def __init__(self, stored: np.ndarray, labels: np.ndarray, k: int, n_classes: int):
        super().__init__()
        stored = np.asarray(stored, np.float32)
        self.register_buffer("stored", torch.from_numpy(stored.copy()))
        self.register_buffer("half_sq", torch.from_numpy(0.5 * (stored.astype(np.float64) ** 2).sum(1)).float())
        self.register_buffer("labels", torch.from_numpy(np.asarray(labels, np.int64).copy()))
        self.register_buffer("classes", torch.arange(n_classes))
        self.k = int(k)

    def forward(self, z):
        n = z.norm(dim=1, keepdim=True)  # sklearn's Normalizer: a zero row stays zero
        z = z / torch.where(n == 0, torch.ones_like(n), n)
        near = (z @ self.stored.T - self.half_sq).topk(self.k, dim=1).indices
        votes = self.labels[near]
        return (votes.unsqueeze(-1) == self.classes).sum(1).float() / self.k


class NearestDistance(nn.Module):
    """heads.reject.nearest_distance: 1 - the cosine similarity of the code to its nearest stored
    training code (stored L2-normalised, float16 as in the run; the product in float32)."""

    def __init__(self, reference: np.ndarray):
        super().__init__()
        self.register_buffer("reference", torch.from_numpy(np.asarray(reference, np.float16).copy()))

    def forward(self, codes, scores):
        z = codes / codes.norm(dim=1, keepdim=True).clamp_min(1e-12)  # heads.reject.normalised
        return 1.0 - (z @ self.reference.float().T).amax(1)


class LowConfidence(nn.Module):
    """A fine-tune's rejection score: 1 - its top probability (heads.reject.confidence_rule)."""

    def forward(self, codes, scores):
        return 1.0 - scores.amax(1)


class Exported(nn.Module):
    """image (uint8) -> (scores, label = arg max of scores, the first on ties[, distance: the
    rejection rule's score when `far` is given])."""

    def __init__(self, pre: Normalise, body: nn.Module, head: nn.Module, far: nn.Module | None = None):
        super().__init__()
        self.pre, self.body, self.head, self.far = pre, body, head, far

    def forward(self, image):
        codes = self.body(self.pre(image))
        scores = self.head(codes)
        if self.far is None:
            return scores, scores.argmax(1)
        return scores, scores.argmax(1), self.far(codes, scores)


@dataclass
class Built:
    module: Exported  # eval mode, on the CPU
    score: str  # "probability" or "margin"
    classes: list[str]  # the score columns' class names
    pre: Preprocess
    fast_decode: bool  # JPEGs decoded with PIL's draft (never below the resize on either side)
    what: str  # the head or model in words
    reject: dict | None = None  # the run's --reject rule (model.json), when the module outputs `distance`
    reference_shape: tuple = ()  # the stored training codes in the graph (heads on codes with the rule)


def folded_linear(pre: list, clf) -> tuple[np.ndarray, np.ndarray]:
    """(W', b') of a StandardScaler (or nothing) then a linear classifier: one linear layer."""
    coef = np.asarray(clf.coef_, np.float64).reshape(-1, np.asarray(clf.coef_).shape[-1])
    b = np.asarray(clf.intercept_, np.float64).reshape(-1)
    mean = np.zeros(coef.shape[1])
    scale = np.ones(coef.shape[1])
    if pre:
        s = pre[0]
        mean = np.asarray(s.mean_, np.float64) if getattr(s, "mean_", None) is not None else mean
        scale = np.asarray(s.scale_, np.float64) if getattr(s, "scale_", None) is not None else scale
    W = coef / scale
    return W, b - W @ mean


def _linear_head(pre: list, clf) -> tuple[nn.Module, str]:
    W, b = folded_linear(pre, clf)
    kind = type(clf).__name__
    proba = hasattr(clf, "predict_proba")
    if proba and kind == "SGDClassifier" and clf.loss != "log_loss":
        raise UserError(f"cannot export an SGD head with loss {clf.loss!r}: only log_loss and hinge are exported")
    if len(W) == 1:  # binary, one vector for class 1: softmax over [0, d] is the sigmoid; margins [-d, d]
        W, b = (np.vstack([np.zeros_like(W), W]), np.r_[0.0, b]) if proba else (np.vstack([-W, W]), np.r_[-b, b])
    link = "ovr" if proba and kind == "SGDClassifier" and len(W) > 2 else "softmax" if proba else "margin"
    linear = nn.Linear(W.shape[1], W.shape[0])
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(W))
        linear.bias.copy_(torch.from_numpy(b))
    return nn.Sequential(linear, Link(link)).requires_grad_(False), "probability" if proba else "margin"


def check_knn_size(shape: tuple[int, int]) -> None:
    """UserError (one line: the size, the cap, what to do instead) for a k-NN head on more than
    CODES_MAX training codes."""
    n, d = shape
    if n > CODES_MAX:
        raise UserError(f"cannot export this k-NN head: it votes among {n:,} training codes ({n:,} x {d} float32 = "
                        f"{n * d * 4 / 1e6:.0f} MB in the file), over the {CODES_MAX:,} an exported file holds (the "
                        "--reject rule keeps as many); export a softmax or linear head of the same codes instead "
                        "(classify --head softmax), and keep k-NN for evaluation (classify --head knn, predict)")


def head_module(head) -> tuple[nn.Module, str]:
    """(codes -> scores module, "probability" or "margin") of a fitted head Pipeline; UserError
    with the reason for a head of another shape."""
    *pre, clf = [est for _, est in head.steps]
    names = [type(e).__name__ for e in (*pre, clf)]
    if names[-1] == "CachedKNN":
        if names[:-1] != ["Normalizer"] or pre[0].norm != "l2":
            raise UserError(f"cannot export a k-NN head after {names[:-1]}: only after an L2 Normalizer")
        check_knn_size(clf._fit_X.shape)
        k = min(int(clf.n_neighbors), len(clf._fit_X))
        return KnnVote(clf._fit_X, clf._y, k, len(clf.classes_)), "probability"
    if not hasattr(clf, "coef_") or names[:-1] not in ([], ["StandardScaler"]):
        raise UserError(f"cannot export a head made of {' + '.join(names)}: only a linear classifier after a "
                        "StandardScaler, or k-NN after a Normalizer")
    return _linear_head(pre, clf)


def finetuned(run_dir, spec: dict) -> nn.Module:
    """The fine-tuned classifier (trunk + Linear) from its checkpoint."""
    model = classifier(load_backbone(spec["backbone"], "none"), len(spec["classes"]))
    try:
        model.load_state_dict(torch.load(runs.model_file(run_dir, spec), map_location="cpu", weights_only=True))
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        raise UserError(f"{spec['file']!r} in {str(run_dir)!r} is not a readable checkpoint of this model "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    return model.eval()


def rejection(run_dir, spec: dict, dim: int | None = None) -> tuple[nn.Module | None, dict | None]:
    """(the module scoring the run's --reject rule, the rule) or (None, None) for a run without one;
    `dim`: the head's code length, which the stored codes must match."""
    try:
        rule = check_rule(Source(run_dir, reject=True), spec)
        if not rule.get("rule"):
            return None, None
        if spec["kind"] != "head":
            return LowConfidence(), rule
        reference = reject_reference(Source(run_dir, reject=True), spec, dim)
        if len(reference) > CODES_MAX:  # a run made before the rule kept a subsample
            raise UserError(f"the run's --reject rule measures distance to {len(reference):,} training codes, over "
                            f"the {CODES_MAX:,} an exported file holds: refit it with this version's classify (which "
                            f"keeps a {REFERENCE_MAX:,}-code subsample)")
        return NearestDistance(reference), rule
    except UserError as e:
        raise UserError(f"{e}; or export without the rule: --no-reject") from None


def build(run_dir, spec: dict, weights: str = "", trust_pickle: bool = False, reject: bool = True) -> Built:
    """The run folder's model as one module, with what its scores are and their class names; with
    `reject`, the run's rejection rule (if it records one) as a third output."""
    pre = Preprocess.from_spec(spec)
    if spec["kind"] == "head":
        head = runs.load_head(run_dir, spec, trust_pickle)
        scores, score = head_module(head)
        body = fold_batchnorm(backbone_for(spec, weights).trunk)[0]
        classes = [spec["classes"][int(c)] for c in head[-1].classes_]
        what = f"{spec['backbone']} codes + {spec.get('head', type(head[-1]).__name__)} head"
    else:
        body, scores, score = fold_batchnorm(finetuned(run_dir, spec))[0], Link("softmax"), "probability"
        classes, what = list(spec["classes"]), f"fine-tuned {spec['backbone']}"
    dim = head_dim(head) if spec["kind"] == "head" else None
    far, rule = rejection(run_dir, spec, dim) if reject else (None, None)
    module = Exported(Normalise(pre.mean, pre.std), body, scores, far).eval().requires_grad_(False)
    shape = tuple(far.reference.shape) if isinstance(far, NearestDistance) else ()
    return Built(module, score, classes, pre, bool(spec.get("fast_decode", True)), what, rule, shape)
