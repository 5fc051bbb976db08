"""The survey's fix for YOLOv2's small objects: prediction across scales (YOLOv3 §2.3) on Darknet-19 and on the
ImageNet MobileNetV2 backbone; shapes, anchor split, training signal, exports and saved weights."""
from __future__ import annotations

import json

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


# --- sliced inference (SAHI) -------------------------------------------------------------------------------------

def centre_box_forward(model, input_size):
    """Raw outputs that put one confident box of class 0, two cells wide, on the centre cell of every input: after
    decoding, each tile's detection is centred in that tile."""
    anchors = model.head_anchors()[0]
    cells = input_size // 32

    def forward(x):
        raw = torch.full((x.shape[0], len(anchors), 5 + model.num_classes, cells, cells), -20.0)
        c = cells // 2
        raw[:, 0, 0:2, c, c] = 0.0  # sigmoid(0) = 0.5: the centre of the cell
        raw[:, 0, 2] = torch.log(torch.tensor(2.0) / anchors[0, 0])  # w = 2 cells
        raw[:, 0, 3] = torch.log(torch.tensor(2.0) / anchors[0, 1])  # h = 2 cells
        raw[:, 0, 4, c, c] = 20.0  # objectness 1 at the centre cell only
        raw[:, 0, 5] = 20.0  # class 0
        return raw.flatten(1, 2)  # (B, A*(5+C), H, W)
    return forward


def test_sliced_detections_land_at_their_tiles_in_image_pixels():
    import sahi.slicing

    from betterconv.tasks.detection import sliced_detections

    model = create_model("yolov2_tiny", num_classes=2, width_mult=0.25).eval()
    image = torch.rand(3, 300, 500)
    out = sliced_detections(centre_box_forward(model, 96), model, image, 96, 160, overlap=0.25, conf_thresh=0.5,
                            nms_iou=0.99, full_image=False)
    tiles = sahi.slicing.get_slice_bboxes(300, 500, 160, 160, False, 0.25, 0.25)
    expected = sorted(((x1 + x2) / 2, (y1 + y2) / 2) for x1, y1, x2, y2 in tiles)
    centres = sorted(((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in out["boxes"].tolist())
    # the centre cell of an odd grid (3x3 at 96) is the tile's centre; each box is 2 cells = 2/3 of the tile wide
    assert len(centres) == len(tiles)
    for (cx, cy), (ex, ey) in zip(centres, expected):
        assert abs(cx - ex) < 1e-3 and abs(cy - ey) < 1e-3
    widths = (out["boxes"][:, 2] - out["boxes"][:, 0]).tolist()
    assert all(abs(w - 160 * 2 / 3) < 1e-3 for w in widths)


def test_one_tile_covering_the_image_is_the_plain_prediction_merged():
    """A slice larger than the image is one tile, the image itself: the plain prediction, through the merging NMS
    (which sees the boxes clipped to the image, as sahi's merge does)."""
    from torchvision.ops import batched_nms
    from torchvision.transforms.v2.functional import resize

    from betterconv.tasks.detection import model_outputs, postprocess, sliced_detections

    torch.manual_seed(0)
    model = create_model("yolov2_tiny", num_classes=2, width_mult=0.25).eval()
    image = torch.rand(3, 120, 150)
    for full_image in (False, True):  # the whole image again adds only exact duplicates
        sliced = sliced_detections(model, model, image, 64, 160, conf_thresh=0.05, full_image=full_image)
        with torch.no_grad():
            plain = postprocess(model_outputs(model(resize(image, [64, 64], antialias=True)[None])),
                                model.head_anchors(), 2, 64, 0.05, 0.45, image_sizes=[(120, 150)])[0]
        keep = batched_nms(plain["boxes"], plain["scores"], plain["labels"], 0.45)
        assert torch.allclose(sliced["boxes"], plain["boxes"][keep])
        assert torch.equal(sliced["labels"], plain["labels"][keep])


def test_slice_options_in_predict_and_eval(trained_det, tmp_path, cli):
    data, run = trained_det
    weights = str(run / "model.safetensors")
    images = sorted((data / "coco8" / "images" / "val").glob("*.jpg"))[:2]
    code, out, err = cli("predict", "det", "--weights", weights, "--input-size", "128", "--slice", "256",
                         "--output", str(tmp_path / "pred"), *map(str, images))
    assert code == 0, err
    assert len(json.loads((tmp_path / "pred" / "detections.json").read_text())) >= 0
    code, out, err = cli("eval", "det", "--weights", weights, "--input-size", "128", "--slice", "256",
                         "--data", f"yolo:{data / 'coco8'}", "--split", "val", "--json")
    assert code == 0, err
    assert set(json.loads(out)) >= {"voc07_map", "coco_map_small", "coco_ar_small"}
    code, _, err = cli("eval", "det", "--weights", weights, "--slice", "8", "--data", f"yolo:{data / 'coco8'}")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_mobilenet_v2_detector_normalises_its_own_input():
    """Detectors take x / 255; the MobileNetV2 detector's first layer maps it to its backbone weights'
    normalisation (ImageNet statistics, or TensorFlow's x / 127.5 - 1), exactly, as a trainable 1x1 depthwise conv."""
    x = torch.rand(1, 3, 64, 64)
    for name, mean, std in (("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                            ("tensorflow", (0.5,) * 3, (0.5,) * 3)):
        model = create_model("yolov2_mobilenet_v2", input_normalization=name, **TINY["yolov2_mobilenet_v2"])
        expected = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        assert torch.allclose(model.input_norm(x), expected, atol=1e-6)
    with pytest.raises(Exception, match="input_normalization must be one of"):
        create_model("yolov2_mobilenet_v2", input_normalization="caffe", **TINY["yolov2_mobilenet_v2"])


def test_train_det_takes_the_tflite_backbone_with_its_padding_and_normalisation(shared_data, tmp_path, cli):
    tflite = shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite"
    if not tflite.is_file():
        pytest.skip(f"{tflite} is absent")
    code, out, err = cli("train", "det", "--model", "yolov2_mobilenet_v2", "--arg", "scales=3", "--arg",
                         "head_channels=32", "--data", f"yolo:{shared_data / 'coco8'}", "--backbone-weights",
                         str(tflite), "--epochs", "1", "--batch-size", "2", "--input-size", "128",
                         "--no-multiscale", "--max-steps-per-epoch", "1", "--workers", "0", "--eval-images", "2",
                         "--output", str(tmp_path / "run"))
    assert code == 0, err
    model = create_model("yolov2_mobilenet_v2", weights=tmp_path / "run" / "model.safetensors")
    assert model.model_kwargs["padding"] == "tf_same" and model.model_kwargs["input_normalization"] == "tensorflow"
    assert model.scales == 3 and "backbone:" in out + err
