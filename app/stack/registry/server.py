"""The registry's REST API: the subset of the Confluent Schema Registry API that
python-schema-registry-client uses, with Confluent's status and error codes, so
the same client code talks to this and to Confluent.

    GET    /                                          {} (health)
    GET    /subjects                                  ["subject", ...]
    GET    /subjects/{subject}/versions               [1, 2, ...]
    POST   /subjects/{subject}/versions               register {"schema": ...} → {"id": N}
    POST   /subjects/{subject}                        look up a schema → {subject, id, version, schema}
    GET    /subjects/{subject}/versions/{version}     {subject, id, version, schema} ("latest" allowed)
    GET    /subjects/{subject}/versions/{version}/schema   the schema itself
    DELETE /subjects/{subject}/versions/{version}     soft delete → the version number
    DELETE /subjects/{subject}                        soft delete → [versions]
    GET    /schemas/ids/{id}                          {"schema": ...}
    GET    /schemas/ids/{id}/versions                 [{subject, version}, ...]
    GET    /schemas/types                             ["AVRO"]
    POST   /compatibility/subjects/{subject}/versions[/{version}]   {"is_compatible": bool}
    GET|PUT /config[/{subject}]                       compatibility levels

Errors are ``{"error_code": N, "message": "..."}``: 40401 subject, 40402 version,
40403 schema not found; 409 incompatible schema; 42201 invalid schema; 42202
invalid version; 42203 invalid compatibility level; 50001 database error.
Only Avro schemas are supported; others are refused with 42201.

Basic auth, when the registry is given a user and password (``cryptics registry`` takes them from
CRYPTICS_SCHEMA_REGISTRY_USERNAME and CRYPTICS_SCHEMA_REGISTRY_PASSWORD_FILE, the same its
clients send): every request but the health check ``GET /`` needs them, else 401 with error
code 40101, as Confluent's. TLS, when given a certificate and key (``cryptics registry
--certfile --keyfile``): https only (docs/operations.md#secured-connections).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import signal
import ssl
from typing import Any, Awaitable, Callable, Optional

from aiohttp import web

from app.stack.registry import compat, store
from app.stack.registry.store import RegistryStore

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
STORE_KEY = web.AppKey("store", RegistryStore)
_MAX_VERSION = 2**31 - 1


class ApiError(Exception):
    """An error answered as Confluent does: an HTTP status and a finer error code."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


# Domain errors from the store and the checker → (HTTP status, Confluent error code).
_ERROR_CODES: dict[type[Exception], tuple[int, int]] = {
    store.SubjectNotFound: (404, 40401),
    store.VersionNotFound: (404, 40402),
    store.SchemaNotFound: (404, 40403),
    store.IncompatibleSchema: (409, 409),
    compat.InvalidSchema: (422, 42201),
}


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type=CONTENT_TYPE)


def _error(status: int, error_code: int, message: str) -> web.Response:
    return _json({"error_code": error_code, "message": message}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Every failure becomes a Confluent-style JSON error; the server keeps serving."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.error_code, exc.message)
    except tuple(_ERROR_CODES) as exc:
        status, code = next(codes for kind, codes in _ERROR_CODES.items() if isinstance(exc, kind))
        return _error(status, code, str(exc))
    except web.HTTPException as exc:  # unknown route, wrong method
        if exc.status < 400:
            raise
        return _error(exc.status, exc.status, f"HTTP {exc.status} {exc.reason}")
    except store.STORE_ERRORS as exc:
        log.error("database error on %s %s: %s: %s", request.method, request.path, type(exc).__name__, exc)
        return _error(500, 50001, f"Error in the backend data store: {type(exc).__name__}: {exc}")
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _error(500, 500, "Internal server error")


def _basic_auth(user: str, password: str) -> Callable:
    """A middleware asking every request but ``GET /`` for HTTP basic auth as ``user``."""
    expected = f"{user}:{password}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.method == "GET" and request.path == "/":
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            given = base64.b64decode(token.strip(), validate=True) if scheme.lower() == "basic" else b""
        except (binascii.Error, ValueError):
            given = b""
        if not hmac.compare_digest(given, expected):
            response = _error(401, 40101, "Unauthorized")
            response.headers["WWW-Authenticate"] = 'Basic realm="cryptics schema registry"'
            return response
        return await handler(request)

    return check


# -- request parsing -----------------------------------------------------------


def _store(request: web.Request) -> RegistryStore:
    return request.app[STORE_KEY]


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").lower() == "true"


def _version(request: web.Request) -> Optional[int]:
    """The {version} in the path: an int, or None for "latest" (also -1, as Confluent)."""
    text = request.match_info["version"]
    if text in ("latest", "-1"):
        return None
    try:
        version = int(text)
    except ValueError:
        version = 0
    if not 1 <= version <= _MAX_VERSION:
        raise ApiError(422, 42202, f"The specified version '{text}' is not a valid version id. "
                                   'Allowed values are between [1, 2^31-1] and the string "latest"')
    return version


def _schema_id(request: web.Request) -> int:
    text = request.match_info["id"]
    try:
        return int(text)
    except ValueError:
        raise ApiError(404, 40403, f"Schema {text} not found.") from None


async def _body(request: web.Request) -> dict:
    text = await request.text()
    try:
        body = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ApiError(400, 400, f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, 400, "The request body must be a JSON object")
    return body


async def _schema_from_body(request: web.Request) -> Any:
    """The validated Avro schema (a JSON value) from a {"schema": "...", "schemaType": ...} body."""
    body = await _body(request)
    schema_type = body.get("schemaType") or store.AVRO
    if schema_type != store.AVRO:
        raise ApiError(422, 42201, f"Schema type {schema_type!r} is not supported by the embedded registry: "
                                   "it stores AVRO schemas only")
    if body.get("references"):
        raise ApiError(422, 42201, "Schema references are not supported by the embedded registry")
    text = body.get("schema")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(422, 42201, 'The body needs "schema": the schema as a JSON string')
    return compat.validate(text)


# -- handlers ----------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    return _json({})


async def list_subjects(request: web.Request) -> web.Response:
    return _json(await _store(request).subjects(_flag(request, "deleted")))


async def list_versions(request: web.Request) -> web.Response:
    subject = request.match_info["subject"]
    return _json(await _store(request).versions(subject, _flag(request, "deleted")))


async def register(request: web.Request) -> web.Response:
    subject = request.match_info["subject"]
    schema = await _schema_from_body(request)
    return _json({"id": await _store(request).register(subject, schema)})


async def lookup(request: web.Request) -> web.Response:
    subject = request.match_info["subject"]
    schema = await _schema_from_body(request)
    found = await _store(request).lookup(subject, store.canonical(schema), _flag(request, "deleted"))
    return _json(found.as_json())


async def get_version(request: web.Request) -> web.Response:
    found = await _store(request).get_version(
        request.match_info["subject"], _version(request), _flag(request, "deleted")
    )
    return _json(found.as_json())


async def get_version_schema(request: web.Request) -> web.Response:
    found = await _store(request).get_version(
        request.match_info["subject"], _version(request), _flag(request, "deleted")
    )
    return web.Response(text=found.schema, content_type=CONTENT_TYPE)


async def delete_version(request: web.Request) -> web.Response:
    return _json(await _store(request).delete_version(request.match_info["subject"], _version(request)))


async def delete_subject(request: web.Request) -> web.Response:
    return _json(await _store(request).delete_subject(request.match_info["subject"]))


async def schema_by_id(request: web.Request) -> web.Response:
    text, schema_type = await _store(request).schema_by_id(_schema_id(request))
    body = {"schema": text}
    if schema_type != store.AVRO:
        body["schemaType"] = schema_type
    return _json(body)


async def schema_id_versions(request: web.Request) -> web.Response:
    pairs = await _store(request).subject_versions_for_id(_schema_id(request), _flag(request, "deleted"))
    return _json([{"subject": subject, "version": version} for subject, version in pairs])


async def schema_types(request: web.Request) -> web.Response:
    return _json([store.AVRO])


async def test_compatibility(request: web.Request) -> web.Response:
    subject = request.match_info["subject"]
    # Without a version in the path, Confluent checks against every version.
    version = _version(request) if "version" in request.match_info else "all"
    schema = await _schema_from_body(request)
    reasons = await _store(request).test_compatibility(subject, schema, version)
    body: dict[str, Any] = {"is_compatible": not reasons}
    if _flag(request, "verbose"):
        body["messages"] = reasons
    return _json(body)


async def get_config(request: web.Request) -> web.Response:
    subject = request.match_info.get("subject")
    return _json({"compatibilityLevel": await _store(request).compatibility(subject)})


async def put_config(request: web.Request) -> web.Response:
    subject = request.match_info.get("subject")
    level = (await _body(request)).get("compatibility")
    if not isinstance(level, str) or level.upper() not in compat.LEVELS:
        raise ApiError(422, 42203, f"Invalid compatibility level {level!r}; "
                                   f"expected one of {', '.join(compat.LEVELS)}")
    await _store(request).set_compatibility(level.upper(), subject)
    return _json({"compatibility": level.upper()})


# -- application -------------------------------------------------------------------


def create_app(dsn: str, basic_auth: Optional[tuple[str, str]] = None) -> web.Application:
    """The registry application; its connection pool opens on startup (creating the
    tables if needed) and closes on cleanup. With ``basic_auth`` (user, password) every request
    but the health check must carry them."""
    middlewares = [_errors] if basic_auth is None else [_basic_auth(*basic_auth), _errors]
    app = web.Application(middlewares=middlewares)

    async def database(app: web.Application):  # type: ignore[no-untyped-def]
        app[STORE_KEY] = await RegistryStore.open(dsn)
        yield
        try:
            await asyncio.wait_for(app[STORE_KEY].close(), timeout=10)
        except asyncio.TimeoutError:
            log.warning("database connections did not close within 10 s; terminating them")
            app[STORE_KEY].pool.terminate()

    app.cleanup_ctx.append(database)
    r = app.router
    r.add_get("/", health)
    r.add_get("/subjects", list_subjects)
    r.add_get("/subjects/{subject}/versions", list_versions)
    r.add_post("/subjects/{subject}/versions", register)
    r.add_get("/subjects/{subject}/versions/{version}", get_version)
    r.add_get("/subjects/{subject}/versions/{version}/schema", get_version_schema)
    r.add_delete("/subjects/{subject}/versions/{version}", delete_version)
    r.add_post("/subjects/{subject}", lookup)
    r.add_delete("/subjects/{subject}", delete_subject)
    r.add_get("/schemas/ids/{id}", schema_by_id)
    r.add_get("/schemas/ids/{id}/versions", schema_id_versions)
    r.add_get("/schemas/types", schema_types)
    r.add_post("/compatibility/subjects/{subject}/versions", test_compatibility)
    r.add_post("/compatibility/subjects/{subject}/versions/{version}", test_compatibility)
    # The client asks for the global level at "config/" (its URL template with an
    # empty subject), so the trailing slash is served too.
    for path in ("/config", "/config/", "/config/{subject}"):
        r.add_get(path, get_config)
        r.add_put(path, put_config)
    return app


async def start_server(dsn: str, host: str = "127.0.0.1", port: int = 0, *,
                       basic_auth: Optional[tuple[str, str]] = None,
                       ssl_context: Optional[ssl.SSLContext] = None) -> tuple[web.AppRunner, str]:
    """Start the registry on ``host:port`` (0: a free port); the runner (stop it
    with ``await runner.cleanup()``) and the URL it serves (https with ``ssl_context``)."""
    # A short shutdown grace: registry requests take milliseconds.
    runner = web.AppRunner(create_app(dsn, basic_auth), shutdown_timeout=5)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    shown_host = f"[{host}]" if ":" in host else host
    return runner, f"{'https' if ssl_context else 'http'}://{shown_host}:{bound_port}"


def server_ssl_context(certfile: str, keyfile: Optional[str] = None) -> ssl.SSLContext:
    """The TLS context of an https registry: its certificate chain and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


async def serve(dsn: str, host: str, port: int, *, basic_auth: Optional[tuple[str, str]] = None,
                ssl_context: Optional[ssl.SSLContext] = None) -> None:
    """Serve the registry until SIGTERM or SIGINT, then stop cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        runner, url = await start_server(dsn, host, port, basic_auth=basic_auth, ssl_context=ssl_context)
        try:
            log.info("schema registry listening on %s%s", url, " (basic auth)" if basic_auth else "")
            await stop.wait()
            log.info("schema registry stopping")
        finally:
            await runner.cleanup()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    log.info("schema registry stopped")
