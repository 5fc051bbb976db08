"""YOLOv2 with a second prediction scale (stride 16), the small-object fix: shapes, anchors, assignment, loss,
decoding."""
import pytest
import torch

from betterconv import create_model
from betterconv.tasks.region_loss import DetectionLoss
from betterconv.tasks.detection import postprocess
from betterconv.tasks.region_loss import assign_to_scales

from conftest import count_params


def test_outputs_and_anchor_split():
    model = create_model("yolov2", num_classes=3, second_scale=True).eval()
    with torch.no_grad():
        coarse, fine = model(torch.randn(1, 3, 64, 96))
    assert coarse.shape == (1, 3 * 8, 2, 3) and fine.shape == (1, 2 * 8, 4, 6)
    coarse_anchors, fine_anchors = model.head_anchors()
    area = (model.anchors[:, 0] * model.anchors[:, 1]).sort().values
    # the two smallest anchors, in stride-16 cells (twice their stride-32 size), go to the fine scale
    torch.testing.assert_close((fine_anchors[:, 0] * fine_anchors[:, 1] / 4).sort().values, area[:2])
    assert len(coarse_anchors) == 3
    dets = postprocess((coarse, fine), model.head_anchors(), 3, (64, 96), conf_thresh=0.0, nms_iou=1.0,
                       max_det=1000)
    assert dets[0]["boxes"].shape[0] == (2 * 3 * 3 + 4 * 6 * 2) * 3  # every (box, class) of both scales


def test_truths_go_to_the_scale_of_their_best_anchor():
    anchors = [torch.tensor([[4.0, 4.0]]), torch.tensor([[1.0, 1.0]])]  # 128 px at stride 32, 16 px at stride 16
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 120.0, 130.0], [10.0, 10.0, 26.0, 28.0]]),
                "labels": torch.tensor([0, 1])}]
    coarse, fine = assign_to_scales(targets, anchors, [32, 16])
    assert coarse[0]["assign"].tolist() == [True, False] and fine[0]["assign"].tolist() == [False, True]


def test_loss_reaches_both_heads():
    torch.manual_seed(0)
    model = create_model("yolov2", num_classes=2, second_scale=True)
    loss_fn = DetectionLoss(model, batch_size=2, multiscale=False, seed=0)
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 20.0, 24.0], [10.0, 8.0, 60.0, 60.0]]),
                "labels": torch.tensor([0, 1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    loss = loss_fn(model, (torch.rand(2, 3, 64, 64), targets), step=0)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.pyramid.preds[0].weight.grad.abs().sum() > 0 and model.pyramid.pred.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("second_scale", [False, True])
def test_yolov2_width_mult_scales_every_layer(second_scale):
    # width 0.5: every convolution has half the channels (multiples of 8), so parameters fall about 4x; the
    # output layout (per scale, A*(5+C) channels at strides 32 and 16) does not change
    from betterconv.errors import BetterConvError

    full = create_model("yolov2", num_classes=3, second_scale=second_scale)
    half = create_model("yolov2", num_classes=3, second_scale=second_scale, width_mult=0.5)
    convs = {n: m for n, m in half.named_modules() if isinstance(m, torch.nn.Conv2d)}
    full_convs = {n: m for n, m in full.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert convs.keys() == full_convs.keys()
    for name, conv in convs.items():
        predicts = name in ("pyramid.pred", "pyramid.preds.0")  # A*(5+C) outputs at any width
        assert conv.out_channels == full_convs[name].out_channels // (1 if predicts else 2)
    ratio = count_params(full) / count_params(half)
    assert 3.5 < ratio < 4.1
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out_full, out_half = full(x), half(x)
    out_full = out_full if second_scale else (out_full,)
    out_half = out_half if second_scale else (out_half,)
    assert [o.shape for o in out_full] == [o.shape for o in out_half]
    with pytest.raises(BetterConvError, match="width_mult must be between"):
        create_model("yolov2", width_mult=0.05)
