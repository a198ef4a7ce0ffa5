"""Ask a ViLBERT checkpoint about your own pictures: a question (VQA answers), a referring
expression (the region it names) or captions (how well each fits the picture).

    python -m vilbert.predict --checkpoint CKPT --images a.jpg [b.jpg ...] --question "What colour is the star?"
    python -m vilbert.predict --checkpoint CKPT --features STORE --image-ids 42 --expression "the big red star" \
        --picture grounding.png
    python -m vilbert.predict --checkpoint CKPT --images a.jpg --caption "A red star." --caption "Two circles." --json
    python -m vilbert.predict --checkpoint multi_task_model.bin --images a.jpg --detector detectron_model.pth \
        --detector-config detectron_config.yaml --question "What is the man holding?"

In Python, one Predictor serves many requests (the model is loaded once, on its device, in eval
mode; features are cached per picture; each caption's image-independent text layers are kept):

    predictor = Predictor("multi_task_model.bin", bert_model="bert-base-uncased",
                          features=FeatureOptions(backbone="resnet101", weights="resnet101.pth"))
    result = predictor.answer("What colour is the star?", "a.jpg", top_k=5, attention=True)
    result.answers[0].answer, result.answers[0].probability, result.source.seconds
    result.attention.over_regions("[CLS]", layer=-1)          # (regions,) co-attention of a word
    predictor.ground("the big red star", "a.jpg").best.box     # [x1, y1, x2, y2] pixels
    predictor.align(["A red star.", "Two circles."], "a.jpg").captions[0].score
    predictor.answer(question, [predictor.stored_regions("features.lmdb", 42), "b.jpg"])   # a list

Checkpoints: our directory (config.json + model.safetensors), or a released `.bin`/`.tar` of
vilbert_beta or vilbert-multi-task (12-in-1) read through vilbert/convert.py with `--config_file`
(default config/bert_base_6layer_6conect.json, the config of every released model). A checkpoint
with task heads answers questions (`vil_prediction`), grounds expressions (`vision_logit`) and
scores captions with its retrieval head (`vil_logit`); a pretraining checkpoint scores captions
zero-shot with its image-text alignment head (P(aligned) = softmax(alignment)[0], REFERENCE 4).
Our finetuned directories store every head, trained or not: ask the head of the task the
checkpoint was trained for (the `metrics.json` of a `best/<task>` directory names it; it is shown).

Task tokens: 12-in-1 checkpoints carry a 20-row task-token table indexed by the task ids of
12-in-1's `vilbert_tasks.yml`; TASK_TOKEN_ROWS is the one place that maps each mode to its row
(VQA 1, RetrievalFlickr30k 8, refcoco+ 10). `--task-token N` picks another row (RefCOCO 9,
RefCOCOg 11, COCO retrieval 7), e.g. for a checkpoint trained here with `--task_specific_tokens`
before issue 12, whose rows were the seed's `--tasks` ids (Flickr30k 9, RefCOCO+ 11).

VQA answers: probability = softmax of the answer logits over the whole vocabulary (the top-k sum
to at most 1); score = sigmoid of the logit, the head's estimate of that answer's VQA soft score
(the head is trained with binary cross-entropy, so scores are independent and need not sum to 1).
The vocabulary (`label2ans`, index = label) is `--answers FILE` (our JSON list, or the originals'
`trainval_label2ans.pkl`, read with the restricted unpickler), else `label2ans.json` /
`trainval_label2ans.{json,pkl}` beside the checkpoint, else `<dataroot>/cache/<train_split>_label2ans`
of the VQA task of `--tasks_config`.

Features: with `--features STORE --image-ids ...`, the stored regions; with `--images`, the
extractor of `python -m vilbert.features extract` with the same options (FeatureOptions;
`features.feature_source` is the one place that turns a picture into regions, through that
command's own RegionExtractor), cached per picture under `--cache` (default
~/.cache/vilbert/features; keyed by the file's content, the extractor settings with the identity of
every file they name and, for `--boxes gt`, the image id), in the feature store's record format.
A released 12-in-1 checkpoint needs 12-in-1's detector: `--detector detectron_model.pth
--detector-config detectron_config.yaml` (its boxes, `--num-features` 100 and
`--confidence-threshold` 0 by default, as 12-in-1; docs/DETECTOR.md). An extractor whose feature
width is not the checkpoint's v_feature_size is refused before any picture is extracted.

Modules: features.py (pictures -> regions, the cache), checkpoint.py (loading, heads, answer
vocabularies), predictor.py (Predictor: the forward passes), results.py (the result dataclasses,
the terminal table, the picture), __main__.py (the command line).
"""

from vilbert.predict.checkpoint import CheckpointInfo, find_label2ans, load_checkpoint, read_label2ans
from vilbert.predict.errors import PredictError
from vilbert.predict.features import FeatureCache, FeatureOptions, ImageRegions, PictureFeatures, feature_source
from vilbert.predict.predictor import MODES, TASK_TOKEN_ROWS, Predictor
from vilbert.predict.results import (AlignmentResult, Answer, AnswerResult, AttentionMap, CaptionScore,
                                     GroundingResult, ImageInfo, Region, Source, describe_checkpoint, draw_results,
                                     format_results, to_jsonable)

__all__ = [
    "AlignmentResult", "Answer", "AnswerResult", "AttentionMap", "CaptionScore", "CheckpointInfo", "FeatureCache",
    "FeatureOptions", "GroundingResult", "ImageInfo", "ImageRegions", "MODES", "PictureFeatures", "PredictError",
    "Predictor", "Region", "Source", "TASK_TOKEN_ROWS", "describe_checkpoint", "draw_results", "feature_source",
    "find_label2ans", "format_results", "load_checkpoint", "read_label2ans", "to_jsonable",
]
