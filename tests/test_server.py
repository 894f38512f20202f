"""`retrieval serve`: the HTTP API through FastAPI's in-process client, and once as a real process."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from retrieval import Index, Store  # noqa: E402
from retrieval.server import create_app  # noqa: E402

from conftest import ServerProcess  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="session")
def served_store(built_docs, built_images, tmp_path_factory):
    """Copies of the tiny session indexes in one store (these tests change them)."""
    base = tmp_path_factory.mktemp("served")
    for store, name, _ in (built_docs, built_images):
        shutil.copytree(store.path(name), base / name)
    return Store(base)


@pytest.fixture(scope="session")
def client(served_store):
    with TestClient(create_app(served_store, token=TOKEN, map_items=40, map_epochs=1), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def readonly(served_store):
    """A server started without a token: write endpoints off."""
    with TestClient(create_app(served_store, warm=False), raise_server_exceptions=False) as c:
        yield c


def png(image_dir: Path, name: str = "disc/disc00.png") -> bytes:
    return (image_dir / name).read_bytes()


def search(client, name: str, **body):
    return client.post(f"/api/indexes/{name}/search", json=body)


def assert_error(response, status: int, *words: str) -> dict:
    """An error in the API's shape: JSON {"error": message naming the problem, "status": code}."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and isinstance(body["error"], str)
    assert "Traceback" not in body["error"]
    for word in words:
        assert word.lower() in body["error"].lower(), body["error"]
    return body


def all_ids(client, name: str, query: dict) -> list[str]:
    return [h["id"] for h in search(client, name, k=1000, method="tfidf" if "text" in query else None,
                                     **query).json()["hits"]]


# -- reading ----------------------------------------------------------------------------
def test_health_and_summaries(client):
    assert client.get("/healthz").json() == {"status": "ok", "indexes": ["pics", "tiny"]}
    rows = {row["name"]: row for row in client.get("/api/indexes").json()["indexes"]}
    docs, pics = rows["tiny"], rows["pics"]
    assert docs["modality"] == "docs" and docs["baseline"] == "lsa" and docs["methods"][0] == "ae"
    assert pics["modality"] == "images" and pics["baseline"] == "pixels"
    assert docs["items"] >= 100 and docs["writable"] and not docs["binary"] and docs["rerankers"] == []
    assert docs["map"] == "/api/indexes/tiny/map" and docs["code_dim"] == 4 and docs["metric"]


def test_index_details_carry_the_last_evaluation(client, served_store, built_docs):
    from retrieval.api import run_evaluation

    # The copied index may carry an evaluation from earlier tests of the session: drop it first.
    served_store.update_manifest("pics", lambda manifest: manifest.pop("evaluation", None))
    assert client.get("/api/indexes/pics").json()["evaluation"] is None
    run_evaluation(served_store, "tiny", built_docs[2], labels_from_folders=True, k=10, limit=20)
    rows = client.get("/api/indexes/tiny").json()["evaluation"]
    assert {r["method"] for r in rows} == {"ae", "lsa", "tfidf"}
    assert all(0 <= r["precision@10"] <= 1 and r["k"] == 10 for r in rows)


def test_text_search(client):
    body = search(client, "tiny", text="orbit rocket launch nasa satellite", k=5, method="tfidf").json()
    assert body["index"] == "tiny" and body["query"] == {"kind": "text", "text": "orbit rocket launch nasa satellite"}
    assert body["method"] == "tfidf" and body["k"] == 5 and body["metric"] and body["took_ms"] > 0
    hits = body["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0]["label"] == "space" and hits[0]["thumbnail"] is None and hits[0]["snippet"]
    assert hits[0]["score"] >= hits[-1]["score"]
    assert 0 <= body["novelty"]["percentile"] <= 100
    # The default method is the autoencoder's; novelty can be skipped.
    body = search(client, "tiny", text="orbit rocket", novelty=False).json()
    assert body["method"] == "ae" and len(body["hits"]) == 10 and body["novelty"] is None


def test_like_and_item_ids_with_a_slash(client):
    first = search(client, "tiny", text="engine brake tire", method="tfidf").json()["hits"][0]
    assert "/" in first["id"]  # "cars/doc031.txt": ids with a slash go URL-encoded into paths
    body = search(client, "tiny", like=first["id"], k=3).json()
    assert body["query"] == {"kind": "like", "like": first["id"]} and len(body["hits"]) == 3
    assert first["id"] not in [h["id"] for h in body["hits"]]
    item = client.get(f"/api/indexes/tiny/items/{quote(first['id'], safe='')}").json()
    assert item["id"] == first["id"] and item["label"] == "cars" and item["text"].startswith(item["title"])
    assert item["thumbnail"] is None
    assert_error(client.get(f"/api/indexes/tiny/items/{quote(first['id'], safe='')}/thumbnail"), 404, "documents")


def test_image_upload_search_and_thumbnail(client, built_images):
    response = client.post("/api/indexes/pics/search", files={"image": ("q.png", png(built_images[2]), "image/png")},
                           data={"k": "4", "method": "pixels"})
    body = response.json()
    assert response.status_code == 200 and body["query"] == {"kind": "image"} and body["method"] == "pixels"
    top = body["hits"][0]
    assert top["id"] == "disc/disc00.png" and top["label"] == "disc" and len(body["hits"]) == 4
    assert top["thumbnail"] == "/api/indexes/pics/items/disc%2Fdisc00.png/thumbnail"
    thumb = client.get(top["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(thumb.content)) as img:
        assert img.size == (16, 16)  # the stored pixels of the tiny index
    like = search(client, "pics", like="disc/disc00.png", k=2).json()
    assert len(like["hits"]) == 2 and like["hits"][0]["thumbnail"].endswith("/thumbnail")


def test_the_page_and_the_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/indexes/{name}/search" in paths and "multipart/form-data" in str(paths)


# -- bad requests: each a JSON error naming the problem ------------------------------------------
@pytest.mark.parametrize("name, body, status, words", [
    ("tiny", {"text": ""}, 400, ["empty"]),
    ("tiny", {"text": "   "}, 400, ["empty"]),
    ("tiny", {"text": "orbit", "k": 0}, 422, ["k", "got 0"]),
    ("tiny", {"text": "orbit", "k": 10_000}, 422, ["k", "10000"]),
    ("nope", {"text": "orbit"}, 404, ["nope", "tiny"]),
    ("tiny", {"text": "orbit", "method": "magic"}, 400, ["magic", "lsa"]),
    ("pics", {"text": "a red disc"}, 400, ["holds images", "upload"]),
    ("tiny", {"url": "http://127.0.0.1:9/x.png"}, 403, ["--allow-url-queries"]),
    ("tiny", {"text": "orbit", "like": "cars/doc031.txt"}, 400, ["exactly one"]),
    ("tiny", {}, 400, ["exactly one"]),
    ("tiny", {"text": "orbit", "colour": "red"}, 422, ["colour"]),
    ("tiny", {"text": "zzzz qqqq"}, 400, ["vocabulary"]),
    ("tiny", {"like": "no/such/item"}, 404, ["no/such/item"]),
    ("tiny", {"text": "orbit " * 5000}, 400, ["limit"]),
    ("tiny", {"text": ["orbit"]}, 422, ["text"]),
])
def test_bad_searches(client, name, body, status, words):
    assert_error(search(client, name, **body), status, *words)


def test_malformed_json(client):
    response = client.post("/api/indexes/tiny/search", content=b'{"text": "orbit"', headers={"Content-Type": "application/json"})
    assert_error(response, 400, "not valid JSON")
    assert_error(client.post("/api/indexes/tiny/search", json=["orbit"]), 400, "JSON object")


def test_an_upload_that_is_not_an_image(client):
    response = client.post("/api/indexes/pics/search", files={"image": ("x.png", b"GIF89 but not really", "image/png")})
    assert_error(response, 400, "not an image")
    assert_error(client.post("/api/indexes/pics/search", files={"image": ("e.png", b"", "image/png")}), 400, "empty")
    assert_error(client.post("/api/indexes/tiny/search", files={"image": ("q.png", b"\x89PNG", "image/png")}),
                 400, "holds documents")
    assert_error(client.post("/api/indexes/pics/search", data={"k": "3"}, files={"other": ("x", b"x")}), 400, "'image'")


def test_oversize_uploads_are_refused(client):
    big = b"\x89PNG\r\n\x1a\n" + bytes(50 * 1024 * 1024)
    response = client.post("/api/indexes/pics/search", files={"image": ("big.png", big, "image/png")})
    assert_error(response, 413, "10 MB")

    def chunks():  # no Content-Length: refused while reading
        for _ in range(12):
            yield bytes(1024 * 1024)

    response = client.post("/api/indexes/pics/search", content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(response, 413, "limit")


def test_unknown_routes_items_and_methods(client):
    assert_error(client.get("/api/nothing"), 404, "/docs")
    assert_error(client.put("/api/indexes/tiny/search", json={}), 405, "PUT")
    assert_error(client.get("/api/indexes/tiny/items/no-such-id"), 404, "no-such-id")
    # Ids are looked up in the item table, never joined into a path.
    assert_error(client.get("/api/indexes/pics/items/..%2F..%2F..%2Fetc%2Fpasswd/thumbnail"), 404, "etc/passwd")
    assert_error(client.get("/api/indexes/nope/map"), 404, "nope")


def test_unexpected_errors_are_generic(client, monkeypatch):
    served = client.app.state.served["tiny"]

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(served.retriever, "search_inputs", broken)
    body = assert_error(search(client, "tiny", text="orbit"), 500, "internal")
    assert "secret" not in body["error"]


def test_url_queries_only_when_allowed(served_store):
    with TestClient(create_app(served_store, ["tiny", "pics"], allow_url_queries=True, warm=False),
                    raise_server_exceptions=False) as c:
        assert_error(search(c, "tiny", url="https://example.org/a.png"), 400, "holds documents")
        assert_error(search(c, "pics", url="file:///etc/passwd"), 400, "not an http(s) URL")


def test_no_cors_unless_asked(client, served_store):
    origin = {"Origin": "https://elsewhere.example"}
    assert "access-control-allow-origin" not in client.get("/healthz", headers=origin).headers
    with TestClient(create_app(served_store, ["tiny"], cors=["https://elsewhere.example"], warm=False)) as c:
        assert c.get("/healthz", headers=origin).headers["access-control-allow-origin"] == origin["Origin"]


# -- writing -------------------------------------------------------------------------------
def test_writes_are_off_without_a_token(readonly):
    assert not readonly.get("/api/indexes/tiny").json()["writable"]
    assert_error(readonly.post("/api/indexes/tiny/items", json={"items": [{"text": "orbit"}]}, headers=AUTH), 403,
                 "--token")
    assert_error(readonly.delete("/api/indexes/tiny/items/cars%2Fdoc031.txt", headers=AUTH), 403, "RETRIEVAL_TOKEN")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}])
def test_writes_need_the_right_token(client, headers):
    response = client.post("/api/indexes/tiny/items", json={"items": [{"text": "orbit"}]}, headers=headers)
    assert_error(response, 401, "token")
    assert response.headers["www-authenticate"] == "Bearer"
    assert_error(client.delete("/api/indexes/tiny/items/cars%2Fdoc031.txt", headers=headers), 401)


def test_add_find_and_delete_a_document(client):
    before = client.get("/api/indexes/tiny").json()["items"]
    new = {"text": "orbit rocket launch nasa shuttle astronaut moon", "title": "a new one", "label": "space",
           "id": "news/launch 1"}
    report = client.post("/api/indexes/tiny/items", json={"items": [new]}, headers=AUTH).json()
    assert report["added"] == 1 and report["items"] == before + 1 and report["ids"] == ["news/launch 1"]
    assert "news/launch 1" in all_ids(client, "tiny", {"text": "orbit rocket launch nasa"})
    item = client.get("/api/indexes/tiny/items/news%2Flaunch%201").json()
    assert item["title"] == "a new one" and item["label"] == "space"
    assert_error(client.post("/api/indexes/tiny/items", json={"items": [{"text": "x", "path": "/etc/passwd"}]},
                             headers=AUTH), 422, "path")
    assert_error(client.post("/api/indexes/tiny/items", json={"items": []}, headers=AUTH), 422, "items")
    report = client.delete("/api/indexes/tiny/items/news%2Flaunch%201", headers=AUTH).json()
    assert report["removed"] == 1 and report["items"] == before
    assert "news/launch 1" not in all_ids(client, "tiny", {"text": "orbit rocket launch nasa"})
    assert_error(client.get("/api/indexes/tiny/items/news%2Flaunch%201"), 404)
    assert_error(client.delete("/api/indexes/tiny/items/news%2Flaunch%201", headers=AUTH), 404, "launch 1")


def test_add_and_delete_an_image(client, built_images):
    files = [("images", ("mine.png", png(built_images[2], "bars/bars03.png"), "image/png"))]
    report = client.post("/api/indexes/pics/items", files=files, headers=AUTH).json()
    assert report["added"] == 1
    (new_id,) = report["ids"]
    item = client.get(f"/api/indexes/pics/items/{quote(new_id, safe='')}").json()
    assert item["title"] == "mine.png" and item["path"] == "" and item["thumbnail"].endswith("/thumbnail")
    assert client.get(item["thumbnail"]).status_code == 200
    assert new_id in all_ids(client, "pics", {"like": "bars/bars03.png"})
    assert_error(client.post("/api/indexes/pics/items", files=[("images", ("x.png", b"nope", "image/png"))],
                             headers=AUTH), 400, "not an image")
    assert_error(client.post("/api/indexes/pics/items", json={"items": [{"text": "x"}]}, headers=AUTH), 400,
                 "multipart")
    assert client.delete(f"/api/indexes/pics/items/{quote(new_id, safe='')}", headers=AUTH).json()["removed"] == 1


def test_a_swap_by_another_writer_is_picked_up(client, served_store):
    """A writer in another Store object (as another process would be) swaps the index; the server sees it."""
    other = Index.open("tiny", Store(served_store.root))
    other.add([{"id": "elsewhere/1", "text": "doctor patient vaccine surgery clinic", "label": "medicine"}])
    other.close()
    assert "elsewhere/1" in all_ids(client, "tiny", {"text": "doctor patient vaccine"})
    assert client.get("/api/indexes/tiny/items/elsewhere%2F1").json()["label"] == "medicine"
    Index.open("tiny", Store(served_store.root)).remove(["elsewhere/1"])
    assert "elsewhere/1" not in all_ids(client, "tiny", {"text": "doctor patient vaccine"})


# -- the map -----------------------------------------------------------------------------
def test_the_corpus_map(client):
    deadline = time.monotonic() + 120
    response = client.get("/api/indexes/pics/map")
    while response.status_code == 202 and time.monotonic() < deadline:
        assert response.json() == {"status": "computing"}
        time.sleep(0.2)
        response = client.get("/api/indexes/pics/map")
    body = response.json()
    assert response.status_code == 200 and body["method"] == "ae"
    assert len(body["points"]) == 36 and set(body["labels"]) == {"bars", "disc", "square"}  # 40 allowed, 36 held
    point = body["points"][0]
    assert set(point) == {"id", "x", "y", "label"} and np.isfinite([point["x"], point["y"]]).all()
    assert client.get(f"/api/indexes/pics/items/{quote(point['id'], safe='')}").status_code == 200
    assert client.get("/api/indexes/pics/map").json()["points"] == body["points"]  # computed once per version


# -- the real server ----------------------------------------------------------------------------
def test_retrieval_serve_runs_and_stops(served_store):
    import httpx

    server = ServerProcess(served_store.root, ["tiny"], "--token", TOKEN)  # polls /healthz, bounded
    try:
        body = httpx.post(f"{server.url}/api/indexes/tiny/search", json={"text": "engine brake", "k": 3}).json()
        assert len(body["hits"]) == 3 and body["index"] == "tiny"
        assert httpx.get(f"{server.url}/api/indexes").json()["indexes"][0]["writable"]
        assert httpx.get(f"{server.url}/api/indexes/pics").status_code == 404  # only the index named is served
    finally:
        server.stop()  # by PID: SIGTERM, then SIGKILL
    assert server.process.returncode is not None


def test_serve_refuses_a_missing_index(served_store):
    result = subprocess.run([sys.executable, "-m", "retrieval", "serve", "nope", "--index-dir", str(served_store.root)],
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and result.stderr.startswith("error:") and "nope" in result.stderr


def test_help_does_not_import_the_server():
    code = ("import sys; from typer.testing import CliRunner; from retrieval.cli import app; "
            "r = CliRunner().invoke(app, ['serve', '--help']); assert r.exit_code == 0, r.output; "
            "assert '--allow-url-queries' in r.output; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn', 'starlette')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
