import shutil

import pytest
import torch

from devs.errors import InvalidParameterError
from devs.models import build_model
from devs.train import (Normalizer, TrainRecipe, _batched, _inference_runner, accuracy, extract_features,
                        mean_features, predict_logits, train_classifier)


def _train(digits, recipe: TrainRecipe) -> tuple[torch.nn.Module, float]:
    net = build_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), width=16, seed=0)
    normalizer = Normalizer(*digits.channel_stats(), torch.device("cpu"))
    one_hot = torch.eye(10)[digits.train.labels]
    train_classifier(net, digits.train.images, one_hot, recipe, normalizer, 0, torch.device("cpu"))
    return net, accuracy(net, digits.test.images, digits.test.labels, normalizer, torch.device("cpu"))


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile on CPU needs a C++ compiler (c++ or g++ on PATH)")
def test_compiled_training_matches_eager(digits):
    recipe = TrainRecipe(epochs=10, batch_size=64)
    eager_net, eager_acc = _train(digits, recipe)
    compiled_net, compiled_acc = _train(digits, recipe.replace(compile=True))
    # Same seed, same batches: the compiled kernels only reorder float arithmetic, whose rounding differences
    # grow over 210 SGD steps but stay small; the accuracy is the same within noise. At 10 epochs the net is
    # on the steep part of its learning curve, where that noise is a few points (62.4 against 66.2 % seen on
    # an AVX-512 CPU, with the weights 3.1 % apart): the weights are the tight check.
    eager_params = torch.nn.utils.parameters_to_vector(eager_net.parameters())
    compiled_params = torch.nn.utils.parameters_to_vector(compiled_net.parameters())
    assert (eager_params - compiled_params).norm() <= 0.05 * eager_params.norm()
    assert eager_acc > 0.5 and abs(eager_acc - compiled_acc) < 0.06
    # Compiled inference (channels-last, last batch padded) gives the same predictions as eager inference.
    normalizer = Normalizer(*digits.channel_stats(), torch.device("cpu"))
    images, labels = digits.test.images, digits.test.labels
    compiled_inference = accuracy(compiled_net, images, labels, normalizer, torch.device("cpu"), compile=True)
    assert abs(compiled_inference - compiled_acc) <= 1 / len(labels)


def test_dsa_augmentation_is_seeded_and_changes_the_training(digits):
    recipe = TrainRecipe(epochs=10, batch_size=128, dsa="color_crop_cutout_flip_scale_rotate")
    net, acc = _train(digits, recipe)
    again, _ = _train(digits, recipe)
    plain, _ = _train(digits, recipe.replace(dsa=None))
    vector = torch.nn.utils.parameters_to_vector
    assert torch.equal(vector(net.parameters()), vector(again.parameters()))
    assert not torch.allclose(vector(net.parameters()), vector(plain.parameters()))
    assert acc > 0.4  # still learns through the augmentation (chance is 0.1; 0.68 without it)
    with pytest.raises(InvalidParameterError, match="blur"):
        TrainRecipe(dsa="color_blur")


def test_on_batch_sees_every_row_once_per_epoch(digits):
    seen = []
    recipe = TrainRecipe(epochs=2, batch_size=100)
    net = build_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), width=8, seed=0)
    normalizer = Normalizer(*digits.channel_stats(), torch.device("cpu"))
    train_classifier(net, digits.train.images, torch.eye(10)[digits.train.labels], recipe, normalizer, 0,
                     torch.device("cpu"), on_batch=lambda index, logits: seen.append((index.clone(), logits.shape)))
    rows = torch.cat([index for index, _ in seen])
    assert torch.equal(torch.sort(rows).values, torch.arange(len(digits.train)).repeat_interleave(2))
    assert all(shape == (len(index), 10) for index, shape in seen)


def test_inference_matches_the_net_and_leaves_its_layout(digits):
    net = build_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), width=16, seed=0).eval()
    normalizer = Normalizer(*digits.channel_stats(), torch.device("cpu"))
    images = digits.test.images[:37]
    with torch.no_grad():
        expected_logits, expected_features = net(normalizer(images)), net.features(normalizer(images))
    cpu = torch.device("cpu")
    assert torch.allclose(predict_logits(net, images, normalizer, cpu, batch_size=16), expected_logits, atol=1e-5)
    assert torch.allclose(extract_features(net, images, normalizer, cpu, batch_size=16), expected_features, atol=1e-5)
    # DM's mean embedding, channels-last and 32 rows at a time, is the plain mean.
    assert torch.allclose(mean_features(net, normalizer(images), chunk=16), expected_features.mean(0), atol=1e-5)
    grouped = mean_features(net, normalizer(images), chunk=16, sizes=[20, 17])  # one mean per run of rows
    assert torch.allclose(grouped, torch.stack([expected_features[:20].mean(0), expected_features[20:].mean(0)]), atol=1e-5)
    # Inference runs on a channels-last copy; the net itself keeps its layout (safetensors needs contiguous).
    assert all(parameter.is_contiguous() for parameter in net.parameters())
    # A short last batch padded to the batch size (as compiled inference does) returns the same rows.
    padded = _batched(_inference_runner(net, cpu, compile=False), images, normalizer, cpu, 16, "fp32", pad=True)
    assert padded.shape == expected_logits.shape and torch.allclose(padded, expected_logits, atol=1e-5)


def test_compile_under_torchrun_warns_that_training_stays_eager(digits):
    from devs.distributed import Group

    net = build_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), width=8, seed=0)
    normalizer = Normalizer(*digits.channel_stats(), torch.device("cpu"))
    one_hot = torch.eye(10)[digits.train.labels]
    # rank 0 of 2 with no process group: the warning comes before DistributedDataParallel refuses to start
    with pytest.warns(UserWarning, match="not applied to distributed"), pytest.raises((RuntimeError, ValueError)):
        train_classifier(net, digits.train.images, one_hot, TrainRecipe(epochs=1, compile=True), normalizer, 0,
                         torch.device("cpu"), group=Group(0, 2))
