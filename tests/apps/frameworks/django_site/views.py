"""Views of the minimal Django project: sync and async, GET/POST, JSON, streaming, errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

# What the in-process tests can observe from the test thread.
EVENTS: dict = {}


def index(request):  # sync view: Django runs it in a thread under ASGI
    return HttpResponse("django root", content_type="text/plain")


async def about(request):  # async view: runs on the server's event loop
    return HttpResponse("about django", content_type="text/plain")


def sync_info(request):
    return JsonResponse({
        "kind": "sync",
        "on_main_thread": threading.current_thread() is threading.main_thread(),
        "q": request.GET.get("q"),
        "tags": request.GET.getlist("tag"),
    })


async def async_info(request):
    asyncio.get_running_loop()  # raises if this is not running on an event loop
    return JsonResponse({"kind": "async", "q": request.GET.get("q"), "tags": request.GET.getlist("tag")})


async def item(request, item_id: int):
    return JsonResponse({"item_id": item_id, "q": request.GET.get("q")})


@csrf_exempt
@require_POST
def echo(request):
    return JsonResponse({"echo": json.loads(request.body)})


@csrf_exempt
@require_POST
def form(request):
    data = {key: request.POST.getlist(key) for key in request.POST}
    files = {
        key: {"filename": f.name, "size": f.size, "sha256": hashlib.sha256(f.read()).hexdigest()}
        for key, f in request.FILES.items()
    }
    return JsonResponse({"post": data, "files": files})


@csrf_exempt
async def upload(request):
    body = request.body
    return JsonResponse({"size": len(body), "sha256": hashlib.sha256(body).hexdigest()})


async def stream(request):
    count = int(request.GET.get("n", "100"))

    async def numbers():
        for i in range(count):
            yield f"line {i}\n".encode()
            if i % 10 == 0:
                await asyncio.sleep(0)

    return StreamingHttpResponse(numbers(), content_type="text/plain")


async def slow(request):
    key = request.GET["key"]
    EVENTS[key] = "started"
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        EVENTS[key] = "cancelled"
        raise
    EVENTS[key] = "finished"
    return HttpResponse("too late")


def boom(request):
    raise RuntimeError("boom from a sync Django view")


async def aboom(request):
    raise RuntimeError("boom from an async Django view")
