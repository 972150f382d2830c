"""``uniembed serve --ray``: the HTTP service on Ray Serve replicas.

Every replica builds the same FastAPI application as ``uniembed serve`` (:func:`create_app`): it
loads the models once, runs their engines (requests are batched inside each replica as in one
process) and answers the same routes, errors and metrics. Ray Serve's proxy spreads requests over
the replicas, restarts a replica that dies, and adds or removes replicas between ``min_replicas``
and ``max_replicas`` from the requests in flight per replica.

What is uniembed's and what is Ray's: the request limits, the request budget and the 503 at
``max_concurrent_requests`` apply per replica; connection limits and header/body timeouts are
uvicorn's in ``uniembed serve`` and Ray Serve's proxy's here (its own settings). An index given with
``--index`` must be a Qdrant URL: an embedded index directory belongs to one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uniembed.distributed.cluster import LOCAL, connect
from uniembed.errors import InvalidInput

if TYPE_CHECKING:
    from fastapi import FastAPI

    from uniembed.server.settings import ServerSettings

APPLICATION = "uniembed"


@dataclass(frozen=True)
class ServeScaling:
    """How many replicas, what each reserves, and how Ray Serve scales them.

    ``max_replicas`` above ``replicas`` turns on autoscaling between the two, aiming at
    ``target_ongoing_requests`` requests in flight per replica.
    """

    replicas: int = 1
    max_replicas: int | None = None
    target_ongoing_requests: float = 16.0
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    health_check_period_s: float = 10.0

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise InvalidInput(f"serve at least 1 replica, got {self.replicas}")
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise InvalidInput(
                f"max replicas ({self.max_replicas}) is below replicas ({self.replicas})"
            )
        if (
            self.cpus_per_replica <= 0
            or self.gpus_per_replica < 0
            or self.target_ongoing_requests <= 0
        ):
            raise InvalidInput(
                "CPUs per replica and target ongoing requests must be > 0, GPUs >= 0"
            )

    def deployment_options(self, settings: ServerSettings) -> dict[str, Any]:
        """Keyword arguments of ``serve.deployment``."""
        options: dict[str, Any] = {
            "ray_actor_options": {
                "num_cpus": self.cpus_per_replica,
                "num_gpus": self.gpus_per_replica,
            },
            "max_ongoing_requests": settings.max_concurrent_requests,
            "health_check_period_s": self.health_check_period_s,
        }
        if self.max_replicas is not None and self.max_replicas > self.replicas:
            options["autoscaling_config"] = {
                "min_replicas": self.replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        else:
            options["num_replicas"] = self.replicas
        return options


class UniembedReplica:
    """The Serve deployment's class: its ASGI app is built on the replica, after it starts."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings

    def __serve_build_asgi_app__(self) -> FastAPI:
        """One replica's application, built as ``uniembed serve`` builds it (the index, from a
        Qdrant server, lives as long as the replica)."""
        from uniembed.server.app import build_app

        return build_app(self.settings)[0]


def serve_application(settings: ServerSettings, scaling: ServeScaling = ServeScaling()) -> Any:
    """The Ray Serve application (``serve.run`` it, or use it in a Serve config)."""
    from ray import serve

    if settings.index and not settings.index.startswith(("http://", "https://")):
        raise InvalidInput(
            "--ray serves an index only from a Qdrant server (http(s)://…), not the directory "
            f"{settings.index!r}: an embedded index belongs to one process"
        )
    deployment = serve.deployment(
        serve.ingress()(UniembedReplica), name=APPLICATION, **scaling.deployment_options(settings)
    )
    return deployment.bind(settings)


def serve_on_ray(
    settings: ServerSettings,
    scaling: ServeScaling = ServeScaling(),
    address: str | None = LOCAL,
    *,
    blocking: bool = True,
) -> None:
    """Run the application on the cluster at ``address``, answering on ``settings.host:port``."""
    connect(address)
    from ray import serve

    application = serve_application(settings, scaling)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(application, name=APPLICATION, route_prefix="/", blocking=blocking)
