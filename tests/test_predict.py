"""vilbert.predict on the demo world: each mode through the real command line, the feature cache,
released-layout checkpoints (12-in-1's task tokens), attention maps, 12-in-1's detector (a tiny one in
its maskrcnn-benchmark layout) giving the same regions as `python -m vilbert.features extract`, and
one-line errors. Every answer is checked against a plain forward pass of the model on the feature
store's regions."""

import json
import pickle
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from _features_helpers import TINY_FEATURE_SIZE, maskrcnn_state_dict, write_tiny_detector
from _scripts_helpers import REPO, env, make_tiny_world, tiny_config
from test_convert import original_state_dict
from vilbert.config import ViLBertConfig
from vilbert.features import FeatureReader, pad_regions
from vilbert.features.__main__ import main as features_main
from vilbert.model import ViLBertForPretraining, ViLBertForVLTasks
from vilbert.predict import (FeatureOptions, PictureFeatures, PredictError, Predictor, TASK_TOKEN_ROWS,
                             draw_results, format_results)
from vilbert.predict.__main__ import main as predict_main
from vilbert.tokenization import load_tokenizer

ANSWERS = ["red", "blue", "green", "yes", "no", "2"]  # test_convert.NUM_LABELS answers, as its checkpoints


@pytest.fixture(scope="module")
def setup(tmp_path_factory, minilm_dir):
    """The tiny demo world; our task and pretraining directories and released-layout .bin files,
    all with random weights of the originals' layout (std 0.2, so that outputs differ)."""
    root = tmp_path_factory.mktemp("predict")
    world = make_tiny_world(root)
    config_path = tiny_config(root / "tiny.json")
    config = ViLBertConfig.from_json_file(config_path)
    released = {}
    for layout in ("beta", "12in1"):
        folder = root / layout
        folder.mkdir()
        released[layout] = folder / "pytorch_model.bin"
        torch.save(original_state_dict(layout, config, seed=1), released[layout])
        # The originals' vocabulary file, found beside the checkpoint (a pickled list).
        (folder / "trainval_label2ans.pkl").write_bytes(pickle.dumps(ANSWERS, protocol=2))
    tasks = root / "tasks"
    ViLBertForVLTasks.from_pretrained(released["beta"], config=config).save_pretrained(tasks)
    pretrained = root / "pretrained"
    ViLBertForPretraining.from_pretrained(released["beta"], config=config).save_pretrained(pretrained)
    # The VQA task's vocabulary where the readers keep it, for --tasks_config.
    (world / "vqa" / "cache").mkdir(exist_ok=True)
    (world / "vqa" / "cache" / "trainval_label2ans.json").write_text(json.dumps(ANSWERS))
    vqa_ids = sorted(p.stem for p in (world / "vqa" / "images").glob("*.png"))[:2]
    refer_id = sorted(p.stem for p in (world / "refcoco" / "images").glob("*.png"))[0]
    return SimpleNamespace(root=root, world=world, config=config, config_path=config_path, bert=minilm_dir,
                           tasks=tasks, pretrained=pretrained, released=released, vqa_ids=vqa_ids,
                           refer_id=refer_id, tokenizer=load_tokenizer(minilm_dir))


@pytest.fixture(scope="module")
def vmb(setup):
    """A tiny 12-in-1 detector (maskrcnn-benchmark layout, TINY_FEATURE_SIZE-d fc6) and a released
    12-in-1 .bin whose v_feature_size is that width, its config and vocabulary beside it."""
    folder = setup.root / "vmb"
    checkpoint, detector_config = write_tiny_detector(folder)
    values = json.loads(setup.config_path.read_text())
    values["v_feature_size"] = TINY_FEATURE_SIZE
    (folder / "config.json").write_text(json.dumps(values))
    config = ViLBertConfig.from_json_file(folder / "config.json")
    torch.save(original_state_dict("12in1", config, seed=2), folder / "multi_task_model.bin")
    (folder / "trainval_label2ans.pkl").write_bytes(pickle.dumps(ANSWERS, protocol=2))
    return SimpleNamespace(detector=checkpoint, detector_config=detector_config, config=config,
                           config_path=folder / "config.json", model=folder / "multi_task_model.bin")


def cli(setup, *args):
    """`python -m vilbert.predict ...` in a subprocess; it must succeed."""
    cmd = [sys.executable, "-m", "vilbert.predict", "--bert_model", setup.bert, *map(str, args)]
    variables = dict(env(), XDG_CACHE_HOME=str(setup.root / "xdg"))  # the default cache, kept in the test's folder
    result = subprocess.run(cmd, cwd=REPO, env=variables, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def vqa_pictures(setup):
    """The VQA pictures as files, with the extractor the demo world's stores were made with."""
    images = [setup.world / "vqa" / "images" / f"{i}.png" for i in setup.vqa_ids]
    return images, ["--backbone", "pixels", "--boxes", "gt", "--boxes-file", setup.world / "vqa" / "boxes.json"]


def direct(model, setup, text, item, head, task_token=None):
    """The head's output for one text and one picture's stored regions, by a plain forward pass."""
    padded = pad_regions(item, 101)
    encoded = setup.tokenizer(text, return_tensors="pt")
    tensor = lambda a, dtype: torch.from_numpy(np.asarray(a)).to(dtype)[None]  # noqa: E731
    inputs = dict(input_ids=encoded["input_ids"], token_type_ids=encoded["token_type_ids"],
                  attention_mask=encoded["attention_mask"], image_feat=tensor(padded.features, torch.float32),
                  image_loc=tensor(padded.locations, torch.float32), image_attention_mask=tensor(padded.mask, torch.long))
    tokens = None if task_token is None else torch.tensor([task_token])
    with torch.no_grad():
        if head == "alignment":
            return model(**inputs, task_tokens=tokens).seq_relationship_score.softmax(-1)[0, 0]
        return getattr(model.eval()(**inputs, task_tokens=tokens, heads={head}), head)[0]


def test_question_through_the_cli_then_from_the_cache(setup):
    images, extractor = vqa_pictures(setup)
    cache = setup.root / "cache_q"
    flags = ["--checkpoint", setup.tasks, "--images", *images, *extractor, "--question", "What colour is the star?",
             "--tasks_config", setup.world / "vlbert_tasks.yml", "--top-k", 3, "--cache", cache]
    table = cli(setup, *flags).stdout
    assert table.count("| rank | answer | probability | score |") == 2 and table.count("(extracted,") == 2
    out = json.loads(cli(setup, *flags, "--json").stdout)
    assert out["mode"] == "question" and out["checkpoint"]["heads"] == ["vil_prediction", "vision_logit", "vil_logit"]

    model = ViLBertForVLTasks.from_pretrained(setup.tasks)
    store = FeatureReader(setup.world / "vqa" / "features" / "regions.lmdb")
    for image_id, result in zip(setup.vqa_ids, out["results"]):
        assert result["image"]["features"] == "cached" and result["image"]["image_id"] == image_id
        assert result["source"]["head"] == "vil_prediction" and result["source"]["task_token"] is None
        probabilities = [a["probability"] for a in result["answers"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) <= 1 + 1e-6
        # The same numbers as the model on the world's stored features (same extractor, same boxes).
        logits = direct(model, setup, "What colour is the star?", store[image_id], "vil_prediction")
        top = logits.softmax(-1).topk(3)
        assert [a["answer"] for a in result["answers"]] == [ANSWERS[i] for i in top.indices.tolist()]
        np.testing.assert_allclose(probabilities, top.values.numpy(), atol=1e-4)
        np.testing.assert_allclose([a["score"] for a in result["answers"]],
                                   logits.sigmoid()[top.indices].numpy(), atol=1e-4)
        assert f"| 1 | {result['answers'][0]['answer']} | {probabilities[0]:.3f} |" in table


def test_expression_through_the_cli_draws_the_box(setup):
    picture = setup.root / "expression.png"
    store = setup.world / "refcoco" / "features" / "detections.lmdb"
    out = json.loads(cli(setup, "--checkpoint", setup.tasks, "--features", store, "--image-ids", setup.refer_id,
                         "--expression", "the small red circle", "--json", "--picture", picture).stdout)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = out["results"][0]
    best, runners = result["best"], result["runners_up"]
    width, height = result["image"]["width"], result["image"]["height"]
    x1, y1, x2, y2 = best["box"]
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert len(runners) == 4 and all(best["probability"] >= r["probability"] for r in runners)
    assert result["image"]["features"] == "store" and result["source"]["head"] == "vision_logit"
    logits = direct(ViLBertForVLTasks.from_pretrained(setup.tasks), setup, "the small red circle",
                    FeatureReader(store)[setup.refer_id], "vision_logit")[:, 0]
    real = result["image"]["regions"] + 1
    assert best["index"] == int(logits[:real].argmax())
    np.testing.assert_allclose(best["probability"], float(logits[:real].softmax(-1).max()), atol=1e-4)


def test_captions_zero_shot_through_the_cli_and_retrieval_in_python(setup):
    captions = ["A small red circle.", "Two green squares and a star.", "A picture of a big blue cross."]
    store = setup.world / "flickr30k" / "features" / "regions.lmdb"
    image_id = FeatureReader(store).image_ids()[0]
    args = [arg for c in captions for arg in ("--caption", c)]
    out = json.loads(cli(setup, "--checkpoint", setup.pretrained, "--features", store, "--image-ids", image_id,
                         *args, "--json").stdout)["results"][0]
    assert out["source"]["head"] == "alignment"
    pretrained = ViLBertForPretraining.from_pretrained(setup.pretrained).eval()
    expected = [float(direct(pretrained, setup, c, FeatureReader(store)[image_id], "alignment")) for c in captions]
    np.testing.assert_allclose([c["score"] for c in out["captions"]], expected, atol=1e-4)
    assert sorted(c["rank"] for c in out["captions"]) == [1, 2, 3]
    assert max(expected) - min(expected) > 1e-3  # the captions are told apart

    # A finetuned checkpoint: the retrieval head, several pictures in batches of 2 pairs, each
    # caption's text prefix computed once; the same as one forward pass per pair.
    predictor = Predictor(setup.tasks, bert_model=setup.bert, batch_size=2)
    pictures = [predictor.stored_regions(store, i) for i in FeatureReader(store).image_ids()[:2]]
    results = predictor.align(captions, pictures)
    model = ViLBertForVLTasks.from_pretrained(setup.tasks)
    for picture, result in zip(pictures, results):
        assert result.source.head == "vil_logit"
        logits = [float(direct(model, setup, c, picture.item, "vil_logit")) for c in captions]
        np.testing.assert_allclose([c.score for c in result.captions], logits, atol=1e-4)
        np.testing.assert_allclose(sum(c.probability for c in result.captions), 1.0, atol=1e-5)
        assert [c.rank for c in result.captions] == list(np.argsort(np.argsort(-np.array(logits))) + 1)
    assert len(predictor._prefixes) == len(captions)
    table = format_results(results, "caption")
    assert table.count("| rank | caption | vil_logit | probability |") == 2
    best = min(results[0].captions, key=lambda c: c.rank)
    assert f"| 1 | {best.caption} | {best.score:.3f} | {best.probability:.3f} |" in table


def test_a_released_12in1_checkpoint_through_the_cli(setup):
    images, extractor = vqa_pictures(setup)
    out = json.loads(cli(setup, "--checkpoint", setup.released["12in1"], "--config_file", setup.config_path,
                         "--images", images[0], *extractor, "--question", "Is there a star?", "--json",
                         "--no-cache").stdout)
    assert out["checkpoint"]["format"] == "original" and out["checkpoint"]["task_tokens"]
    assert set(out["checkpoint"]["heads"]) == {"vil_prediction", "vision_logit", "vil_logit", "alignment"}
    result = out["results"][0]
    assert result["source"]["task_token"] == TASK_TOKEN_ROWS["question"] == 1
    assert result["image"]["features"] == "extracted"
    model = ViLBertForVLTasks.from_pretrained(setup.released["12in1"], config=setup.config)
    store = FeatureReader(setup.world / "vqa" / "features" / "regions.lmdb")
    logits = direct(model, setup, "Is there a star?", store[setup.vqa_ids[0]], "vil_prediction", task_token=1)
    assert result["answers"][0]["answer"] == ANSWERS[int(logits.argmax())]  # from the pickle beside the .bin
    np.testing.assert_allclose(result["answers"][0]["probability"], float(logits.softmax(-1).max()), atol=1e-4)


@pytest.mark.parametrize("layout", ["beta", "12in1"])
def test_released_checkpoints_pick_the_12in1_task_token_rows(setup, layout):
    """On a 12-in-1 checkpoint each mode runs with its row of 12-in-1's task ids (VQA 1,
    RetrievalFlickr30k 8, refcoco+ 10), or with the row asked for; beta's has no task tokens."""
    predictor = Predictor(setup.released[layout], bert_model=setup.bert, config_file=setup.config_path)
    assert predictor.checkpoint.format == "original" and predictor.checkpoint.task_tokens == (layout == "12in1")
    model = ViLBertForVLTasks.from_pretrained(setup.released[layout], config=setup.config).eval()
    picture = predictor.stored_regions(setup.world / "refcoco" / "features" / "detections.lmdb", setup.refer_id)
    real = picture.item.num_boxes
    modes = {  # mode: (text, head, call, the number compared, the same from a plain forward pass)
        "question": ("Is there a circle?", "vil_prediction", predictor.answer,
                     lambda r: r.answers[0].probability, lambda x: x.softmax(-1).max()),
        "caption": ("A red circle.", "vil_logit", lambda text, picture, **kw: predictor.align([text], picture, **kw),
                    lambda r: r.captions[0].score, lambda x: x[0]),
        "expression": ("the red circle", "vision_logit", predictor.ground,
                       lambda r: r.best.logit, lambda x: x[:real].max()),
    }
    rows = {"question": 1, "caption": 8, "expression": 10} if layout == "12in1" else {m: None for m in modes}
    assert layout == "beta" or rows == TASK_TOKEN_ROWS
    outputs = {}
    for mode, (text, head, call, ours, plain) in modes.items():
        for asked, row in [(None, rows[mode])] + ([(0, 0)] if layout == "12in1" else []):
            result = call(text, picture, task_token=asked)
            assert result.source.task_token == row and result.source.head == head
            expected = direct(model, setup, text, picture.item, head, task_token=row)
            np.testing.assert_allclose(ours(result), float(plain(expected)), atol=1e-4)
            outputs[mode, row] = expected
        if layout == "12in1":  # the row matters: row 0 gives other outputs
            assert not torch.allclose(outputs[mode, rows[mode]], outputs[mode, 0], atol=1e-4)
        else:
            with pytest.raises(PredictError, match="no task tokens"):
                call(text, picture, task_token=3)
    # Zero-shot, from the pretraining alignment head the originals' task checkpoints keep.
    result = predictor.align(["A red circle."], picture, scorer="alignment")
    pretraining = ViLBertForPretraining.from_pretrained(setup.released[layout], config=setup.config).eval()
    expected = direct(pretraining, setup, "A red circle.", picture.item, "alignment", task_token=rows["caption"])
    assert result.source.head == "alignment" and result.source.task_token == rows["caption"]
    np.testing.assert_allclose(result.captions[0].score, float(expected), atol=1e-4)


def test_attention_maps_and_the_picture_of_a_word(setup, tmp_path):
    predictor = Predictor(setup.released["12in1"], bert_model=setup.bert, config_file=setup.config_path,
                          answers=setup.released["12in1"].parent / "trainval_label2ans.pkl")
    images, _ = vqa_pictures(setup)
    picture = predictor.stored_regions(setup.world / "vqa" / "features" / "regions.lmdb", setup.vqa_ids[0], images[0])
    result = predictor.answer("What colour is the star?", picture, attention=True)
    maps = result.attention
    regions = picture.item.num_boxes  # with the global region
    assert maps.tokens[:2] == ["[CLS]", "[TASK 1]"] and maps.tokens[-1] == "[SEP]" and "star" in maps.tokens
    blocks, heads = len(setup.config.v_biattention_id), setup.config.bi_num_attention_heads
    assert maps.text_to_region.shape == (blocks, heads, len(maps.tokens), regions) and len(maps.boxes) == regions
    np.testing.assert_allclose(maps.text_to_region.sum(-1), 1.0, atol=1e-4)  # over the real regions only
    star = maps.token_index("star")
    assert maps.tokens[star] == "star" and maps.token_index(str(star)) == star
    np.testing.assert_allclose(maps.over_regions("star", layer=0, head=1), maps.text_to_region[0, 1, star])
    without = predictor.answer("What colour is the star?", picture)  # SDPA instead of the spelled-out attention
    assert without.attention is None and [a.answer for a in without.answers] == [a.answer for a in result.answers]
    np.testing.assert_allclose([a.probability for a in without.answers], [a.probability for a in result.answers],
                               atol=1e-5)
    path = draw_results([result], tmp_path / "word.png", word="star")
    assert path.read_bytes()[:4] == b"\x89PNG"
    captions = predictor.align(["A star.", "Two circles."], picture, attention=True)
    assert [c.attention.tokens[2] for c in captions.captions] == ["a", "two"]  # after [CLS] and [TASK 8]
    assert draw_results([captions], tmp_path / "caption.png", layer=0, head=0).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(PredictError, match="needs the attention maps"):
        draw_results([without], tmp_path / "none.png")
    with pytest.raises(PredictError, match="not a token"):
        maps.token_index("zebra")


def test_feature_cache_is_keyed_by_content_and_settings(setup, tmp_path):
    images, _ = vqa_pictures(setup)
    gt = FeatureOptions(backbone="pixels", boxes="gt", boxes_file=str(setup.world / "vqa" / "boxes.json"))
    first = PictureFeatures(gt, tmp_path / "cache").regions(images[0])
    again = PictureFeatures(gt, tmp_path / "cache").regions(images[0])  # a new process: from the disk
    assert (first.features, again.features) == ("extracted", "cached")
    np.testing.assert_array_equal(first.item.features, again.item.features)
    stored = FeatureReader(setup.world / "vqa" / "features" / "regions.lmdb")[images[0].stem]
    np.testing.assert_array_equal(again.item.features, stored.features)  # the store's numbers, float16 included
    np.testing.assert_array_equal(again.item.boxes, stored.boxes)
    # Another boxes file (same name, one box moved) is another extraction.
    boxes = json.loads((setup.world / "vqa" / "boxes.json").read_text())
    boxes[images[0].stem]["boxes"][0][0] += 1
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    moved = FeatureOptions(backbone="pixels", boxes="gt", boxes_file=str(tmp_path / "boxes.json"))
    assert PictureFeatures(moved, tmp_path / "cache").regions(images[0]).features == "extracted"
    grid = PictureFeatures(FeatureOptions(backbone="pixels", boxes="grid", grid=2), tmp_path / "cache")
    assert grid.regions(images[0]).features == "extracted" and len(grid.regions(images[0]).item.boxes) == 4
    assert grid.cache.hits == 1 and grid.cache.misses == 1
    # The same file name with other content is another picture; its bytes given directly hit it.
    copy = tmp_path / images[0].name
    copy.write_bytes(images[1].read_bytes())
    assert grid.regions(copy).features == "extracted"
    assert grid.regions(images[1].read_bytes()).features == "cached"


def test_a_picture_without_regions_is_a_one_line_error_and_not_cached(setup, tmp_path):
    images, _ = vqa_pictures(setup)
    pictures = PictureFeatures(FeatureOptions(backbone="pixels", boxes="grid", grid=2), tmp_path / "cache")
    pictures._source = lambda image, image_id: (np.zeros((0, 4), np.float32), np.zeros((0, 2048), np.float32), None)
    with pytest.raises(PredictError, match="found no region") as caught:
        pictures.regions(images[0])
    assert "\n" not in str(caught.value) and not list((tmp_path / "cache").rglob("*.vlbf"))


@pytest.mark.parametrize("boxes", ["detector", "gt"])
def test_12in1_detector_gives_what_extract_stores(setup, vmb, tmp_path, boxes):
    """Pictures through predict's feature source equal what `python -m vilbert.features extract`
    stores for them with the same options (one picture a batch there: a batch pads its pictures to
    one size); the detector's config and weights are part of the cache key."""
    images, _ = vqa_pictures(setup)
    folder = tmp_path / "images"
    folder.mkdir()
    for image in images:
        (folder / image.name).write_bytes(image.read_bytes())
    detector = ["--detector", str(vmb.detector), "--detector-config", str(vmb.detector_config)]
    options = dict(detector=str(vmb.detector), detector_config=str(vmb.detector_config), min_boxes=5)
    if boxes == "detector":  # 12-in-1's selection, with its two options under their 12-in-1 names
        flags = ["--boxes", "detector", "--num-features", "20", "--confidence-threshold", "0.05", "--min-boxes", "5"]
        options.update(max_boxes=20, min_score=0.05)
    else:  # given boxes through the detector's box head
        boxes_file = str(setup.world / "vqa" / "boxes.json")
        flags = ["--boxes", "gt", "--boxes-file", boxes_file, "--min-boxes", "5"]
        options.update(boxes="gt", boxes_file=boxes_file)
    assert features_main(["extract", "--images", str(folder), "--output", str(tmp_path / "store"), *detector, *flags,
                          "--batch-size", "1", "--num-workers", "0", "--no-progress"]) == 0
    store = FeatureReader(tmp_path / "store")
    pictures = PictureFeatures(FeatureOptions(**options), tmp_path / "cache", feature_size=TINY_FEATURE_SIZE)
    for image in images:
        extracted, stored = pictures.regions(image), store[image.stem]
        assert extracted.features == "extracted" and extracted.item.features.shape[1] == TINY_FEATURE_SIZE
        for name in ("boxes", "features", "cls_prob", "num_boxes", "image_h", "image_w"):
            np.testing.assert_array_equal(getattr(extracted.item, name), getattr(stored, name), err_msg=name)
        if boxes == "detector":
            assert 5 <= stored.num_boxes - 1 <= 20 and stored.cls_prob.shape[1] == 11
    assert PictureFeatures(FeatureOptions(**options), tmp_path / "cache").regions(images[0]).features == "cached"
    # Another config (the same keys, one more line) or other weights under the same names: another key.
    vmb_copy = tmp_path / "vmb"
    vmb_copy.mkdir()
    (vmb_copy / "config.yaml").write_text(vmb.detector_config.read_text() + "# edited\n")
    (vmb_copy / "model.pth").write_bytes(vmb.detector.read_bytes())
    copied = dict(options, detector=str(vmb_copy / "model.pth"), detector_config=str(vmb_copy / "config.yaml"))
    assert PictureFeatures(FeatureOptions(**copied), tmp_path / "cache").regions(images[0]).features == "extracted"
    assert PictureFeatures(FeatureOptions(**copied), tmp_path / "cache").regions(images[0]).features == "cached"
    torch.save({"model": maskrcnn_state_dict(seed=1)}, vmb_copy / "model.pth")
    assert PictureFeatures(FeatureOptions(**copied), tmp_path / "cache").regions(images[0]).features == "extracted"


def test_own_pictures_through_12in1_detector_and_a_released_checkpoint(setup, vmb):
    """The README's story end to end: pictures -> 12-in-1's detector -> a released 12-in-1 .bin."""
    images, _ = vqa_pictures(setup)
    out = json.loads(cli(setup, "--checkpoint", vmb.model, "--config_file", vmb.config_path, "--images", images[0],
                         "--detector", vmb.detector, "--detector-config", vmb.detector_config,
                         "--question", "Is there a star?", "--json", "--no-cache").stdout)
    result = out["results"][0]
    assert result["image"]["features"] == "extracted" and 10 <= result["image"]["regions"] <= 100
    assert result["source"]["task_token"] == 1
    regions = PictureFeatures(FeatureOptions(detector=str(vmb.detector), detector_config=str(vmb.detector_config)))
    model = ViLBertForVLTasks.from_pretrained(vmb.model, config=vmb.config)
    logits = direct(model, setup, "Is there a star?", regions.regions(images[0]).item, "vil_prediction", task_token=1)
    assert result["answers"][0]["answer"] == ANSWERS[int(logits.argmax())]
    np.testing.assert_allclose(result["answers"][0]["probability"], float(logits.softmax(-1).max()), atol=1e-3)


@pytest.mark.parametrize("case,message", [
    ("missing checkpoint", "--checkpoint .*nowhere: no such file or directory"),
    ("checkpoint of another config", "12in1/pytorch_model.bin: shape mismatch for bert.embeddings.word_embeddings"),
    ("missing config", "--config_file .*none.json: no such file"),
    ("no VQA head", "no VQA head \\(vil_prediction\\) in this ViLBertForPretraining"),
    ("no grounding head", "no trained vision_logit head in this ViLBertForPretraining"),
    ("no alignment head", "no image-text alignment head"),
    ("no vocabulary", "no VQA answer vocabulary: pass --answers"),
    ("vocabulary of another size", "3 answers, but the checkpoint's VQA head has 6"),
    ("unreadable picture", "broken.png: not a readable image"),
    ("missing picture", "absent.png: cannot read"),
    ("unknown image id", "image id '424242' is not in"),
    ("ids without a store", "--image-ids goes with --features"),
    ("task token without the table", "--task-token 3: this checkpoint has no task tokens"),
    ("no boxes for the picture", "has no entry in --boxes-file"),
    ("detector of another width", "--detector-config .*detectron_config.yaml \\(its box head's MLP_HEAD_DIM\\) "
                                  f"gives {TINY_FEATURE_SIZE}-d region features, the checkpoint expects 2048 "
                                  "\\(v_feature_size\\)"),
    ("a backbone with the detector", "--backbone does not apply with --detector-config"),
])
def test_errors_are_one_line(setup, vmb, tmp_path, capsys, monkeypatch, case, message):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    store = ["--features", setup.world / "vqa" / "features" / "regions.lmdb", "--image-ids", setup.vqa_ids[0]]
    question = ["--question", "Is there a star?"]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "three.json").write_text(json.dumps(ANSWERS[:3]))
    args = {
        "missing checkpoint": ["--checkpoint", tmp_path / "nowhere", *store, *question],
        "checkpoint of another config": ["--checkpoint", setup.released["12in1"], "--config_file",
                                         REPO / "config" / "vilbert_tiny.json", *store, *question],
        "missing config": ["--checkpoint", setup.released["12in1"], "--config_file", tmp_path / "none.json", *store,
                           *question],
        "no VQA head": ["--checkpoint", setup.pretrained, *store, *question],
        "no grounding head": ["--checkpoint", setup.pretrained, *store, "--expression", "the star"],
        "no alignment head": ["--checkpoint", setup.tasks, *store, "--caption", "A star.", "--scorer", "alignment"],
        "no vocabulary": ["--checkpoint", setup.tasks, *store, *question],
        "vocabulary of another size": ["--checkpoint", setup.tasks, *store, *question, "--answers", tmp_path / "three.json"],
        "unreadable picture": ["--checkpoint", setup.tasks, "--images", tmp_path / "broken.png", "--backbone", "pixels",
                               "--expression", "the star"],
        "missing picture": ["--checkpoint", setup.tasks, "--images", tmp_path / "absent.png", "--expression", "x"],
        "unknown image id": ["--checkpoint", setup.tasks, *store[:2], "--image-ids", "424242", "--expression", "x"],
        "ids without a store": ["--checkpoint", setup.tasks, "--images", tmp_path / "broken.png", "--image-ids", "1",
                                "--expression", "x"],
        "task token without the table": ["--checkpoint", setup.tasks, *store, "--expression", "x", "--task-token", 3],
        "no boxes for the picture": ["--checkpoint", setup.tasks, "--images", *vqa_pictures(setup)[0][:1], "--backbone",
                                     "pixels", "--boxes", "gt", "--boxes-file", setup.world / "refcoco" / "boxes_gt.json",
                                     "--expression", "x", "--no-cache"],
        "detector of another width": ["--checkpoint", setup.released["12in1"], "--config_file", setup.config_path,
                                      "--images", *vqa_pictures(setup)[0][:1], "--detector", vmb.detector,
                                      "--detector-config", vmb.detector_config, *question, "--no-cache"],
        "a backbone with the detector": ["--checkpoint", vmb.model, "--config_file", vmb.config_path, "--images",
                                         *vqa_pictures(setup)[0][:1], "--detector", vmb.detector, "--detector-config",
                                         vmb.detector_config, "--backbone", "resnet101", *question],
    }[case]
    code = predict_main(["--bert_model", str(setup.bert), *map(str, args)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("python -m vilbert.predict: error: ") and re.search(message, err[0]), err[0]
