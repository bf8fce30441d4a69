"""A minimal Django project (no database) served through django.core.asgi."""
