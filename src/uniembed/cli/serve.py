"""``uniembed serve``: the embeddings API (and, with ``--index``, search) in this process, or on
Ray Serve replicas with ``--ray``.

Every flag has an environment-variable twin (``UNIEMBED_*``, shown in ``--help``); list flags read
their variable as whitespace-separated values. Importing this module is cheap: the settings modules
it takes its defaults from are torch-free.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from uniembed.cli.options import Device, Dtype, Ray, env, model_option
from uniembed.distributed.serve import ServeScaling
from uniembed.inputs.limits import InputLimits
from uniembed.models import DEFAULT_MODEL
from uniembed.server.settings import ServerSettings

SHORT_HELP = "Serve the embeddings API (and, with --index, search)."
SERVE = ServerSettings()  # the defaults every flag shows
LIMITS = InputLimits()
RAY_SERVE = ServeScaling()
RAY_SERVE_FLAGS = (
    "ray_replicas",
    "ray_max_replicas",
    "ray_target_ongoing_requests",
    "ray_cpus_per_replica",
    "ray_gpus_per_replica",
)


def serve_command(
    model: Annotated[
        list[str] | None,
        model_option(
            "Model to serve (hub id or local snapshot); repeat to serve several. "
            f"Default: {DEFAULT_MODEL}.",
            show_default=False,
        ),
    ] = None,
    served_model_name: Annotated[
        list[str] | None,
        typer.Option(
            "--served-model-name",
            envvar=env("SERVED_MODEL_NAME"),
            show_default=False,
            help="Name clients use for each --model, in order (default: its last path "
            "component); each task is also served as NAME-TASK, e.g. "
            "jina-embeddings-v4-retrieval-passage.",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(envvar=env("HOST"), help="Address to bind (0.0.0.0: all).")
    ] = SERVE.host,
    port: Annotated[int, typer.Option(envvar=env("PORT"), help="Port to listen on.")] = SERVE.port,
    device: Device = SERVE.device,
    dtype: Dtype = SERVE.dtype,
    adapter: Annotated[
        list[str] | None,
        typer.Option(
            "--adapter",
            envvar=env("ADAPTERS"),
            show_default=False,
            help="NAME=DIR: serve the adapter folder DIR (uniembed train) as task NAME beside "
            "the official ones; repeat for several.",
        ),
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            envvar=env("API_KEYS"),
            show_default=False,
            help="Accepted bearer token; repeat for several. None given: no authentication.",
        ),
    ] = None,
    token_budget: Annotated[
        int, typer.Option(envvar=env("TOKEN_BUDGET"), help="Padded tokens per forward batch.")
    ] = SERVE.token_budget,
    max_batch_size: Annotated[
        int, typer.Option(envvar=env("MAX_BATCH_SIZE"), help="Rows per forward batch.")
    ] = SERVE.max_batch_size,
    max_queue_rows: Annotated[
        int, typer.Option(envvar=env("MAX_QUEUE_ROWS"), help="Queued rows per model before 429.")
    ] = SERVE.max_queue_rows,
    batch_gather_ms: Annotated[
        float,
        typer.Option(
            envvar=env("BATCH_GATHER_MS"),
            help="Longest wait of a batch for the clients the last one answered (0: never wait).",
        ),
    ] = SERVE.batch_gather_ms,
    cpu_workers: Annotated[
        int,
        typer.Option(
            envvar=env("CPU_WORKERS"), help="Threads for tokenising, decoding and large responses."
        ),
    ] = SERVE.cpu_workers,
    packing: Annotated[
        bool,
        typer.Option(
            "--packing/--no-packing",
            envvar=env("PACKING"),
            help="Run batches padding-free (rows packed into one sequence); --no-packing: padded "
            "batches, the reference path.",
        ),
    ] = SERVE.packing,
    torch_threads: Annotated[
        int | None,
        typer.Option(
            envvar=env("TORCH_THREADS"),
            help="CPU threads of each model's forward (default: torch's, the physical cores).",
        ),
    ] = SERVE.torch_threads,
    max_connections: Annotated[
        int,
        typer.Option(
            envvar=env("MAX_CONNECTIONS"),
            help="Open connections; at the limit the longest-idle one is closed.",
        ),
    ] = SERVE.max_connections,
    max_concurrent_requests: Annotated[
        int,
        typer.Option(
            envvar=env("MAX_CONCURRENT_REQUESTS"),
            help="Requests in progress; more get 503 + Retry-After (/health, /ready, /metrics "
            "aside).",
        ),
    ] = SERVE.max_concurrent_requests,
    header_timeout: Annotated[
        float,
        typer.Option(
            envvar=env("HEADER_TIMEOUT"),
            help="Seconds from connecting (or the last response) to complete request headers.",
        ),
    ] = SERVE.header_timeout,
    body_timeout: Annotated[
        float,
        typer.Option(
            envvar=env("BODY_TIMEOUT"),
            help="Seconds from the headers to the end of the body (else 408).",
        ),
    ] = SERVE.body_timeout,
    keep_alive_timeout: Annotated[
        float,
        typer.Option(
            envvar=env("KEEP_ALIVE_TIMEOUT"),
            help="Seconds an idle connection stays open after a response.",
        ),
    ] = SERVE.keep_alive_timeout,
    max_body_bytes: Annotated[
        int,
        typer.Option(
            envvar=env("MAX_BODY_BYTES"),
            help="Largest request body (also after gzip decompression).",
        ),
    ] = SERVE.max_body_bytes,
    max_items_per_request: Annotated[
        int,
        typer.Option(
            envvar=env("MAX_ITEMS_PER_REQUEST"),
            help="Inputs per request (PDF pages count, from the page count).",
        ),
    ] = SERVE.max_items_per_request,
    max_pixels_per_request: Annotated[
        int,
        typer.Option(
            envvar=env("MAX_PIXELS_PER_REQUEST"),
            help="Decoded pixels of all images and PDF pages of a request (from headers, "
            "before decoding).",
        ),
    ] = SERVE.max_pixels_per_request,
    max_fetch_bytes_per_request: Annotated[
        int,
        typer.Option(
            envvar=env("MAX_FETCH_BYTES_PER_REQUEST"),
            help="Bytes downloaded from URLs by one request.",
        ),
    ] = SERVE.max_fetch_bytes_per_request,
    max_tokens_per_item: Annotated[
        int | None,
        typer.Option(
            envvar=env("MAX_TOKENS_PER_ITEM"),
            help="Tokens per input (default: the model's context).",
        ),
    ] = SERVE.max_tokens_per_item,
    max_tokens_per_request: Annotated[
        int, typer.Option(envvar=env("MAX_TOKENS_PER_REQUEST"), help="Tokens per request.")
    ] = SERVE.max_tokens_per_request,
    max_image_bytes: Annotated[
        int, typer.Option(envvar=env("MAX_IMAGE_BYTES"), help="Encoded bytes of one image.")
    ] = LIMITS.max_image_bytes,
    max_image_pixels: Annotated[
        int, typer.Option(envvar=env("MAX_IMAGE_PIXELS"), help="Pixels of one image or PDF page.")
    ] = LIMITS.max_image_pixels,
    max_pdf_bytes: Annotated[
        int, typer.Option(envvar=env("MAX_PDF_BYTES"), help="Bytes of one PDF.")
    ] = LIMITS.max_pdf_bytes,
    max_pdf_pages: Annotated[
        int, typer.Option(envvar=env("MAX_PDF_PAGES"), help="Pages of one PDF.")
    ] = LIMITS.max_pdf_pages,
    pdf_dpi: Annotated[
        float, typer.Option(envvar=env("PDF_DPI"), help="PDF render resolution.")
    ] = LIMITS.pdf_dpi,
    max_text_chars: Annotated[
        int, typer.Option(envvar=env("MAX_TEXT_CHARS"), help="Characters of one text.")
    ] = LIMITS.max_text_chars,
    fetch_timeout: Annotated[
        float, typer.Option(envvar=env("FETCH_TIMEOUT"), help="Seconds per URL download.")
    ] = LIMITS.fetch_timeout,
    max_redirects: Annotated[
        int, typer.Option(envvar=env("MAX_REDIRECTS"), help="Redirects per URL.")
    ] = LIMITS.max_redirects,
    max_concurrent_fetches: Annotated[
        int,
        typer.Option(envvar=env("MAX_CONCURRENT_FETCHES"), help="Parallel downloads per request."),
    ] = LIMITS.max_concurrent_fetches,
    allow_private_urls: Annotated[
        bool,
        typer.Option(
            envvar=env("ALLOW_PRIVATE_URLS"),
            help="Allow URLs on private/loopback addresses (trusted networks only).",
        ),
    ] = LIMITS.allow_private_urls,
    log_level: Annotated[
        str, typer.Option(envvar=env("LOG_LEVEL"), help="critical, error, warning, info, debug.")
    ] = SERVE.log_level,
    index: Annotated[
        str | None,
        typer.Option(
            envvar=env("INDEX"),
            help="Also serve this index (directory or Qdrant URL): /v1/search, /v1/index and "
            "the search page at /. Its model is served when no --model is given.",
        ),
    ] = None,
    ray: Ray = None,
    ray_replicas: Annotated[
        int,
        typer.Option(
            envvar=env("RAY_REPLICAS"),
            help="Replicas, each with its own copy of the models.",
        ),
    ] = RAY_SERVE.replicas,
    ray_max_replicas: Annotated[
        int | None,
        typer.Option(
            envvar=env("RAY_MAX_REPLICAS"),
            help="Above --ray-replicas: autoscale between the two.",
        ),
    ] = RAY_SERVE.max_replicas,
    ray_target_ongoing_requests: Annotated[
        float,
        typer.Option(
            envvar=env("RAY_TARGET_ONGOING_REQUESTS"),
            help="Autoscaling aims at this many requests in flight per replica.",
        ),
    ] = RAY_SERVE.target_ongoing_requests,
    ray_cpus_per_replica: Annotated[
        float,
        typer.Option(
            envvar=env("RAY_CPUS_PER_REPLICA"),
            help="CPUs each replica reserves.",
        ),
    ] = RAY_SERVE.cpus_per_replica,
    ray_gpus_per_replica: Annotated[
        float,
        typer.Option(
            envvar=env("RAY_GPUS_PER_REPLICA"),
            help="GPUs each replica reserves (1: one GPU each).",
        ),
    ] = RAY_SERVE.gpus_per_replica,
) -> None:
    """Serve the Jina- and OpenAI-compatible embeddings API (and, with --index, search); with
    --ray, on Ray Serve replicas."""
    options = dict(locals())
    from uniembed.errors import UniembedError

    ray_flags = {name: options.pop(name) for name in RAY_SERVE_FLAGS}
    address = options.pop("ray")
    try:
        if options["index"] and not options["model"]:
            from uniembed.retrieval.index import recorded_model

            options["model"] = [recorded_model(options["index"])]
        settings = build_settings(**options)
        if address is None:
            run_server(settings)
        else:
            from uniembed.distributed.serve import ServeScaling, serve_on_ray

            scaling = ServeScaling(
                **{name.removeprefix("ray_"): value for name, value in ray_flags.items()}
            )
            serve_on_ray(settings, scaling, address)
    except UniembedError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(code=1) from None
    except ValueError as error:  # e.g. an unknown dtype name from the loader
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None


INPUT_LIMIT_FLAGS = (
    "max_image_bytes",
    "max_image_pixels",
    "max_pdf_bytes",
    "max_pdf_pages",
    "pdf_dpi",
    "max_text_chars",
    "fetch_timeout",
    "max_redirects",
    "max_concurrent_fetches",
    "allow_private_urls",
)


def build_settings(**flags: Any) -> Any:
    """The :class:`~uniembed.server.settings.ServerSettings` for the ``serve`` flags (checked)."""
    from uniembed.inputs.limits import InputLimits
    from uniembed.server.settings import ServerSettings

    limits = InputLimits(**{name: flags.pop(name) for name in INPUT_LIMIT_FLAGS})
    models = tuple(flags.pop("model") or (DEFAULT_MODEL,))
    keys = tuple(flags.pop("api_key") or ())
    names = tuple(flags.pop("served_model_name") or ())
    adapters = tuple(parse_adapter(value) for value in flags.pop("adapter") or ())
    return ServerSettings(
        models=models,
        api_keys=keys,
        served_model_names=names,
        adapters=adapters,
        input_limits=limits,
        **flags,
    )


def parse_adapter(value: str) -> tuple[str, str]:
    """``NAME=DIR`` → ``(NAME, DIR)``.

    >>> parse_adapter("my-domain=/runs/a/adapter")
    ('my-domain', '/runs/a/adapter')
    """
    from uniembed.errors import InvalidInput

    name, sep, folder = value.partition("=")
    if not sep or not name or not folder:
        raise InvalidInput(f"--adapter takes NAME=DIR, got {value!r}")
    return name, folder


def run_server(settings: Any) -> None:
    """Load every model (failing fast with a clear message), open the index if any, then run uvicorn
    until stopped."""
    import uvicorn

    from uniembed.server.app import build_app
    from uniembed.server.connections import uvicorn_config

    for source, served in zip(settings.models, settings.served_names):
        typer.echo(f"loading {source} as {served!r} …", err=True)
    app, index = build_app(settings)
    try:
        uvicorn.Server(uvicorn_config(app, settings)).run()
    finally:
        if index is not None:
            index.close()
