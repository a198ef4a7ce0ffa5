"""benchmarks/demo_place_probes.py words: every caption that names a quadrant or relates two objects
is probed, on a tiny world and a tiny random pretraining checkpoint."""

import re

from _scripts_helpers import load_benchmark, make_tiny_world, save_pretraining_checkpoint, tiny_config

def test_word_probe_counts_every_quadrant_and_relation_caption(tmp_path, minilm_dir, capsys):
    probe = load_benchmark("demo_place_probes")
    world = make_tiny_world(tmp_path)
    checkpoint = save_pretraining_checkpoint(tiny_config(tmp_path / "tiny.json"), tmp_path / "ckpt")
    probe.word_probe(world, str(checkpoint), str(minilm_dir))
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, tsv in zip(lines, ("Train_GCC-training.tsv", "Validation_GCC-1.1.0-Validation.tsv")):
        captions = [row.split("\t")[0] for row in (world / "conceptual_captions" / tsv).read_text().splitlines()]
        quadrant = sum(bool(re.search(r" in the (top|bottom) (left|right)$", c)) for c in captions)
        relation = sum(" to the left of " in c or " above " in c for c in captions)
        assert f"naming a quadrant ({quadrant}):" in line and f"relating two objects ({relation}):" in line, line
        assert re.search(r"top/bottom [\d.]+%, left/right [\d.]+%, colour [\d.]+%", line), line
