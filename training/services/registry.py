"""The model registry: register verified versions, the promotion gate, the champion swap, rollback.

Scoring (evaluations, baselines, charts) is in ``training/services/evaluation.py``.

One champion at every instant: a promotion demotes the old champion and promotes the new one inside
one transaction, with both rows locked (in primary-key order, so two swaps cannot deadlock), after
checking that the champion is still the one the decision was made against. The partial unique
constraint ``one_champion_at_most`` makes the database refuse a second champion whatever happens.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from annotation.models import Product
from training import paths, pipeline, storage
from training.engine.artifacts import ArtifactError, read_version, tar_digest
from training.exceptions import (
    RollbackNeedsOverride,
    RunStateError,
    VersionFilesInvalid,
    VersionStateError,
)
from training.models import (
    AuditAction,
    AuditEvent,
    Evaluation,
    ModelVersion,
    RunStage,
    RunStatus,
    TrainingRun,
    VersionStatus,
)
from training.recipes import predictor_settings_of
from training.services.evaluation import baselines_evaluate, evaluation_of_version, test_products
from training.services.run_log import append_log, failure_cause, lease_kept, run_fail
from webapp.roles import Role, has_role

logger = logging.getLogger(__name__)


# --- registration ---------------------------------------------------------------------------------


def _read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def version_register(
    *, run_id: int, adapter_dir: Path, recipe: Any, enqueue_next: bool = True
) -> ModelVersion:
    """Write the run's adapter as a version folder, verify it, then insert the version row.

    The folder is written atomically by the engine and read back (checksums checked) before the row
    exists, so a listed version always has complete files. A folder left by a crashed attempt is
    reused when it verifies and replaced when it does not.
    """
    from training.engine.artifacts import ArtifactError, write_version

    run = TrainingRun.objects.select_related("parent", "dataset").get(pk=run_id)
    if run.candidate_id is not None:
        return run.candidate  # type: ignore[return-value]
    dest = paths.version_dir(f"run-{run_id}")
    dataset = getattr(run, "dataset", None)
    revision = run.base_revision or _base_revision(run.base_model)
    if revision and not run.base_revision:  # the run's record names the same base as its version's
        TrainingRun.objects.filter(pk=run_id, base_revision="").update(base_revision=revision)
    manifest = {
        # The base named exactly (hub id + commit, or a local folder's name + its manifest's sha256).
        "base_model": run.base_label,
        "base_revision": revision,
        "recipe_name": run.recipe_name,
        "method": run.recipe,
        "recipe": _recipe_without_paths(recipe.to_dict(), base=run.base_label, revision=revision),
        "hyperparameters": run.hyperparameters,
        "dataset": {
            "sha256": dataset.sha256 if dataset else "",
            "rows": dataset.rows if dataset else 0,
            "kind": dataset.kind if dataset else run.recipe,
        },
        "batch_id": run.batch_id,
        # v1's named seed set (the only price knowledge a version has besides annotators' batches).
        "seed_set": (dataset.manifest or {}).get("seed_set") if dataset else None,
        "run_id": run_id,
        "parent": run.parent.name if run.parent else None,
        "train_result": run.result,
        # The settings this version is always scored and guesses with (training/recipes.py).
        "predictor": predictor_settings_of(recipe, run.recipe_name),
    }
    if dest.exists():
        try:
            read_version(dest)
        except (ArtifactError, OSError, ValueError):
            shutil.rmtree(dest)
    if not dest.exists():
        write_version(adapter_dir, dest, manifest=manifest)
    read_version(dest)  # raises on any missing file or checksum mismatch: no row for a bad folder
    stored = _read_manifest(dest)
    name = storage.version_publish(dest)  # in the store before its row exists
    for _attempt in range(5):
        try:
            with transaction.atomic():
                number = (ModelVersion.objects.aggregate(n=Max("number"))["n"] or 0) + 1
                sha256, size = tar_digest(dest, prefix=f"v{number}")
                version = ModelVersion.objects.create(
                    number=number,
                    base_model=run.base_model,
                    base_revision=revision,
                    parent=run.parent,
                    status=VersionStatus.CANDIDATE,
                    artifact_path=name,
                    artifact_sha256=sha256,
                    artifact_size=size,
                    hyperparameters={"recipe": run.recipe_name, "method": run.recipe, **run.hyperparameters},
                    manifest=stored,
                    dataset_fingerprint=dataset.sha256 if dataset else "",
                )
                moved = TrainingRun.objects.filter(
                    pk=run_id, status=RunStatus.RUNNING, stage=RunStage.TRAIN, candidate__isnull=True
                ).update(candidate=version, stage=RunStage.EVALUATE, heartbeat=None)
                if moved != 1:
                    raise RunStateError(f"run {run_id} is no longer training; its version is not registered.")
                if enqueue_next:
                    transaction.on_commit(lambda: pipeline.run_step_send_quietly(run_id))
            return version
        except IntegrityError:
            time.sleep(0.05)  # another version took this number: take the next one
    raise RunStateError(f"could not allocate a version number for run {run_id}")


def _recipe_without_paths(recipe: dict[str, Any], *, base: str, revision: str) -> dict[str, Any]:
    """The recipe as the manifest keeps it: its base named as lineage names it, not by a server path."""
    model = {**recipe.get("model", {}), "base": base, "revision": revision or None}
    return {**recipe, "model": model}


def _base_revision(base_model: str) -> str:
    """For a run whose dataset step did not record it (v1's bootstrap run)."""
    from training.engine.model_io import BaseModelError, base_ref

    try:
        return base_ref(base_model, timeout=float(settings.HUB_TIMEOUT_S)).revision
    except BaseModelError:
        return ""


# --- the gate and the champion swap ---------------------------------------------------------------


# Any number that other advisory locks of the project do not use; it names "the champion slot".
_CHAMPION_LOCK_KEY = 0x5052_4C50  # "PRLP"


def _lock_champion_slot() -> None:
    """Serialize champion swaps (inside the caller's transaction, released at its end).

    PostgreSQL: a transaction-level advisory lock, so the champion read after it is the latest
    committed one (row locks alone cannot do this: a swap changes *which* row is champion).
    SQLite: transactions already take the database write lock at BEGIN (IMMEDIATE mode).
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAMPION_LOCK_KEY])


_ANY = object()


def _swap_champion(*, new: ModelVersion, expected_old_id: Any = _ANY) -> ModelVersion | bool | None:
    """Inside a transaction: demote the champion, promote ``new``; one statement each, one commit.

    ``expected_old_id``: the champion the decision was made against (None: no champion); if another
    one is champion by now, nothing changes and ``False`` is returned. Otherwise returns the demoted
    champion (or None when there was none).
    """
    _lock_champion_slot()
    current = ModelVersion.objects.filter(status=VersionStatus.CHAMPION).first()
    if expected_old_id is not _ANY and (current.pk if current else None) != expected_old_id:
        return False
    now = timezone.now()
    if current is not None:
        if current.pk == new.pk:
            return None
        ModelVersion.objects.filter(pk=current.pk).update(status=VersionStatus.ARCHIVED)
    ModelVersion.objects.filter(pk=new.pk).update(status=VersionStatus.CHAMPION, promoted_at=now)
    return current


def run_evaluate_and_gate(*, run_id: int) -> dict[str, Any] | None:
    """Score the candidate and the champion on the test split, apply the gate, promote or reject.

    Returns the gate decision (``None`` when there was nothing to do: a redelivery or an ended run).
    Any error fails the run at once with its cause (the trace goes to the server log).
    """
    # Exclusive like training: a second delivery waits for the first one's lease to lapse.
    now = timezone.now()
    claimed = (
        TrainingRun.objects.filter(pk=run_id, status=RunStatus.RUNNING, stage=RunStage.EVALUATE)
        .filter(
            Q(heartbeat__isnull=True) | Q(heartbeat__lt=now - timedelta(seconds=settings.RETRAIN_RUN_LEASE_S))
        )
        .update(heartbeat=now)
    )
    if not claimed:
        return None
    try:
        with lease_kept(run_id):  # scoring two versions on the test split renews no lease by itself
            return _evaluate_and_gate(run_id)
    except Exception as exc:  # noqa: BLE001 - any error (time limit included) ends the run, named
        run_fail(run_id=run_id, error=f"evaluation failed: {failure_cause(exc)}", exc_info=exc)
        return None


def _evaluate_and_gate(run_id: int) -> dict[str, Any] | None:
    from training.engine.evaluator import compare_paired, gate_decide

    run = TrainingRun.objects.select_related("candidate").get(pk=run_id)
    candidate = run.candidate
    if candidate is None:
        raise RunStateError(f"run {run_id} is evaluating but has no candidate version")
    products = test_products()
    if not products:
        run_fail(run_id=run_id, error="the test split has no product with a price: nothing to score against")
        return None

    def renew() -> None:
        TrainingRun.objects.filter(pk=run_id).update(heartbeat=timezone.now())

    # Each version with its own settings (a 4-bit champion against an 8-bit candidate is scored 4-bit),
    # on the same test split.
    candidate_eval = evaluation_of_version(version=candidate, products=products, on_chunk=renew)
    ModelVersion.objects.filter(pk=candidate.pk).update(metrics=candidate_eval.metrics)
    _run_log(run_id, f"scored {candidate.name}", candidate_eval)
    for _attempt in range(5):
        champion = ModelVersion.objects.filter(status=VersionStatus.CHAMPION).first()
        if champion is None:
            decision: dict[str, Any] = {
                "promote": True,
                "reasons": ["ok: there is no champion yet, so the first scored version becomes champion"],
                "numbers": {"mae_candidate": candidate_eval.metrics["mae"], "n": len(products)},
            }
        else:
            champion_eval = evaluation_of_version(version=champion, products=products, on_chunk=renew)
            _run_log(run_id, f"scored the champion {champion.name}", champion_eval)
            comparison = compare_paired(candidate_eval.truths, candidate_eval.guesses, champion_eval.guesses)
            decision = gate_decide(
                comparison,
                min_delta=float(settings.GATE_MIN_DELTA),
                alpha=float(settings.GATE_ALPHA),
                test=_gate_test(),
            ).to_dict()
        decision["champion"] = champion.name if champion else None
        decision["candidate"] = candidate.name
        decision["candidate_metrics"] = candidate_eval.metrics
        if _apply_decision(run_id=run_id, candidate=candidate, champion=champion, decision=decision):
            verdict = "promoted" if decision["promote"] else "rejected"
            append_log(run_id, f"gate: {candidate.name} {verdict}; " + "; ".join(decision.get("reasons", [])))
            _baselines_quietly(products)
            return decision
    raise RunStateError(f"run {run_id}: the champion kept changing during the gate; try again")


def _run_log(run_id: int, what: str, evaluation: Evaluation) -> None:
    """An evaluation line in the run's log: the numbers the gate is about to compare."""
    m, p = evaluation.metrics, evaluation.predictor_settings
    # The words of the Versions page and the approval form ("not quantized", not the recipe's "none").
    quant = "not quantized" if p.get("quantization") == "none" else p.get("quantization")
    append_log(
        run_id,
        f"{what} on {m.get('n')} test items ({quant}, prompt {p.get('prompt_style')}): "
        f"MAE ${m.get('mae', 0):.2f}, RMSLE {m.get('rmsle', 0):.3f}, hits {m.get('hit_rate', 0):.0%}",
    )


def _gate_test() -> Literal["bootstrap", "wilcoxon"]:
    if settings.GATE_TEST == "wilcoxon":
        return "wilcoxon"
    if settings.GATE_TEST == "bootstrap":
        return "bootstrap"
    raise ImproperlyConfigured(f"GATE_TEST={settings.GATE_TEST!r}: use bootstrap or wilcoxon.")


def _baselines_quietly(products: list[Product]) -> None:
    """Keep the leaderboard's baselines scored on the current test split (cached; a failure only logs)."""
    try:
        baselines_evaluate(products=products)
    except Exception:
        logger.exception("scoring the baselines failed")


def _apply_decision(
    *, run_id: int, candidate: ModelVersion, champion: ModelVersion | None, decision: dict[str, Any]
) -> bool:
    try:
        with transaction.atomic():
            if decision["promote"]:
                swapped = _swap_champion(new=candidate, expected_old_id=champion.pk if champion else None)
                if swapped is False:
                    return False
            else:
                ModelVersion.objects.filter(pk=candidate.pk, status=VersionStatus.CANDIDATE).update(
                    status=VersionStatus.REJECTED
                )
            ended = TrainingRun.objects.filter(
                pk=run_id, status=RunStatus.RUNNING, stage=RunStage.EVALUATE
            ).update(
                status=RunStatus.SUCCEEDED,
                stage=RunStage.DONE,
                gate=decision,
                finished=timezone.now(),
                heartbeat=None,
            )
            if ended != 1:
                raise RunStateError(f"run {run_id} left the evaluate stage while it was being gated")
            AuditEvent.objects.create(
                action=AuditAction.PROMOTE if decision["promote"] else AuditAction.REJECT,
                version=candidate,
                previous_champion=champion,
                run_id=run_id,
                numbers=decision,
                message="; ".join(decision.get("reasons", [])),
            )
            if decision["promote"]:
                transaction.on_commit(lambda: pipeline.guess_send(candidate.pk))
    except IntegrityError:
        return False  # a concurrent promotion won; decide again against the new champion
    logger.info(
        "run %s: %s %s (champion was %s)",
        run_id,
        "promoted" if decision["promote"] else "rejected",
        candidate.name,
        champion.name if champion else "none",
    )
    return True


def version_files_check(version: ModelVersion) -> None:
    """Raise ``VersionFilesInvalid`` unless the version's folder passes the download's checks.

    The same ``storage.version_verify`` the download runs (allowed file types only, no pickles, the manifest's
    files exactly, every sha256 matching): a folder no client may download must never serve guesses.
    """
    if not version.artifact_path:
        raise VersionFilesInvalid(f"{version.name} has no files registered; it cannot be made champion.")
    try:
        storage.version_verify(version.artifact_path)
    except (ArtifactError, OSError) as exc:
        raise VersionFilesInvalid(
            f"the files of {version.name} fail verification ({exc}); restore its folder from a verified "
            "archive or roll back to another version."
        ) from None


def version_gate_rejected(version: ModelVersion) -> bool:
    """Whether the gate ever rejected this version: its status, or once an override made it champion (and
    it was archived since), the gate's or the override's audit row."""
    return (
        version.status == VersionStatus.REJECTED
        or AuditEvent.objects.filter(version=version)
        .filter(
            Q(action=AuditAction.REJECT) | Q(action=AuditAction.ROLLBACK, numbers__has_key="gate_override")
        )
        .exists()
    )


def version_rollback(
    *, reviewer: User, version_id: int, reason: str = "", override_reason: str = ""
) -> ModelVersion:
    """Make an earlier version champion again (the current one is archived); audited with both metrics.

    Refused, with nothing changed, when the version's files fail verification, and for a version the
    gate rejected unless ``override_reason`` says why; such an override is recorded on the audit row
    (``numbers["gate_override"]``) so the version stays identifiable as rejected-then-overridden.
    """
    if not has_role(reviewer, Role.REVIEWER):
        raise PermissionError("only reviewers may roll back the champion.")
    target = ModelVersion.objects.get(pk=version_id)
    if target.status == VersionStatus.CHAMPION:
        return target
    if target.status == VersionStatus.CANDIDATE:
        raise VersionStateError(
            f"{target.name} is still a candidate being evaluated; wait for its gate decision."
        )
    override_reason = override_reason.strip()
    gate_rejected = version_gate_rejected(target)
    if gate_rejected and not override_reason:
        raise RollbackNeedsOverride(
            f"the gate rejected {target.name}; making it champion needs a written override reason "
            "(override_reason) saying why."
        )
    # Before the swap and outside the lock: reading the files may take a while, and a refusal changes nothing.
    version_files_check(target)
    numbers: dict[str, Any] = {"to": {"version": target.name, "metrics": target.metrics}}
    message = reason
    if gate_rejected:
        numbers["gate_override"] = {
            "version": target.name,
            "status": target.status,
            "reason": override_reason,
        }
        message = f"override of the gate's rejection: {override_reason}" + (f" ({reason})" if reason else "")
    with transaction.atomic():
        swapped = _swap_champion(new=target)
        previous = swapped if isinstance(swapped, ModelVersion) else None
        numbers["from"] = {"version": previous.name, "metrics": previous.metrics} if previous else None
        AuditEvent.objects.create(
            action=AuditAction.ROLLBACK,
            actor=reviewer,
            version=target,
            previous_champion=previous,
            message=message,
            numbers=numbers,
        )
    target.refresh_from_db()
    return target
