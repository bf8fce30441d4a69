"""Django 5.2 through its own ASGI handler: a sync view and an async view (sync_to_async) running
``SELECT pg_sleep`` with the ORM's connection.

CONN_MAX_AGE = 0: Django closes its connections when a request finishes (request_finished), so
any backend still open once the requests are over is a leaked connection. The two views use two
database aliases with their own application_name, so that pg_stat_activity tells them apart.

    GET /sleep?id=ID&s=20         sync view: connection.cursor().execute(...)
    GET /async-sleep?id=ID&s=20   async view: await sync_to_async(...)() on alias "async"
    GET /ok                       sync view: SELECT 1
"""

from __future__ import annotations

import django
from django.conf import settings

from . import _record

SYNC_APP_NAME = "stacks-django"
ASYNC_APP_NAME = "stacks-django-async"


def _database(app_name: str) -> dict:
    return {
        "ENGINE": "django.db.backends.postgresql", "NAME": "postgres", "USER": "postgres",
        "HOST": _record.pg_host(), "PORT": str(_record.pg_port()), "CONN_MAX_AGE": 0,
        "OPTIONS": {"application_name": app_name},
    }


if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="stacks-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        USE_TZ=True,
        DATABASES={"default": _database(SYNC_APP_NAME), "async": _database(ASYNC_APP_NAME)},
        # Django prints errors only with DEBUG on; show them (with their tracebacks) on stderr.
        LOGGING={
            "version": 1, "disable_existing_loggers": False,
            "handlers": {"stderr": {"class": "logging.StreamHandler"}},
            "loggers": {"django": {"handlers": ["stderr"], "level": "ERROR"}},
        },
    )
    django.setup()

from asgiref.sync import sync_to_async  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.db import connections  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

_record.capture_warnings("django")


def _sleep(alias: str, rid: str, duration: float) -> None:
    with connections[alias].cursor() as cursor:
        _record.record("start", rid)
        cursor.execute(_record.sleep_sql(rid, duration))


def sleep(request):  # type: ignore[no-untyped-def]
    rid = _record.request_id(request.GET.get("id"))
    _sleep("default", rid, _record.seconds(request.GET.get("s")))
    _record.record("end", rid, "completed")
    return JsonResponse({"slept": True})


async def async_sleep(request):  # type: ignore[no-untyped-def]
    rid = _record.request_id(request.GET.get("id"))
    await sync_to_async(_sleep)("async", rid, _record.seconds(request.GET.get("s")))
    _record.record("end", rid, "completed")
    return JsonResponse({"slept": True})


def ok(request):  # type: ignore[no-untyped-def]
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        return JsonResponse({"one": cursor.fetchone()[0]})


urlpatterns = [path("sleep", sleep), path("async-sleep", async_sleep), path("ok", ok)]
app = get_asgi_application()
