"""Thin django-q2 entry points for the access app."""

from __future__ import annotations

from portal.access import sso


def recheck_entra_accounts() -> int:
    """Re-ask Entra about every SSO person holding a usable API token (their tokens follow
    their role even when they never sign in again). Safe to run twice."""
    if not sso.enabled():
        return 0
    return sum(1 for account_id in sso.accounts_to_recheck() if sso.recheck_account(account_id))
