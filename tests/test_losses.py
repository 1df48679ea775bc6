"""Losses against independent computations; PLCC loss under gradient accumulation."""

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from perceptclip_hf.modeling import get_loss_fn, plcc_loss


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


def test_gradient_accumulation_reports_the_mean_of_micro_batch_losses():
    """Trainer with `accepts_loss_kwargs=False` divides each micro-batch loss by the accumulation steps and
    sums them (`tr_loss`): the reported loss is the mean of the per-micro-batch PLCC losses, in [0, 1], and the
    accumulated gradient is that of the mean. The loss is never divided by `num_items_in_batch`."""
    pred, target = batch(n=16)
    pred.requires_grad_()
    micro_batches = [(pred[:8], target[:8]), (pred[8:], target[8:])]
    accumulation_steps = len(micro_batches)

    reported = 0.0
    for micro_pred, micro_target in micro_batches:  # as Trainer.training_step
        loss = plcc_loss(micro_pred, micro_target) / accumulation_steps
        loss.backward()
        reported += loss.item()
    accumulated_grad = pred.grad.clone()

    pred.grad = None
    micro_losses = torch.stack([plcc_loss(p, t) for p, t in micro_batches])
    micro_losses.mean().backward()
    assert reported == pytest.approx(micro_losses.mean().item())
    assert 0.0 <= reported <= 1.0
    torch.testing.assert_close(accumulated_grad, pred.grad)


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
    from transformers import Trainer, TrainingArguments

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(16, 3, generator=generator)
    labels = features @ torch.tensor([1.0, -2.0, 0.5]) + torch.randn(16, generator=generator)
    dataset = [{"features": f, "labels": y} for f, y in zip(features, labels)]
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=2,
        learning_rate=0.0, use_cpu=True, report_to="none", save_strategy="no", remove_unused_columns=False,
        disable_tqdm=True, logging_strategy="no", dataloader_drop_last=True,
    )
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
