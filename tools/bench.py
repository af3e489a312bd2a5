"""Benchmark: this engine against plain diffusers on the same full-size SD 1.5-architecture file.

    python tools/bench.py                      # CPU: load, s/step at 256 and 512 with CFG, peak RSS
    python tools/bench.py --device cuda        # GPU: fp16, 512x512, 20 steps, it/s, peak device memory

The checkpoint (random weights, real SD 1.5 architecture, original LDM key layout, fp16, ~2 GB) is
built once and cached outside the repository (``--cache``, default ~/.cache/sdwebui-bench). Each
measurement runs in a fresh process so peak RSS belongs to that implementation alone. Both use the
Euler scheduler, CFG 7, the same prompt, and the same number of threads.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PROMPT = "a photograph of an astronaut riding a horse"


def rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_now_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build_checkpoint(path: Path) -> None:
    """Random-weight SD 1.5 architecture from the shipped family configs, saved in the LDM layout."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from webui.model_manager.ldm_layout import diffusers_to_ldm
    from webui.model_manager.probe import family_configs

    torch.manual_seed(0)
    configs = family_configs("sd1")
    state = {}
    unet = UNet2DConditionModel.from_config(configs["unet"])
    state.update({k: v.half() for k, v in diffusers_to_ldm(unet=unet).items()})
    del unet
    vae = AutoencoderKL.from_config(configs["vae"])
    state.update({k: v.half() for k, v in diffusers_to_ldm(vae=vae).items()})
    del vae
    text_encoder = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
    state.update({k: v.half() for k, v in diffusers_to_ldm(text_encoder=text_encoder).items()})
    del text_encoder
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)


def diffusers_config_folder() -> Path:
    """A config-only diffusers folder (shipped JSONs + tokenizer) for from_single_file, offline."""
    folder = Path(tempfile.mkdtemp(prefix="sd15-config-"))
    shutil.copytree(ROOT / "webui" / "configs" / "sd1", folder, dirs_exist_ok=True)
    shutil.copytree(ROOT / "webui" / "configs" / "clip_tokenizer", folder / "tokenizer")
    return folder


def worker(impl: str, checkpoint: Path, device: str, sizes: list[tuple[int, int]], out: Path) -> None:
    import torch

    result: dict = {"impl": impl, "rss_after_import": 0}
    if impl == "engine":
        from webui.engine import GenerationRequest, Job
        from webui.model_manager import ModelManager, ModelPaths

        missing = checkpoint.parent / "none"
        manager = ModelManager(ModelPaths(checkpoint.parent, missing, missing, missing, missing),
                               Path(tempfile.mkdtemp()), device=device, include_demo=False)
        from webui.engine import Engine

        engine = Engine(manager)
        # Import the model classes first, as the diffusers run does, so "load" measures loading.
        from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401
        from transformers import CLIPTextModel  # noqa: F401
        result["rss_after_import"] = rss_now_bytes()
        started = time.perf_counter()
        loaded = manager.get(checkpoint.name)
        modules = (loaded.components.unet, loaded.components.vae, loaded.components.text_encoder)

        def run(size: int, steps: int) -> list[float]:
            stamps: list[float] = []
            job = Job(None, on_step=lambda j: stamps.append(time.perf_counter()))
            request = GenerationRequest(prompt=PROMPT, model=checkpoint.name, sampler="Euler", steps=steps,
                                        cfg_scale=7, seed=1, width=size, height=size, save_images=False)
            engine.generate(request, job)
            return stamps
    else:
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

        result["rss_after_import"] = rss_now_bytes()
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        started = time.perf_counter()
        pipe = StableDiffusionPipeline.from_single_file(str(checkpoint), config=str(diffusers_config_folder()),
                                                        local_files_only=True, torch_dtype=dtype,
                                                        safety_checker=None, requires_safety_checker=False)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        modules = (pipe.unet, pipe.vae, pipe.text_encoder)

        def run(size: int, steps: int) -> list[float]:
            stamps = [time.perf_counter()]

            def on_step(_pipe, _i, _t, kwargs):
                stamps.append(time.perf_counter())
                return kwargs

            generator = torch.Generator("cpu").manual_seed(1)
            pipe(PROMPT, num_inference_steps=steps, guidance_scale=7, width=size, height=size,
                 generator=generator, callback_on_step_end=on_step)
            return stamps

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    result["load_s"] = time.perf_counter() - started
    result["rss_peak_load"] = rss_peak_bytes()
    result["weights_bytes"] = sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for size, steps in sizes:
        began = time.perf_counter()
        stamps = run(size, steps)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        total = time.perf_counter() - began
        per_step = [b - a for a, b in zip(stamps, stamps[1:])]
        steady = per_step[1:] or per_step
        result[f"step_s_{size}"] = statistics.median(steady)
        result[f"total_s_{size}"] = total
        result[f"steps_{size}"] = steps
    result["rss_peak"] = rss_peak_bytes()
    if device.startswith("cuda"):
        result["device_peak_bytes"] = torch.cuda.max_memory_allocated()
        result["device_name"] = torch.cuda.get_device_name()
    out.write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "sdwebui-bench")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--steps", type=int, default=None, help="steps per size (CPU default 3, GPU 20)")
    parser.add_argument("--sizes", default=None, help="comma list (CPU default 256,512; GPU 512)")
    parser.add_argument("--only", choices=("engine", "diffusers"))
    parser.add_argument("--json-out", type=Path, help="also write all numbers here")
    parser.add_argument("--worker", choices=("engine", "diffusers"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    sizes = [int(s) for s in (args.sizes or ("512" if gpu else "256,512")).split(",")]
    steps = args.steps or (20 if gpu else 3)
    checkpoint = args.cache / "sd15-random-ldm-fp16.safetensors"
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.worker:
        worker(args.worker, checkpoint, args.device, [(s, steps) for s in sizes], args.worker_out)
        return
    if not checkpoint.is_file():
        print(f"building {checkpoint} (random weights, SD 1.5 architecture; once) ...", flush=True)
        build_checkpoint(checkpoint)
    results = {}
    for impl in [args.only] if args.only else ["engine", "diffusers"]:
        out = Path(tempfile.mkstemp(suffix=".json")[1])
        command = [sys.executable, __file__, "--worker", impl, "--worker-out", str(out), "--device", args.device,
                   "--cache", str(args.cache), "--steps", str(steps), "--sizes", ",".join(map(str, sizes)),
                   "--threads", str(args.threads)]
        print(f"running {impl} ...", flush=True)
        subprocess.run(command, check=True, env=os.environ | {"HF_HUB_OFFLINE": "1"})
        results[impl] = json.loads(out.read_text())
    print_table(results, sizes, args)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


def print_table(results: dict, sizes: list[int], args) -> None:
    gib = 2**30
    rows = [("load time (s)", "load_s", 1), ("peak RSS while loading (GiB)", "rss_peak_load", gib),
            ("peak RSS overall (GiB)", "rss_peak", gib), ("weights in memory (GiB)", "weights_bytes", gib)]
    rows += [(f"s/step {s}x{s}, CFG 7", f"step_s_{s}", 1) for s in sizes]
    if args.device.startswith("cuda"):
        rows += [("peak device memory (GiB)", "device_peak_bytes", gib)]
    impls = list(results)
    print(f"\ndevice {args.device}, threads {args.threads or 'default'}, "
          f"{results[impls[0]].get(f'steps_{sizes[0]}')} steps (median of steps after the first)")
    print(f"| metric | {' | '.join(impls)} |" + (" engine/diffusers |" if len(impls) == 2 else ""))
    print("|---" * (len(impls) + 1 + (len(impls) == 2)) + "|")
    for label, key, unit in rows:
        values = [results[i].get(key) for i in impls]
        cells = [f"{v / unit:.3f}" if isinstance(v, (int, float)) else "-" for v in values]
        ratio = ""
        if len(impls) == 2 and all(isinstance(v, (int, float)) and v for v in values):
            ratio = f" {values[0] / values[1]:.2f} |"
        print(f"| {label} | {' | '.join(cells)} |{ratio}")
    for impl in impls:
        r = results[impl]
        print(f"{impl}: peak RSS while loading = {r['rss_peak_load'] / r['weights_bytes']:.2f}x the weights in memory")
        for s in sizes:
            if args.device.startswith("cuda"):
                print(f"{impl}: {1 / r[f'step_s_{s}']:.2f} it/s at {s}x{s}")


if __name__ == "__main__":
    main()
