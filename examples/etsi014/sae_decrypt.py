"""The slave application: fetch the key an envelope names from the KME (ETSI 014 dec_keys, by
key_ID) and decrypt the file. The KME hands the key out once: a second try is refused.

    python examples/etsi014/sae_decrypt.py --kme https://127.0.0.1:8443 --ca certs/ca.crt \
        --cert certs/bob.crt --key certs/bob.key --in sealed.json --out plain.txt
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sae_common import fetched_key, kme_client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--kme", "--ca", "--cert", "--key", "--in", "--out"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    envelope = json.loads(Path(getattr(args, "in")).read_text())
    with kme_client(args.kme, args.ca, args.cert, args.key) as kme:
        answer = kme.get(
            f"/api/v1/keys/{envelope['master_SAE_ID']}/dec_keys",
            params={"key_ID": envelope["key_ID"]},
        )
    key_id, key = fetched_key(answer)
    plain = AESGCM(key).decrypt(
        base64.b64decode(envelope["nonce"]),
        base64.b64decode(envelope["ciphertext"]),
        key_id.encode(),
    )
    Path(args.out).write_bytes(plain)
    print(f"opened {args.out} with key {key_id}")


if __name__ == "__main__":
    main()
