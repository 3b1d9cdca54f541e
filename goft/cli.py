"""The ``goft`` command line (also ``python -m goft``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _positive_int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not values or any(v < 2 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 2, got {text!r}")
    return values


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    methods = args.methods.split(",") if args.methods else list(bench.LAYER_METHODS)
    unknown = sorted(set(methods) - set(bench.LAYER_METHODS))
    if unknown:
        raise SystemExit(f"goft bench: --methods has unknown {unknown}; allowed: {', '.join(bench.LAYER_METHODS)}")
    if "frozen" not in methods:
        methods = ["frozen", *methods]
    bench.run(Path(args.out), args.dims, args.tokens, args.reps, device=args.device, e2e=not args.no_e2e,
              merge=not args.no_merge, methods=methods, dense_max_d=args.dense_max_d)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="goft", description="Givens-rotation orthogonal fine-tuning (GOFT, qGOFT)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("bench", help="speed and memory against the frozen layer, LoRA, OFT, BOFT, the dense approach",
                       description="Per-layer forward+backward time and saved bytes, rotation scaling in d, merge "
                                   "time, and an end-to-end MiniLM training step; interleaved medians in one run.")
    p.add_argument("--dims", type=_positive_int_list, default=[384, 768, 1024, 2048, 4096],
                   help="layer sizes d_in = d_out (default: 384,768,1024,2048,4096)")
    p.add_argument("--tokens", type=_positive_int_list, default=[512, 4096], help="tokens per step (default: 512,4096)")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions per method (default: 7)")
    p.add_argument("--methods", default="", help="comma-separated subset of the layer methods (default: all)")
    p.add_argument("--dense-max-d", type=int, default=2048,
                   help="largest d for the authors' dense approach, which costs O(L d^3) a step (default: 2048)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end MiniLM training step")
    p.add_argument("--no-merge", action="store_true", help="skip the 4096x4096 merge timing")
    p.add_argument("--out", default="results", help="directory for bench.jsonl and bench_layer.png (default: results)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
