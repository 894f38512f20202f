"""Near-duplicate finding: planted copies found, a new file checked, JSON and sheet output, bad input refused."""
from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from retrieval import Index, Store, build_docs_index, build_images_index
from retrieval.errors import InputError
from retrieval.search.duplicates import (ALIGNMENTS, CANDIDATE_ALIGNMENTS, _grey, _normalise, _sampler,
                                         aligned_scores, check_ratio, check_threshold, components,
                                         duplicate_mask, image_signatures, photometric_ok, image_stats,
                                         reference_scores)
from conftest import TINY_DOCS, TINY_IMAGES, synthetic_docs, write_corpus
from test_cli import run

SIDE = 32
#: Planted copies: (original, edit).
PLANTED = {"img03": "brightness", "img11": "shift", "img17": "jpeg", "img25": "crop"}


def smooth_image(rng) -> np.ndarray:
    """A distinct picture: colour noise on a 5 x 5 grid, enlarged smoothly."""
    small = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((SIDE, SIDE), Image.BICUBIC))


def edit(img: np.ndarray, kind: str) -> bytes:
    pil = Image.fromarray(img)
    buf = io.BytesIO()
    if kind == "jpeg":
        pil.save(buf, format="JPEG", quality=60)
        return buf.getvalue()
    if kind == "brightness":
        pil = ImageEnhance.Brightness(pil).enhance(0.75)
    elif kind == "shift":
        pil = Image.fromarray(np.roll(img, 1, axis=1))
    elif kind == "crop":
        pil = pil.crop((1, 1, SIDE - 1, SIDE - 2))
    pil.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A tiny image index with four planted copies: (store, name, folder, a new image, a copy not indexed)."""
    rng = np.random.default_rng(3)
    base = tmp_path_factory.mktemp("dups")
    folder = base / "images"
    folder.mkdir()
    images = {f"img{i:02d}": smooth_image(rng) for i in range(36)}
    for name, img in images.items():
        Image.fromarray(img).save(folder / f"{name}.png")
    for name, kind in PLANTED.items():
        (folder / f"{name}-{kind}.{'jpg' if kind == 'jpeg' else 'png'}").write_bytes(edit(images[name], kind))
    new = base / "new.png"
    Image.fromarray(smooth_image(rng)).save(new)
    copy = base / "copy-of-img30.png"
    copy.write_bytes(edit(images["img30"], "brightness"))
    store = Store(base / "home")
    config = replace(TINY_IMAGES, labels_from_folders=False, size=24, fit="crop", baselines=())
    build_images_index(folder, "pics", config, store=store)
    return store, "pics", folder, new, copy


def test_signatures_ignore_brightness_and_alignment_absorbs_a_shift():
    rng = np.random.default_rng(0)
    img = smooth_image(rng)[None]
    darker = np.clip(img.astype(np.float32) * 0.7, 0, 255).astype(np.uint8)
    other = smooth_image(rng)[None]
    plain = image_signatures(np.concatenate([img, darker, other]))[:, 0]
    assert plain.shape == (3, 256) and np.allclose(np.linalg.norm(plain, axis=1), 1, atol=1e-5)
    assert plain[0] @ plain[1] > 0.99 and plain[0] @ plain[2] < 0.9
    shifted = np.roll(img, 2, axis=2)
    both = np.concatenate([img, shifted])
    plain2 = image_signatures(both)[:, 0]
    aligned = aligned_scores(both, plain2, np.array([[0, 1]]))
    assert aligned[0] > plain2[0] @ plain2[1]  # an alignment fits better than none
    assert len(ALIGNMENTS) == 75 and ALIGNMENTS[0] == (1.0, 0.0, 0.0)
    # a smooth gradient correlates with any other; their contrasts tell them apart
    stats = image_stats(np.concatenate([img, darker, (img // 4) + 100]))
    assert photometric_ok(stats[0], stats[1]) and not photometric_ok(stats[0], stats[2])


def test_signatures_of_many_alignments_match_one_at_a_time():
    rng = np.random.default_rng(1)
    pixels = np.stack([smooth_image(rng) for _ in range(3)])
    grey = _grey(pixels)
    for alignments in (ALIGNMENTS, CANDIDATE_ALIGNMENTS):
        together = image_signatures(pixels, alignments)
        for a, (zoom, dy, dx) in enumerate(alignments):
            alone = _normalise(_sampler(SIDE, zoom, dy) @ grey @ _sampler(SIDE, zoom, dx).T)
            np.testing.assert_allclose(together[:, a], alone, atol=1e-5)
    flat = np.full((1, SIDE, SIDE, 3), 90, np.uint8)
    assert not image_signatures(flat, ALIGNMENTS).any()  # one colour: nothing to correlate


def test_ratio_test_adapts_to_the_neighbourhood():
    # 0-2: an original and two copies among look-alikes 3-5 (small garments); 6-7: a photo and its JPEG copy
    # among distant neighbours 8-10
    scored = {(0, 1): 0.9995, (0, 2): 0.9990, (1, 2): 0.9990, (6, 7): 0.970}
    scored.update({(a, b): 0.9965 for a in range(6) for b in range(max(a + 1, 3), 6)})
    scored.update({(a, b): 0.6 - 0.05 * (b - 8) for a in (6, 7) for b in (8, 9, 10)})
    pairs = np.array(list(scored))
    scores = np.array(list(scored.values()), np.float32)
    ref = reference_scores(11, pairs, scores, rank=3)
    assert ref[0] == np.float32(0.9965) and ref[6] == np.float32(0.55)
    reference = np.minimum(ref[pairs[:, 0]], ref[pairs[:, 1]])
    found = {tuple(p) for p in pairs[duplicate_mask(scores, reference, threshold=0.93, ratio=0.5, certain=1.0)]}
    # the copies pass though their look-alikes score 0.9965; the look-alikes do not; the photo pair passes at 0.97
    assert found == {(0, 1), (0, 2), (1, 2), (6, 7)}
    # with the 2nd best candidate as the reference, the second copy vetoes the first
    ref2 = reference_scores(11, pairs, scores, rank=2)
    vetoed = duplicate_mask(scores, np.minimum(ref2[pairs[:, 0]], ref2[pairs[:, 1]]), 0.93, 0.5, 1.0)
    assert not vetoed[list(scored).index((0, 2))]
    # ratio 0: the floor alone decides; a certain score passes whatever the neighbours
    floor_only = {tuple(p) for p in pairs[duplicate_mask(scores, reference, 0.99, 0.0, 1.0)]}
    assert floor_only == {p for p, v in scored.items() if v >= 0.99}
    assert duplicate_mask(scores[:3], np.full(3, 0.9999, np.float32), 0.93, 0.5, 0.999).all()
    assert not duplicate_mask(scores[:3], np.full(3, 0.9999, np.float32), 0.93, 0.5, 1.0).any()
    assert check_ratio("0") == 0 and check_ratio(0.25) == 0.25 and reference_scores(3, pairs[:0], scores[:0]).sum() == 0


def test_components_group_chains():
    groups = components(6, np.array([[0, 1], [1, 2], [4, 5]]))
    assert [g.tolist() for g in groups] == [[0, 1, 2], [4, 5]]
    assert components(3, np.zeros((0, 2))) == []


def test_planted_copies_are_grouped(planted):
    store, name, *_ = planted
    found = Index.open(name, store).duplicates()
    pairs = {frozenset(d.id for d in g) for g in found.groups}
    expected = {frozenset({f"{n}.png", f"{n}-{k}.{'jpg' if k == 'jpeg' else 'png'}"}) for n, k in PLANTED.items()}
    assert expected <= pairs, found.groups
    assert len(found.groups) <= len(PLANTED) + 1  # the distinct pictures stay apart
    assert found.items == 40 and found.candidates_checked > 0
    strict = Index.open(name, store).duplicates(threshold=1.0)
    assert sum(len(g) for g in strict.groups) < sum(len(g) for g in found.groups)
    floor_only = Index.open(name, store).duplicates(ratio=0)  # the ratio test only removes pairs
    assert {(a, b) for a, b, _ in found.pairs} <= {(a, b) for a, b, _ in floor_only.pairs}
    assert found.ratio > 0 and floor_only.ratio == 0


def test_check_one_file(planted):
    store, name, folder, new, copy = planted
    idx = Index.open(name, store)
    hit = idx.check_duplicate(str(copy))
    assert [m.id for m in hit.matches][:1] == ["img30.png"] and hit.matches[0].score >= hit.threshold
    assert idx.check_duplicate(str(new)).matches == []
    again = idx.check_duplicate(str(folder / "img03.png"))  # an indexed file finds itself and its copy
    assert {m.id for m in again.matches} >= {"img03.png", "img03-brightness.png"}


def test_cli_json_show_and_check(planted, monkeypatch, capsys, tmp_path):
    store, name, folder, new, copy = planted
    home = str(store.root)
    sheet = tmp_path / "sheet.png"
    code, out, err = run(monkeypatch, capsys, "duplicates", name, "--index-dir", home, "--json", "--show", sheet)
    assert code == 0, err
    data = json.loads(out)
    assert data["items"] == 40 and len(data["groups"]) >= len(PLANTED)
    assert {"id", "score", "position", "label", "title", "path"} <= set(data["groups"][0][0])
    assert Image.open(sheet).size[1] >= 64 * len(data["groups"])
    code, out, err = run(monkeypatch, capsys, "duplicates", name, "--index-dir", home, "--check", copy, "--json")
    assert code == 0, err
    checked = json.loads(out)
    assert checked["duplicate"] is True and checked["matches"][0]["id"] == "img30.png"
    code, out, _ = run(monkeypatch, capsys, "duplicates", name, "--index-dir", home, "--check", new)
    assert code == 0 and "no near-duplicate" in out
    code, out, _ = run(monkeypatch, capsys, "duplicates", name, "--index-dir", home, "--radius", "0.5")
    assert code == 0 and "groups of near-duplicates" in out
    code, out, _ = run(monkeypatch, capsys, "duplicates", name, "--index-dir", home, "--ratio", "0", "--json")
    assert code == 0 and json.loads(out)["ratio"] == 0


@pytest.mark.parametrize("args, message", [
    (["--threshold", "1.5"], "--threshold must be in (0, 1]"),
    (["--threshold", "0"], "--threshold must be in (0, 1]"),
    (["--radius", "-1"], "--radius must be positive"),
    (["--candidates", "0"], "--candidates must be a positive number"),
    (["--ratio", "-0.1"], "--ratio must be >= 0"),
    (["--check", "missing.png"], "does not exist"),
    (["--check", "x.png", "--radius", "0.2"], "--radius applies to whole-index groups"),
])
def test_cli_errors(planted, monkeypatch, capsys, args, message):
    store, name, *_ = planted
    code, out, err = run(monkeypatch, capsys, "duplicates", name, "--index-dir", str(store.root), *args)
    assert code == 1 and err.startswith("error:") and message in err, err


def test_index_without_inputs_and_documents(tmp_path, monkeypatch, capsys):
    store = Store(tmp_path / "home")
    docs = synthetic_docs(n_per_topic=8)
    docs.append(docs[0])  # an exact duplicate text
    write_corpus(tmp_path / "docs", docs)
    build_docs_index(tmp_path / "docs", "notes", TINY_DOCS, store=store)
    found = Index.open("notes", store).duplicates(threshold=0.9)
    twin = {"space/doc000.txt", f"space/doc{len(docs) - 1:03d}.txt"}
    assert any(twin <= {d.id for d in g} for g in found.groups), found.groups
    assert sum(len(g) for g in found.groups) < len(docs) // 2  # distinct texts are not duplicates
    # the text without its title line: doc000 is the best match; the floor alone (ratio 0) takes both twins
    checked = Index.open("notes", store).check_duplicate(docs[0][1], threshold=0.9)
    assert checked.matches[0].id == "space/doc000.txt" and checked.ratio > 0
    loose = Index.open("notes", store).check_duplicate(docs[0][1], threshold=0.9, ratio=0)
    assert {m.id for m in loose.matches} >= twin and loose.ratio == 0
    code, _, err = run(monkeypatch, capsys, "duplicates", "notes", "--index-dir", str(store.root), "--show", "x.png")
    assert code == 1 and "--show draws images" in err
    write_corpus(tmp_path / "d2", synthetic_docs(n_per_topic=8))
    config = replace(TINY_DOCS, keep_inputs=False)
    build_docs_index(tmp_path / "d2", "bare", config, store=store)
    with pytest.raises(InputError, match="without keeping"):
        Index.open("bare", store).duplicates()
    with pytest.raises(InputError, match="threshold"):
        check_threshold("high")
