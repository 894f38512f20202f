"""The command line's options: entry points, --version, typed choices, defaults taken from the library."""
import ast
import dataclasses
import enum
import importlib
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import retrieval
from retrieval import api, config
from retrieval import cli
from retrieval.config import DocsConfig, ImagesConfig
from retrieval.errors import InputError
from test_cli import run

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("index", "query", "evaluate", "add", "remove-items", "sync", "retrain", "outliers", "list", "info",
            "remove", "plot", "crawl", "demo")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def wide(monkeypatch):
    """Help tables one row per option, no colour codes."""
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("NO_COLOR", "1")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _help(monkeypatch, capsys, *command) -> str:
    code, out, err = run(monkeypatch, capsys, *command, "--help")
    assert code == 0, err
    return ANSI.sub("", out)


def _option_line(text: str, option: str) -> str:
    lines = [line for line in text.splitlines() if re.search(rf"{re.escape(option)}(\s|$)", line)]
    assert lines, f"{option} not in help:\n{text}"
    return lines[0]


# -- entry points ---------------------------------------------------------------------
def test_version(monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "--version")
    assert code == 0, err
    assert out == f"retrieval {retrieval.__version__}\n"
    assert "version" in _pyproject()["project"]["dynamic"]  # read from retrieval.__version__, defined once
    from importlib.metadata import version

    assert version("retrieval") == retrieval.__version__


@pytest.mark.parametrize("entry", [["-m", "retrieval"], ["cli.py"]], ids=["python -m retrieval", "python cli.py"])
def test_entry_points_in_a_subprocess(entry):
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("RETRIEVAL_HOME", None)
    done = subprocess.run([sys.executable, *entry, "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    listed = re.findall(r"^\W*([a-z][a-z-]+)\s{2,}\S", ANSI.sub("", done.stdout), re.M)
    assert set(COMMANDS) <= set(listed), done.stdout


def test_shim_and_package_share_one_app():
    import cli as shim

    assert shim.main is cli.main and shim.app is cli.app


def test_pyproject_entry_points_and_pytest_options():
    project = _pyproject()
    assert project["project"]["scripts"] == {"retrieval": "retrieval.cli:main"}
    module, _, function = project["project"]["scripts"]["retrieval"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    setuptools = project["tool"]["setuptools"]
    assert "py-modules" not in setuptools  # no top-level `cli` module in site-packages
    # The only package data is the search page; every pattern must match shipped files.
    assert setuptools["package-data"] == {"retrieval.server": ["static/*"]}
    assert {p.name for p in (ROOT / "retrieval" / "server" / "static").glob("*")} >= {"index.html", "app.js", "style.css"}
    assert not (ROOT / "retrieval" / "data").exists()
    pytest_options = project["tool"]["pytest"]["ini_options"]
    # `python -m pytest -q` (README, .ci) must print its "N passed" line: no second -q here.
    assert "-q" not in pytest_options.get("addopts", "").split()
    assert "ignore::DeprecationWarning" in pytest_options["filterwarnings"]


# -- choice options --------------------------------------------------------------------
@pytest.mark.parametrize("args, bad", [
    (["index", "images", ".", "--name", "x", "--color", "purple"], "purple"),
    (["index", "images", ".", "--name", "x", "--fit", "stretch"], "stretch"),
    (["index", "images", ".", "--name", "x", "--decoder", "conv"], "conv"),
    (["index", "docs", ".", "--name", "x", "--index", "foo"], "foo"),
    (["index", "docs", ".", "--name", "x", "--pretrain", "greedy"], "greedy"),
    (["index", "docs", ".", "--name", "x", "--strip", "html"], "html"),
    (["query", "x", "hello", "--rerank", "bm25"], "bm25"),
    (["evaluate", "x", "--queries", ".", "--strip", "html"], "html"),
    (["evaluate", "x", "--queries", ".", "--query-field", "body"], "body"),
    (["demo", "--part", "everything"], "everything"),
])
def test_bad_choice_is_a_usage_error(monkeypatch, capsys, wide, args, bad):
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert "Invalid value" in err and repr(bad) in err and "Traceback" not in err


@pytest.mark.parametrize("command, option, allowed", [
    (["index", "docs"], "--index", config.INDEX_KINDS),
    (["index", "docs"], "--pretrain", config.PRETRAIN_MODES),
    (["index", "docs"], "--strip", config.STRIP_MODES),
    (["index", "images"], "--index", config.INDEX_KINDS),
    (["index", "images"], "--color", config.COLORS),
    (["index", "images"], "--fit", config.FITS),
    (["index", "images"], "--decoder", config.DECODERS),
    (["query"], "--rerank", config.RERANKERS),
    (["evaluate"], "--query-field", config.QUERY_FIELDS),
    (["demo"], "--part", config.DEMO_PARTS),
])
def test_help_lists_the_allowed_values(monkeypatch, capsys, wide, command, option, allowed):
    assert "|".join(allowed) in _option_line(_help(monkeypatch, capsys, *command), option)


def test_docs_help_shows_the_config_defaults(monkeypatch, capsys, wide):
    text = _help(monkeypatch, capsys, "index", "docs")
    assert f"[default: {DocsConfig().vocab_size}]" in _option_line(text, "--vocab-size")
    assert DocsConfig().vocab_size == 10_000
    assert f"[default: {','.join(map(str, DocsConfig().hidden))}]" in _option_line(text, "--hidden")
    assert f"[default: {DocsConfig().index_kind}]" in _option_line(text, "--index")
    assert f"[default: {DocsConfig().binary_epochs}]" in _option_line(text, "--binary-epochs")
    images = _help(monkeypatch, capsys, "index", "images")
    assert f"[default: {ImagesConfig().epochs}]" in _option_line(images, "--epochs")
    assert f"[default: {ImagesConfig().binary_epochs}]" in _option_line(images, "--binary-epochs")
    assert f"[default: {ImagesConfig().patience}]" in _option_line(images, "--patience")
    assert f"[default: {api.CrawlConfig().max_pages}]" in _option_line(images, "--max-pages")
    query = _help(monkeypatch, capsys, "query")
    assert f"[default: {config.DEFAULT_K}]" in _option_line(query, "-k")
    assert f"[default: {config.DEFAULT_SHORTLIST}]" in _option_line(query, "--shortlist")


# -- defaults defined once -----------------------------------------------------------------
def _params(*path):
    import typer.main

    command = typer.main.get_command(cli.app)
    for name in path:
        command = command.commands[name]
    return {p.name: p.default for p in command.params}


def _plain(value):
    if isinstance(value, enum.Enum):
        return value.value
    return value


@pytest.mark.parametrize("path, config_class", [(("index", "docs"), DocsConfig),
                                                (("index", "images"), ImagesConfig),
                                                (("crawl",), api.CrawlConfig)])
def test_build_option_defaults_are_the_configs(path, config_class):
    defaults = _params(*path)
    reference = config_class()
    checked = 0
    for field in dataclasses.fields(config_class):
        if field.name not in defaults:
            continue
        expected = getattr(reference, field.name)
        if config_class is not api.CrawlConfig:  # resolved in __post_init__; the CLI passes None for "all"
            expected = field.default
        value = _plain(defaults[field.name])
        if isinstance(expected, tuple):
            expected = ",".join(map(str, expected))
        assert value == expected, field.name
        checked += 1
    assert checked >= 5
    # Every valued option of the command is one of the config's (or, for a URL source, the crawl's).
    # Run options, not the index's: the crawl's page limit and where a build encodes (config.ENGINES).
    names = {f.name for f in dataclasses.fields(config_class)} | {"max_pages", "engine"}
    valued = {name for name, value in defaults.items() if value is not None and not isinstance(value, bool)}
    assert valued <= names
    if config_class is api.CrawlConfig:
        assert defaults["no_robots"] is (not reference.respect_robots)
    else:
        assert defaults["labels_from_folders"] is reference.labels_from_folders
        assert defaults["keep_inputs"] is reference.keep_inputs
        assert _plain(defaults["engine"]) == config.ENGINES[0] == "local"


def test_query_time_defaults_are_the_config_constants():
    assert _params("query")["k"] == config.DEFAULT_K
    assert _params("query")["shortlist"] == config.DEFAULT_SHORTLIST
    assert _params("evaluate")["k"] == config.EVALUATE_K
    assert _params("evaluate")["shortlist"] == config.DEFAULT_SHORTLIST
    assert _params("outliers")["k"] == config.OUTLIERS_K
    assert _params("plot")["max_items"] == config.MAP_MAX_ITEMS
    assert _params("plot")["epochs"] == config.MAP_EPOCHS
    assert _plain(_params("demo")["part"]) == config.DEMO_PARTS[0]


def test_cli_source_has_no_literal_defaults():
    """A command's option defaults name the library's values; only flags default to a literal."""
    source = (ROOT / "retrieval" / "cli.py").read_text()
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and any("command" in ast.unparse(d) for d in node.decorator_list):
            for arg, default in zip(node.args.args[-len(node.args.defaults):], node.args.defaults):
                if isinstance(default, ast.Constant) and not isinstance(default.value, (bool, type(None))):
                    bad.append(f"{node.name}({arg.arg}={default.value!r})")
    assert not bad


def test_choice_lists_are_defined_once():
    """No module but retrieval/config.py spells out a choice list of the options."""
    lists = [config.INDEX_KINDS, config.STRIP_MODES, config.PRETRAIN_MODES, config.COLORS, config.FITS,
             config.DECODERS, config.DEMO_PARTS, config.RERANKERS_DOCS, config.RERANKERS_IMAGES]
    spelled = {name: [repr(tuple(values)), repr(list(values))] for name, values in
               zip(("INDEX_KINDS", "STRIP_MODES", "PRETRAIN_MODES", "COLORS", "FITS", "DECODERS", "DEMO_PARTS",
                    "RERANKERS_DOCS", "RERANKERS_IMAGES"), lists)}
    found = []
    for path in sorted((ROOT / "retrieval").rglob("*.py")):
        if path.name == "config.py" and path.parent.name == "retrieval":
            continue
        text = path.read_text()
        found += [f"{path.relative_to(ROOT)}: {name}" for name, forms in spelled.items()
                  if any(form in text for form in forms)]
    assert not found


# -- config validation -------------------------------------------------------------------
@pytest.mark.parametrize("make, bad, allowed", [
    (lambda: DocsConfig(strip="html"), "'html'", config.STRIP_MODES),
    (lambda: DocsConfig(pretrain="greedy"), "'greedy'", config.PRETRAIN_MODES),
    (lambda: DocsConfig(index_kind="annoy"), "'annoy'", config.INDEX_KINDS),
    (lambda: ImagesConfig(color="purple"), "'purple'", config.COLORS),
    (lambda: ImagesConfig(fit="stretch"), "'stretch'", config.FITS),
    (lambda: ImagesConfig(decoder="conv"), "'conv'", config.DECODERS),
    (lambda: ImagesConfig(index_kind="annoy"), "'annoy'", config.INDEX_KINDS),
], ids=["docs-strip", "docs-pretrain", "docs-index", "images-color", "images-fit", "images-decoder",
        "images-index"])
def test_config_rejects_unknown_choices(make, bad, allowed):
    with pytest.raises(InputError) as info:
        make()
    message = str(info.value)
    assert bad in message and ", ".join(allowed) in message


@pytest.mark.parametrize("field, values", [("strip", (None, "", "none") + config.STRIP_MODES),
                                           ("pretrain", config.PRETRAIN_MODES),
                                           ("index_kind", config.INDEX_KINDS)])
def test_docs_config_accepts_every_allowed_choice(field, values):
    for value in values:
        assert getattr(DocsConfig(**{field: value}), field) == value


@pytest.mark.parametrize("field, values", [("color", config.COLORS), ("fit", config.FITS),
                                           ("decoder", config.DECODERS), ("index_kind", config.INDEX_KINDS)])
def test_images_config_accepts_every_allowed_choice(field, values):
    for value in values:
        assert getattr(ImagesConfig(**{field: value}), field) == value


def test_images_config_rejects_a_patience_below_one_epoch():
    with pytest.raises(InputError, match="--patience must be >= 1 epoch; got 0"):
        ImagesConfig(patience=0)


def test_rerankers_of_both_modalities():
    assert set(config.RERANKERS) == set(config.RERANKERS_DOCS) | set(config.RERANKERS_IMAGES)


# -- warnings and OS errors ---------------------------------------------------------------
def test_other_warnings_are_one_line(monkeypatch, capsys):
    def list_indexes(store):
        warnings.warn("plain warning about [draft].txt\nand a second line", UserWarning)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("old api", DeprecationWarning)
        return []

    monkeypatch.setattr(api, "list_indexes", list_indexes)
    code, out, err = run(monkeypatch, capsys, "list", "--json")
    assert code == 0 and out.strip() == "[]"
    lines = err.strip().splitlines()
    assert lines == ["warning: UserWarning: plain warning about [draft].txt and a second line"]


def test_retrieval_warnings_keep_their_text(monkeypatch, capsys):
    def list_indexes(store):
        warnings.warn("skipped [x].txt: binary file", retrieval.RetrievalWarning)
        return []

    monkeypatch.setattr(api, "list_indexes", list_indexes)
    code, _, err = run(monkeypatch, capsys, "list", "--json")
    assert code == 0 and err.strip() == "warning: skipped [x].txt: binary file"


@pytest.mark.parametrize("exc, line", [
    (PermissionError(13, "Permission denied", "/ro/indexes/c"), "error: Permission denied: /ro/indexes/c"),
    (OSError(28, "No space left on device"), "error: No space left on device"),
    (OSError(18, "Invalid cross-device link", "/a", None, "/b"), "error: Invalid cross-device link: /a -> /b"),
])
def test_os_errors_are_one_line_exit_1(monkeypatch, capsys, exc, line):
    def list_indexes(store):
        raise exc

    monkeypatch.setattr(api, "list_indexes", list_indexes)
    code, _, err = run(monkeypatch, capsys, "list")
    assert code == 1 and err.strip() == line


def test_error_text_is_not_rich_markup(monkeypatch, capsys):
    def list_indexes(store):
        raise InputError("bad file [draft].txt")

    monkeypatch.setattr(api, "list_indexes", list_indexes)
    code, _, err = run(monkeypatch, capsys, "list")
    assert code == 1 and err.strip() == "error: bad file [draft].txt"
