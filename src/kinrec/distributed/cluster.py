"""Connecting to a Ray cluster, and a throw-away local one bound to the loopback interface.

``--ray ADDRESS`` (or ``KINREC_RAY_ADDRESS``) on the offline commands names the cluster:
``auto`` joins the cluster this machine is part of (``ray start`` was run here), a
``HOST:PORT`` joins the cluster whose head listens there, ``local`` starts a one-node Ray
instance inside this process for the command's duration (useful to try the distributed path
on a laptop). Ray is an optional dependency: ``pip install 'kinrec[ray]'``.

A local instance, and the test clusters of :func:`local_cluster`, listen on 127.0.0.1 only:
on Linux Ray binds its servers to the machine's outward address unless the node address is
the loopback one, which :func:`loopback_only` arranges before any node starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

ENV_ADDRESS = "KINREC_RAY_ADDRESS"
LOOPBACK = "127.0.0.1"
INSTALL_HINT = "Ray is not installed: pip install 'kinrec[ray]'"


class ClusterUnavailable(LookupError):
    """Ray is not installed, or no cluster answers at the address given."""


def ray_module() -> Any:
    """``import ray``, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - the extra is installed in the dev env
        raise ClusterUnavailable(INSTALL_HINT) from exc
    return ray


def resolve_address(address: str | None) -> str | None:
    """The cluster address to use: ``address``, else ``KINREC_RAY_ADDRESS``, else None (no
    Ray: the single-process path)."""
    address = address or os.environ.get(ENV_ADDRESS) or None
    if address is not None and not address.strip():
        return None
    return address


def loopback_only() -> None:
    """Make the Ray nodes this process starts (and its driver) use 127.0.0.1 as their address,
    so that none of their servers listens on another interface. Ray's own switch: on a
    platform without "cluster" support, the node address is the loopback one."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # read once when ray is imported: already imported here
        constants.ENABLE_RAY_CLUSTER = False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # torch.distributed (gloo) between Ray Train workers on this machine: loopback too
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")


def connect(address: str | None) -> Any:
    """Connect this process to the cluster at ``address`` (see the module's docstring) and
    return the ``ray`` module; already connected: kept. ``local``: a one-node instance on
    127.0.0.1 with this machine's cores."""
    ray = ray_module()
    if address not in (None, "auto", "local"):
        _reachable(address)
    if ray.is_initialized():
        return ray
    if address == "local":
        loopback_only()
        ray.init(
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            _node_ip_address=LOOPBACK,
        )
        return ray
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        raise ClusterUnavailable(
            f"no Ray cluster at {address!r} ({exc}); start one with `ray start --head` or pass "
            "--ray local"
        ) from None
    return ray


def _reachable(address: str, timeout: float = 3.0) -> None:
    """Fail fast, with a clear message, when nothing listens at ``HOST:PORT`` (Ray itself
    retries for minutes). A loopback head makes this process use the loopback address too."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnavailable(f"--ray {address!r}: expected auto, local or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterUnavailable(
            f"no Ray cluster at {address} ({exc.strerror or exc}); start one with "
            "`ray start --head` or pass --ray local"
        ) from None
    if host in (LOOPBACK, "localhost"):
        loopback_only()


def nodes_alive() -> int:
    """How many nodes of the connected cluster are alive."""
    ray = ray_module()
    return sum(1 for n in ray.nodes() if n.get("Alive"))


@contextmanager
def local_cluster(workers: int = 2, cpus_per_node: int = 1, head_cpus: int = 0) -> Iterator[str]:
    """A real multi-node Ray cluster on this machine (a head and ``workers`` worker nodes, each
    its own raylet and object store), listening on 127.0.0.1 only; this process is connected
    to it inside the block, which yields its address. Everything is stopped afterwards.

    ``head_cpus = 0`` keeps work off the head node, so tasks and training workers run on
    the worker nodes, as on a real cluster."""
    loopback_only()
    ray = ray_module()
    from ray.cluster_utils import Cluster

    store = 80 * 1024 * 1024
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": head_cpus,
            "node_ip_address": LOOPBACK,
            "include_dashboard": False,
            "object_store_memory": store,
        },
    )
    try:
        for _ in range(workers):
            cluster.add_node(
                num_cpus=cpus_per_node, node_ip_address=LOOPBACK, object_store_memory=store
            )
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        yield cluster.address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
