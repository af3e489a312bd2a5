"""Objective evaluation of the demo-shapes model.

Generates images from prompts sampled from the world's grammar with seeds never
used in training (txt2img, 64x64, 20 steps DPM++ 2M via diffusers'
DPMSolverMultistepScheduler, classifier-free guidance against the empty
prompt) and measures them with the checker in tools/demo_world.py: dominant
colour of the shape and background regions, shape class from the filled
region's geometry, centroid position (3x3 grid) and size (small/large).

Uses plain diffusers/transformers modules loaded from the training state
(tools/train_demo_model.py), not the web UI's engine.

    python tools/eval_demo_model.py                       # best weights, CFG 7 and 1
    python tools/eval_demo_model.py --n 300 --cfg 7 --grid /tmp/grid.png
    python tools/eval_demo_model.py --vae                 # VAE reconstruction accuracy only
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_demo_model as T  # noqa: E402

TARGETS = dict(shape_colour=0.90, background=0.95, shape=0.85, position=0.85, size=0.85)


def save_grid(imgs: np.ndarray, path: Path, cols: int = 8) -> None:
    from PIL import Image
    n = len(imgs)
    rows = (n + cols - 1) // cols
    grid = np.full((rows * 66, cols * 66, 3), 128, np.uint8)
    for i, im in enumerate(imgs):
        r, c = divmod(i, cols)
        grid[r * 66 + 1:r * 66 + 65, c * 66 + 1:c * 66 + 65] = im
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state-dir", type=Path, default=T.DEFAULT_STATE)
    p.add_argument("--weights", choices=["best", "ema", "raw"], default="best")
    p.add_argument("--n", type=int, default=200, help="number of prompts")
    p.add_argument("--cfg", type=float, nargs="+", default=[7.0, 1.0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--offset", type=int, default=100_000, help="eval seed offset (in-training eval uses 0..)")
    p.add_argument("--two-shape-prob", type=float, default=0.0)
    p.add_argument("--random-mention", action="store_true", help="omit optional caption parts at random")
    p.add_argument("--grid", type=Path, default=None, help="save a grid of the first 32 images (per CFG)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--vae", action="store_true", help="only measure VAE reconstruction accuracy")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = T.get_device("auto")
    result = {}
    if args.vae:
        vae, sf = T.load_frozen_vae(args.state_dir, device)
        acc = T.eval_vae(vae, device, n=args.n)
        print(f"VAE reconstruction accuracy ({args.n} held-out scenes): {T.fmt_acc(acc)}")
        result["vae_recon"] = acc
    else:
        unet, te, vae, sf, info = T.load_trained(args.state_dir, device, args.weights)
        tok = T.make_tokenizer()
        print(f"weights: {info}")
        result["weights"] = {k: v for k, v in info.items() if k != "acc"}
        for cfg in args.cfg:
            t0 = time.time()
            acc, imgs, items = T.evaluate_generation(unet, te, vae, tok, sf, device, n=args.n, cfg=cfg,
                                                     steps=args.steps, offset=args.offset,
                                                     two_shape_prob=args.two_shape_prob,
                                                     full=not args.random_mention, return_images=True)
            ok = " ".join(f"{k}:{'met' if acc[k] >= v else 'not met'}" for k, v in TARGETS.items())
            print(f"CFG {cfg:g}, {args.steps} steps DPM++ 2M, {args.n} prompts ({time.time() - t0:.0f}s): "
                  f"{T.fmt_acc(acc)}\n  targets: {ok}")
            result[f"cfg{cfg:g}"] = acc
            if args.grid:
                g = args.grid.with_name(f"{args.grid.stem}_cfg{cfg:g}{args.grid.suffix}")
                save_grid(imgs[:32], g)
                (g.with_suffix(".txt")).write_text("\n".join(c for _, _, c, _ in items[:32]) + "\n")
                print(f"  grid: {g}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
