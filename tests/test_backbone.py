import pytest
import torch

from pipeline import UserError
from pipeline.codes.backbone import classifier, load_backbone


@pytest.mark.parametrize("name,dim", [("resnet18", 512), ("mobilenet_v2", 1280)])
def test_code_dimension_and_frozen_eval(name, dim):
    bb = load_backbone(name, "none")
    assert bb.dim == dim and not bb.trunk.training
    assert not any(p.requires_grad for p in bb.trunk.parameters())
    with torch.no_grad():
        assert bb.trunk(torch.zeros(2, 3, 64, 64)).shape == (2, dim)


def test_random_weights_follow_the_seed():
    a, b, c = (load_backbone("resnet18", "none", seed=s) for s in (0, 0, 1))
    assert torch.equal(a.trunk.conv1.weight, b.trunk.conv1.weight)
    assert not torch.equal(a.trunk.conv1.weight, c.trunk.conv1.weight)
    assert a.weights_id == "none(seed=0)"


def test_local_state_dict_without_classifier_loads(tmp_path):
    src = load_backbone("resnet18", "none", seed=3)
    sd = {k: v for k, v in src.trunk.state_dict().items()}  # fc is Identity: no classifier keys
    torch.save(sd, tmp_path / "w.pth")
    bb = load_backbone("resnet18", str(tmp_path / "w.pth"))
    assert torch.equal(bb.trunk.conv1.weight, src.trunk.conv1.weight)
    assert bb.weights_id == "file:w.pth" and len(bb.weights.sha256) == 64


def test_local_state_dict_missing_trunk_keys_is_an_error(tmp_path):
    sd = load_backbone("resnet18", "none").trunk.state_dict()
    del sd["layer1.0.conv1.weight"]
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(UserError, match="missing keys"):
        load_backbone("resnet18", str(tmp_path / "w.pth"))
    with pytest.raises(UserError, match="does not exist"):
        load_backbone("resnet18", str(tmp_path / "absent.pth"))


def test_unknown_names():
    with pytest.raises(UserError, match="did you mean"):
        load_backbone("resnet19", "none")
    with pytest.raises(UserError, match="unknown weights"):
        load_backbone("resnet18", "IMAGENET9K")


def test_classifier_puts_a_fresh_head_on_the_trunk():
    m = classifier(load_backbone("resnet18", "none"), 3)
    assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 3)
