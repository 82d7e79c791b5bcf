"""django.contrib.auth's account commands, replaced by the portal's audited ones.

Listed in INSTALLED_APPS before django.contrib.auth, because the first app that has a
command of a given name wins: `createsuperuser` is refused (a superuser flag would stand
beside the role matrix) and `changepassword` goes through portal.access.users.
"""
