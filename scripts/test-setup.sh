#!/usr/bin/env bash
# Prepare a fresh machine for the test suite: apt packages, services, the Python Celery peer venv.
# Idempotent: every step checks before it acts. Used by `make test` and `.ci/run`.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg in clang libclang-dev pkg-config libavcodec-dev libavformat-dev libavutil-dev \
           libavfilter-dev libavdevice-dev libswscale-dev libswresample-dev ffmpeg \
           postgresql-client redis-tools python3-venv imagemagick; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test-setup: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Services the tests talk to (real ones; the machine kind usually starts them already).
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "test-setup: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "test-setup: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  echo "test-setup: starting RabbitMQ"
  rabbitmq-server -detached
fi
for _ in $(seq 1 60); do
  pg_isready -h 127.0.0.1 -p 5432 -q && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 \
    && (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break
  sleep 1
done

# The Python peer: celery 5.4.0 with a redis-py kombu 5.7 accepts (not the celery[redis] extra).
# kombu 5.7's Redis transport imports `packaging`, which nothing else pulls in.
if ! .venv/bin/python -c 'import celery, redis, m3u8, kombu.transport.redis; assert celery.__version__ == "5.4.0"' 2>/dev/null; then
  echo "test-setup: creating .venv with celery==5.4.0"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check 'celery==5.4.0' 'redis>=6.1' 'm3u8' 'packaging'
fi
echo "test-setup: ready"
