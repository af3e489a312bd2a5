"""Infotext in A1111's exact format, its quoting rule, and parsing real A1111 strings."""
from PIL import Image

from webui.engine import infotext

A1111_SAMPLE = (
    "masterpiece, best quality, (a cat:1.2) sitting on a chair\n"
    "Negative prompt: lowres, bad anatomy\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 3890716513, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.55, Clip skip: 2, "
    "Lora hashes: \"detail: 4f8a1b2c3d4e, style: 0a1b2c3d4e5f\", Version: v1.10.1"
)


def test_parse_real_a1111_infotext():
    fields = infotext.parse(A1111_SAMPLE)
    assert fields["Prompt"] == "masterpiece, best quality, (a cat:1.2) sitting on a chair"
    assert fields["Negative prompt"] == "lowres, bad anatomy"
    assert fields["Steps"] == "28"
    assert fields["Sampler"] == "DPM++ 2M"
    assert fields["Schedule type"] == "Karras"
    assert fields["CFG scale"] == "7.5"
    assert fields["Seed"] == "3890716513"
    assert (fields["Size-1"], fields["Size-2"]) == ("512", "768")
    assert fields["Model hash"] == "6ce0161689"
    assert fields["Model"] == "v1-5-pruned-emaonly"
    assert fields["Denoising strength"] == "0.55"
    assert fields["Clip skip"] == "2"
    assert fields["Lora hashes"] == "detail: 4f8a1b2c3d4e, style: 0a1b2c3d4e5f"
    assert fields["Version"] == "v1.10.1"


def test_parse_old_combined_sampler_name_and_multiline_prompts():
    text = ("a castle\non a hill\nNegative prompt: blurry\nugly\n"
            "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: abcdef0123")
    fields = infotext.parse(text)
    assert fields["Prompt"] == "a castle\non a hill"
    assert fields["Negative prompt"] == "blurry\nugly"
    assert (fields["Sampler"], fields["Schedule type"]) == ("DPM++ 2M", "Karras")
    assert fields["Clip skip"] == "1"  # A1111 fills in the default


def test_parse_text_without_parameter_line_is_all_prompt():
    fields = infotext.parse("just a prompt\nwith two lines")
    assert fields["Prompt"] == "just a prompt\nwith two lines"
    assert fields["Negative prompt"] == ""
    assert "Steps" not in fields


def test_build_uses_a1111_quoting_and_order():
    text = infotext.build("a dog", "", [("Steps", 20), ("Sampler", "Euler a"), ("CFG scale", "7"),
                                        ("Note", "a, b"), ("Empty", None), ("Model", "x:y")])
    assert text == 'a dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Note: "a, b", Model: "x:y"'
    back = infotext.parse(text)
    assert back["Note"] == "a, b" and back["Model"] == "x:y" and "Empty" not in back


def test_request_fields_from_parsed_infotext():
    fields = infotext.request_fields(infotext.parse(A1111_SAMPLE))
    assert fields["steps"] == 28 and fields["cfg_scale"] == 7.5 and fields["seed"] == 3890716513
    assert (fields["width"], fields["height"]) == (512, 768)
    assert fields["sampler"] == "DPM++ 2M" and fields["schedule"] == "Karras" and fields["clip_skip"] == 2


def test_infotext_survives_png_jpeg_and_webp(tmp_path):
    from webui.outputs import write_image

    image = Image.new("RGB", (16, 16), (200, 10, 10))
    text = "ünïcode prompt, with comma\nNegative prompt: no\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 9, Size: 16x16"
    for fmt in ("png", "jpg", "webp"):
        path = tmp_path / f"x.{fmt}"
        write_image(image, text, path, fmt)
        with Image.open(path) as reopened:
            assert infotext.read_image_parameters(reopened) == text, fmt
