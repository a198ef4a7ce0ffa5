"""Conceptual Captions pretraining samples (vilbert/data/concap.py) on a tiny generated world."""

import zlib

import numpy as np
import pytest
import torch

from _pretrain_helpers import FEATURE_DIM, NUM_CLASSES, make_concap_dir, make_tokenizer_dir
from vilbert.data import concap
from vilbert.data.concap import (ConcapPaths, ConceptualCaptionsDataset, MissingImagesError, SampleConfig,
                                 box_iou, image_id_from_url, read_captions)
from vilbert.features import FeatureReader

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from transformers import BertTokenizerFast

    root = tmp_path_factory.mktemp("concap")
    tokenizer = BertTokenizerFast.from_pretrained(make_tokenizer_dir(root))
    make_concap_dir(root / "cc", num_train=60, num_val=10)
    return root, tokenizer, ConcapPaths.from_dir(root / "cc")


def dataset(world, **config):
    root, tokenizer, paths = world
    config.setdefault("max_seq_length", 16)
    config.setdefault("max_region_num", 6)
    return ConceptualCaptionsDataset(paths.train_captions, paths.features, tokenizer, SampleConfig(**config),
                                     cache_dir=root / "cache")


def test_image_id_is_the_originals_crc32():
    url = "http://example.com/a.jpg"
    assert image_id_from_url(url) == zlib.crc32(url.encode()) & 0xFFFFFFFF
    assert image_id_from_url("123456789") == 0xCBF43926  # the standard CRC-32 check value


def test_paths_layout_and_overrides(tmp_path):
    paths = ConcapPaths.from_dir(tmp_path)
    assert paths.train_captions == tmp_path / "Train_GCC-training.tsv"
    assert paths.val_captions == tmp_path / "Validation_GCC-1.1.0-Validation.tsv"
    assert paths.features == [tmp_path / "features"]
    other = ConcapPaths.from_dir(tmp_path, val_captions=tmp_path / "v.tsv", features=["a", "b"])
    assert other.val_captions == tmp_path / "v.tsv" and [p.name for p in other.features] == ["a", "b"]
    with pytest.raises(ValueError, match="--file_path"):
        ConcapPaths.from_dir(None)


def test_read_captions_names_file_and_line_of_bad_input(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("a cat\thttp://x/1.jpg\nno url on this line\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:2: expected 'caption<TAB>url'"):
        read_captions(bad)
    with pytest.raises(FileNotFoundError, match="caption file not found"):
        read_captions(tmp_path / "nope.tsv")
    good = tmp_path / "good.tsv"
    good.write_text("A cat\thttp://x/1.jpg\n\nA dog\thttp://x/2.jpg\n")
    captions, ids = read_captions(good)
    assert captions == ["A cat", "A dog"] and ids.tolist() == [image_id_from_url("http://x/1.jpg"),
                                                              image_id_from_url("http://x/2.jpg")]


def test_sample_layout(world):
    ds = dataset(world)
    _, tokenizer, _ = world
    s = ds[(0, 3)]
    T, R = 16, 6
    assert s["input_ids"].shape == (T,) and s["masked_lm_labels"].shape == (T,)
    assert s["image_feat"].shape == (R, FEATURE_DIM) and s["image_loc"].shape == (R, 5)
    assert s["image_target"].shape == (R, NUM_CLASSES) and s["image_label"].shape == (R,)
    assert s["next_sentence_label"].shape == ()
    length = int(s["attention_mask"].sum())
    assert s["input_ids"][0] == tokenizer.cls_token_id and s["input_ids"][length - 1] == tokenizer.sep_token_id
    assert (s["input_ids"][length:] == 0).all() and (s["masked_lm_labels"][length - 1:] == -1).all()
    assert s["masked_lm_labels"][0] == -1 and (s["token_type_ids"] == 0).all()
    assert s["image_label"][0] == -1                                      # global row never a target
    torch.testing.assert_close(s["image_loc"][0], torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))
    real = int(s["image_attention_mask"].sum())
    torch.testing.assert_close(s["image_feat"][0], s["image_feat"][1:real].mean(0))   # global = mean after masking
    assert (s["image_feat"][real:] == 0).all() and (s["image_label"][real:] == -1).all()


def test_same_key_same_sample_other_epoch_other_sample(world):
    ds = dataset(world)
    a, b = ds[(0, 5)], ds[(0, 5)]
    assert all(torch.equal(a[k], b[k]) for k in a)
    differs = [any(not torch.equal(ds[(0, i)][k], ds[(1, i)][k]) for k in a) for i in range(10)]
    assert sum(differs) >= 8
    assert all(torch.equal(ds[5][k], a[k]) for k in a)  # a plain index means epoch 0


def test_masking_rates_and_targets(world):
    ds = dataset(world, max_region_num=8)
    _, tokenizer, _ = world
    tokens = targets = masked = random_or_kept = aligned = negatives = 0
    regions = region_targets = zeroed = 0
    for epoch in range(10):
        for i in range(len(ds)):
            s = ds[(epoch, i)]
            caption_index = i
            label = int(s["next_sentence_label"])
            aligned += label == 0
            negatives += label == 1
            length = int(s["attention_mask"].sum())
            is_target = s["masked_lm_labels"] >= 0
            tokens += length - 2
            targets += int(is_target.sum())
            shown = s["input_ids"][is_target]
            masked += int((shown == tokenizer.mask_token_id).sum())
            random_or_kept += int((shown != tokenizer.mask_token_id).sum())
            real = int(s["image_attention_mask"].sum())
            region_is_target = s["image_label"] == 1
            regions += real - 1
            region_targets += int(region_is_target.sum())
            zeroed += int((s["image_feat"][region_is_target].abs().sum(-1) == 0).sum())
            # The target distribution of a masked region is the store's cls_prob for it.
            if region_is_target.any():
                assert torch.allclose(s["image_target"][region_is_target].sum(-1), torch.ones(1), atol=1e-2)  # float16 store
    assert 0.12 < targets / tokens < 0.18
    assert 0.74 < masked / targets < 0.86 and 0.14 < random_or_kept / targets < 0.26
    assert 0.12 < region_targets / regions < 0.18
    assert 0.83 < zeroed / region_targets < 0.97
    assert 0.44 < negatives / (aligned + negatives) < 0.56


def test_negative_caption_comes_from_another_image(world):
    ds = dataset(world)
    for i in range(len(ds)):
        s = ds[(0, i)]
        own = ds.caption_tokens(i)
        labels, ids = s["masked_lm_labels"], s["input_ids"]
        n = int(s["attention_mask"].sum()) - 2
        caption = torch.where(labels[1:n + 1] >= 0, labels[1:n + 1], ids[1:n + 1]).numpy()  # unmasked tokens
        if int(s["next_sentence_label"]) == 0:
            assert np.array_equal(caption, own)
        else:
            others = [j for j in range(len(ds)) if np.array_equal(ds.caption_tokens(j), caption)]
            assert others and all(ds.image_ids[j] != ds.image_ids[i] for j in others)


def test_visual_target_1_targets_the_unmasked_features(world):
    ds = dataset(world, visual_target=1)
    reader = ds.reader
    for i in range(20):
        s = ds[(0, i)]
        assert s["image_target"].shape == s["image_feat"].shape
        item = reader[str(ds.image_ids[i])]
        real = int(s["image_attention_mask"].sum())
        torch.testing.assert_close(s["image_target"][1:real], torch.from_numpy(item.features[1:real]))


def test_mask_overlapping_hides_near_duplicates(world):
    plain, hiding = dataset(world), dataset(world, mask_overlapping=True)
    checked = 0
    for i in range(len(plain)):
        s = hiding[(0, i)]
        item = plain.reader[str(plain.image_ids[i])]
        real = int(s["image_attention_mask"].sum())
        boxes = item.boxes[:real - 1]
        targets = (s["image_label"][1:real] == 1).numpy()
        if not targets.any():
            continue
        overlapping = (box_iou(boxes)[targets] > 0.4).any(0) & ~targets
        hidden = (s["image_feat"][1:real].abs().sum(-1) == 0).numpy()
        assert hidden[overlapping].all()
        checked += int(overlapping.sum())
        # Same labels and same randomness as without the option: only the extra regions differ.
        assert torch.equal(plain[(0, i)]["image_label"], s["image_label"])
    assert checked > 0


def test_box_iou():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=np.float32)
    iou = box_iou(boxes)
    assert iou[0, 0] == pytest.approx(1.0) and iou[0, 1] == pytest.approx(50 / 150) and iou[0, 2] == 0


def test_missing_images_are_skipped_with_a_summary(world, tmp_path):
    _, tokenizer, _ = world
    root = make_concap_dir(tmp_path / "few_missing", num_train=120, num_val=4, missing_train=1)
    paths = ConcapPaths.from_dir(root)
    ds = ConceptualCaptionsDataset(paths.train_captions, paths.features, tokenizer, cache_dir=None)
    assert len(ds) == 119 and ds.num_captions == 120 and len(ds.missing_ids) == 1
    summary = ds.missing_summary()
    assert "skipped 1 of 120 captions" in summary and ds.missing_ids[0] in summary and "shard0.lmdb" in summary
    for i in range(len(ds)):  # every kept caption reads its image
        ds[(0, i)]


def test_too_many_missing_images_stop_with_the_store_and_ids(world, tmp_path):
    _, tokenizer, _ = world
    root = make_concap_dir(tmp_path / "many_missing", num_train=50, num_val=4, missing_train=3)
    paths = ConcapPaths.from_dir(root)
    with pytest.raises(MissingImagesError) as info:
        ConceptualCaptionsDataset(paths.train_captions, paths.features, tokenizer)
    message = str(info.value)
    assert "3 of 50 captions" in message and "shard0.lmdb" in message
    _, ids = read_captions(paths.train_captions)
    assert str(ids[0]) in message


def test_visual_target_0_needs_cls_prob(world, tmp_path):
    _, tokenizer, _ = world
    root = make_concap_dir(tmp_path / "no_cls", num_train=8, num_val=2, with_cls_prob=False)
    paths = ConcapPaths.from_dir(root)
    with pytest.raises(ValueError, match="--visual_target 0 needs class distributions"):
        ConceptualCaptionsDataset(paths.train_captions, paths.features, tokenizer)
    ConceptualCaptionsDataset(paths.train_captions, paths.features, tokenizer, SampleConfig(visual_target=1))


def test_captions_are_tokenised_once_and_cached(world, monkeypatch):
    root, tokenizer, paths = world
    first = dataset(world, max_seq_length=12)
    caches = list((root / "cache").glob("Train_GCC-training.tokens.*.npz"))
    assert caches

    def fail(*args, **kwargs):
        raise AssertionError("tokenised again despite the cache")

    monkeypatch.setattr(concap, "tokenize_captions", fail)
    second = dataset(world, max_seq_length=12)
    assert np.array_equal(first.tokens, second.tokens)
    # The cached ids are what the tokenizer gives.
    captions, _ = read_captions(paths.train_captions)
    expected = tokenizer(captions[2], add_special_tokens=False)["input_ids"][:10]
    assert first.caption_tokens(2).tolist() == expected
    with pytest.raises(AssertionError, match="tokenised again"):
        dataset(world, max_seq_length=13)  # another length is another cache entry


def test_default_collate_batches_samples(world):
    ds = dataset(world)
    from vilbert.training import TrainSampler

    sampler = TrainSampler(len(ds), 8, seed=1)
    loader = concap.make_loader(ds, sampler, batch_size=4, num_workers=0)
    batch = next(iter(loader))
    assert batch["input_ids"].shape == (4, 16) and batch["image_feat"].shape == (4, 6, FEATURE_DIM)
    assert batch["next_sentence_label"].shape == (4,)
    assert isinstance(ds.reader, FeatureReader)


def test_trimmed_batches_give_the_same_losses(world, tmp_path):
    """Cutting unused padding changes shapes, not results (padding is masked in the model)."""
    from _pretrain_helpers import tiny_config_file
    from torch.utils.data import default_collate
    from vilbert import ViLBertConfig, ViLBertForPretraining

    ds = dataset(world, max_seq_length=24, max_region_num=8)
    samples = [ds[(0, i)] for i in range(6)]
    full, trimmed = default_collate(samples), concap.collate_trimmed(samples)
    assert trimmed["input_ids"].shape[1] == int(full["attention_mask"].sum(1).max()) < 24
    assert trimmed["image_feat"].shape[1] == int(full["image_attention_mask"].sum(1).max()) < 8
    torch.manual_seed(0)
    model = ViLBertForPretraining(ViLBertConfig.from_json_file(tiny_config_file(tmp_path / "c.json", dropout=0.0)))
    model.eval()
    with torch.no_grad():
        a, b = model(**full), model(**trimmed)
    for name in ("masked_lm_loss", "masked_img_loss", "next_sentence_loss"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=1e-5)
    torch.testing.assert_close(a.seq_relationship_score, b.seq_relationship_score, rtol=0, atol=1e-5)


def test_objective_1_drops_targets_of_random_caption_pairs(world):
    plain, aligned_only = dataset(world), dataset(world, objective=1)
    negatives = 0
    for i in range(len(plain)):
        a, b = plain[(0, i)], aligned_only[(0, i)]
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["image_feat"], b["image_feat"])
        if int(b["next_sentence_label"]) == 1:
            negatives += 1
            assert (b["masked_lm_labels"] == -1).all() and (b["image_label"] == -1).all()
        else:
            assert torch.equal(a["masked_lm_labels"], b["masked_lm_labels"])
            assert torch.equal(a["image_label"], b["image_label"])
    assert negatives > 0
