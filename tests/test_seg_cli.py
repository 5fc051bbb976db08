"""`betterconv train/eval/predict seg` end to end on a small generated dataset, and bad data at the command line."""
import json

import numpy as np
import pytest
from PIL import Image

from conftest import make_seg_dataset


def test_train_writes_checkpoints_history_and_weights(trained_seg):
    _, run = trained_seg
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"train_loss", "val_miou", "val_boundary_f"} <= set(history[-1])
    assert (run / "last.pt").is_file() and (run / "model.safetensors").is_file()


def test_eval_model_and_predictions_agree(trained_seg, cli, tmp_path):
    root, run = trained_seg
    code, out, _ = cli("eval", "seg", "--model", "deeplabv3_mobilenet_v2", "--weights",
                       run / "model.safetensors", "--data", f"folder:{root}", "--split", "val", "--json")
    assert code == 0
    direct = json.loads(out)
    assert {"miou", "pixel_acc", "per_class_iou", "boundary_f"} <= set(direct)
    images = sorted((root / "val" / "images").iterdir())
    code, out, _ = cli("predict", "seg", "--model", "deeplabv3_mobilenet_v2", "--weights",
                       run / "model.safetensors", "--output", tmp_path / "pred", *images)
    assert code == 0
    for image in images:
        label = np.asarray(Image.open(tmp_path / "pred" / f"{image.stem}.png"))
        assert label.shape == (48, 64) and label.max() < 3
        assert (tmp_path / "pred" / f"{image.stem}_overlay.png").is_file()
    code, out, _ = cli("eval", "seg", "--predictions", tmp_path / "pred", "--data", f"folder:{root}",
                       "--split", "val", "--json")
    assert code == 0
    from_files = json.loads(out)
    assert from_files["miou"] == pytest.approx(direct["miou"], abs=1e-9)
    assert from_files["pixel_acc"] == pytest.approx(direct["pixel_acc"], abs=1e-9)


def test_bad_data_names_the_file_or_is_skipped(trained_seg, cli, tmp_path):
    root, run = trained_seg
    bad = make_seg_dataset(tmp_path / "bad", n=3, seed=1)
    Image.fromarray(np.full((48, 64), 7, np.uint8)).save(bad / "val" / "masks" / "val1.png")  # class 7 of 3
    (bad / "val" / "images" / "val2.png").write_bytes(b"not an image")
    argv = ["eval", "seg", "--model", "deeplabv3_mobilenet_v2", "--weights", run / "model.safetensors",
            "--data", f"folder:{bad}", "--split", "val"]
    code, _, err = cli(*argv)
    assert code != 0 and ("val1.png" in err or "val2.png" in err)
    assert "Traceback" not in err  # progress bars share stderr: the message is the last line
    assert err.replace("\r", "\n").strip().splitlines()[-1].startswith("betterconv: error: ")
    code, out, _ = cli(*argv, "--skip-bad")
    assert code == 0 and "(1 images of" in out
    code, _, err = cli("eval", "seg", "--predictions", tmp_path / "nothing", "--data", f"folder:{root}")
    assert code != 0 and "no prediction for val0.png" in err


def test_export_last_keeps_the_final_epoch_and_clips_gradients(trained_seg, tmp_path, cli):
    """`--export last` (a final model whose validation split is the test set) must not pick an epoch on it;
    the default exports the best epoch. `--grad-clip` and `--warmup-steps` reach the trainer's checkpoint."""
    import torch
    from safetensors.torch import load_file

    root, best_run = trained_seg

    def same(weights, checkpoint):
        saved = load_file(weights)
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
        return all(torch.equal(saved[k], state[k]) for k in saved)

    assert same(best_run / "model.safetensors", best_run / "best.pt")
    run = tmp_path / "run"
    code, _, _ = cli("train", "seg", "--model", "deeplabv3_mobilenet_v2", "--arg", "width_mult=0.35", "--data",
                     f"folder:{root}", "--epochs", "2", "--batch-size", "2", "--crop-size", "32", "--lr", "0.01",
                     "--workers", "0", "--output", run, "--export", "last", "--grad-clip", "1.0",
                     "--warmup-steps", "3")
    assert code == 0
    assert same(run / "model.safetensors", run / "last.pt")
    args = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["args"]
    assert (args["grad_clip"], args["warmup_steps"]) == (1.0, 3)


def test_export_chooses_between_best_and_last(tmp_path):
    import torch
    from safetensors.torch import load_file

    from betterconv.commands.segmentation import _export_weights
    from betterconv import create_model

    model = create_model("fcn32s_mobilenet_v2", num_classes=3, width_mult=0.35)
    best = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"model": best}, tmp_path / "best.pt")
    _export_weights(model, tmp_path, ["a", "b", "c"], 32, use_best=False)
    last = load_file(tmp_path / "model.safetensors")
    assert all(torch.equal(last[k], v) for k, v in model.state_dict().items() if k in last)
    _export_weights(model, tmp_path, ["a", "b", "c"], 32)
    exported = load_file(tmp_path / "model.safetensors")
    assert all(torch.equal(exported[k], best[k]) for k in exported)


@pytest.mark.parametrize("flag,value", [("--grad-clip", "0"), ("--grad-clip", "-1"), ("--warmup-steps", "-5")])
def test_bad_clip_or_warmup_is_a_one_line_error(trained_seg, cli, tmp_path, flag, value):
    root, _ = trained_seg
    code, _, err = cli("train", "seg", "--model", "deeplabv3_mobilenet_v2", "--arg", "width_mult=0.35",
                       "--data", f"folder:{root}", "--epochs", "1", "--batch-size", "2", "--crop-size", "32",
                       "--workers", "0", "--output", tmp_path / "run", flag, value)
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert ("warm-up" if "warmup" in flag else "clipping") in err
    assert not (tmp_path / "run" / "last.pt").exists()
