from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from portal.access.decorators import public

TABLE = "bench_baseline_row"


@public
@csrf_exempt
def baseline(request: HttpRequest) -> HttpResponse:
    """The floor: the same stack (middleware, gunicorn, PostgreSQL) inserting one row."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (body) VALUES (%s)", [request.body.decode("utf-8", "replace")]
        )
    return HttpResponse(status=202)


urlpatterns = [
    path("bench/baseline", baseline),
    path("", include("portal.urls")),
]
