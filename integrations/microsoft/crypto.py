"""Moved to portal.crypto (the event feed encrypts endpoint secrets with it too); these names
stay importable from here for the integration's modules."""

from portal.crypto import DecryptionError, decrypt, encrypt, fingerprint, rotate

__all__ = ["DecryptionError", "decrypt", "encrypt", "fingerprint", "rotate"]
