"""torchvision checkpoints load into betterconv's models and give the same outputs; betterconv's own files round
trip with their metadata; files that are not what they claim are refused with one line."""
import pickle

import pytest
import torch
import torchvision
from torchvision.models import segmentation

import betterconv
from betterconv import BetterConvError, create_model
from betterconv import convolutionalize
from betterconv.weights import load_weights, read_metadata, save_weights

from conftest import randomise_batch_norm

TORCHVISION = {
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(),
    "vgg16": lambda: torchvision.models.vgg16(),
    "resnet50": lambda: torchvision.models.resnet50(),
    "resnet101": lambda: torchvision.models.resnet101(),
    "fcn_resnet50": lambda: segmentation.fcn_resnet50(weights=None, weights_backbone=None, aux_loss=True),
    "fcn_resnet101": lambda: segmentation.fcn_resnet101(weights=None, weights_backbone=None, aux_loss=True),
    "deeplabv3_resnet50": lambda: segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=True),
    "deeplabv3_resnet101": lambda: segmentation.deeplabv3_resnet101(weights=None, weights_backbone=None,
                                                                    aux_loss=True),
}


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_checkpoint_gives_the_same_outputs(name, tmp_path):
    torch.manual_seed(0)
    reference = randomise_batch_norm(TORCHVISION[name]())  # fresh batch norms are identities
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    ours = create_model(name, weights=path).eval()
    x = torch.randn(1, 3, 67, 95)
    with torch.no_grad():
        expected = reference(x)
        if isinstance(expected, dict):
            out, aux = ours.forward_aux(x)
            assert (out - expected["out"]).abs().max() <= 1e-5
            assert (aux - expected["aux"]).abs().max() <= 1e-5
        else:
            assert (ours(x) - expected).abs().max() <= 1e-5


def test_safetensors_round_trip_keeps_configuration_and_metadata(tmp_path):
    model = create_model("deeplabv3_mobilenet_v2", width_mult=0.35, num_classes=3, output_stride=8).eval()
    path = tmp_path / "m.safetensors"
    save_weights(model, path, class_names=["a", "b", "c"], input_size=(3, 513, 513), mean=(0.5,) * 3, std=(0.5,) * 3)
    meta = read_metadata(path)
    assert meta["betterconv.model"] == "deeplabv3_mobilenet_v2"
    assert meta["betterconv.model_kwargs"] == {"width_mult": 0.35, "num_classes": 3, "output_stride": 8}
    assert meta["betterconv.class_names"] == ["a", "b", "c"]
    again = create_model("deeplabv3_mobilenet_v2", weights=path).eval()
    x = torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    with pytest.raises(BetterConvError, match="holds weights for deeplabv3_mobilenet_v2, not mobilenet_v2"):
        create_model("mobilenet_v2", weights=path)


class Exploit:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_bad_files_are_refused_with_one_line(tmp_path):
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"weight": Exploit()}))
    with pytest.raises(BetterConvError, match="refused to unpickle") as e:
        load_weights(create_model("mobilenet_v2", width_mult=0.35), evil)
    assert "\n" not in str(e.value)
    text = tmp_path / "notes.pth"
    text.write_text("not weights at all")
    with pytest.raises(BetterConvError, match="notes.pth: not a weights file"):
        create_model("mobilenet_v2", weights=text)
    wrong = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), wrong)
    with pytest.raises(BetterConvError, match="not a torchvision checkpoint of this architecture"):
        create_model("resnet101", weights=wrong)
    with pytest.raises(BetterConvError, match="no such file"):
        create_model("resnet50", weights=tmp_path / "missing.pth")


def test_mismatch_lists_missing_and_unexpected(tmp_path):
    model = create_model("mobilenet_v2", width_mult=0.35, num_classes=10)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier")}
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(BetterConvError, match=r"missing 2: classifier.1.weight, classifier.1.bias; unexpected 1"):
        load_weights(model, path)


def test_convolutionalize_vgg16():
    torch.manual_seed(0)
    classifier = create_model("vgg16").eval()
    conv = convolutionalize(classifier)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (conv(x).flatten(1) - classifier(x)).abs().max() <= 1e-4
        assert conv(torch.randn(1, 3, 448, 448)).shape == (1, 1000, 8, 8)
    assert betterconv.convolutionalize is convolutionalize
