"""Image indexes end to end: build, query by path / bytes / id, contact sheet, evaluate, CLI."""
import json
import sys

import numpy as np
import pytest
from PIL import Image

import cli
from retrieval import Retriever, run_evaluation
from retrieval.api import search
from retrieval.errors import InputError
from conftest import synthetic_images


@pytest.fixture(scope="module")
def retriever(built_images):
    store, name, _ = built_images
    return Retriever(name, store)


def test_manifest(built_images):
    store, name, _ = built_images
    m = store.read_manifest(name)
    assert m["modality"] == "images" and m["counts"]["items"] == 36
    assert m["images"] == {"size": 16, "color": "rgb", "fit": "pad"}
    assert set(m["methods"]) == {"ae", "pca", "pixels"}
    assert m["methods"]["pixels"]["metric"] == "l2"
    # 4 float32 per image against 16*16*3 float32: the codes are far smaller
    assert m["methods"]["ae"]["bytes_per_item"] * 20 <= m["methods"]["pixels"]["bytes_per_item"]


@pytest.mark.parametrize("method", ["ae", "pca", "pixels"])
def test_query_by_path_finds_itself_first(retriever, built_images, method):
    _, _, root = built_images
    hits = retriever.search(root / "disc" / "disc03.png", k=5, method=method)
    assert hits[0].id == "disc/disc03.png"
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    if method == "pixels":
        assert hits[0].score == pytest.approx(0, abs=1e-3)  # minus the L2 distance to itself


def test_query_like_and_bytes(retriever, built_images):
    _, _, root = built_images
    hits = retriever.like("bars/bars01.png", k=3, method="pixels")
    assert "bars/bars01.png" not in [h.id for h in hits]
    data = (root / "square" / "square02.png").read_bytes()
    assert retriever.search(data, k=1, method="pixels")[0].id == "square/square02.png"


def test_text_query_on_image_index_is_refused(retriever):
    with pytest.raises(InputError, match="holds images"):
        retriever.search("a red square")


def test_bad_query_images(retriever, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        retriever.search(tmp_path / "missing.png")
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image")
    with pytest.raises(InputError):
        retriever.search(fake)


def test_contact_sheet(built_images, tmp_path):
    store, name, root = built_images
    out = tmp_path / "sheet.png"
    hits = search(store, name, str(root / "disc" / "disc00.png"), k=6, show=out).hits
    assert len(hits) == 6
    with Image.open(out) as sheet:
        assert sheet.width > 96 * 3 and sheet.height >= 96


def test_evaluate_images(built_images, tmp_path):
    store, name, _ = built_images
    queries = tmp_path / "q"
    synthetic_images(queries, n_per_class=3, seed=5)
    report = run_evaluation(store, name, str(queries), labels_from_folders=True, k=5)
    assert report["queries"] == 9 and set(report["methods"]) == {"ae", "pca", "pixels"}
    assert report["methods"]["pixels"]["precision@5"] >= 0.6  # shapes differ clearly in pixel space
    assert all(r["query_ms_p50"] > 0 for r in report["methods"].values())


def test_cli_images(monkeypatch, capsys, tmp_path):
    root = tmp_path / "imgs"
    synthetic_images(root, n_per_class=6)
    (root / "disc" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    monkeypatch.setattr(sys, "argv", ["retrieval", "index", "images", str(root), "--name", "im", "--size", "16",
                                      "--code-dim", "4", "--filters", "4,8", "--epochs", "1",
                                      "--labels-from-folders", "--json"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    captured = capsys.readouterr()
    assert e.value.code == 0, captured.err
    assert json.loads(captured.out)["counts"] == {"items": 18, "skipped": 1, "labelled": 18, "labels": 3}
    assert "broken.png" in captured.err
    sheet = tmp_path / "n.png"
    monkeypatch.setattr(sys, "argv", ["retrieval", "query", "im", str(root / "bars" / "bars00.png"), "-k", "4",
                                      "--show", str(sheet), "--json"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 0 and len(json.loads(capsys.readouterr().out)) == 4 and sheet.exists()


def test_idx_source(tmp_path):
    import gzip

    from retrieval import ImagesConfig, Store, build_images_index

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 12, 12), dtype=np.uint8)
    labels = np.repeat(np.arange(3, dtype=np.uint8), 10)
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(b"\x00\x00\x08\x03" + np.array([30, 12, 12], ">i4").tobytes() + images.tobytes())
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(b"\x00\x00\x08\x01" + np.array([30], ">i4").tobytes() + labels.tobytes())
    store = Store(tmp_path / "home")
    m = build_images_index(tmp_path / "train-images-idx3-ubyte.gz", "idx",
                           ImagesConfig(code_dim=3, filters=(4,), epochs=1), store=store)
    assert m["counts"]["items"] == 30 and m["counts"]["labels"] == 3 and m["images"]["size"] == 12


def test_query_by_url(retriever, built_images):
    """Query images are downloaded with the crawler's guards (local server, no network)."""
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    _, _, root = built_images
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        hits = retriever.search(f"{base}/square/square05.png", k=1, method="pixels")
        assert hits[0].id == "square/square05.png"
        from retrieval.errors import FetchError

        with pytest.raises(FetchError):
            retriever.search(f"{base}/square/missing.png", k=1)
    finally:
        server.shutdown()
        server.server_close()
