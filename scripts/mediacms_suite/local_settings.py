# Settings the differential suite drops into its copy of MediaCMS as cms/local_settings.py.
# One tree serves both runs: each process reads its database, Redis DB and media root from the
# environment (SUITE_*), so the Python run and the Rust run never share state.
import os

_db = os.environ["SUITE_DB_NAME"]
_redis = os.environ["SUITE_REDIS_URL"]
_media_root = os.environ["SUITE_MEDIA_ROOT"].rstrip("/") + "/"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db,
        "HOST": os.environ.get("SUITE_PG_HOST", "127.0.0.1"),
        "PORT": os.environ.get("SUITE_PG_PORT", "5432"),
        "USER": os.environ.get("SUITE_PG_USER", "postgres"),
        "PASSWORD": os.environ.get("SUITE_PG_PASSWORD", "postgres"),
    }
}
REDIS_LOCATION = _redis
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": _redis,
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    }
}
BROKER_URL = _redis
CELERY_RESULT_BACKEND = _redis
CELERY_TASK_ALWAYS_EAGER = False
MEDIA_ROOT = _media_root
HLS_DIR = os.path.join(_media_root, "hls/")
FRONTEND_HOST = "http://localhost"
DEBUG = False
CELERY_EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
