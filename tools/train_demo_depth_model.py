"""Train "demo-shapes-depth": a depth-conditioned variant of the demo model, like
Stable Diffusion 2's 512-depth model, and export it as one LDM-layout checkpoint.

The UNet takes 5 input channels: the 4 latent channels followed by ONE depth
channel, ``torch.cat([latents, depth], dim=1)`` (depth last). The depth channel is
``depth_condition(depth, latent_size)`` from webui/engine/depth.py, the web UI's own (= diffusers'
StableDiffusionDepth2ImgPipeline.prepare_depth_map: bicubic resize to the latent
size, then per-image min/max normalisation to [-1, 1], near = large). Under
classifier-free guidance the same depth channel goes with the conditional and the
unconditional half.

Everything except the UNet comes from the shipped demo model and stays frozen: the
text encoder, tokenizer and VAE are loaded from
``models/Stable-diffusion/demo-shapes.safetensors`` with the project's own loader, so
the result reproduces from the repository alone. The UNet starts as the shipped UNet
with ``conv_in`` widened 4 -> 5 (depth-input weights zero: at step 0 it is exactly the
normal model) and is fine-tuned.

Stages (each resumes from its last checkpoint):

    python tools/train_demo_depth_model.py --stage train --steps 7000 --lr-decay-start 5000
    python tools/train_demo_depth_model.py --stage export

State lives OUTSIDE the repository (default /work/demo_depth_training):
    data.npz / latents.pt  the fixed 30,000-scene training set and its latents (built
                           once, or read from --cache-dir when present there and matching)
    depth_unet.pt          training state (UNet, EMA, optimizer, step, RNG)
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))
import demo_world as world  # noqa: E402
# The base model's training helpers, and the engine's own depth_condition, so that training and
# the web UI prepare the depth channel with one and the same function.
from train_demo_model import (SCHEDULER_CONFIG, atomic_save, fmt_eta, images_to_tensor, log,  # noqa: E402,F401
                              tensor_to_images, tokenize, training_noise)

from webui.engine.depth import depth_condition  # noqa: E402,F401  (also used by eval_demo_depth.py)

DEFAULT_STATE = Path("/work/demo_depth_training")
DEFAULT_CACHE = Path("/work/demo_training")  # the demo model's training state (read-only cache)
BASE_MODEL = REPO / "models" / "Stable-diffusion" / "demo-shapes.safetensors"
OUT_MODEL = REPO / "models" / "Stable-diffusion" / "demo-shapes-depth.safetensors"
EVAL_SEED_BASE = 10_000_000  # seeds >= this are never used for training
N_TRAIN = 30000



def load_checkpoint_components(path: Path, device="cpu", dtype=torch.float32):
    """UNet, VAE, text encoder, tokenizer of a checkpoint file, via the web UI's own loader."""
    from webui.model_manager.loader import build_components
    from webui.model_manager.probe import derive_configs, probe_tensors
    from webui.model_manager.tensor_files import open_tensor_file
    tensors = open_tensor_file(path)
    info = probe_tensors(tensors, path)
    configs = derive_configs(tensors, info)
    comp = build_components(tensors, configs, info.family, path.name, dtype, torch.device(device))
    for m in (comp.unet, comp.vae, comp.text_encoder):
        m.requires_grad_(False).eval()
    return comp, info


def widen_unet(unet4):
    """A 5-input-channel copy of a 4-channel UNet; the depth-input weights are zero."""
    from diffusers import UNet2DConditionModel
    cfg = dict(unet4.config)
    cfg["in_channels"] = 5
    unet5 = UNet2DConditionModel.from_config(cfg)
    sd = {k: v.clone() for k, v in unet4.state_dict().items()}
    w = sd["conv_in.weight"]
    sd["conv_in.weight"] = torch.cat([w, torch.zeros_like(w[:, :1])], dim=1)
    unet5.load_state_dict(sd, strict=True)
    return unet5


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
def build_dataset(state: Path, cache: Path | None) -> dict:
    """The fixed training set (seeds 0..29,999): images uint8, depth maps uint8 (0/1)."""
    for d in ([cache] if cache else []) + [state]:
        path = d / "data.npz"
        if path.exists():
            z = np.load(path)
            if len(z["seeds"]) == N_TRAIN and int(z["base_seed"]) == 0:
                log(f"training set from {path}")
                return dict(images=z["images"], depths=z["depths"], seeds=z["seeds"])
    log(f"rendering {N_TRAIN} training scenes")
    seeds = np.arange(N_TRAIN, dtype=np.int64)
    images = np.zeros((N_TRAIN, 64, 64, 3), np.uint8)
    depths = np.zeros((N_TRAIN, 64, 64), np.uint8)
    for i, s in enumerate(seeds):
        img, dep = world.render(world.sample_scene(int(s)))
        images[i], depths[i] = img, (dep > 0.5)
    tmp = state / "data.tmp.npz"
    np.savez(tmp, images=images, depths=depths, seeds=seeds, base_seed=0)
    os.replace(tmp, state / "data.npz")
    return dict(images=images, depths=depths, seeds=seeds)


def encode_training_set(state: Path, cache: Path | None, vae, sf: float, data: dict) -> torch.Tensor:
    for d in ([cache] if cache else []) + [state]:
        path = d / "latents.pt"
        if path.exists():
            s = torch.load(path, weights_only=False)
            if s["n"] == len(data["seeds"]) and abs(s["scaling_factor"] - sf) < 1e-6:
                log(f"latents from {path}")
                return s["latents"]
    log(f"encoding {len(data['seeds'])} training images with the shipped VAE (once)")
    lat = []
    with torch.no_grad():
        for b0 in range(0, len(data["images"]), 250):
            x = images_to_tensor(data["images"][b0:b0 + 250])
            lat.append(vae.encode(x).latent_dist.mean * sf)
    lat = torch.cat(lat)
    atomic_save(dict(latents=lat, n=len(lat), scaling_factor=sf), state / "latents.pt")
    return lat


def augment_depth(depth: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    """Make a (B,1,64,64) 0/1 depth map look like an estimated one, for a fraction p of
    the batch: +-1 px erosion/dilation, Gaussian blur (sigma 0.5-2.5 px), a smooth
    low-frequency bias, pixel noise, and a random gain/offset (undone by the
    normalisation, except for its interaction with the noise)."""
    b = depth.shape[0]
    pick = torch.rand(b, generator=gen) < p
    if not pick.any():
        return depth
    d = depth[pick]
    n = d.shape[0]
    morph = torch.randint(0, 3, (n,), generator=gen)  # 0 none, 1 dilate, 2 erode
    dil = F.max_pool2d(d, 3, 1, 1)
    ero = -F.max_pool2d(-d, 3, 1, 1)
    d = torch.where((morph == 1).view(-1, 1, 1, 1), dil, torch.where((morph == 2).view(-1, 1, 1, 1), ero, d))
    sigma = 0.5 + 2.0 * torch.rand(n, generator=gen)
    r = torch.arange(-7, 8, dtype=torch.float32)
    k = torch.exp(-0.5 * (r[None] / sigma[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)  # (n, 15)
    x = d.reshape(1, n, 64, 64)
    x = F.conv2d(F.pad(x, (7, 7, 0, 0), mode="replicate"), k.view(n, 1, 1, 15), groups=n)
    x = F.conv2d(F.pad(x, (0, 0, 7, 7), mode="replicate"), k.view(n, 1, 15, 1), groups=n)
    d = x.reshape(n, 1, 64, 64)
    low = F.interpolate(torch.randn(n, 1, 4, 4, generator=gen), size=(64, 64), mode="bilinear", align_corners=False)
    d = d + 0.08 * torch.rand(n, 1, 1, 1, generator=gen) * low
    d = d + 0.06 * torch.rand(n, 1, 1, 1, generator=gen) * torch.randn(n, 1, 64, 64, generator=gen)
    d = d * (0.5 + torch.rand(n, 1, 1, 1, generator=gen)) + 0.3 * torch.rand(n, 1, 1, 1, generator=gen)
    out = depth.clone()
    out[pick] = d
    return out


# --------------------------------------------------------------------------
# sampling (plain diffusers code)
# --------------------------------------------------------------------------
def make_sampler():
    from diffusers import DPMSolverMultistepScheduler
    cfg = {k: v for k, v in SCHEDULER_CONFIG.items() if k not in ("clip_sample", "set_alpha_to_one", "steps_offset")}
    return DPMSolverMultistepScheduler(**cfg, algorithm_type="dpmsolver++", solver_order=2)


@torch.no_grad()
def generate(unet, text_encoder, vae, tok, prompts: list[str], seeds: list[int], depth_cond=None, *,
             scaling_factor: float, steps: int = 20, cfg: float = 7.0, batch: int = 50) -> np.ndarray:
    """txt2img, DPM++ 2M, CFG against the empty prompt, 64x64. depth_cond: (N,1,16,16)
    from depth_condition(), or None for a 4-channel UNet. Returns uint8 (N,64,64,3)."""
    out = []
    for b0 in range(0, len(prompts), batch):
        ps, ss = prompts[b0:b0 + batch], seeds[b0:b0 + batch]
        sched = make_sampler()
        sched.set_timesteps(steps)
        lat = torch.stack([torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(int(s))) for s in ss])
        lat = lat * sched.init_noise_sigma
        cond = text_encoder(tokenize(tok, ps)).last_hidden_state
        if cfg != 1.0:
            cond = torch.cat([text_encoder(tokenize(tok, [""] * len(ps))).last_hidden_state, cond])
        dc = None
        if depth_cond is not None:
            dc = depth_cond[b0:b0 + batch]
            if cfg != 1.0:
                dc = torch.cat([dc, dc])  # same depth for the unconditional and conditional halves
        for t in sched.timesteps:
            inp = torch.cat([lat, lat]) if cfg != 1.0 else lat
            inp = sched.scale_model_input(inp, t)
            if dc is not None:
                inp = torch.cat([inp, dc.to(inp.dtype)], dim=1)
            eps = unet(inp, t, encoder_hidden_states=cond).sample
            if cfg != 1.0:
                eu, ec = eps.chunk(2)
                eps = eu + cfg * (ec - eu)
            lat = sched.step(eps, t, lat).prev_sample
        out.append(tensor_to_images(vae.decode(lat / scaling_factor).sample))
    return np.concatenate(out)


# --------------------------------------------------------------------------
# evaluation: held-out layouts with a prompt naming other colours and another shape
# --------------------------------------------------------------------------
def swapped_items(n: int, offset: int = 0, keep_shape: bool = False) -> list[dict]:
    """Held-out one-shape scenes (seeds >= 10,000,000); for each a prompt with a different
    shape colour, a different shape name (the scene's own with keep_shape), and a random
    background colour (differing from the new shape colour); size and position as in the
    scene."""
    items = []
    for i in range(n):
        seed = EVAL_SEED_BASE + 700_000 + offset + i
        a = world.sample_scene(seed, two_shape_prob=0.0)
        s = a["shapes"][0]
        rng = np.random.default_rng([seed, 11])
        colour = str(rng.choice([c for c in world.COLOUR_NAMES if c != s["colour"]]))
        shape = str(rng.choice([c for c in world.SHAPES if c != s["shape"]]))
        if keep_shape:
            shape = s["shape"]
        bg = str(rng.choice([c for c in world.COLOUR_NAMES if c != colour]))
        target = dict(seed=seed, background=bg, shapes=[dict(s, colour=colour, shape=shape)])
        _, depth = world.render(a)
        items.append(dict(seed=seed, scene=a, target=target, depth=depth,
                          prompt=world.caption_from_attrs(target, world.full_mention(target))))
    return items


def measure(items: list[dict], images: np.ndarray) -> dict:
    """Depth following (IoU of the non-background region with the depth map's near
    region; position cell of the prompted shape vs the scene's) and prompt following
    (shape colour, background, via the checker)."""
    iou, pos, colour, bg, cls_prompt, cls_depth = [], [], [], [], [], []
    for it, img in zip(items, images):
        m = world.check_image(img)
        cmap = world._nearest_colour_map(img)
        fg = cmap != world.COLOUR_NAMES.index(m["background"])
        near = it["depth"] > 0.5
        iou.append((fg & near).sum() / max(1, (fg | near).sum()))
        t, s = it["target"]["shapes"][0], it["scene"]["shapes"][0]
        by_colour = {r["colour"]: r for r in m["shapes"]}
        r = by_colour.get(t["colour"]) or (m["shapes"][0] if m["shapes"] else None)
        pos.append(r is not None and (r["col"], r["row"]) == (s["col"], s["row"]))
        colour.append(t["colour"] in by_colour)
        bg.append(m["background"] == it["target"]["background"])
        r = by_colour.get(t["colour"])
        cls_prompt.append(r is not None and r["shape"] == t["shape"])
        cls_depth.append(r is not None and r["shape"] == s["shape"])
    return dict(iou=float(np.mean(iou)), position=float(np.mean(pos)), shape_colour=float(np.mean(colour)),
                background=float(np.mean(bg)), class_as_prompt=float(np.mean(cls_prompt)),
                class_as_depth=float(np.mean(cls_depth)), n=len(items))


def fmt_metrics(m: dict) -> str:
    return (f"IoU {m['iou']:.3f} position {m['position'] * 100:.1f}% colour {m['shape_colour'] * 100:.1f}% "
            f"background {m['background'] * 100:.1f}% class(prompt) {m['class_as_prompt'] * 100:.1f}% "
            f"class(depth) {m['class_as_depth'] * 100:.1f}% (n={m['n']})")


def rendered_depth_cond(items: list[dict]) -> torch.Tensor:
    d = torch.from_numpy(np.stack([it["depth"] for it in items])).float()[:, None]
    return depth_condition(d, (16, 16))


# --------------------------------------------------------------------------
# stage: train
# --------------------------------------------------------------------------
def stage_train(args):
    from diffusers import DDPMScheduler
    state = args.state_dir
    comp, _ = load_checkpoint_components(args.base)
    te, vae, tok = comp.text_encoder, comp.vae, comp.tokenizer
    sf = float(vae.config.scaling_factor)
    data = build_dataset(state, args.cache_dir)
    latents = encode_training_set(state, args.cache_dir, vae, sf, data)
    depths = torch.from_numpy(data["depths"])  # uint8 (N,64,64)
    attrs = [world.sample_scene(int(s)) for s in data["seeds"]]
    unet = widen_unet(comp.unet)
    unet.requires_grad_(True).train()
    ema = copy.deepcopy(unet).requires_grad_(False).eval()
    params = [p for p in unet.parameters()]
    ema_params = [p for p in ema.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, fused=True)
    noise_sched = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k != "set_alpha_to_one"})
    acp = noise_sched.alphas_cumprod
    gen = torch.Generator().manual_seed(args.seed + 2)
    rng = np.random.default_rng(args.seed + 3)
    step, history = 0, []
    ck = state / "depth_unet.pt"
    if ck.exists():
        s = torch.load(ck, weights_only=False)
        unet.load_state_dict(s["unet"]); ema.load_state_dict(s["ema"]); opt.load_state_dict(s["opt"])
        gen.set_state(s["gen"]); rng.bit_generator.state = s["rng"]
        step, history = s["step"], s["history"]
        log(f"resumed at step {step}")
    log(f"depth UNet params {sum(p.numel() for p in params):,}; training to step {args.steps}, batch {args.batch}, "
        f"lr {args.lr}, depth augmentation p={args.depth_aug}")

    def save():
        atomic_save(dict(unet=unet.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(), gen=gen.get_state(),
                         rng=rng.bit_generator.state, step=step, history=history, scaling_factor=sf,
                         unet_config=dict(unet.config)), ck)

    eval_items = swapped_items(args.eval_n)
    eval_dc = rendered_depth_cond(eval_items)

    def run_eval():
        t0 = time.time()
        imgs = generate(ema, te, vae, tok, [it["prompt"] for it in eval_items], [it["seed"] for it in eval_items],
                        eval_dc, scaling_factor=sf, cfg=7.0)
        m = measure(eval_items, imgs)
        history.append(dict(step=step, metrics=m))
        log(f"eval step {step} (EMA, CFG 7, rendered depth, {time.time() - t0:.0f}s): {fmt_metrics(m)}")
        return time.time() - t0

    t_start, last_save, s0 = time.time(), time.time(), step
    while step < args.steps:
        lr = args.lr * min(1.0, (step + 1) / 100)
        if args.lr_decay_start and step >= args.lr_decay_start:
            f = (step - args.lr_decay_start) / max(1, args.steps - args.lr_decay_start)
            lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(f, 1.0))))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = rng.integers(0, len(latents), args.batch)
        caps = ["" if rng.random() < args.caption_dropout else world.caption_from_attrs(attrs[i], rng=rng)
                for i in idx]
        z0 = latents[idx]
        dep = depths[idx].float()[:, None]
        dep = augment_depth(dep, gen, args.depth_aug)
        dc = depth_condition(dep, tuple(z0.shape[-2:]))
        noise = training_noise(tuple(z0.shape), gen, args.noise_offset, args.pyramid_noise)
        t_uni = torch.randint(0, 1000, (args.batch,), generator=gen)
        t_hi = torch.randint(500, 1000, (args.batch,), generator=gen)
        hi = torch.rand(args.batch, generator=gen) < args.high_noise_frac
        t = torch.where(hi, t_hi, t_uni)
        a = acp[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        with torch.no_grad():
            enc = te(tokenize(tok, caps)).last_hidden_state
        pred = unet(torch.cat([zt, dc], dim=1), t, encoder_hidden_states=enc).sample
        snr = a.view(-1) / (1 - a.view(-1))
        w = (1 + 1 / snr).clamp(max=args.snr_weight_cap) if args.snr_weight_cap else torch.ones_like(snr)
        per = (pred - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (w * per).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        d = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - d)
        if step % 50 == 0 or step == args.steps:
            sps = (time.time() - t_start) / (step - s0)
            dn = unet.conv_in.weight[:, 4].norm().item()
            log(f"step {step}/{args.steps} loss {loss.item():.4f} lr {lr:.2e} |w_depth| {dn:.3f} "
                f"{sps:.2f}s/step ETA {fmt_eta(sps * (args.steps - step))}")
        if step % args.eval_every == 0 or step == args.steps:
            t_start += run_eval()
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
    log("training done")


# --------------------------------------------------------------------------
# stage: export
# --------------------------------------------------------------------------
def stage_export(args):
    from safetensors.torch import save_file
    from webui.model_manager.ldm_layout import diffusers_to_ldm, write_model_yaml
    comp, _ = load_checkpoint_components(args.base)
    s = torch.load(args.state_dir / "depth_unet.pt", weights_only=False)
    unet = widen_unet(comp.unet)
    unet.load_state_dict(s["ema" if args.weights == "ema" else "unet"])
    unet.eval()
    vae, te = comp.vae, comp.text_encoder
    sf = float(vae.config.scaling_factor)
    sd = diffusers_to_ldm(unet=unet, vae=vae, text_encoder=te, family="sd1")
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt", "demo_model": "demo-shapes-depth",
                                      "training_step": str(s["step"]), "weights": args.weights,
                                      "scaling_factor": f"{sf:.6f}", "depth_channel": "last (5th) input channel"})
    os.replace(tmp, args.out)
    yaml_path = args.out.with_suffix(".yaml")
    write_model_yaml(yaml_path, unet_config=dict(unet.config), vae_config=dict(vae.config),
                     text_encoder_config=te.config.to_dict(), scheduler_config=dict(SCHEDULER_CONFIG),
                     scaling_factor=sf)
    size = args.out.stat().st_size
    log(f"exported {len(sd)} tensors (step {s['step']}, {args.weights}) -> {args.out} ({size / 2**20:.1f} MiB) "
        f"+ {yaml_path}")
    assert size <= 30 * 2**20, "exported model is over 30 MB"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["train", "export"], required=True)
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                   help="read data.npz/latents.pt from here when present and matching (else built in --state-dir)")
    p.add_argument("--base", type=Path, default=BASE_MODEL, help="the shipped 4-channel demo model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=6000, help="total steps to train to (resumes below it)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--lr-decay-start", type=int, default=0, help="cosine-decay the lr from this step to 10%% at --steps")
    p.add_argument("--ema", type=float, default=0.998)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--depth-aug", type=float, default=0.5, help="fraction of depth maps blurred/noised")
    p.add_argument("--high-noise-frac", type=float, default=0.3)
    p.add_argument("--noise-offset", type=float, default=0.1)
    p.add_argument("--pyramid-noise", type=float, default=0.6)
    p.add_argument("--snr-weight-cap", type=float, default=20.0)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--eval-n", type=int, default=48)
    p.add_argument("--save-minutes", type=float, default=3.0)
    p.add_argument("--max-minutes", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=OUT_MODEL)
    p.add_argument("--weights", choices=["ema", "raw"], default="ema", help="export: which UNet weights")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    if args.cache_dir and not args.cache_dir.exists():
        args.cache_dir = None
    log(f"stage {args.stage}, {torch.get_num_threads()} thread(s), state {args.state_dir}")
    if args.stage == "train":
        stage_train(args)
    else:
        stage_export(args)


if __name__ == "__main__":
    main()
