"""The wake classifier: one hidden layer over FRAMES embeddings, trained with
numpy (Adam, mixup), exported as ONNX with openWakeWord's input and output."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..progress import Progress
from .dataset import WindowSet
from .detector import EMBEDDING_DIM, FRAMES


HIDDEN_UNITS = 64
EPOCHS = 12
BATCH = 256


@dataclass
class Network:
    """Flatten(16x96) → standardize → dense(64) → ReLU → dense(1) → sigmoid."""

    mean: np.ndarray
    scale: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    @property
    def parameters(self) -> list[np.ndarray]:
        return [self.w1, self.b1, self.w2, self.b2]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Standardized input, hidden activations, output logits."""
        standardized = (x - self.mean) / self.scale
        hidden = np.maximum(standardized @ self.w1 + self.b1, 0.0)
        return standardized, hidden, (hidden @ self.w2 + self.b2).reshape(-1)

    def gradients(self, x: np.ndarray, target: np.ndarray, weight: np.ndarray) -> list[np.ndarray]:
        """Backpropagation of the weighted mean binary cross-entropy."""
        standardized, hidden, logits = self.forward(x)
        probability = 1 / (1 + np.exp(-np.clip(logits, -30, 30)))
        d_logit = ((probability - target) * weight / len(target)).astype(np.float32)[:, None]
        d_hidden = (d_logit @ self.w2.T) * (hidden > 0)
        return [standardized.T @ d_hidden, d_hidden.sum(axis=0), hidden.T @ d_logit, d_logit.sum(axis=0)]


def new_network(windows: WindowSet, rng: np.random.Generator) -> Network:
    """He-initialized, standardizing each embedding dimension by its spread."""
    inputs = FRAMES * EMBEDDING_DIM
    return Network(
        mean=np.tile(windows.pool.mean(axis=0), FRAMES).astype(np.float32),
        scale=np.tile(windows.pool.std(axis=0) + 1e-3, FRAMES).astype(np.float32),
        w1=(rng.standard_normal((inputs, HIDDEN_UNITS)) * math.sqrt(2 / inputs)).astype(np.float32),
        b1=np.zeros(HIDDEN_UNITS, dtype=np.float32),
        w2=(rng.standard_normal((HIDDEN_UNITS, 1)) * math.sqrt(1 / HIDDEN_UNITS)).astype(np.float32),
        b2=np.zeros(1, dtype=np.float32),
    )


def fit(windows: WindowSet, rng: np.random.Generator) -> Network:
    """Weighted cross-entropy (both classes count the same), Adam with a cosine
    schedule and weight decay, and mixup on half of each batch: blends of a
    positive and a negative are half positive, which keeps the scores of inputs
    unlike any training example from jumping to 1."""
    net = new_network(windows, rng)
    labels = windows.labels
    weight = np.where(labels > 0.5, 0.5 / labels.mean(), 0.5 / (1 - labels.mean())).astype(np.float32)
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in net.parameters]
    batches = math.ceil(len(labels) / BATCH)
    step = 0
    with Progress("wakeword: training", EPOCHS * batches) as progress:
        for _ in range(EPOCHS):
            for index in np.array_split(rng.permutation(len(labels)), batches):
                step += 1
                x, target, w = mixup(windows.inputs(index), labels[index], weight[index], rng)
                rate = 2e-3 * 0.5 * (1 + math.cos(math.pi * step / (EPOCHS * batches)))
                for param, grad, (m, v) in zip(net.parameters, net.gradients(x, target, w), moments):
                    grad = grad + 1e-4 * param
                    m += 0.1 * (grad - m)
                    v += 0.001 * (grad**2 - v)
                    param -= rate * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
                progress.advance()
    return net


def mixup(x: np.ndarray, target: np.ndarray, weight: np.ndarray, rng: np.random.Generator):
    """Half the batch blended with random partners, Beta(0.4, 0.4) proportions."""
    share = np.where(rng.random(len(x)) < 0.5, rng.beta(0.4, 0.4, len(x)), 1.0).astype(np.float32)
    partner = rng.permutation(len(x))

    def blend(a: np.ndarray) -> np.ndarray:
        s = share.reshape(-1, *([1] * (a.ndim - 1)))
        return s * a + (1 - s) * a[partner]

    return blend(x), blend(target), blend(weight)


def export_onnx(net: Network, path: Path, metadata: dict[str, str]) -> None:
    """openWakeWord's signature: float [batch, 16, 96] → float [batch, 1]. The input
    standardization is folded into the first layer, so the graph is two Gemms."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1 = (net.w1 / net.scale[:, None]).astype(np.float32)
    b1 = (net.b1 - (net.mean / net.scale) @ net.w1).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["embeddings"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "w1", "b1"], ["dense"]),
            helper.make_node("Relu", ["dense"], ["hidden"]),
            helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["score"]),
        ],
        "wake_word",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", FRAMES, EMBEDDING_DIM])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(net.w2.astype(np.float32), "w2"),
            numpy_helper.from_array(net.b2.astype(np.float32), "b2"),
        ],
    )
    # Opset 13 / IR 7: loadable by the onnxruntime versions openWakeWord users have.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edge-assistant")
    model.ir_version = 7
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
