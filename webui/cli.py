"""Command line: ``python app.py [generate|models|samplers|pnginfo] ...``.

User mistakes (bad values, unknown models, unreadable files) print one ``error: ...`` line and exit
with status 2; with ``--json`` stdout carries exactly one JSON document.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from .config import add_arguments, add_server_arguments, load_settings

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="app.py", description="Self-hosted Stable Diffusion: web UI, API and CLI.")
    add_arguments(parser)
    add_server_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    gen = sub.add_parser("generate", help="make images (txt2img, img2img, inpainting, depth-to-image)")
    add_arguments(gen, suppress=True)
    gen.add_argument("--prompt", default="")
    gen.add_argument("--prompts-file", type=Path, help="one prompt per line (A1111's prompts from file)")
    gen.add_argument("--negative-prompt", default="")
    gen.add_argument("--model", help="checkpoint title, name or short hash (default: first found)")
    gen.add_argument("--vae", help="VAE file in the VAE folder, 'Automatic' or 'None'")
    gen.add_argument("--sampler", default="DPM++ 2M")
    gen.add_argument("--schedule", default="Automatic", help="schedule type: Automatic, Uniform, Karras, ...")
    gen.add_argument("--steps", type=int, default=20)
    gen.add_argument("--cfg-scale", type=float, default=7.0)
    gen.add_argument("--seed", type=int, default=-1)
    gen.add_argument("--subseed", type=int, default=-1, help="variation seed")
    gen.add_argument("--subseed-strength", type=float, default=0.0, help="variation strength 0-1")
    gen.add_argument("--width", type=int, help="default: the model's native size")
    gen.add_argument("--height", type=int)
    gen.add_argument("--batch-size", type=int, default=1)
    gen.add_argument("--n-iter", type=int, default=1, help="batch count")
    gen.add_argument("--clip-skip", type=int, default=1)
    gen.add_argument("--init-image", type=Path, help="image for img2img / inpainting")
    gen.add_argument("--denoising-strength", type=float, default=0.75)
    gen.add_argument("--resize-mode", type=int, default=0, help="0 just resize, 1 crop, 2 fill, 3 latent")
    gen.add_argument("--mask", type=Path, help="inpainting mask (white = repaint)")
    gen.add_argument("--mask-blur", type=int, default=4)
    gen.add_argument("--inpainting-fill", type=int, default=1, help="0 fill, 1 original, 2 latent noise, 3 latent nothing")
    gen.add_argument("--inpaint-full-res", action="store_true", help="inpaint area: only masked")
    gen.add_argument("--inpaint-full-res-padding", type=int, default=32)
    gen.add_argument("--inpainting-mask-invert", action="store_true")
    gen.add_argument("--mode", choices=["auto", "txt2img", "img2img", "inpaint", "depth"], default="auto",
                     help="auto: from the inputs given; depth: a depth checkpoint (default: the first found) "
                          "with the depth of --init-image or --depth-map")
    gen.add_argument("--depth-map", type=Path, help="depth map image (grayscale, near = bright); skips the estimator")
    gen.add_argument("--depth-model", help="depth estimator: a folder in models/depth/ or 'CHECKPOINT [embedded "
                                           "MiDaS]' (default: the depth checkpoint's own MiDaS, else the first found)")
    gen.add_argument("--format", dest="output_format", default=None, help="png (default), jpg or webp")
    gen.add_argument("--script", help="run a script from an extension, e.g. 'X/Y/Z plot' (see: extensions)")
    gen.add_argument("--script-args", default="[]", metavar="JSON",
                     help="the script's arguments as a JSON list, in the API's order")
    gen.add_argument("--json", action="store_true", help="print one JSON document")

    models = sub.add_parser("models", help="list model files with their probed architecture")
    add_arguments(models, suppress=True)
    models.add_argument("--json", action="store_true")

    samplers = sub.add_parser("samplers", help="list samplers and schedule types")
    add_arguments(samplers, suppress=True)
    samplers.add_argument("--json", action="store_true")

    tokens = sub.add_parser("tokens", help="show how CLIP tokenizes a prompt (chunks, ids, words, weights)")
    add_arguments(tokens, suppress=True)
    tokens.add_argument("prompt")
    tokens.add_argument("--negative-prompt", default=None)
    tokens.add_argument("--model", help="checkpoint whose tokenizer to use (all SD 1.x/2.x share one vocabulary)")
    tokens.add_argument("--neighbours", metavar="WORD", help="nearest tokens to WORD in the model's embedding table")
    tokens.add_argument("--count", type=int, default=8, help="how many neighbours")
    tokens.add_argument("--compare", metavar="TEXT", help="similarity of PROMPT and TEXT (tokens and conditioning)")
    tokens.add_argument("--json", action="store_true")

    pnginfo = sub.add_parser("pnginfo", help="show the generation parameters stored in an image")
    add_arguments(pnginfo, suppress=True)
    pnginfo.add_argument("file", type=Path)
    pnginfo.add_argument("--json", action="store_true")

    extensions = sub.add_parser("extensions", help="list extensions with their status; install, enable, disable")
    add_arguments(extensions, suppress=True)
    extensions.add_argument("--install", metavar="URL", help="git clone a URL or local repository into the folder")
    extensions.add_argument("--name", help="folder name for --install (default: from the URL)")
    extensions.add_argument("--enable", metavar="NAME", action="append", default=[], help="enable (saved in config)")
    extensions.add_argument("--disable", metavar="NAME", action="append", default=[], help="disable (saved in config)")
    extensions.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "httpcore", "urllib3", "gradio", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command is None:
        from .server import serve  # the web UI

        return serve(load_settings(args))
    handler = {"generate": cmd_generate, "models": cmd_models, "samplers": cmd_samplers, "pnginfo": cmd_pnginfo,
               "tokens": cmd_tokens, "extensions": cmd_extensions}
    try:
        return handler[args.command](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR


def _emit(args, document: Any, text: str) -> None:
    if getattr(args, "json", False):
        json.dump(document, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(text)


def _open_image(path: Path, what: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except FileNotFoundError:
        raise UserError(f"{what}: no such file {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{what}: {path} is not a readable image ({e})") from None


def cmd_generate(args) -> int:
    from .application import App
    from .engine import GenerationRequest, RequestError
    from .engine.samplers import UnknownSampler
    from .model_manager import ModelFileError, ModelNotFound

    settings = load_settings(args)
    if args.prompts_file:
        try:
            prompts = [line.strip() for line in args.prompts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as e:
            raise UserError(f"--prompts-file: {e}") from None
        if not prompts:
            raise UserError(f"--prompts-file: {args.prompts_file} has no prompts")
    else:
        prompts = [args.prompt]
    init_image = _open_image(args.init_image, "--init-image") if args.init_image else None
    mask = _open_image(args.mask, "--mask") if args.mask else None
    depth_map = _open_image(args.depth_map, "--depth-map") if args.depth_map else None
    needs = {"img2img": (init_image, "--init-image"), "inpaint": (mask, "--init-image and --mask"),
             "depth": (init_image or depth_map, "--init-image or --depth-map")}.get(args.mode)
    if needs and needs[0] is None:
        raise UserError(f"--mode {args.mode} needs {needs[1]}")
    if args.mode == "txt2img" and (init_image or mask):
        raise UserError("--mode txt2img takes no --init-image or --mask")
    base = dict(negative_prompt=args.negative_prompt, model=args.model, vae=args.vae, sampler=args.sampler,
                schedule=args.schedule, steps=args.steps, cfg_scale=args.cfg_scale, seed=args.seed,
                subseed=args.subseed, subseed_strength=args.subseed_strength, width=args.width, height=args.height,
                batch_size=args.batch_size, n_iter=args.n_iter, clip_skip=args.clip_skip, init_image=init_image,
                denoising_strength=args.denoising_strength, resize_mode=args.resize_mode, mask=mask,
                mask_blur=args.mask_blur, inpainting_fill=args.inpainting_fill,
                inpaint_full_res=args.inpaint_full_res, inpaint_full_res_padding=args.inpaint_full_res_padding,
                inpainting_mask_invert=args.inpainting_mask_invert, depth_map=depth_map,
                depth_model=args.depth_model, output_format=args.output_format or settings.samples_format)
    try:
        requests = [GenerationRequest(prompt=p, **base).validated() for p in prompts]
        app = App(settings)
        if args.mode == "depth" or (depth_map is not None and not args.model):
            model = app.models.find(args.model) if args.model else app.models.default_depth_checkpoint()
            if app.models.probe(model).variant != "depth":
                raise UserError(f"{model.name} is not a depth model; depth-to-image needs a depth checkpoint "
                                f"(5-channel UNet, like SD 2's 512-depth-ema)")
            requests = [r.with_changes(model=model.name) for r in requests]
        elif not args.model:
            from .model_manager.manager import DEMO_CHECKPOINT

            if app.models.default_checkpoint().path.resolve() == DEMO_CHECKPOINT.resolve():
                logging.getLogger(__name__).info(
                    "no checkpoints of your own in %s: using the built-in demo model (coloured shapes, 64x64)",
                    settings.paths.checkpoints)
        if args.script:
            requests = _with_script(app, requests, args.script, args.script_args)
        images, seeds, infotexts = [], [], []
        for request in requests:
            result = _generate(app, request)
            images += result.paths
            seeds += result.seeds
            infotexts += result.infotexts
            if not args.json:
                for path in result.paths:
                    print(path)
    except (RequestError, ModelNotFound, ModelFileError, UnknownSampler) as e:
        raise UserError(str(e)) from None
    if args.json:
        _emit(args, {"images": images, "seeds": seeds, "infotexts": infotexts}, "")
    return 0


def _with_script(app, requests: list, name: str, script_args: str) -> list:
    from .extensions.scripts import SCRIPT_KEY, script_mode

    try:
        values = json.loads(script_args)
    except json.JSONDecodeError as e:
        raise UserError(f"--script-args: not a JSON list ({e})") from None
    out = []
    for request in requests:
        call = app.extensions.script_call(name, script_mode(request.mode), values)
        out.append(request.with_changes(extra={**request.extra, SCRIPT_KEY: call}))
    return out


def _generate(app, request):
    """One request: the engine, or the script it names (with its own job, as on the server's worker)."""
    from .engine import Job
    from .extensions import ExtensionError
    from .extensions.scripts import SCRIPT_KEY, make_script_context, script_mode

    if SCRIPT_KEY not in request.extra:
        return app.engine.generate(request)
    try:
        return app.extensions.run_script(request, make_script_context(app, Job(request), script_mode(request.mode)))
    except ExtensionError as e:
        raise UserError(str(e)) from None


def cmd_models(args) -> int:
    from .model_manager import ModelManager

    settings = load_settings(args)
    manager = ModelManager(settings.paths, settings.cache_dir)
    records = [manager.describe(entry) for entry in manager.all_models()]
    lines = []
    for r in records:
        arch = " ".join(str(r[k]) for k in ("family", "variant", "prediction") if k in r)
        if r.get("architecture"):  # depth estimators
            arch = f"{r['architecture']}{' hybrid' if r.get('hybrid') else ''} {r.get('image_size')}px"
        problem = f"  ! {r['error']}" if "error" in r else ""
        lines.append(f"{r['kind']:<10} {r.get('hash', '?'):<10} {arch:<28} {r['name']}{problem}")
    _emit(args, {"models": records}, "\n".join(lines) or f"no models found under {settings.models_dir}")
    return 0


def cmd_samplers(args) -> int:
    from .engine.samplers import SCHEDULES, sampler_table

    table = sampler_table()
    schedules = [{"name": s.name, "label": s.label, "aliases": list(s.aliases)} for s in SCHEDULES.values()]
    lines = [f"{s['name']:<14} {'default ' + s['default_schedule'] + '; ' + ', '.join(s['schedules']) if s['available'] else 'unavailable: ' + s['unavailable_reason']}"
             for s in table]
    _emit(args, {"samplers": table, "schedules": schedules}, "\n".join(lines))
    return 0


def cmd_pnginfo(args) -> int:
    from .engine import infotext

    image = _open_image(args.file, "pnginfo")
    text = infotext.read_image_parameters(image)
    if not text:
        raise UserError(f"{args.file}: no generation parameters stored in this image")
    _emit(args, {"parameters": text, "fields": infotext.parse(text)}, text)
    return 0


def cmd_tokens(args) -> int:
    from .engine.conditioning import inspect_prompt
    from .model_manager import ModelFileError, ModelManager, ModelNotFound
    from .model_manager.loader import load_tokenizer

    settings = load_settings(args)
    manager = ModelManager(settings.paths, settings.cache_dir)
    try:
        entry = manager.find(args.model) if args.model else manager.default_checkpoint()
        info = manager.probe(entry)
    except (ModelNotFound, ModelFileError) as e:
        if args.model:
            raise UserError(str(e)) from None
        info = None  # no model installed: the SD 1.x tokenizer, no embeddings
    tokenizer = load_tokenizer("sd2" if info and info.family == "sd2" else "sd1")
    embeddings, skipped = manager.embeddings_for_width(info.context_dim) if info else ({}, {})
    report = inspect_prompt(tokenizer, args.prompt, embeddings)
    if args.negative_prompt is not None:
        report["negative"] = inspect_prompt(tokenizer, args.negative_prompt, embeddings)
    report["embeddings_skipped"] = skipped
    if args.neighbours or args.compare:
        from .engine.inspector import compare, nearest_tokens

        try:
            loaded = manager.get(args.model)
        except (ModelNotFound, ModelFileError) as e:
            raise UserError(str(e)) from None
        if args.neighbours:
            report["neighbours"] = nearest_tokens(loaded.components, args.neighbours, max(1, args.count))
        if args.compare:
            report["compare"] = compare(loaded.components, args.prompt, args.compare, 1, embeddings)
    lines = []
    for number, chunk in enumerate(report["chunks"], 1):
        lines.append(f"chunk {number}: {chunk['count']}/75")
        lines += [f"  {t['id'] if t['id'] is not None else '':>6}  {t['text'].replace('</w>', '␣'):<16} "
                  f"{t['weight']:<8g} {t['word']}" for t in chunk["tokens"]]
    lines.append(f"total {report['total']} tokens")
    if "neighbours" in report:
        lines.append(f"nearest to {args.neighbours!r}: " + ", ".join(
            f"{n['text'].replace('</w>', '␣')} ({n['similarity']:.2f})" for n in report["neighbours"]["neighbours"]))
    if "compare" in report:
        c = report["compare"]
        lines.append(f"similarity: tokens {c['token_similarity']:.3f}, conditioning {c['conditioning_similarity']:.3f}")
    _emit(args, report, "\n".join(lines))
    return 0


def cmd_extensions(args) -> int:
    from .extensions import ExtensionError, ExtensionManager
    from .options import OptionsStore

    settings = load_settings(args)
    store = OptionsStore(settings.config_file)

    def save_disabled(names: list[str]) -> None:
        store.options.disabled_extensions = list(names)
        store.save()

    manager = ExtensionManager(settings.extensions_dir, store.options.disabled_extensions, save_disabled)
    manager.load_all()
    try:
        for name in args.enable:
            manager.set_enabled(name, True)
        for name in args.disable:
            manager.set_enabled(name, False)
        if args.install:
            manager.install(args.install, args.name)
    except ExtensionError as e:
        raise UserError(str(e)) from None
    records = [{k: r[k] for k in ("name", "version", "enabled", "status", "error", "description", "path",
                                  "scripts", "tabs", "callbacks")} for r in manager.describe()]
    lines = [f"{r['name']:<24} {r['version'] or '-':<10} {'enabled' if r['enabled'] else 'disabled':<9} "
             f"{r['status']:<8} {' '.join((r['error'] or '').split())}".rstrip() for r in records]
    _emit(args, {"extensions_dir": str(settings.extensions_dir), "extensions": records},
          "\n".join(lines) or f"no extensions in {settings.extensions_dir}")
    return 0
