"""A local, stateful emulator of the Microsoft identity platform and Microsoft Graph."""
