"""Recovery without a shell: every run whose step has no live task gets one (transactional-outbox style).

The run row is the outbox: a decision (an approval, a finished step, a retry) is committed first, and
its task is sent after the commit. When the send fails (broker down) or the task is lost (a worker
killed with its message), the row still says which step the run waits for, and this beat job sends it:

- a run waiting for a worker (``queued``, or ``running`` at train/evaluate with no lease) whose task
  was never sent, or was sent more than ``RUN_RESEND_AFTER_S`` ago (that message expires unstarted),
  is sent again; duplicates are harmless, since every step claims its run by compare-and-set;
- a running run whose lease was not renewed for ``RETRAIN_RUN_STALE_S`` lost its worker: it is retried
  from its last checkpoint (the lease freed, its step sent again) at most ``RUN_MAX_RETRIES`` times,
  then failed; a reviewer can still retry it (``runs.run_retry``).

The bootstrap run of v1 is driven in-process by ``bootstrap_champion`` and is only ever failed here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from training import pipeline
from training.exceptions import BrokerUnavailable
from training.models import RunStage, RunStatus, TrainingRun
from training.services.run_log import append_log, run_fail

logger = logging.getLogger(__name__)


_WORKER_STAGES = [RunStage.TRAIN, RunStage.EVALUATE]


@dataclass
class Recovery:
    resent: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[int]]:
        return {"resent": self.resent, "retried": self.retried, "failed": self.failed}


def runs_recover(*, stale_after_s: int | None = None) -> Recovery:
    """Retry or fail runs that lost their worker, then send the step of every run without a live task."""
    stale_after_s = settings.RETRAIN_RUN_STALE_S if stale_after_s is None else stale_after_s
    now = timezone.now()
    done = Recovery()
    lost = TrainingRun.objects.filter(
        status=RunStatus.RUNNING, heartbeat__lt=now - timedelta(seconds=stale_after_s)
    ).values_list("pk", "heartbeat", "retries", "batch_id", "stage")
    for run_id, heartbeat, retries, batch_id, stage in lost:
        cause = f"no sign of life from its worker for {stale_after_s} s (worker lost)"
        if batch_id is not None and retries < int(settings.RUN_MAX_RETRIES):
            # Compare-and-set on the lease we saw: a worker that renewed it meanwhile keeps the run.
            # A dataset build starts over (its claim takes a queued run); later steps resume.
            status = RunStatus.QUEUED if stage == RunStage.DATASET else RunStatus.RUNNING
            freed = TrainingRun.objects.filter(
                pk=run_id, status=RunStatus.RUNNING, heartbeat=heartbeat
            ).update(status=status, heartbeat=None, enqueued_at=None, retries=F("retries") + 1)
            if freed:
                append_log(
                    run_id,
                    f"{cause}: retry {retries + 1} of {settings.RUN_MAX_RETRIES} from its last checkpoint",
                )
                logger.warning("run %s: %s; retry %s", run_id, cause, retries + 1)
                done.retried.append(run_id)
            continue
        if batch_id is not None:
            cause += f" after {retries} automatic retries; a reviewer can retry it"
        if run_fail(run_id=run_id, error=cause):
            done.failed.append(run_id)
    cutoff = now - timedelta(seconds=int(settings.RUN_RESEND_AFTER_S))
    waiting = list(
        TrainingRun.objects.filter(batch__isnull=False)
        .filter(
            Q(status=RunStatus.QUEUED, cancel_requested=False)
            | Q(status=RunStatus.RUNNING, heartbeat__isnull=True, stage__in=_WORKER_STAGES)
        )
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=cutoff))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for run_id in waiting:
        try:
            pipeline.run_step_send(run_id)
        except BrokerUnavailable:
            logger.warning("recovery: the broker is down; %s run(s) wait for it", len(waiting))
            break
        done.resent.append(run_id)
    if done.resent or done.retried or done.failed:
        logger.info("recovery: %s", done.to_dict())
    return done
