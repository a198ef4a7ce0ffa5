"""vilbert.serve through Starlette's test client, on the tiny demo world and a tiny checkpoint with
random weights: each mode (checked against vilbert.predict on the same picture), the gallery and
uploads, and every refusal (oversized uploads, decompression bombs, broken files, bad requests, a
missing checkpoint), after which the server still answers."""

import contextlib
import io
import json
import socket
import struct
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("starlette", reason="vilbert.serve needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the test extra)")

from starlette.testclient import TestClient  # noqa: E402

from _model_helpers import NUM_LABELS, original_state_dict  # noqa: E402
from _scripts_helpers import make_tiny_world, tiny_config  # noqa: E402
from vilbert.config import ViLBertConfig  # noqa: E402
from vilbert.model import ViLBertForVLTasks  # noqa: E402
from vilbert.predict import FeatureOptions, PredictError, Predictor  # noqa: E402
from vilbert.serve import Limits, Service, create_app  # noqa: E402
from vilbert.serve.__main__ import main as serve_main  # noqa: E402
from vilbert.serve.pictures import upload_image_id  # noqa: E402

ANSWERS = ["red", "blue", "green", "yes", "no", "2"][:NUM_LABELS]


def make_serve_setup(root, minilm_dir) -> SimpleNamespace:
    """The tiny world, a task checkpoint (random weights, the originals' layout) with its answer
    vocabulary beside it, and the extractor settings of the world's VQA pictures."""
    world = make_tiny_world(root)
    config = ViLBertConfig.from_json_file(tiny_config(root / "tiny.json"))
    checkpoint = root / "tasks"
    source = root / "beta.bin"
    torch.save(original_state_dict("beta", config, seed=1), source)
    ViLBertForVLTasks.from_pretrained(source, config=config).save_pretrained(checkpoint)
    (checkpoint / "label2ans.json").write_text(json.dumps(ANSWERS))
    features = FeatureOptions(backbone="pixels", boxes="gt", boxes_file=str(world / "vqa" / "boxes.json"))
    return SimpleNamespace(root=root, world=world, checkpoint=checkpoint, bert=minilm_dir, features=features,
                           gallery=world / "vqa" / "images")


def make_service(setup, **overrides) -> Service:
    options = dict(bert_model=setup.bert, features=setup.features, cache_dir=None, gallery=[setup.gallery],
                   gallery_size=4, device="cpu")
    options.update(overrides)
    return Service({"question": setup.checkpoint, "expression": setup.checkpoint, "caption": setup.checkpoint},
                   **options)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, minilm_dir):
    return make_serve_setup(tmp_path_factory.mktemp("serve"), minilm_dir)


@pytest.fixture(scope="module")
def client(setup):
    service = make_service(setup, limits=Limits(max_upload_bytes=200_000, max_pixels=300 * 300))
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        yield client


def png(width, height) -> bytes:
    """A real PNG of a gray picture."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 200, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_header(width, height) -> bytes:
    """A PNG that claims width x height pixels: a valid header, then a tiny broken data chunk.
    Decoding it would need width * height * 3 bytes; it must be refused before that."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def ask(client, **request):
    return client.post("/api/ask", json=request)


def test_page_info_and_gallery(client, setup):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas id=\"overlay\">" in page.text
    info = client.get("/api/info").json()
    assert set(info["modes"]) == {"question", "expression", "caption"}
    assert all(m["available"] and m["checkpoint"] == str(setup.checkpoint) for m in info["modes"].values())
    names = sorted(p.name for p in setup.gallery.glob("*.png"))[:4]
    assert [p["name"] for p in info["gallery"]] == names and info["limits"]["max_pixels"] == 300 * 300
    picture = client.get(info["gallery"][0]["url"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert picture.content == (setup.gallery / names[0]).read_bytes()
    assert client.get("/gallery/g99").status_code == 404


def test_question_matches_the_predictor(client, setup):
    out = ask(client, mode="question", picture="g0", text="What colour is the star?")
    assert out.status_code == 200, out.text
    result = out.json()
    predictor = Predictor(setup.checkpoint, bert_model=setup.bert, features=setup.features, device="cpu")
    path = sorted(setup.gallery.glob("*.png"))[0]
    direct = predictor.answer("What colour is the star?", path, top_k=5)
    assert [a["answer"] for a in result["answers"]] == [a.answer for a in direct.answers]
    np.testing.assert_allclose([a["probability"] for a in result["answers"]],
                               [a.probability for a in direct.answers], atol=1e-5)
    assert result["image"]["image_id"] == path.stem and result["image"]["boxes"] == "the boxes file boxes.json"
    assert result["image"]["regions"] == direct.image.regions
    source = result["source"]
    assert source["checkpoint"] == str(setup.checkpoint) and source["head"] == "vil_prediction"
    assert set(source["seconds"]) == {"features", "model", "total", "request"}
    maps = np.array(result["attention"]["text_to_region"])  # (layers, heads, tokens, regions)
    assert maps.shape[2:] == (len(result["attention"]["tokens"]), direct.image.regions + 1)
    np.testing.assert_allclose(maps.sum(-1), 1, atol=1e-3)
    # Asked again: the picture's features come from the cache.
    again = ask(client, mode="question", picture="g0", text="Is there a star?").json()
    assert again["image"]["features"] == "cached"


def test_expression_and_captions(client, setup):
    out = ask(client, mode="expression", picture="g1", text="the big red star").json()
    regions = [out["best"], *out["runners_up"]]
    probabilities = [r["probability"] for r in regions]
    assert probabilities == sorted(probabilities, reverse=True) and out["source"]["head"] == "vision_logit"
    assert all(len(r["box"]) == 4 for r in regions) and len(regions) == min(5, out["image"]["regions"] + 1)
    captions = ["A red star.", "Two blue circles.", "A green square."]
    out = ask(client, mode="caption", picture="g1", captions=captions).json()
    assert [c["caption"] for c in out["captions"]] == captions and out["source"]["head"] == "vil_logit"
    assert sorted(c["rank"] for c in out["captions"]) == [1, 2, 3]
    assert abs(sum(c["probability"] for c in out["captions"]) - 1) < 1e-4
    assert all(c["attention"]["tokens"][0] == "[CLS]" for c in out["captions"])


def test_upload_then_ask(client, setup):
    path = sorted(setup.gallery.glob("*.png"))[2]
    up = client.post(f"/api/pictures?name={path.name}", content=path.read_bytes())
    assert up.status_code == 200, up.text
    picture = up.json()
    assert picture["id"].startswith("u") and picture["name"] == path.name
    out = ask(client, mode="question", picture=picture["id"], text="How many circles are there?").json()
    assert out["image"]["image_id"] == path.stem and out["image"]["boxes"] == "the boxes file boxes.json"
    # A picture of one's own (not in the boxes file) gets a grid of boxes.
    own = client.post("/api/pictures?name=../../etc/passwd", content=png(64, 48)).json()
    out = ask(client, mode="expression", picture=own["id"], text="the gray square").json()
    assert out["image"]["image_id"] == "passwd" and out["image"]["boxes"].startswith("a 6 x 6 grid")
    assert out["image"]["regions"] == 36 and (out["image"]["width"], out["image"]["height"]) == (64, 48)


def test_bad_uploads_are_refused_with_a_message(client):
    too_big = client.post("/api/pictures?name=big.png", content=b"\0" * 200_001)
    assert too_big.status_code == 413 and "over the limit of 200,000" in too_big.json()["error"]
    too_many_pixels = client.post("/api/pictures", content=png(400, 300))
    assert too_many_pixels.status_code == 413
    assert "400 x 300 = 120,000 pixels, over the limit of 90,000" in too_many_pixels.json()["error"]
    bomb = client.post("/api/pictures?name=bomb.png", content=bomb_header(100_000, 100_000))
    assert bomb.status_code == 413 and "decompression bomb" in bomb.json()["error"]
    assert "10000000000 pixels" in bomb.json()["error"] and "limit is 90,000 pixels" in bomb.json()["error"]
    # Over PIL's warning but under its error, and over ours: refused from the header, nothing decoded.
    big = client.post("/api/pictures?name=big.png", content=bomb_header(12_000, 12_000))
    assert big.status_code == 413 and "12000 x 12000 = 144,000,000 pixels" in big.json()["error"]
    for data in (b"not an image", png(50, 50)[:60], b""):
        out = client.post("/api/pictures", content=data)
        assert out.status_code == 400 and ("not a readable image" in out.json()["error"] or "empty" in out.json()["error"])
    assert client.get("/api/info").status_code == 200  # still serving


@pytest.mark.parametrize("body,message", [
    ({"mode": "poem", "picture": "g0", "text": "x"}, "\"mode\" must be one of question, expression, caption"),
    ({"mode": "question", "picture": "g0"}, "give the question"),
    ({"mode": "question", "picture": "g0", "text": "x" * 301}, "at most 300"),
    ({"mode": "question", "picture": "/etc/passwd", "text": "Why?"}, "no picture '/etc/passwd' here"),
    ({"mode": "question", "picture": ["g0"], "text": "Why?"}, "give \"picture\""),
    ({"mode": "caption", "picture": "g0", "captions": "A star."}, "\"captions\" must be a list"),
    ({"mode": "caption", "picture": "g0", "captions": ["a"] * 11}, "at most 10"),
    ({"mode": "caption", "picture": "g0", "captions": ["A star."], "scorer": "magic"}, "--scorer must be"),
    (["not", "an", "object"], "must be a JSON object"),
])
def test_bad_requests_get_an_error_not_a_crash(client, body, message):
    out = client.post("/api/ask", json=body)
    assert out.status_code in (400, 404) and message in out.json()["error"], out.text
    assert ask(client, mode="question", picture="g0", text="Is there a star?").status_code == 200


def test_unparsable_and_oversized_requests(client):
    out = client.post("/api/ask", content=b"{not json", headers={"content-type": "application/json"})
    assert out.status_code == 400 and "not JSON" in out.json()["error"]
    out = client.post("/api/ask", content=b"x" * (65 << 10))
    assert out.status_code == 413 and "a request of" in out.json()["error"]
    assert client.get("/api/ask").status_code == 405


def test_a_mode_without_its_head_is_marked_and_refused(setup, tmp_path):
    # The tasks checkpoint without its answer vocabulary: questions cannot be answered.
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((setup.checkpoint / name).read_bytes())
    service = Service({"question": bare, "expression": setup.checkpoint}, bert_model=setup.bert,
                      features=setup.features, device="cpu")
    with TestClient(create_app(service)) as client:
        modes = client.get("/api/info").json()["modes"]
        assert not modes["question"]["available"] and "no VQA answer vocabulary" in modes["question"]["reason"]
        assert modes["expression"]["available"] and "caption" not in modes
        up = client.post("/api/pictures?name=a.png", content=png(32, 32)).json()
        out = ask(client, mode="question", picture=up["id"], text="Why?")
        assert out.status_code == 400 and "no VQA answer vocabulary" in out.json()["error"]
        out = ask(client, mode="caption", picture=up["id"], captions=["A."])
        assert out.status_code == 400 and "no checkpoint serves the caption mode" in out.json()["error"]


def test_a_missing_checkpoint_fails_at_start(setup, tmp_path, capsys):
    with pytest.raises(PredictError, match="no such file or directory"):
        Service({"question": tmp_path / "nowhere"}, bert_model=setup.bert)
    assert serve_main(["--checkpoint", str(tmp_path / "nowhere"), "--bert_model", str(setup.bert)]) == 2
    assert "python -m vilbert.serve: error: --checkpoint" in capsys.readouterr().err
    assert serve_main(["--demo", str(tmp_path / "results"), "--data", str(tmp_path)]) == 2
    assert "run `make demo` first" in capsys.readouterr().err


def test_upload_ids_are_never_paths():
    assert upload_image_id("../../secret/14691.png") == "14691"
    assert upload_image_id("C:\\x\\y z.jpg") == "yz"
    assert upload_image_id("") is None and upload_image_id("....") is None


def test_make_serve_command_serves_the_demo_run_on_loopback(setup, tmp_path):
    """`python -m vilbert.serve --demo RESULTS --data WORLD` (what `make serve` runs) on a results
    folder laid out as `make demo` leaves it: each mode's best checkpoint, the world's pictures."""
    import subprocess
    import sys
    import urllib.request

    from _scripts_helpers import REPO, env

    for run, task in (("VQA-refcoco+_demo", "VQA"), ("VQA-refcoco+_demo", "refcoco+"),
                      ("RetrievalFlickr30k_demo", "RetrievalFlickr30k")):
        (tmp_path / "results" / "runs" / run / "best").mkdir(parents=True, exist_ok=True)
        (tmp_path / "results" / "runs" / run / "best" / task).symlink_to(setup.checkpoint)
    with socket_port() as port:
        pass
    cmd = [sys.executable, "-m", "vilbert.serve", "--demo", str(tmp_path / "results"), "--data", str(setup.world),
           "--port", str(port), "--cache", str(tmp_path / "cache")]
    process = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        info = None
        for _ in range(600):
            if process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=2) as response:
                    info = json.load(response)
                break
            except OSError:
                time.sleep(0.2)
        assert info is not None, process.communicate(timeout=5)[0][-3000:] if process.poll() is not None else "no answer"
        runs = tmp_path / "results" / "runs"
        assert info["modes"]["question"]["checkpoint"] == str(runs / "VQA-refcoco+_demo" / "best" / "VQA")
        assert info["modes"]["caption"]["checkpoint"] == str(runs / "RetrievalFlickr30k_demo" / "best" / "RetrievalFlickr30k")
        assert all(m["available"] for m in info["modes"].values())  # the VQA vocabulary beside the checkpoint
        assert info["gallery"][0]["name"] == sorted(p.name for p in setup.gallery.glob("*.png"))[0]
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert f"open http://127.0.0.1:{port}/" in output


@contextlib.contextmanager
def socket_port():
    """A free loopback port (bound, then released for the server to take)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_bench_serve_times_every_mode_new_and_cached(setup, capsys, monkeypatch):
    """benchmarks/bench_serve.py (the figures of docs/SERVE.md, "Speed") on the tiny checkpoint."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_serve

    assert bench_serve.main(["--checkpoint", str(setup.checkpoint), "--bert_model", str(setup.bert), "--device", "cpu",
                             "--backbone", "pixels", "--boxes", "gt", "--boxes-file", setup.features.boxes_file,
                             "--gallery", str(setup.gallery), "--no-cache", "--pictures", "2", "--threads", "1"]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    counts = {(row[0][2:], row[1]): int(row[4].rstrip(" |")) for row in rows[1:]}
    assert counts == {("question", "new"): 2, ("question", "cached"): 2, ("expression", "cached"): 4,
                      ("caption", "cached"): 4}
    assert all(float(row[2]) > 0 for row in rows[1:])
