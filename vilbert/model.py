"""The ViLBERT family in one file: attention, layers, co-attention, the two-stream model and heads.

ViLBERT (Lu et al., NeurIPS 2019) runs a BERT over the text and a second, smaller transformer over
detector regions; co-attention blocks let each stream's queries attend to the other stream's keys
and values (paper section 3.1, REFERENCE 1). Shapes below: B batch, T tokens, R regions (row 0 is
the global region), H heads.

Module names are our own readable ones; `vilbert/convert.py` holds the one table that maps them to
the originals' checkpoint keys.
"""

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Set

import torch
import torch.nn as nn
import torch.nn.functional as F

from vilbert.config import ViLBertConfig

NUM_TASK_TOKENS = 20  # 12-in-1's task-token embedding table has 20 rows
GQA_NUM_LABELS = 1533  # sizes of 12-in-1's extra task heads, fixed in its code
MASK_VALUE = -10000.0  # additive mask for padding, as the originals
CPU_MLM_HEAD_FP32 = True  # MLM head in fp32 under CPU autocast (MaskedLanguageModelHead; off only to compare)


def _activation(name: str):
    if name == "gelu":
        return F.gelu  # exact (erf) form, as BERT
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name in ("swish", "silu"):
        return F.silu
    return F.relu


def additive_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) with 1 = real, 0 = padding  ->  (B, 1, 1, L) float, 0 for real and -10000 for padding."""
    return (1.0 - mask[:, None, None, :].float()) * MASK_VALUE


def fuse(pooled_t: torch.Tensor, pooled_v: torch.Tensor, method: str) -> torch.Tensor:
    """Combine the two pooled vectors (B, bi_hidden_size) into one (REFERENCE 1: 'mul' or 'sum')."""
    return pooled_t * pooled_v if method == "mul" else pooled_t + pooled_v


@dataclass
class TokenPacking:
    """Where the real (unpadded) tokens of a (B, T) batch sit, so that the position-wise work of a
    stream (projections, feed-forward, LayerNorm: nearly all of its FLOPs) runs on the N real
    tokens only, as (N, size) rows; attention pads them back to (B, T) for its own step.

    Captions in a batch are padded to the longest: in the demo's pretraining batches 52% of the
    text positions are real. Every position-wise operation is row by row, so the real rows come out
    as in the padded run (up to float rounding); padding rows are never computed and read back as
    zeros (`pad`).
    """

    index: torch.Tensor  # (N,) positions of the real tokens in the flattened (B * T)
    batch: int
    length: int

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> "TokenPacking":
        """mask (B, T), nonzero = a real token."""
        return cls(mask.reshape(-1).nonzero().squeeze(1), mask.shape[0], mask.shape[1])

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, size) -> (N, size)."""
        return x.reshape(-1, x.shape[-1]).index_select(0, self.index)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, size) -> (B, T, size), zeros at the padding."""
        out = x.new_zeros(self.batch * self.length, x.shape[-1])
        return out.index_copy_(0, self.index, x).view(self.batch, self.length, -1)  # in place: no second copy


class TextPrefixCache:
    """The text prefix (embeddings and the text layers before the first co-attention block) of each
    text row seen in CPU training and its evaluations, for runs where it cannot change: its weights
    are frozen and it has no dropout (`ViLBertModel.cache_text_prefix`). A finetuning run then
    computes a question's prefix once instead of once per epoch and per evaluation: with the demo's
    MiniLM prefix frozen, a training step is 1.2x (VQA) to 1.3x (VCR) faster (docs/PERFORMANCE.md).
    In evaluation the layers after the prefix see zeros at the padding positions (no head reads
    what comes out there; real positions are as without the cache).

    A row's key is its token ids, token types, mask and task token, so a changed text is a miss,
    never a wrong hit; an entry holds the row's real tokens as TokenPacking packs them. Once
    `max_bytes` are held, new rows are computed as usual but not kept.
    """

    def __init__(self, max_bytes: int = 2 << 30):
        self.rows: Dict[bytes, torch.Tensor] = {}
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def keys(input_ids, token_type_ids, real, task_tokens) -> List[bytes]:
        """One bytes key per row of the (B, T) batch (real: (B, T'), the task token's column included)."""
        parts = [input_ids, torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids, real]
        if task_tokens is not None:
            parts.append(task_tokens.reshape(input_ids.shape[0], -1))
        table = torch.cat([part.long() for part in parts], 1).cpu().numpy()
        return table.view(f"V{table.shape[1] * table.itemsize}").ravel().tolist()  # row bytes, no loop

    def store(self, rows: Dict[bytes, torch.Tensor]) -> None:
        for key, value in rows.items():
            size = value.numel() * value.element_size()
            if self.bytes + size > self.max_bytes:
                return
            self.rows[key] = value
            self.bytes += size

    def summary(self) -> str:
        looked_up = max(self.hits + self.misses, 1)
        return (f"text prefix cache: {len(self.rows)} rows, {self.bytes / 2**20:.0f} MiB, "
                f"{100 * self.hits / looked_up:.1f}% of {self.hits + self.misses} rows served from it")


class Attention(nn.Module):
    """Multi-head attention of one stream's queries over a stream's keys and values.

    The same module serves text self-attention, visual self-attention (keys from the queries' own
    stream) and both co-attention directions (keys from the other stream, of another width).
    """

    def __init__(self, query_size: int, key_size: int, inner_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_size = inner_size // num_heads
        self.dropout = dropout
        self.query = nn.Linear(query_size, inner_size)
        self.key = nn.Linear(key_size, inner_size)
        self.value = nn.Linear(key_size, inner_size)

    def forward(self, queries, keys, mask, output_attentions: bool = False,
                query_packing: Optional[TokenPacking] = None, key_packing: Optional[TokenPacking] = None):
        """queries (B, Tq, query_size), keys (B, Tk, key_size), mask (B, 1, 1, Tk) additive; a stream
        given with its TokenPacking comes as (N, size) rows of its real tokens instead.

        Returns the context (B, Tq, inner_size), or (N, inner_size) for packed queries, and, when
        asked, the attention probabilities (B, H, Tq, Tk) before dropout (else None).
        """
        q, k, v = self.query(queries), self.key(keys), self.value(keys)  # projections on real rows only
        if query_packing is not None:
            q = query_packing.pad(q)
        if key_packing is not None:
            k, v = key_packing.pad(k), key_packing.pad(v)
        B, Tq, Tk = q.shape[0], q.shape[1], k.shape[1]
        q = q.view(B, Tq, self.num_heads, self.head_size).transpose(1, 2)  # (B, H, Tq, hs)
        k = k.view(B, Tk, self.num_heads, self.head_size).transpose(1, 2)  # (B, H, Tk, hs)
        v = v.view(B, Tk, self.num_heads, self.head_size).transpose(1, 2)  # (B, H, Tk, hs)
        mask = mask.to(q.dtype)  # SDPA wants the mask in the queries' dtype (bf16/fp16 under autocast)
        dropout = self.dropout if self.training else 0.0
        # Spelled out when the probabilities are asked for (visualisation), and on a CPU in bf16/fp16:
        # there SDPA's fused CPU kernel takes 4-6x longer (forward + backward) than these three ops at
        # this model's shapes, while in fp32 it is as fast or faster (docs/PERFORMANCE.md).
        if output_attentions or (q.device.type == "cpu" and q.dtype != torch.float32):
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_size) + mask  # (B, H, Tq, Tk)
            probs = scores.softmax(dim=-1)
            context = F.dropout(probs, dropout, self.training) @ v
            probs = probs if output_attentions else None
        else:
            probs = None
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        context = context.transpose(1, 2).reshape(B, Tq, self.num_heads * self.head_size)
        if query_packing is not None:
            context = query_packing.pack(context)
        return context, probs


class ResidualNorm(nn.Module):
    """LayerNorm(residual + dropout(Linear(x))): the closing half of every BERT sub-layer."""

    def __init__(self, in_size: int, out_size: int, dropout: float, eps: float):
        super().__init__()
        self.dense = nn.Linear(in_size, out_size)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(out_size, eps=eps)

    def forward(self, x, residual):
        return self.norm(residual + self.dropout(self.dense(x)))


class FeedForward(nn.Module):
    """BERT's position-wise feed-forward with residual and LayerNorm: size -> inner -> size."""

    def __init__(self, size: int, inner_size: int, act: str, dropout: float, eps: float):
        super().__init__()
        self.up = nn.Linear(size, inner_size)
        self.act = _activation(act)
        self.down = ResidualNorm(inner_size, size, dropout, eps)

    def forward(self, x):
        return self.down(self.act(self.up(x)), x)


class TransformerLayer(nn.Module):
    """A BERT layer. Text and visual layers are this class with the sizes of their stream."""

    def __init__(self, size, num_heads, inner_size, act, hidden_dropout, attention_dropout, eps):
        super().__init__()
        self.attention = Attention(size, size, size, num_heads, attention_dropout)
        self.attention_output = ResidualNorm(size, size, hidden_dropout, eps)
        self.feed_forward = FeedForward(size, inner_size, act, hidden_dropout, eps)

    @classmethod
    def text(cls, c: ViLBertConfig) -> "TransformerLayer":
        return cls(c.hidden_size, c.num_attention_heads, c.intermediate_size, c.hidden_act,
                   c.hidden_dropout_prob, c.attention_probs_dropout_prob, c.layer_norm_eps)

    @classmethod
    def visual(cls, c: ViLBertConfig) -> "TransformerLayer":
        return cls(c.v_hidden_size, c.v_num_attention_heads, c.v_intermediate_size, c.v_hidden_act,
                   c.v_hidden_dropout_prob, c.v_attention_probs_dropout_prob, c.layer_norm_eps)

    def forward(self, x, mask, output_attentions: bool = False, packing: Optional[TokenPacking] = None,
                first_only: bool = False):
        """x (B, L, size), mask (B, 1, 1, L) additive -> (B, L, size), probs (B, H, L, L) or None.
        With a packing, x and the result are (N, size) rows of the real tokens. first_only: only
        position 0 is computed (its query attends to every position): -> (B, 1, size)."""
        queries = x[:, :1] if first_only else x
        context, probs = self.attention(queries, x, mask, output_attentions, packing, packing)
        return self.feed_forward(self.attention_output(context, queries)), probs


class CoAttentionBlock(nn.Module):
    """Co-attention (paper Fig. 2b): each stream's queries attend to the other stream, in a shared
    bi_hidden_size space; then residual + LayerNorm and each stream's own feed-forward. No
    self-attention inside the block (REFERENCE 1).
    """

    def __init__(self, c: ViLBertConfig):
        super().__init__()
        eps = c.layer_norm_eps
        # Attention dropout falls on what is attended to: text tokens for visual queries, regions for
        # text queries (as the originals).
        self.visual_attention = Attention(c.v_hidden_size, c.hidden_size, c.bi_hidden_size,
                                          c.bi_num_attention_heads, c.attention_probs_dropout_prob)
        self.text_attention = Attention(c.hidden_size, c.v_hidden_size, c.bi_hidden_size,
                                        c.bi_num_attention_heads, c.v_attention_probs_dropout_prob)
        self.visual_attention_output = ResidualNorm(c.bi_hidden_size, c.v_hidden_size, c.v_hidden_dropout_prob, eps)
        self.text_attention_output = ResidualNorm(c.bi_hidden_size, c.hidden_size, c.hidden_dropout_prob, eps)
        self.visual_feed_forward = FeedForward(c.v_hidden_size, c.v_intermediate_size, c.v_hidden_act,
                                               c.v_hidden_dropout_prob, eps)
        self.text_feed_forward = FeedForward(c.hidden_size, c.intermediate_size, c.hidden_act,
                                             c.hidden_dropout_prob, eps)

    def forward(self, visual, visual_mask, text, text_mask, output_attentions: bool = False,
                text_packing: Optional[TokenPacking] = None):
        """visual (B, R, v_hidden), text (B, T, hidden) or, with text_packing, (N, hidden) rows of
        the real tokens; masks additive (B, 1, 1, R) / (B, 1, 1, T).

        Returns visual (B, R, v_hidden), text (as given) and, when asked, the probabilities of
        visual queries over text (B, H, R, T) and of text queries over regions (B, H, T, R).
        """
        visual_context, visual_to_text = self.visual_attention(visual, text, text_mask, output_attentions,
                                                               key_packing=text_packing)
        text_context, text_to_visual = self.text_attention(text, visual, visual_mask, output_attentions,
                                                           query_packing=text_packing)
        visual = self.visual_feed_forward(self.visual_attention_output(visual_context, visual))
        text = self.text_feed_forward(self.text_attention_output(text_context, text))
        return visual, text, visual_to_text, text_to_visual


class TextEmbeddings(nn.Module):
    """BERT's embeddings: word (padding id 0) + position + token type, LayerNorm, dropout.

    With `task_specific_tokens` (12-in-1), a learned task embedding is inserted right after [CLS],
    so the text sequence grows by one position.
    """

    def __init__(self, c: ViLBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.task_embeddings = nn.Embedding(NUM_TASK_TOKENS, c.hidden_size) if c.task_specific_tokens else None
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None, task_tokens=None, words=None):
        """input_ids (B, T) -> (B, T, hidden), or (B, T + 1, hidden) with a task token. words: the
        word vectors of input_ids (B, T, hidden) when the caller looked them up (TiedWordMatrix)."""
        T = input_ids.shape[1]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = torch.arange(T, device=input_ids.device)
        words = self.word_embeddings(input_ids) if words is None else words
        x = words + self.position_embeddings(positions) + self.token_type_embeddings(token_type_ids)
        if self.task_embeddings is not None:
            if task_tokens is None:
                raise ValueError("this model has task_specific_tokens: pass task_tokens (B,) or (B, 1) task ids")
            task = self.task_embeddings(task_tokens.reshape(-1, 1))  # (B, 1, hidden), no position/type
            x = torch.cat([x[:, :1], task, x[:, 1:]], dim=1)
        return self.dropout(self.norm(x))


class TiedWordMatrix(torch.autograd.Function):
    """The word lookup and the MLM decoder's weight taken from the one tied matrix, with one gradient.

    Autograd gives the matrix a zero-filled dense (vocab, hidden) gradient for the lookup and adds
    it to the decoder's: two fresh 94 MB buffers a step for BERT-base, which cost a CPU step 10% on
    this project's VMs (docs/PERFORMANCE.md, "Fresh pages"). Here the lookup's rows are added into
    the decoder's gradient in place. Same sums, in another order.

        words, decoder_weight = TiedWordMatrix.apply(weight, input_ids, padding_idx)
        # words (B, T, hidden) = F.embedding(input_ids, weight); decoder_weight: weight itself
    """

    @staticmethod
    def forward(ctx, weight, input_ids, padding_idx: int):
        ctx.save_for_backward(input_ids)
        ctx.padding_idx, ctx.num_words = padding_idx, weight.shape[0]
        return F.embedding(input_ids, weight, padding_idx), weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad_words, grad_decoder):
        if not ctx.needs_input_grad[0]:
            return None, None, None
        (input_ids,) = ctx.saved_tensors
        grad = grad_decoder  # (vocab, hidden): the decoder's product, a fresh tensor of the engine's
        if grad is None:
            grad = torch.zeros((ctx.num_words, grad_words.shape[-1]), dtype=grad_words.dtype, device=grad_words.device)
        if grad_words is not None:
            ids = input_ids.reshape(-1)
            rows = grad_words.reshape(-1, grad_words.shape[-1]) * (ids != ctx.padding_idx)[:, None]  # (B*T, hidden)
            grad = grad.index_add_(0, ids, rows.to(grad.dtype))  # the padding row gets nothing, as nn.Embedding
        return grad, None, None


class RegionEmbeddings(nn.Module):
    """Region feature and box -> embedding; no position or type embedding.

    v_location_encoding "linear" (the originals): LayerNorm(Linear(feature) + Linear(box)), dropout.
    "uniter" / "fourier": LayerNorm(LayerNorm(Linear(feature)) + LayerNorm(Linear(encoded box))), dropout,
    the box widened to 7 numbers (and, for "fourier", each encoded by sines and cosines), so that the
    place reaches the sum at the scale of the appearance from the first step; with v_location_gate,
    at a learned share of it that starts at the gate's value.
    """

    def __init__(self, c: ViLBertConfig):
        super().__init__()
        self.encoding = c.v_location_encoding
        box_size = {"linear": 5, "uniter": 7, "fourier": 14 * c.v_location_frequencies}[self.encoding]
        self.feature_projection = nn.Linear(c.v_feature_size, c.v_hidden_size)
        self.location_projection = nn.Linear(box_size, c.v_hidden_size)
        if self.encoding != "linear":
            self.feature_norm = nn.LayerNorm(c.v_hidden_size, eps=c.layer_norm_eps)
            self.location_norm = nn.LayerNorm(c.v_hidden_size, eps=c.layer_norm_eps)
            frequencies = math.pi * 2.0 ** torch.arange(c.v_location_frequencies, dtype=torch.float32)
            self.register_buffer("frequencies", frequencies, persistent=False)
        self.location_gate = nn.Parameter(torch.tensor(c.v_location_gate)) if c.v_location_gate > 0 else None
        self.norm = nn.LayerNorm(c.v_hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.v_hidden_dropout_prob)

    def encode_box(self, locations):
        """(B, R, 5) x1, y1, x2, y2, area -> the location projection's input."""
        if self.encoding == "linear":
            return locations
        x1, y1, x2, y2, area = locations.unbind(-1)
        box = torch.stack([x1, y1, x2, y2, x2 - x1, y2 - y1, area], -1)  # (B, R, 7)
        if self.encoding == "uniter":
            return box
        angles = (box.unsqueeze(-1) * self.frequencies).flatten(-2)  # (B, R, 7 * F)
        return torch.cat([angles.sin(), angles.cos()], -1)  # (B, R, 14 * F)

    def forward(self, features, locations):
        """features (B, R, v_feature_size), locations (B, R, 5) -> (B, R, v_hidden_size)."""
        appearance = self.feature_projection(features)
        place = self.location_projection(self.encode_box(locations))
        if self.encoding != "linear":
            appearance, place = self.feature_norm(appearance), self.location_norm(place)
        if self.location_gate is not None:
            place = self.location_gate * place
        return self.dropout(self.norm(appearance + place))


class WeightNormLinear(nn.Module):
    """Linear layer with one weight-norm scale for the whole matrix: W = g * v / ||v||_F.

    This is `torch.nn.utils.weight_norm(nn.Linear(...), dim=None)` of vilbert_beta's VQA head,
    with the same parameter names (weight_g scalar, weight_v, bias).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_g = nn.Parameter(torch.empty(()))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x):
        weight = self.weight_g * self.weight_v / self.weight_v.norm()
        return F.linear(x, weight, self.bias)


class BetaClassifier(nn.Module):
    """vilbert_beta's VL-classifier: WN-Linear -> ReLU -> Dropout(0.5) -> WN-Linear."""

    # eps is unused (no LayerNorm); it keeps the constructor interchangeable with GeLUClassifier.
    def __init__(self, in_size: int, hidden_size: int, num_labels: int, eps: float = 1e-12):
        super().__init__()
        self.hidden = WeightNormLinear(in_size, hidden_size)
        self.dropout = nn.Dropout(0.5)
        self.output = WeightNormLinear(hidden_size, num_labels)

    def forward(self, x):
        return self.output(self.dropout(F.relu(self.hidden(x))))


class GeLUClassifier(nn.Module):
    """12-in-1's VL-classifier: Linear -> GeLU -> LayerNorm -> Linear."""

    def __init__(self, in_size: int, hidden_size: int, num_labels: int, eps: float = 1e-12):
        super().__init__()
        self.hidden = nn.Linear(in_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.output = nn.Linear(hidden_size, num_labels)

    def forward(self, x):
        return self.output(self.norm(F.gelu(self.hidden(x))))


class PredictionTransform(nn.Module):
    """Linear -> activation -> LayerNorm, before the MLM and masked-region decoders."""

    def __init__(self, size: int, act: str, eps: float):
        super().__init__()
        self.dense = nn.Linear(size, size)
        self.act = _activation(act)
        self.norm = nn.LayerNorm(size, eps=eps)

    def forward(self, x):
        return self.norm(self.act(self.dense(x)))


class MaskedLanguageModelHead(nn.Module):
    """Transform, then a decoder whose weight is the word-embedding matrix (tied), plus a bias."""

    def __init__(self, c: ViLBertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = PredictionTransform(c.hidden_size, c.hidden_act, c.layer_norm_eps)
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied: one Parameter under two names
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))

    def forward(self, x, decoder_weight=None):
        """x (..., hidden) -> (..., vocab_size). decoder_weight: the tied matrix as TiedWordMatrix
        hands it out (the same values as self.decoder.weight)."""
        weight = self.decoder.weight if decoder_weight is None else decoder_weight
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and CPU_MLM_HEAD_FP32:
            # On a CPU, fp32 here: autocast would cast the whole 30,522 x 768 tied matrix to bf16
            # and its gradient back, for a few dozen masked rows (docs/PERFORMANCE.md).
            with torch.autocast("cpu", enabled=False):
                return F.linear(self.transform(x.float()), weight) + self.bias
        return F.linear(self.transform(x), weight) + self.bias


class MaskedRegionHead(nn.Module):
    """Transform, then Linear to the region target: class scores (visual_target 0) or a feature (1)."""

    def __init__(self, c: ViLBertConfig):
        super().__init__()
        self.transform = PredictionTransform(c.v_hidden_size, c.v_hidden_act, c.layer_norm_eps)
        self.decoder = nn.Linear(c.v_hidden_size, c.region_target_size)

    def forward(self, x):
        """x (..., v_hidden) -> (..., region_target_size)."""
        return self.decoder(self.transform(x))


@dataclass
class ViLBertOutput:
    sequence_output_t: torch.Tensor  # (B, T, hidden_size); T + 1 with a task token
    sequence_output_v: torch.Tensor  # (B, R, v_hidden_size)
    pooled_output_t: torch.Tensor  # (B, bi_hidden_size) ReLU pooler on [CLS]
    pooled_output_v: torch.Tensor  # (B, bi_hidden_size) ReLU pooler on the global region
    # None, or dict(text=[(B, H, T, T)], visual=[(B, Hv, R, R)], text_to_visual=[(B, Hb, T, R)],
    # visual_to_text=[(B, Hb, R, T)]), one entry per layer/block in the order they ran.
    attentions: Optional[Dict[str, List[torch.Tensor]]] = None


@dataclass
class PretrainingOutput:
    # Without labels: (B, T, vocab_size), (B, R, region_target_size), (B, 2). With a head's labels
    # given, that head ran only on the targeted positions: prediction_scores_t is (N_t, vocab_size) in
    # the order of masked_lm_labels[masked_lm_labels >= 0], prediction_scores_v is (N_v, ...) in the
    # order of the targeted regions (image_label == 1, region 0 excluded).
    prediction_scores_t: torch.Tensor
    prediction_scores_v: torch.Tensor
    seq_relationship_score: torch.Tensor  # (B, 2); index 0 = aligned
    loss: Optional[torch.Tensor] = None  # MLM + img_weight * region + alignment, of those labelled
    masked_lm_loss: Optional[torch.Tensor] = None
    masked_img_loss: Optional[torch.Tensor] = None
    next_sentence_loss: Optional[torch.Tensor] = None
    attentions: Optional[Dict[str, List[torch.Tensor]]] = None


@dataclass
class VLTasksOutput:
    vil_prediction: Optional[torch.Tensor] = None  # (B, num_labels) VL-classifier logits
    vil_logit: Optional[torch.Tensor] = None  # (B, 1) score of the pair (VCR, retrieval)
    vision_logit: Optional[torch.Tensor] = None  # (B, R, 1) per region, padding at -10000 (RefCOCO+)
    linguisic_logit: Optional[torch.Tensor] = None  # (B, T, 1) per token (sic, the originals' name)
    vil_prediction_gqa: Optional[torch.Tensor] = None  # (B, 1533)   12-in-1 extra heads, when built
    vil_binary_prediction: Optional[torch.Tensor] = None  # (B / 2, 2)  pairs of rows (NLVR2)
    vil_tri_prediction: Optional[torch.Tensor] = None  # (B, 3)   visual entailment
    attentions: Optional[Dict[str, List[torch.Tensor]]] = None


class ViLBertPreTrainedModel(nn.Module):
    """Shared by the model classes: one weight init, loading and saving."""

    def __init__(self, config: ViLBertConfig):
        super().__init__()
        if not isinstance(config, ViLBertConfig):
            raise TypeError(f"{type(self).__name__} needs a ViLBertConfig, got {type(config).__name__}")
        self.config = config

    def _init_weights(self, module: nn.Module):
        """REFERENCE 1: every weight N(0, initializer_range), biases 0, LayerNorm 1/0."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, WeightNormLinear):
            # Starts as a plain N(0, std) matrix: g = ||v||_F.
            nn.init.normal_(module.weight_v, std=std)
            with torch.no_grad():
                module.weight_g.copy_(module.weight_v.norm())
            nn.init.zeros_(module.bias)

    def tied_parameter_names(self) -> Dict[str, str]:
        """{alias: owner} of parameters stored once under two names (the tied MLM decoder)."""
        return {}

    def no_decay_parameter_names(self) -> Set[str]:
        """Names of biases and LayerNorm weights (the originals exempt these from weight decay) and of
        scalar scales (v_location_gate), which weight decay would pull towards zero as it would a
        LayerNorm weight."""
        names = set()
        for module_name, module in self.named_modules():
            for param_name, param in module.named_parameters(recurse=False):
                if param_name == "bias" or isinstance(module, nn.LayerNorm) or param.dim() == 0:
                    names.add(f"{module_name}.{param_name}" if module_name else param_name)
        return names

    def bert_parameter_names(self) -> Set[str]:
        """Names of the parameters a text-only BERT checkpoint initialises (text embeddings and text
        layers): the originals train these at 0.1x the learning rate during pretraining."""
        names = set()
        for name, _ in self.named_parameters():
            local = name[len("vilbert."):] if name.startswith("vilbert.") else name
            if local.startswith("text_layers.") or (
                local.startswith("text_embeddings.") and not local.startswith("text_embeddings.task_embeddings.")
            ):
                names.add(name)
        return names

    @classmethod
    def from_pretrained(cls, path, config: Optional[ViLBertConfig] = None, **kwargs):
        """Load a Hugging Face BERT directory, an original ViLBERT .bin/.tar, or our own directory.

        See `vilbert.convert.load_pretrained` for the options and the load report
        (`model.load_report`).
        """
        from vilbert.convert import load_pretrained

        return load_pretrained(cls, path, config=config, **kwargs)

    def save_pretrained(self, directory) -> None:
        """Write config.json + model.safetensors (tied weights stored once) into `directory`."""
        from vilbert.convert import save_pretrained

        save_pretrained(self, directory)


class ViLBertModel(ViLBertPreTrainedModel):
    """The two-stream encoder with its poolers (REFERENCE 1)."""

    def __init__(self, config: ViLBertConfig):
        super().__init__(config)
        c = config
        self.text_embeddings = TextEmbeddings(c)
        self.region_embeddings = RegionEmbeddings(c)
        self.text_layers = nn.ModuleList(TransformerLayer.text(c) for _ in range(c.num_hidden_layers))
        self.visual_layers = nn.ModuleList(TransformerLayer.visual(c) for _ in range(c.v_num_hidden_layers))
        self.coattention_layers = nn.ModuleList(CoAttentionBlock(c) for _ in c.v_biattention_id)
        self.text_pooler = nn.Linear(c.hidden_size, c.bi_hidden_size)
        self.visual_pooler = nn.Linear(c.v_hidden_size, c.bi_hidden_size)
        # Text layers before the first co-attention block never see the image.
        self.num_prefix_layers = c.t_biattention_id[0] if c.t_biattention_id else c.num_hidden_layers
        self.prefix_cache: Optional[TextPrefixCache] = None
        self.apply(self._init_weights)

    def cache_text_prefix(self, max_bytes: int = 2 << 30) -> bool:
        """Keep each text row's prefix (TextPrefixCache) in CPU training when it is constant: every
        weight of the embeddings and prefix layers frozen, no dropout in them. Call it once the
        weights are loaded and frozen. Returns whether the cache is on."""
        c = self.config
        prefix = [self.text_embeddings, *self.text_layers[:self.num_prefix_layers]]
        frozen = not any(p.requires_grad for module in prefix for p in module.parameters())
        constant = frozen and c.hidden_dropout_prob == 0 and c.attention_probs_dropout_prob == 0
        self.prefix_cache = TextPrefixCache(max_bytes) if constant and max_bytes > 0 else None
        return self.prefix_cache is not None

    def _run_layers(self, layers, start, end, num_fixed, x, mask, attentions: Optional[list],
                    packing: Optional[TokenPacking] = None, first_only: bool = False):
        """Layers start..end-1 on x; first_only: the last of them computes position 0 alone (the
        only one the pooler reads), so it returns (B, 1, size)."""
        for i in range(start, end):
            last_first_only = first_only and i == end - 1
            if last_first_only and packing is not None:
                x, packing = packing.pad(x), None
            # Layers below fixed_*_layer run without gradient (the originals' --freeze).
            with torch.set_grad_enabled(torch.is_grad_enabled() and i >= num_fixed):
                x, probs = layers[i](x, mask, attentions is not None, packing, last_first_only)
            if attentions is not None:
                attentions.append(probs)
        return x

    def _real_tokens(self, attention_mask, input_ids):
        """(B, T) 1 = real token, the task token (12-in-1) included."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if self.config.task_specific_tokens:  # the task token after [CLS] is always attended to
            attention_mask = torch.cat([attention_mask[:, :1], torch.ones_like(attention_mask[:, :1]), attention_mask[:, 1:]], 1)
        return attention_mask

    def _text_mask(self, attention_mask, input_ids):
        return additive_mask(self._real_tokens(attention_mask, input_ids))

    def _text_packing(self, real: torch.Tensor) -> Optional[TokenPacking]:
        """Pack the text stream to its real tokens (TokenPacking) when training on a CPU and the batch
        has padding: the text layers' work falls with the padding (the demo's pretraining step:
        about 1.4x faster). Not on a GPU (finding the real tokens is a host sync there, and a
        graph break under torch.compile), nor in evaluation, whose outputs at padding positions
        stay those of the originals' code."""
        if not self.training or real.device.type != "cpu" or torch.compiler.is_compiling() or bool(real.all()):
            return None
        return TokenPacking.from_mask(real)

    def _encode_text_prefix(self, input_ids, token_type_ids, task_tokens, text_mask, attentions,
                            packing: Optional[TokenPacking] = None, words=None):
        text = self.text_embeddings(input_ids, token_type_ids, task_tokens, words)  # (B, T, hidden)
        if packing is not None:
            text = packing.pack(text)  # (N, hidden)
        return self._run_layers(self.text_layers, 0, self.num_prefix_layers, self.config.fixed_t_layer,
                                text, text_mask, attentions, packing)

    def _cached_text_prefix(self, input_ids, token_type_ids, task_tokens, real, text_mask) -> torch.Tensor:
        """The packed (N, hidden) prefix of a training batch: rows the cache holds are read from it,
        the others computed (once per distinct row) and offered to it."""
        cache = self.prefix_cache
        keys = cache.keys(input_ids, token_type_ids, real, task_tokens)
        first = {}  # key of a row the cache lacks -> its first row in the batch
        for row, key in enumerate(keys):
            if key not in cache.rows:
                first.setdefault(key, row)
        fresh: Dict[bytes, torch.Tensor] = {}
        if first:
            index = torch.tensor(list(first.values()), device=input_ids.device)
            pick = lambda x: None if x is None else x.index_select(0, index)  # noqa: E731
            sub_real = real.index_select(0, index)
            out = self._encode_text_prefix(pick(input_ids), pick(token_type_ids), pick(task_tokens),
                                           text_mask.index_select(0, index), None, TokenPacking.from_mask(sub_real))
            fresh = dict(zip(first, out.split(sub_real.sum(1).tolist())))
            cache.store(fresh)
        cache.misses += len(first)
        cache.hits += len(keys) - len(first)
        return torch.cat([fresh[key] if key in fresh else cache.rows[key] for key in keys])

    def encode_text_prefix(self, input_ids, token_type_ids=None, attention_mask=None, task_tokens=None):
        """Embeddings + the text layers before the first co-attention block: (B, T, hidden_size).

        Independent of the image, so retrieval computes it once per caption and passes it to
        `forward(..., text_prefix=...)` (with the same attention_mask).
        """
        text_mask = self._text_mask(attention_mask, input_ids)
        return self._encode_text_prefix(input_ids, token_type_ids, task_tokens, text_mask, None)

    def forward(self, input_ids, image_feat, image_loc, token_type_ids=None, attention_mask=None,
                image_attention_mask=None, output_attentions: bool = False, text_prefix=None,
                task_tokens=None, pooled_only_t: bool = False, pooled_only_v: bool = False,
                words=None) -> ViLBertOutput:
        """input_ids (B, T) long; image_feat (B, R, v_feature_size); image_loc (B, R, 5);
        token_type_ids (B, T); attention_mask (B, T) and image_attention_mask (B, R), 1 = real;
        text_prefix: (B, T, hidden) from encode_text_prefix, or (1, T, hidden) shared by all B
        images (then input_ids/attention_mask may have batch 1 too); task_tokens (B,) or (B, 1).

        pooled_only_t / pooled_only_v: the caller reads only that stream's pooled vector, so the
        stream's last layer (when one runs after the last co-attention block) computes position 0
        alone and sequence_output_t / _v is (B, 1, size). The pooled vectors are unchanged; for
        scoring and the pooled heads (VQA, VCR, retrieval) this skips most of a layer per stream.
        words: (B, T, hidden) word vectors of input_ids looked up by the caller (TiedWordMatrix).
        """
        c = self.config
        if output_attentions:  # the maps of every position were asked for
            pooled_only_t = pooled_only_v = False
        if image_attention_mask is None:
            image_attention_mask = torch.ones(image_feat.shape[:2], dtype=torch.long, device=image_feat.device)
        packing = None
        if text_prefix is not None and input_ids is None and attention_mask is None:
            text_mask = additive_mask(torch.ones(text_prefix.shape[:2], device=text_prefix.device))
        else:
            real_tokens = self._real_tokens(attention_mask, input_ids)
            text_mask = additive_mask(real_tokens)  # (B, 1, 1, T)
            if text_prefix is None and not output_attentions:
                packing = self._text_packing(real_tokens)
        visual_mask = additive_mask(image_attention_mask)  # (B, 1, 1, R)
        attentions = dict(text=[], visual=[], text_to_visual=[], visual_to_text=[]) if output_attentions else None
        get = (lambda key: attentions[key]) if attentions is not None else (lambda key: None)

        if text_prefix is None and self.prefix_cache is not None and not output_attentions \
                and real_tokens.device.type == "cpu":
            text = self._cached_text_prefix(input_ids, token_type_ids, task_tokens, real_tokens, text_mask)
            if packing is None:  # evaluation: the rest runs padded, on zeros at the padding positions
                text = TokenPacking.from_mask(real_tokens).pad(text)
        elif text_prefix is None:
            # (B, T, hidden), or (N, hidden) rows of the real tokens when packed
            text = self._encode_text_prefix(input_ids, token_type_ids, task_tokens, text_mask, get("text"), packing,
                                            words)
        else:
            text = text_prefix
        visual = self.region_embeddings(image_feat, image_loc)  # (B, R, v_hidden)
        if packing is None and text.shape[0] != visual.shape[0]:  # one caption against many images (fast_mode)
            text = text.expand(visual.shape[0], -1, -1)
            text_mask = text_mask.expand(visual.shape[0], -1, -1, -1)

        text_start, visual_start = self.num_prefix_layers, 0
        for block, visual_end, text_end in zip(self.coattention_layers, c.v_biattention_id, c.t_biattention_id):
            visual = self._run_layers(self.visual_layers, visual_start, visual_end, c.fixed_v_layer,
                                      visual, visual_mask, get("visual"))
            text = self._run_layers(self.text_layers, text_start, text_end, c.fixed_t_layer,
                                    text, text_mask, get("text"), packing)
            if c.with_coattention:
                visual, text, v2t, t2v = block(visual, visual_mask, text, text_mask, output_attentions, packing)
                if attentions is not None:
                    attentions["visual_to_text"].append(v2t)
                    attentions["text_to_visual"].append(t2v)
            visual_start, text_start = visual_end, text_end
        visual = self._run_layers(self.visual_layers, visual_start, c.v_num_hidden_layers, c.fixed_v_layer,
                                  visual, visual_mask, get("visual"), first_only=pooled_only_v)
        if pooled_only_t and text_start < c.num_hidden_layers:
            text = self._run_layers(self.text_layers, text_start, c.num_hidden_layers, c.fixed_t_layer,
                                    text, text_mask, get("text"), packing, first_only=True)  # (B, 1, hidden)
        else:
            text = self._run_layers(self.text_layers, text_start, c.num_hidden_layers, c.fixed_t_layer,
                                    text, text_mask, get("text"), packing)
            if packing is not None:
                text = packing.pad(text)  # (B, T, hidden), zeros at the padding

        pooled_t = F.relu(self.text_pooler(text[:, 0]))  # [CLS]
        pooled_v = F.relu(self.visual_pooler(visual[:, 0]))  # the global region
        return ViLBertOutput(text, visual, pooled_t, pooled_v, attentions)


class ViLBertForPretraining(ViLBertPreTrainedModel):
    """ViLBERT with its proxy tasks (REFERENCE 2): masked language modelling, masked region
    modelling and image-caption alignment."""

    def __init__(self, config: ViLBertConfig):
        super().__init__(config)
        self.vilbert = ViLBertModel(config)
        self.mlm_head = MaskedLanguageModelHead(config, self.vilbert.text_embeddings.word_embeddings)
        self.region_head = MaskedRegionHead(config)
        self.alignment_head = nn.Linear(config.bi_hidden_size, 2)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        for module in (self.mlm_head, self.region_head, self.alignment_head):
            module.apply(self._init_weights)
        # The init above re-drew the shared decoder/embedding matrix; restore the padding row.
        with torch.no_grad():
            self.vilbert.text_embeddings.word_embeddings.weight[0].zero_()

    def tied_parameter_names(self) -> Dict[str, str]:
        return {"mlm_head.decoder.weight": "vilbert.text_embeddings.word_embeddings.weight"}

    def _ties_word_gradients(self, input_ids, masked_lm_labels, text_prefix) -> bool:
        """Whether this step sums the tied matrix's two gradients in place (TiedWordMatrix): a CPU
        training step that looks words up and decodes masked ones, the matrix trained. On a GPU
        the dense gradient is cheap and its deterministic kernel is kept."""
        weight = self.vilbert.text_embeddings.word_embeddings.weight
        return (weight.device.type == "cpu" and weight.requires_grad and torch.is_grad_enabled()
                and masked_lm_labels is not None and input_ids is not None and text_prefix is None
                and self.vilbert.prefix_cache is None)

    def forward(self, input_ids, image_feat, image_loc, token_type_ids=None, attention_mask=None,
                image_attention_mask=None, masked_lm_labels=None, image_label=None, image_target=None,
                next_sentence_label=None, output_attentions: bool = False, img_weight: Optional[float] = None,
                text_prefix=None, task_tokens=None) -> PretrainingOutput:
        """Inputs as ViLBertModel.forward, plus labels (each optional, each adds its loss):

        masked_lm_labels (B, T) long, < 0 = not a target (the originals use -1);
        image_label (B, R) long, 1 = a masked region to predict (region 0 is never a target);
        image_target (B, R, v_target_size) class distribution (visual_target 0) or
            (B, R, v_feature_size) features (visual_target 1), read where image_label == 1;
        next_sentence_label (B,) long, 0 = the caption belongs to the image, 1 = random, -1 = ignore.
        img_weight overrides config.img_weight.
        """
        words = decoder_weight = None
        if self._ties_word_gradients(input_ids, masked_lm_labels, text_prefix):
            weight = self.vilbert.text_embeddings.word_embeddings.weight
            padding_idx = self.vilbert.text_embeddings.word_embeddings.padding_idx
            words, decoder_weight = TiedWordMatrix.apply(weight, input_ids, padding_idx)
        out = self.vilbert(input_ids, image_feat, image_loc, token_type_ids, attention_mask,
                           image_attention_mask, output_attentions, text_prefix, task_tokens, words=words)
        text, visual = out.sequence_output_t, out.sequence_output_v
        losses = {}

        if masked_lm_labels is None:
            scores_t = self.mlm_head(text)  # (B, T, vocab)
        else:
            if self.config.task_specific_tokens:  # the task token is never a target
                masked_lm_labels = torch.cat([masked_lm_labels[:, :1], torch.full_like(masked_lm_labels[:, :1], -1),
                                              masked_lm_labels[:, 1:]], 1)
            _check_shape("masked_lm_labels", masked_lm_labels, text.shape[:2])
            targeted = masked_lm_labels >= 0  # (B, T)
            scores_t = self.mlm_head(text[targeted], decoder_weight)  # (N_t, vocab): the decoder runs on targets only
            labels = masked_lm_labels[targeted]
            # Sum / count rather than mean: a batch with no targets gives 0, not NaN.
            losses["masked_lm_loss"] = F.cross_entropy(scores_t.float(), labels, reduction="sum") / targeted.sum().clamp(min=1)

        if image_label is None or image_target is None:
            scores_v = self.region_head(visual)  # (B, R, region_target_size)
        else:
            _check_shape("image_label", image_label, visual.shape[:2])
            _check_shape("image_target", image_target, (*visual.shape[:2], self.config.region_target_size))
            targeted = image_label == 1
            targeted[:, 0] = False  # the global region is never a target (REFERENCE 2)
            scores_v = self.region_head(visual[targeted])  # (N_v, region_target_size)
            target = image_target[targeted].float()
            count = targeted.sum().clamp(min=1)
            if self.config.visual_target == 0:
                # KL(detector distribution || softmax(prediction)) per region, mean over regions.
                kl = F.kl_div(F.log_softmax(scores_v.float(), dim=-1), target, reduction="sum")
                losses["masked_img_loss"] = kl / count
            else:
                # Feature regression: mean squared error over regions and feature dimensions.
                mse = F.mse_loss(scores_v.float(), target, reduction="sum")
                losses["masked_img_loss"] = mse / (count * target.shape[-1])

        pooled = self.dropout(fuse(out.pooled_output_t, out.pooled_output_v, self.config.fusion_method))
        seq_relationship_score = self.alignment_head(pooled)  # (B, 2)
        if next_sentence_label is not None:
            losses["next_sentence_loss"] = F.cross_entropy(
                seq_relationship_score.float(), next_sentence_label.reshape(-1), ignore_index=-1)

        loss = None
        if losses:
            weight = self.config.img_weight if img_weight is None else img_weight
            loss = sum(value * (weight if name == "masked_img_loss" else 1.0) for name, value in losses.items())
        return PretrainingOutput(scores_t, scores_v, seq_relationship_score, loss, attentions=out.attentions, **losses)


VL_HEADS = ("vil_prediction", "vil_logit", "vision_logit", "linguisic_logit",
            "vil_prediction_gqa", "vil_binary_prediction", "vil_tri_prediction")


class ViLBertForVLTasks(ViLBertPreTrainedModel):
    """ViLBERT with the task heads of REFERENCE 2 (the originals' VILBertForVLTasks).

    num_labels: answers of the VL-classifier (3129 for VQA). dropout_prob: dropout on the fused
    vector and on the sequences before the per-region/per-token heads. multitask_heads: also build
    12-in-1's GQA (1533), binary (NLVR2) and three-way (entailment) heads, as its checkpoints hold.
    The VL-classifier variant is config.vl_classifier ("beta" or "12in1").
    """

    def __init__(self, config: ViLBertConfig, num_labels: int = 3129, dropout_prob: float = 0.1,
                 multitask_heads: bool = False):
        super().__init__(config)
        c = config
        self.num_labels = num_labels
        self.vilbert = ViLBertModel(c)
        self.dropout = nn.Dropout(dropout_prob)
        classifier = BetaClassifier if c.vl_classifier == "beta" else GeLUClassifier
        self.vil_prediction = classifier(c.bi_hidden_size, 2 * c.bi_hidden_size, num_labels, c.layer_norm_eps)
        self.vil_logit = nn.Linear(c.bi_hidden_size, 1)
        self.vision_logit = nn.Linear(c.v_hidden_size, 1)
        self.linguisic_logit = nn.Linear(c.hidden_size, 1)
        self.multitask_heads = multitask_heads
        if multitask_heads:
            self.vil_prediction_gqa = GeLUClassifier(c.bi_hidden_size, 2 * c.bi_hidden_size, GQA_NUM_LABELS, c.layer_norm_eps)
            self.vil_binary_prediction = GeLUClassifier(2 * c.bi_hidden_size, 2 * c.bi_hidden_size, 2, c.layer_norm_eps)
            self.vil_tri_prediction = nn.Linear(c.bi_hidden_size, 3)
        for name, module in self.named_children():
            if name != "vilbert":
                module.apply(self._init_weights)

    def forward(self, input_ids, image_feat, image_loc, token_type_ids=None, attention_mask=None,
                image_attention_mask=None, task_tokens=None, heads: Optional[Iterable[str]] = None,
                output_attentions: bool = False, text_prefix=None) -> VLTasksOutput:
        """Inputs as ViLBertModel.forward. `heads` (names from VL_HEADS) limits which heads run;
        default: every head the model has (vil_binary_prediction only for an even batch)."""
        available = VL_HEADS if self.multitask_heads else VL_HEADS[:4]
        heads = set(available if heads is None else heads)
        if not heads <= set(available):
            raise ValueError(f"unknown or unbuilt heads {sorted(heads - set(available))}; this model has {available}")
        if image_attention_mask is None:
            image_attention_mask = torch.ones(image_feat.shape[:2], dtype=torch.long, device=image_feat.device)
        # The per-token and per-region heads read whole sequences; the others only the pooled vectors.
        out = self.vilbert(input_ids, image_feat, image_loc, token_type_ids, attention_mask,
                           image_attention_mask, output_attentions, text_prefix, task_tokens,
                           pooled_only_t="linguisic_logit" not in heads, pooled_only_v="vision_logit" not in heads)
        pooled = self.dropout(fuse(out.pooled_output_t, out.pooled_output_v, self.config.fusion_method))  # (B, bi)
        result = VLTasksOutput(attentions=out.attentions)
        if "vil_prediction" in heads:
            result.vil_prediction = self.vil_prediction(pooled)
        if "vil_logit" in heads:
            result.vil_logit = self.vil_logit(pooled)
        if "vision_logit" in heads:
            logit = self.vision_logit(self.dropout(out.sequence_output_v))  # (B, R, 1)
            result.vision_logit = logit + additive_mask(image_attention_mask)[:, 0, 0, :, None].to(logit.dtype)
        if "linguisic_logit" in heads:
            result.linguisic_logit = self.linguisic_logit(self.dropout(out.sequence_output_t))
        if "vil_prediction_gqa" in heads:
            result.vil_prediction_gqa = self.vil_prediction_gqa(pooled)
        if "vil_binary_prediction" in heads and pooled.shape[0] % 2 == 0:
            result.vil_binary_prediction = self.vil_binary_prediction(pooled.reshape(-1, 2 * pooled.shape[1]))
        if "vil_tri_prediction" in heads:
            result.vil_tri_prediction = self.vil_tri_prediction(pooled)
        return result


def _check_shape(name: str, tensor: torch.Tensor, expected) -> None:
    if tuple(tensor.shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(expected)}")
