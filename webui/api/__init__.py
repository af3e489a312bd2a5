"""The A1111-compatible REST API (``/sdapi/v1``) over the engine's queue.

Request bodies use A1111's field names and defaults (steps 50, Euler, 512x512, CFG 7, ...); each
request becomes one ``GenerationRequest`` submitted to ``app.queue`` (shared with the UI), so
``override_settings`` apply to that request only and never to the global options.
"""
from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import logging
import secrets
import time
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from PIL import Image, PngImagePlugin, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from ..engine import GenerationRequest, RequestError, infotext
from ..engine.samplers import SAMPLERS, SCHEDULES, UnknownSampler
from ..extensions.scripts import SCRIPT_KEY
from ..model_manager import ModelFileError, ModelNotFound

log = logging.getLogger(__name__)
MAX_IMAGE_BYTES = 50 * 1024 * 1024


class Txt2ImgBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    denoising_strength: float | None = None
    override_settings: dict[str, Any] | None = None
    send_images: bool = True
    save_images: bool = False
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    infotext: str | None = None


class Img2ImgBody(Txt2ImgBody):
    init_images: list[str] = Field(default_factory=list)
    resize_mode: int = 0
    denoising_strength: float | None = 0.75
    mask: str | None = None
    mask_blur: int | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    # depth-to-image with a depth checkpoint (not in A1111, which always estimates the depth)
    depth_map: str | None = None  # base64 grayscale image, near = bright; skips the estimator
    depth_model: str | None = None  # depth estimator: folder in models/depth/ or "CHECKPOINT [embedded MiDaS]"


def decode_image(data: str, field: str) -> Image.Image:
    """A base64 image (optionally a data: URL) -> PIL; bad input is a 422 naming the field."""
    if not isinstance(data, str) or not data:
        raise RequestError(field, "expected a base64-encoded image")
    if data.startswith("data:") and "," in data:
        data = data.split(",", 1)[1]
    if len(data) * 3 // 4 > MAX_IMAGE_BYTES:
        raise RequestError(field, f"image larger than {MAX_IMAGE_BYTES // 2**20} MB")
    try:
        raw = base64.b64decode(data, validate=False)
        image = Image.open(io.BytesIO(raw))
        image.load()
        return image
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as e:
        raise RequestError(field, f"not a readable base64 image ({e.__class__.__name__})") from None


def encode_png(image: Image.Image, text: str) -> str:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def error_response(status: int, error: BaseException) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": type(error).__name__, "detail": str(error),
                                                     "body": "", "errors": str(error)})


def a1111_errors(handler):
    """A1111's error shape for every failure; users' mistakes are 4xx, never a stack trace."""
    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except RequestError as e:
            return error_response(400 if e.field in ("sampler", "schedule") else 422, e)
        except UnknownSampler as e:
            return error_response(400, e)
        except ModelNotFound as e:
            return error_response(404, e)
        except ModelFileError as e:
            return error_response(422, e)
        except Exception as e:  # out of memory and the like: reported, the server keeps serving
            log.exception("API request failed")
            return error_response(500, e)

    return wrapper


def build_api(app) -> APIRouter:
    """The /sdapi/v1 routes for one App (add to any FastAPI app with ``include_router``)."""
    router = APIRouter(prefix="/sdapi/v1")

    def to_request(body: Txt2ImgBody, mode: str) -> GenerationRequest:
        overrides = dict(body.override_settings or {})
        sampler = body.sampler_name or body.sampler_index or "Euler"
        fields: dict[str, Any] = dict(
            prompt=body.prompt, negative_prompt=body.negative_prompt, seed=body.seed, subseed=body.subseed,
            subseed_strength=body.subseed_strength, sampler=sampler, schedule=body.scheduler or "Automatic",
            batch_size=body.batch_size, n_iter=body.n_iter, steps=body.steps, cfg_scale=body.cfg_scale,
            width=body.width, height=body.height, save_images=body.save_images,
            model=overrides.get("sd_model_checkpoint") or app.options.sd_model_checkpoint or None,
            vae=overrides.get("sd_vae") or app.options.sd_vae or None,
            clip_skip=int(overrides.get("CLIP_stop_at_last_layers", app.options.CLIP_stop_at_last_layers)),
            output_format=overrides.get("samples_format", app.options.samples_format))
        if body.infotext:  # A1111: fields from an infotext fill what the request did not set itself
            given = body.model_fields_set
            names = {"prompt": "prompt", "negative_prompt": "negative_prompt", "steps": "steps",
                     "sampler": "sampler_name", "schedule": "scheduler", "cfg_scale": "cfg_scale", "seed": "seed",
                     "width": "width", "height": "height", "subseed": "subseed",
                     "subseed_strength": "subseed_strength", "denoising_strength": "denoising_strength",
                     "clip_skip": "CLIP_stop_at_last_layers", "model": "sd_model_checkpoint"}
            for key, value in infotext.request_fields(infotext.parse(body.infotext)).items():
                if names.get(key) not in given and key not in ("model", "clip_skip", "vae"):
                    fields[key] = value
        if body.script_name:  # A1111: the script's title in any case; script_args positionally
            fields["extra"] = {SCRIPT_KEY: app.extensions.script_call(body.script_name, mode, body.script_args)}
        if (body.model_extra or {}).get("enable_hr"):
            raise RequestError("enable_hr", "hires fix is not available yet")
        if mode == "img2img":
            assert isinstance(body, Img2ImgBody)
            if not body.init_images:
                raise RequestError("init_images", "img2img needs at least one init image")
            fields.update(init_image=decode_image(body.init_images[0], "init_images"),
                          denoising_strength=body.denoising_strength if body.denoising_strength is not None else 0.75,
                          resize_mode=body.resize_mode, depth_model=body.depth_model,
                          depth_map=decode_image(body.depth_map, "depth_map") if body.depth_map else None)
            if body.mask:
                fields.update(mask=decode_image(body.mask, "mask"),
                              mask_blur=body.mask_blur if body.mask_blur is not None else max(body.mask_blur_x,
                                                                                              body.mask_blur_y),
                              inpainting_fill=body.inpainting_fill, inpaint_full_res=bool(body.inpaint_full_res),
                              inpaint_full_res_padding=body.inpaint_full_res_padding,
                              inpainting_mask_invert=bool(body.inpainting_mask_invert))
        return GenerationRequest(**fields).validated()

    def run(body: Txt2ImgBody, mode: str) -> dict[str, Any]:
        request = to_request(body, mode)
        job = app.queue.submit(request, preview_every=app.options.show_progress_every_n_steps
                               if app.options.live_previews_enable else 0)
        result = job.wait()
        if result is None:
            result_images, info = [], {"interrupted": True}
        else:
            result_images = [encode_png(img, text) for img, text in zip(result.images, result.infotexts)] \
                if body.send_images else []
            first = result.infotexts[0] if result.infotexts else ""
            fields = infotext.parse(first) if first else {}
            info = {"prompt": request.prompt, "all_prompts": [request.prompt] * len(result.seeds),
                    "negative_prompt": request.negative_prompt,
                    "all_negative_prompts": [request.negative_prompt] * len(result.seeds),
                    "seed": result.seeds[0] if result.seeds else request.seed, "all_seeds": result.seeds,
                    "subseed": result.subseeds[0] if result.subseeds else request.subseed,
                    "all_subseeds": result.subseeds, "subseed_strength": request.subseed_strength,
                    "width": int(fields.get("Size-1", 0) or 0), "height": int(fields.get("Size-2", 0) or 0),
                    "sampler_name": fields.get("Sampler", request.sampler),
                    "scheduler": fields.get("Schedule type", ""), "cfg_scale": request.cfg_scale,
                    "steps": request.steps, "batch_size": request.batch_size, "n_iter": request.n_iter,
                    "restore_faces": False, "sd_model_name": fields.get("Model"),
                    "sd_model_hash": fields.get("Model hash"), "sd_vae_name": fields.get("VAE"),
                    "sd_vae_hash": fields.get("VAE hash"), "clip_skip": request.clip_skip,
                    "denoising_strength": request.denoising_strength if mode == "img2img" else None,
                    "infotexts": result.infotexts, "styles": body.styles or [], "job_timestamp":
                        time.strftime("%Y%m%d%H%M%S"), "is_using_inpainting_conditioning": False,
                    "interrupted": result.interrupted, "paths": result.paths}
        parameters = body.model_dump()
        for key in ("init_images", "mask", "depth_map"):
            if key in parameters:
                parameters[key] = None
        return {"images": result_images, "parameters": parameters, "info": json.dumps(info)}

    @router.post("/txt2img")
    @a1111_errors
    def txt2img(body: Txt2ImgBody):
        return run(body, "txt2img")

    @router.post("/img2img")
    @a1111_errors
    def img2img(body: Img2ImgBody):
        return run(body, "img2img")

    @router.get("/progress")
    @a1111_errors
    def progress(skip_current_image: bool = False):
        job = app.queue.current
        if job is None or callable(job.request):
            return {"progress": 0.0, "eta_relative": 0.0, "current_image": None, "textinfo": None,
                    "state": {"skipped": False, "interrupted": False, "job": "", "job_count": 0,
                              "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0}}
        p = job.progress
        image = None
        if p.preview is not None and not skip_current_image:
            buffer = io.BytesIO()
            p.preview.save(buffer, format="PNG")
            image = base64.b64encode(buffer.getvalue()).decode("ascii")
        return {"progress": round(p.fraction, 4), "eta_relative": round(p.eta or 0.0, 2), "current_image": image,
                "textinfo": f"Step {p.step}/{p.total}",
                "state": {"skipped": job.skipped, "interrupted": job.interrupted, "job": f"job {job.id}",
                          "job_count": job.request.n_iter, "job_timestamp": "0", "job_no": p.image_index,
                          "sampling_step": p.step, "sampling_steps": p.total}}

    @router.post("/interrupt")
    @a1111_errors
    def interrupt():
        if app.queue.current is not None:
            app.queue.current.interrupt()
        return {}

    @router.post("/skip")
    @a1111_errors
    def skip():
        if app.queue.current is not None:
            app.queue.current.skip()
        return {}

    @router.get("/options")
    @a1111_errors
    def get_options():
        return app.options.as_dict()

    @router.post("/options")
    @a1111_errors
    def set_options(values: dict[str, Any]):
        if "sd_model_checkpoint" in values and values["sd_model_checkpoint"]:
            values["sd_model_checkpoint"] = app.models.find(values["sd_model_checkpoint"]).name
        if values.get("sd_vae") not in (None, "Automatic", "None"):
            app.models.find(values["sd_vae"], "vae")
        app.options.update(values)
        app.options_store.save()
        return None

    @router.get("/cmd-flags")
    @a1111_errors
    def cmd_flags():
        s = app.settings
        return {k: (str(v) if hasattr(v, "as_posix") else v) for k, v in vars(s).items()}

    @router.get("/sd-models")
    @a1111_errors
    def sd_models():
        out = []
        for entry in app.models.list("checkpoint"):
            record = app.models.describe(entry)
            yaml_path = entry.path.with_suffix(".yaml")
            out.append({"title": record.get("title", entry.name), "model_name": entry.stem,
                        "hash": record.get("hash"), "sha256": None, "filename": str(entry.path),
                        "config": str(yaml_path) if yaml_path.is_file() else None})
        return out

    @router.get("/sd-vae")
    @a1111_errors
    def sd_vae():
        return [{"model_name": e.name, "filename": str(e.path)} for e in app.models.list("vae")]

    @router.get("/samplers")
    @a1111_errors
    def samplers():
        return [{"name": s.name, "aliases": list(s.aliases), "options": {}} for s in SAMPLERS if s.available]

    @router.get("/schedulers")
    @a1111_errors
    def schedulers():
        return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None,
                 "default_rho": 7.0 if s.name == "karras" else -1, "need_inner_model": False}
                for s in SCHEDULES.values()]

    @router.get("/loras")
    @a1111_errors
    def loras():
        return [{"name": e.stem, "alias": e.stem, "path": str(e.path), "metadata": {}} for e in app.models.list("lora")]

    @router.get("/embeddings")
    @a1111_errors
    def embeddings():
        loaded = [m for m in app.models.resident()]
        width = loaded[-1].components.text_encoder.config.hidden_size if loaded else 768
        usable, skipped = app.models.embeddings_for_width(width)
        return {"loaded": {name: {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                  "shape": e.width, "vectors": int(e.vectors.shape[0])} for name, e in usable.items()},
                "skipped": {name: {"reason": reason} for name, reason in skipped.items()}}

    for path in ("/hypernetworks", "/face-restorers", "/prompt-styles", "/realesrgan-models"):
        router.add_api_route(path, lambda: [], methods=["GET"])

    @router.get("/upscalers")
    @a1111_errors
    def upscalers():
        return [{"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 1}]

    @router.get("/latent-upscale-modes")
    @a1111_errors
    def latent_upscale_modes():
        return [{"name": "Latent"}, {"name": "Latent (nearest)"}]

    @router.get("/scripts")
    @a1111_errors
    def scripts():
        return {mode: [s.title.lower() for _, s in app.extensions.scripts(mode)] for mode in ("txt2img", "img2img")}

    @router.get("/script-info")
    @a1111_errors
    def script_info():
        out = []
        for mode in ("txt2img", "img2img"):
            for _, s in app.extensions.scripts(mode):
                out.append({"name": s.title.lower(), "is_alwayson": False, "is_img2img": mode == "img2img",
                            "args": [{"label": a.label, "value": a.default, "minimum": a.minimum,
                                      "maximum": a.maximum, "step": a.step,
                                      "choices": list(a.choices) if a.choices is not None else None}
                                     for a in s.arguments]})
        return out

    @router.get("/memory")
    @a1111_errors
    def memory():
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return {"ram": {"peak_rss": rss}, "cuda": {"error": "no CUDA device"}}

    for path in ("/refresh-checkpoints", "/refresh-vae", "/refresh-loras", "/refresh-embeddings"):
        router.add_api_route(path, lambda: None, methods=["POST"])  # folders are rescanned on every listing

    @router.post("/unload-checkpoint")
    @a1111_errors
    def unload_checkpoint():
        app.queue.submit(lambda a: a.models.unload_all()).wait(600)
        return None

    @router.post("/reload-checkpoint")
    @a1111_errors
    def reload_checkpoint():
        name = app.options.sd_model_checkpoint
        app.queue.submit(lambda a: a.models.get(name)).wait(600)
        return None

    @router.post("/png-info")
    @a1111_errors
    def png_info(body: dict[str, Any]):
        image = decode_image(body.get("image", ""), "image")
        text = infotext.read_image_parameters(image) or ""
        return {"info": text, "items": {k: v for k, v in image.info.items() if isinstance(v, str)},
                "parameters": infotext.parse(text) if text else {}}

    return router


def install_api(fastapi_app: FastAPI, app, auth: list[tuple[str, str]] | None = None) -> None:
    """Mount /sdapi/v1 (with HTTP Basic auth when ``auth`` is given) and A1111's error shapes."""
    dependencies = []
    if auth:
        security = HTTPBasic()

        def check(credentials: HTTPBasicCredentials = Depends(security)):
            for user, password in auth:
                if secrets.compare_digest(credentials.username, user) and \
                        secrets.compare_digest(credentials.password, password):
                    return True
            raise HTTPException(status_code=401, detail="Incorrect username or password",
                                headers={"WWW-Authenticate": "Basic"})

        dependencies.append(Depends(check))
    fastapi_app.include_router(build_api(app), dependencies=dependencies)
    fastapi_app.openapi_schema = None  # regenerate with our routes
    if not any(getattr(route, "path", None) == "/docs" for route in fastapi_app.routes):
        from fastapi.openapi.docs import get_swagger_ui_html

        fastapi_app.add_api_route("/docs", lambda: get_swagger_ui_html(openapi_url="/openapi.json",
                                                                       title="sdwebui API"),
                                  methods=["GET"], include_in_schema=False)


__all__ = ["build_api", "install_api"]
