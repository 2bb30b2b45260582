"""Cluster specs: one class per kind, and what each would launch, rendered without launching it."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

import dask.config
import pytest
import yaml
from distributed import Client

from churn.clusters import ClusterError, render, worker_threads
from churn.clusters.extras import require
from churn.clusters.security import security_for, tls_config
from churn.clusters.tuning import nanny_config
from churn.config import (
    AddressSpec,
    ConfigError,
    KubernetesSpec,
    LocalClusterSpec,
    SlurmSpec,
    SSHSpec,
    TLSSpec,
    load_cluster,
)
from tests.conftest import ROOT

CLUSTER = ROOT / "cluster"




@pytest.mark.parametrize("name, cls", [("local", LocalClusterSpec), ("address", AddressSpec), ("ssh", SSHSpec),
                                       ("slurm", SlurmSpec), ("kubernetes", KubernetesSpec)])
def test_each_bundled_spec_loads_as_its_kind(name, cls):
    """cluster/<kind>.yaml validates to the class its ``kind`` names."""
    spec = load_cluster(CLUSTER / f"{name}.yaml")
    assert type(spec) is cls and spec.kind == name


def test_an_unknown_kind_or_key_is_named(tmp_path):
    """A kind that does not exist, or a key another kind has, is one ConfigError naming it."""
    bad = tmp_path / "c.yaml"
    bad.write_text("kind: yarn\n")
    with pytest.raises(ConfigError, match="yarn"):
        load_cluster(bad)
    bad.write_text("kind: slurm\ncores: 4\nmemory: 8GiB\nn_workers: 3\n")
    with pytest.raises(ConfigError, match=r"slurm\.n_workers: unknown key"):
        load_cluster(bad)


def test_slurm_renders_the_sbatch_script():
    """The SLURM spec becomes dask-jobqueue's job script: queue, account, resources, prologue, worker command."""
    text = render(load_cluster(CLUSTER / "slurm.yaml"))
    assert text.startswith("# sbatch x 4")
    for line in ("#SBATCH -J churn-worker", "#SBATCH -p normal", "#SBATCH -A churn", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --mem=32G", "#SBATCH -t 02:00:00", "#SBATCH --exclusive",
                 "#SBATCH -o logs/slurm/churn-worker-%J.out", "module load python/3.11",
                 "export MALLOC_MMAP_THRESHOLD_=16777216", "export MALLOC_TRIM_THRESHOLD_=67108864"):
        assert line in text.splitlines(), line
    worker = text.splitlines()[-1]
    assert worker.startswith("/opt/churn/.venv/bin/python -m distributed.cli.dask_worker tcp://SCHEDULER:8786")
    assert "--nworkers 4" in worker and "--nthreads 2" in worker and "--memory-limit 8.00GiB" in worker


def test_kubernetes_renders_the_daskcluster_manifest():
    """The Kubernetes spec becomes the operator's DaskCluster: image, replicas, resources, env, namespace."""
    manifest = yaml.safe_load(render(load_cluster(CLUSTER / "kubernetes.yaml")))
    assert manifest["kind"] == "DaskCluster" and manifest["apiVersion"].startswith("kubernetes.dask.org/")
    assert manifest["metadata"] == {"name": "churn", "namespace": "data-science"}
    worker = manifest["spec"]["worker"]
    assert worker["replicas"] == 4
    [container] = worker["spec"]["containers"]
    assert container["image"] == "ghcr.io/example/churn:0.2.0"
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    assert {"name": "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", "value": "False"} in container["env"]
    assert {"name": "MALLOC_MMAP_THRESHOLD_", "value": "16777216"} in container["env"]
    assert {"name": "MALLOC_TRIM_THRESHOLD_", "value": "67108864"} in container["env"]
    assert manifest["spec"]["scheduler"]["spec"]["containers"][0]["image"] == "ghcr.io/example/churn:0.2.0"


def test_slurm_with_tls_renders_tls_workers(tls_files):
    """A tls section: each worker job reaches the scheduler by tls://, listens on tls:// and takes
    the spec's CA, certificate and key files on its command line; nothing plain tcp:// is left."""
    spec = SlurmSpec.model_validate({**yaml.safe_load((CLUSTER / "slurm.yaml").read_text()), "tls": tls_files})
    text = render(spec)
    worker = shlex.split(text.splitlines()[-1])
    assert worker[3] == "tls://SCHEDULER:8786"
    options = dict(zip(worker[4:], worker[5:], strict=False))
    assert options["--protocol"] == "tls://"
    assert (options["--tls-ca-file"], options["--tls-cert"], options["--tls-key"]) == (
        tls_files["ca_file"], tls_files["cert"], tls_files["key"])
    assert "tcp://" not in text


def test_kubernetes_with_tls_mounts_the_secret(tls_files):
    """A tls section: scheduler and worker pods mount the Secret, listen on tls:// with its files,
    require encryption, and the workers find the scheduler by tls://; the driver's address is tls://."""
    data = {**yaml.safe_load((CLUSTER / "kubernetes.yaml").read_text()), "tls": {**tls_files, "secret": "churn-tls"}}
    text = render(KubernetesSpec.model_validate(data))
    assert "tcp://" not in text
    assert text.startswith("# the driver connects to tls://churn-scheduler.data-science:8786")
    manifest = yaml.safe_load(text)
    for role, command in (("scheduler", "dask-scheduler"), ("worker", "dask-worker")):
        pod = manifest["spec"][role]["spec"]
        assert pod["volumes"] == [{"name": "churn-tls", "secret": {"secretName": "churn-tls"}}]
        [container] = pod["containers"]
        assert container["volumeMounts"] == [{"name": "churn-tls", "mountPath": "/etc/dask/tls", "readOnly": True}]
        args = container["args"]
        assert args[0] == command
        options = dict(zip(args, args[1:], strict=False))
        assert options["--protocol"] == "tls"
        assert (options["--tls-ca-file"], options["--tls-cert"], options["--tls-key"]) == (
            "/etc/dask/tls/ca.crt", "/etc/dask/tls/tls.crt", "/etc/dask/tls/tls.key")
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
    worker_env = {e["name"]: e["value"] for e in manifest["spec"]["worker"]["spec"]["containers"][0]["env"]}
    assert worker_env["DASK_SCHEDULER_ADDRESS"] == "tls://churn-scheduler:8786"


def test_kubernetes_tls_errors_are_named(tmp_path, tls_files):
    """A tls section without its Secret, a tcp:// scheduler address with TLS, or a scheduler
    address without TLS: one ConfigError each, naming the key."""
    base = yaml.safe_load((CLUSTER / "kubernetes.yaml").read_text())
    spec = tmp_path / "k.yaml"
    for extra, message in (({"tls": tls_files}, r"kubernetes\.tls\.secret"),
                           ({"tls": {**tls_files, "secret": "s"}, "scheduler_address": "tcp://10.0.0.1:8786"},
                            "scheduler_address must be tls://"),
                           ({"scheduler_address": "tls://10.0.0.1:8786"}, "scheduler_address is for a tls section")):
        spec.write_text(yaml.safe_dump({**base, **extra}))
        with pytest.raises(ConfigError, match=message):
            load_cluster(spec)


def test_ssh_renders_one_command_per_host():
    """The SSH spec becomes the scheduler's command on the first host and a worker command on each other."""
    text = render(load_cluster(CLUSTER / "ssh.yaml"))
    commands = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(commands) == 3
    assert "# the scheduler, on node0.example.org (ssh churn@node0.example.org)" in text
    assert all(c.startswith("/opt/churn/.venv/bin/python -m distributed.cli.dask_spec") for c in commands)
    assert all("tcp://node0.example.org:8786" in c for c in commands[1:])
    assert '"memory_limit": "8GiB"' in commands[1] and commands[1].count("distributed.Nanny") == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_environ(name: str):  # noqa: ANN201
    """A probe for ``client.run``: ``name`` in the environment the process started with (what
    glibc read), not in os.environ. A closure, so that it is pickled by value for any worker."""

    def probe() -> str | None:
        with open("/proc/self/environ", "rb") as f:
            pairs = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        value = pairs.get(name.encode())
        return value.decode() if value is not None else None

    return probe


@pytest.mark.cluster
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_rendered_ssh_commands_start_a_working_cluster(tls_files, tls):
    """The rendered commands, run here instead of over ssh (hosts 127.0.0.1) with the dask config
    SSHCluster would pass on, start a scheduler and the workers the spec asks for, which compute;
    with a tls section, over TLS only."""
    port = _free_port()
    tls_spec = TLSSpec(**tls_files) if tls else None
    # what SSHCluster puts before each command: this process's dask config, as open_client sets it
    with dask.config.set({**(tls_config(tls_spec) if tls_spec else {}), **nanny_config()}):
        env = {**os.environ, "DASK_INTERNAL_INHERIT_CONFIG": dask.config.serialize(dask.config.global_config)}
    spec = SSHSpec(hosts=["127.0.0.1", "127.0.0.1"], remote_python=sys.executable, n_workers=2,
                   memory_limit="1GiB", scheduler_port=port, dashboard_address=None, tls=tls_spec)
    commands = [line for line in render(spec).splitlines() if not line.startswith("#")]
    procs = [subprocess.Popen(shlex.split(c), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, env=env) for c in commands]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client = Client(f"{'tls' if tls else 'tcp'}://127.0.0.1:{port}", timeout=5, set_as_default=False,
                                security=security_for(tls_spec))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with client:
            client.wait_for_workers(2, timeout=60)
            workers = client.scheduler_info(n_workers=-1)["workers"].values()
            assert len(workers) == 2 and all(w["memory_limit"] == 2**30 for w in workers)
            assert client.submit(sum, [1, 2, 3]).result() == 6
            assert set(client.run(start_environ("MALLOC_MMAP_THRESHOLD_")).values()) == {str(16 << 20)}
            assert set(client.run(start_environ("MALLOC_TRIM_THRESHOLD_")).values()) == {str(64 << 20)}
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)


def test_local_and_address_render_without_starting_anything():
    """Local shows the LocalCluster call (loopback); address says nothing is launched."""
    assert "host='127.0.0.1'" in render(load_cluster(CLUSTER / "local.yaml"))
    assert "nothing is launched" in render(AddressSpec(address="127.0.0.1:8786"))
    assert AddressSpec(address="127.0.0.1:8786").address == "tcp://127.0.0.1:8786"


def test_a_missing_extra_names_the_pip_command():
    """A backend whose package is absent is one ClusterError naming the extra to install."""
    with pytest.raises(ClusterError, match=r"pip install 'churn\[slurm\]'"):
        require("churn_no_such_backend", "slurm", "slurm")


@pytest.mark.cluster
def test_cluster_render_command(forked_churn, tmp_path):
    """`churn cluster render` prints the manifest; a spec with an error exits 2 naming the key."""
    ok = forked_churn.run("cluster", "render", str(CLUSTER / "kubernetes.yaml"), "--set", "n_workers=7")
    assert ok.returncode == 0, ok.stderr
    assert yaml.safe_load(ok.stdout)["spec"]["worker"]["replicas"] == 7
    bad = tmp_path / "slurm.yaml"
    bad.write_text("kind: slurm\ncores: 0\nmemory: 8GiB\n")
    out = forked_churn.run("cluster", "render", str(bad))
    assert out.returncode == 2 and "slurm.cores" in out.stderr, out.stderr


@pytest.mark.parametrize(("setting", "value", "limit"), [
    ("worker-mmap-threshold", "16 megs", "0 to 32MiB"), ("worker-mmap-threshold", "64MiB", "0 to 32MiB"),
    ("worker-trim-threshold", "lots", "a size of 0 or more"), ("worker-trim-threshold", -1, "a size of 0 or more")])
def test_a_bad_worker_malloc_setting_is_one_clear_error(setting, value, limit):
    """Not a size, or past glibc's 32 MiB mmap cap: one ClusterError naming the setting, not a traceback."""
    with dask.config.set({f"churn.cluster.{setting}": value}):
        with pytest.raises(ClusterError, match=re.escape(f"{setting}={value!r}: glibc takes {limit}")):
            render(SlurmSpec.model_validate(yaml.safe_load((ROOT / "cluster" / "slurm.yaml").read_text())))


def test_malloc_settings_can_be_left_to_distributed():
    """null keeps distributed's own glibc settings: churn adds neither variable."""
    with dask.config.set({"churn.cluster.worker-mmap-threshold": None, "churn.cluster.worker-trim-threshold": None}):
        text = render(SlurmSpec.model_validate(yaml.safe_load((ROOT / "cluster" / "slurm.yaml").read_text())))
    assert "MALLOC_" not in text


def _slurm(**changes) -> SlurmSpec:
    return SlurmSpec.model_validate({**yaml.safe_load((CLUSTER / "slurm.yaml").read_text()), **changes})


def _kubernetes(**changes) -> KubernetesSpec:
    return KubernetesSpec.model_validate({**yaml.safe_load((CLUSTER / "kubernetes.yaml").read_text()), **changes})


def test_slurm_renders_where_the_xgboost_tracker_listens():
    """The sbatch render says where an xgboost.dask fit's tracker listens and what to open; each
    worker runs cores / processes threads (XGBoost's nthread there)."""
    default = render(_slurm())
    assert default.splitlines()[1] == ("# xgboost.dask tracker: the host of the scheduler's address (this host), "
                                       "a port the OS picks (open its ephemeral range from the workers)")
    spec = _slurm(xgboost={"tracker_host": "10.1.0.5", "tracker_port": "9000-9099", "timeout": 600})
    text = render(spec)
    assert text.splitlines()[1] == ("# xgboost.dask tracker: 10.1.0.5, the first free port of 9000-9099 "
                                    "(open the range from the workers)")
    assert worker_threads(spec) == 2 and "--nthreads 2" in text.splitlines()[-1]
    assert "port 8789 (open it from the workers)" in render(_slurm(xgboost={"tracker_port": 8789}))


def test_kubernetes_renders_the_tracker_port_and_worker_threads():
    """A fixed tracker port is a named port of the scheduler container (none when the OS picks one);
    each worker pod runs --nthreads: the spec's threads_per_worker, else its whole CPUs."""
    manifest = yaml.safe_load(render(_kubernetes(xgboost={"tracker_port": 8789})))
    scheduler = manifest["spec"]["scheduler"]["spec"]["containers"][0]
    assert {"name": "xgb-tracker", "containerPort": 8789, "protocol": "TCP"} in scheduler["ports"]
    assert "tcp-comm" in [p["name"] for p in scheduler["ports"]]  # Dask's ports stay
    args = manifest["spec"]["worker"]["spec"]["containers"][0]["args"]
    assert args[args.index("--nthreads") + 1] == "2"  # cpu: "2"
    for changes, threads in (({"cpu": "500m"}, 1), ({"cpu": "3.5"}, 3), ({"cpu": "1", "threads_per_worker": 4}, 4)):
        spec = _kubernetes(**changes)
        args = yaml.safe_load(render(spec))["spec"]["worker"]["spec"]["containers"][0]["args"]
        assert worker_threads(spec) == threads and args[args.index("--nthreads") + 1] == str(threads), changes
    for port in (0, "9000-9099"):  # no single port to declare
        scheduler = yaml.safe_load(render(_kubernetes(xgboost={"tracker_port": port})))["spec"]["scheduler"]
        assert "xgb-tracker" not in [p["name"] for p in scheduler["spec"]["containers"][0]["ports"]]


@pytest.mark.parametrize("text, key", [
    ("xgboost: {tracker_port: 70000}", "slurm.xgboost.tracker_port"),
    ("xgboost: {tracker_port: '9100-9000'}", "slurm.xgboost.tracker_port"),
    ("xgboost: {tracker_port: 'any'}", "slurm.xgboost.tracker_port"),
    ("xgboost: {tracker_port: '0-100'}", "slurm.xgboost.tracker_port"),
    ("xgboost: {timeout: 0}", "slurm.xgboost.timeout"),
    ("xgboost: {tracker_host: ''}", "slurm.xgboost.tracker_host"),
    ("xgboost: {nthread: 4}", "slurm.xgboost.nthread: unknown key"),
    ("processes: 3", "cores (8) must be a multiple of processes (3)"),
])
def test_bad_xgboost_settings_are_named(tmp_path, text, key):
    """A port out of range, a reversed or unreadable range, a zero timeout, an unknown key, or cores
    that do not split evenly into worker threads: one ConfigError naming it."""
    path = tmp_path / "slurm.yaml"
    path.write_text("kind: slurm\ncores: 8\nmemory: 8GiB\n" + text + "\n")
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_cluster(path)
