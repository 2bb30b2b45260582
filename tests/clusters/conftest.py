"""Fixtures of the cluster tests: throwaway TLS certificates."""

from __future__ import annotations

import pytest
from distributed.security import Security


@pytest.fixture
def tls_files(tmp_path) -> dict[str, str]:
    """A throwaway CA-signed certificate and key as PEM files (distributed's own temporary ones)."""
    temp = Security.temporary()
    files = {"ca_file": temp.tls_ca_file, "cert": temp.tls_client_cert, "key": temp.tls_client_key}
    out = {}
    for name, pem in files.items():
        path = tmp_path / f"{name}.pem"
        path.write_text(pem)
        out[name] = str(path)
    return out
