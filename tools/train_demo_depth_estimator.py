"""Train "demo-dpt": a tiny monocular depth estimator for the demo world, with the real
``transformers.DPTForDepthEstimation`` architecture (non-hybrid ViT DPT, like
Intel/dpt-large, only tiny), and save it as a transformers folder.

    python tools/train_demo_depth_estimator.py --stage train --steps 3500
    python tools/train_demo_depth_estimator.py --stage export      # -> models/depth/demo-dpt/
    python tools/train_demo_depth_estimator.py --stage eval --n 500

Input: an RGB 64x64 image, rescaled to [0, 1] and normalised with mean 0.5 / std 0.5
(what the saved DPTImageProcessor does). Target: the rendered depth map of
tools/demo_world.py (background 0, shapes 1: near = large, like DPT's relative
inverse depth). Output: ``predicted_depth`` of shape (B, 64, 64) for 64x64 input
(reassemble factors 2, 1, 0.5, 0.25 on the 8x8 patch grid instead of DPT's 4, 2, 1,
0.5, so the head's final 2x upsampling lands on the input resolution).

The folder loads offline with ``DPTForDepthEstimation.from_pretrained(folder)`` and
``DPTImageProcessor.from_pretrained(folder)``. Training is deterministic from --seed and
resumable (state in /work/demo_depth_training/estimator.pt, saved every few minutes).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import demo_world as world  # noqa: E402
from train_demo_depth_model import (DEFAULT_CACHE, DEFAULT_STATE, EVAL_SEED_BASE, atomic_save,  # noqa: E402
                                    build_dataset, fmt_eta, log)

OUT_DIR = REPO / "models" / "depth" / "demo-dpt"

DPT_CONFIG = dict(
    image_size=64, patch_size=8, num_channels=3, is_hybrid=False,
    hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
    hidden_act="gelu", qkv_bias=True,
    backbone_out_indices=[0, 1, 2, 3], readout_type="project",
    reassemble_factors=[2, 1, 0.5, 0.25], neck_hidden_sizes=[32, 64, 64, 64], fusion_hidden_size=32,
    head_in_index=-1, use_batch_norm_in_fusion_residual=False,
)

PROCESSOR_CONFIG = dict(
    do_resize=True, size={"height": 64, "width": 64}, keep_aspect_ratio=False, ensure_multiple_of=1,
    do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5, 0.5, 0.5],
    image_std=[0.5, 0.5, 0.5], do_pad=False,
)


def make_model():
    from transformers import DPTConfig, DPTForDepthEstimation
    return DPTForDepthEstimation(DPTConfig(**DPT_CONFIG))


def to_pixels(imgs: np.ndarray) -> torch.Tensor:
    """uint8 (N,64,64,3) -> normalised (N,3,64,64): (x/255 - 0.5) / 0.5."""
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def eval_scenes(n: int, offset: int = 0):
    attrs = [world.sample_scene(EVAL_SEED_BASE + 800_000 + offset + i) for i in range(n)]
    r = [world.render(a) for a in attrs]
    return np.stack([x[0] for x in r]), np.stack([x[1] for x in r])


@torch.no_grad()
def predict(model, imgs: np.ndarray, batch: int = 128) -> np.ndarray:
    out = []
    for b0 in range(0, len(imgs), batch):
        out.append(model(pixel_values=to_pixels(imgs[b0:b0 + batch]).to(model.dtype)).predicted_depth.float())
    return torch.cat(out).numpy()


def depth_metrics(pred: np.ndarray, true: np.ndarray) -> dict:
    """Mean absolute error of the depth map, and IoU of pred > 0.5 vs the shape mask
    (per image, averaged; plus pooled over all pixels)."""
    p, t = pred > 0.5, true > 0.5
    inter = (p & t).sum((1, 2))
    union = (p | t).sum((1, 2))
    return dict(mae=float(np.abs(pred - true).mean()), iou=float(np.mean(inter / np.maximum(union, 1))),
                iou_pooled=float(inter.sum() / max(1, union.sum())), n=len(pred))


def stage_train(args):
    state = args.state_dir
    data = build_dataset(state, args.cache_dir)
    images, depths = data["images"], data["depths"]
    torch.manual_seed(args.seed)
    model = make_model()
    # transformers initialises every conv with N(0, 0.02) and zero bias: through the neck
    # and head the signal shrinks to ~1e-4, and the head's final ReLU soon outputs 0
    # everywhere (no gradient: the first run stayed at "all background"). PyTorch's
    # default (Kaiming-uniform) init for the neck/head convs and a positive final bias
    # keep the output alive.
    for mod in list(model.neck.modules()) + list(model.head.modules()):
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            mod.reset_parameters()
    with torch.no_grad():
        model.head.head[4].bias.fill_(0.1)
    model.train()
    # The loss sees the head's output before its final ReLU where the target is near
    # (so a pixel pushed below zero still gets a gradient back up) and after it where the
    # target is background (0 is exact there). With the plain output, the first steps
    # push everything towards the median (0), the ReLU closes and training stops.
    pre_relu = {}
    model.head.head[4].register_forward_hook(lambda mod, inp, out: pre_relu.__setitem__("x", out[:, 0]))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed + 1)
    rng = np.random.default_rng(args.seed + 2)
    step, history = 0, []
    ck = state / "estimator.pt"
    if ck.exists():
        s = torch.load(ck, weights_only=False)
        model.load_state_dict(s["model"]); opt.load_state_dict(s["opt"])
        gen.set_state(s["gen"]); rng.bit_generator.state = s["rng"]
        step, history = s["step"], s["history"]
        log(f"resumed estimator at step {step}")
    log(f"DPT params {sum(p.numel() for p in model.parameters()):,}; training to step {args.steps}, "
        f"batch {args.batch}, lr {args.lr}")

    def save():
        atomic_save(dict(model=model.state_dict(), opt=opt.state_dict(), gen=gen.get_state(),
                         rng=rng.bit_generator.state, step=step, history=history, config=DPT_CONFIG), ck)

    ev_imgs, ev_depths = eval_scenes(256, offset=10_000)  # in-training check (not the reported set)
    t_start, last_save, s0 = time.time(), time.time(), step
    while step < args.steps:
        lr = args.lr * min(1.0, (step + 1) / 100)
        f = step / args.steps
        lr *= 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * f))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = rng.integers(0, len(images), args.batch)
        x = to_pixels(images[idx])
        y = torch.from_numpy(depths[idx]).float()
        flip = torch.rand(args.batch, generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        y = torch.where(flip.view(-1, 1, 1), y.flip(-1), y)
        # mild pixel noise on half the batch (generated images are not perfectly flat)
        amp = 0.1 * torch.rand(args.batch, 1, 1, 1, generator=gen) * (torch.rand(args.batch, 1, 1, 1, generator=gen) < 0.5)
        x = x + amp * torch.randn(x.shape, generator=gen)
        pred = model(pixel_values=x).predicted_depth
        pred = torch.where(y > 0.5, pre_relu["x"], pred)
        err = pred - y
        loss = err.abs().mean() + err.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0 or step == args.steps:
            sps = (time.time() - t_start) / (step - s0)
            log(f"estimator step {step}/{args.steps} loss {loss.item():.4f} lr {lr:.2e} {sps:.2f}s/step "
                f"ETA {fmt_eta(sps * (args.steps - step))}")
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            m = depth_metrics(predict(model, ev_imgs), ev_depths)
            model.train()
            history.append(dict(step=step, **m))
            log(f"estimator eval step {step}: MAE {m['mae']:.4f} IoU {m['iou']:.4f} (256 held-out scenes)")
            save()
            last_save = time.time()
        if time.time() - last_save > args.save_minutes * 60:
            save()
            last_save = time.time()
        if args.max_minutes and time.time() - t_start > args.max_minutes * 60:
            save()
            log("chunk time limit reached; checkpoint saved, rerun to resume")
            return
    save()
    log("estimator training done")


def stage_export(args):
    from transformers import DPTImageProcessor
    s = torch.load(args.state_dir / "estimator.pt", weights_only=False)
    model = make_model()
    model.load_state_dict(s["model"])
    model.eval().half()
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    DPTImageProcessor(**PROCESSOR_CONFIG).save_pretrained(args.out)
    size = sum(p.stat().st_size for p in args.out.iterdir())
    log(f"exported step {s['step']} -> {args.out} ({size / 2**20:.2f} MiB): {sorted(p.name for p in args.out.iterdir())}")


def stage_eval(args):
    """Load the exported folder exactly as a user would, and measure it on held-out scenes."""
    from transformers import DPTForDepthEstimation, DPTImageProcessor
    model = DPTForDepthEstimation.from_pretrained(args.out).float().eval()
    proc = DPTImageProcessor.from_pretrained(args.out)
    imgs, true = eval_scenes(args.n)
    # through the processor, as the engine would call it
    pix = proc(images=list(imgs), return_tensors="pt").pixel_values
    assert pix.shape == (len(imgs), 3, 64, 64), pix.shape
    assert torch.allclose(pix, to_pixels(imgs), atol=1e-5), "processor output differs from (x/255-0.5)/0.5"
    with torch.no_grad():
        pred = torch.cat([model(pixel_values=pix[b:b + 128]).predicted_depth for b in range(0, len(pix), 128)])
    log(f"predicted_depth shape {tuple(pred.shape)} dtype {pred.dtype} range {pred.min():.3f}..{pred.max():.3f}")
    m = depth_metrics(pred.numpy(), true)
    log(f"demo-dpt on {args.n} held-out scenes (seeds {EVAL_SEED_BASE + 800_000}..): MAE {m['mae']:.4f}, "
        f"IoU(pred>0.5 vs shape mask) {m['iou']:.4f} per image, {m['iou_pooled']:.4f} pooled")
    if args.json:
        Path(args.json).write_text(json.dumps(m, indent=1))
    return m


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["train", "export", "eval"], required=True)
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--save-minutes", type=float, default=3.0)
    p.add_argument("--max-minutes", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=OUT_DIR)
    p.add_argument("--n", type=int, default=500, help="eval: held-out scenes")
    p.add_argument("--json", default="", help="eval: also write the numbers here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    if args.cache_dir and not args.cache_dir.exists():
        args.cache_dir = None
    log(f"stage {args.stage}, {torch.get_num_threads()} thread(s), state {args.state_dir}")
    {"train": stage_train, "export": stage_export, "eval": stage_eval}[args.stage](args)


if __name__ == "__main__":
    main()
