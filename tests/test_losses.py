"""Losses against independent computations; PLCC loss under gradient accumulation."""

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from perceptclip_hf.modeling import get_loss_fn, plcc_loss
from tests.helpers.models import accumulating_arguments, trained_like


def batch(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(n, generator=generator, dtype=torch.float64) * 5
    pred = target + torch.randn(n, generator=generator, dtype=torch.float64)
    return pred, target


def test_plcc_loss_matches_scipy_pearson():
    pred, target = batch()
    expected = (1 - stats.pearsonr(pred.numpy(), target.numpy()).statistic) / 2
    assert plcc_loss(pred, target).item() == pytest.approx(expected, abs=1e-7)


def test_plcc_loss_is_zero_for_perfect_and_one_for_anticorrelated_predictions():
    _, target = batch()
    assert plcc_loss(3 * target + 2, target).item() == pytest.approx(0.0, abs=1e-7)
    assert plcc_loss(-target, target).item() == pytest.approx(1.0, abs=1e-7)


def test_plcc_loss_accepts_column_predictions():
    pred, target = batch()
    assert plcc_loss(pred[:, None], target).item() == pytest.approx(plcc_loss(pred, target).item())


def test_plcc_loss_is_invariant_to_affine_rescaling_of_predictions():
    pred, target = batch()
    # Exact up to the `eps` in the denominator.
    assert plcc_loss(100 * pred - 7, target).item() == pytest.approx(plcc_loss(pred, target).item(), abs=1e-7)


def test_plcc_loss_does_not_depend_on_batch_size_for_identical_statistics():
    pred, target = batch(n=8)
    duplicated = plcc_loss(pred.repeat(4), target.repeat(4))
    assert duplicated.item() == pytest.approx(plcc_loss(pred, target).item(), abs=1e-12)


def test_plcc_loss_needs_two_items_and_matching_sizes():
    with pytest.raises(ValueError, match="at least 2 items"):
        plcc_loss(torch.tensor([1.0]), torch.tensor([2.0]))
    with pytest.raises(ValueError, match="3 predictions for 2 targets"):
        plcc_loss(torch.ones(3), torch.ones(2))


def test_task_loss_gives_zero_for_a_single_item_plcc_batch():
    from perceptclip_hf.modeling import task_loss

    logits = torch.tensor([[0.7]], requires_grad=True)
    loss = task_loss("plcc", logits, torch.tensor([2.0]))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad.abs().sum() == 0


def test_plcc_loss_of_constant_predictions_is_finite():
    _, target = batch()
    pred = torch.zeros_like(target, requires_grad=True)
    loss = plcc_loss(pred, target)
    loss.backward()
    assert loss.item() == pytest.approx(0.5)
    assert torch.isfinite(pred.grad).all()


def test_plcc_loss_gradcheck():
    pred, target = batch(n=6)
    assert torch.autograd.gradcheck(lambda p: plcc_loss(p, target), (pred.requires_grad_(),))


def test_gradient_accumulation_reports_the_mean_of_micro_batch_losses(tmp_path, tiny_clip_base):
    """`transformers.Trainer` on our PerceptCLIPForRegression (PLCC loss), 2 optimizer steps of 2 micro-batches:
    the reported training loss is the mean of the 4 per-micro-batch PLCC losses (in [0, 1]) and the gradient the
    optimizer sees at each step is that of the mean of its 2 micro-batch losses, never a sum and never divided by
    `num_items_in_batch` (which the Trainer would do if the model claimed `accepts_loss_kwargs`). The reference
    values are recomputed here from the micro-batches the model was fed (lr 0: the weights stay those of the
    forward passes)."""
    from transformers import Trainer, TrainerCallback

    model = trained_like(tiny_clip_base, task="quality", lora_dropout=0.0, head_dropout=0.0)
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(16, 3, 32, 32, generator=generator)
    labels = torch.arange(16, dtype=torch.float32) / 4 + torch.rand(16, generator=generator) / 8  # distinct
    dataset = [{"pixel_values": p, "labels": y} for p, y in zip(pixels, labels)]
    trainable = [p for p in model.parameters() if p.requires_grad]

    fed: list[torch.Tensor] = []  # each micro-batch's labels, as the model received them
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(kwargs["labels"].clone()), with_kwargs=True
    )
    step_grads: list[list[torch.Tensor]] = []

    class GradientsBeforeStep(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            step_grads.append([p.grad.detach().clone() for p in trainable])

    args = accumulating_arguments(tmp_path, max_steps=2, learning_rate=0.0, optim="sgd", max_grad_norm=0.0, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[GradientsBeforeStep()])
    training_loss = trainer.train().training_loss
    hook.remove()

    assert len(fed) == 4 and len(step_grads) == 2
    model.train()
    micro_losses = []
    for step in range(2):
        losses = []
        for batch_labels in fed[2 * step : 2 * step + 2]:
            rows = [int(torch.argmin((labels - value).abs())) for value in batch_labels]
            losses.append(plcc_loss(model(pixel_values=pixels[rows]).logits, labels[rows]))
        micro_losses += [loss.item() for loss in losses]
        expected = torch.autograd.grad(torch.stack(losses).mean(), trainable)
        for got, want in zip(step_grads[step], expected):
            torch.testing.assert_close(got, want, atol=1e-7, rtol=1e-4)
    assert training_loss == pytest.approx(sum(micro_losses) / 4, rel=1e-5)
    assert 0.0 <= training_loss <= 1.0


class _PLCCRegressor(torch.nn.Module):
    """A linear model returning the PLCC loss and recording each micro-batch loss it returns."""

    accepts_loss_kwargs = False

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 1)
        self.micro_batch_losses: list[float] = []

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = plcc_loss(self.linear(features), labels)
        self.micro_batch_losses.append(loss.item())
        return {"loss": loss}


def test_trainer_reports_mean_of_micro_batch_plcc_losses(tmp_path):
    from transformers import Trainer

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(16, 3, generator=generator)
    labels = features @ torch.tensor([1.0, -2.0, 0.5]) + torch.randn(16, generator=generator)
    dataset = [{"features": f, "labels": y} for f, y in zip(features, labels)]
    args = accumulating_arguments(tmp_path, max_steps=2, learning_rate=0.0, dataloader_drop_last=True)
    model = _PLCCRegressor()
    training_loss = Trainer(model=model, args=args, train_dataset=dataset).train().training_loss
    assert len(model.micro_batch_losses) == 4
    assert training_loss == pytest.approx(sum(model.micro_batch_losses) / 4, abs=1e-6)
    assert 0.0 <= training_loss <= 1.0


def test_get_loss_fn_registry():
    pred, target = batch()
    assert get_loss_fn("plcc") is plcc_loss
    assert get_loss_fn("mse")(pred[:, None], target).item() == pytest.approx(F.mse_loss(pred, target).item())
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 3, 1, 2, 3], dtype=torch.int32)
    expected = -torch.log_softmax(logits, dim=1)[torch.arange(5), labels.long()].mean()
    assert get_loss_fn("cross_entropy")(logits, labels).item() == pytest.approx(expected.item())


def test_mse_loss_does_not_broadcast_mismatched_sizes():
    with pytest.raises(ValueError, match="4 predictions for 3 targets"):
        get_loss_fn("mse")(torch.ones(4, 1), torch.ones(3))


def test_get_loss_fn_rejects_unknown_name():
    with pytest.raises(ValueError, match="available"):
        get_loss_fn("l1")
