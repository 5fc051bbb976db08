"""The command line's front ends: argparse parsers and the functions they run, one module per command group.

    models          list, profile, zoo
    convert         convert
    heatmap         heatmap
    segmentation    train seg, eval seg, predict seg
    classification  train cls, eval cls, predict cls
    detection       anchors, train det, eval det, predict det
    export          export
    bench           bench conv, bench infer
    report          report

Each module's `add_parsers` registers its commands; `betterconv.cli.build_parser` calls them. `_common` holds what
they share: the parser class, option groups, `--arg` parsing, devices and backbone loading.
"""
