"""Train the small "demo-shapes" latent diffusion model on the procedural world
of tools/demo_world.py, and export it as one LDM-layout checkpoint.

Stages (run in this order; each resumes from its last checkpoint):

    python tools/train_demo_model.py --stage vae    --steps 3000
    python tools/train_demo_model.py --stage unet   --steps 12000
    python tools/train_demo_model.py --stage export

State lives OUTSIDE the repository (default /work/demo_training):
    data.npz             fixed training images (uint8) + scene seeds
    vae.pt               VAE training state (model, optimizer, step, RNG)
    vae_final.pt         frozen VAE + measured scaling factor
    latents.pt           training set encoded once by the frozen VAE
    unet.pt              UNet + text encoder training state (incl. EMA)
    unet_best.pt         EMA weights of the best in-training evaluation
Checkpoints are written atomically (temp file + rename) every --save-minutes.

Components are the real classes used by Stable Diffusion 1.x:
    transformers.CLIPTextModel (small config, real CLIP tokenizer/vocabulary),
    diffusers.UNet2DConditionModel (SD block order, cross-attention),
    diffusers.AutoencoderKL (4 latent channels, 4x downsampling).
Epsilon prediction, DDPM scaled_linear betas 0.00085..0.012, 1000 steps.
"""
from __future__ import annotations

import argparse
import copy
import json
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
import demo_world as world  # noqa: E402

TOKENIZER_DIR = REPO / "webui" / "configs" / "clip_tokenizer"
DEFAULT_STATE = Path("/work/demo_training")
EVAL_SEED_BASE = 10_000_000  # seeds >= this are never used for training

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
)

VAE_CONFIG = dict(
    in_channels=3, out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 64), layers_per_block=1, latent_channels=4,
    norm_num_groups=16, sample_size=64,
)

UNET_CONFIG = dict(
    sample_size=16, in_channels=4, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(32, 64, 128), layers_per_block=1, cross_attention_dim=128,
    attention_head_dim=4, norm_num_groups=16,
    # global text path: an attention-pooled text embedding added to the time embedding
    addition_embed_type="text", addition_embed_type_num_heads=4,
)

TEXT_CONFIG = dict(
    vocab_size=49408, hidden_size=128, intermediate_size=512, num_hidden_layers=3,
    num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
    projection_dim=128, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def fmt_eta(sec: float) -> str:
    sec = int(max(sec, 0))
    return f"{sec // 3600}h{sec % 3600 // 60:02d}m{sec % 60:02d}s"


def get_device(arg: str) -> torch.device:
    if arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(arg)


def make_vae():
    from diffusers import AutoencoderKL
    vae = AutoencoderKL(**VAE_CONFIG)
    # a near-deterministic posterior from the start: tiny log-variance
    conv = vae.encoder.conv_out
    c = VAE_CONFIG["latent_channels"]
    with torch.no_grad():
        conv.weight[c:].mul_(0.01)
        conv.bias[c:].fill_(-10.0)
    return vae


def make_unet():
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel(**UNET_CONFIG)


def make_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel
    return CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))


def make_tokenizer():
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))
    ids = tok("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407], ids
    assert tok.pad_token_id == 49407 and tok.model_max_length == 77
    return tok


def tokenize(tok, captions: list[str]) -> torch.Tensor:
    return tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def images_to_tensor(imgs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
def build_dataset(state: Path, n: int, seed: int) -> dict:
    path = state / "data.npz"
    if path.exists():
        d = np.load(path)
        if len(d["seeds"]) == n and int(d["base_seed"]) == seed:
            return dict(images=d["images"], depths=d["depths"], seeds=d["seeds"])
    log(f"rendering {n} training scenes")
    seeds = np.arange(n, dtype=np.int64) + seed * 1_000_000
    assert seeds.max() < EVAL_SEED_BASE
    images = np.zeros((n, 64, 64, 3), np.uint8)
    depths = np.zeros((n, 64, 64), np.uint8)
    for i, s in enumerate(seeds):
        img, dep = world.render(world.sample_scene(int(s)))
        images[i], depths[i] = img, (dep > 0.5)
    tmp = state / "data.tmp.npz"
    np.savez(tmp, images=images, depths=depths, seeds=seeds, base_seed=seed)
    os.replace(tmp, path)
    return dict(images=images, depths=depths, seeds=seeds)


def accuracy(records: list[dict]) -> dict:
    tot: dict[str, list[bool]] = {k: [] for k in world.ATTRIBUTES}
    for r in records:
        for k, v in r.items():
            tot[k] += v
    return {k: (float(np.mean(v)) if v else float("nan")) for k, v in tot.items()}


def fmt_acc(acc: dict) -> str:
    return " ".join(f"{k}={v * 100:.1f}%" for k, v in acc.items())


# --------------------------------------------------------------------------
# stage: VAE
# --------------------------------------------------------------------------
@torch.no_grad()
def eval_vae(vae, device, n=400, batch=100) -> dict:
    vae.eval()
    recs = []
    for b0 in range(0, n, batch):
        attrs = [world.sample_scene(EVAL_SEED_BASE + i) for i in range(b0, b0 + batch)]
        imgs = np.stack([world.render(a)[0] for a in attrs])
        x = images_to_tensor(imgs).to(device)
        rec = tensor_to_images(vae.decode(vae.encode(x).latent_dist.mode()).sample)
        for a, r in zip(attrs, rec):
            recs.append(world.score(a, world.check_image(r)))
    vae.train()
    return accuracy(recs)


def stage_vae(args, device):
    state = args.state_dir
    data = build_dataset(state, args.n_train, args.seed)
    torch.manual_seed(args.seed)
    vae = make_vae().to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr or 1e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    step = 0
    ck = state / "vae.pt"
    if ck.exists():
        s = torch.load(ck, weights_only=False)
        vae.load_state_dict(s["model"])
        opt.load_state_dict(s["opt"])
        gen.set_state(s["gen"])
        rng.bit_generator.state = s["rng"]
        step = s["step"]
        log(f"resumed VAE at step {step}")
    log(f"VAE params {n_params(vae):,}; training to step {args.steps}, batch {args.batch}")

    def save():
        atomic_save(dict(model=vae.state_dict(), opt=opt.state_dict(), gen=gen.get_state(),
                         rng=rng.bit_generator.state, step=step, config=VAE_CONFIG), ck)

    images = data["images"]
    masks = data["depths"]
    t_start, last_save, s0 = time.time(), time.time(), step
    vae.train()
    while step < args.steps:
        # cosine decay over the last 40% of the run
        frac = step / args.steps
        lr = (args.lr or 1e-3) * (1.0 if frac < 0.6 else 0.5 * (1 + math.cos(math.pi * (frac - 0.6) / 0.4)) * 0.95 + 0.05)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = rng.integers(0, len(images), args.batch)
        x = images_to_tensor(images[idx]).to(device)
        m = torch.from_numpy(masks[idx]).float().to(device)[:, None]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(device)
        rec = vae.decode(z).sample
        # shape pixels are 4-14% of the image: weight them up; also the shape's edge
        edge = (F.max_pool2d(m, 3, 1, 1) - (-F.max_pool2d(-m, 3, 1, 1))).clamp(0, 1)
        w = 1.0 + args.shape_weight * m + args.shape_weight * edge
        err = (rec - x)
        loss_rec = (w * (err.abs() + err.pow(2))).mean()
        kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).mean()
        loss = loss_rec + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0 or step == args.steps:
            el = time.time() - t_start
            sps = el / (step - s0)
            log(f"vae step {step}/{args.steps} loss {loss_rec.item():.4f} kl {kl.item():.2f} "
                f"lr {lr:.2e} {sps:.2f}s/step ETA {fmt_eta(sps * (args.steps - step))}")
        if step % args.eval_every == 0 or step == args.steps:
            acc = eval_vae(vae, device)
            log(f"vae step {step} recon accuracy: {fmt_acc(acc)}")
        if time.time() - last_save > args.save_minutes * 60 or step == args.steps:
            save()
            last_save = time.time()
        if args.max_minutes and time.time() - t_start > args.max_minutes * 60:
            save()
            log("chunk time limit reached; checkpoint saved, rerun to resume")
            return
    # finalise: measure scaling factor, final accuracy
    vae.eval()
    with torch.no_grad():
        lat = []
        for b0 in range(0, min(4000, len(images)), 200):
            lat.append(vae.encode(images_to_tensor(images[b0:b0 + 200]).to(device)).latent_dist.mean.cpu())
        lat = torch.cat(lat)
    sf = float(1.0 / lat.std())
    acc = eval_vae(vae, device, n=1000)
    log(f"VAE final: latent mean {lat.mean():.4f} std {lat.std():.4f} -> scaling_factor {sf:.5f}; "
        f"recon accuracy (1000 held-out scenes): {fmt_acc(acc)}")
    atomic_save(dict(model=vae.state_dict(), config=VAE_CONFIG, scaling_factor=sf, step=step,
                     recon_accuracy=acc), state / "vae_final.pt")
    (state / "vae_report.json").write_text(json.dumps(dict(step=step, scaling_factor=sf, recon_accuracy=acc), indent=1))


def load_frozen_vae(state: Path, device):
    s = torch.load(state / "vae_final.pt", weights_only=False)
    vae = make_vae()
    vae.load_state_dict(s["model"])
    vae.register_to_config(scaling_factor=s["scaling_factor"])
    vae.requires_grad_(False).eval().to(device)
    return vae, s["scaling_factor"]


# --------------------------------------------------------------------------
# sampling (plain diffusers code, independent of the web UI's engine)
# --------------------------------------------------------------------------
def make_sampler(kind: str = "dpmpp_2m"):
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler
    cfg = {k: v for k, v in SCHEDULER_CONFIG.items() if k not in ("clip_sample", "set_alpha_to_one")}
    if kind == "dpmpp_2m":
        return DPMSolverMultistepScheduler(**{k: v for k, v in cfg.items() if k != "steps_offset"},
                                           algorithm_type="dpmsolver++", solver_order=2)
    return DDPMScheduler(**cfg)


@torch.no_grad()
def encode_prompts(text_encoder, tok, prompts: list[str], device) -> torch.Tensor:
    return text_encoder(tokenize(tok, prompts).to(device)).last_hidden_state


@torch.no_grad()
def generate(unet, text_encoder, vae, tok, prompts: list[str], seeds: list[int], *, scaling_factor: float,
             steps: int = 20, cfg: float = 7.0, device="cpu", batch: int = 64) -> np.ndarray:
    """txt2img like StableDiffusionPipeline: DPM++ 2M, classifier-free guidance
    against the empty prompt, 64x64 output. Returns uint8 images (N,64,64,3)."""
    out = []
    for b0 in range(0, len(prompts), batch):
        ps, ss = prompts[b0:b0 + batch], seeds[b0:b0 + batch]
        sched = make_sampler("dpmpp_2m")
        sched.set_timesteps(steps)
        lat = torch.stack([torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(int(s))) for s in ss])
        lat = (lat * sched.init_noise_sigma).to(device)
        cond = encode_prompts(text_encoder, tok, ps, device)
        if cfg != 1.0:
            cond = torch.cat([encode_prompts(text_encoder, tok, [""] * len(ps), device), cond])
        for t in sched.timesteps:
            inp = torch.cat([lat, lat]) if cfg != 1.0 else lat
            inp = sched.scale_model_input(inp, t)
            eps = unet(inp, t, encoder_hidden_states=cond).sample
            if cfg != 1.0:
                eu, ec = eps.chunk(2)
                eps = eu + cfg * (ec - eu)
            lat = sched.step(eps, t, lat).prev_sample
        out.append(tensor_to_images(vae.decode(lat / scaling_factor).sample))
    return np.concatenate(out)


def eval_prompts(n: int, offset: int = 0, two_shape_prob: float = 0.0, full: bool = True):
    """Held-out evaluation scenes/prompts (seeds never used in training)."""
    items = []
    for i in range(n):
        seed = EVAL_SEED_BASE + 500_000 + offset + i
        a = world.sample_scene(seed, two_shape_prob=two_shape_prob)
        mention = world.full_mention(a) if full else world.random_mention(np.random.default_rng([seed, 7]), a)
        items.append((a, mention, world.caption_from_attrs(a, mention), seed))
    return items


def evaluate_generation(unet, text_encoder, vae, tok, sf, device, n=64, cfg=7.0, steps=20, offset=0,
                        two_shape_prob=0.0, full=True, return_images=False):
    items = eval_prompts(n, offset, two_shape_prob, full)
    imgs = generate(unet, text_encoder, vae, tok, [c for _, _, c, _ in items], [s for *_, s in items],
                    scaling_factor=sf, steps=steps, cfg=cfg, device=device)
    recs = [world.score(a, world.check_image(im), m) for (a, m, _, _), im in zip(items, imgs)]
    acc = accuracy(recs)
    return (acc, imgs, items) if return_images else acc


# --------------------------------------------------------------------------
# stage: UNet (+ text encoder)
# --------------------------------------------------------------------------
def encode_training_set(state: Path, vae, sf: float, data: dict, device) -> torch.Tensor:
    path = state / "latents.pt"
    if path.exists():
        s = torch.load(path, weights_only=False)
        if s["n"] == len(data["seeds"]) and abs(s["scaling_factor"] - sf) < 1e-9:
            return s["latents"]
    log(f"encoding {len(data['seeds'])} training images to latents (once)")
    lat = []
    with torch.no_grad():
        for b0 in range(0, len(data["images"]), 250):
            x = images_to_tensor(data["images"][b0:b0 + 250]).to(device)
            lat.append(vae.encode(x).latent_dist.mean.cpu() * sf)
    lat = torch.cat(lat)
    atomic_save(dict(latents=lat, n=len(lat), scaling_factor=sf), path)
    log(f"latents {tuple(lat.shape)} std {lat.std():.3f}")
    return lat


def training_noise(shape: tuple[int, ...], gen: torch.Generator, noise_offset: float,
                   pyramid_noise: float) -> torch.Tensor:
    """The noise of one training batch (on the CPU, from ``gen``)."""
    noise = torch.randn(shape, generator=gen)
    if noise_offset:
        # offset noise: SD's schedule leaks ~7% of the signal at t=999; for flat
        # backgrounds that leak is the per-channel latent mean, i.e. the background
        # colour, which the model would otherwise read from the (random) initial
        # noise instead of from the prompt.
        noise = noise + noise_offset * torch.randn(shape[0], shape[1], 1, 1, generator=gen)
    if pyramid_noise:
        # multi-resolution noise: the same leak carries the layout (low spatial
        # frequencies) at high t, so the model would take the shape's position from
        # the initial noise instead of the prompt; masking it forces the text path.
        b, c, h, w = shape
        for i, r in enumerate((8, 4, 2)):
            low = torch.randn(b, c, r, r, generator=gen)
            noise = noise + pyramid_noise ** (i + 1) * F.interpolate(low, size=(h, w), mode="bilinear")
        noise = noise / noise.std(dim=(1, 2, 3), keepdim=True)
    return noise


# --------------------------------------------------------------------------
# optional: attention supervision of the position words (--position-attention)
# --------------------------------------------------------------------------
POSITION_WORDS = ("left", "right", "top", "bottom", "center")


class RecordingCrossAttention:
    """A cross-attention processor computing softmax(QK^T)V explicitly (what diffusers' default
    does) and keeping the probabilities of the last call, so a loss can look at them."""

    def __init__(self):
        self.probs = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        v = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        self.probs = attn.get_attention_scores(q, k, None)
        out = attn.batch_to_head_dim(torch.bmm(self.probs, v))
        return attn.to_out[1](attn.to_out[0](out))


def record_cross_attention(unet) -> list[RecordingCrossAttention]:
    from diffusers.models.attention_processor import AttnProcessor2_0
    recorders = {name: RecordingCrossAttention() for name in unet.attn_processors if "attn2" in name}
    unet.set_attn_processor({name: recorders.get(name) or AttnProcessor2_0() for name in unet.attn_processors})
    return list(recorders.values())


def position_attention_loss(recorders, position_tokens: torch.Tensor, shape_masks: torch.Tensor) -> torch.Tensor:
    """1 - the share of the position words' attention (over the image) that falls on the shape,
    averaged over layers, heads and the samples that name a position. ``position_tokens`` (B, 77)
    marks the position words; ``shape_masks`` (B, 1, 64, 64) is the shape's silhouette."""
    batch = position_tokens.shape[0]
    used = position_tokens.any(dim=1)
    if not used.any():
        return torch.zeros(())
    losses = []
    for rec in recorders:
        probs = rec.probs.view(batch, -1, *rec.probs.shape[1:])  # (B, heads, HW, 77)
        attention = (probs * position_tokens[:, None, None, :]).sum(-1)  # (B, heads, HW)
        side = math.isqrt(attention.shape[-1])
        mask = F.adaptive_avg_pool2d(shape_masks, side).flatten(1)[:, None, :]
        share = (attention * mask).sum(-1) / attention.sum(-1).clamp(min=1e-8)
        losses.append(1 - share.mean(dim=1))
    return (torch.stack(losses).mean(0) * used).sum() / used.sum()



def stage_unet(args, device):
    from diffusers import DDPMScheduler
    state = args.state_dir
    data = build_dataset(state, args.n_train, args.seed)
    vae, sf = load_frozen_vae(state, device)
    latents = encode_training_set(state, vae, sf, data, device)
    attrs = [world.sample_scene(int(s)) for s in data["seeds"]]
    tok = make_tokenizer()
    torch.manual_seed(args.seed + 1)
    unet = make_unet().to(device)
    te = make_text_encoder().to(device)
    ema_unet, ema_te = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(te).requires_grad_(False)
    # The 49,408 x 128 token embedding stays at its random init (frozen): random
    # vectors are distinct inputs for the few dozen words of the grammar, and
    # updating 6.3M parameters every step was ~15% of a CPU step.
    # (--train-token-embedding lets a fine-tune move the grammar's word vectors after all.)
    te.get_input_embeddings().requires_grad_(args.train_token_embedding)
    params = [p for p in list(unet.parameters()) + list(te.parameters()) if p.requires_grad]
    ema_params = [p for p in list(ema_unet.parameters()) + list(ema_te.parameters())
                  if args.train_token_embedding or p.shape != te.get_input_embeddings().weight.shape]
    assert len(ema_params) == len(params)
    base_lr = args.lr or 6e-4
    opt = torch.optim.AdamW(params, lr=base_lr, weight_decay=0.01, fused=device.type in ("cpu", "cuda"))
    noise_sched = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k != "set_alpha_to_one"})
    acp = noise_sched.alphas_cumprod.to(device)
    gen = torch.Generator().manual_seed(args.seed + 2)
    rng = np.random.default_rng(args.seed + 3)
    step, best, history = 0, -1.0, []
    ck = state / "unet.pt"
    if ck.exists():
        s = torch.load(ck, weights_only=False)
        unet.load_state_dict(s["unet"]); te.load_state_dict(s["te"])
        ema_unet.load_state_dict(s["ema_unet"]); ema_te.load_state_dict(s["ema_te"])
        gen.set_state(s["gen"]); rng.bit_generator.state = s["rng"]
        step, best, history = s["step"], s["best"], s["history"]
        if len(s["opt"]["param_groups"][0]["params"]) == len(params):
            opt.load_state_dict(s["opt"])
        else:  # a fine-tune that trains other parameters than the run it continues
            log("the trained parameters changed: starting a fresh optimizer state")
        log(f"resumed UNet at step {step} (best eval score {best:.3f})")
    log(f"UNet params {n_params(unet):,}; text encoder params {n_params(te):,}; "
        f"training to step {args.steps}, batch {args.batch}, lr {base_lr}")

    def save():
        atomic_save(dict(unet=unet.state_dict(), te=te.state_dict(), ema_unet=ema_unet.state_dict(),
                         ema_te=ema_te.state_dict(), opt=opt.state_dict(), gen=gen.get_state(),
                         rng=rng.bit_generator.state, step=step, best=best, history=history,
                         scaling_factor=sf, unet_config=UNET_CONFIG, text_config=TEXT_CONFIG), ck)

    tok_cache: dict[str, torch.Tensor] = {}

    def ids_for(caps):
        out = []
        for c in caps:
            if c not in tok_cache:
                tok_cache[c] = tokenize(tok, [c])[0]
            out.append(tok_cache[c])
        return torch.stack(out)

    recorders, position_ids, masks = [], None, None
    if args.position_attention:
        recorders = record_cross_attention(unet)
        position_ids = torch.tensor([tok(w).input_ids[1] for w in POSITION_WORDS])
        masks = torch.from_numpy(data["depths"])  # (N, 64, 64) uint8 shape silhouettes
        log(f"position-word attention supervision, weight {args.position_attention}")

    unet.train(); te.train()
    t_start, last_save, s0 = time.time(), time.time(), step
    while step < args.steps:
        lr = base_lr * min(1.0, (step + 1) / 200)
        if args.lr_decay_start and step >= args.lr_decay_start:  # cosine to 10% at --steps
            f = (step - args.lr_decay_start) / max(1, args.steps - args.lr_decay_start)
            lr = base_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(f, 1.0))))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = rng.integers(0, len(latents), args.batch)
        caps = ["" if rng.random() < args.caption_dropout else world.caption_from_attrs(
                    attrs[i], world.random_mention(rng, attrs[i], p_position=args.position_mention))
                for i in idx]
        z0 = latents[idx].to(device)
        noise = training_noise(tuple(z0.shape), gen, args.noise_offset, args.pyramid_noise).to(device)
        t_uni = torch.randint(0, 1000, (args.batch,), generator=gen)
        t_hi = torch.randint(args.high_noise_from, 1000, (args.batch,), generator=gen)
        hi = torch.rand(args.batch, generator=gen) < args.high_noise_frac
        t = torch.where(hi, t_hi, t_uni).to(device)
        a = acp[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        ids = ids_for(caps)
        enc = te(ids.to(device)).last_hidden_state
        pred = unet(zt, t, encoder_hidden_states=enc).sample
        if args.snr_weight_cap:
            # epsilon loss = SNR * x0 loss: at high t (where layout is decided) x0 errors
            # barely count. Weight by 1 + 1/SNR (the v-prediction weighting), capped.
            snr = a.view(-1) / (1 - a.view(-1))
            w = (1 + 1 / snr).clamp(max=args.snr_weight_cap)
            per = (pred - noise).pow(2).mean(dim=(1, 2, 3))
            loss = (w * per).sum() / w.sum()
        else:
            loss = F.mse_loss(pred, noise)
        if recorders:  # one-shape scenes only: in two-shape captions each position names one shape
            one_shape = torch.tensor([len(attrs[i]["shapes"]) == 1 for i in idx])
            supervised = one_shape & (t.cpu() >= args.position_attention_from)  # high t: the shape is not visible
            position_tokens = torch.isin(ids, position_ids) & supervised[:, None]
            shape_masks = masks[idx].to(device, torch.float32)[:, None]
            loss = loss + args.position_attention * position_attention_loss(
                recorders, position_tokens.to(device), shape_masks)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        d = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - d)
        if step % 50 == 0 or step == args.steps:
            el = time.time() - t_start
            sps = el / (step - s0)
            log(f"unet step {step}/{args.steps} loss {loss.item():.4f} lr {lr:.2e} "
                f"{sps:.2f}s/step ETA {fmt_eta(sps * (args.steps - step))}")
        if step % args.eval_every == 0 or step == args.steps:
            t0 = time.time()
            acc = evaluate_generation(ema_unet, ema_te, vae, tok, sf, device, n=args.eval_n, cfg=7.0)
            score = float(np.mean(list(acc.values())))
            history.append(dict(step=step, acc=acc, score=score))
            log(f"eval step {step} (EMA, CFG 7, {args.eval_n} prompts, {time.time() - t0:.0f}s): "
                f"{fmt_acc(acc)} mean={score * 100:.1f}%")
            if score > best:
                best = score
                atomic_save(dict(unet=ema_unet.state_dict(), te=ema_te.state_dict(), step=step, acc=acc,
                                 score=score, scaling_factor=sf), state / "unet_best.pt")
                log(f"new best at step {step}")
            save()
            last_save = time.time()
            t_start, s0 = t_start + (time.time() - t0), s0  # keep s/step free of eval time
        if time.time() - last_save > args.save_minutes * 60:
            save()
            last_save = time.time()
        if args.max_minutes and time.time() - t_start > args.max_minutes * 60:
            save()
            log("chunk time limit reached; checkpoint saved, rerun to resume")
            return
    save()
    log("UNet training done")


def load_trained(state: Path, device, weights: str = "best"):
    """(unet, text_encoder, vae, scaling_factor, info) from the training state."""
    vae, sf = load_frozen_vae(state, device)
    unet, te = make_unet(), make_text_encoder()
    if weights == "best" and (state / "unet_best.pt").exists():
        s = torch.load(state / "unet_best.pt", weights_only=False)
        unet.load_state_dict(s["unet"]); te.load_state_dict(s["te"])
        info = dict(weights="best", step=s["step"], acc=s["acc"])
    else:
        s = torch.load(state / "unet.pt", weights_only=False)
        k = "" if weights == "raw" else "ema_"
        unet.load_state_dict(s[k + "unet"]); te.load_state_dict(s[k + "te"])
        info = dict(weights=weights if weights != "best" else "ema", step=s["step"])
    for m in (unet, te):
        m.requires_grad_(False).eval().to(device)
    return unet, te, vae, sf, info


# --------------------------------------------------------------------------
# stage: export
# --------------------------------------------------------------------------
def stage_export(args, device):
    from safetensors.torch import save_file
    sys.path.insert(0, str(REPO))
    from webui.model_manager.ldm_layout import diffusers_to_ldm, write_model_yaml
    unet, te, vae, sf, info = load_trained(args.state_dir, torch.device("cpu"), args.weights)
    vae.register_to_config(scaling_factor=sf)
    state = diffusers_to_ldm(unet=unet, vae=vae, text_encoder=te, family="sd1")
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "demo_model": "demo-shapes",
                                         "training_step": str(info["step"]), "scaling_factor": f"{sf:.6f}"})
    os.replace(tmp, args.out)
    yaml_path = args.out.with_suffix(".yaml")
    write_model_yaml(yaml_path, unet_config=dict(unet.config), vae_config=dict(vae.config),
                     text_encoder_config=te.config.to_dict(), scheduler_config=dict(SCHEDULER_CONFIG),
                     scaling_factor=sf)
    size = args.out.stat().st_size
    log(f"exported {len(state)} tensors ({info}) -> {args.out} ({size / 2**20:.1f} MiB) + {yaml_path}")
    assert size <= 30 * 2**20, "exported model is over 30 MB"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["vae", "unet", "export"], required=True)
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="total steps to train to (resumes below it)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--n-train", type=int, default=30000, help="size of the fixed training set")
    p.add_argument("--shape-weight", type=float, default=4.0, help="VAE loss weight on shape pixels")
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--save-minutes", type=float, default=3.0)
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop (after saving) after this long; 0 = no limit")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="auto")
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--high-noise-frac", type=float, default=0.3,
                   help="fraction of timesteps drawn from the high-noise band [--high-noise-from, 1000)")
    p.add_argument("--high-noise-from", type=int, default=500,
                   help="UNet: the extra timesteps (--high-noise-frac) are drawn from [this, 1000)")
    p.add_argument("--position-mention", type=float, default=0.6,
                   help="UNet: probability that a caption names a shape's position")
    p.add_argument("--train-token-embedding", action="store_true",
                   help="UNet: train the text encoder's token embedding too (frozen by default)")
    p.add_argument("--position-attention", type=float, default=0.0,
                   help="UNet: weight of a loss that steers the position words' cross-attention onto the shape")
    p.add_argument("--position-attention-from", type=int, default=0,
                   help="UNet: supervise the position words' attention only at timesteps >= this")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--noise-offset", type=float, default=0.1, help="UNet: offset-noise strength (0 = off)")
    p.add_argument("--snr-weight-cap", type=float, default=0.0,
                   help="UNet: weight the loss by min(1 + 1/SNR, cap) (0 = plain epsilon MSE)")
    p.add_argument("--lr-decay-start", type=int, default=0,
                   help="UNet: cosine-decay the lr from this step to 10%% at --steps (0 = constant lr)")
    p.add_argument("--pyramid-noise", type=float, default=0.0,
                   help="UNet: multi-resolution noise discount (8x8, 4x4, 2x2 scales; 0 = off)")
    p.add_argument("--eval-n", type=int, default=64, help="prompts in the in-training evaluation")
    p.add_argument("--out", type=Path, default=REPO / "models" / "Stable-diffusion" / "demo-shapes.safetensors")
    p.add_argument("--weights", choices=["best", "ema", "raw"], default="best", help="export: which UNet weights")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    device = get_device(args.device)
    log(f"stage {args.stage} on {device}, {torch.get_num_threads()} thread(s), state {args.state_dir}")
    if args.stage == "vae":
        args.steps = args.steps or 3000
        args.batch = args.batch or 16
        args.eval_every = args.eval_every or 500
        stage_vae(args, device)
    elif args.stage == "unet":
        args.steps = args.steps or 12000
        args.batch = args.batch or 32
        args.eval_every = args.eval_every or 1000
        stage_unet(args, device)
    else:
        stage_export(args, device)


if __name__ == "__main__":
    main()
