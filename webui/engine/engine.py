"""The generation engine: one denoising loop for every mode.

txt2img starts from noise; img2img from the encoded image noised to the denoising strength (A1111:
``int(steps * strength)`` steps actually run); inpainting is img2img under a mask (a normal model gets
the re-noised original outside the mask after every step; a 9-channel model reads mask and masked
image as extra input channels). Depth and other modes add their own extra channels the same way.
"""
from __future__ import annotations

import inspect
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from . import infotext
from .conditioning import encode_prompts
from .depth import depth_condition, depth_from_image, depth_to_image
from .prompt_parser import extract_lora_tags
from .images import blur_mask, fill_masked, masked_region, paste_back, prepare_mask, resize_image, to_images, \
    to_tensor, CropRegion
from .jobs import Job
from .request import MAX_SEED, GenerationRequest, GenerationResult, RequestError
from .samplers import build_scheduler, resolve

log = logging.getLogger(__name__)
VERSION = "sdwebui-0.1"


@dataclass
class Start:
    """Where the loop begins for one batch, and what it needs each step."""

    latents: Any
    timesteps: Any
    init_latents: Any = None  # clean latents of the init image (img2img/inpaint)
    latent_mask: Any = None  # 1 = repaint; blended each step for normal models
    extra_channels: Any = None  # concatenated to the UNet input (inpainting model: mask + masked image)


@dataclass
class Prepared:
    """Per-request work done once: sizes, seeds, the init image and mask in their final form."""

    width: int
    height: int
    seeds: list[int]
    subseeds: list[int]
    init_image: Any = None  # PIL, at width x height
    mask: Any = None  # PIL L, at width x height (blurred), white = repaint
    original: Any = None  # the full init image, for pasting back
    overlay_mask: Any = None  # blurred mask at the original's size
    region: CropRegion | None = None
    unfilled_image: Any = None  # the init image before "fill" painted over the mask (for depth)
    depth: Any = None  # depth-to-image: float tensor [height, width], larger = nearer
    infotext_extra: list[tuple[str, Any]] = field(default_factory=list)  # e.g. Lora hashes


class Engine:
    def __init__(self, models, outputs=None, hooks: Any = None):
        self.models = models
        self.outputs = outputs
        self.hooks = hooks

    # ---- public ---------------------------------------------------------------------------
    def generate(self, request: GenerationRequest, job: Job | None = None) -> GenerationResult:
        import torch

        request.validated()
        if self.hooks is not None:  # extensions may return a changed copy (validated again)
            request = self.hooks.before_request(request)
        job = job or Job(request)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        loaded = self.models.get(request.model, request.vae)
        if self.hooks is not None:
            self.hooks.model_loaded(loaded)
        timings["load"] = time.perf_counter() - started
        components = loaded.components
        device, dtype = self.models.device_and_dtype()
        prepared = self._prepare(request, loaded)
        if loaded.info.variant == "depth":
            t = time.perf_counter()
            self._prepare_depth(request, loaded, prepared)
            timings["depth"] = time.perf_counter() - t
        elif request.depth_map is not None:
            raise RequestError("model", f"{loaded.entry.name} is not a depth model, so it cannot use a depth map; "
                                        f"choose a depth checkpoint (5-channel UNet, like SD 2's 512-depth-ema)")
        sampler, schedule = resolve(request.sampler, request.schedule)
        _, lora_tags = extract_lora_tags(request.prompt)
        lora_hashes = self.models.apply_loras(loaded, lora_tags)  # none named: the original weights
        if lora_hashes:
            prepared.infotext_extra.append(("Lora hashes", ", ".join(f"{n}: {h}" for n, h in lora_hashes)))

        t = time.perf_counter()
        with torch.inference_mode():
            embeddings, _ = self.models.embeddings_for(loaded)
            conditioning = encode_prompts(components, request.prompt, request.negative_prompt, request.clip_skip,
                                          request.steps, device, embeddings)
        if conditioning.embeddings_used:
            prepared.infotext_extra.append(("TI hashes", ", ".join(f"{e.name}: {e.short_hash}"
                                                                   for e in conditioning.embeddings_used)))
        timings["conditioning"] = time.perf_counter() - t

        result = GenerationResult([], [], [], [], model_title=loaded.title, request=request)
        if prepared.depth is not None:
            result.depth_map = depth_to_image(prepared.depth)
        job.progress.image_count = request.n_iter
        sampling = decoding = 0.0
        for batch_index in range(request.n_iter):
            if job.interrupted:
                break
            job.skipped = False
            job.progress.image_index = batch_index
            first = batch_index * request.batch_size
            seeds = prepared.seeds[first:first + request.batch_size]
            subseeds = prepared.subseeds[first:first + request.batch_size]
            t = time.perf_counter()
            with torch.inference_mode():
                latents = self._sample(request, loaded, prepared, sampler, schedule, seeds, subseeds, conditioning,
                                       job, device, dtype)
            sampling += time.perf_counter() - t
            t = time.perf_counter()
            with torch.inference_mode():
                images = self._decode(components, latents)
            if self.hooks is not None:
                images = self.hooks.images_decoded(request, images, seeds, batch_index)
            decoding += time.perf_counter() - t
            for i, image in enumerate(images):
                if prepared.original is not None:
                    image = paste_back(image, prepared.original, prepared.overlay_mask, prepared.region)
                text = self.infotext(request, loaded, prepared, seeds[i], subseeds[i], sampler.name, schedule.label)
                if self.hooks is not None:
                    text = self.hooks.before_save(request, image, seeds[i], text,
                                                  bool(request.save_images and self.outputs is not None))
                result.images.append(image)
                result.seeds.append(seeds[i])
                result.subseeds.append(subseeds[i])
                result.infotexts.append(text)
                if request.save_images and self.outputs is not None:
                    result.paths.append(str(self.outputs.save(image, text, request.mode, seeds[i],
                                                              request.output_format)))
        result.interrupted = job.interrupted
        timings.update(sampling=sampling, decode=decoding, total=time.perf_counter() - started)
        result.timings = {k: round(v, 3) for k, v in timings.items()}
        return result

    def infotext(self, request: GenerationRequest, loaded, prepared: Prepared, seed: int, subseed: int,
                 sampler_name: str, schedule_label: str) -> str:
        from pathlib import Path

        fmt = infotext.format_number
        variation = request.subseed_strength > 0
        params: list[tuple[str, Any]] = [
            ("Steps", request.steps), ("Sampler", sampler_name), ("Schedule type", schedule_label),
            ("CFG scale", fmt(request.cfg_scale)), ("Seed", seed), ("Size", f"{prepared.width}x{prepared.height}"),
            ("Model hash", loaded.short_hash), ("Model", Path(loaded.entry.name).stem),
            ("VAE hash", loaded.extra.get("vae_hash") if loaded.vae_name else None),
            ("VAE", Path(loaded.vae_name).stem if loaded.vae_name else None),
            ("Variation seed", subseed if variation else None),
            ("Variation seed strength", fmt(request.subseed_strength) if variation else None),
            ("Denoising strength", fmt(request.denoising_strength) if request.init_image is not None else None),
            ("Clip skip", request.clip_skip if request.clip_skip > 1 else None),
        ]
        params += prepared.infotext_extra
        if request.mask is not None:
            params += [("Mask blur", request.mask_blur),
                       ("Inpaint area", "Only masked" if request.inpaint_full_res else None),
                       ("Masked area padding", request.inpaint_full_res_padding if request.inpaint_full_res else None)]
        params.append(("Version", VERSION))
        return infotext.build(request.prompt, request.negative_prompt, params)

    # ---- stages ---------------------------------------------------------------------------
    def _prepare(self, request: GenerationRequest, loaded) -> Prepared:
        from PIL import Image

        native = loaded.info.native_size
        width, height = request.width, request.height
        sized_by = request.init_image if request.init_image is not None else request.depth_map
        if sized_by is not None and (width is None or height is None):
            w, h = sized_by.size
            width = width or max(64, min(2048, w // 8 * 8))
            height = height or max(64, min(2048, h // 8 * 8))
        width, height = width or native, height or native
        count = request.batch_size * request.n_iter
        seed = request.seed if request.seed != -1 else random.randrange(MAX_SEED)
        subseed = request.subseed if request.subseed != -1 else random.randrange(MAX_SEED)
        prepared = Prepared(width, height, [(seed + i) % (MAX_SEED + 1) for i in range(count)],
                            [(subseed + i) % (MAX_SEED + 1) for i in range(count)])
        if request.init_image is None:
            return prepared
        image = request.init_image.convert("RGB")
        if request.mask is None:
            prepared.init_image = resize_image(image, width, height, request.resize_mode)
            return prepared
        mask = prepare_mask(request.mask, request.inpainting_mask_invert)
        if request.inpaint_full_res:
            overlay = blur_mask(mask, request.mask_blur)
            region = masked_region(overlay, request.inpaint_full_res_padding, width, height)
            prepared.original, prepared.overlay_mask, prepared.region = image, overlay, region
            if region is not None:
                image = image.crop(region.box).resize((width, height), Image.LANCZOS)
                mask = overlay.crop(region.box).resize((width, height), Image.LANCZOS)
            else:
                image, mask = image.resize((width, height), Image.LANCZOS), overlay.resize((width, height))
            prepared.mask = mask
        else:
            image = resize_image(image, width, height, request.resize_mode)
            mask = resize_image(mask.convert("RGB"), width, height, request.resize_mode).convert("L")
            prepared.mask = blur_mask(mask, request.mask_blur)
            prepared.original, prepared.overlay_mask = image, prepared.mask
        prepared.unfilled_image = image
        if request.inpainting_fill == 0:
            image = fill_masked(image, prepared.mask)
        prepared.init_image = image
        return prepared

    def _prepare_depth(self, request: GenerationRequest, loaded, prepared: Prepared) -> None:
        """The depth map for a depth model, at the working size: the uploaded one, cropped and resized
        as the init image was, or the estimator's view of the (cropped, resized) init image."""
        from PIL import Image

        if request.depth_map is not None:
            depth_image = request.depth_map
            if prepared.region is not None:
                depth_image = depth_image.resize(prepared.original.size, Image.BICUBIC).crop(prepared.region.box)
                depth_image = depth_image.resize((prepared.width, prepared.height), Image.BICUBIC)
            else:
                depth_image = resize_image(depth_image.convert("L") if depth_image.mode not in ("L", "I", "I;16")
                                           else depth_image, prepared.width, prepared.height, request.resize_mode)
            prepared.depth = depth_from_image(depth_image)
            prepared.infotext_extra.append(("Depth source", "uploaded"))
            return
        image = prepared.unfilled_image if prepared.unfilled_image is not None else prepared.init_image
        if image is None:
            raise RequestError("init_image", f"{loaded.entry.name} is a depth model: give it an image to take the "
                                             f"depth from, or a depth map")
        estimator = self.models.depth_estimator(request.depth_model, loaded.entry)
        prepared.depth = estimator.estimate(image)
        prepared.infotext_extra.append(("Depth source", estimator.name))

    def _noise(self, seeds: list[int], subseeds: list[int], strength: float, shape: tuple[int, ...]):
        """Initial noise from each image's seed, on the CPU, so a seed is the same picture anywhere."""
        import torch

        noises, generators = [], []
        for seed, subseed in zip(seeds, subseeds):
            generator = torch.Generator("cpu").manual_seed(seed)
            noise = torch.randn(shape, generator=generator)
            if strength > 0:
                sub = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(subseed))
                noise = slerp(strength, noise, sub)
            noises.append(noise)
            generators.append(generator)
        return torch.stack(noises), generators

    def _encode(self, components, image, device, dtype):
        import torch

        vae = components.vae
        pixels = to_tensor(image).to(device=device, dtype=dtype)
        with torch.inference_mode():
            latents = vae.encode(pixels).latent_dist.mode()
        return latents * vae.config.scaling_factor

    def _start(self, request, loaded, prepared: Prepared, scheduler, noise, device, dtype) -> Start:
        import torch

        components = loaded.components
        scheduler.set_timesteps(request.steps, device=device)
        batch = noise.shape[0]
        extra = None
        if loaded.info.variant == "inpaint":
            extra = self._inpainting_channels(components, prepared, noise.shape[-2:], device, dtype)
            extra = extra.repeat(batch, 1, 1, 1)
        elif loaded.info.variant == "depth":
            extra = depth_condition(prepared.depth[None, None].float(), tuple(noise.shape[-2:]))
            extra = extra.to(device=device, dtype=dtype).repeat(batch, 1, 1, 1)
        if prepared.init_image is None:
            latents = noise.to(device=device, dtype=dtype) * scheduler.init_noise_sigma
            return Start(latents, scheduler.timesteps, extra_channels=extra)

        init = self._encode(components, prepared.init_image, device, dtype).repeat(batch, 1, 1, 1)
        noise = noise.to(device=device, dtype=dtype)
        start = Start(None, None, init_latents=init, extra_channels=extra)
        if prepared.mask is not None:
            latent_mask = torch.from_numpy(_mask_array(prepared.mask, init.shape[-1], init.shape[-2]))
            start.latent_mask = latent_mask.to(device=device, dtype=dtype)[None, None].round()
            m = start.latent_mask
            if request.inpainting_fill == 2:
                start.init_latents = init * (1 - m) + noise * m
            elif request.inpainting_fill == 3:
                start.init_latents = init * (1 - m)
            if loaded.info.variant == "inpaint":
                start.latent_mask = None  # the model itself sees the mask; no blending
        order = getattr(scheduler, "order", 1)
        run = int(min(request.denoising_strength, 0.999) * request.steps)
        begin = (request.steps - run) * order
        timesteps = scheduler.timesteps[begin:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        if run == 0:
            return Start(start.init_latents, timesteps[:0], start.init_latents, start.latent_mask,
                         start.extra_channels)
        start.latents = scheduler.add_noise(start.init_latents, noise, timesteps[:1].repeat(batch))
        start.timesteps = timesteps
        return start

    def _inpainting_channels(self, components, prepared: Prepared, latent_size, device, dtype):
        """A 9-channel model's extra input: the mask (1 = repaint) and the latents of the image with the
        masked part blanked. Without a mask (txt2img, img2img) everything is "to repaint", as in A1111."""
        import torch

        height, width = prepared.height, prepared.width
        if prepared.init_image is not None and prepared.mask is not None:
            mask = torch.from_numpy(_mask_array(prepared.mask, width, height)).round()
            pixels = to_tensor(prepared.init_image) * (1 - mask)[None, None]
        else:
            mask = torch.ones(height, width)
            pixels = torch.zeros(1, 3, height, width)
        masked_image = pixels_to_latents(components, pixels.to(device=device, dtype=dtype))
        channel_mask = torch.nn.functional.interpolate(mask[None, None], size=tuple(latent_size))
        return torch.cat([channel_mask.to(device=device, dtype=dtype), masked_image], dim=1)

    def _sample(self, request, loaded, prepared, sampler, schedule, seeds, subseeds, conditioning, job: Job,
                device, dtype):
        import torch

        components = loaded.components
        unet = components.unet
        scale = 2 ** (len(components.vae.config.block_out_channels) - 1)
        shape = (components.vae.config.latent_channels, prepared.height // scale, prepared.width // scale)
        noise, generators = self._noise(seeds, subseeds, request.subseed_strength, shape)
        scheduler = build_scheduler(sampler, schedule, components.scheduler_config, seed=seeds[0])
        start = self._start(request, loaded, prepared, scheduler, noise, device, dtype)
        latents, timesteps = start.latents, start.timesteps
        batch = latents.shape[0]
        use_cfg = request.cfg_scale != 1.0
        contexts: dict[tuple[int, int], Any] = {}

        def context_at(step: int):
            """UNet context for a 1-based step of the full schedule (prompt editing switches here)."""
            cond, uncond = conditioning.at(step)
            key = (id(cond), id(uncond))
            if key not in contexts:
                both = torch.cat([uncond, cond]) if use_cfg else cond
                contexts[key] = both.to(dtype).repeat_interleave(batch, dim=0)
            return contexts[key]
        extra = start.extra_channels
        if extra is not None and use_cfg:
            extra = torch.cat([extra, extra])
        noise = noise.to(device=device, dtype=dtype)
        step_options = {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}
        total = len(timesteps)
        order = getattr(scheduler, "order", 1)
        first_step = request.steps - -(-total // order)  # img2img runs the last steps of the schedule
        job.report(0, total)
        for i, t in enumerate(timesteps):
            context = context_at(first_step + i // order + 1)
            if job.interrupted or job.skipped:
                break
            model_input = torch.cat([latents, latents]) if use_cfg else latents
            model_input = scheduler.scale_model_input(model_input, t)
            if extra is not None:
                model_input = torch.cat([model_input, extra], dim=1)
            prediction = unet(model_input, t, encoder_hidden_states=context, return_dict=False)[0]
            if use_cfg:
                negative, positive = prediction.chunk(2)
                prediction = negative + request.cfg_scale * (positive - negative)
            latents = scheduler.step(prediction, t, latents, return_dict=False, **step_options)[0]
            if start.latent_mask is not None and getattr(scheduler, "state_in_first_order", True):
                if i + 1 < total:
                    known = scheduler.add_noise(start.init_latents, noise, timesteps[i + 1:i + 2].repeat(batch))
                else:
                    known = start.init_latents
                latents = known * (1 - start.latent_mask) + latents * start.latent_mask
            job.report(i + 1, total)
            if self.hooks is not None and self.hooks.step(request, i + 1, total, t, latents, job.progress.image_index,
                                                          seeds):
                job.interrupt()
            if job.preview_every and (i + 1) % job.preview_every == 0:
                job.progress.preview = self.preview(loaded, latents, job.preview_full)
        return latents

    def _decode(self, components, latents) -> list:
        vae = components.vae
        images = []
        for i in range(latents.shape[0]):
            pixels = vae.decode(latents[i:i + 1] / vae.config.scaling_factor, return_dict=False)[0]
            images.extend(to_images(pixels))
        return images

    def preview(self, loaded, latents, full: bool = False):
        """The first image of the batch so far: a full VAE decode, or (default) a cheap linear
        latent -> RGB map fitted once per model from a few colours."""
        import torch

        if full:
            return self._decode(loaded.components, latents[:1])[0]
        matrix = loaded.extra.get("preview_matrix")
        if matrix is None:
            matrix = fit_preview_matrix(loaded.components)
            loaded.extra["preview_matrix"] = matrix
        with torch.inference_mode():
            latent = latents[0].float().cpu()
            flat = torch.cat([latent.reshape(latent.shape[0], -1), torch.ones(1, latent[0].numel())])
            rgb = (matrix.T @ flat).reshape(3, *latent.shape[1:])
        return to_images(rgb[None])[0]


def _mask_array(mask, width: int, height: int):
    import numpy as np
    from PIL import Image

    return np.asarray(mask.resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0


def pixels_to_latents(components, pixels):
    vae = components.vae
    return vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor


def slerp(strength: float, low, high):
    """Spherical interpolation between two noise tensors (A1111's variation seed)."""
    import torch

    low_n, high_n = low / low.norm(), high / high.norm()
    dot = (low_n * high_n).sum().clamp(-1, 1)
    if dot.abs() > 0.9995:
        return (1 - strength) * low + strength * high
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1 - strength) * omega) / so) * low + (torch.sin(strength * omega) / so) * high


def fit_preview_matrix(components):
    """Least-squares [latent channels + 1, 3] map from latents to RGB, from solid colour patches."""
    import torch

    vae = components.vae
    device, dtype = next(vae.parameters()).device, next(vae.parameters()).dtype
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    size = 8 * scale
    colours = torch.tensor([[r, g, b] for r in (-1.0, 0.0, 1.0) for g in (-1.0, 0.0, 1.0) for b in (-1.0, 0.0, 1.0)])
    pixels = colours[:, :, None, None].expand(-1, -1, size, size)
    with torch.inference_mode():
        latents = vae.encode(pixels.to(device=device, dtype=dtype)).latent_dist.mode() * vae.config.scaling_factor
    features = latents.float().mean(dim=(2, 3)).cpu()
    features = torch.cat([features, torch.ones(features.shape[0], 1)], dim=1)
    return torch.linalg.lstsq(features, colours).solution

