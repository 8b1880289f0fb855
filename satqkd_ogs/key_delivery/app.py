"""The ETSI GS QKD 014 V1.1.1 key delivery API of a station's key management entity (KME).

Routes (clause 5): `GET /api/v1/keys/{slave_SAE_ID}/status` (5.2), `GET|POST
/api/v1/keys/{slave_SAE_ID}/enc_keys` (5.3, the master SAE), `GET|POST
/api/v1/keys/{master_SAE_ID}/dec_keys` (5.4, the slave SAE). The caller is the SAE named by the
common name of its TLS client certificate (clause 5.1: mutual authentication); the server that
runs this app puts it in the connection's state (`tls_server`). Answers: 200 with the data
formats of clause 6, or 400 (bad request), 401 (no or unknown SAE certificate), 503 (the KME
cannot serve now: not enough keys) with an Error body (6.5).

Each key is handed once to its master SAE (enc_keys) and once to the slave SAE it was addressed
to (dec_keys), which consumes it (`service.KeyDelivery`); the key management store commits each
hand-over before the answer is sent.
"""

# no `from __future__ import annotations`: FastAPI reads the local Caller annotation at runtime
import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from satqkd_ogs.key_delivery.models import Error, KeyContainer, KeyIds, KeyRequest, Status
from satqkd_ogs.key_delivery.service import DeliveryRefused, DeliverySettings, KeyDelivery
from satqkd_runtime.key_management import KeyManagement

if TYPE_CHECKING:
    from satqkd_ogs.key_delivery.kme_sync import PeerKme

SAE_STATE_KEY = "satqkd_sae_id"  # the connection state entry holding the caller's SAE id
API_VERSION = "1.1.1"
log = logging.getLogger("satqkd.key_delivery")

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Error, "description": "Bad request format"},
    401: {"model": Error, "description": "Unauthorized"},
    503: {"model": Error, "description": "Error on the server side"},
}
SaeId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")]


def _add_error_handlers(app: FastAPI, delivery: KeyDelivery) -> None:
    """Every refusal as an ETSI Error body (clause 6.5), counted by reason."""

    @app.exception_handler(DeliveryRefused)
    async def _refused(request: Request, exc: DeliveryRefused) -> JSONResponse:
        delivery.counters[f"refused_{exc.reason}"] += 1
        log.info("refused %s %s: %s", request.method, request.url.path, exc.message)
        return JSONResponse(Error(message=exc.message).model_dump(exclude_none=True), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        delivery.counters["refused_bad_format"] += 1
        details = [
            {"parameter": ".".join(str(p) for p in e["loc"]), "error": e["msg"]}
            for e in exc.errors()
        ]
        body = Error(message="bad request format", details=details)
        return JSONResponse(body.model_dump(exclude_none=True), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(Error(message=str(exc.detail)).model_dump(), exc.status_code)


def create_app(
    kms: KeyManagement, settings: DeliverySettings, peer_kme: "PeerKme | None" = None
) -> FastAPI:
    """Get: the key delivery app serving `kms` (used from one thread: the server's loop); with
    `peer_kme`, one of two KMEs over the same keys (`kms` a PairedKeyManagement, kme_sync)."""
    app = FastAPI(
        title="satqkd key delivery (ETSI GS QKD 014)",
        version=API_VERSION,
        description="REST-based key delivery API of ETSI GS QKD 014 V1.1.1 over HTTPS with "
        "client certificates; the SAE id is the certificate's common name.",
        docs_url=None,
        redoc_url=None,
    )
    delivery = KeyDelivery(kms, settings)
    app.state.delivery = delivery
    _add_error_handlers(app, delivery)
    sync = None
    if peer_kme is not None:
        from satqkd_ogs.key_delivery.kme_sync import KmeSync, add_sync_routes

        sync = KmeSync(kms, peer_kme, delivery.counters)  # type: ignore[arg-type]
        add_sync_routes(app, sync, SAE_STATE_KEY)
    app.state.sync = sync

    def caller(request: Request) -> str:
        # a dependency: checked before any parameter, so a caller without a certificate gets 401
        return delivery.caller(request.scope.get("state", {}).get(SAE_STATE_KEY))

    Caller = Annotated[str, Depends(caller)]
    common: dict[str, Any] = {"response_model_exclude_none": True, "responses": _ERRORS}

    @app.get("/api/v1/keys/{slave_SAE_ID}/status", response_model=Status, **common)
    async def get_status(sae: Caller, slave_SAE_ID: SaeId) -> Status:
        """Get status (clause 5.2)."""
        return delivery.status(sae, slave_SAE_ID)

    @app.get("/api/v1/keys/{slave_SAE_ID}/enc_keys", response_model=KeyContainer, **common)
    async def get_enc_keys(
        sae: Caller,
        slave_SAE_ID: SaeId,
        number: Annotated[int | None, Query(ge=1)] = None,
        size: Annotated[int | None, Query(ge=1)] = None,
    ) -> KeyContainer:
        """Get key (clause 5.3), parameters in the query."""
        container = delivery.enc_keys(sae, slave_SAE_ID, KeyRequest(number=number, size=size))
        if sync is not None:  # answered once the peer KME confirmed the ids
            await sync.confirm(sae, slave_SAE_ID, container)
        return container

    @app.post("/api/v1/keys/{slave_SAE_ID}/enc_keys", response_model=KeyContainer, **common)
    async def post_enc_keys(sae: Caller, slave_SAE_ID: SaeId, body: KeyRequest) -> KeyContainer:
        """Get key (clause 5.3), a Key request (6.2) in the body."""
        container = delivery.enc_keys(sae, slave_SAE_ID, body)
        if sync is not None:
            await sync.confirm(sae, slave_SAE_ID, container)
        return container

    @app.get("/api/v1/keys/{master_SAE_ID}/dec_keys", response_model=KeyContainer, **common)
    async def get_dec_keys(
        sae: Caller, master_SAE_ID: SaeId, key_ID: Annotated[str, Query(max_length=64)]
    ) -> KeyContainer:
        """Get key with key IDs (clause 5.4), one key_ID in the query."""
        return delivery.dec_keys(sae, master_SAE_ID, [key_ID])

    @app.post("/api/v1/keys/{master_SAE_ID}/dec_keys", response_model=KeyContainer, **common)
    async def post_dec_keys(sae: Caller, master_SAE_ID: SaeId, body: KeyIds) -> KeyContainer:
        """Get key with key IDs (clause 5.4), Key IDs (6.4) in the body."""
        return delivery.dec_keys(sae, master_SAE_ID, [entry.key_ID for entry in body.key_IDs])

    _openapi_without_422(app)
    return app


def _openapi_without_422(app: FastAPI) -> None:
    """FastAPI documents a 422 for every route with parameters; this API answers a bad
    parameter with 400 and an Error body (clause 6.5), so the document says that instead."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            for path in document["paths"].values():
                for operation in path.values():
                    operation["responses"].pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                document["components"]["schemas"].pop(name, None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
