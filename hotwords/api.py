"""Admin REST API of hot-word lists, mounted on an aiohttp application by `setup_routes`.

Every route except the OpenAPI description requires `Authorization: Bearer <token>`. Uploads are JSON
(`HotwordListIn`), `text/plain` (one phrase per line) or `text/csv` (`phrase,boost`); for the two text
forms, scope and language come from `?scope=` and `?language=`. `If-Match: <version>` (0: the list must
not exist yet) makes a change conditional; responses carry the version in `ETag`. A rejected request
changes nothing. A deleted list answers 404 to every read (also `?version=` and `/versions`) until it
is stored again; its audit trail stays, and `POST .../rollback?version=N` restores an old version.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from redis.exceptions import RedisError

from hotwords.auth import AdminAuth
from hotwords.metrics import REJECTED
from hotwords.parsing import ParsedEntry, ParseError, parse_csv, parse_text
from hotwords.schema import (
    LANGUAGE_PATTERN,
    NAME_PATTERN,
    SCOPE_PATTERN,
    AuditRecord,
    ErrorBody,
    HotwordList,
    HotwordListIn,
    ListSummary,
    UploadResult,
)
from hotwords.service import HotwordService, UploadRejected
from hotwords.store import NotFound, StoreBusy, VersionConflict

_NAME = "{name:" + NAME_PATTERN.strip("^$") + "}"
_CHUNK = 64 * 1024
_SCOPE, _LANGUAGE = re.compile(SCOPE_PATTERN), re.compile(LANGUAGE_PATTERN)
_LIST = "/v1/hotwords/" + NAME_PATTERN.strip("^$")
_ROUTES = [
    (re.compile(_LIST), ("GET", "PUT", "DELETE")),
    (re.compile(_LIST + "/versions"), ("GET",)),
    (re.compile(_LIST + "/rollback"), ("POST",)),
    (re.compile(_LIST + "/audit"), ("GET",)),
]
log = logging.getLogger(__name__)

Handler = Callable[[web.Request, str], Awaitable[web.StreamResponse]]


class HttpProblem(Exception):
    def __init__(self, status: int, error: str, reason: str, detail: list[dict[str, Any]] | None = None):
        super().__init__(error)
        self.status = status
        self.error = error
        self.reason = reason
        self.detail = detail or []


def _json(model: BaseModel, status: int = 200, version: int | None = None) -> web.Response:
    headers = {} if version is None else {"ETag": f'"{version}"'}
    return web.Response(text=model.model_dump_json(), status=status, content_type="application/json", headers=headers)


def _problem(request: web.Request, problem: HttpProblem) -> web.Response:
    if request.method != "GET":
        REJECTED.labels(problem.reason).inc()
    headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else {}
    body = ErrorBody(error=problem.error, detail=problem.detail)
    return web.Response(
        text=body.model_dump_json(), status=problem.status, content_type="application/json", headers=headers
    )


def _int_param(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip().removeprefix("W/").strip('"'))
    except ValueError:
        raise HttpProblem(400, f"{what} must be an integer version, got {value!r}", "bad_request") from None
    if number < 0:
        raise HttpProblem(400, f"{what} must not be negative", "bad_request")
    return number


def _bool_param(value: str | None, what: str) -> bool:
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise HttpProblem(400, f"{what} must be true or false, got {value!r}", "bad_request")


def _if_match(request: web.Request) -> int | None:
    value = request.headers.get("If-Match")
    return None if value is None or value.strip() == "*" else _int_param(value, "If-Match")


def _validation_detail(exc: ValidationError, lines: list[int] | None) -> list[dict[str, Any]]:
    detail = []
    for err in exc.errors(include_url=False):
        item: dict[str, Any] = {"loc": list(err["loc"]), "msg": err["msg"]}
        ctx = err.get("ctx") or {}
        index = ctx.get("index")
        if index is None and len(err["loc"]) >= 2 and err["loc"][0] == "entries":
            index = err["loc"][1]
        if isinstance(index, int):
            item["entry"] = index
            if lines is not None and index < len(lines):
                item["line"] = lines[index]
        detail.append(item)
    return detail


class HotwordsApi:
    def __init__(self, service: HotwordService, auth: AdminAuth, max_body_bytes: int) -> None:
        self.service = service
        self.auth = auth
        self.max_body_bytes = max_body_bytes

    def guarded(
        self, handler: Handler, query: tuple[str, ...] | None = ()
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """`handler` behind the admin token; `query`: the parameters it reads (any other is a 400, so
        that a misspelt `?strict=` is not silently ignored), None: not checked."""

        async def run(request: web.Request) -> web.StreamResponse:
            try:
                principal = self.auth.authenticate(request.headers.get("Authorization"))
                if principal is None:
                    raise HttpProblem(401, "missing or invalid bearer token", "unauthorized")
                if "admin" not in principal.roles:
                    raise HttpProblem(403, "the token lacks the admin role", "forbidden")
                unknown = [] if query is None else sorted(set(request.query) - set(query))
                if unknown:
                    raise HttpProblem(400, f"unknown query parameter {unknown[0][:40]!r}", "bad_request")
                return await handler(request, principal.identity)
            except HttpProblem as problem:
                return _problem(request, problem)
            except NotFound as exc:
                return _problem(request, HttpProblem(404, str(exc), "not_found"))
            except VersionConflict as exc:
                detail = [{"current_version": exc.current}]
                return _problem(request, HttpProblem(409, str(exc), "conflict", detail))
            except StoreBusy as exc:
                return _problem(request, HttpProblem(503, str(exc), "busy"))
            except (RedisError, OSError) as exc:
                log.warning("hot-word store unavailable for %s %s: %s", request.method, request.path, exc)
                message = f"hot-word store unavailable ({type(exc).__name__})"
                return _problem(request, HttpProblem(503, message, "store_unavailable"))

        return run

    async def _body(self, request: web.Request) -> str:
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise HttpProblem(413, f"body larger than {self.max_body_bytes} bytes", "too_large")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > self.max_body_bytes:
                raise HttpProblem(413, f"body larger than {self.max_body_bytes} bytes", "too_large")
            chunks.append(chunk)
        charset = request.charset or "utf-8"
        try:
            return b"".join(chunks).decode(charset)
        except LookupError:
            raise HttpProblem(415, f"unknown charset {charset!r}", "unsupported_media_type") from None
        except UnicodeDecodeError as exc:
            raise HttpProblem(422, f"body is not valid {charset} (byte {exc.start})", "invalid") from None

    async def _upload(self, request: web.Request) -> HotwordListIn:
        kind = request.content_type
        if kind not in ("application/json", "text/plain", "text/csv"):
            raise HttpProblem(
                415,
                f"unsupported content type {kind!r}: use application/json, text/plain or text/csv",
                "unsupported_media_type",
            )
        for key, pattern in (("scope", _SCOPE), ("language", _LANGUAGE)):
            value = request.query.get(key)
            if value is not None and not pattern.fullmatch(value):
                raise HttpProblem(400, f"?{key}= {value[:80]!r} does not match {pattern.pattern}", "bad_request")
        body = await self._body(request)
        lines: list[int] | None = None
        try:
            if kind == "application/json":
                try:
                    data = json.loads(body)
                except json.JSONDecodeError as exc:
                    raise HttpProblem(
                        422, f"body is not valid JSON: {exc.msg}", "invalid", [{"line": exc.lineno}]
                    ) from None
                return HotwordListIn.model_validate(data)
            parsed: list[ParsedEntry] = parse_csv(body) if kind == "text/csv" else parse_text(body)
            lines = [item.line for item in parsed]
            fields: dict[str, Any] = {"entries": [item.entry for item in parsed]}
            for key in ("scope", "language"):
                if key in request.query:
                    fields[key] = request.query[key]
            return HotwordListIn.model_validate(fields)
        except ParseError as exc:
            raise HttpProblem(422, str(exc), "invalid", [{"line": exc.line, "msg": exc.message}]) from None
        except ValidationError as exc:
            raise HttpProblem(422, "hot-word list is invalid", "invalid", _validation_detail(exc, lines)) from None

    # -- handlers ----------------------------------------------------------------------------------------
    async def put(self, request: web.Request, identity: str) -> web.StreamResponse:
        name = request.match_info["name"]
        expected = _if_match(request)
        content = await self._upload(request)
        strict = _bool_param(request.query.get("strict"), "strict")
        existed = await self.service.get(name) is not None
        try:
            result = await self.service.put(name, content, identity, expected, strict=strict)
        except UploadRejected as exc:
            raise HttpProblem(
                422,
                str(exc),
                "invalid",
                [{"phrase": r.phrase, "reason": r.reason, "msg": r.detail} for r in exc.rejected],
            ) from None
        return _json(result, 200 if existed else 201, result.list.version)

    async def get(self, request: web.Request, identity: str) -> web.StreamResponse:
        name = request.match_info["name"]
        version = _int_param(request.query.get("version"), "version")
        record = await self.service.get(name, version)
        if record is not None and version is not None and await self.service.get(name) is None:
            record = None  # a deleted list is gone for readers; rollback can still restore a version
        if record is None:
            raise NotFound(f"no list {name!r}" + ("" if version is None else f" at version {version}"))
        return _json(record, version=record.version)

    async def index(self, request: web.Request, identity: str) -> web.StreamResponse:
        lists = [
            ListSummary(
                name=r.name,
                scope=r.scope,
                language=r.language,
                version=r.version,
                phrases=len(r.entries),
                updated_at=r.updated_at,
                updated_by=r.updated_by,
            ).model_dump(mode="json")
            for r in await self.service.list_current()
        ]
        return web.json_response({"lists": lists})

    async def versions(self, request: web.Request, identity: str) -> web.StreamResponse:
        name = request.match_info["name"]
        versions = await self.service.versions(name)
        if not versions or await self.service.get(name) is None:
            raise NotFound(f"no list {name!r}")
        return web.json_response({"name": name, "versions": versions})

    async def delete(self, request: web.Request, identity: str) -> web.StreamResponse:
        name = request.match_info["name"]
        old = await self.service.delete(name, identity, _if_match(request))
        return web.json_response({"name": name, "deleted_version": old})

    async def rollback(self, request: web.Request, identity: str) -> web.StreamResponse:
        name = request.match_info["name"]
        version = _int_param(request.query.get("version"), "version")
        if version is None:
            raise HttpProblem(400, "rollback needs ?version=N", "bad_request")
        result = await self.service.rollback(name, version, identity, _if_match(request))
        return _json(result, version=result.list.version)

    async def no_route(self, request: web.Request, identity: str) -> web.StreamResponse:
        """What no route took under /v1/hotwords, answered in the API's own JSON: a method a path does not
        have (405 with Allow), or a path naming no list (404)."""
        for pattern, methods in _ROUTES:
            if pattern.fullmatch(request.path):
                allow = ",".join(sorted({*methods, "HEAD"} if "GET" in methods else set(methods)))
                body = ErrorBody(error=f"{request.method} is not allowed here; allowed: {allow}")
                return web.Response(
                    text=body.model_dump_json(), status=405, content_type="application/json", headers={"Allow": allow}
                )
        raise NotFound(f"no route {request.method} {request.path}")

    async def audit(self, request: web.Request, identity: str) -> web.StreamResponse:
        name = request.match_info["name"]
        limit = _int_param(request.query.get("limit"), "limit") or 100
        records = await self.service.audit(name, min(limit, 1000))
        return web.json_response({"name": name, "records": [r.model_dump(mode="json") for r in records]})


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 description of the routes, with schemas generated from the pydantic models."""
    models: list[type[BaseModel]] = [
        HotwordListIn,
        HotwordList,
        UploadResult,
        ListSummary,
        AuditRecord,
        ErrorBody,
    ]
    _, defs = models_json_schema(
        [(model, "serialization" if model is not HotwordListIn else "validation") for model in models],
        ref_template="#/components/schemas/{model}",
    )

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def answer(description: str, model: type[BaseModel] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"description": description}
        if model is not None:
            body["content"] = {"application/json": {"schema": ref(model)}}
        return body

    def errors(*statuses: int) -> dict[str, Any]:
        described = {
            400: answer("an unknown or malformed query parameter, or a malformed If-Match", ErrorBody),
            401: answer("missing or wrong bearer token", ErrorBody),
            403: answer("the token lacks the admin role", ErrorBody),
            404: answer("no such list, version or route; a deleted list answers 404 to every read", ErrorBody),
            409: answer("If-Match version is not the current one", ErrorBody),
            413: answer("body too large", ErrorBody),
            415: answer("unsupported content type or charset", ErrorBody),
            422: answer("invalid list; `detail` points at the entry or line", ErrorBody),
            # refused by access control before the route: its own body, `detail` a sentence
            429: {
                "description": "too many failed token checks from this address; see Retry-After",
                "headers": {"Retry-After": {"schema": {"type": "string"}}},
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["error", "detail"],
                            "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
                        }
                    }
                },
            },
            503: answer("the hot-word store is unavailable or busy; retry", ErrorBody),
        }
        # 400 on every operation: an unknown query parameter
        return {str(status): described[status] for status in (400, 401, 403, 429, 503, *statuses)}

    def inline(description: str, properties: dict[str, Any]) -> dict[str, Any]:
        body = {"type": "object", "required": list(properties), "properties": properties}
        return {"description": description, "content": {"application/json": {"schema": body}}}

    list_name = {"type": "string", "pattern": NAME_PATTERN}
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": NAME_PATTERN},
    }
    if_match = {
        "name": "If-Match",
        "in": "header",
        "required": False,
        "description": "the current version (0: the list must not exist yet), or *",
        "schema": {"type": "string", "pattern": r'^(\*|(W/)?"?[0-9]{1,15}"?)$'},
    }

    def query(key: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": key, "in": "query", "required": False, "schema": schema, "description": description}

    non_negative = {"type": "integer", "minimum": 0}

    return {
        "openapi": "3.1.0",
        "info": {"title": "voicenav hot-word lists", "version": "1"},
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/hotwords": {
                "get": {
                    "summary": "Current lists",
                    "responses": {
                        "200": inline("list summaries", {"lists": {"type": "array", "items": ref(ListSummary)}}),
                        **errors(),
                    },
                }
            },
            "/v1/hotwords/{name}": {
                "parameters": [name],
                "get": {
                    "summary": "A list, current or at ?version=",
                    "parameters": [query("version", non_negative, "an older version")],
                    "responses": {"200": answer("the list", HotwordList), **errors(404)},
                },
                "put": {
                    "summary": "Store a new version of a list",
                    "parameters": [
                        if_match,
                        query(
                            "scope",
                            {"type": "string", "pattern": SCOPE_PATTERN},
                            "scope of a text/plain or text/csv upload (a JSON upload has it in its body)",
                        ),
                        query(
                            "language",
                            {"type": "string", "pattern": LANGUAGE_PATTERN},
                            "language of a text/plain or text/csv upload (a JSON upload has it in its body)",
                        ),
                        query(
                            "strict", {"type": "boolean"}, "fail (422) instead of leaving out unrepresentable phrases"
                        ),
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": ref(HotwordListIn)},
                            "text/plain": {"schema": {"type": "string", "description": "one phrase per line"}},
                            "text/csv": {"schema": {"type": "string", "description": "phrase,boost per line"}},
                        },
                    },
                    "responses": {
                        "200": answer("stored as a new version", UploadResult),
                        "201": answer("created", UploadResult),
                        **errors(404, 409, 413, 415, 422),  # 404: a name outside the pattern
                    },
                },
                "delete": {
                    "summary": "Delete a list: reads answer 404 until it is stored again (rollback restores)",
                    "parameters": [if_match],
                    "responses": {
                        "200": inline("deleted", {"name": list_name, "deleted_version": {"type": "integer"}}),
                        **errors(404, 409),
                    },
                },
            },
            "/v1/hotwords/{name}/versions": {
                "parameters": [name],
                "get": {
                    "summary": "Stored version numbers",
                    "responses": {
                        "200": inline(
                            "versions", {"name": list_name, "versions": {"type": "array", "items": {"type": "integer"}}}
                        ),
                        **errors(404),
                    },
                },
            },
            "/v1/hotwords/{name}/rollback": {
                "parameters": [name],
                "post": {
                    "summary": "Store a new version equal to an old one",
                    "parameters": [
                        {
                            "name": "version",
                            "in": "query",
                            "required": True,
                            "schema": non_negative,
                        },
                        if_match,
                    ],
                    "responses": {"200": answer("rolled back", UploadResult), **errors(404, 409)},
                },
            },
            "/v1/hotwords/{name}/audit": {
                "parameters": [name],
                "get": {
                    "summary": "Audit trail of a list, newest first",
                    "parameters": [query("limit", non_negative, "at most this many records (0: 100)")],
                    "responses": {
                        "200": inline(
                            "audit records",
                            {"name": list_name, "records": {"type": "array", "items": ref(AuditRecord)}},
                        ),
                        **errors(404),
                    },
                },
            },
        },
    }


def setup_routes(
    app: web.Application, service: HotwordService, auth: AdminAuth, max_body_bytes: int | None = None
) -> HotwordsApi:
    """Add the `/v1/hotwords` routes and `GET /v1/openapi.json` to `app`."""
    api = HotwordsApi(service, auth, max_body_bytes or service.config.max_body_bytes)
    document = json.dumps(openapi_document())

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(text=document, content_type="application/json")

    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/v1/hotwords", api.guarded(api.index))
    app.router.add_get(f"/v1/hotwords/{_NAME}", api.guarded(api.get, ("version",)))
    app.router.add_put(f"/v1/hotwords/{_NAME}", api.guarded(api.put, ("scope", "language", "strict")))
    app.router.add_delete(f"/v1/hotwords/{_NAME}", api.guarded(api.delete))
    app.router.add_get(f"/v1/hotwords/{_NAME}/versions", api.guarded(api.versions))
    app.router.add_post(f"/v1/hotwords/{_NAME}/rollback", api.guarded(api.rollback, ("version",)))
    app.router.add_get(f"/v1/hotwords/{_NAME}/audit", api.guarded(api.audit, ("limit",)))
    app.router.add_route("*", "/v1/hotwords/{tail:.*}", api.guarded(api.no_route, None))
    return api
