"""The depthwise-separable cost formula: analytic MACs equal what the profiler counts."""
from betterconv.analysis.conv_cost import conv_cost_table


def test_analytic_macs_equal_counted_macs():
    rows = conv_cost_table(kernels=(1, 3, 5, 7), shapes=((8, 9), (24, 9)), repeats=1)
    for r in rows:
        assert r.standard_macs_counted == r.standard_macs == 81 * r.channels ** 2 * r.kernel ** 2
        assert r.separable_macs_counted == r.separable_macs == 81 * r.channels * (r.kernel ** 2 + r.channels)
    one = next(r for r in rows if r.kernel == 1)
    assert one.mac_ratio < 1  # a 1x1 "separable" layer only adds work
    seven = [r for r in rows if r.kernel == 7]
    assert all(r.mac_ratio == 49 * r.channels / (49 + r.channels) for r in seven)


def test_bench_conv_command(cli, tmp_path):
    out = tmp_path / "conv.json"
    code, printed, _ = cli("bench", "conv", "--kernels", "3", "--shapes", "8@7", "--repeats", "1", "--output", out)
    assert code == 0 and "MAC ratio" in printed and out.is_file()
