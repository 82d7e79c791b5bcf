"""Outbound e-mail and Teams messages, sent by jobs and never twice.

- schema.py: a message's one validation, and the JSON Schema the API serves from it;
- errors.py: what the send service refuses (code, reason, field);
- service.py: the send service the API and the console call (permission, audit);
- outbox.py: queueing a message and its job in one transaction, keyed; cancelling;
- delivery.py: the job handlers' body, with mail.py (draft, tag, send) and teams.py (post,
  look for an earlier post), steps.py (what they share) and budgets.py (sending budgets).
"""
