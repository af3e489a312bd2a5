"""The one loop: seeds, modes, samplers, CFG, progress and interrupt, judged on pixels."""
import numpy as np
import pytest
from PIL import Image

from webui.engine import Job, RequestError
from webui.engine.samplers import SAMPLERS, available_sampler_names


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def mean_diff(a, b) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


def test_same_seed_same_pixels_and_different_seed_different(app, base_request):
    a = app.engine.generate(base_request).images[0]
    b = app.engine.generate(base_request).images[0]
    c = app.engine.generate(base_request.with_changes(seed=base_request.seed + 1)).images[0]
    assert a.size == (64, 64)
    assert np.array_equal(pixels(a), pixels(b))
    assert mean_diff(a, c) > 5


def test_prompt_changes_the_image(app, base_request):
    a = app.engine.generate(base_request).images[0]
    b = app.engine.generate(base_request.with_changes(prompt="a blue square on a green background")).images[0]
    assert mean_diff(a, b) > 1


def test_batch_uses_seed_plus_index_and_matches_single_runs(app, base_request):
    result = app.engine.generate(base_request.with_changes(batch_size=2, n_iter=2))
    assert result.seeds == [1234, 1235, 1236, 1237]
    assert len(result.images) == 4 and len(result.infotexts) == 4
    assert "Seed: 1236," in result.infotexts[2]
    single = app.engine.generate(base_request.with_changes(seed=1235)).images[0]
    assert mean_diff(result.images[1], single) < 1.0  # same noise; batching only changes float rounding
    assert mean_diff(result.images[0], result.images[1]) > 5


def test_random_seed_is_resolved_and_recorded(app, base_request):
    result = app.engine.generate(base_request.with_changes(seed=-1))
    assert 0 <= result.seeds[0] < 2**32
    again = app.engine.generate(base_request.with_changes(seed=result.seeds[0])).images[0]
    assert np.array_equal(pixels(result.images[0]), pixels(again))


def test_variation_seed_moves_gradually(app, base_request):
    plain = app.engine.generate(base_request).images[0]
    little = app.engine.generate(base_request.with_changes(subseed=99, subseed_strength=0.1))
    much = app.engine.generate(base_request.with_changes(subseed=99, subseed_strength=0.9))
    assert mean_diff(plain, little.images[0]) < mean_diff(plain, much.images[0])
    assert "Variation seed: 99, Variation seed strength: 0.1" in little.infotexts[0]


def test_cfg_scale_one_skips_guidance_and_differs(app, base_request):
    guided = app.engine.generate(base_request).images[0]
    unguided = app.engine.generate(base_request.with_changes(cfg_scale=1.0)).images[0]
    assert mean_diff(guided, unguided) > 1


def _round_trip(app, image):
    """What the VAE makes of an image: encode then decode, no denoising."""
    import torch

    from webui.engine.images import to_images, to_tensor

    vae = app.models.get("tiny-sd1").components.vae
    with torch.inference_mode():
        latents = vae.encode(to_tensor(image)).latent_dist.mode()
        return to_images(vae.decode(latents).sample)[0]


def test_img2img_strength_zero_is_the_vae_round_trip_and_more_strength_moves_further(app, base_request):
    init = app.engine.generate(base_request.with_changes(seed=5)).images[0]
    zero = app.engine.generate(base_request.with_changes(init_image=init, denoising_strength=0.0))
    assert mean_diff(zero.images[0], _round_trip(app, init)) < 0.5
    assert "Denoising strength: 0," in zero.infotexts[0]
    # A random VAE is no autoencoder, so "distance moved" is measured from the round trip, with a
    # model whose random noise predictions are small (a loud one scrambles every strength alike).
    calm = base_request.with_changes(model="tiny-sd1-calm", init_image=init, sampler="Euler")
    start = app.engine.generate(calm.with_changes(denoising_strength=0.0)).images[0]
    distances = [mean_diff(app.engine.generate(calm.with_changes(denoising_strength=s)).images[0], start)
                 for s in (0.25, 0.6, 1.0)]
    assert distances[0] < distances[1] < distances[2], distances


def test_img2img_runs_steps_times_strength_steps(app, base_request):
    init = Image.new("RGB", (64, 64), (0, 128, 0))
    totals = []
    job = Job(None, on_step=lambda j: totals.append(j.progress.total))
    app.engine.generate(base_request.with_changes(init_image=init, steps=20, denoising_strength=0.25), job)
    assert set(totals) == {5} and len(totals) == 6  # A1111: int(20 * 0.25) steps, reported 0..5


def test_img2img_defaults_to_init_image_size_and_resize_modes(app, base_request):
    init = Image.new("RGB", (96, 64), (250, 0, 0))
    result = app.engine.generate(base_request.with_changes(width=None, height=None, init_image=init,
                                                           denoising_strength=0.2))
    assert result.images[0].size == (96, 64)
    for mode in (0, 1, 2, 3):
        out = app.engine.generate(base_request.with_changes(init_image=init, resize_mode=mode, denoising_strength=0.2))
        assert out.images[0].size == (64, 64)


@pytest.mark.parametrize("model", ["tiny-sd1", "inpainting/tiny-sd1-inpainting.ckpt", "tiny-sd2-inpainting"])
@pytest.mark.parametrize("fill", [0, 1, 2, 3])
def test_inpainting_changes_only_the_masked_area(app, base_request, model, fill):
    init = app.engine.generate(base_request.with_changes(seed=11)).images[0]
    mask = Image.new("L", init.size, 0)
    mask.paste(255, (20, 20, 44, 44))
    request = base_request.with_changes(model=model, init_image=init, mask=mask, inpainting_fill=fill,
                                        denoising_strength=1.0, mask_blur=2, seed=77)
    result = app.engine.generate(request)
    out = pixels(result.images[0])
    from PIL import ImageFilter

    outside = np.asarray(mask.filter(ImageFilter.GaussianBlur(2))) == 0
    assert np.array_equal(out[outside], pixels(init)[outside])
    assert np.abs(out[28:36, 28:36] - pixels(init)[28:36, 28:36]).mean() > 3
    assert "Mask blur: 2" in result.infotexts[0]


def test_inpaint_only_masked_and_inverted_mask(app, base_request):
    init = app.engine.generate(base_request.with_changes(seed=21, width=128, height=64)).images[0]
    mask = Image.new("L", init.size, 0)
    mask.paste(255, (90, 20, 110, 40))
    only = app.engine.generate(base_request.with_changes(init_image=init, mask=mask, inpaint_full_res=True,
                                                         inpaint_full_res_padding=8, mask_blur=0,
                                                         denoising_strength=1.0))
    out = pixels(only.images[0])
    assert only.images[0].size == init.size
    assert np.array_equal(out[:, :80], pixels(init)[:, :80])
    assert np.abs(out[22:38, 92:108] - pixels(init)[22:38, 92:108]).mean() > 3
    assert "Inpaint area: Only masked, Masked area padding: 8" in only.infotexts[0]
    inverted = app.engine.generate(base_request.with_changes(init_image=init, mask=mask, inpainting_mask_invert=True,
                                                             mask_blur=0, denoising_strength=1.0, width=128))
    out = pixels(inverted.images[0])
    assert np.array_equal(out[20:40, 90:110], pixels(init)[20:40, 90:110])


def test_painted_rgba_mask_counts_where_opaque(app, base_request):
    init = Image.new("RGB", (64, 64), (0, 0, 255))
    stroke = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    stroke.paste((255, 255, 255, 255), (0, 0, 32, 64))
    result = app.engine.generate(base_request.with_changes(init_image=init, mask=stroke, mask_blur=0,
                                                           denoising_strength=1.0))
    out = pixels(result.images[0])
    assert np.array_equal(out[:, 40:], pixels(init)[:, 40:])


@pytest.mark.parametrize("sampler", available_sampler_names())
def test_every_listed_sampler_runs_and_is_deterministic(app, base_request, sampler):
    request = base_request.with_changes(sampler=sampler, steps=3)
    first = app.engine.generate(request)
    second = app.engine.generate(request)
    image = pixels(first.images[0])
    assert image.std() > 1
    assert np.array_equal(image, pixels(second.images[0]))
    assert f"Sampler: {sampler}," in first.infotexts[0]


def test_schedules_change_the_result(app, base_request):
    images = [app.engine.generate(base_request.with_changes(sampler="Euler", schedule=s, steps=5)).images[0]
              for s in ("Uniform", "Karras", "Exponential", "SGM Uniform")]
    for other in images[1:]:
        assert mean_diff(images[0], other) > 0.2


def test_old_combined_sampler_name_is_accepted(app, base_request):
    result = app.engine.generate(base_request.with_changes(sampler="DPM++ 2M Karras"))
    assert "Sampler: DPM++ 2M, Schedule type: Karras," in result.infotexts[0]


def test_unavailable_sampler_is_listed_with_reason_and_refused(base_request):
    unavailable = [s for s in SAMPLERS if not s.available]
    assert unavailable and all(s.unavailable for s in unavailable)
    with pytest.raises(RequestError, match="unavailable"):
        base_request.with_changes(sampler=unavailable[0].name).validated()


def test_sd2_v_prediction_and_diffusers_folder_generate(app, base_request):
    v = app.engine.generate(base_request.with_changes(model="tiny-sd2-768-v"))
    folder = app.engine.generate(base_request.with_changes(model="tiny-diffusers"))
    assert pixels(v.images[0]).std() > 1 and pixels(folder.images[0]).std() > 1
    assert "Model: tiny-sd2-768-v," in v.infotexts[0]


def test_vae_override_changes_decode_and_switching_back_restores(app, base_request):
    own = app.engine.generate(base_request).images[0]
    other = app.engine.generate(base_request.with_changes(vae="tiny-vae.safetensors"))
    same_weights_diffusers_layout = app.engine.generate(base_request.with_changes(vae="tiny-vae-diffusers"))
    back = app.engine.generate(base_request.with_changes(vae="None")).images[0]
    assert mean_diff(own, other.images[0]) > 3
    assert "VAE: tiny-vae," in other.infotexts[0]
    assert np.array_equal(pixels(other.images[0]), pixels(same_weights_diffusers_layout.images[0]))
    assert np.array_equal(pixels(own), pixels(back))


def test_progress_is_reported_every_step_and_interrupt_returns_what_was_made(app, base_request):
    seen = []

    def on_step(job):
        seen.append((job.progress.step, job.progress.total))
        if job.progress.step == 2:
            job.interrupt()

    job = Job(base_request, on_step=on_step)
    result = app.engine.generate(base_request.with_changes(steps=6, n_iter=3), job)
    assert seen[:3] == [(0, 6), (1, 6), (2, 6)]
    assert result.interrupted and len(result.images) == 1  # the batch in progress, no further batches


def test_queue_runs_jobs_one_at_a_time_and_reports_errors(app, base_request):
    jobs = [app.queue.submit(base_request.with_changes(seed=s)) for s in (1, 2)]
    bad = app.queue.submit(base_request.with_changes(model="no-such-model"))
    assert [j.wait(120).seeds for j in jobs] == [[1], [2]]
    with pytest.raises(Exception, match="no-such-model"):
        bad.wait(120)
    assert app.queue.submit(base_request).wait(120).images  # the worker kept serving


def test_saved_outputs_are_numbered_with_infotext_and_no_temp_files(app, base_request):
    from webui.engine import infotext

    result = app.engine.generate(base_request.with_changes(save_images=True, batch_size=2))
    assert len(result.paths) == 2
    names = [p.rsplit("/", 1)[1] for p in result.paths]
    assert names[0].endswith("-1234.png") and names[1].endswith("-1235.png")
    assert int(names[1].split("-")[0]) == int(names[0].split("-")[0]) + 1
    with Image.open(result.paths[0]) as image:
        assert infotext.read_image_parameters(image) == result.infotexts[0]
        assert "/txt2img-images/" in result.paths[0]
    from pathlib import Path

    assert not [p for p in Path(result.paths[0]).parent.iterdir() if p.name.startswith(".")]


def test_vae_beside_checkpoint_is_automatic_and_vae_names_cannot_escape(app, base_request, models_dir, tmp_path):
    from webui.application import App
    from webui.config import Settings
    from webui.model_manager import ModelNotFound

    root = tmp_path / "models"
    (root / "Stable-diffusion").mkdir(parents=True)
    for name in ("tiny-sd1.safetensors",):
        (root / "Stable-diffusion" / name).write_bytes((models_dir / "Stable-diffusion" / name).read_bytes())
    (root / "Stable-diffusion" / "tiny-sd1.vae.safetensors").write_bytes(
        (models_dir / "VAE" / "tiny-vae.safetensors").read_bytes())
    local = App(Settings(models_dir=root, outputs_dir=tmp_path / "out", cache_dir=tmp_path / "cache",
                         config_file=tmp_path / "none.yaml"))
    automatic = local.engine.generate(base_request)
    own = local.engine.generate(base_request.with_changes(vae="None"))
    assert "VAE: tiny-sd1.vae," in automatic.infotexts[0] and "VAE:" not in own.infotexts[0]
    assert mean_diff(automatic.images[0], own.images[0]) > 3
    for trick in ("/etc/passwd", "../Stable-diffusion/tiny-sd1.safetensors"):
        with pytest.raises(ModelNotFound):
            local.engine.generate(base_request.with_changes(vae=trick))


def test_live_preview_and_skip(app, base_request):
    previews = []

    def on_step(job):
        if job.progress.preview is not None:
            previews.append(job.progress.preview)
        if job.progress.image_index == 0 and job.progress.step == 1:
            job.skip()

    job = Job(base_request, on_step=on_step, preview_every=1)
    result = app.engine.generate(base_request.with_changes(steps=3, n_iter=2), job)
    assert previews and previews[0].size == (32, 32)  # latent-sized RGB approximation
    assert len(result.images) == 2 and not result.interrupted  # skip ends one batch, the next still runs


@pytest.mark.parametrize("model", ["inpainting/tiny-sd1-inpainting.ckpt", "tiny-sd2-inpainting"])
def test_inpainting_models_also_do_txt2img_and_img2img(app, base_request, model):
    txt = app.engine.generate(base_request.with_changes(model=model))
    img = app.engine.generate(base_request.with_changes(model=model, init_image=txt.images[0], denoising_strength=0.5))
    assert pixels(txt.images[0]).std() > 1 and img.images[0].size == (64, 64)


def test_queue_reports_places_in_line_and_a_cancelled_waiting_job_never_runs(app, base_request):
    import threading

    release = threading.Event()
    blocker = app.queue.submit(lambda _app: release.wait(60))
    second = app.queue.submit(base_request)
    third = app.queue.submit(base_request.with_changes(seed=7))
    for _ in range(100):
        if app.queue.current is blocker:
            break
        threading.Event().wait(0.05)
    assert (app.queue.position(blocker), app.queue.position(second), app.queue.position(third)) == (0, 1, 2)
    third.interrupt()
    release.set()
    assert second.wait(120).seeds == [1234]
    assert third.wait(120) is None  # interrupted before it started: nothing ran
