"""The command line: one-line errors, non-zero exit, no traceback; JSON output with the documented keys."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv,message", [
    (["profile", "mobilenet_v3"], "unknown model 'mobilenet_v3'"),
    (["profile", "mobilenet_v2", "--arg", "width_mul=0.5"], "unknown argument(s) width_mul"),
    (["profile", "mobilenet_v2", "--arg", "width_mult=0"], "width_mult must be between"),
    (["profile", "shufflenet_v1", "--arg", "groups=5"], "groups must be one of"),
    (["profile", "yolov2", "--input-size", "100", "100"], "divisible by 32, got 100x100"),
    (["profile", "deeplabv3_resnet50", "--arg", "output_stride=4"], "output_stride must be one of"),
    (["profile", "vgg16", "--input-size", "x", "1"], "invalid int value"),
    (["frobnicate"], "invalid choice"),
    (["profile", "mobilenet_v2", "--arg", "novalue"], "NAME=VALUE"),
])
def test_bad_arguments_give_one_line(cli, argv, message):
    code, out, err = cli(*argv)
    assert code != 0
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_console_script_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "betterconv.cli", "profile", "yolov2", "--input-size", "100", "100"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["betterconv: error: yolov2 needs height and width divisible by 32, "
                                                "got 100x100"]


def test_list(cli):
    code, out, _ = cli("list", "yolo*")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["yolov2", "yolov2_mobilenet_v2", "yolov2_tiny"]
