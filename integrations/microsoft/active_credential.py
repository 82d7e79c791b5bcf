"""The active credential: which stored credential token acquisition uses now (bootstrapped
from MICROSOFT_CLIENT_ASSERTION_FILE or MICROSOFT_CLIENT_SECRET when the store is empty),
handed to the Graph client as its credential store, and what identifies a credential.

The Graph client (integrations.graph.auth, through its ports) and the credential lifecycle
(credential_lifecycle.py: add, verify, activate, roll back, retire) both need these; living
here, neither has to import the other's module back.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from integrations.graph import auth
from integrations.graph.errors import TokenError
from integrations.graph.ports import ClientCredential, StoredCredential
from integrations.microsoft.models import Credential
from portal.access.actors import Actor
from portal.audit.services import record
from portal.lib.crypto import encrypt, fingerprint

logger = logging.getLogger("integrations.microsoft.credentials")

TARGET = "credential"


def public_params(credential: Credential) -> dict[str, Any]:
    """Audit parameters: what identifies the credential, never its value."""
    params = {
        "display_name": credential.display_name,
        "kind": credential.kind,
        "fingerprint": credential.fingerprint,
        "state": credential.state,
        "tenant_id": credential.tenant_id,
        "client_id": credential.client_id,
    }
    if credential.kind == Credential.Kind.CERTIFICATE:
        params |= {"thumbprint": credential.thumbprint, "subject": credential.subject}
    return params


def federated_fingerprint(tenant_id: str, client_id: str) -> str:
    """Workload identity has no value to fingerprint: one per app registration."""
    return fingerprint(f"federated:{tenant_id.lower()}:{client_id.lower()}")


def active_credential() -> Credential:
    """The active credential; bootstraps the store from MICROSOFT_CLIENT_SECRET when needed."""
    credential = Credential.objects.filter(state=Credential.State.ACTIVE).first()
    if credential is not None:
        return credential
    credential = bootstrap_from_environment()
    if credential is not None:
        return credential
    raise TokenError(
        "No active credential: set MICROSOFT_CLIENT_SECRET or MICROSOFT_CLIENT_ASSERTION_FILE "
        "(either bootstraps the credential store) or add, verify and activate a secret or "
        "certificate (console or `manage.py rotate_client_secret`).",
        error="no_credential",
    )


def client_credential(credential: Credential) -> ClientCredential:
    """What MSAL needs to prove the app's identity with this stored credential."""
    if credential.kind == Credential.Kind.FEDERATED:
        return auth.client_assertion_credential()
    if credential.kind == Credential.Kind.CERTIFICATE:
        return auth.certificate_credential(credential.secret_value(), credential.certificate_pem)
    return auth.secret_credential(credential.secret_value())


class DatabaseCredentialStore:
    """The Graph client's credential store (ports.CredentialStore): the active Credential row,
    its secret or key decrypted."""

    def active(self) -> StoredCredential:
        credential = active_credential()
        return StoredCredential(
            credential.pk,
            credential.fingerprint,
            credential.kind,
            client_credential(credential),
            credential.tenant_id,
            credential.client_id,
        )


def bootstrap_from_environment() -> Credential | None:
    """Create the first active credential from MICROSOFT_CLIENT_SECRET or, without one, from
    MICROSOFT_CLIENT_ASSERTION_FILE (workload identity: nothing stored), audited as system.

    The secret wins when both are set: the token file may be the platform's doing (the demo's
    emulator, an AKS pod labelled for workload identity) while a secret is always the
    operator's; switch to workload identity in the console, or leave the secret unset.

    Only when nothing is active and that credential is not already stored (a retired one is
    not resurrected by a stale environment variable).
    """
    app = configured_app()
    secret = (settings.MICROSOFT_CLIENT_SECRET or "").strip()
    if secret:
        kind, label = Credential.Kind.SECRET, "MICROSOFT_CLIENT_SECRET"
        print_ = fingerprint(secret)
    elif settings.MICROSOFT_CLIENT_ASSERTION_FILE:
        kind, label = Credential.Kind.FEDERATED, "MICROSOFT_CLIENT_ASSERTION_FILE"
        print_ = federated_fingerprint(app["tenant_id"], app["client_id"])
    else:
        return None
    if Credential.objects.filter(fingerprint=print_).exists():
        # Either another thread/process bootstrapped it a moment ago (use it), or it was
        # retired or demoted on purpose (None: don't resurrect it from a stale variable).
        return Credential.objects.filter(state=Credential.State.ACTIVE).first()
    actor = Actor.system("credential-bootstrap")
    try:
        with transaction.atomic():
            credential = Credential.objects.create(
                display_name=f"From {label}",
                kind=kind,
                secret_encrypted=encrypt(secret) if secret else "",
                fingerprint=print_,
                state=Credential.State.ACTIVE,
                activated_at=timezone.now(),
                created_by=actor.name,
                **app,
            )
            record(
                "credential.bootstrap",
                actor=actor,
                target_type=TARGET,
                target_id=credential.pk,
                params=public_params(credential),
            )
    except IntegrityError:
        # Another process bootstrapped (or activated) at the same moment.
        return Credential.objects.filter(state=Credential.State.ACTIVE).first()
    logger.info("Credential store bootstrapped from %s (…%s)", label, print_)
    return credential


def configured_app() -> dict[str, str]:
    """The tenant and client a secret added now belongs to (recorded on the credential)."""
    return {
        "tenant_id": settings.MICROSOFT_TENANT_ID or "",
        "client_id": settings.MICROSOFT_CLIENT_ID or "",
    }
