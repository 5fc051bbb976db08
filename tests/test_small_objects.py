"""The survey's fix for YOLOv2's small objects: prediction across scales (YOLOv3 §2.3) on Darknet-19 and on the
ImageNet MobileNetV2 backbone; shapes, anchor split, training signal, exports and saved weights."""
from __future__ import annotations

import pytest
import torch

from betterconv import create_model, load_weights, save_weights
from betterconv.deploy import NcnnModel, export_ncnn, export_onnx, onnx_session, run_onnx
from betterconv.tasks.region_loss import DetectionLoss
from betterconv.weights import backbone_from_classifier
from conftest import count_params

TINY = {"yolov2": dict(num_classes=3, width_mult=0.25), "yolov2_mobilenet_v2": dict(num_classes=3, width_mult=0.35,
                                                                                   head_channels=32)}


@pytest.mark.parametrize("name", list(TINY))
def test_three_scales_predict_at_strides_32_16_8_with_the_smallest_anchors_finest(name):
    model = create_model(name, scales=3, **TINY[name]).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 128, 160))
    assert [tuple(o.shape[-2:]) for o in outputs] == [(4, 5), (8, 10), (16, 20)]
    anchors = model.anchors
    areas = [(anchors[model.pyramid.anchor_index(i)].prod(1)) for i in range(3)]
    assert [len(a) for a in areas] == [2, 2, 1]  # 5 anchors: the coarse scales take the extra ones
    assert areas[0].min() > areas[1].max() and areas[1].min() > areas[2].max()  # largest at stride 32
    for level, (grid, out) in enumerate(zip(model.head_anchors(), outputs)):
        # in each output's own grid cells: a stride-8 cell is a quarter of a stride-32 one
        assert torch.equal(grid, anchors[model.pyramid.anchor_index(level)] * 2 ** level)
        assert out.shape[1] == len(grid) * (5 + 3)


def test_scales_need_enough_anchors_and_a_known_count():
    with pytest.raises(Exception, match="3 prediction scales need at least 3 anchors"):
        create_model("yolov2", scales=3, anchors=((1, 1), (2, 2)), **TINY["yolov2"])
    with pytest.raises(Exception, match="scales must be 1, 2 or 3"):
        create_model("yolov2_mobilenet_v2", scales=4, **TINY["yolov2_mobilenet_v2"])


def test_second_scale_weights_saved_before_the_pyramid_still_load():
    """`second_scale=True` is `scales=2`; the names its weights were saved under (pred, fine_lateral, fine_fuse,
    fine_pred) load into the pyramid."""
    model = create_model("yolov2", second_scale=True, **TINY["yolov2"]).eval()
    renames = {"pyramid.pred.": "pred.", "pyramid.laterals.0.": "fine_lateral.", "pyramid.fuses.0.": "fine_fuse.",
               "pyramid.preds.0.": "fine_pred."}
    old = {}
    for key, value in model.state_dict().items():
        for new, before in renames.items():
            if key.startswith(new):
                key = before + key[len(new):]
        old[key] = value + 1
    again = create_model("yolov2", second_scale=True, **TINY["yolov2"]).eval()
    again.load_state_dict(old)
    assert torch.equal(again.pyramid.preds[0].weight, model.pyramid.preds[0].weight + 1)


@pytest.mark.parametrize("name", list(TINY))
def test_region_loss_trains_every_scale(name):
    model = create_model(name, scales=3, **TINY[name])
    loss_fn = DetectionLoss(model, batch_size=2, multiscale=False, seed=0)
    boxes = [torch.tensor([[2.0, 2.0, 12.0, 12.0], [30.0, 30.0, 120.0, 110.0]]), torch.tensor([[40.0, 8, 60, 30]])]
    targets = [{"boxes": b, "labels": torch.zeros(len(b), dtype=torch.long),
                "difficult": torch.zeros(len(b), dtype=torch.bool)} for b in boxes]
    loss = loss_fn(model, (torch.rand(2, 3, 128, 128), targets), step=0)
    loss.backward()
    preds = [model.pyramid.pred, *model.pyramid.preds]
    assert torch.isfinite(loss) and all(p.weight.grad is not None and p.weight.grad.abs().sum() > 0 for p in preds)


def test_mobilenet_v2_detector_takes_the_imagenet_classifier_backbone():
    classifier = create_model("mobilenet_v2", width_mult=0.35)
    with torch.no_grad():
        for p in classifier.parameters():
            p.normal_()
    model = create_model("yolov2_mobilenet_v2", **TINY["yolov2_mobilenet_v2"])
    copied = backbone_from_classifier(model, classifier, "test")
    assert copied == len(model.backbone.state_dict())
    assert torch.equal(model.backbone.stem.conv.weight, classifier.stem.conv.weight)
    assert count_params(model) < count_params(create_model("yolov2", **TINY["yolov2"]))


@pytest.mark.parametrize("name", list(TINY))
def test_three_scale_heads_export_and_save(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, scales=3, **TINY[name]).eval()
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        reference = model(x)
    onnx_path = tmp_path / "m.onnx"
    export_onnx(model, onnx_path, (3, 96, 128))
    session = onnx_session(onnx_path)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert len(got) == 3 and all(abs(torch.as_tensor(g) - r).max() < 1e-3 for g, r in zip(got, reference))
    assert run_onnx(session, x).shape == reference[0].shape
    export_ncnn(model, tmp_path / "m.param", (3, 96, 128))
    ncnn_out = NcnnModel(tmp_path / "m.param")(x)
    assert len(ncnn_out) == 3 and all(abs(torch.as_tensor(g) - r).max() < 1e-3 for g, r in zip(ncnn_out, reference))
    save_weights(model, tmp_path / "m.safetensors")
    again = create_model(name, weights=tmp_path / "m.safetensors").eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(again(x), reference))
    assert again.scales == 3
    load_weights(create_model(name, scales=3, **TINY[name]), tmp_path / "m.safetensors")
