"""Plausible wrong answers to the exercises, each caught only by a hidden check.

Each entry replaces one piece of a solution (text inside a ``### BEGIN SOLUTION``
block) by a mistake a student could make. ``tests/test_exercises.py`` grades the
changed solution against the reference checks and requires that every check
before ``check`` passes and that ``check`` passes its visible part but fails its
hidden part: the hidden check is what tells this answer from a right one.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WrongAnswer:
    """One plausible mistake in ``notebook`` and the check whose hidden part catches it."""

    notebook: str  # file name in solutions/, e.g. "ex01_tasks_and_transfer.ipynb"
    mistake: str  # what the student got wrong, in a few words (the test's id)
    old: str  # exact text of the solution, inside a solution block, found once in the notebook
    new: str  # the wrong answer that replaces it
    check: str  # id of the check cell whose hidden part fails (its visible part passes)


WRONG_ANSWERS: list[WrongAnswer] = [
    WrongAnswer(
        notebook="ex01_tasks_and_transfer.ipynb",
        mistake="BWT against the best earlier accuracy (the forgetting measure), not R[j, j]",
        old="    return float(np.mean([R[T - 1, j] - R[j, j] for j in range(T - 1)]))",
        new="    return float(np.mean([R[T - 1, j] - R[:T - 1, j].max() for j in range(T - 1)]))",
        check="1.1 backward transfer formula",
    ),
    WrongAnswer(
        notebook="ex01_tasks_and_transfer.ipynb",
        mistake="episode examples drawn with replacement (rng.choice's default)",
        old="rows = rng.choice(rows_of[c], size=k_shot + q_queries, replace=False)",
        new="rows = rng.choice(rows_of[c], size=k_shot + q_queries)",
        check="1.3 episode structure",
    ),
    WrongAnswer(
        notebook="ex02_transfer_learning.ipynb",
        mistake="a block with any trainable parameter hands all its parameters, frozen ones too, to the optimizer",
        old=(
            "        params = [p for p in model.get_submodule(name).parameters() if p.requires_grad]\n"
            "        if params:\n"
        ),
        new=(
            "        params = list(model.get_submodule(name).parameters())\n"
            "        if any(p.requires_grad for p in params):\n"
        ),
        check="2.2 parameter groups",
    ),
    WrongAnswer(
        notebook="ex03_multitask_learning.ipynb",
        mistake="task losses taken out of the graph with .item(), so the task models get no gradient",
        old="    return (torch.exp(-log_vars) * losses + log_vars).sum()\n",
        new=(
            "    total = 0.0\n"
            "    for i in range(len(losses)):\n"
            "        total = total + torch.exp(-log_vars[i]) * losses[i].item() + log_vars[i]\n"
            "    return total\n"
        ),
        check="3.5 uncertainty loss formula and gradient",
    ),
    WrongAnswer(
        notebook="ex04_meta_learning.ipynb",
        mistake="support loss called as loss_fn(target, prediction), hidden by the symmetric MSE",
        old="        return loss_fn(functional_call(model, p, (support_X,)), support_y)",
        new="        return loss_fn(support_y, functional_call(model, p, (support_X,)))",
        check="4.1 inner-loop steps",
    ),
    WrongAnswer(
        notebook="ex05_meta_transfer_learning.ipynb",
        mistake="padding argument ignored (padding=1 hard-coded)",
        old="    return F.conv2d(x, weight * scale, b, padding=padding)",
        new="    return F.conv2d(x, weight * scale, b, padding=1)",
        check="5.1 SS convolution",
    ),
    WrongAnswer(
        notebook="ex05_meta_transfer_learning.ipynb",
        mistake="ties broken by the raw logit of the true label instead of its softmax probability",
        old="    p_true = logits.softmax(1)[torch.arange(len(y)), y]",
        new="    p_true = logits[torch.arange(len(y)), y]",
        check="5.3 failure class",
    ),
    WrongAnswer(
        notebook="ex06_finetuning_vs_frozen.ipynb",
        mistake="target tasks drawn with check 6.1's noise 0.1 instead of 0.5",
        old="t = finetuning_theory.perturbed_task(B, delta, n, 0.5, rng)",
        new="t = finetuning_theory.perturbed_task(B, delta, n, 0.1, rng)",
        check="6.3 the frozen representation has an error floor, fine-tuning does not",
    ),
    WrongAnswer(
        notebook="ex08_m3tl.ipynb",
        mistake="transfer reduction keeps the fusion layer even for a single modality",
        old="fusion=len(encoders) > 1, backbone=False, meta=False, unseen_tasks=True",
        new="fusion=True, backbone=False, meta=False, unseen_tasks=True",
        check="8.1 the reductions switch off the parts of Fig. 8",
    ),
    WrongAnswer(
        notebook="ex07_pairwise_fusions.ipynb",
        mistake="objective averaged over all tasks pooled, not per kind then over kinds",
        old="        losses.append(out.loss)\n    return torch.stack(losses).mean()",
        new="        losses.append(out.task_losses)\n    return torch.cat(losses).mean()",
        check="7.2 the multi-task meta-objective",
    ),
    WrongAnswer(
        notebook="ex07_pairwise_fusions.ipynb",
        mistake="tasks matched by their position in the dicts instead of by name",
        old=(
            "    for t in baseline:\n"
            "        sign = 1.0 if higher_is_better[t] else -1.0\n"
            "        terms.append(sign * (metrics[t] - baseline[t]) / baseline[t])"
        ),
        new=(
            "    for m, b, up in zip(metrics.values(), baseline.values(), higher_is_better.values()):\n"
            "        sign = 1.0 if up else -1.0\n"
            "        terms.append(sign * (m - b) / b)"
        ),
        check="7.3 the multi-task gain Δp",
    ),
    WrongAnswer(
        notebook="ex09_comparison_faq.ipynb",
        mistake="normal quantile instead of Student's t",
        old="quantile = stats.t.ppf(0.5 + confidence / 2, df=n - 1)",
        new="quantile = stats.norm.ppf(0.5 + confidence / 2)",
        check="9.1 paired difference and its interval",
    ),
    WrongAnswer(
        notebook="ex09_comparison_faq.ipynb",
        mistake="population standard deviation (NumPy's default ddof=0)",
        old="d.std(ddof=1)",
        new="d.std()",
        check="9.1 paired difference and its interval",
    ),
    WrongAnswer(
        notebook="ex09_comparison_faq.ipynb",
        mistake="loss averaged per task, then over tasks, instead of over the examples",
        old="    return ((prediction - targets[:, 1]) ** 2).mean()",
        new=(
            "    errors = (prediction - targets[:, 1]) ** 2\n"
            "    return torch.stack([errors[task == t].mean() for t in task.unique()]).mean()"
        ),
        check="9.3 each example is scored by its own head",
    ),
]
