import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
application = get_wsgi_application()

from portal.lib.gc_freeze import freeze_start_up_objects  # noqa: E402 (needs Django set up)

freeze_start_up_objects()
