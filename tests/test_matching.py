"""DC (gradient matching) and DM (distribution matching) on digits, with tiny settings."""

import dataclasses
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import devs.cli as cli
from devs import load_distilled
from devs.dsa import GROUPS, DrawnAugment, augment_groups, parse_strategy, sample_per_image, sample_siamese
from devs.errors import InvalidParameterError
from devs.formation import decode
from devs.methods import DistributionMatching, GradientMatching, get_method, list_methods
from devs.methods.base import as_training_data
from devs.methods.gradient_matching import dc_loops, gradient_distance, layer_distance
from devs.train import Normalizer

# Small nets and real batches keep every fit well under a second per iteration on one CPU core.
# depth=2 for DC: on 8x8 digits a third block instance-normalises 2x2 maps, which makes DC's
# matching loss very rough (see test_dc_descends_on_a_fixed_net).
FAST = {
    "dc": dict(width=16, depth=2, batch_real=64, device="cpu", progress=False),
    "dm": dict(width=16, batch_real=64, device="cpu", progress=False),
}
BOTH = pytest.mark.parametrize("name", ["dc", "dm"])


def fit(name, digits, **params):
    return get_method(name, **{**FAST[name], **params}).fit(digits)


@BOTH
def test_sizes_labels_and_class_balance(name, digits):
    method = fit(name, digits, ipc=2, iterations=2)
    result = method.distilled_
    assert len(result) == 20 and result.images.shape == (20, *digits.train.images.shape[1:])
    assert result.images.dtype == torch.float32 and result.labels.shape == (20, 10)
    assert torch.equal(result.labels, torch.eye(10)[result.hard_labels])  # one-hot rows, summing to 1
    assert result.class_counts() == [2] * 10
    assert result.hard_labels.tolist() == [cls for cls in range(10) for _ in range(2)]  # class-major
    assert result.method == name and result.source_train_size == len(digits.train)
    assert method.iterations_done_ == 2 and len(method.loss_history_) == 2
    assert all(isinstance(x, float) and math.isfinite(x) for x in method.loss_history_)
    assert result.config["iterations_done"] == 2
    assert "device" not in result.config and "progress" not in result.config  # runtime params stay out


@BOTH
def test_starts_from_real_images_in_pixel_units(name, digits):
    """One negligible step leaves each image (converted back to pixel units) on a real image of its class."""
    result = fit(name, digits, ipc=1, iterations=1, lr_img=1e-9).distilled_
    train = digits.train.images.flatten(1)
    for index, image in enumerate(result.images.flatten(1)):
        nearest = (train - image).abs().max(1).values.argmin()
        assert torch.allclose(train[nearest], image, atol=1e-5)
        assert int(digits.train.labels[nearest]) == index


@BOTH
def test_round_trip_through_the_file(name, digits, tmp_path):
    result = fit(name, digits, ipc=1, iterations=2).distilled_
    loaded = load_distilled(result.save(tmp_path / f"{name}.safetensors"))
    assert torch.equal(loaded.images, result.images) and torch.equal(loaded.labels, result.labels)
    assert loaded.method == name and loaded.config == result.config and loaded.classes == result.classes


@BOTH
def test_same_seed_same_images_other_seed_other_images(name, digits):
    a = fit(name, digits, ipc=2, iterations=3, random_state=1)
    b = fit(name, digits, ipc=2, iterations=3, random_state=1)
    c = fit(name, digits, ipc=2, iterations=3, random_state=2)
    assert torch.equal(a.distilled_.images, b.distilled_.images) and a.loss_history_ == b.loss_history_
    assert not torch.equal(a.distilled_.images, c.distilled_.images)


@BOTH
def test_zero_time_budget_runs_exactly_one_iteration(name, digits):
    method = fit(name, digits, ipc=1, iterations=50, time_budget_s=0)
    assert method.iterations_done_ == 1 and len(method.loss_history_) == 1
    assert method.distilled_.config["iterations_done"] == 1 and method.distilled_.config["time_budget_s"] == 0


@BOTH
def test_descends_on_a_fixed_net(name, digits, monkeypatch):
    """With the same net every iteration (and every real image per class) the objective is fixed: it must fall."""
    cls = GradientMatching if name == "dc" else DistributionMatching
    fresh_net = cls._fresh_net
    monkeypatch.setattr(cls, "_fresh_net", lambda self, data, state, seed: fresh_net(self, data, state, 7))
    extra = {"dsa": None} if name == "dm" else {}
    history = fit(name, digits, ipc=1, iterations=12, batch_real=256, **extra).loss_history_
    assert sum(history[-3:]) < 0.8 * sum(history[:3])


def test_dc_loss_falls_over_fresh_nets(digits):
    history = fit("dc", digits, ipc=1, iterations=20, lr_img=0.01).loss_history_
    assert sum(history[-5:]) < sum(history[:5])


def test_dc_loops_follow_the_official_table():
    table = [(1, 1), (10, 50), (20, 25), (30, 20), (40, 15), (50, 10)]
    assert [dc_loops(ipc) for ipc in (1, 10, 20, 30, 40, 50)] == table
    assert dc_loops(5) == (1, 1) and dc_loops(6) == (10, 50) and dc_loops(15) == (10, 50)  # nearest, ties down
    assert dc_loops(100) == (50, 10)
    assert GradientMatching(ipc=10, outer_loop=2)._loops() == (2, 50)


def test_layer_distance_is_the_official_distance_wb():
    grad = torch.randn(4, 3, 3, 3)
    assert float(layer_distance(grad, grad)) == pytest.approx(0.0, abs=1e-5)
    assert float(layer_distance(grad, -grad)) == pytest.approx(8.0, abs=1e-4)  # 4 filters, 1 - (-1) each
    assert float(layer_distance(torch.randn(7), torch.randn(7))) == 0.0  # biases and norm scales ignored
    rows = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert float(layer_distance(rows, torch.tensor([[0.0, 1.0], [1.0, 1.0]]))) == pytest.approx(1.0, abs=1e-5)
    assert float(gradient_distance([grad, torch.ones(4)], [-grad, torch.zeros(4)])) == pytest.approx(8.0, abs=1e-4)


@pytest.mark.parametrize("group", GROUPS)
def test_dsa_is_siamese_and_differentiable(group):
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):  # several draws, so flips and shifts happen
        augment = sample_siamese((group,), generator, (8, 8))
        assert augment.kind == group
        x = torch.randn(6, 3, 8, 8, requires_grad=True)
        out = augment(x)
        assert out.shape == x.shape
        # The same draw transforms every image alike, whatever batch it is in (real vs synthetic).
        assert torch.allclose(augment(x[:2]), out[:2], atol=1e-6)
        out.square().sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("group", GROUPS)
def test_dsa_per_image_draws_transform_each_image_by_its_own_parameters(group):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 8, 8)
    augment = sample_per_image((group,), generator, (8, 8), 6)
    out = augment(x)
    for i in range(6):  # image i alone, with its own parameters, comes out the same as in the batch
        own = {k: (v[i : i + 1] if isinstance(v, torch.Tensor) else v) for k, v in augment.values.items()}
        assert torch.allclose(DrawnAugment(group, own)(x[i : i + 1]), out[i : i + 1], atol=1e-5)
    drawn = next(v for v in augment.values.values() if isinstance(v, torch.Tensor))
    assert len(drawn) == 6 and (group == "flip" or len(set(drawn.tolist())) > 1)  # not one draw for all


def test_grouped_augmentation_applies_each_draw_to_its_own_rows_only():
    """augment_groups (DM's batched classes) must equal applying each class's draw to that class alone."""
    generator = torch.Generator().manual_seed(2)
    sizes = [3, 1, 4, 2, 5, 3, 2, 4, 1, 3, 2, 2]  # enough groups that several kinds (and repeats) occur
    draws = [sample_siamese(GROUPS, generator, (8, 8)) for _ in sizes[:-1]]
    draws.append(sample_per_image(GROUPS, generator, (8, 8), sizes[-1]))
    assert len({draw.kind for draw in draws}) >= 4
    x = torch.randn(sum(sizes), 3, 8, 8, requires_grad=True)
    out = augment_groups(x, sizes, draws)
    expected = torch.cat([draw(part) for draw, part in zip(draws, x.split(sizes))])
    assert torch.allclose(out, expected, atol=1e-6)
    weights = torch.randn_like(out)
    grad, = torch.autograd.grad((out * weights).sum(), x)
    expected_grad, = torch.autograd.grad((expected * weights).sum(), x)
    assert torch.allclose(grad, expected_grad, atol=1e-6)
    assert augment_groups(x, [len(x)], [sample_siamese((), generator, (8, 8))]) is x
    with pytest.raises(ValueError, match="rows"):
        augment_groups(x, sizes[:-1], draws[:-1])


@pytest.mark.parametrize("formation", [1, 2])
def test_a_dm_iteration_equals_the_official_loop_over_classes(digits, formation):
    """One DM step with the classes batched gives the loss and images of the per-class loop, draw for draw."""
    dm = DistributionMatching(ipc=2, formation=formation, **FAST["dm"])
    data = as_training_data(dataclasses.replace(digits, flip=True))  # every DSA group, flip included
    normalizer = Normalizer(data.mean, data.std, torch.device("cpu"))
    batched, looped = (dm._initial_state(data, normalizer, torch.device("cpu")) for _ in range(2))
    net = dm._fresh_net(data, batched, seed=3)
    groups = parse_strategy(dm.dsa)
    reference = []
    for cls in range(10):  # the official code's loop, written out
        real, syn = looped.sampler.sample(cls, dm.batch_real), decode(looped.class_images(cls), formation)
        augment = sample_siamese(groups, looped.generator, (8, 8))
        real_mean = net.features(augment(real)).mean(0).detach()
        reference.append(((real_mean - net.features(augment(syn)).mean(0)) ** 2).sum())
    reference_loss = torch.stack(reference).sum()
    reference_loss.backward()
    loss = dm._iteration(batched, net, torch.optim.SGD([batched.images], lr=1.0))
    assert float(loss) == pytest.approx(float(reference_loss.detach()) / 10, rel=1e-5)
    start = dm._initial_state(data, normalizer, torch.device("cpu")).images.detach()
    assert torch.allclose(batched.images.detach(), start - looped.images.grad, atol=1e-5)
    assert not torch.equal(batched.images.detach(), start)


def test_dsa_crop_translates_by_whole_pixels_with_zero_fill():
    x = torch.arange(2 * 5 * 5, dtype=torch.float32).reshape(2, 1, 5, 5)
    out = DrawnAugment("crop", {"dy": torch.tensor([1, -2]), "dx": torch.tensor([-1, 0])})(x)
    assert torch.equal(out[0, 0, :4, 1:], x[0, 0, 1:, :4]) and out[0, 0, 4].eq(0).all() and out[0, 0, :, 0].eq(0).all()
    assert torch.equal(out[1, 0, 2:], x[1, 0, :3]) and out[1, 0, :2].eq(0).all()


def test_dsa_strategy_parsing():
    assert parse_strategy("color_crop_cutout_flip_scale_rotate") == GROUPS
    assert parse_strategy(None) == () and parse_strategy("none") == ()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(sample_siamese((), torch.Generator(), (8, 8))(x), x)
    with pytest.raises(InvalidParameterError, match="blur"):
        parse_strategy("color_blur")


@pytest.mark.parametrize(
    "name, params",
    [
        ("dc", dict(iterations=0)),
        ("dc", dict(lr_img=0)),
        ("dc", dict(lr_net=-1.0)),
        ("dc", dict(batch_real=0)),
        ("dc", dict(batch_train=0)),
        ("dc", dict(outer_loop=0)),
        ("dc", dict(inner_loop=-1)),
        ("dc", dict(time_budget_s=-1)),
        ("dc", dict(random_state=-1)),
        ("dc", dict(ipc=0)),
        ("dc", dict(ipc=1000)),
        ("dc", dict(device="tpu")),
        ("dm", dict(lr_img=float("nan"))),
        ("dm", dict(iterations=2.5)),
        ("dm", dict(dsa="color_blur")),
        ("dm", dict(width=0)),
        ("dm", dict(ipc=500)),
        ("dm", dict(loss="moments")),
    ],
)
def test_bad_parameters_raise_typed_errors(name, params, digits):
    with pytest.raises(InvalidParameterError):
        get_method(name, **{"ipc": 1, **FAST[name], **params}).fit(digits)


def test_registered_and_found_by_name(digits):
    assert {"dc", "dm"} <= set(list_methods())
    method = get_method("dc", ipc=1, iterations=2)  # the paper's ConvNet-3 at width 128
    assert isinstance(method, GradientMatching) and isinstance(get_method("dm"), DistributionMatching)
    method.progress = False
    assert len(method.fit(digits).distilled_) == 10
    with pytest.raises(InvalidParameterError, match="Valid"):
        get_method("dm", epochs=3)


def test_defaults_follow_the_papers():
    dc, dm = GradientMatching(), DistributionMatching()
    assert (dc.iterations, dc.lr_img, dc.lr_net, dc.batch_real, dc.batch_train) == (1000, 0.1, 0.01, 256, 256)
    assert (dm.iterations, dm.lr_img, dm.batch_real, dm.dsa) == (20000, 1.0, 256, "color_crop_cutout_flip_scale_rotate")
    assert dc.width == dm.width == 128 and dc.depth == dm.depth == 3


def test_command_line_distills_with_dm(tmp_path, monkeypatch, capsys):
    """`devs distill --method dm` end to end; the CLI passes ipc, seed and the recipe's iterations, so shorten the
    run here."""
    shorten = {**FAST["dm"], "iterations": 3}
    monkeypatch.setattr(cli, "get_method", lambda name, **params: get_method(name, **{**params, **shorten}))
    out = tmp_path / "dm.safetensors"
    code = cli.main(["distill", "--method", "dm", "--ipc", "1", "--no-evaluate", "-q", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = load_distilled(out)
    assert len(result) == 10 and result.method == "dm" and result.config["iterations_done"] == 3


@BOTH
def test_a_resumed_run_continues_exactly_where_the_saved_one_stopped(name, digits, tmp_path, caplog):
    whole = fit(name, digits, ipc=1, iterations=4, random_state=3)
    fit(name, digits, ipc=1, iterations=2, random_state=3, checkpoint_dir=tmp_path)  # "killed" after 2
    caplog.set_level("INFO", logger="devs")
    resumed = fit(name, digits, ipc=1, iterations=4, random_state=3, checkpoint_dir=tmp_path, resume=True)
    assert "resumed after 2 iterations" in caplog.text
    assert torch.equal(resumed.distilled_.images, whole.distilled_.images)
    assert resumed.loss_history_ == whole.loss_history_ and resumed.iterations_done_ == 4
    assert resumed.distilled_.config == whole.distilled_.config  # the checkpoint settings stay out of the file


def test_progress_of_other_settings_or_data_is_not_reused(digits, tmp_path, caplog):
    fit("dm", digits, ipc=1, iterations=2, checkpoint_dir=tmp_path)
    caplog.set_level("INFO", logger="devs")
    other_lr = fit("dm", digits, ipc=1, iterations=2, lr_img=0.5, checkpoint_dir=tmp_path, resume=True)
    fewer = (digits.train.images[:-10], digits.train.labels[:-10])
    other_data = fit("dm", fewer, ipc=1, iterations=2, checkpoint_dir=tmp_path, resume=True)
    assert "resumed" not in caplog.text
    assert torch.equal(other_lr.distilled_.images, fit("dm", digits, ipc=1, iterations=2, lr_img=0.5).distilled_.images)
    assert torch.equal(other_data.distilled_.images, fit("dm", fewer, ipc=1, iterations=2).distilled_.images)


def test_a_longer_saved_run_is_kept_and_not_cut_back(digits, tmp_path, caplog):
    fit("dm", digits, ipc=1, iterations=3, checkpoint_dir=tmp_path)
    (saved,) = tmp_path.glob("dm-ipc1-*.progress.safetensors")
    before = saved.read_bytes()
    short = fit("dm", digits, ipc=1, iterations=2, checkpoint_dir=tmp_path, resume=True)
    assert "more than the 2 asked for" in caplog.text and saved.read_bytes() == before
    assert torch.equal(short.distilled_.images, fit("dm", digits, ipc=1, iterations=2).distilled_.images)


def test_an_unreadable_progress_file_is_ignored_with_a_warning(digits, tmp_path, caplog):
    fit("dm", digits, ipc=1, iterations=2, checkpoint_dir=tmp_path)
    (saved,) = tmp_path.glob("*.progress.safetensors")
    saved.write_bytes(b"not a safetensors file")
    again = fit("dm", digits, ipc=1, iterations=2, checkpoint_dir=tmp_path, resume=True)
    assert "Ignoring unreadable matching checkpoint" in caplog.text
    assert torch.equal(again.distilled_.images, fit("dm", digits, ipc=1, iterations=2).distilled_.images)


def test_resume_without_a_checkpoint_dir_is_refused(digits):
    with pytest.raises(InvalidParameterError, match="checkpoint_dir"):
        fit("dc", digits, ipc=1, iterations=1, resume=True)


def test_command_line_extends_a_dm_run_with_resume(tmp_path, capsys, caplog):
    out = tmp_path / "dm.safetensors"
    args = ["distill", "--method", "dm", "--ipc", "1", "--no-evaluate", "--out", str(out), "--device", "cpu",
            "--param", "width=16", "--param", "batch_real=64"]
    assert cli.main([*args, "--param", "iterations=2"]) == 0, capsys.readouterr().err
    assert len(list(tmp_path.glob("dm.stages/dm-ipc1-*.progress.safetensors"))) == 1
    caplog.set_level("INFO", logger="devs")
    assert cli.main([*args, "--param", "iterations=3", "--resume"]) == 0, capsys.readouterr().err
    assert "resumed after 2 iterations" in caplog.text and load_distilled(out).config["iterations_done"] == 3


def test_a_progress_file_with_wrong_tensors_is_ignored(digits, tmp_path, caplog):
    fit("dm", digits, ipc=1, iterations=2, checkpoint_dir=tmp_path)
    (saved,) = tmp_path.glob("*.progress.safetensors")
    with safe_open(str(saved), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(saved))
    save_file({**tensors, "generator_state": tensors["generator_state"][:7]}, str(saved), metadata=metadata)
    again = fit("dm", digits, ipc=1, iterations=3, checkpoint_dir=tmp_path, resume=True)
    assert "Ignoring malformed matching checkpoint" in caplog.text and again.iterations_done_ == 3
    assert torch.equal(again.distilled_.images, fit("dm", digits, ipc=1, iterations=3).distilled_.images)


def test_mmd_loss_tends_to_dms_mean_loss_for_wide_kernels(monkeypatch):
    import devs.methods.distribution_matching as matching

    generator = torch.Generator().manual_seed(0)
    # float64: with near-linear kernels the MMD is a difference of nearly equal sums
    real = torch.randn(64, 8, generator=generator, dtype=torch.float64)
    syn = torch.randn(5, 8, generator=generator, dtype=torch.float64) + 0.3
    mean_loss = ((real.mean(0) - syn.mean(0)) ** 2).sum()
    monkeypatch.setattr(matching, "MMD_BANDWIDTHS", (1e5, 2e5, 4e5))  # near-linear kernels
    assert float(matching.mmd_loss(real, syn)) == pytest.approx(float(mean_loss), rel=1e-3)


def test_mmd_loss_sees_the_spread_the_mean_loss_misses():
    from devs.methods.distribution_matching import mmd_loss

    real = torch.randn(256, 4, generator=torch.Generator().manual_seed(1))
    centre = real.mean(0)
    collapsed = torch.stack([centre, centre])  # both at the mean: the mean loss is 0
    spread = torch.stack([centre + real.std(0), centre - real.std(0)])  # same mean, the real spread
    assert float(((real.mean(0) - collapsed.mean(0)) ** 2).sum()) < 1e-10
    assert float(mmd_loss(real, spread)) < float(mmd_loss(real, collapsed))
    assert float(mmd_loss(real, real)) == pytest.approx(0.0, abs=1e-5)
    # differentiable at zero distance (the collapsed pair): finite gradients, which push the pair apart
    moving = collapsed.clone().requires_grad_(True)
    mmd_loss(real, moving).backward()
    assert torch.isfinite(moving.grad).all() and float(moving.grad.norm()) > 0


def test_dm_with_the_mmd_loss_learns_and_is_recorded(digits, tmp_path):
    mean = fit("dm", digits, ipc=2, iterations=3)
    mmd = fit("dm", digits, ipc=2, iterations=3, loss="mmd")
    assert all(math.isfinite(value) for value in mmd.loss_history_)
    assert not torch.equal(mean.distilled_.images, mmd.distilled_.images)
    assert mmd.distilled_.config["loss"] == "mmd" and "loss" not in mean.distilled_.config  # older files unchanged
    # devs+ passes it to its DM step
    plus = get_method("devs+", ipc=1, epochs=1, finetune_iterations=2, finetune_loss="mmd", device="cpu",
                      progress=False, checkpoint_dir=tmp_path).fit(digits)
    assert plus.distilled_.config["finetune_loss"] == "mmd"
    with pytest.raises(InvalidParameterError, match="finetune_loss"):
        get_method("devs+", ipc=1, finetune_loss="median").fit(digits)


# ----------------------------------------------------------------------------- IDC's options of DC
IDC_TINY = dict(formation=2, dsa="color_crop_cutout", distance="l1", net_data="real", outer_loop=2, inner_loop=1,
                batch_real=16, batch_train=16, real_per_update=32, lr_img=0.01)


def test_dc_at_its_defaults_keeps_idcs_options_out_of_its_config(digits):
    config = fit("dc", digits, ipc=1, iterations=1).distilled_.config
    assert not {"formation", "dsa", "distance", "net_data", "real_per_update"} & set(config)
    idc = fit("dc", digits, ipc=1, iterations=1, **IDC_TINY).distilled_.config
    assert (idc["formation"], idc["distance"], idc["net_data"]) == (2, "l1", "real")


def test_dc_with_idcs_options_learns_packed_images(digits):
    start = fit("dc", digits, ipc=1, iterations=1, **{**IDC_TINY, "lr_img": 1e-12}).distilled_
    method = fit("dc", digits, ipc=1, iterations=2, **IDC_TINY)
    result = method.distilled_
    assert result.formation == 2 and result.images.shape == (10, *digits.train.images.shape[1:])
    assert all(math.isfinite(loss) and loss > 0 for loss in method.loss_history_)
    assert not torch.allclose(result.images, start.images, atol=1e-4)
    assert torch.equal(result.labels, torch.eye(10))


def test_idc_distances_compare_the_convolution_kernels_only():
    real = [torch.ones(2, 3, 3, 3), torch.ones(2), torch.ones(4, 8)]  # a kernel, a bias, a linear weight
    syn = [torch.zeros(2, 3, 3, 3), torch.zeros(2), torch.zeros(4, 8)]
    assert float(gradient_distance(real, syn, "l1")) == 54.0  # 2 x 3 x 3 x 3 entries of |1 - 0|
    syn[0] = torch.full((2, 3, 3, 3), 3.0)
    assert float(gradient_distance(real, syn, "mse")) == 54.0 * 4 and float(gradient_distance(real, syn, "l1")) == 108.0
    # DC's cosine distance sees the linear weight too (1 - 0 per output row: 4), and the kernel's rows agree (0)
    assert float(gradient_distance(real, syn, "cosine")) == pytest.approx(4.0, abs=1e-5)


def test_a_network_update_on_real_images_draws_labelled_rows(digits):
    data = as_training_data(digits)
    method = GradientMatching(ipc=1, **{**FAST["dc"], **IDC_TINY})
    state = method._initial_state(data, Normalizer(data.mean, data.std, torch.device("cpu")), torch.device("cpu"))
    images, labels = state.sampler.sample_any(50)
    normalized = Normalizer(data.mean, data.std, torch.device("cpu"))(data.images)
    for image, label in zip(images, labels):
        row = (normalized - image).flatten(1).abs().amax(1).argmin()
        assert torch.allclose(normalized[row], image) and int(data.labels[row]) == int(label)


@pytest.mark.parametrize("params", [dict(distance="l2"), dict(net_data="both"), dict(dsa="color_blur"),
                                    dict(real_per_update=0), dict(formation=3)])
def test_bad_idc_options_raise_typed_errors(params, digits):
    with pytest.raises(InvalidParameterError):
        get_method("dc", **{"ipc": 1, **FAST["dc"], **params}).fit(digits)
