"""Local CA + server certificate (trustme), persisted in the state directory."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import trustme


def ensure_certs(state_dir: Path) -> tuple[Path, Path, Path]:
    """Return ``(ca.pem, server-cert.pem, server-key.pem)``; created on first start."""
    state_dir.mkdir(parents=True, exist_ok=True)
    ca_path = state_dir / "ca.pem"
    cert_path = state_dir / "server-cert.pem"
    key_path = state_dir / "server-key.pem"
    if ca_path.exists() and cert_path.exists() and key_path.exists():
        return ca_path, cert_path, key_path
    ca = trustme.CA(organization_name="Fleet Graph Emulator", organization_unit_name="local CA")
    leaf = ca.issue_cert("127.0.0.1", "localhost", "::1")
    tmp = state_dir / ".key.tmp"
    leaf.private_key_pem.write_to_path(str(tmp))
    os.chmod(tmp, 0o600)
    tmp.replace(key_path)
    leaf.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in leaf.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_path), append=True)
    ca.cert_pem.write_to_path(str(ca_path))
    return ca_path, cert_path, key_path


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_path), str(key_path))
    return ctx
