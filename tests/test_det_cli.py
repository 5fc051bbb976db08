"""`betterconv anchors/train det/eval det/predict det` on coco8, and bad detection data at the command line."""
import json

import pytest


def test_predict_then_eval_from_json_equals_eval_from_model(trained_det, cli, tmp_path):
    data, run = trained_det
    weights = run / "model.safetensors"
    code, out, _ = cli("eval", "det", "--model", "yolov2_tiny", "--weights", weights, "--data",
                       f"yolo:{data / 'coco8'}", "--input-size", "128", "--conf-thresh", "0.001", "--json")
    assert code == 0
    direct = json.loads(out)
    assert {"voc07_map", "voc_map", "coco_map", "coco_map50", "coco_map75", "coco_map_small", "coco_map_medium",
            "coco_map_large", "per_class"} <= set(direct)
    images = sorted((data / "coco8" / "images" / "val").iterdir())
    code, out, _ = cli("predict", "det", "--model", "yolov2_tiny", "--weights", weights, "--input-size",
                       "128", "--conf-thresh", "0.001", "--output", tmp_path / "pred", *images)
    assert code == 0
    assert all((tmp_path / "pred" / f"{p.stem}.png").is_file() for p in images)
    code, out, _ = cli("eval", "det", "--predictions", tmp_path / "pred" / "detections.json", "--data",
                       f"yolo:{data / 'coco8'}", "--input-size", "128", "--json")
    assert code == 0
    from_json = json.loads(out)
    assert from_json["voc_map"] == pytest.approx(direct["voc_map"], abs=1e-6)
    code, out, _ = cli("eval", "det", "--model", "yolov2_tiny", "--weights", weights, "--data",
                       f"yolo:{data / 'coco8'}", "--input-size", "128", "--conf-thresh", "0.001", "--json",
                       "--engine", "ncnn")
    assert code == 0
    through_ncnn = json.loads(out)
    assert through_ncnn["voc_map"] == pytest.approx(direct["voc_map"], abs=2e-3)
    assert through_ncnn["coco_map"] == pytest.approx(direct["coco_map"], abs=2e-3)
    # the same predictions through the model exported to ncnn: same boxes, to float32 rounding
    code, out, _ = cli("predict", "det", "--model", "yolov2_tiny", "--weights", weights, "--input-size",
                       "128", "--conf-thresh", "0.01", "--engine", "ncnn", "--output", tmp_path / "ncnn", *images)
    assert code == 0
    code, _, _ = cli("predict", "det", "--model", "yolov2_tiny", "--weights", weights, "--input-size",
                     "128", "--conf-thresh", "0.01", "--output", tmp_path / "torch", *images)
    assert code == 0
    ncnn, torch_ = (json.loads((tmp_path / k / "detections.json").read_text()) for k in ("ncnn", "torch"))
    assert abs(len(ncnn) - len(torch_)) <= 2 and len(torch_) > 0

    def found(d, among):  # the same detection, to float32 rounding (order among near-equal scores may differ)
        return any((d["image_id"], d["category_id"]) == (e["image_id"], e["category_id"])
                   and d["bbox"] == pytest.approx(e["bbox"], abs=1e-2) and d["score"] == pytest.approx(e["score"],
                                                                                                     abs=1e-4)
                   for e in among)

    # a detection scored within rounding of the threshold may be kept by one engine only
    assert all(found(d, ncnn) for d in torch_ if d["score"] > 0.011)
    assert all(found(d, torch_) for d in ncnn if d["score"] > 0.011)


def test_anchors_command(cli, shared_data):
    code, out, _ = cli("anchors", "--data", f"yolo:{shared_data / 'coco128'}", "--split", "train2017", "-k",
                       "5", "--compare")
    assert code == 0 and "IoU k-means" in out and "Euclidean k-means" in out and "Faster R-CNN" in out


def test_bad_yolo_labels_name_file_and_line(cli, tmp_path):
    from PIL import Image

    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(tmp_path / "images" / "train" / "a.jpg")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n")
    code, _, err = cli("anchors", "--data", f"yolo:{tmp_path}", "--split", "train")
    assert code != 0 and "a.txt:2" in err and "Traceback" not in err


def test_train_ladder_start_hand_picked_anchors_and_offsets(shared_data, tmp_path, cli):
    # the ablation ladder's first rung: Faster R-CNN's 9 anchors at the input size, anchor-offset location
    from betterconv.weights import create_model
    from betterconv.tasks.anchors import faster_rcnn_anchors

    code, _, _ = cli("train", "det", "--model", "yolov2_tiny", "--data", f"yolo:{shared_data / 'coco8'}", "--epochs",
                     "1", "--batch-size", "2", "--input-size", "128", "--no-multiscale", "--anchors", "hand", "--arg",
                     "location=offset", "--arg", "width_mult=0.25", "--workers", "0", "--output", tmp_path)
    assert code == 0
    model = create_model("yolov2_tiny", weights=tmp_path / "model.safetensors")
    assert model.location == "offset" and model.num_anchors == 9
    expected = faster_rcnn_anchors() * 128 / 600 / 32
    assert model.anchors.numpy() == pytest.approx(expected, rel=1e-6)


def test_train_jitter_out_of_range_is_a_one_line_error(shared_data, tmp_path, cli):
    # darknet's cfg jitter moves each side by up to that fraction: 0.5 or more can leave no image
    code, _, err = cli("train", "det", "--model", "yolov2_tiny", "--data", f"yolo:{shared_data / 'coco8'}",
                       "--jitter", "0.6", "--epochs", "1", "--output", tmp_path)
    assert code == 2 and "jitter must be in [0, 0.5), got 0.6" in err and "Traceback" not in err
    assert not (tmp_path / "model.safetensors").exists()
