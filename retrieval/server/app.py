"""The HTTP API of ``retrieval serve``: a thin FastAPI layer over :class:`~retrieval.search.Retriever`.

The routes, request and response shapes are those of the API contract in
the README ("Server"). Every error is JSON ``{"error": message, "status": code}``.

Threads: a text or ``like`` query costs about a millisecond of Python and
NumPy under the GIL, so the query endpoints are ``async`` and answer on the
event loop. A hop to the thread pool would cost more than it could gain, and
each index's retriever (which reopens itself after a writer swapped the
index) stays confined to that one thread. What can take long runs in threads
that never touch the retriever: decoding an upload or fetching an image URL
(given the index's preprocessing state), writes (the library's writer, one
at a time per index), and the corpus map (its own retriever, in the
background).

Security defaults: the write endpoints are off without a token, and the
token is compared in constant time; request bodies are capped (by
``Content-Length`` and while reading); text queries are capped in length;
the server fetches no URL unless started with ``allow_url_queries``; item ids
are looked up in the item table, never joined into paths; no CORS unless an
origin is given.
"""
from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import warnings
from contextlib import asynccontextmanager, closing
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .. import __version__
from ..config import (DEFAULT_K, FILTER_WHERE_MAX_CHARS, MAP_EPOCHS, SERVER_HOST, SERVER_MAP_ITEMS, SERVER_MAX_K, SERVER_MAX_QUERY_CHARS,
                      Range, SERVER_MAX_UPLOAD_MB, SERVER_PORT)
from ..errors import (FetchError, IndexExists, IndexFormatError, IndexLocked, IndexNotFound, InputError,
                      ItemNotFound, RetrievalError, RetrievalWarning)
from ..search import Retriever
from ..search.filters import Filter, NoMatchingItems
from ..storage import Store
from ..storage.segments import open_items

log = logging.getLogger("retrieval.server")

#: The web page's files, shipped inside the package.
STATIC = Path(__file__).with_name("static")
#: Library errors -> HTTP status, most specific first.
_STATUS = ((ItemNotFound, 404), (IndexNotFound, 404), (IndexExists, 409), (IndexLocked, 409), (FetchError, 502),
           (IndexFormatError, 500), (RetrievalError, 400))
#: Longest image URL accepted (with ``allow_url_queries``).
_MAX_URL = 2048
#: Longest item id accepted in a request body.
_MAX_ID = 1024


# -- request bodies --------------------------------------------------------------------
class SearchRequest(BaseModel):
    """A search: exactly one of ``text``, ``like`` or ``url`` (or an uploaded image, multipart)."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    like: str | None = Field(None, max_length=_MAX_ID)
    url: str | None = Field(None, max_length=_MAX_URL)
    k: int = Field(DEFAULT_K, ge=1, le=SERVER_MAX_K)
    method: str | None = Field(None, max_length=100)
    rerank: str | None = Field(None, max_length=100)
    shortlist: int | None = Field(None, ge=1, le=100_000)
    novelty: bool = True
    #: Filters, applied before the search (see retrieval.search.filters): any of the labels, any of the
    #: path prefixes, an SQL condition on the item table and its named parameters; all given must hold.
    label: str | list[str] | None = Field(None, max_length=1000)
    path_prefix: str | list[str] | None = Field(None, max_length=1000)
    where: str | None = Field(None, max_length=FILTER_WHERE_MAX_CHARS)
    params: dict[str, str | int | float | bool | None] | None = Field(None, max_length=100)


class NewDocument(BaseModel):
    """A document to add; without ``id`` it is numbered after the largest numeric id."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(None, min_length=1, max_length=_MAX_ID)
    text: str
    title: str | None = None
    label: str | None = None
    url: str | None = None


class NewDocuments(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[NewDocument] = Field(min_length=1)


# -- errors ------------------------------------------------------------------------------
def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """The JSON error of the API: ``{"error": message, "status": status}``."""
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _status_of(exc: RetrievalError) -> int:
    return next(status for cls, status in _STATUS if isinstance(exc, cls))


def _describe(errors: list[dict]) -> str:
    """One line naming each bad field and value of a validation error."""
    parts = []
    for e in errors[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        if e.get("type") == "extra_forbidden":
            parts.append(f"unknown field {where!r}")
        elif e.get("type") == "missing":
            parts.append(f"{where}: required field is missing")
        else:
            value = repr(e.get("input"))
            value = value if len(value) <= 60 else value[:57] + "..."
            parts.append(f"{where}: {e.get('msg', 'invalid').lower()} (got {value})")
    return "invalid request: " + "; ".join(parts)


def _parse(model: type[BaseModel], body: bytes) -> BaseModel:
    """Validate a JSON body; malformed JSON is a 400, a bad field a 422 (both in the API's error shape)."""
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise HTTPException(400, f"the body is not valid JSON ({errors[0]['msg']}); "
                                     "send a JSON object with Content-Type: application/json") from None
        if any(e["type"] == "model_type" for e in errors):
            raise HTTPException(400, "the body must be a JSON object") from None
        raise HTTPException(422, _describe(errors)) from None


# -- the body size cap -------------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413.

    Refused early by ``Content-Length``, and while reading when the length is
    not declared (chunked) or understated. Pure ASGI, not Starlette's
    ``BaseHTTPMiddleware``, which costs far more per request.
    """

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self) -> str:
        return (f"the request body is larger than the limit of {self.limit / 1e6:g} MB; send a smaller file "
                "(or start the server with a larger --max-upload-mb)")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        for key, value in scope["headers"]:
            if key == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    status = 413 if value.isdigit() else 400
                    message = self._too_large() if status == 413 else "invalid Content-Length header"
                    return await error_response(status, message)(scope, receive, send)
                break
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, limited, send)


# -- one served index ------------------------------------------------------------------------
_MAP_SLOT = threading.Semaphore(1)  # one map trains at a time: each one uses every core


class Served:
    """One index as the server holds it: its retriever (kept), its write lock, its map."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name
        self.retriever = Retriever(name, store)
        self.write_lock = threading.Lock()
        self._map: tuple[str, dict | Exception] | None = None  # (manifest checksum, points or error)
        self._map_running: str | None = None

    def warm(self) -> None:
        """Load every method, the preprocessing and the novelty model before the first query."""
        r = self.retriever
        # Every method, not only the default: loading one later runs on the event loop,
        # where its first imports could wait seconds on a map thread importing Keras.
        for method in r.methods:
            r.method(method)
        r.state  # noqa: B018 - loads the vectorizer / image shape
        if r.has_inputs():
            r.inputs()
            first = r.metadata.ids()[:1]
            if first:
                r.like(first[0], 1)
                r.novelty(r.inputs()[:1])

    def summary(self, writable: bool) -> dict:
        r = self.retriever
        r.refresh()
        m = r.manifest
        methods = r.methods
        default = r.default_method
        info = m["methods"].get(default, {})
        binary = bool(info.get("binary"))
        quoted = quote(self.name, safe="")
        out = {"name": self.name, "modality": r.modality.name, "items": int(m["counts"]["items"]),
               "methods": methods, "default_method": default,
               "baseline": next((b for b in r.modality.compared_with if b in methods), None),
               "binary": binary, "rerankers": list(r.modality.rerankers) if binary else [],
               "metric": info.get("metric", ""), "built": m.get("updated_at") or m.get("created_at", ""),
               "writable": writable, "map": f"/api/indexes/{quoted}/map"}
        if "dim" in info:
            out["code_dim"] = int(info["dim"])
        return out

    def evaluation(self) -> list[dict] | None:
        record = self.retriever.manifest.get("evaluation")
        if not record:
            return None
        return [{"method": method, "k": record.get("k"), "queries": record.get("queries"), **row}
                for method, row in record.get("methods", {}).items()]

    def thumbnail_url(self, item_id: str) -> str | None:
        if not self.retriever.modality.pictures:
            return None
        return f"/api/indexes/{quote(self.name, safe='')}/items/{quote(item_id, safe='')}/thumbnail"

    # -- the map ----------------------------------------------------------------------------
    def corpus_map(self, max_items: int, epochs: int) -> tuple[int, dict]:
        """``(200, map)`` when the map of this version is ready (or an older one while it is redrawn),
        else ``(202, {"status": "computing"})`` and its computation started in the background."""
        self.retriever.refresh()
        version = self.retriever.manifest.get("checksum", "")
        done = self._map
        if done is not None and done[0] == version:
            if isinstance(done[1], Exception):
                raise done[1]
            return 200, done[1]
        if self._map_running != version:
            self._map_running = version
            threading.Thread(target=self._compute_map, args=(version, max_items, epochs), daemon=True,
                             name=f"map-{self.name}").start()
        if done is not None and not isinstance(done[1], Exception):
            return 200, done[1] | {"stale": True}
        return 202, {"status": "computing"}

    def _compute_map(self, version: str, max_items: int, epochs: int) -> None:
        # Its own retriever: the served one belongs to the event loop's thread.
        from ..plots import map_codes

        try:
            with _MAP_SLOT, Retriever(self.name, self.store, verify=False) as r:
                positions, labels, panels = map_codes(r, max_items=max_items, epochs=epochs, linear=False)
                ids = [row["id"] for row in r.metadata.rows(positions)]
                xy = panels["autoencoder"].astype(float).round(4).tolist()  # float64: 4 decimals print as 4
                names = sorted({str(label) for label in labels if label is not None})
                points = [{"id": i, "x": x, "y": y, "label": label} for i, (x, y), label in zip(ids, xy, labels)]
                result: dict | Exception = {"points": points, "method": "ae", "labels": names,
                                            "version": r.manifest.get("checksum", "")}
        except RetrievalError as exc:
            result = exc
        except Exception as exc:  # noqa: BLE001 - reported to the caller as a 500, logged here
            log.exception("computing the map of %s failed", self.name)
            result = exc
        self._map = (version, result)
        self._map_running = None

    # -- writes (in a worker thread) ------------------------------------------------------
    def add(self, records: list[dict]) -> dict:
        from ..api import number_records
        from ..writer import add_items

        with self.write_lock:
            with closing(open_items(self.store.require(self.name))) as table:
                ids = table.ids()
            records = number_records(records, ids, self.retriever.modality.record_key)
            report = add_items(self.store, self.name, records)
        return _report(report) | {"ids": [r["id"] for r in records]}

    def remove(self, item_id: str) -> dict:
        from ..writer import remove_items

        with self.write_lock:
            return _report(remove_items(self.store, self.name, ids=[item_id]))


def _report(report) -> dict:
    return {"added": report.added, "updated": report.replaced, "removed": report.removed, "items": report.items,
            "unchanged": report.unchanged, "skipped": report.skipped, "seconds": report.seconds}


# -- the app ----------------------------------------------------------------------------
def create_app(store: Store | None = None, names: list[str] | None = None, *, token: str | None = None,
               allow_url_queries: bool = False, cors: list[str] | None = None,
               max_upload: int = SERVER_MAX_UPLOAD_MB * 1_000_000, max_query_chars: int = SERVER_MAX_QUERY_CHARS,
               map_items: int = SERVER_MAP_ITEMS, map_epochs: int = MAP_EPOCHS, warm: bool = True) -> FastAPI:
    """The FastAPI application serving ``names`` (default: every index of ``store``).

    Each index is opened (and its checksums verified) once, here; a writer's
    swap is picked up by the next request (one ``stat``).

    Args:
        store: The store holding the indexes (default: ``$RETRIEVAL_HOME``).
        names: Indexes to serve (default: all).
        token: Bearer token of the write endpoints; ``None`` turns them off.
        allow_url_queries: Let a search fetch an image URL (off: a request
            forgery hole on a server that can reach private hosts).
        cors: Origins allowed to call the API from a browser (default: none).
        max_upload: Largest request body in bytes.
        max_query_chars: Longest text query.
        map_items: Points of the corpus map at most.
        map_epochs: Epochs of the map's 2-d autoencoder.
        warm: Load every index's models before serving the first request.

    Raises:
        IndexNotFound: A name is not an index of the store.
        InputError: The store holds no index and none was named.
    """
    store = store or Store()
    names = list(names) if names else store.names()
    if not names:
        raise InputError(f"no indexes in {store.root} to serve; build one ('retrieval index docs ...') "
                         "or pass --index-dir")
    if token is not None and not token.strip():
        raise InputError("the token is empty; give a long random --token (or RETRIEVAL_TOKEN), or none to keep "
                         "write endpoints off")
    served = {name: Served(store, name) for name in dict.fromkeys(names)}
    if warm:
        for s in served.values():
            s.warm()
    secret = token.encode() if token is not None else None

    @asynccontextmanager
    async def lifespan(app):
        yield
        for s in served.values():
            s.retriever.close()

    app = FastAPI(title="retrieval", version=__version__, lifespan=lifespan,
                  description="Search document and image indexes built by `retrieval`. Errors are JSON "
                              '`{"error": message, "status": code}`.')
    app.state.served = served
    app.add_middleware(BodyLimit, limit=max_upload)
    if cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])

    # -- error handlers: every error is JSON in one shape, never a traceback -----------------
    @app.exception_handler(RetrievalError)
    async def _library_error(request: Request, exc: RetrievalError):
        status = _status_of(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc)
        return error_response(status, " ".join(str(exc).splitlines()))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return error_response(422, _describe(list(exc.errors())))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such path {request.url.path!r}; the API is described at /docs"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path!r}; see /docs"
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal server error; the server log has the details")

    def index(name: str) -> Served:
        try:
            return served[name]
        except KeyError:
            raise IndexNotFound(f"no index {name!r} is served here; the indexes are "
                                f"{', '.join(served)} (GET /api/indexes)") from None

    def authorize(request: Request) -> None:
        if secret is None:
            raise HTTPException(403, "write endpoints are off; start the server with --token or RETRIEVAL_TOKEN")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken says nothing about how much of the token matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), secret):
            raise HTTPException(401, "missing or wrong token; send the header 'Authorization: Bearer TOKEN'",
                                headers={"WWW-Authenticate": "Bearer"})

    # -- reading -----------------------------------------------------------------------------
    @app.get("/healthz", tags=["server"])
    async def healthz():
        return {"status": "ok", "indexes": list(served)}

    @app.get("/api/indexes", tags=["indexes"])
    async def list_indexes():
        return {"indexes": [s.summary(secret is not None) for s in served.values()]}

    @app.get("/api/indexes/{name}", tags=["indexes"])
    async def show_index(name: str):
        s = index(name)
        return s.summary(secret is not None) | {"evaluation": s.evaluation()}

    @app.get("/api/indexes/{name}/map", tags=["indexes"])
    async def corpus_map(name: str):
        status, body = index(name).corpus_map(map_items, map_epochs)
        return JSONResponse(body, status_code=status)

    @app.post("/api/indexes/{name}/search", tags=["search"], openapi_extra=_SEARCH_BODY)
    async def search(name: str, request: Request):
        s = index(name)
        started = time.perf_counter()
        image = None
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            body, image = await _search_form(request)
        else:
            body = _parse(SearchRequest, await request.body())
        r = s.retriever
        given = [x for x in (body.text, body.like, body.url, image) if x is not None]
        if len(given) != 1:
            raise InputError('give exactly one query: "text", "like" (an item id) or "url", or upload an image '
                             f"(multipart field 'image'); got {len(given)}")
        r.refresh()
        flt = Filter.make(body.label, body.path_prefix, body.where, body.params)
        two_stage = {"rerank": body.rerank, "shortlist": body.shortlist, "filter": flt}
        filtered: dict = {"filter": None if flt is None else flt.to_dict()}
        if flt is not None:
            try:
                filtered["matches"] = int(len(r.allowed(flt)))  # resolved once: the search reuses it
            except NoMatchingItems as exc:
                # A valid request whose filter keeps nothing: no hits, and the reason.
                filtered |= {"matches": 0, "message": str(exc)}
        query: dict
        if filtered.get("matches") == 0:
            query = {"kind": "like" if body.like is not None else "text" if body.text is not None else
                     "url" if body.url is not None else "image"}
            hits, novelty = [], None
        elif body.like is not None:
            query = {"kind": "like", "like": body.like}
            hits = r.like(body.like, body.k, body.method, **two_stage)
            novelty = r.stored_novelty(body.like) if body.novelty else None
        else:
            if body.text is not None:
                raw = body.text
                query = {"kind": "text", "text": raw}
                inputs = r.query_inputs([_check_text(r, raw, max_query_chars)])
            elif body.url is not None:
                raw = _check_url(r, body.url, allow_url_queries)
                query = {"kind": "url", "url": raw}
                inputs = await run_in_threadpool(r.modality.query, r.state, raw)
            else:
                raw = image
                query = {"kind": "image"}
                if r.modality.text_queries:
                    raise InputError(f"index {name!r} holds {r.modality.noun}; send JSON "
                                     '{"text": "some words"} instead of an image')
                inputs = await run_in_threadpool(r.modality.query, r.state, image)
            hits = r.search_inputs(inputs, body.k, body.method, **two_stage)[0]
            novelty = next(iter(r.novelty(inputs, [raw])), None) if body.novelty else None
        method = Retriever.split_method(body.method)[0] or r.default_method
        return JSONResponse({
            "index": name, "query": query, "method": body.method or r.default_method,
            "metric": r.manifest["methods"].get(method, {}).get("metric", ""), "k": body.k,
            "hits": [{"rank": h.rank, "id": h.id, "score": h.score, "label": h.label, "title": h.title,
                      "snippet": h.snippet, "url": h.url, "thumbnail": s.thumbnail_url(h.id)} for h in hits],
            "novelty": novelty, **filtered, "took_ms": round((time.perf_counter() - started) * 1000, 3)})

    @app.get("/api/indexes/{name}/items/{item_id:path}/thumbnail", tags=["items"],
             responses={200: {"content": {"image/png": {}}}})
    async def thumbnail(name: str, item_id: str):
        from ..modality import PngList

        s = index(name)
        r = s.retriever
        if not r.modality.pictures:
            raise HTTPException(404, f"index {name!r} holds {r.modality.noun}; only image indexes have thumbnails")
        r.refresh()
        position = r.metadata.position(item_id)
        return Response(PngList(r.inputs("thumbnails"))[position], media_type="image/png",
                        headers={"Cache-Control": "no-cache"})

    @app.get("/api/indexes/{name}/items/{item_id:path}", tags=["items"])
    async def item(name: str, item_id: str):
        s = index(name)
        r = s.retriever
        r.refresh()
        row = r.metadata.rows([r.metadata.position(item_id)])[0]
        return {"id": row["id"], "label": row["label"], "title": row["title"] or "",
                # The index keeps the start of each document (its snippet), not the whole text.
                "text": (row["snippet"] or "") if r.modality.text_queries else "",
                "url": row["url"] or "", "path": row["path"] or "", "thumbnail": s.thumbnail_url(row["id"])}

    # -- writing ----------------------------------------------------------------------------
    @app.post("/api/indexes/{name}/items", tags=["items"], openapi_extra=_ADD_BODY)
    async def add_items(name: str, request: Request):
        s = index(name)
        authorize(request)  # before reading a byte of the body
        if s.retriever.modality.text_queries:
            docs = _parse(NewDocuments, await request.body())
            records = [d.model_dump(exclude_none=True) for d in docs.items]
        else:
            records = await _image_records(request)
        return await run_in_threadpool(s.add, records)

    @app.delete("/api/indexes/{name}/items/{item_id:path}", tags=["items"])
    async def delete_item(name: str, item_id: str, request: Request):
        s = index(name)
        authorize(request)
        return await run_in_threadpool(s.remove, item_id)

    # -- the page ---------------------------------------------------------------------------
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    return app


def _check_text(r: Retriever, text: str, limit: int) -> str:
    if not r.modality.text_queries:
        raise InputError(f"index {r.name!r} holds {r.modality.noun}; upload an image (multipart field 'image') "
                         'or give "like": ITEM_ID instead of text')
    if len(text) > limit:
        raise InputError(f"the query text has {len(text):,} characters, more than the limit of {limit:,}; "
                         "shorten it")
    if not text.strip():
        raise InputError('the query text is empty; give some words in "text", or "like": ITEM_ID')
    return text


def _check_url(r: Retriever, url: str, allowed: bool) -> str:
    if not allowed:
        raise HTTPException(403, "URL queries are off: this server does not fetch URLs (a request-forgery "
                                 "guard); upload the image instead, or start the server with --allow-url-queries")
    if r.modality.text_queries:
        raise InputError(f'index {r.name!r} holds {r.modality.noun}; send the words as "text", not a URL')
    if not url.startswith(("http://", "https://")):
        raise InputError(f"{url[:80]!r} is not an http(s) URL")
    return url


async def _search_form(request: Request) -> tuple[SearchRequest, bytes]:
    """The fields of a multipart search and the bytes of its ``image`` file."""
    form = await request.form(max_files=1, max_fields=20)
    try:
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise InputError("a multipart search needs an image file in the field 'image'")
        fields = {k: v for k, v in form.items() if k != "image"}
        if any(not isinstance(v, str) for v in fields.values()):
            raise InputError("send one image file, in the field 'image'; other fields are text")
        for key in ("label", "path_prefix"):  # repeatable form fields: any of the values
            if len(form.getlist(key)) > 1:
                fields[key] = form.getlist(key)
        if "params" in fields:  # an object: JSON text in a form
            try:
                fields["params"] = json.loads(fields["params"])
            except ValueError:
                raise InputError("the form field 'params' must be a JSON object such as {\"n\": 100}") from None
        try:
            body = SearchRequest.model_validate(fields)
        except ValidationError as exc:
            raise HTTPException(422, _describe(exc.errors(include_url=False))) from None
        data = await upload.read()
        if not data:
            raise InputError(f"the uploaded file {upload.filename!r} is empty; choose an image file")
        return body, data
    finally:
        await form.close()


async def _image_records(request: Request) -> list[dict]:
    """The images of a multipart add (field ``images``, one or more) as records for the writer."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InputError("this index holds images: send them as multipart/form-data files in the field 'images'")
    form = await request.form(max_files=1000, max_fields=10)
    try:
        uploads = [u for u in form.getlist("images") if not isinstance(u, str)]
        if not uploads:
            raise InputError("no image files in the field 'images'; attach one or more images")
        # The file name is only a title: nothing is ever written or read under it.
        return [{"image": await u.read(), "title": Path(u.filename or "").name[:200]} for u in uploads]
    finally:
        await form.close()


#: OpenAPI descriptions of the two bodies the search and add endpoints read themselves
#: (they accept JSON and multipart on one route, which FastAPI's declared bodies cannot).
_SEARCH_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": SearchRequest.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary"}, "k": {"type": "integer"}, "method": {"type": "string"},
        "rerank": {"type": "string"}, "shortlist": {"type": "integer"}, "label": {"type": "string"},
        "path_prefix": {"type": "string"}, "where": {"type": "string"},
        "params": {"type": "string", "description": "a JSON object"}}}}}}}
_ADD_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": NewDocuments.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}


def serve(names: list[str] | None = None, *, store: Store | None = None, host: str = SERVER_HOST,
          port: int = SERVER_PORT, token: str | None = None, allow_url_queries: bool = False,
          cors: list[str] | None = None, max_upload_mb: float = SERVER_MAX_UPLOAD_MB,
          access_log: bool = False) -> None:
    """Serve indexes over HTTP in the foreground until interrupted (see :func:`create_app`).

    One process, one worker: every index is loaded once and shared by all
    requests. Binds the loopback interface unless ``host`` says otherwise.
    """
    import uvicorn

    if max_upload_mb <= 0:
        raise InputError(f"--max-upload-mb must be positive; got {max_upload_mb}")
    Range("--port", 1, 65535).check(port)  # uvicorn would wrap 70000 round to 4464
    app = create_app(store, names, token=token, allow_url_queries=allow_url_queries, cors=cors,
                     max_upload=int(max_upload_mb * 1_000_000))
    if host not in ("127.0.0.1", "localhost", "::1"):
        warnings.warn(f"listening on {host}: anyone who can reach this machine can search these indexes"
                      + (" and, with the token, change them (the token travels in plain HTTP)" if token else ""),
                      RetrievalWarning, stacklevel=2)
    uvicorn.run(app, host=host, port=port, workers=1, access_log=access_log, log_level="info",
                server_header=False)


__all__ = ["BodyLimit", "Served", "create_app", "error_response", "serve"]
