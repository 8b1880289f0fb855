"""What both example applications share: an HTTPS client with the SAE's certificate, and the
SAE's own id (its certificate's common name)."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.x509.oid import NameOID


def kme_client(kme_url: str, ca_file: str, cert_file: str, key_file: str) -> httpx.Client:
    """Get: a client of the KME that trusts only the KME's CA and shows the SAE's certificate."""
    context = ssl.create_default_context(cafile=ca_file)
    context.load_cert_chain(cert_file, key_file)
    return httpx.Client(base_url=kme_url, verify=context, timeout=30.0)


def own_sae_id(cert_file: str) -> str:
    """Get: the SAE id this certificate proves (its common name)."""
    certificate = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def fetched_key(answer: httpx.Response) -> tuple[str, bytes]:
    """Get: (key_ID, key bytes) of the one key in a Key container; SystemExit with the KME's
    Error message otherwise."""
    import base64

    if answer.status_code != 200:
        raise SystemExit(f"KME answered {answer.status_code}: {answer.json().get('message')}")
    (key,) = answer.json()["keys"]
    return key["key_ID"], base64.b64decode(key["key"], validate=True)
