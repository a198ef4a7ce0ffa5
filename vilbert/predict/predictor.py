"""The Predictor: a checkpoint loaded once, asked questions, expressions and captions about pictures.

Every (text, picture) pair of a call goes through the model in batches of `batch_size` pairs.
The text layers before the first co-attention block do not see the picture (REFERENCE 1), so
each text's output of those layers (`encode_text_prefix`) is computed once and kept: a question
asked of several pictures, or a caption scored against many, pays for them once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from vilbert.model import NUM_TASK_TOKENS
from vilbert.predict.checkpoint import find_label2ans, load_checkpoint, read_label2ans
from vilbert.predict.errors import PredictError
from vilbert.predict.features import FeatureOptions, ImageLike, ImageRegions, PictureFeatures
from vilbert.predict.results import (AlignmentResult, Answer, AnswerResult, AttentionMap, CaptionScore,
                                     GroundingResult, ImageInfo, Region, Source)
from vilbert.tasks.config import TASK_TOKEN_BY_NAME

MODES = ("question", "expression", "caption")
# Each mode answers as the task it stands for, with that task's row of 12-in-1's task-token table
# (the rows train_tasks.py uses: vilbert.tasks.config.TASK_TOKEN_BY_NAME; VQA 1, Flickr30k 8, RefCOCO+ 10).
TASK_TOKEN_ROWS = {mode: TASK_TOKEN_BY_NAME[task]
                   for mode, task in (("question", "VQA"), ("caption", "RetrievalFlickr30k"), ("expression", "refcoco+"))}
DEFAULT_MAX_REGIONS = 101  # 100 regions + the global one, as the originals' task readers


class Predictor:
    """A checkpoint ready to answer: loaded once, on its device, in eval mode, with a feature cache.

    checkpoint: our directory or a released .bin/.tar; config_file: the model config of a released
    file (default checkpoint.DEFAULT_ORIGINAL_CONFIG); bert_model: the tokenizer (a BERT directory or hub
    name); features: how pictures become regions (FeatureOptions); cache_dir: the disk cache of
    picture features (None: memory only); answers / tasks_config: where the VQA vocabulary is
    (find_label2ans); task_token: a task-token row for every call (default TASK_TOKEN_ROWS);
    max_regions: regions per picture, the global one included; batch_size: (text, picture) pairs
    per forward pass. Errors are PredictError, one line each.
    """

    def __init__(self, checkpoint, *, bert_model="bert-base-uncased", config_file=None, device=None,
                 precision: Optional[str] = None, features: Optional[FeatureOptions] = None,
                 cache_dir=None, answers=None, tasks_config=None, task_token: Optional[int] = None,
                 max_regions: int = DEFAULT_MAX_REGIONS, max_text_length: int = 40, batch_size: int = 64):
        from vilbert.training.precision import Precision

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            self.precision = Precision.create(precision, self.device)
        except ValueError as exc:
            raise PredictError(str(exc)) from None
        self.model, self.checkpoint, self.alignment_head = load_checkpoint(checkpoint, config_file)
        self.model.to(self.device)
        if self.alignment_head is not None:
            self.alignment_head.to(self.device).eval()
        self.config = self.model.config
        try:
            from vilbert.tokenization import load_tokenizer

            self.tokenizer = load_tokenizer(bert_model)
        except (OSError, ValueError, RuntimeError) as exc:
            raise PredictError(f"--bert_model {bert_model}: {' '.join(str(exc).split())}") from None
        if len(self.tokenizer) > self.config.vocab_size:
            raise PredictError(f"--bert_model {bert_model}: {len(self.tokenizer)} tokens, but the checkpoint's "
                               f"vocabulary has {self.config.vocab_size}")
        self.pictures = PictureFeatures(features, cache_dir, self.device, self.config.v_feature_size)
        self._answers_at = (answers, tasks_config)
        self._label2ans: Optional[list] = None
        if task_token is not None:
            self._check_task_token(task_token)
        self.task_token = task_token
        if max_regions < 2:
            raise PredictError(f"--max-regions must be at least 2 (the global region and one box), got {max_regions}")
        self.max_regions = max_regions
        # The text positions the model has, less the task token's.
        self.max_text_length = min(max_text_length, self.config.max_position_embeddings - int(self.config.task_specific_tokens))
        self.batch_size = batch_size
        self._prefixes: OrderedDict = OrderedDict()  # (text, task token) -> encoded text and its prefix

    # -- pictures --

    def regions(self, image: ImageLike, image_id: Optional[str] = None) -> ImageRegions:
        """A picture's regions (PictureFeatures.regions): a file path, the file's bytes, a PIL image
        or an HxWx3 uint8 array; extracted once, then read from the feature cache."""
        return self.pictures.regions(image, image_id)

    def stored_regions(self, store, image_id, image_path=None) -> ImageRegions:
        """The regions of `image_id` in a feature store; image_path: the picture, for drawing."""
        return self.pictures.stored(store, image_id, image_path)

    # -- the three modes --

    def answer(self, question: str, images, *, top_k: int = 5, attention: bool = False,
               task_token: Optional[int] = None):
        """VQA: the top_k answers, best first (an AnswerResult, or a list for a list of pictures)."""
        label2ans = self.label2ans()
        single, pictures = self._pictures(images)
        out = self._run([question], pictures, "vil_prediction", self._token("question", task_token), attention)
        results = []
        for j, picture in enumerate(pictures):
            logits = out.head[j].float()  # (num_labels,)
            probs, scores = logits.softmax(-1), logits.sigmoid()
            top = probs.topk(min(top_k, logits.numel()))
            answers = [Answer(label2ans[i], i, float(p), float(scores[i]))
                       for p, i in zip(top.values.tolist(), top.indices.tolist())]
            results.append(AnswerResult(question, out.info(j), answers, out.source(picture), out.attention(0, j)))
        return results[0] if single else results

    def ground(self, expression: str, images, *, top_k: int = 5, attention: bool = False,
               task_token: Optional[int] = None):
        """Referring expression: the region it names (`best`) and the next top_k - 1 (a
        GroundingResult, or a list for a list of pictures). Every region the model sees is a
        candidate, the whole picture (region 0) too, as in RefCOCO+ evaluation."""
        self._require("vision_logit")
        single, pictures = self._pictures(images)
        out = self._run([expression], pictures, "vision_logit", self._token("expression", task_token), attention)
        results = []
        for j, picture in enumerate(pictures):
            real = out.padded[j].num_real
            logits = out.head[j, :real, 0].float()  # (regions,)
            probs = logits.softmax(-1)
            order = probs.argsort(descending=True)[:max(1, top_k)].tolist()
            boxes = out.padded[j].boxes
            regions = [Region(i, [round(float(v), 2) for v in boxes[i]], float(probs[i]), float(logits[i])) for i in order]
            results.append(GroundingResult(expression, out.info(j), regions[0], regions[1:], out.source(picture),
                                           out.attention(0, j)))
        return results[0] if single else results

    def align(self, captions: Sequence[str], images, *, scorer: str = "auto", attention: bool = False,
              task_token: Optional[int] = None):
        """How well each caption fits each picture (an AlignmentResult, or a list for a list of
        pictures). scorer: "retrieval" (the vil_logit head of a finetuned checkpoint),
        "alignment" (zero-shot: the pretraining alignment head) or "auto" (retrieval when the
        checkpoint has that head, else alignment)."""
        if isinstance(captions, str):
            captions = [captions]
        if not captions:
            raise PredictError("give at least one caption")
        head = self._caption_head(scorer)
        single, pictures = self._pictures(images)
        out = self._run(list(captions), pictures, head, self._token("caption", task_token), attention)
        results = []
        for j, picture in enumerate(pictures):
            values = out.head[j * len(captions):(j + 1) * len(captions), 0].float()  # (captions,)
            probs = values if head == "alignment" else values.softmax(-1)
            ranks = (-values).argsort().argsort() + 1
            scores = [CaptionScore(c, float(values[i]), float(probs[i]), int(ranks[i]), out.attention(i, j))
                      for i, c in enumerate(captions)]
            results.append(AlignmentResult(out.info(j), scores, out.source(picture)))
        return results[0] if single else results

    def predict(self, mode: str, texts, images, **options):
        """answer / ground / align by mode name ("question", "expression", "caption")."""
        if mode == "question":
            return self.answer(_one_text(texts, mode), images, **options)
        if mode == "expression":
            return self.ground(_one_text(texts, mode), images, **options)
        if mode == "caption":
            return self.align(texts, images, **options)
        raise PredictError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")

    # -- pieces --

    def label2ans(self) -> list:
        """The VQA answer vocabulary (read once; PredictError when none is found or it does not fit)."""
        if "vil_prediction" not in self.checkpoint.heads:
            raise PredictError(f"--checkpoint {self.checkpoint.path}: no VQA head (vil_prediction) in this "
                               f"{self.checkpoint.model_class} checkpoint; use a checkpoint finetuned on VQA")
        if self._label2ans is None:
            path = find_label2ans(self.checkpoint.path, *self._answers_at)
            if path is None:
                raise PredictError("no VQA answer vocabulary: pass --answers <dataroot>/cache/trainval_label2ans.json "
                                   "(or the originals' trainval_label2ans.pkl), or --tasks_config with the VQA task")
            label2ans = read_label2ans(path)
            if len(label2ans) != self.checkpoint.num_labels:
                raise PredictError(f"answer vocabulary {path}: {len(label2ans)} answers, but the checkpoint's VQA head "
                                   f"has {self.checkpoint.num_labels}")
            self._label2ans = label2ans
        return self._label2ans

    def check(self, mode: str) -> None:
        """PredictError (why) where this checkpoint cannot answer `mode` ("question": a VQA head and
        its answer vocabulary; "expression": the region head; "caption": a retrieval or alignment
        head): the checks predict/locate/align make before answering, without a picture."""
        if mode == "question":
            self.label2ans()
        elif mode == "expression":
            self._require("vision_logit")
        elif mode == "caption":
            self._caption_head("auto")
        else:
            raise ValueError(f"unknown mode {mode!r}")

    def _require(self, head: str) -> None:
        if head not in self.checkpoint.heads:
            raise PredictError(f"--checkpoint {self.checkpoint.path}: no trained {head} head in this "
                               f"{self.checkpoint.model_class} checkpoint (it has: {', '.join(self.checkpoint.heads) or 'none'})")

    def _caption_head(self, scorer: str) -> str:
        heads, where = self.checkpoint.heads, f"--checkpoint {self.checkpoint.path}"
        if scorer == "auto":
            scorer = "retrieval" if "vil_logit" in heads else "alignment"
        if scorer == "retrieval":
            if "vil_logit" not in heads:
                raise PredictError(f"{where}: no retrieval head (vil_logit); use --scorer alignment with a pretraining "
                                   "checkpoint, or a checkpoint finetuned on retrieval")
            return "vil_logit"
        if scorer == "alignment":
            if self.alignment_head is None:
                raise PredictError(f"{where}: no image-text alignment head (a {self.checkpoint.model_class} saved "
                                   "without the pretraining heads); use a pretraining checkpoint or --scorer retrieval")
            return "alignment"
        raise PredictError(f"--scorer must be auto, retrieval or alignment, not {scorer!r}")

    def _check_task_token(self, row: int) -> None:
        if not self.config.task_specific_tokens:
            raise PredictError(f"--task-token {row}: this checkpoint has no task tokens")
        if not 0 <= row < NUM_TASK_TOKENS:
            raise PredictError(f"--task-token {row}: the task-token table has rows 0..{NUM_TASK_TOKENS - 1}")

    def _token(self, mode: str, given: Optional[int]) -> Optional[int]:
        """The task-token row of a call: given, else the predictor's, else TASK_TOKEN_ROWS[mode];
        None for a model without task tokens."""
        if given is not None:
            self._check_task_token(given)
            return given
        if not self.config.task_specific_tokens:
            return None
        return self.task_token if self.task_token is not None else TASK_TOKEN_ROWS[mode]

    def _pictures(self, images) -> tuple:
        single = not isinstance(images, (list, tuple))
        pictures = [self.regions(image) for image in ([images] if single else images)]
        if not pictures:
            raise PredictError("give at least one picture")
        return single, pictures

    def _text(self, texts: list, task_token: Optional[int]):
        """Token ids (C, T) of the texts and their image-independent prefix (C, T', hidden): the text
        layers before the first co-attention block, computed once per (text, task token) and kept."""
        from vilbert.data.collate import TEXT_KEYS, encode_text

        new = [t for t in dict.fromkeys(texts) if (t, task_token) not in self._prefixes]
        if new:
            arrays = encode_text(self.tokenizer, new, max_length=self.max_text_length)
            batch = {key: torch.from_numpy(arrays[key]).long().to(self.device) for key in TEXT_KEYS}
            tokens = None if task_token is None else torch.full((len(new), 1), task_token, device=self.device)
            with self.precision.autocast():
                prefix = self.model.vilbert.encode_text_prefix(*(batch[key] for key in TEXT_KEYS), task_tokens=tokens)
            extra = prefix.shape[1] - batch["input_ids"].shape[1]  # the task token's column
            lengths = batch["attention_mask"].sum(1).clamp(min=1).tolist()  # one transfer, not one per text
            for i, (text, length) in enumerate(zip(new, lengths)):
                self._prefixes[(text, task_token)] = ({key: batch[key][i, :length] for key in TEXT_KEYS},
                                                      prefix[i, :length + extra])
                while len(self._prefixes) > 256:
                    self._prefixes.popitem(last=False)
        # Texts of several lengths: padded (ids 0, mask 0) to the longest; the padding rows of the
        # prefix are zeros, masked out like any padding.
        entries = [self._prefixes[(t, task_token)] for t in texts]
        inputs = {key: pad_sequence([ids[key] for ids, _ in entries], batch_first=True) for key in TEXT_KEYS}  # (C, T)
        prefix = pad_sequence([prefix for _, prefix in entries], batch_first=True)  # (C, T', hidden)
        return inputs, prefix

    @torch.inference_mode()
    def _run(self, texts: list, pictures: list, head: str, task_token: Optional[int], attention: bool) -> "_Outputs":
        """Every (text, picture) pair through the model, `batch_size` pairs at a time; pair
        j * len(texts) + i is text i with picture j."""
        from vilbert.data.collate import collate, region_arrays
        from vilbert.features import pad_regions
        from vilbert.model import fuse

        if head != "alignment":
            self._require(head)
        started = time.perf_counter()
        text, prefix = self._text(texts, task_token)
        padded = [pad_regions(p.item, self.max_regions) for p in pictures]
        regions = max(p.num_real for p in padded)  # rows past every picture's last region are all padding
        # The datasets' collation path: (P, R, D) features, (P, R, 5) locations, (P, R) mask.
        image = {key: value[:, :regions].to(self.device) for key, value in
                 collate([region_arrays(p) for p in padded]).items()}
        pairs = [(i, j) for j in range(len(pictures)) for i in range(len(texts))]
        heads, maps = [], []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start:start + self.batch_size]
            t = torch.tensor([i for i, _ in chunk], device=self.device)
            v = torch.tensor([j for _, j in chunk], device=self.device)
            inputs = {**{k: x[t] for k, x in text.items()}, **{k: x[v] for k, x in image.items()}}
            with self.precision.autocast():
                if head == "alignment":
                    out = self.model.vilbert(**inputs, text_prefix=prefix[t], output_attentions=attention,
                                             pooled_only_t=True, pooled_only_v=True)
                    pooled = fuse(out.pooled_output_t, out.pooled_output_v, self.config.fusion_method)
                    value = self.alignment_head(pooled).float().softmax(-1)[:, :1]  # (b, 1) P(aligned): label 0
                else:
                    out = self.model(**inputs, text_prefix=prefix[t], heads={head}, output_attentions=attention)
                    value = getattr(out, head)
            heads.append(value.float().cpu())
            if attention:
                maps.append(torch.stack(out.attentions["text_to_visual"], 1).float().cpu())  # (b, layers, H, T', R)
        elapsed = time.perf_counter() - started
        tokens = [self._tokens(text["input_ids"][i], task_token) for i in range(len(texts))]
        return _Outputs(self, torch.cat(heads), torch.cat(maps) if maps else None, pictures, padded, tokens,
                        len(texts), head, task_token, elapsed)

    def _tokens(self, ids: torch.Tensor, task_token: Optional[int]) -> list:
        tokens = self.tokenizer.convert_ids_to_tokens(ids[ids != 0].tolist())
        return tokens[:1] + [f"[TASK {task_token}]"] + tokens[1:] if task_token is not None else tokens


@dataclass
class _Outputs:
    """What _run computed, and the per-pair pieces the three modes read from it."""

    predictor: Predictor
    head: torch.Tensor  # (pairs, ...) the head's output
    maps: Optional[torch.Tensor]  # (pairs, layers, heads, T', R) text-to-region co-attention, or None
    pictures: list  # ImageRegions
    padded: list  # PaddedRegions per picture
    tokens: list  # per text: its tokens as the model saw them
    num_texts: int
    head_name: str
    task_token: Optional[int]
    model_seconds: float

    def source(self, picture: ImageRegions) -> Source:
        seconds = {"features": round(picture.seconds, 4), "model": round(self.model_seconds, 4),
                   "total": round(picture.seconds + self.model_seconds, 4)}
        return Source(self.predictor.checkpoint.path, self.head_name, self.task_token, seconds)

    def info(self, j: int) -> ImageInfo:
        picture, item = self.pictures[j], self.pictures[j].item
        return ImageInfo(picture.image_id, picture.path, int(item.image_w), int(item.image_h),
                         self.padded[j].num_real - 1, picture.features)

    def attention(self, i: int, j: int) -> Optional[AttentionMap]:
        """The map of text i on picture j, cut to the real tokens and regions."""
        if self.maps is None:
            return None
        real = self.padded[j].num_real
        maps = self.maps[j * self.num_texts + i, :, :, :len(self.tokens[i]), :real].numpy()
        boxes = [[round(float(v), 2) for v in box] for box in self.padded[j].boxes[:real]]
        return AttentionMap(self.tokens[i], boxes, maps)


def _one_text(texts, mode: str) -> str:
    if isinstance(texts, str):
        return texts
    if len(texts) != 1:
        raise PredictError(f"--{mode} takes one text, got {len(texts)}")
    return texts[0]
