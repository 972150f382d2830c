"""Scale-out on Ray (``pip install 'uniembed[ray]'``): the bulk job on an actor pool
(:mod:`~uniembed.distributed.bulk`, ``uniembed embed --ray``) and the HTTP service on Ray Serve
replicas (:mod:`~uniembed.distributed.serve`, ``uniembed serve --ray``).

Both reuse the single-process code whole: the bulk job's reading, resume, writing and errors file run
on the driver and only the encoding of chunks moves to actors; every Serve replica runs the same
FastAPI application as ``uniembed serve``, with its own model and engine. Nothing here is imported by
the core. See docs/distributed.md.
"""

from uniembed.distributed.bulk import ActorPool, ModelSpec, RayEncoder
from uniembed.distributed.cluster import connect
from uniembed.distributed.serve import ServeScaling, serve_application, serve_on_ray

__all__ = [
    "ActorPool",
    "ModelSpec",
    "RayEncoder",
    "ServeScaling",
    "connect",
    "serve_application",
    "serve_on_ray",
]
