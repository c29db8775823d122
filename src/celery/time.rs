//! (pending: celery codec helper)
