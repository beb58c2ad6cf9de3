"""`tracenet segment IMAGE --click X,Y`: one tap, one mask, and what it cost."""

from __future__ import annotations

import argparse

from tracenet.cli import UserError


def parse_click(text: str) -> tuple[int, int]:
    try:
        x, y = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--click must be X,Y in pixels (e.g. 120,80), got {text!r}"
        ) from None
    return x, y


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="photo to segment (PNG, JPEG, ...)")
    parser.add_argument(
        "--click", required=True, type=parse_click, metavar="X,Y", help="tap position in pixels"
    )
    parser.add_argument(
        "--checkpoint", help="model checkpoint (default: the pipeline's outputs/train/model.pt)"
    )
    parser.add_argument("--out", required=True, help="where to write the mask (PNG, 0/255)")
    parser.add_argument("--overlay", help="also write the image with the mask tinted (PNG)")
    parser.add_argument("--box", metavar="X0,Y0,X1,Y1", help="fix the mask region (image pixels)")
    parser.add_argument("--compare", action="store_true", help="also run FullNet and print both costs")


def _parse_box(text: str | None):
    if text is None:
        return None
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise UserError(f"--box must be X0,Y0,X1,Y1 in pixels, got {text!r}")
    return box


def run(args: argparse.Namespace) -> int:
    from tracenet.checkpoints import load_model
    from tracenet.images import overlay, read_rgb, save_png

    box = _parse_box(args.box)
    try:
        image = read_rgb(args.image)
    except ValueError as err:
        raise UserError(str(err)) from err
    model = load_model(args.checkpoint)
    modes = ("trace", "full") if args.compare else ("trace",)
    results = {}
    for mode in modes:
        try:
            results[mode] = model.segment(image, click=args.click, mode=mode, box=box)
        except (ValueError, TypeError) as err:
            raise UserError(str(err)) from err
    r = results["trace"]
    save_png(r.mask, args.out)
    if args.overlay:
        save_png(overlay(image, r.mask), args.overlay)
    print(f"score {r.score:.3f}  level P{r.level}  mask pixels {int(r.mask.sum())}  -> {args.out}")
    for mode, res in results.items():
        print(f"{mode:>5}: {res.macs / 1e9:8.3f} GMAC (multiply-accumulates)  {res.seconds * 1e3:8.1f} ms")
    if args.compare:
        full = results["full"]
        same = bool((full.mask == r.mask).all())
        print(
            f"trace/full MACs {r.macs / full.macs:.3f}, time {r.seconds / full.seconds:.3f}; masks identical: {same}"
        )
    return 0
