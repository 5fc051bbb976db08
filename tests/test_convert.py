"""`betterconv convert`: good files convert; bad files give one line, a non-zero exit and no output file."""
import pickle

import pytest
import torch
import torchvision

from betterconv import create_model
from betterconv.weights import read_metadata


def assert_refused(cli, target, *argv, message):
    """`betterconv convert *argv` fails with one line naming `message` and leaves neither `target` nor a temporary
    file beside it."""
    code, _, err = cli("convert", *argv)
    assert code != 0
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not target.exists()
    assert not list(target.parent.glob(f".{target.name}*")), "a temporary file was left behind"


def test_torchvision_file_converts_with_metadata(cli, tmp_path):
    src, dst = tmp_path / "mnv2.pth", tmp_path / "out" / "mnv2.safetensors"
    reference = torchvision.models.mobilenet_v2().eval()
    torch.save(reference.state_dict(), src)
    code, out, _ = cli("convert", src, dst, "--model", "mobilenet_v2")
    assert code == 0 and "3,504,872 parameters" in out
    meta = read_metadata(dst)
    assert meta["betterconv.model"] == "mobilenet_v2" and len(meta["betterconv.class_names"]) == 1000
    assert meta["betterconv.mean"] == [0.485, 0.456, 0.406]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (create_model("mobilenet_v2", weights=dst).eval()(x) - reference(x)).abs().max() <= 1e-5


class Exploit:
    def __reduce__(self):
        return (print, ("code ran",))


def test_bad_torch_files(cli, tmp_path):
    dst = tmp_path / "out.safetensors"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"w": Exploit()}, protocol=2))
    assert_refused(cli, dst, evil, dst, "--model", "mobilenet_v2", message="refused to unpickle")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x89PNG not weights")
    assert_refused(cli, dst, junk, dst, "--model", "mobilenet_v2", message="junk.pth: not a weights file")
    wrong = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), wrong)
    assert_refused(cli, dst, wrong, dst, "--model", "mobilenet_v2",
                   message="not a torchvision checkpoint of this architecture")
    assert_refused(cli, dst, wrong, tmp_path / "out.pth", "--model", "resnet50", message="must be a .safetensors")


def test_bad_darknet_files(cli, tmp_path, shared_data):
    from betterconv.interop.darknet import save_darknet_weights

    dst = tmp_path / "out.safetensors"
    good = tmp_path / "tiny.weights"
    save_darknet_weights(create_model("yolov2_tiny"), good)
    truncated = tmp_path / "truncated.weights"
    truncated.write_bytes(good.read_bytes()[:-400])
    assert_refused(cli, dst, truncated, dst, "--model", "yolov2_tiny", message="truncated.weights")
    cfg = tmp_path / "odd.cfg"
    cfg.write_text((shared_data / "darknet" / "yolov2-tiny-voc.cfg").read_text().replace("[reorg]", "[x]")
                   .replace("[maxpool]", "[shortcutx]", 1))
    assert_refused(cli, dst, good, dst, "--cfg", cfg, message="odd.cfg")
    code, out, _ = cli("convert", good, dst, "--model", "yolov2_tiny")
    assert code == 0 and read_metadata(dst)["betterconv.std"] == [1.0, 1.0, 1.0]


def test_tflite_converts(cli, tmp_path, shared_data):
    pytest.importorskip("tflite")
    dst = tmp_path / "mnv2.safetensors"
    code, out, _ = cli("convert", shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite", dst,
                       "--model", "mobilenet_v2")
    assert code == 0
    meta = read_metadata(dst)
    assert meta["betterconv.model_kwargs"]["padding"] == "tf_same"
    assert meta["betterconv.class_names"][:2] == ["background", "tench"] and meta["betterconv.mean"] == [0.5] * 3
    assert_refused(cli, tmp_path / "x.safetensors", shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite",
                   tmp_path / "x.safetensors", "--model", "deeplabv3_mobilenet_v2", message="not a deeplabv3")


def test_heatmap_command(cli, tmp_path):
    from PIL import Image

    torch.manual_seed(0)
    weights = tmp_path / "vgg16.pth"
    torch.save(torchvision.models.vgg16().state_dict(), weights)
    image = tmp_path / "cat.png"
    Image.new("RGB", (300, 240), (120, 90, 60)).save(image)
    out = tmp_path / "heat.png"
    code, printed, _ = cli("heatmap", image, "--weights", weights, "--class", "Egyptian cat", "--size", "256",
                           "--output", out)
    assert code == 0 and "Egyptian cat" in printed
    assert Image.open(out).format == "PNG"
    code, _, err = cli("heatmap", image, "--weights", weights, "--class", "unicorn", "--output",
                       tmp_path / "none.png")
    assert code != 0 and "no class named 'unicorn'" in err and not (tmp_path / "none.png").exists()
