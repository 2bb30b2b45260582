"""TLS: a cluster spec names CA, certificate and key files; encryption is required, plain tcp:// refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from distributed import Client
from distributed.security import Security

from churn.clusters import cluster_client
from churn.config import AddressSpec, ConfigError, LocalClusterSpec, TLSSpec, load_cluster
from tests.conftest import ROOT

pytestmark = pytest.mark.cluster


def _refused(address: str, security: Security | None = None) -> bool:
    try:
        Client(address, timeout=3, security=security, set_as_default=False).close()
    except (OSError, TimeoutError):
        return True
    return False


def test_tls_cluster_computes_and_refuses_plain_clients(tls_files):
    """A TLS LocalCluster computes for a client with the certificates; plain tcp:// clients and tls://
    clients with another CA's certificate are refused; an address spec with the same files connects."""
    spec = LocalClusterSpec(n_workers=1, memory_limit="1GiB", dashboard_address=None, tls=TLSSpec(**tls_files))
    with cluster_client(spec) as client:
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        assert client.submit(sum, [1, 2, 3]).result() == 6
        host_port = address.removeprefix("tls://")
        assert _refused(f"tcp://{host_port}")
        assert _refused(address, Security.temporary())  # TLS, but a stranger's certificate, not signed by the CA
        with cluster_client(AddressSpec(address=address, tls=TLSSpec(**tls_files))) as other:
            assert other.submit(sum, [4, 5]).result() == 9


def test_tls_spec_errors_are_named(tmp_path, tls_files):
    """A missing certificate file, a tls:// address without a tls section or a tcp:// one with it is
    one ConfigError; a bare host:port with a tls section is a tls:// address."""
    spec = tmp_path / "c.yaml"
    spec.write_text(yaml.safe_dump({"kind": "local", "tls": {**tls_files, "cert": str(tmp_path / "nope.pem")}}))
    with pytest.raises(ConfigError, match=r"tls\.cert: file not found: .*nope\.pem"):
        load_cluster(spec)
    spec.write_text(yaml.safe_dump({"kind": "address", "address": "tls://127.0.0.1:8786"}))
    with pytest.raises(ConfigError, match="needs a tls section"):
        load_cluster(spec)
    spec.write_text(yaml.safe_dump({"kind": "address", "address": "tcp://127.0.0.1:8786", "tls": tls_files}))
    with pytest.raises(ConfigError, match="a tls section needs a tls:// address"):
        load_cluster(spec)
    spec.write_text(yaml.safe_dump({"kind": "address", "address": "127.0.0.1:8786", "tls": tls_files}))
    assert load_cluster(spec).address == "tls://127.0.0.1:8786"


def test_a_job_runs_on_a_tls_cluster(forked_churn, tmp_path: Path, tls_files):
    """`churn ingest --cluster` with a TLS local spec runs the job end to end."""
    cluster = tmp_path / "tls.yaml"
    cluster.write_text(yaml.safe_dump({"kind": "local", "n_workers": 2, "memory_limit": "1GiB",
                                       "dashboard_address": None, "tls": tls_files}))
    out = forked_churn.run("ingest", str(ROOT / "jobs" / "ingest.yaml"), "--cluster", str(cluster),
                           "--set", f"data.output={tmp_path / 'ds'}", cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "tls://127.0.0.1" in out.stderr and "rows kept" in out.stdout
