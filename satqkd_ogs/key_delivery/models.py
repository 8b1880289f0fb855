"""The JSON data formats of ETSI GS QKD 014 V1.1.1, clause 6 (field names as the standard spells
them): Status (6.1), Key request (6.2), Key container (6.3), Key IDs (6.4), Error (6.5)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_STRICT = ConfigDict(extra="forbid")  # a field the standard does not name is a bad request


class Status(BaseModel):
    """Status (clause 6.1): the link between the caller (master SAE) and a slave SAE."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "source_KME_ID": "kme-xinglong",
                "target_KME_ID": "kme-xinglong",
                "master_SAE_ID": "sae-alice",
                "slave_SAE_ID": "sae-bob",
                "key_size": 256,
                "stored_key_count": 25000,
                "max_key_count": 100000,
                "max_key_per_request": 128,
                "max_key_size": 256,
                "min_key_size": 256,
                "max_SAE_ID_count": 0,
            }
        }
    )

    source_KME_ID: str
    target_KME_ID: str
    master_SAE_ID: str
    slave_SAE_ID: str
    key_size: int = Field(description="default size of a key, bits")
    stored_key_count: int = Field(description="keys available to this pair of SAEs now")
    max_key_count: int = Field(description="most keys the KME stores")
    max_key_per_request: int
    max_key_size: int = Field(description="bits")
    min_key_size: int = Field(description="bits")
    max_SAE_ID_count: int = Field(description="additional slave SAEs a key may go to")
    status_extension: dict[str, Any] | None = None


class KeyRequest(BaseModel):
    """Key request (clause 6.2): body of POST enc_keys."""

    model_config = _STRICT

    number: int | None = Field(default=None, ge=1, description="keys requested (default 1)")
    size: int | None = Field(default=None, ge=1, description="bits per key (default key_size)")
    additional_slave_SAE_IDs: list[str] | None = None
    extension_mandatory: list[dict[str, Any]] | None = None
    extension_optional: list[dict[str, Any]] | None = None


class Key(BaseModel):
    """One key of a Key container (clause 6.3): its UUID and its bytes in base64."""

    key_ID: str
    key_ID_extension: dict[str, Any] | None = None
    key: str = Field(description="the key's bytes, base64 (RFC 4648)")
    key_extension: dict[str, Any] | None = None


class KeyContainer(BaseModel):
    """Key container (clause 6.3): the answer of enc_keys and dec_keys."""

    keys: list[Key]
    key_container_extension: dict[str, Any] | None = None


class KeyIdEntry(BaseModel):
    """One entry of Key IDs (clause 6.4)."""

    model_config = _STRICT

    key_ID: str
    key_ID_extension: dict[str, Any] | None = None


class KeyIds(BaseModel):
    """Key IDs (clause 6.4): body of POST dec_keys."""

    model_config = _STRICT

    key_IDs: list[KeyIdEntry] = Field(min_length=1)
    key_IDs_extension: dict[str, Any] | None = None


class Error(BaseModel):
    """Error (clause 6.5): the body of every 400, 401 and 503 answer."""

    message: str
    details: list[dict[str, Any]] | None = None
