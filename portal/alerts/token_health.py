"""Token acquisition health: the portal's side of the Graph client's token observer.

Every process reports its app-token outcomes (ports.observe_tokens, registered in
AlertsConfig.ready); they are kept per credential in TokenHealth, so the console, the
"Microsoft sign-in refused" alert and /metrics see what any worker saw. A token from MSAL's
cache proves nothing about the credential now, so the scheduled check (every minute) asks the
identity platform itself.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from integrations.graph import auth, ports
from integrations.graph.errors import TokenError
from portal.alerts.models import TokenHealth
from portal.alerts.services import evaluate_rule
from portal.jobs.runner import worker_identity

logger = logging.getLogger(__name__)
RULE = "token_refused"


def record_outcome(outcome: ports.TokenOutcome) -> None:
    """Keep the outcome (observer of auth.app_token_result). Best effort, in a savepoint:
    a database error must neither fail the token request nor the caller's transaction."""
    if outcome.error is None and outcome.from_cache:
        return
    now = timezone.now()
    if outcome.error is None:
        fields: dict[str, object] = {"last_success_at": now}
    else:
        error = outcome.error
        fields = {
            "last_failure_at": now,
            "failure_code": error.aadsts,
            "failure_error": (error.error or "")[:64],
            "failure_message": error.message[:1000],
            "failure_process": worker_identity()[:150],
        }
    try:
        with transaction.atomic():
            updated = TokenHealth.objects.filter(credential_id=outcome.credential_id).update(
                **fields
            )
            if not updated:
                TokenHealth.objects.create(credential_id=outcome.credential_id, **fields)
    except (DatabaseError, IntegrityError):
        logger.warning("Token outcome not recorded", exc_info=True)


def configured() -> bool:
    """Whether the portal is set up to ask for tokens at all (a fresh install is not)."""
    return bool(settings.MICROSOFT_TENANT_ID and settings.MICROSOFT_CLIENT_ID)


def check() -> str:
    """Schedule entry (every minute): ask the identity platform for a token now, bypassing
    MSAL's cache, and evaluate the sign-in alert at once. Returns what happened."""
    if not configured():
        return "not set up"
    try:
        auth.check_app_token()
        outcome = "ok"
    except TokenError as exc:
        outcome = f"refused: {exc.message}"
    evaluate_rule(RULE)
    return outcome
