"""Saved Keras models (``.keras`` archives) run in NumPy: no TensorFlow, no Keras.

A ``.keras`` file is a zip holding ``config.json`` (the functional model: its
layers with class name, config and inbound nodes) and ``model.weights.h5``
(each layer's variables as ``layers/<key>/vars/<i>``, the layer's name in the
``name`` attribute of ``vars``). Loading it with Keras costs seconds of
TensorFlow start-up and hundreds of MB for a query that then takes a
millisecond. Keras' own NumPy backend is no way out: the backend is chosen
once per process (training needs TensorFlow) and Keras still takes about a
second to import. The layers this project saves (see ``models.py``) are a few
lines of NumPy each, so they are written here; a layer outside that set
raises :class:`Unsupported` and the caller loads the model with Keras instead.

Every operation is vectorised over the batch: convolutions by strided
windows (``sliding_window_view``) and one ``tensordot``, transposed
convolutions by one product per kernel tap. A model is run as the graph
its config describes (several inputs, layers fed by earlier layers): the
``unpool`` decoder takes the code and the encoder's activations before each
pooling, and :meth:`Graph.run` returns those activations from the encoder.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from numpy.lib.stride_tricks import sliding_window_view

#: Layers that are the identity at inference (noise and augmentation act in training only).
_IDENTITY = frozenset({"InputLayer", "Dropout", "GaussianNoise", "GaussianDropout", "SpatialDropout1D",
                       "SpatialDropout2D", "RandomTranslation", "RandomFlip", "RandomRotation", "RandomZoom"})

Op = Callable[..., np.ndarray]


class Unsupported(Exception):
    """A saved model that this module cannot run exactly; the message names the layer and why."""


class Graph:
    """A saved Keras model as NumPy operations in topological order.

    Args:
        name: The model's name (``encoder``, ``decoder``).
        ops: ``(layer name, operation, source layer names)`` in order; each
            operation takes its sources' outputs.
        inputs: The input layers' names, in the order the model takes them.
        output: The output layer's name.
        batch: Rows run at once (bounds the memory of convolution windows).

    Attributes:
        pool_inputs: The layers feeding each ``MaxPooling2D``, in order: the
            references an ``unpool`` decoder takes (see :meth:`run`).
        input_shapes: Each input's shape without the batch axis (None entries unknown).
    """

    def __init__(self, name: str, ops: list[tuple[str, Op, list[str]]], inputs: list[str], output: str,
                 batch: int = 256, pool_inputs: list[str] | None = None,
                 input_shapes: list[tuple] | None = None) -> None:
        self.name, self.ops, self.inputs, self.output, self.batch = name, ops, inputs, output, batch
        self.pool_inputs = pool_inputs or []
        self.input_shapes = input_shapes or [() for _ in inputs]

    def __call__(self, *X) -> np.ndarray:
        """Run the inputs (sparse CSR rows, or dense float arrays) through the model: float32 outputs.

        Sparse rows stay sparse until the first Dense layer, whose product then
        touches only their non-zero terms.
        """
        return self.run(*X)[0]

    def run(self, *X, outputs: list[str] | None = None) -> list[np.ndarray]:
        """The outputs of the layers named in ``outputs`` (default: the model's output) for inputs ``X``."""
        if len(X) != len(self.inputs):
            raise ValueError(f"model {self.name!r} takes {len(self.inputs)} inputs; got {len(X)}")
        wanted = outputs or [self.output]
        n = X[0].shape[0]
        if 0 < n <= self.batch:  # one batch (a query): no slicing copy
            return self._run(list(X), wanted)
        parts = [self._run([x[start:start + self.batch] for x in X], wanted) for start in range(0, n, self.batch)]
        if not parts:
            return self._run([x[:0] for x in X], wanted)
        return [p[0] if len(parts) == 1 else np.concatenate(p) for p in zip(*parts)]

    def _run(self, X: list, wanted: list[str]) -> list[np.ndarray]:
        values = {name: (h if h.dtype == np.float32 else h.astype(np.float32)) if sp.issparse(h)
                  else np.asarray(h, dtype=np.float32) for name, h in zip(self.inputs, X)}
        kept = set(wanted)
        last_use = {source: i for i, (_, _, sources) in enumerate(self.ops) for source in sources}
        for i, (name, op, sources) in enumerate(self.ops):
            values[name] = op(*(values[source] for source in sources))
            for source in sources:  # free what no later layer reads (convolution maps are large)
                if last_use[source] == i and source not in kept:
                    del values[source]
        return [_dense(values[name]) for name in wanted]


def load(path: Path) -> Graph:
    """Read a ``.keras`` archive into a :class:`Graph`.

    Raises:
        Unsupported: A layer, option or topology this module does not run.
        OSError, KeyError, ValueError, zipfile.BadZipFile: A missing or corrupt archive.
    """
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
        weights = read_weights(archive.read("model.weights.h5"))
    return from_config(config, weights)


def read_weights(h5_bytes: bytes) -> dict[str, list[np.ndarray]]:
    """Each layer's variables from ``model.weights.h5``, keyed by layer name and by storage key."""
    import h5py  # only here: reading a model is the one use

    found: dict[str, list[np.ndarray]] = {}
    with h5py.File(io.BytesIO(h5_bytes), "r") as f:
        for key, group in f.get("layers", {}).items():
            variables = group.get("vars")
            if variables is None:
                continue
            arrays = [np.asarray(variables[str(i)][()]) for i in range(len(variables))]
            found[f"key:{key}"] = arrays
            name = variables.attrs.get("name")
            if name is not None:
                found[name.decode() if isinstance(name, bytes) else str(name)] = arrays
    return found


def _snake(name: str) -> str:
    # Keras' naming.to_snake_case: the storage key of an unnamed layer's variables.
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def from_config(config: dict, weights: dict[str, list[np.ndarray]]) -> Graph:
    """Build the :class:`Graph` of a functional model's config and its layers' variables."""
    if config.get("class_name") not in ("Functional", "Model", "Sequential"):
        raise Unsupported(f"model class {config.get('class_name')!r}")
    model = config.get("config", {})
    layers = model.get("layers", [])
    ops: list[tuple[str, Op, list[str]]] = []
    inputs: list[str] = []
    pool_inputs: list[str] = []
    shapes: dict[str, tuple] = {}
    seen: set[str] = set()
    used_keys: dict[str, int] = {}
    for layer in layers:
        cls, name, cfg = layer.get("class_name"), layer.get("name") or layer["config"].get("name"), layer["config"]
        base = _snake(cls)
        count = used_keys.get(base, 0)
        used_keys[base] = count + 1
        key = f"key:{base}" if count == 0 else f"key:{base}_{count}"
        sources = _sources(layer)
        if cls == "InputLayer":
            inputs.append(name)
            shapes[name] = tuple((cfg.get("batch_shape") or cfg.get("batch_input_shape") or [None])[1:])
        elif not sources or any(source not in seen for source in sources):
            raise Unsupported(f"layer {name!r} is fed by a layer not before it")
        seen.add(name)
        if cls == "InputLayer":
            continue
        if cls in _IDENTITY:
            ops.append((name, _identity, sources))
            continue
        build = _BUILDERS.get(cls)
        if build is None:
            raise Unsupported(f"layer {name!r} of type {cls}")
        if len(sources) != _ARITY.get(cls, 1):
            raise Unsupported(f"layer {name!r} of type {cls} takes {_ARITY.get(cls, 1)} inputs, not {len(sources)}")
        if cls == "MaxPooling2D":
            pool_inputs.append(sources[0])
        ops.append((name, build(name, cfg, weights.get(name, weights.get(key, []))), sources))
    declared = [_history(ref)[0] for ref in _refs(model.get("input_layers"))]
    if declared and sorted(declared) == sorted(inputs):
        inputs = declared  # the order the model takes them in
    outputs = _refs(model.get("output_layers"))
    if len(outputs) != 1:
        raise Unsupported(f"{len(outputs)} outputs (one is run in NumPy)")
    output = _history(outputs[0])[0]
    if output not in seen:
        raise Unsupported(f"the output {output!r} is not a layer of the model")
    return Graph(model.get("name", ""), ops, inputs, output, pool_inputs=pool_inputs,
                 input_shapes=[shapes[name] for name in inputs])


def _refs(refs) -> list:
    # ["name", node, tensor] (one) or [["name", node, tensor], ...] (several)
    if not refs:
        return []
    return refs if isinstance(refs[0], list) else [refs]


def _history(ref) -> list:
    # ["name", node, tensor] or [["name", node, tensor]]
    return ref[0] if ref and isinstance(ref[0], list) else ref


def _sources(layer: dict) -> list[str]:
    nodes = layer.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise Unsupported(f"layer {layer.get('name')!r} is called more than once")
    names = []
    for node in nodes:
        args = node.get("args", []) if isinstance(node, dict) else node
        # A layer called on a list (Concatenate, MaxUnpool2D) has that list as its one argument.
        for arg in (a for group in args for a in (group if isinstance(group, list) else [group])):
            if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
                names.append(arg["config"]["keras_history"][0])
            else:
                raise Unsupported(f"layer {layer.get('name')!r} has inputs NumPy cannot follow")
        extra = {k for k, v in (node.get("kwargs") or {}).items() if k != "training" and v is not None} \
            if isinstance(node, dict) else set()
        if extra:
            raise Unsupported(f"layer {layer.get('name')!r} is called with arguments {sorted(extra)}")
    return names


# -- layers ------------------------------------------------------------------------------
def _dense(h):
    return h.toarray() if sp.issparse(h) else h


def _identity(h):
    return h


def _softmax(h: np.ndarray) -> np.ndarray:
    e = np.exp(h - h.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(h: np.ndarray) -> np.ndarray:
    # exp of -|h| only: no overflow warning for large negative pre-activations.
    e = np.exp(-np.abs(h))
    return np.where(h >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)


_ACTIVATIONS: dict[str, Op] = {
    "linear": lambda h: h, "relu": lambda h: np.maximum(h, 0), "sigmoid": _sigmoid, "softmax": _softmax,
    "tanh": np.tanh,
}


def _activation(name: str, spec) -> Op:
    if isinstance(spec, dict):  # a serialised function: {"class_name": "function", "config": "relu", ...}
        inner = spec.get("config")
        spec = inner if isinstance(inner, str) else (inner or {}).get("name", spec.get("class_name"))
    spec = spec or "linear"
    if spec not in _ACTIVATIONS:
        raise Unsupported(f"layer {name!r}: activation {spec!r}")
    return _ACTIVATIONS[spec]


def _weights(name: str, variables: list[np.ndarray], count: int) -> list[np.ndarray]:
    if len(variables) != count:
        raise Unsupported(f"layer {name!r}: expected {count} weight arrays, found {len(variables)}")
    return [np.asarray(v, np.float32) for v in variables]


def _check(name: str, cfg: dict, **expected) -> None:
    for key, allowed in expected.items():
        value = cfg.get(key)
        value = tuple(value) if isinstance(value, list) else value
        if value not in allowed:
            raise Unsupported(f"layer {name!r}: {key}={value!r}")


def _build_dense(name, cfg, variables):
    w, *b = _weights(name, variables, 2 if cfg.get("use_bias", True) else 1)
    act = _activation(name, cfg.get("activation"))
    bias = b[0] if b else np.float32(0)

    def op(h):
        return act(np.asarray(h @ w) + bias)
    return op


def _build_batch_norm(name, cfg, variables):
    _check(name, cfg, axis=(-1, (-1,)), data_format=(None, "channels_last"))
    scale, center = cfg.get("scale", True), cfg.get("center", True)
    arrays = _weights(name, variables, 2 + scale + center)
    gamma = arrays.pop(0) if scale else np.float32(1)
    beta = arrays.pop(0) if center else np.float32(0)
    mean, var = arrays
    factor = (gamma / np.sqrt(var + np.float32(cfg.get("epsilon", 1e-3)))).astype(np.float32)
    shift = (beta - mean * factor).astype(np.float32)

    def op(h):
        return _dense(h) * factor + shift
    return op


def _build_activation(name, cfg, variables):
    act = _activation(name, cfg.get("activation"))
    return lambda h: act(_dense(h))


def _build_flatten(name, cfg, variables):
    _check(name, cfg, data_format=(None, "channels_last"))
    return lambda h: _dense(h).reshape(h.shape[0], -1)


def _build_reshape(name, cfg, variables):
    shape = tuple(cfg["target_shape"])
    return lambda h: _dense(h).reshape((h.shape[0], *shape))


def _conv_checks(name, cfg):
    _check(name, cfg, padding=("same", "valid"), data_format=(None, "channels_last"),
           dilation_rate=(1, (1, 1)), groups=(None, 1))


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    # TensorFlow's SAME: output ceil(size / stride), the odd pixel of padding after.
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _build_conv2d(name, cfg, variables):
    _conv_checks(name, cfg)
    kernel, *b = _weights(name, variables, 2 if cfg.get("use_bias", True) else 1)
    act = _activation(name, cfg.get("activation"))
    kh, kw = kernel.shape[:2]
    sh, sw = cfg.get("strides", (1, 1))
    same = cfg.get("padding") == "same"

    def op(h):
        h = _dense(h)
        if same:
            h = np.pad(h, ((0, 0), _same_padding(h.shape[1], kh, sh), _same_padding(h.shape[2], kw, sw), (0, 0)))
        windows = sliding_window_view(h, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]  # (n, rows, cols, C, kh, kw)
        out = np.tensordot(windows, kernel, axes=([4, 5, 3], [0, 1, 2]))
        return act(out + b[0] if b else out)
    return op


def _build_conv2d_transpose(name, cfg, variables):
    _conv_checks(name, cfg)
    _check(name, cfg, output_padding=(None,))
    kernel, *b = _weights(name, variables, 2 if cfg.get("use_bias", True) else 1)  # (kh, kw, out, in)
    act = _activation(name, cfg.get("activation"))
    kh, kw, filters = kernel.shape[:3]
    sh, sw = cfg.get("strides", (1, 1))
    same = cfg.get("padding") == "same"

    def op(h):
        h = _dense(h)
        n, rows, cols, _ = h.shape
        full_r, full_c = (rows - 1) * sh + kh, (cols - 1) * sw + kw
        out_r, out_c = (rows * sh, cols * sw) if same else (full_r, full_c)
        # The transpose of a SAME convolution from (out_r, out_c): the same padding, cropped off.
        top = max(full_r - out_r, 0) // 2 if same else 0
        left = max(full_c - out_c, 0) // 2 if same else 0
        full = np.zeros((n, max(full_r, top + out_r), max(full_c, left + out_c), filters), np.float32)
        for i in range(kh):  # one product per kernel tap (9), each over the whole batch
            for j in range(kw):
                full[:, i:i + (rows - 1) * sh + 1:sh, j:j + (cols - 1) * sw + 1:sw] += h @ kernel[i, j].T
        out = full[:, top:top + out_r, left:left + out_c]
        return act(out + b[0] if b else out)
    return op


def _bilinear_axis(n_in: int, n_out: int):
    # tf.image.resize (bilinear, half-pixel centres, no antialiasing): source
    # coordinate, its two neighbours (clamped to the image) and the weight.
    src = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * np.float32(n_in / n_out) - np.float32(0.5)
    low = np.floor(src)
    lerp = (src - low).astype(np.float32)
    return np.clip(low, 0, n_in - 1).astype(np.intp), np.clip(np.ceil(src), 0, n_in - 1).astype(np.intp), lerp


def _build_resizing(name, cfg, variables):
    _check(name, cfg, interpolation=("bilinear",), crop_to_aspect_ratio=(None, False),
           pad_to_aspect_ratio=(None, False), antialias=(None, False), data_format=(None, "channels_last"))
    height, width = int(cfg["height"]), int(cfg["width"])

    def op(h):
        h = _dense(h)
        y0, y1, ly = _bilinear_axis(h.shape[1], height)
        x0, x1, lx = _bilinear_axis(h.shape[2], width)
        lx = lx[None, None, :, None]
        top = h[:, y0][:, :, x0] + (h[:, y0][:, :, x1] - h[:, y0][:, :, x0]) * lx
        bottom = h[:, y1][:, :, x0] + (h[:, y1][:, :, x1] - h[:, y1][:, :, x0]) * lx
        return (top + (bottom - top) * ly[None, :, None, None]).astype(np.float32)
    return op


def _max_pool(h: np.ndarray) -> np.ndarray:
    # 2x2, stride 2, SAME: the odd row/column at the end pooled alone (padded with -inf).
    n, rows, cols, c = h.shape
    r, q = -(-rows // 2), -(-cols // 2)
    padded = np.pad(h, ((0, 0), (0, 2 * r - rows), (0, 2 * q - cols), (0, 0)), constant_values=-np.inf)
    return padded.reshape(n, r, 2, q, 2, c).max(axis=(2, 4))


def _upsample(h: np.ndarray, rows: int, cols: int) -> np.ndarray:
    return np.repeat(np.repeat(h, 2, axis=1), 2, axis=2)[:, :rows, :cols]


def _build_max_pooling(name, cfg, variables):
    _check(name, cfg, pool_size=((2, 2), 2), strides=((2, 2), 2, None), padding=("same",),
           data_format=(None, "channels_last"))
    return lambda h: _max_pool(_dense(h))


def _build_max_unpool(name, cfg, variables):
    # models.MaxUnpool2D: x copied over its 2x2 window, kept where the reference is the window's maximum.
    def op(x, reference):
        rows, cols = reference.shape[1:3]
        switches = reference == _upsample(_max_pool(reference), rows, cols)
        return _upsample(x, rows, cols) * switches
    return op


_BUILDERS: dict[str, Callable[[str, dict, list[np.ndarray]], Op]] = {
    "Dense": _build_dense, "BatchNormalization": _build_batch_norm, "Activation": _build_activation,
    "Flatten": _build_flatten, "Reshape": _build_reshape, "Conv2D": _build_conv2d,
    "Conv2DTranspose": _build_conv2d_transpose, "Resizing": _build_resizing,
    "MaxPooling2D": _build_max_pooling, "MaxUnpool2D": _build_max_unpool,
}
#: Inputs of the layers that take more than one.
_ARITY = {"MaxUnpool2D": 2}
