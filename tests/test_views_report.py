"""Views fitted to the images (views.py), the run's report (report.py) and the embed command, on images made here."""
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from instdisc_lesson.augment import AugmentConfig
from instdisc_lesson.cli import main
from instdisc_lesson.views import MARKS_BATCH, MARKS_TAU, MILD_CROP, fitted_recipe, fitted_views, look, parse_augment


def strokes(n=40, seed=0):
    """Grey marks on a black background: a bar 3 pixels wide in the middle of the image (uint8, (n, 3, 32, 32))."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 32, 32)
    for i in range(n):
        top = int(torch.randint(8, 12, (1,), generator=g))
        x[i, 0, top:top + 12, 14:17] = 200 + 50 * torch.rand(1, generator=g)
    return x.expand(-1, 3, -1, -1).to(torch.uint8).contiguous()


def photos(n=40, seed=0):
    """Colour noise filling the image: every pixel its own colour."""
    return (torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8)


def test_look_measures_grey_fill_and_background_worked_by_hand():
    seen = look(strokes())
    # the bar spans 12 rows and 3 columns of 32 x 32: a bounding box of 36 / 1024 of the image
    assert seen["grey"] == 1.0 and seen["plain_border"] == 1.0 and seen["fill"] == pytest.approx(36 / 1024)
    colour = look(photos())
    assert colour["grey"] == 0.0 and colour["plain_border"] == 0.0


def test_grey_marks_get_no_colour_jitter_a_mild_crop_and_no_mirror():
    views, reasons = fitted_views(strokes())
    assert (views.saturation, views.hue, views.p_gray, views.p_flip) == (0.0, 0.0, 0.0, 0.0)
    assert views.crop_scale == (MILD_CROP, 1.0) and (views.brightness, views.contrast) == (0.4, 0.4)
    assert any("grey" in r for r in reasons) and any("mirror" in r for r in reasons)
    assert fitted_views(strokes(), flip=True)[0].p_flip == 0.5  # --flip: the user knows better


def test_colour_photos_keep_the_papers_recipe():
    views, reasons = fitted_views(photos())
    assert views == AugmentConfig() and reasons == ["colour images filled by their content: the paper's recipe unchanged"]
    assert fitted_views(photos(), flip=False)[0] == AugmentConfig(p_flip=0.0)  # --no-flip


def test_grey_photos_lose_only_the_colour():
    grey = photos()[:, :1].expand(-1, 3, -1, -1).contiguous()
    views, _ = fitted_views(grey)
    assert views == AugmentConfig(saturation=0.0, hue=0.0, p_gray=0.0)  # filled by content: the paper's crop and mirror


def test_grey_marks_get_their_tau_batch_and_turns_photos_only_their_views():
    settings, reasons = fitted_recipe(strokes(200))
    assert settings["tau"] == MARKS_TAU and settings["batch_size"] == MARKS_BATCH
    assert settings["augment"].crop_scale == (MILD_CROP, 1.0) and any("tau" in r for r in reasons)
    assert fitted_recipe(strokes(40))[0]["batch_size"] == 10  # a small folder: at most a quarter of it
    assert "tau" not in fitted_recipe(strokes(200), tau=False)[0]  # PIC keeps its own, eq. 1 has none
    settings, _ = fitted_recipe(photos())
    assert settings == {"augment": AugmentConfig()}  # photos: the recipe calibrated on photos, untouched
    grey = photos()[:, :1].expand(-1, 3, -1, -1).contiguous()
    assert set(fitted_recipe(grey)[0]) == {"augment"}  # grey photos are not marks


def test_the_options_given_win_over_the_fitted_ones(marks_folder):
    from instdisc_lesson.arguments import build_config, build_parser
    from instdisc_lesson.data import load_image_folder

    train = load_image_folder(marks_folder)[0]
    parse = lambda *extra: build_parser().parse_args(["train", "--data", str(marks_folder), "--out", "x", *extra])
    cfg = build_config(parse(), train)
    assert (cfg.tau, cfg.batch_size, cfg.augment.rotate) == (MARKS_TAU, 10, 0.0)
    cfg = build_config(parse("--tau", "0.2", "--batch-size", "4", "--augment", "rotate=15"), train)
    assert (cfg.tau, cfg.batch_size, cfg.augment.rotate, cfg.augment.p_flip) == (0.2, 4, 15.0, 0.0)
    assert build_config(parse("--objective", "pic"), train).tau == 0.2  # PIC's own temperature
    eq1 = build_config(parse("--objective", "parametric"), train)  # eq. 1 reads no tau: only the batch is fitted
    assert eq1.batch_size == 10 and eq1.tau != MARKS_TAU
    assert build_config(parse("--objective", "nce"), train).tau == MARKS_TAU
    paper = build_config(parse("--augment", "paper"), train)
    assert paper.tau == 0.07 and paper.augment == AugmentConfig()  # the paper's recipe: nothing fitted


def test_augment_settings_parse_and_refuse():
    assert parse_augment("crop_min=0.5, p_flip=0", AugmentConfig()) == AugmentConfig(crop_scale=(0.5, 1.0), p_flip=0.0)
    for text, message in (("crop=0.5", "KEY one of crop_min"), ("p_flip=x", "is not a number"), ("p_flip=2", "probability")):
        with pytest.raises(ValueError, match=message):
            parse_augment(text, AugmentConfig())


@pytest.fixture(scope="module")
def marks_folder(tmp_path_factory):
    """Grey bars, vertical or horizontal (the class), as PNG files in train/ and test/."""
    root = tmp_path_factory.mktemp("marks")
    g = np.random.default_rng(0)
    for split, count in (("train", 20), ("test", 6)):
        for name in ("vertical", "horizontal"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                x = np.zeros((28, 28), np.uint8)
                a, b = g.integers(4, 10), g.integers(12, 15)
                if name == "vertical":
                    x[a:a + 14, b:b + 3] = 255
                else:
                    x[b:b + 3, a:a + 14] = 255
                Image.fromarray(x, mode="L").save(root / split / name / f"{i}.png")
    return root


def test_train_prints_the_views_writes_the_report_and_embed_writes_features(marks_folder, tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--data", str(marks_folder), "--epochs", "2", "--batch-size", "8", "--knn-k", "3", "--out", str(out)])
    said = capsys.readouterr()
    assert said.err.startswith(f"device: CPU | data: {marks_folder}, 40 training and 12 test images in 2 classes")
    assert "views: grey images" in said.err and "no mirror" in said.err
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["augment"]["p_flip"] == 0.0 and config["augment"]["saturation"] == 0.0  # recorded in the config
    png = Image.open(out / "report.png")
    assert png.format == "PNG" and png.size[0] > 1000 and png.size[1] > 700
    assert "report: " in said.err and "report.png" in said.err
    # embed: a folder with two images and one file that is not an image
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(np.full((40, 30, 3), 120, np.uint8)).save(folder / "a.jpg")
    Image.fromarray(np.zeros((28, 28), np.uint8), mode="L").save(folder / "sub" / "b.png")
    (folder / "notes.txt").write_text("not an image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["embed", "--checkpoint", str(out / "checkpoint.pt"), "--data", str(folder), "--out", str(tmp_path / "f.npz")])
    assert any("1 file(s)" in str(w.message) and "notes.txt" in str(w.message) for w in caught)
    saved = np.load(tmp_path / "f.npz")
    assert list(saved["files"]) == ["a.jpg", "sub/b.png"] and saved["features"].shape == (2, config["dim"])
    assert np.allclose(np.linalg.norm(saved["features"], axis=1), 1.0, atol=1e-5)
    assert "2 images ->" in capsys.readouterr().out


def test_report_draws_its_panels(marks_folder, tmp_path):
    from instdisc_lesson.data import load_image_folder
    from instdisc_lesson.models import build_model
    from instdisc_lesson.report import write_report

    train, test = load_image_folder(marks_folder)
    metrics = {"history": [{"epoch": 1, "loss": 3.0, "knn_top1": 0.6}, {"epoch": 2, "loss": 2.5, "knn_top1": 0.7}],
               "random_init_knn_top1": 0.5, "raw_pixel_knn_top1": 0.9, "knn_top1": 0.7,
               "config": {"objective": "softmax", "knn_k": 3, "data": "marks"}}
    panels = write_report(build_model("convnet"), train, test, metrics, tmp_path / "r.png")
    assert panels[:2] == ["loss", "knn"] and panels[-2:] == ["retrieval: learned features", "retrieval: raw pixels"]
    try:
        import umap  # noqa: F401
        assert "umap" in panels
    except ImportError:
        assert "umap" not in panels


def test_embed_refuses_a_missing_folder_and_a_folder_without_images(tmp_path):
    from instdisc_lesson.models import build_model
    from instdisc_lesson.report import embed_folder

    with pytest.raises(ValueError, match="is not a folder"):
        embed_folder(build_model("convnet"), tmp_path / "nowhere", tmp_path / "f.npz")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_text("x")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no readable images"):
        embed_folder(build_model("convnet"), tmp_path / "empty", tmp_path / "f.npz")
    assert not (tmp_path / "f.npz").exists()
