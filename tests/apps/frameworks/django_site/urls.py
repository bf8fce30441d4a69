from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("about", views.about),
    path("sync", views.sync_info),
    path("async", views.async_info),
    path("items/<int:item_id>", views.item),
    path("echo", views.echo),
    path("form", views.form),
    path("upload", views.upload),
    path("stream", views.stream),
    path("slow", views.slow),
    path("boom", views.boom),
    path("aboom", views.aboom),
]
