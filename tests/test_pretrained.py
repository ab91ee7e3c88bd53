"""The shipped CIFAR-10 checkpoint: it verifies, loads, and reproduces its recorded numbers offline."""
import os
import shutil

import pytest
import torch

from instdisc_lesson import pretrained
from instdisc_lesson.cli import build_config, build_parser
from instdisc_lesson.knn import embed, knn_accuracy, pixel_mean, raw_pixel_features
from instdisc_lesson.models import build_encoder
from instdisc_lesson.pretrained import PretrainedError, load_pretrained, load_sample, verify
from instdisc_lesson.recipe import TrainConfig


@pytest.fixture(scope="module", params=sorted(pretrained.SHIPPED))
def shipped(request):
    model, info = load_pretrained("cpu", name=request.param)
    ref, qry, recorded = load_sample(request.param)
    return model, info, ref, qry, recorded


EPOCHS = {"paper200": 200, "60-epoch": 60}


def test_record_says_how_it_was_made_and_that_it_learned(shipped):
    _, info, *_ = shipped
    made, m = info["made_by"], info["metrics"]
    name = next(n for n, c in pretrained.SHIPPED.items() if c.command == made["command"])
    assert made["epochs"] == info["config"]["epochs"] == EPOCHS[name]
    assert "JPEG" in made["data"]
    assert m["knn_k"] == 200 and 0 < m["knn_top1"] <= m["knn_top5"] <= 1
    # the claim the course makes about it: training beats the same network untrained and raw pixels
    assert m["knn_top1"] > m["random_init_knn_top1"] + 0.10 and m["knn_top1"] > m["raw_pixel_knn_top1"] + 0.10
    assert m["history"][-1]["knn_top1"] == pytest.approx(m["knn_top1"])
    table = pretrained.record_table(m).splitlines()
    assert len(table) == 4 and f"{m['knn_top1']:.1%} / {m['knn_top5']:.1%}" in table[1]
    assert f"{m['raw_pixel_knn_top1']:.1%}" in table[3]


def test_features_of_stored_test_images_match_the_recorded_ones(shipped):
    model, _, ref, _, recorded = shipped
    f = embed(model, ref.images[:16])
    assert f.shape == (16, 128)
    torch.testing.assert_close(f, recorded["features_first16"], atol=1e-4, rtol=0)
    # unit length, and the model is not a constant map: the 16 images are told apart
    torch.testing.assert_close(f.norm(dim=1), torch.ones(16))
    assert (f @ f.T - torch.eye(16)).max() < 0.99


def test_sample_knn_reproduces_the_recorded_accuracy(shipped):
    model, info, ref, qry, recorded = shipped
    k, sigma, one_query = int(recorded["knn_k"]), recorded["knn_sigma"], 1 / len(qry)
    top1 = knn_accuracy(embed(model, ref.images), ref.labels, embed(model, qry.images), qry.labels, k, sigma)[0]
    assert abs(top1 - recorded["knn_pretrained_top1"]) <= one_query + 1e-9
    mean = pixel_mean(ref.images)
    raw = knn_accuracy(raw_pixel_features(ref.images, mean), ref.labels, raw_pixel_features(qry.images, mean),
                       qry.labels, k, sigma)[0]
    assert abs(raw - recorded["knn_raw_pixels_top1"]) <= one_query + 1e-9
    untrained, _ = build_encoder(TrainConfig.from_dict(info["config"]), ref.images, "cpu")
    rand = knn_accuracy(embed(untrained, ref.images), ref.labels, embed(untrained, qry.images), qry.labels, k, sigma)[0]
    assert abs(rand - recorded["knn_random_init_top1"]) <= one_query + 1e-9
    assert top1 > rand + 0.05 and top1 > raw + 0.05, (top1, rand, raw)


def test_sample_is_balanced_cifar10(shipped):
    _, _, ref, qry, _ = shipped
    for part in (ref, qry):
        assert len(part) == 500 and part.images.dtype == torch.uint8
        assert torch.bincount(part.labels, minlength=10).tolist() == [50] * 10
    assert ref.classes[0] == "airplane" and ref.classes[9] == "truck"


def test_the_recorded_command_rebuilds_the_config_in_either_mode(shipped, monkeypatch):
    _, info, *_ = shipped
    name = next(n for n, c in pretrained.SHIPPED.items() if c.command == info["made_by"]["command"])
    for quick in ("1", "0"):
        monkeypatch.setenv("INSTDISC_QUICK", quick)
        cfg = build_config(build_parser().parse_args(pretrained.train_command(name=name))).to_dict()
        assert pretrained.train_config(name).to_dict() == cfg
        # nce_m and NCE's Z settings differ between the two modes' defaults; the softmax never reads them
        shipped = TrainConfig.from_dict(info["config"]).to_dict()  # fields added since (world_size...) at their defaults
        unread = ("nce_m", "z_mode", "z_estimator")
        assert {k: v for k, v in cfg.items() if k not in unread} == {k: v for k, v in shipped.items() if k not in unread}
    assert pretrained.train_command("x/y", name=name)[-2:] == ["--out", "x/y"]


def test_each_name_loads_its_own_network_and_a_wrong_name_says_which_exist():
    assert pretrained.CHECKPOINT.name == pretrained.SHIPPED[pretrained.DEFAULT].file
    assert pretrained.train_command(name="paper200")[-1] == "runs/records/paper-softmax"   # the record's own folder
    # a learner's own run of a checkpoint lands where its command writes, under the notebooks' runs folder
    assert pretrained.run_dir("paper200").parts[-2:] == ("records", "paper-softmax")
    assert pretrained.run_dir("60-epoch").name == "pretrained-convnet-cifar10"
    _, info = load_pretrained("cpu", name="paper200")
    assert info["made_by"]["command"] == pretrained.SHIPPED["paper200"].command == pretrained.COMMAND   # the default
    assert info["config"]["bank_init"] == "random" and info["config"]["epochs"] == 200
    _, info = load_pretrained("cpu", name="60-epoch")
    assert info["config"]["bank_init"] == "features" and info["config"]["epochs"] == 60
    with pytest.raises(PretrainedError, match="paper200, 60-epoch"):
        load_pretrained("cpu", name="200-epoch")
    # the 60-epoch model's own sample record, not the default's: their first features differ
    first = {name: load_sample(name)[2]["features_first16"] for name in pretrained.SHIPPED}
    assert not torch.allclose(first["paper200"], first["60-epoch"], atol=1e-2)


def test_damaged_checkpoint_is_refused_with_what_to_do(tmp_path, monkeypatch):
    bad = tmp_path / pretrained.CHECKPOINT.name
    shutil.copy(pretrained.CHECKPOINT, bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the weights
    bad.write_bytes(bytes(data))
    with pytest.raises(PretrainedError, match="damaged or was replaced") as err:
        verify(bad)
    assert "git checkout" in str(err.value) and pretrained.COMMAND in str(err.value)
    monkeypatch.setattr(pretrained, "CHECKPOINT", bad)
    with pytest.raises(PretrainedError):
        load_pretrained("cpu")
    bad.write_bytes(b"version https://git-lfs.github.com/spec/v1\n")  # a Git LFS pointer instead of the file
    with pytest.raises(PretrainedError, match="damaged"):
        load_pretrained("cpu")
    os.remove(bad)
    with pytest.raises(PretrainedError, match="missing"):
        load_pretrained("cpu")


def test_sha256_of_a_known_file(tmp_path):
    path = tmp_path / "abc.txt"
    path.write_bytes(b"abc")  # FIPS 180-2 example
    assert pretrained.sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert verify(path, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == path


def test_the_command_line_names_a_shipped_checkpoint_after_a_colon():
    from instdisc_lesson.cli import pretrained_encoder

    _, default = pretrained_encoder("shipped", "cpu")
    _, sixty = pretrained_encoder("shipped:60-epoch", "cpu")
    _, paper = pretrained_encoder("shipped:paper200", "cpu")
    assert default == TrainConfig.from_dict(load_pretrained("cpu")[1]["config"]) == paper   # the default: the better one
    assert (sixty.epochs, sixty.bank_init) == (60, "features") and (paper.epochs, paper.bank_init) == (200, "random")
    with pytest.raises(PretrainedError, match="ships paper200, 60-epoch"):
        pretrained_encoder("shipped:best", "cpu")


def test_the_test_set_umap_belongs_to_the_shipped_network():
    """The UMAP asset's per-class kNN, averaged over the 10 balanced classes, is each feature set's kNN on the 10,000
    test images as recorded with the checkpoint: a map of another network (or the untrained one under the shipped
    name, or labels in another order) would not average to these."""
    import numpy as np

    umap_ = pretrained.load_test_umap()
    metrics = pretrained.load_pretrained()[1]["metrics"]
    labels = umap_["labels"]
    assert len(labels) == 10_000 and np.bincount(labels).tolist() == [1_000] * 10
    for name, key in (("shipped", "knn_top1"), ("untrained", "random_init_knn_top1"), ("pixels", "raw_pixel_knn_top1")):
        assert umap_[f"xy_{name}"].shape == (10_000, 2) and np.isfinite(umap_[f"xy_{name}"]).all()
        assert abs(umap_[f"knn_per_class_{name}"].mean() - metrics[key]) <= 3 / 10_000, (name, metrics[key])
