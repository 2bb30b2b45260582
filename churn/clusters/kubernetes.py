"""A ``DaskCluster`` resource from a ``kind: kubernetes`` spec, run by the dask-kubernetes operator
(``churn[k8s]``; the operator must be installed in the Kubernetes cluster)."""

from __future__ import annotations

import contextlib
from typing import Any

import yaml
from distributed import Client

from churn.clusters.errors import ClusterError, wait_for_first_worker
from churn.clusters.extras import require
from churn.clusters.tuning import worker_environ
from churn.config import KubernetesSpec


def manifest(spec: KubernetesSpec) -> dict[str, Any]:
    """The DaskCluster manifest, as dask-kubernetes' ``make_cluster_spec`` writes it."""
    operator = require("dask_kubernetes.operator", "k8s", "kubernetes")
    resources = {"requests": {"cpu": spec.cpu, "memory": spec.memory},
                 "limits": {"cpu": spec.cpu, "memory": spec.memory}}
    out = operator.make_cluster_spec(name=spec.name, image=spec.image, n_workers=spec.n_workers,
                                     resources=resources, env={**worker_environ(), **spec.env})
    if spec.namespace:
        out["metadata"]["namespace"] = spec.namespace
    return out


def open_client(spec: KubernetesSpec, stack: contextlib.ExitStack) -> Client:
    """Create the DaskCluster; ``stack`` deletes it again."""
    operator = require("dask_kubernetes.operator", "k8s", "kubernetes")
    try:
        cluster = operator.KubeCluster(custom_cluster_spec=manifest(spec), namespace=spec.namespace,
                                       shutdown_on_close=True)
    except Exception as exc:  # noqa: BLE001 - no kubeconfig, no operator, no permission: one line
        raise ClusterError(f"cannot create DaskCluster {spec.name!r}: {exc}") from exc
    stack.enter_context(cluster)
    client = stack.enter_context(Client(cluster, set_as_default=False))
    wait_for_first_worker(client, f"worker pod of {spec.name!r}", "kubectl get pods shows why")
    return client


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(spec: KubernetesSpec) -> str:
    """The DaskCluster manifest as YAML (``kubectl apply -f`` takes it as it is)."""
    return yaml.dump(manifest(spec), Dumper=_NoAliases, sort_keys=False)
