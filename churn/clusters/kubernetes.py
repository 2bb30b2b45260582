"""A ``DaskCluster`` resource from a ``kind: kubernetes`` spec, run by the dask-kubernetes operator
(``churn[k8s]``; the operator must be installed in the Kubernetes cluster).

With a ``tls`` section the scheduler and worker pods mount the spec's Secret and listen on
``tls://`` only. dask-kubernetes' ``KubeCluster`` reaches its scheduler by ``tcp://`` alone
(``operator/networking.py``), so churn then creates the resource itself (kr8s, as KubeCluster
does) and connects to ``scheduler_address`` with the driver's certificate.
"""

from __future__ import annotations

import contextlib
from typing import Any

import yaml
from distributed import Client

from churn.clusters import address
from churn.clusters.collective import tracker_note, worker_threads
from churn.clusters.errors import ClusterError, close_on_exit, wait_for_first_worker
from churn.clusters.extras import require
from churn.clusters.tuning import worker_environ
from churn.config import AddressSpec, KubernetesSpec, setting
from churn.config.cluster import port_range

TLS_DIR = "/etc/dask/tls"  # where the pods see the Secret's ca.crt, tls.crt and tls.key


def _tls_args() -> list[str]:
    return ["--protocol", "tls", "--tls-ca-file", f"{TLS_DIR}/ca.crt", "--tls-cert", f"{TLS_DIR}/tls.crt",
            "--tls-key", f"{TLS_DIR}/tls.key"]


def scheduler_address(spec: KubernetesSpec) -> str:
    """Where the driver of a TLS cluster connects: the spec's address, else the scheduler's Service."""
    namespace = f".{spec.namespace}" if spec.namespace else ""
    return spec.scheduler_address or f"tls://{spec.name}-scheduler{namespace}:8786"


def _add_tls(out: dict[str, Any], spec: KubernetesSpec) -> None:
    """Mount the Secret into both pods, put the TLS options on both command lines, and point the
    workers at the scheduler by tls:// (the operator sets a tcp:// DASK_SCHEDULER_ADDRESS only
    where none is given)."""
    assert spec.tls is not None
    encryption = {"name": "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "value": str(spec.tls.require_encryption)}
    for role in ("scheduler", "worker"):
        pod = out["spec"][role]["spec"]
        pod["volumes"] = [{"name": "churn-tls", "secret": {"secretName": spec.tls.secret}}]
        [container] = pod["containers"]
        container["args"] = [*container["args"], *_tls_args()]
        container["volumeMounts"] = [{"name": "churn-tls", "mountPath": TLS_DIR, "readOnly": True}]
        container["env"] = [*container["env"], encryption]
    worker = out["spec"]["worker"]["spec"]["containers"][0]
    worker["env"].append({"name": "DASK_SCHEDULER_ADDRESS", "value": f"tls://{spec.name}-scheduler:8786"})


def _add_xgboost(out: dict[str, Any], spec: KubernetesSpec) -> None:
    """Each worker gets ``--nthreads`` (:func:`worker_threads`: XGBoost's nthread there); a fixed
    tracker port is declared on the scheduler container (``xgb-tracker``: the worker pods connect to
    the scheduler pod's IP there, so a NetworkPolicy can allow it by name)."""
    worker = out["spec"]["worker"]["spec"]["containers"][0]
    worker["args"] = [*worker["args"], "--nthreads", str(worker_threads(spec))]
    low, high = port_range(spec.xgboost.tracker_port)
    if low == high != 0:
        scheduler = out["spec"]["scheduler"]["spec"]["containers"][0]
        scheduler["ports"] = [*scheduler.get("ports", []),
                              {"name": "xgb-tracker", "containerPort": low, "protocol": "TCP"}]


def manifest(spec: KubernetesSpec) -> dict[str, Any]:
    """The DaskCluster manifest, as dask-kubernetes' ``make_cluster_spec`` writes it, with the
    worker threads and XGBoost's tracker port (:func:`_add_xgboost`)."""
    operator = require("dask_kubernetes.operator", "k8s", "kubernetes")
    resources = {"requests": {"cpu": spec.cpu, "memory": spec.memory},
                 "limits": {"cpu": spec.cpu, "memory": spec.memory}}
    out = operator.make_cluster_spec(name=spec.name, image=spec.image, n_workers=spec.n_workers,
                                     resources=resources, env={**worker_environ(), **spec.env})
    if spec.namespace:
        out["metadata"]["namespace"] = spec.namespace
    _add_xgboost(out, spec)
    if spec.tls is not None:
        _add_tls(out, spec)
    return out


def _open_tls(spec: KubernetesSpec, stack: contextlib.ExitStack) -> Client:
    """Create the DaskCluster (``stack`` deletes it) and connect to its scheduler over TLS."""
    require("kr8s", "k8s", "kubernetes")
    from kr8s.objects import new_class

    resource_cls = new_class("DaskCluster", "kubernetes.dask.org/v1", namespaced=True)
    try:
        resource = resource_cls(manifest(spec), namespace=spec.namespace)
        resource.create()
    except Exception as exc:  # noqa: BLE001 - no kubeconfig, no operator, no permission: one line
        raise ClusterError(f"cannot create DaskCluster {spec.name!r}: {exc}") from exc
    stack.callback(resource.delete)
    target = AddressSpec(address=scheduler_address(spec), tls=spec.tls)
    return close_on_exit(stack, address.connect(target.address, setting("cluster.workers-timeout"), target))


def open_client(spec: KubernetesSpec, stack: contextlib.ExitStack) -> Client:
    """Create the DaskCluster; ``stack`` deletes it again."""
    if spec.tls is not None:
        client = _open_tls(spec, stack)
    else:
        operator = require("dask_kubernetes.operator", "k8s", "kubernetes")
        try:
            cluster = operator.KubeCluster(custom_cluster_spec=manifest(spec), namespace=spec.namespace,
                                           shutdown_on_close=True)
        except Exception as exc:  # noqa: BLE001 - no kubeconfig, no operator, no permission: one line
            raise ClusterError(f"cannot create DaskCluster {spec.name!r}: {exc}") from exc
        close_on_exit(stack, cluster)
        client = close_on_exit(stack, Client(cluster, set_as_default=False))
    wait_for_first_worker(client, f"worker pod of {spec.name!r}", "kubectl get pods shows why")
    return client


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(spec: KubernetesSpec) -> str:
    """The DaskCluster manifest as YAML (``kubectl apply -f`` takes it as it is)."""
    text = yaml.dump(manifest(spec), Dumper=_NoAliases, sort_keys=False)
    text = "# " + tracker_note(spec.xgboost, "the scheduler pod's IP") + "\n" + text
    if spec.tls is not None:
        text = f"# the driver connects to {scheduler_address(spec)} with CA {spec.tls.ca_file}, " \
               f"certificate {spec.tls.cert}\n{text}"
    return text
