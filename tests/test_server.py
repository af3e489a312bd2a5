"""Serving flags: --share offline fails in one line while the local UI keeps working; warnings."""
import time
import urllib.request

from test_browser import start_server


def test_share_offline_is_one_clear_message_and_the_ui_keeps_serving(models_dir, tmp_path):
    proc, url = start_server(models_dir, tmp_path, "--share")
    log_file = next(tmp_path.glob("server-*.log"))
    try:
        assert urllib.request.urlopen(url, timeout=10).status == 200
        deadline = time.time() + 60  # the share attempt may end after the page already serves
        while "share link" not in log_file.read_text() and time.time() < deadline:
            time.sleep(0.5)
        assert urllib.request.urlopen(url, timeout=10).status == 200  # still serving after it failed
    finally:
        proc.terminate()
        proc.wait(20)
    log = log_file.read_text()
    assert "could not create a public share link" in log
    assert "without --gradio-auth" in log  # exposed without a login: warned
    assert "frpc" not in log  # not Gradio's download guide


def test_auth_entries_parse_from_flag_and_file(tmp_path):
    from webui.server import parse_auth

    path = tmp_path / "auth.txt"
    path.write_text("bob:pw2\ncarol:p:w3\n")
    assert parse_auth("alice:pw1", path) == [("alice", "pw1"), ("bob", "pw2"), ("carol", "p:w3")]


def test_api_flag_mounts_sdapi_beside_the_ui(models_dir, tmp_path):
    import json

    proc, url = start_server(models_dir, tmp_path, "--api")
    try:
        assert urllib.request.urlopen(url, timeout=10).status == 200  # the UI
        samplers = json.loads(urllib.request.urlopen(url + "/sdapi/v1/samplers", timeout=10).read())
        assert "DPM++ 2M" in [s["name"] for s in samplers]
        assert urllib.request.urlopen(url + "/docs", timeout=10).status == 200
        schema = json.loads(urllib.request.urlopen(url + "/openapi.json", timeout=10).read())
        assert "/sdapi/v1/txt2img" in schema["paths"]
    finally:
        proc.terminate()
        proc.wait(20)
