"""``uniembed serve``: flags and their environment twins, fast failure, cheap import; a tiny real
v4."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import uniembed
from tests.helpers import png_bytes
from uniembed import cli
from uniembed.cli import serve as serve_cli
from uniembed.server.settings import ServerSettings
from uniembed.testing.live import ServeProcess

runner = CliRunner()


@pytest.fixture
def captured(monkeypatch) -> list[ServerSettings]:
    seen: list[ServerSettings] = []
    monkeypatch.setattr(serve_cli, "run_server", seen.append)
    return seen


def test_flags_build_the_settings(captured):
    result = runner.invoke(
        cli.app,
        [
            "serve",
            "--model",
            "a/b",
            "-m",
            "/models/c",
            "--port",
            "9000",
            "--api-key",
            "k1",
            "--api-key",
            "k2",
            "--max-pdf-pages",
            "3",
            "--allow-private-urls",
            "--max-tokens-per-item",
            "128",
            "--cpu-workers",
            "3",
            "--torch-threads",
            "1",
            "--served-model-name",
            "one",
            "--served-model-name",
            "two",
            "--header-timeout",
            "3.5",
            "--max-connections",
            "99",
            "--max-pixels-per-request",
            "1000",
            "--no-packing",
        ],
    )
    assert result.exit_code == 0, result.output
    (settings,) = captured
    assert settings.models == ("a/b", "/models/c") and settings.port == 9000
    assert settings.served_names == ("one", "two") and settings.header_timeout == 3.5
    assert settings.max_connections == 99 and settings.max_pixels_per_request == 1000
    assert settings.api_keys == ("k1", "k2") and settings.max_tokens_per_item == 128
    assert settings.input_limits.max_pdf_pages == 3 and settings.input_limits.allow_private_urls
    assert settings.cpu_workers == 3 and settings.torch_threads == 1
    assert not settings.packing and ServerSettings().packing


def test_every_flag_has_an_environment_twin(captured):
    env = {
        "UNIEMBED_MODEL": "x/y z/w",
        "UNIEMBED_HOST": "0.0.0.0",
        "UNIEMBED_PORT": "7000",
        "UNIEMBED_DEVICE": "cpu",
        "UNIEMBED_DTYPE": "float32",
        "UNIEMBED_API_KEYS": "s1 s2",
        "UNIEMBED_MAX_BODY_BYTES": "1234",
        "UNIEMBED_FETCH_TIMEOUT": "2.5",
        "UNIEMBED_ALLOW_PRIVATE_URLS": "true",
        "UNIEMBED_MAX_QUEUE_ROWS": "9",
        "UNIEMBED_SERVED_MODEL_NAME": "first second",
        "UNIEMBED_BODY_TIMEOUT": "7",
    }
    result = runner.invoke(cli.app, ["serve"], env=env)
    assert result.exit_code == 0, result.output
    (s,) = captured
    assert (s.models, s.host, s.port, s.device, s.dtype) == (
        ("x/y", "z/w"),
        "0.0.0.0",
        7000,
        "cpu",
        "float32",
    )
    assert s.api_keys == ("s1", "s2") and s.max_body_bytes == 1234 and s.max_queue_rows == 9
    assert s.input_limits.fetch_timeout == 2.5 and s.input_limits.allow_private_urls
    assert s.served_names == ("first", "second") and s.body_timeout == 7
    serve_command = cli.app.registered_commands[0].callback
    import inspect

    flags = [p for p in inspect.signature(serve_command).parameters.values()]
    assert all(p.default is not inspect.Parameter.empty for p in flags)
    help_text = runner.invoke(cli.app, ["serve", "--help"], env={"COLUMNS": "300"}).output
    for name in [p.name.upper() for p in flags if p.name not in ("api_key",)] + ["API_KEYS"]:
        assert f"UNIEMBED_{name}" in help_text, name


def test_the_default_model_fails_fast_without_network_or_cache(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    env.pop("UNIEMBED_MODEL", None)
    done = subprocess.run(
        [sys.executable, "-m", "uniembed.cli", "serve"],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "jinaai/jina-embeddings-v4" in done.stderr and "local Hugging Face cache" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_missing_directory_and_bad_limits_exit_non_zero_with_the_message(tmp_path):
    result = runner.invoke(cli.app, ["serve", "--model", str(tmp_path / "none")])
    assert result.exit_code == 1 and "no such local directory" in result.output
    result = runner.invoke(cli.app, ["serve", "--max-pdf-pages", "0"])
    assert result.exit_code == 1 and "max_pdf_pages" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_importing_the_cli_is_cheap_and_lazy_commands_are_listed():
    code = (
        "import sys, uniembed.cli; "
        "print(sorted(m for m in ('torch', 'fastapi', 'uniembed.bulk') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "[]"
    output = runner.invoke(cli.app, ["--help"], env={"COLUMNS": "200"}).output
    assert "serve" in output and "embed" in output and "bench" in output


def test_a_tiny_real_jina_v4_checkpoint_is_served(tmp_path, serve):
    from uniembed.testing.jina_v4 import write_tiny_jina_v4

    path = write_tiny_jina_v4(tmp_path / "tiny-v4")
    embedder = uniembed.load(path)
    live = serve({str(path): embedder})
    raw = png_bytes((120, 10, 200), (56, 56))
    image = base64.b64encode(raw).decode()
    body = {
        "model": "tiny-v4",
        "input": ["a query", {"image": image}],
        "task": "retrieval.query",
        "dimensions": 32,
    }
    reply = httpx.post(f"{live.url}/v1/embeddings", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    expected = embedder.encode(
        ["a query", Image.open(io.BytesIO(raw))],
        task="retrieval.query",
        dimensions=32,
    )
    for data, vector in zip(reply.json()["data"], expected.embeddings):
        np.testing.assert_allclose(
            np.asarray(data["embedding"], np.float32), vector.numpy(), atol=1e-5
        )
    multi = httpx.post(
        f"{live.url}/v1/embeddings",
        json={**body, "dimensions": None, "return_multivector": True},
        timeout=60,
    ).json()
    assert len(multi["data"][0]["embeddings"][0]) == embedder.info.multivector_dim


def test_uniembed_serve_loads_a_snapshot_and_answers(tmp_path):
    """The real command in its own process: load (on a temporary thread), serve, answer, stop."""
    from uniembed.testing.jina_v4 import write_tiny_jina_v4

    path = write_tiny_jina_v4(tmp_path / "tiny-v4")
    server = ServeProcess("--model", str(path), log=subprocess.PIPE)
    try:
        reply = httpx.post(f"{server.url}/v1/embeddings", json={"input": ["hello"]}, timeout=60)
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == "tiny-v4"  # the served name, not the snapshot's path
        expected = uniembed.load(path).encode(["hello"]).embeddings[0].numpy()
        np.testing.assert_allclose(
            np.asarray(reply.json()["data"][0]["embedding"], np.float32), expected, atol=1e-5
        )
    finally:
        server.stop()


@pytest.mark.parametrize("packing", [True, False])
def test_the_packing_flag_reaches_the_engine(tiny_v4_path, packing: bool) -> None:
    from uniembed.server.app import load_embedders

    settings = ServerSettings(models=(str(tiny_v4_path),), device="cpu", packing=packing)
    (embedder,) = load_embedders(settings).values()
    assert embedder.engine.policy.packed is packing


def test_serve_takes_dtype_int8(captured):
    result = runner.invoke(cli.app, ["serve", "--model", "a/b", "--dtype", "int8"])
    assert result.exit_code == 0, result.output
    assert captured[0].dtype == "int8"


@pytest.mark.slow
def test_uniembed_serve_dtype_int8_answers_what_the_int8_library_does(tmp_path):
    """A live server (~30 s on 2 busy cores) loads the int8 model and answers with it."""
    from uniembed.testing.jina_v4 import write_tiny_jina_v4

    path = write_tiny_jina_v4(tmp_path / "tiny-v4")
    server = ServeProcess("--model", str(path), "--dtype", "int8", log=subprocess.PIPE)
    try:
        reply = httpx.post(f"{server.url}/v1/embeddings", json={"input": ["hello"]}, timeout=60)
        assert reply.status_code == 200, reply.text
        served = np.asarray(reply.json()["data"][0]["embedding"], np.float32)
    finally:
        server.stop()
    int8 = uniembed.load(path, device="cpu", dtype="int8").encode(["hello"]).embeddings[0].numpy()
    float32 = uniembed.load(path, device="cpu").encode(["hello"]).embeddings[0].numpy()
    np.testing.assert_allclose(served, int8, atol=1e-5)  # the server ran the int8 model
    assert np.abs(served - float32).max() > 1e-5
