"""The master application: get a fresh key for a slave SAE (ETSI 014 enc_keys) and AES-256-GCM
encrypt a file with it. The envelope names the key (key_ID) and the master, never the key.

    python examples/etsi014/sae_encrypt.py --kme https://127.0.0.1:8443 --ca certs/ca.crt \
        --cert certs/alice.crt --key certs/alice.key --slave bob --in plain.txt --out sealed.json
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sae_common import fetched_key, kme_client, own_sae_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--kme", "--ca", "--cert", "--key", "--slave", "--in", "--out"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    with kme_client(args.kme, args.ca, args.cert, args.key) as kme:
        answer = kme.post(f"/api/v1/keys/{args.slave}/enc_keys", json={"number": 1, "size": 256})
    key_id, key = fetched_key(answer)
    nonce = os.urandom(12)  # one message per key: any unique nonce will do
    master = own_sae_id(args.cert)
    sealed = AESGCM(key).encrypt(nonce, Path(getattr(args, "in")).read_bytes(), key_id.encode())
    envelope = {
        "master_SAE_ID": master,
        "key_ID": key_id,
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    Path(args.out).write_text(json.dumps(envelope, indent=1) + "\n")
    print(f"{master}: sealed {args.out} with key {key_id}")


if __name__ == "__main__":
    main()
