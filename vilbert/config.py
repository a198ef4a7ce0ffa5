"""ViLBertConfig: the model's hyper-parameters, with the original JSON field names.

Every `config/*.json` of `vilbert_beta` and `vilbert-multi-task` loads unchanged, so a config file
travels between the code bases. Fields the originals carry but never read (`pooling_method`,
`bi_intermediate_size`, ...) are accepted and written back as given; fields that would switch on an
experimental path of the originals we do not implement (`in_batch_pairs`, `dynamic_attention`, ...)
are accepted only at their off value. Any other field is an error that names it.
"""

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

VL_CLASSIFIERS = ("beta", "12in1")
FUSION_METHODS = ("mul", "sum")
HIDDEN_ACTS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh", "swish", "silu")
LOCATION_ENCODINGS = ("linear", "uniter", "fourier")


@dataclass
class ViLBertConfig:
    """Hyper-parameters of the two-stream model. Defaults are `bert_base_6layer_6conect.json`."""

    # Text stream: a BERT (field names and meaning as in Hugging Face's BertConfig).
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # "gelu" is the exact (erf) form, as BERT
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02  # std of every weight's normal init, both streams
    layer_norm_eps: float = 1e-12

    # Visual stream: detector region features in, BERT layers of their own sizes.
    v_feature_size: int = 2048  # dimension of a region feature
    v_target_size: int = 1601  # detector classes predicted for masked regions (visual_target 0)
    v_hidden_size: int = 1024
    v_num_hidden_layers: int = 6
    v_num_attention_heads: int = 8
    v_intermediate_size: int = 1024
    v_hidden_act: str = "gelu"
    v_hidden_dropout_prob: float = 0.1
    v_attention_probs_dropout_prob: float = 0.1
    v_initializer_range: float = 0.02  # read by the originals' config only; init uses initializer_range
    # How a region's 5-d box (x1, y1, x2, y2, area; fractions of the picture) enters its embedding.
    # "linear": LayerNorm(Linear(feature) + Linear(box)), the originals' (every original config).
    # "uniter": the box as 7-d (x1, y1, x2, y2, width, height, area), features and box each projected
    #   and LayerNorm-ed apart before the sum and the shared LayerNorm (UNITER's region embedding).
    # "fourier": as "uniter", the 7 numbers first encoded as sin / cos(2^k pi v), k < v_location_frequencies.
    # Not in the originals: a checkpoint loads only into a model of its own encoding.
    v_location_encoding: str = "linear"
    v_location_frequencies: int = 6  # "fourier" only: frequencies per box number
    # "uniter" / "fourier" only: > 0 scales the normalised place by a learned scalar that starts at
    # this value, so the place enters the sum at a small share and grows as far as it helps; 0: no gate.
    v_location_gate: float = 0.0

    # Co-attention: block k runs after visual layer v_biattention_id[k] - 1 and text layer
    # t_biattention_id[k] - 1 (REFERENCE 1 schedule).
    bi_hidden_size: int = 1024
    bi_num_attention_heads: int = 8
    v_biattention_id: List[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5])
    t_biattention_id: List[int] = field(default_factory=lambda: [6, 7, 8, 9, 10, 11])
    with_coattention: bool = True  # False: the two streams never meet before the poolers
    fusion_method: str = "mul"  # pooled text x pooled image ("mul") or their sum ("sum")

    # Training behaviour.
    visual_target: int = 0  # masked regions: 0 = KL to the class distribution, 1 = MSE to the feature
    predict_feature: bool = False  # beta's name for visual_target 1
    fixed_t_layer: int = 0  # text layers below this run without gradient (the originals' --freeze)
    fixed_v_layer: int = 0  # visual layers below this run without gradient
    task_specific_tokens: bool = False  # 12-in-1: a learned task token after [CLS]
    img_weight: float = 1.0  # pretraining loss = MLM + img_weight * region + alignment
    vl_classifier: str = "beta"  # VL-classifier head: "beta" (weight norm) or "12in1" (GeLU+LayerNorm)

    # Read by the originals but with no effect there (kept so their files round-trip unchanged).
    pooling_method: str = "mul"
    bi_intermediate_size: int = 1024
    bi_attention_type: int = 1
    fast_mode: bool = False  # here: pass a batch-1 `text_prefix`; it is shared by every image
    objective: int = 0
    num_negative: int = 128
    visualization: bool = False  # here: forward(output_attentions=True)
    finetuning_task: Optional[str] = None
    num_labels: int = 2
    output_attentions: bool = False
    output_hidden_states: bool = False
    torchscript: bool = False

    # Experimental switches of the originals; only their off value is supported.
    in_batch_pairs: bool = False
    dynamic_attention: bool = False
    intra_gate: bool = False
    model: str = "bert"

    def __post_init__(self):
        self._check_types()
        if self.predict_feature and self.visual_target == 0:
            self.visual_target = 1
        self._check_values()

    def _check_types(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            if value is None and default is None:
                continue
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif isinstance(default, float):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                if ok:
                    setattr(self, f.name, float(value))
            elif isinstance(default, list):
                ok = isinstance(value, (list, tuple)) and all(
                    isinstance(v, int) and not isinstance(v, bool) for v in value
                )
                if ok:
                    setattr(self, f.name, list(value))
            else:  # str fields (and the optional finetuning_task)
                ok = isinstance(value, str)
            if not ok:
                raise ValueError(
                    f"config field {f.name!r}: expected {type(default).__name__}, got {value!r}"
                )

    def _check_values(self):
        def fail(name, why):
            raise ValueError(f"config field {name!r} = {getattr(self, name)!r}: {why}")

        for size, heads in [
            ("hidden_size", "num_attention_heads"),
            ("v_hidden_size", "v_num_attention_heads"),
            ("bi_hidden_size", "bi_num_attention_heads"),
        ]:
            if getattr(self, size) % getattr(self, heads):
                fail(size, f"not a multiple of {heads} = {getattr(self, heads)}")
        if len(self.v_biattention_id) != len(self.t_biattention_id):
            fail("v_biattention_id", f"has a different length than t_biattention_id {self.t_biattention_id}")
        for name, num in [("v_biattention_id", self.v_num_hidden_layers), ("t_biattention_id", self.num_hidden_layers)]:
            ids = getattr(self, name)
            if any(b <= a for a, b in zip(ids, ids[1:])):
                fail(name, "must be strictly increasing")
            if ids and (ids[0] < 0 or ids[-1] >= num):
                fail(name, f"ids must lie in [0, {num})")
        if self.fusion_method not in FUSION_METHODS:
            fail("fusion_method", f"must be one of {FUSION_METHODS}")
        for name in ("hidden_act", "v_hidden_act"):
            if getattr(self, name) not in HIDDEN_ACTS:
                fail(name, f"must be one of {HIDDEN_ACTS}")
        if self.v_location_encoding not in LOCATION_ENCODINGS:
            fail("v_location_encoding", f"must be one of {LOCATION_ENCODINGS}")
        if self.v_location_frequencies < 1:
            fail("v_location_frequencies", "must be at least 1")
        if not (math.isfinite(self.v_location_gate) and self.v_location_gate >= 0):
            fail("v_location_gate", "must be a finite number >= 0")
        if self.v_location_gate > 0 and self.v_location_encoding == "linear":
            fail("v_location_gate", 'needs v_location_encoding "uniter" or "fourier" (the originals\' "linear" has no gate)')
        if self.visual_target not in (0, 1):
            fail("visual_target", "only 0 (KL to class distribution) and 1 (feature MSE) are implemented")
        if self.vl_classifier not in VL_CLASSIFIERS:
            fail("vl_classifier", f"must be one of {VL_CLASSIFIERS}")
        # The originals assert these: frozen layers must all run before the first co-attention block.
        if self.t_biattention_id and not 0 <= self.fixed_t_layer <= self.t_biattention_id[0]:
            fail("fixed_t_layer", f"must lie in [0, t_biattention_id[0] = {self.t_biattention_id[0]}]")
        if self.v_biattention_id and not 0 <= self.fixed_v_layer <= self.v_biattention_id[0]:
            fail("fixed_v_layer", f"must lie in [0, v_biattention_id[0] = {self.v_biattention_id[0]}]")
        for name in ("in_batch_pairs", "dynamic_attention", "intra_gate"):
            if getattr(self, name):
                fail(name, "this experimental option of the originals is not implemented")
        if self.model != "bert":
            fail("model", "only the BERT text stream is implemented")

    @property
    def region_target_size(self) -> int:
        """Output size of the masked-region head: class scores (visual_target 0) or a feature (1)."""
        return self.v_target_size if self.visual_target == 0 else self.v_feature_size

    @classmethod
    def from_dict(cls, values: Dict[str, Any], source: str = "config") -> "ViLBertConfig":
        """Build from a dict of original field names; an unknown field is an error naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ValueError(f"{source}: unknown config field {key!r}")
        try:
            return cls(**values)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

    @classmethod
    def from_json_file(cls, path: Union[str, Path]) -> "ViLBertConfig":
        """Read a config JSON (ours or an original's)."""
        path = Path(path)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: config file not found") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config file must hold a JSON object")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_json_file(self, path: Union[str, Path]) -> None:
        Path(path).write_text(self.to_json_string(), encoding="utf-8")
