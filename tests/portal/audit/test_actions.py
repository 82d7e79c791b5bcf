"""Audited actions in words, for the screens that tell who did what."""

from __future__ import annotations

from portal.audit.actions import ACTION_WORDS, action_words
from portal.audit.models import NOT_CHANGES, NOT_CHANGES_PREFIXES


def test_an_action_reads_as_what_the_person_did():
    assert action_words("credential.rollback") == "rolled back a credential"
    assert action_words("jobs.pause") == "paused the job queue"
    assert action_words("something.new_here") == "something new here"  # no words yet


def test_actions_that_change_nothing_are_not_given_words_for_changes():
    changes = set(ACTION_WORDS)
    assert not changes & NOT_CHANGES
    assert not [action for action in changes if action.startswith(NOT_CHANGES_PREFIXES)]
