"""Loss weighting: equal weights, uncertainty weighting, Dynamic Weight Average, GradNorm and FAMO.

A weighting turns the per-task losses ``L_1 .. L_T`` into the one scalar that
is differentiated, ``L = sum_i w_i L_i`` (plus, for uncertainty weighting, a
term that keeps the weights from collapsing). Weights are on the scale of the
plain sum (they add up to ``T``), as in the papers.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

KINDS = ("classification", "regression")


def _as_losses(losses: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    stacked = losses if isinstance(losses, torch.Tensor) else torch.stack(list(losses))
    if stacked.dim() != 1 or stacked.numel() < 1:
        raise ValueError(f"expected one scalar loss per task, got shape {tuple(stacked.shape)}")
    return stacked


def equal_weights(num_tasks: int) -> torch.Tensor:
    """``w_i = 1``: the plain sum of the task losses (the review's Eq. 2).

    >>> equal_weights(3)
    tensor([1., 1., 1.])
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    return torch.ones(num_tasks)


def uncertainty_weighted_loss(
    losses: Sequence[torch.Tensor] | torch.Tensor,
    log_vars: torch.Tensor,
    kinds: Sequence[str] | None = None,
) -> torch.Tensor:
    """Homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, 2018).

    With ``s_i = log sigma_i^2`` learned alongside the network, the default
    (``kinds=None``) is the widely used simplified form

    ``L = sum_i exp(-s_i) L_i + s_i``,

    the same for every task. ``kinds`` selects the paper's per-task factors
    instead: a Gaussian likelihood for ``"regression"``,
    ``exp(-s_i) L_i / 2 + s_i / 2`` (Eq. 5, with ``L_i`` the squared error), and a
    scaled softmax for ``"classification"``, ``exp(-s_i) L_i + s_i / 2``
    (Eq. 10 with its approximation). For a regression loss both forms are
    minimised at ``sigma_i^2 = L_i``, so ``sigma_i`` learns the residual noise
    scale of its task.

    At ``s = 0`` both tasks count fully; ``s_2 = log 2`` halves the second
    task's loss and adds its log-variance, which stops ``s`` from growing
    without bound:

    >>> losses = torch.tensor([1.0, 4.0])
    >>> uncertainty_weighted_loss(losses, torch.zeros(2)).item()
    5.0
    >>> round(uncertainty_weighted_loss(losses, torch.log(torch.tensor([1.0, 2.0]))).item(), 4)
    3.6931
    """
    losses = _as_losses(losses)
    if log_vars.shape != losses.shape:
        raise ValueError(f"need one log-variance per task ({losses.numel()}), got shape {tuple(log_vars.shape)}")
    precision = torch.exp(-log_vars)
    if kinds is None:
        return (precision * losses + log_vars).sum()
    if len(kinds) != losses.numel() or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds must give one of {KINDS} per task, got {list(kinds)}")
    half = torch.tensor([0.5 if k == "regression" else 1.0 for k in kinds], device=losses.device)
    return (half * precision * losses + 0.5 * log_vars).sum()


class UncertaintyWeighting(nn.Module):
    """Learnable log-variances ``s_i`` (initialised to 0, i.e. ``sigma_i = 1``) for :func:`uncertainty_weighted_loss`."""

    def __init__(self, num_tasks: int, kinds: Sequence[str] | None = None) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        self.log_vars = nn.Parameter(torch.zeros(num_tasks))
        self.kinds = None if kinds is None else list(kinds)

    def forward(self, losses: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        return uncertainty_weighted_loss(losses, self.log_vars, self.kinds)

    @property
    def sigmas(self) -> torch.Tensor:
        """The learned noise scales ``sigma_i = exp(s_i / 2)``."""
        return torch.exp(self.log_vars.detach() / 2)


def dwa_weights(loss_history: Sequence[Sequence[float]], temperature: float = 2.0) -> torch.Tensor:
    """Dynamic Weight Average (Liu, Johns & Davison, 2019, Eq. 7).

    ``loss_history[t][k]`` is task ``k``'s average training loss in epoch
    ``t``. With ``r_k = L_k(t-1) / L_k(t-2)`` (how slowly task ``k`` is
    improving), the weights for the next epoch are
    ``w_k = T exp(r_k / temperature) / sum_i exp(r_i / temperature)``; before two
    epochs exist they are all 1. The paper uses ``temperature = 2``.

    The task whose loss fell least (here not at all) gets the largest weight:

    >>> [round(w, 3) for w in dwa_weights([[1.0, 1.0], [0.5, 1.0]]).tolist()]
    [0.876, 1.124]
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if len(loss_history) < 2:
        if not loss_history:
            raise ValueError("loss_history is empty: pass at least the number of tasks through one epoch")
        return torch.ones(len(loss_history[-1]))
    last, before = torch.tensor(loss_history[-1], dtype=torch.float64), torch.tensor(loss_history[-2], dtype=torch.float64)
    if last.shape != before.shape:
        raise ValueError("every epoch of loss_history must hold one loss per task")
    ratio = last / before.clamp_min(1e-12)
    return (len(last) * torch.softmax(ratio / temperature, dim=0)).float()


def gradnorm_weight_gradient(
    weights: torch.Tensor,
    grad_norms: torch.Tensor,
    losses: torch.Tensor,
    initial_losses: torch.Tensor,
    alpha: float = 1.5,
) -> torch.Tensor:
    """Gradient of GradNorm's loss ``L_grad`` with respect to the task weights (Chen et al., 2018, Eq. 2).

    ``grad_norms[i] = ||grad_W L_i||`` at the last shared layer ``W`` (unweighted),
    so that ``G_i = w_i grad_norms[i]``. With ``r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0))``
    (relative inverse training rate) and the target ``mean_j G_j * r_i^alpha``
    held constant, ``L_grad = sum_i |G_i - target_i|`` has gradient
    ``sign(G_i - target_i) grad_norms[i]`` with respect to ``w_i``.
    """
    if not (weights.shape == grad_norms.shape == losses.shape == initial_losses.shape) or weights.dim() != 1:
        raise ValueError("weights, grad_norms, losses and initial_losses must all have shape (T,)")
    G = weights * grad_norms
    ratios = losses / initial_losses.clamp_min(1e-12)
    target = G.mean() * (ratios / ratios.mean()) ** alpha
    return torch.sign(G - target) * grad_norms


class GradNorm:
    """GradNorm (Chen et al., 2018): learn loss weights that equalise the tasks' training rates.

    After each step of the network, call :meth:`update` with the detached task
    losses and the gradient norms of the unweighted losses at the last shared
    layer. The weights take one Adam step on ``L_grad``
    (:func:`gradnorm_weight_gradient`) and are renormalised to sum to ``T``.
    ``alpha`` sets how strongly slow tasks are pushed (the paper uses 0.12 to
    3.0; 1.5 for NYUv2).
    """

    def __init__(self, num_tasks: int, alpha: float = 1.5, lr: float = 0.025) -> None:
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = alpha
        self.weights = torch.ones(num_tasks, requires_grad=True)
        self.optimizer = torch.optim.Adam([self.weights], lr=lr)
        self.initial_losses: torch.Tensor | None = None

    def update(self, losses: torch.Tensor, grad_norms: torch.Tensor) -> None:
        losses, grad_norms = losses.detach().cpu().float(), grad_norms.detach().cpu().float()
        if self.initial_losses is None:
            self.initial_losses = losses.clone()
        self.weights.grad = gradnorm_weight_gradient(
            self.weights.detach(), grad_norms, losses, self.initial_losses, self.alpha)
        self.optimizer.step()
        with torch.no_grad():
            self.weights.clamp_(min=1e-3)
            self.weights.mul_(len(self.weights) / self.weights.sum())



def famo_weights(logits: torch.Tensor, losses: torch.Tensor, min_losses: torch.Tensor | None = None,
                 eps: float = 1e-8) -> torch.Tensor:
    """FAMO's loss weights (Liu et al., 2023, Eq. 5), on the scale of the plain sum.

    FAMO descends ``sum_i z_i log(L_i - L_i*)`` with ``z = softmax(logits)``,
    rescaled by ``c = sum_i z_i / (L_i - L_i*)``; its gradient is that of
    ``sum_i w_i L_i`` with ``w_i = T (z_i / (L_i - L_i*)) / sum_j (z_j / (L_j - L_j*))``.
    Through the logarithm, multiplying one task's loss by a constant leaves the
    step's direction unchanged (only ``c``, its length, moves). ``min_losses`` are the ``L_i*`` (default 0, right for
    cross-entropy and squared error).

    >>> famo_weights(torch.zeros(2), torch.tensor([1.0, 3.0]))
    tensor([1.5000, 0.5000])
    """
    losses = _as_losses(losses).detach()
    if logits.shape != losses.shape:
        raise ValueError(f"need one logit per task ({losses.numel()}), got shape {tuple(logits.shape)}")
    floor = torch.zeros_like(losses) if min_losses is None else min_losses.to(losses)
    ratio = torch.softmax(logits.detach().to(losses), dim=0) / (losses - floor + eps)
    return len(losses) * ratio / ratio.sum()


def famo_logit_gradient(logits: torch.Tensor, losses_before: torch.Tensor, losses_after: torch.Tensor,
                        min_losses: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """The gradient FAMO's logits descend (Liu et al., 2023, Eq. 7): ``J_z(logits)^T delta``.

    ``delta_i = log(L_i - L_i*)`` before the step minus after it (how much each
    task's log-loss fell), and ``J_z = diag(z) - z z^T`` is the Jacobian of the
    softmax. Descending it raises the weight of the tasks whose loss fell least.
    """
    floor = torch.zeros_like(losses_before) if min_losses is None else min_losses.to(losses_before)
    delta = torch.log(losses_before - floor + eps) - torch.log(losses_after - floor + eps)
    z = torch.softmax(logits.detach(), dim=0)
    return z * (delta - (z * delta).sum())


class FAMO:
    """Fast Adaptive Multitask Optimization (Liu et al., 2023): balanced loss decrease at O(1) cost per task.

    Call :meth:`weights` with a step's task losses to get the weights of
    ``sum_i w_i L_i`` (:func:`famo_weights`); after the network's step, call
    :meth:`update` with the losses of the same batch before and after it. The
    logits then take one Adam step (learning rate ``lr``, the paper's beta, and
    weight decay ``gamma``) on :func:`famo_logit_gradient`.
    """

    def __init__(self, num_tasks: int, lr: float = 0.025, gamma: float = 0.01) -> None:
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        if lr <= 0 or gamma < 0:
            raise ValueError(f"need lr > 0 and gamma >= 0, got lr={lr}, gamma={gamma}")
        self.logits = torch.zeros(num_tasks, requires_grad=True)
        self.optimizer = torch.optim.Adam([self.logits], lr=lr, weight_decay=gamma)

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        return famo_weights(self.logits, losses.detach().cpu().float()).to(losses.device)

    def update(self, losses_before: torch.Tensor, losses_after: torch.Tensor) -> None:
        before, after = losses_before.detach().cpu().float(), losses_after.detach().cpu().float()
        self.logits.grad = famo_logit_gradient(self.logits, before, after)
        self.optimizer.step()
