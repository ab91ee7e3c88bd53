"""The three datasets, all through one (n, 3, 32, 32) uint8 path, and the offline error message."""
import urllib.error
import warnings

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from conftest import write_cifar_batches
from instdisc_lesson import data
from instdisc_lesson.data import DatasetUnavailableError, InstanceDataset


def test_instance_dataset_returns_image_label_index():
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).remainder(256).to(torch.uint8).view(2, 3, 32, 32)
    ds = InstanceDataset(images, torch.tensor([7, 3]))
    image, label, index = ds[1]
    assert torch.equal(image, images[1]) and label == 3 and index == 1
    with pytest.raises(ValueError, match="uint8 tensor of shape"):
        InstanceDataset(images.float(), torch.tensor([7, 3]))
    with pytest.raises(ValueError, match="labels for"):
        InstanceDataset(images, torch.tensor([1]))


def test_cifar10_reads_torchvision_format(tmp_path):
    written = write_cifar_batches(tmp_path / "cifar-10-batches-py")
    train = data.load_cifar10(tmp_path, train=True, download=False)
    test = data.load_cifar10(tmp_path, train=False, download=False)
    assert len(train) == 30 and len(test) == 6
    # Reference: torchvision's layout, a row of 3072 bytes is R plane, G plane, B plane, each 32x32 row-major.
    raw, labels = written["data_batch_2"]
    assert torch.equal(train.images[6], torch.from_numpy(raw[0].reshape(3, 32, 32)))
    assert train.labels[6].item() == labels[0]
    assert train.classes[0] == "airplane" and train.num_classes == 10


def test_cifar10_root_from_environment(tmp_path, monkeypatch):
    write_cifar_batches(tmp_path / "cifar-10-batches-py")
    monkeypatch.setenv("INSTDISC_DATA", str(tmp_path))
    assert len(data.load_cifar10(train=False, download=False)) == 6


def test_cifar10_offline_gives_clear_message(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", no_network)
    with pytest.raises(DatasetUnavailableError) as info:
        data.load_cifar10(tmp_path / "empty", train=True)
    message = str(info.value)
    assert str(tmp_path / "empty" / "cifar-10-batches-py") in message  # where to put the files
    assert "INSTDISC_BUDGET=quick" in message and "--data quick" in message and "INSTDISC_DATA" in message  # other ways
    assert "URLError" in message  # and what actually went wrong
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no urllib traceback chain
    assert not (tmp_path / "empty").exists()  # the folder made for the download is gone again


def test_cifar10_corrupt_files_give_clear_message(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(folder)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DatasetUnavailableError, match="unreadable"):
        data.load_cifar10(tmp_path, train=False, download=False)


def test_quick_set_is_offline_and_shaped_like_cifar():
    train, test = data.load_quick()
    assert train.images.dtype == torch.uint8 and tuple(train.images.shape[1:]) == (3, 32, 32)
    assert len(train) > 1000 and len(test) > 200 and train.num_classes == 10
    assert set(train.labels.tolist()) == set(test.labels.tolist()) == set(range(10))


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def test_image_folder_converts_and_splits(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cats", "dogs"):
        for i in range(5):
            _save(tmp_path / "train" / c / f"{i}.png", rng.integers(0, 256, (48, 64), dtype=np.uint8))  # grayscale, 64x48
        _save(tmp_path / "test" / c / "0.jpg", rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    train, test = data.load_image_folder(tmp_path)
    assert len(train) == 10 and len(test) == 2 and train.classes == ("cats", "dogs")
    assert tuple(train.images.shape) == (10, 3, 32, 32)
    assert torch.equal(train.images[:, 0], train.images[:, 1])  # grayscale became RGB with equal channels
    assert train.labels.tolist() == [0] * 5 + [1] * 5


def test_image_folder_without_test_holds_out(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for i in range(10):
            _save(tmp_path / "train" / c / f"{i}.png", rng.integers(0, 256, (32, 32, 4), dtype=np.uint8), "RGBA")
    train, test = data.load_image_folder(tmp_path)
    assert len(train) == 16 and len(test) == 4  # 20 % of each class
    assert sorted(test.labels.tolist()) == [0, 0, 1, 1]


def test_image_folder_skips_corrupt_files_with_a_count(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        _save(tmp_path / "train" / "x" / f"{i}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    (tmp_path / "train" / "x" / "broken.png").write_bytes(b"\x89PNG garbage")
    (tmp_path / "train" / "x" / "empty.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 2 unreadable image file"):
        data._read_split(tmp_path / "train", None)


@pytest.mark.parametrize("layout,message", [
    ("missing", "does not exist"),
    ("no_train", "does not exist"),
    ("no_classes", "no class sub-folders"),
    ("no_images", "holds no readable images"),
])
def test_image_folder_errors(tmp_path, layout, message):
    root = tmp_path / "folder"
    if layout != "missing":
        root.mkdir()
    if layout == "no_classes":
        (root / "train").mkdir()
    if layout == "no_images":
        (root / "train" / "cls").mkdir(parents=True)
        (root / "train" / "cls" / "notes.txt").write_text("hello")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=message):
            data.load_image_folder(root)


def test_load_dataset_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown data 'imagenet'"):
        data.load_dataset("imagenet")


# -- round two (issue 16): inputs that used to give silent wrong results ------------------------------------------
def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)


def test_16_bit_png_is_scaled_not_clipped_to_white(tmp_path):
    grey = np.full((40, 40), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    _save(tmp_path / "grey16.png", grey)
    with Image.open(tmp_path / "grey16.png") as img:
        assert img.mode.startswith("I")  # Pillow opens it as a 16/32-bit integer image
        pixels = data.pil_to_tensor32(img)
    assert pixels.shape == (3, 32, 32) and int(pixels.float().mean().round()) == 127  # 32768 / 257, not 255


def test_nested_images_belong_to_their_class_and_odd_test_classes_are_reported(tmp_path):
    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)  # noqa: E731
    for c in ("cat", "dog"):
        _save(tmp_path / "d" / "train" / c / "a.png", img())
        _save(tmp_path / "d" / "train" / c / "2019" / "b.png", img())   # nested: still this class
        _save(tmp_path / "d" / "train" / c / ".thumbs" / "t.png", img())  # hidden: left out
        _save(tmp_path / "d" / "test" / c / "c.png", img())
    _save(tmp_path / "d" / "test" / "bird" / "x.png", img())
    with pytest.warns(UserWarning, match="bird are not in train/"):
        train, test = data.load_image_folder(tmp_path / "d")
    assert len(train) == 4 and train.labels.tolist() == [0, 0, 1, 1] and len(test) == 2

    for c, other in (("cat", "car"), ("dog", "bus")):
        _save(tmp_path / "e" / "train" / c / "a.png", img())
        _save(tmp_path / "e" / "test" / other / "a.png", img())
    with pytest.raises(ValueError, match="none of which is in"):
        data.load_image_folder(tmp_path / "e")


def test_a_decompression_bomb_is_skipped_with_a_warning(tmp_path, monkeypatch):
    for i in range(3):
        _save(tmp_path / "b" / "train" / "x" / f"{i}.png", np.zeros((40, 40, 3), dtype=np.uint8))
    _save(tmp_path / "b" / "train" / "x" / "huge.png", np.zeros((400, 400, 3), dtype=np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 400 x 400 is now more than twice the limit
    with pytest.warns(UserWarning, match="skipped 1 unreadable image file.*too large"):
        images, labels, _ = data._read_split(tmp_path / "b" / "train", None)
    assert len(images) == 3


def test_malformed_cifar_batches_give_clear_message(tmp_path):
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(folder)
    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump(["not", "a", "batch"], fh)
    with pytest.raises(DatasetUnavailableError, match="unreadable"):
        data.load_cifar10(tmp_path, train=True, download=False)


def test_to_float_scales_uint8_and_leaves_float_images_alone():
    """uint8 -> [0, 1]; a float batch (an augmented one) is already in [0, 1]: not divided again, not changed in place."""
    from instdisc_lesson.data import to_float

    u8 = torch.tensor([[0, 51, 255]], dtype=torch.uint8)
    assert torch.equal(to_float(u8), torch.tensor([[0.0, 0.2, 1.0]]))
    views = torch.tensor([[0.0, 0.5, 1.0]])
    out = to_float(views)
    assert torch.equal(out, torch.tensor([[0.0, 0.5, 1.0]])) and torch.equal(views, torch.tensor([[0.0, 0.5, 1.0]]))
    with pytest.raises(TypeError, match="uint8"):
        to_float(torch.tensor([[1, 2]], dtype=torch.int64))
