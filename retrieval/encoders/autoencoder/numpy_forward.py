"""The dense encoder's forward pass in NumPy/SciPy (no TensorFlow, no Keras import).

A single query through TensorFlow costs ~2 ms of dispatch for ~0.1 ms of
arithmetic; the same MLP in NumPy/SciPy is exact to float32 and keeps
sparse TF-IDF rows sparse. :func:`dense_stack` reads the weights off a Keras
model by duck typing (layer class names, ``get_weights``, ``get_config``);
:func:`forward` runs them.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: One step of the stack: weights ``(d_in, d_out)``, bias ``(d_out,)``, ReLU after?
Step = tuple[np.ndarray, np.ndarray, bool]


def _is(layer, class_name: str) -> bool:
    """``isinstance(layer, keras.layers.<class_name>)`` without importing Keras."""
    return any(cls.__name__ == class_name for cls in type(layer).__mro__)


def _activation_name(layer) -> str:
    act = layer.get_config().get("activation")  # Keras' serialised activation: a name or a config dict
    return act if isinstance(act, str) else act.get("config", {}).get("name", act.get("class_name"))


def dense_stack(model) -> list[Step] | None:
    """The Keras ``model`` as (weights, bias, relu?) steps when it is a plain MLP, else None.

    Dropout is the identity at inference; a BatchNormalization after a
    linear Dense is folded into that layer's weights.
    """
    stack: list[Step] = []
    for layer in model.layers:
        if _is(layer, "InputLayer") or _is(layer, "Dropout"):
            continue
        if _is(layer, "BatchNormalization") and stack and not stack[-1][2]:
            gamma, beta, mean, var = (np.asarray(v, np.float64) for v in layer.get_weights())
            scale = gamma / np.sqrt(var + layer.epsilon)
            w, b, _ = stack[-1]
            stack[-1] = ((w * scale).astype(np.float32), ((b - mean) * scale + beta).astype(np.float32), False)
            continue
        if not _is(layer, "Dense"):
            return None
        act = _activation_name(layer)
        if act not in ("relu", "linear"):
            return None
        w, b = layer.get_weights()
        stack.append((w, b, act == "relu"))
    return stack


def forward(stack: list[Step], X) -> np.ndarray:
    """Run ``X`` (sparse CSR or dense rows) through the steps: float32 ``(n, d_out)``.

    Sparse rows stay sparse into the first product, which then touches only
    their terms.
    """
    h = X.astype(np.float32) if sp.issparse(X) else np.asarray(X, dtype=np.float32)
    for w, b, relu in stack:
        h = np.asarray(h @ w) + b
        if relu:
            np.maximum(h, 0, out=h)
    return np.asarray(h, dtype=np.float32)
