"""A price loss that credits near misses: soft targets over the number tokens around the labelled price.

The SFT completion is ``"129.00"`` + EOS and its price is one of the single tokens "0".."999"
(DESIGN.md §4). Plain cross-entropy scores the price token as one class of 1,000: a guess of 128 is as
wrong as one of 7. With a few hundred labels that teaches slowly. Here the price token also gets a
cross-entropy against a soft target: a Gaussian over log(1 + n) centred on the labelled price with width
``sigma`` (0.3: one standard deviation is about ±30% in price), so each label teaches its price
*region*. The other completion tokens keep the usual loss. Used through the Trainer's
``compute_loss_func`` (``train.price_sigma`` in a recipe). The soft term is a mean over the batch's rows,
so it suits single-process training (the CPU recipes); under DDP it is not re-weighted across ranks.
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100


def price_loss_func(tokenizer: Any, *, sigma: float, weight: float = 1.0) -> Any:
    """``compute_loss_func(outputs, labels, num_items_in_batch)`` for TRL's SFT trainer."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    if not sigma > 0:
        raise ValueError(f"price_sigma must be > 0 (e.g. 0.3), got {sigma}")
    number_ids = torch.tensor([tokenizer.convert_tokens_to_ids(str(n)) for n in range(1000)])
    vocab = max(len(tokenizer), int(number_ids.max()) + 1)
    number_of_id = torch.full((vocab,), -1, dtype=torch.long)
    number_of_id[number_ids] = torch.arange(1000)
    log_values = torch.log1p(torch.arange(1000, dtype=torch.float32))
    cache: dict[Any, tuple[Any, Any, Any]] = {}

    def on(device: Any) -> tuple[Any, Any, Any]:
        if device not in cache:
            cache[device] = (number_ids.to(device), number_of_id.to(device), log_values.to(device))
        return cache[device]

    def loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        logits = outputs.logits.float()[:, :-1]
        targets = labels[:, 1:]
        mask = targets != IGNORE_INDEX
        token_loss = (
            F.cross_entropy(logits.transpose(1, 2), targets.masked_fill(~mask, 0), reduction="none") * mask
        )
        count = mask.sum() if num_items_in_batch is None else num_items_in_batch
        hard = token_loss.sum() / torch.as_tensor(count, device=logits.device).clamp(min=1)

        ids, of_id, logv = on(logits.device)
        rows = torch.arange(logits.shape[0], device=logits.device)
        first = mask.int().argmax(dim=1)  # the first completion token: the price
        price_token = targets[rows, first].clamp(min=0, max=of_id.shape[0] - 1)
        number = of_id[price_token]
        keep = mask.any(dim=1) & (number >= 0)
        if not bool(keep.any()):
            return hard
        log_probs = F.log_softmax(logits[rows, first], dim=-1)[:, ids][keep]  # (rows, 1000)
        centre = logv[number[keep]].unsqueeze(1)
        soft_target = torch.softmax(-((logv.unsqueeze(0) - centre) ** 2) / (2 * sigma**2), dim=1)
        soft = -(soft_target * log_probs).sum(dim=1).mean()
        return hard + weight * soft

    return loss
