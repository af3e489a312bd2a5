"""Measure how well the exported depth model follows a depth map and its prompt.

    python tools/eval_demo_depth.py --n 200

For held-out one-shape scenes (seeds >= 10,000,000) the UNet gets the scene's depth map
and a prompt that names a DIFFERENT shape colour and shape name (and a random
background), with the scene's size and position words, e.g. the scene is a large red
circle at the left and the prompt is "a large blue square at the left on a green
background". Text-to-image from pure noise, DPM++ 2M, 20 steps, CFG 7 (against the
empty prompt, with the same depth channel in both halves), 64x64.

Rows:
  * demo-shapes-depth + the rendered depth map;
  * demo-shapes-depth + the depth map estimated by models/depth/demo-dpt from the
    scene's rendered image (DPTImageProcessor + DPTForDepthEstimation, loaded from the
    folder);
  * demo-shapes (plain, no depth) on the same prompts and seeds;
  * control: demo-shapes-depth + the rendered depth map, with a prompt that keeps the
    scene's shape name (colours still changed), to separate "follows the silhouette"
    from "draws the prompted shape at the depth map's place".
Columns: IoU of the generated image's non-background region (checker palette mapping)
with the depth map's near region (> 0.5); position cell of the prompted-colour shape
(else the largest shape) vs the scene's; shape colour and background as prompted
(checker); shape class as prompted / as the depth silhouette (informative: the two
conflict by construction).

Both checkpoints are loaded from the exported files with the web UI's own loader
(webui.model_manager: probe + derive_configs + build_components); the sampling loop is
plain diffusers code (the engine has no depth request yet).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))
from train_demo_depth_model import (BASE_MODEL, OUT_MODEL, depth_condition, fmt_metrics, generate,  # noqa: E402
                                    load_checkpoint_components, log, measure, rendered_depth_cond,
                                    swapped_items)

ESTIMATOR = REPO / "models" / "depth" / "demo-dpt"


@torch.no_grad()
def estimate_depth(folder: Path, images: np.ndarray) -> torch.Tensor:
    """(N,1,64,64) predicted depth from the estimator folder, through its processor."""
    from transformers import DPTForDepthEstimation, DPTImageProcessor
    model = DPTForDepthEstimation.from_pretrained(folder).float().eval()
    proc = DPTImageProcessor.from_pretrained(folder)
    pix = proc(images=list(images), return_tensors="pt").pixel_values
    pred = torch.cat([model(pixel_values=pix[b:b + 128]).predicted_depth for b in range(0, len(pix), 128)])
    return pred[:, None]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--cfg", type=float, default=7.0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--depth-model", type=Path, default=OUT_MODEL)
    p.add_argument("--plain-model", type=Path, default=BASE_MODEL)
    p.add_argument("--estimator", type=Path, default=ESTIMATOR)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="")
    p.add_argument("--save-grid", default="", help="write a PNG grid of the first 16 scenes (scene | depth | gen)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    items = swapped_items(args.n, args.offset)
    log(f"{args.n} held-out scenes; e.g. scene '{items[0]['scene']['shapes'][0]}' -> prompt '{items[0]['prompt']}'")
    prompts, seeds = [it["prompt"] for it in items], [it["seed"] for it in items]
    results, images = {}, {}

    depth_comp, info = load_checkpoint_components(args.depth_model)
    assert info.variant == "depth" and info.in_channels == 5, info
    sf = float(depth_comp.vae.config.scaling_factor)
    c = depth_comp
    t0 = time.time()
    imgs = generate(c.unet, c.text_encoder, c.vae, c.tokenizer, prompts, seeds, rendered_depth_cond(items),
                    scaling_factor=sf, steps=args.steps, cfg=args.cfg)
    results["depth model + rendered depth"] = measure(items, imgs)
    images["rendered"] = imgs
    log(f"rendered depth ({time.time() - t0:.0f}s): {fmt_metrics(results['depth model + rendered depth'])}")

    same = swapped_items(args.n, args.offset, keep_shape=True)
    t0 = time.time()
    imgs = generate(c.unet, c.text_encoder, c.vae, c.tokenizer, [it["prompt"] for it in same], seeds,
                    rendered_depth_cond(same), scaling_factor=sf, steps=args.steps, cfg=args.cfg)
    key = "depth model + rendered depth, prompt names the scene's shape (control)"
    results[key] = measure(same, imgs)
    log(f"control, same shape name ({time.time() - t0:.0f}s): {fmt_metrics(results[key])}")

    if args.estimator.is_dir():
        from train_demo_depth_estimator import depth_metrics
        import demo_world as world
        scene_imgs = np.stack([world.render(it["scene"])[0] for it in items])
        est = estimate_depth(args.estimator, scene_imgs)
        em = depth_metrics(est[:, 0].numpy(), np.stack([it["depth"] for it in items]))
        log(f"estimator on these scenes: MAE {em['mae']:.4f} IoU {em['iou']:.4f}")
        results["estimator_on_scenes"] = em
        t0 = time.time()
        imgs = generate(c.unet, c.text_encoder, c.vae, c.tokenizer, prompts, seeds, depth_condition(est, (16, 16)),
                        scaling_factor=sf, steps=args.steps, cfg=args.cfg)
        results["depth model + estimated depth (demo-dpt)"] = measure(items, imgs)
        images["estimated"] = imgs
        log(f"estimated depth ({time.time() - t0:.0f}s): "
            f"{fmt_metrics(results['depth model + estimated depth (demo-dpt)'])}")
    del depth_comp, c

    plain, pinfo = load_checkpoint_components(args.plain_model)
    assert pinfo.in_channels == 4
    t0 = time.time()
    imgs = generate(plain.unet, plain.text_encoder, plain.vae, plain.tokenizer, prompts, seeds, None,
                    scaling_factor=float(plain.vae.config.scaling_factor), steps=args.steps, cfg=args.cfg)
    results["plain demo-shapes (no depth)"] = measure(items, imgs)
    images["plain"] = imgs
    log(f"plain model ({time.time() - t0:.0f}s): {fmt_metrics(results['plain demo-shapes (no depth)'])}")

    print(f"\n{args.n} held-out scenes, prompt with another colour/shape/background, "
          f"DPM++ 2M {args.steps} steps, CFG {args.cfg:g}\n")
    print("| model + depth input | IoU with depth | position | shape colour | background | class as prompt "
          "| class as depth |")
    print("|---|---|---|---|---|---|---|")
    for k, m in results.items():
        if "iou" in m and "position" in m:
            print(f"| {k} | {m['iou']:.3f} | {m['position'] * 100:.1f}% | {m['shape_colour'] * 100:.1f}% | "
                  f"{m['background'] * 100:.1f}% | {m['class_as_prompt'] * 100:.1f}% | "
                  f"{m['class_as_depth'] * 100:.1f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.save_grid:
        from PIL import Image
        rows = []
        for i in range(min(16, len(items))):
            dep = (np.repeat(items[i]["depth"][..., None], 3, -1) * 255).astype(np.uint8)
            import demo_world as world
            row = [world.render(items[i]["scene"])[0], dep] + [images[k][i] for k in images]
            rows.append(np.concatenate(row, axis=1))
        Image.fromarray(np.concatenate(rows, axis=0)).resize(
            (rows[0].shape[1] * 2, len(rows) * 128), Image.NEAREST).save(args.save_grid)
        log(f"grid (scene | depth | {' | '.join(images)}) -> {args.save_grid}")


if __name__ == "__main__":
    main()
