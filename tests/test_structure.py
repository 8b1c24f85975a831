"""The shared layer: weights parsed once, settings validated where declared, and stages that
import only what they use (a cache hit builds no network; classify needs no torch)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, make_folder, write_synthetic_codes
from pipeline import UserError
from pipeline.core.cli import parse_splits
from pipeline.codes.weights import Weights, features_path


@pytest.mark.parametrize("arg,kind,tag,key", [
    ("DEFAULT", "enum", "DEFAULT", "enum:DEFAULT"),
    ("default", "enum", "DEFAULT", "enum:DEFAULT"),
    ("ResNet18_Weights.IMAGENET1K_V2", "enum", "IMAGENET1K_V2", "enum:IMAGENET1K_V2"),
    ("IMAGENET1K_V1", "enum", "IMAGENET1K_V1", "enum:IMAGENET1K_V1"),
    ("none", "none", "none", "none(seed=3)"),
    ("w/mobilenet_v2_imagenet_features.pth", "file", "mobilenet_v2_imagenet_features",
     "file:mobilenet_v2_imagenet_features.pth"),
    ("weights.ckpt", "file", "weights", "file:weights.ckpt"),
])
def test_weights_parsed_once_into_kind_tag_and_key(arg, kind, tag, key):
    w = Weights.parse(arg, seed=3)
    assert (w.kind, w.tag, w.key) == (kind, tag, key)
    assert features_path("some/where/hymenoptera_data", "resnet18", w).as_posix() == \
        f"features/hymenoptera_data/resnet18-{tag}.h5"


def test_weights_file_sha256_and_record_round_trip(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"abc")
    w = Weights.parse(str(f))
    assert w.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert Weights.from_record(w.key, w.arg) == w
    assert Weights.from_record(w.key, w.arg, override="/else/where.pth").arg == "/else/where.pth"
    assert Weights.from_record("none(seed=7)", "none") == Weights("none", "none", 7)
    assert Weights.from_record("ResNet18_Weights.IMAGENET1K_V1", "DEFAULT").member == "IMAGENET1K_V1"
    with pytest.raises(UserError, match="does not exist"):
        Weights.parse(str(tmp_path / "missing.pth")).sha256
    with pytest.raises(UserError):
        Weights.parse("no such thing!")


def test_makefile_asks_the_package_for_the_cache_path():
    r = subprocess.run(["make", "-s", "-n", "classify", "DATA=x/hymenoptera_data", "BACKBONE=mobilenet_v2",
                        "WEIGHTS=ResNet18_Weights.IMAGENET1K_V2"], cwd=ROOT, capture_output=True, text=True)
    want = features_path("x/hymenoptera_data", "mobilenet_v2", Weights.parse("ResNet18_Weights.IMAGENET1K_V2"))
    assert f"--features {want.as_posix()} " in r.stdout


def test_make_reads_the_datasets_only_features_file_and_lists_them_when_there_are_several(tmp_path):
    """`make audit DATA=photos` after `make features DATA=photos BACKBONE=x WEIGHTS=y` finds that
    file; with two files and neither the default one, make stops naming both; `make features`
    always writes the file BACKBONE and WEIGHTS name."""
    (tmp_path / "pyproject.toml").touch()  # the venv target's inputs, so that make -n gets past them
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".installed").touch()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def make(*args):
        return subprocess.run(["make", "-s", "-n", "-f", str(ROOT / "Makefile"), f"PYTHON={sys.executable}", *args,
                               "DATA=x/photos"], cwd=tmp_path, capture_output=True, text=True, env=env)
    where = tmp_path / "features" / "photos"
    where.mkdir(parents=True)
    (where / "mobilenet_v2-w.h5").touch()
    r = make("audit")
    assert "--features features/photos/mobilenet_v2-w.h5 " in r.stdout, r.stderr
    assert "--out features/photos/resnet18-DEFAULT.h5 " in make("features").stdout
    (where / "resnet50-DEFAULT.h5").touch()
    r = make("classify")
    assert r.returncode != 0 and "mobilenet_v2-w.h5, resnet50-DEFAULT.h5" in r.stderr
    assert "--features features/photos/resnet50-DEFAULT.h5 " in make("classify", "BACKBONE=resnet50").stdout


def test_the_demo_and_each_datasets_report_write_over_nothing_committed():
    """`make demo` (TUNE=1 too) writes only where git tracks nothing, the report to reports/<dataset>/
    (the committed example report is reports/ itself); the report stage's own default is the same."""
    from pipeline.stages.report import default_out

    # a dataset no features/ folder of this checkout holds: make's lookup of an existing features file
    # (several of hymenoptera's once a sweep ran here) must not decide what this test sees
    r = subprocess.run(["make", "-s", "-n", "demo", "DATA=x/no_such_dataset_here", "TUNE=1"], cwd=ROOT,
                       capture_output=True, text=True)
    outs = re.findall(r"--out (\S+)", r.stdout)
    assert "reports/no_such_dataset_here" in outs and "--tune-lr" in r.stdout, r.stdout + r.stderr
    for out in outs:
        tracked = subprocess.run(["git", "ls-files", "--", out], cwd=ROOT, capture_output=True, text=True).stdout
        assert not tracked.strip(), (out, tracked[:200])
    assert default_out("photos").as_posix() == "reports/photos" and default_out("..").as_posix() == "reports/dataset"


def test_splits_parsed_once_with_one_rule():
    assert parse_splits("train, val") == ("train", "val")
    for bad in ("", ",", "train,train"):
        with pytest.raises(UserError):
            parse_splits(bad)
    with pytest.raises(UserError, match="exactly 2"):
        parse_splits("train", exactly=2)


def test_settings_are_validated_where_declared():
    from pipeline.stages.classify import Config as C
    from pipeline.stages.features import Config as F
    for bad in (dict(batch_size=0), dict(shard_size=0), dict(workers=-2), dict(splits="a,a"), dict(crop=-1)):
        with pytest.raises(UserError):
            F(**bad)
    with pytest.raises(UserError, match="--folds"):
        C(features="x.h5", folds=1)


def _python(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_cache_hit_builds_no_network_and_imports_no_torchvision(tmp_path):
    data = make_folder(tmp_path / "data", n_train=2, n_val=2)
    cfg = (f"Config(data={str(data)!r}, backbone='resnet18', weights='none', out={str(tmp_path / 'f.h5')!r}, "
           "device='cpu', workers=0)")
    _python(f"from pipeline.stages.features import Config, extract; extract({cfg})")
    out = _python(f"import sys; from pipeline.stages.features import Config, extract; extract({cfg}); "
                  "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    assert "cache hit" in out and out.strip().endswith("[]")


def test_classify_with_sklearn_heads_imports_no_torch(tmp_path):
    f = write_synthetic_codes(tmp_path / "c.h5")
    out = _python(f"import sys; from pipeline.stages.classify import Config, classify; "
                  f"classify(Config(features={str(f)!r}, head='softmax', out={str(tmp_path / 'runs')!r}, folds=3)); "
                  "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    assert out.strip().endswith("[]")


# The floors of the package, lowest first (docs/architecture.md): a module imports only its own
# package and the floors below it; the packages of one floor (finetune, report, export, audit) never import
# each other.
FLOORS = {"core": 0, "images": 1, "codes": 2, "heads": 3, "runs": 4, "finetune": 5, "report": 5, "export": 5,
          "audit": 5, "stages": 6}


def _imports(path):
    """(line, dotted module under pipeline) for every import in a pipeline module, relative or not."""
    import ast

    rel = path.relative_to(ROOT / "pipeline").with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(rel[:-1])[: len(rel) - node.level]
            head = base + (node.module.split(".") if node.module else [])
            yield from ((node.lineno, ".".join(head + ([a.name] if not node.module else []))) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline."):
            yield node.lineno, node.module.split(".", 1)[1]
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name.split(".", 1)[1]) for a in node.names if a.name.startswith("pipeline."))


def test_floors_lower_packages_never_import_higher_ones_and_nothing_imports_a_stage():
    wrong = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        rel = path.relative_to(ROOT / "pipeline").parts
        here = rel[0] if len(rel) > 1 else None  # None: pipeline/__init__.py and __main__.py
        for line, target in _imports(path):
            there = target.split(".")[0]
            if there not in FLOORS or there == here:
                continue
            if there == "stages":
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports a stage ({target})")
            elif here is not None and (FLOORS[there] > FLOORS[here] or (FLOORS[there] == FLOORS[here])):
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {target} ({there}): not below it")
    assert not wrong, "\n".join(wrong)


def _module_graph() -> dict[str, set[str]]:
    """Every pipeline module (a package as its name, `report` for report/__init__.py) -> the pipeline
    modules it imports, at the top or inside a function alike."""
    paths = {".".join(p.relative_to(ROOT / "pipeline").with_suffix("").parts).removesuffix(".__init__"): p
             for p in (ROOT / "pipeline").rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        targets = set()
        for _, target in _imports(path):
            parts = target.split(".")
            found = next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in paths), None)
            if found is not None and found != name:
                targets.add(found)
        graph[name] = targets
    return graph


def test_no_import_circles_anywhere_inside_packages_too():
    import graphlib

    try:
        tuple(graphlib.TopologicalSorter(_module_graph()).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import circle: {' -> '.join(e.args[1])}")


# report/ has floors of its own (docs/architecture.md): numbers -> words and tables -> figures ->
# layout -> render; a report module imports only its own floor and the ones below it.
REPORT_FLOORS = {"rows": 0, "quality": 0, "usage": 0, "choice": 0, "on_test": 0,
                 "blocks": 1, "notes": 1, "verdict": 1, "record": 1, "tables": 1, "diagnostics": 1, "reproduce": 1,
                 "figures": 2, "compute_plot": 2, "label_plot": 2, "gallery": 2, "backbones": 2, "backbone_audits": 2,
                 "layout": 3, "your_data": 3, "after_choice": 3,
                 "render": 4, "build": 4}


def test_report_modules_import_only_their_floor_and_below_and_the_doc_lists_them():
    modules = {p.stem for p in (ROOT / "pipeline" / "report").glob("*.py")} - {"__init__"}
    assert modules == set(REPORT_FLOORS), "every report module needs a floor in REPORT_FLOORS and the doc"
    wrong = [f"report.{m} (floor {REPORT_FLOORS[m]}) imports {t} (floor {REPORT_FLOORS[t.split('.')[1]]})"
             for m in modules for t in _module_graph()[f"report.{m}"]
             if t.startswith("report.") and REPORT_FLOORS[t.split(".")[1]] > REPORT_FLOORS[m]]
    assert not wrong, "\n".join(wrong)
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for m in modules:
        assert f"`{m}`" in doc, f"docs/architecture.md does not place report/{m}.py on a floor"


def test_every_package_on_a_floor_and_the_architecture_doc_names_them_all():
    packages = {p.name for p in (ROOT / "pipeline").iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(FLOORS)
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for name in FLOORS:
        assert f"`{name}/`" in doc, f"docs/architecture.md does not describe {name}/"
    for stage in ("data", "features", "classify", "finetune", "report", "predict", "export", "audit"):
        assert (ROOT / "pipeline" / "stages" / f"{stage}.py").is_file()


def test_stages_are_thin_and_modules_small():
    """A stage is its Config, a pure function and run(cfg); every module stays readable top to bottom."""
    import ast

    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        n = len(path.read_text().splitlines())
        assert n <= 330, f"{path.relative_to(ROOT)} has {n} lines"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                width = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - bool(a.args and a.args[0].arg == "self")
                # an estimator's __init__ lists its hyperparameters, as scikit-learn's do: exempt
                assert width <= 8 or node.name == "__init__", \
                    f"{path.relative_to(ROOT)}:{node.lineno} {node.name} takes {width} parameters"
