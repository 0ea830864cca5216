# syntax=docker/dockerfile:1
# bridge: phone calls (Twilio media streams) to OpenAI Realtime. See docs/deploy.md.
#
#   docker build -t bridge .
#   docker run --rm -p 8080:8080 -e OPENAI_API_KEY -e TWILIO_AUTH_TOKEN -v bridge-data:/data --stop-timeout 330 bridge
#
# Python 3.13: the stdlib audioop is gone, so pip installs audioop-lts (pyproject marker).

############################ builder: wheel + runtime venv ############################
FROM python:3.13-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
# Every runtime dependency ships manylinux wheels for 3.13 (numpy, pydantic-core, audioop-lts),
# so no compiler or apt package is needed.
RUN python -m venv /opt/bridge

COPY pyproject.toml README.md ./
COPY bridge ./bridge
# A wheel of the project alone, then the wheel and its runtime dependencies (no test/bench extras)
# into the venv that the final stage copies.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/bridge/bin/pip install --no-cache-dir /wheels/bridge-*.whl \
    && /opt/bridge/bin/bridge --help > /dev/null

############################ final: venv + non-root user ##############################
FROM python:3.13-slim

# A fixed uid/gid so volume ownership is predictable across rebuilds and hosts.
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid bridge --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin bridge \
    && mkdir -p /data \
    && chown bridge:bridge /data

COPY --from=builder /opt/bridge /opt/bridge

# The public port listens on all interfaces, so X-Twilio-Signature is checked (the default,
# twilio.validate_signature = true): without TWILIO_AUTH_TOKEN (or BRIDGE_TWILIO__AUTH_TOKEN_FILE)
# the service refuses to start rather than take anyone's calls. The admin port stays on 127.0.0.1
# (the service refuses a non-loopback admin port without a token). To scrape /metrics from outside, run with
# -e BRIDGE_ADMIN__HOST=0.0.0.0 -e BRIDGE_ADMIN_TOKEN=... (or mount a file and set
# BRIDGE_ADMIN__TOKEN_FILE) and publish 8081.
ENV PATH=/opt/bridge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BRIDGE_LOG__FORMAT=json \
    BRIDGE_SERVER__HOST=0.0.0.0 \
    BRIDGE_RECORDS__PATH=/data/calls.sqlite

WORKDIR /data
# Call records (SQLite). Keep it on a volume: every call leaves a record.
VOLUME ["/data"]
USER 10001:10001

# 8080: carrier webhook (POST /twiml) and media WebSocket (/media). 8081: admin (loopback unless configured).
EXPOSE 8080 8081

# No curl in slim: ask /healthz with the interpreter already here. Honours BRIDGE_ADMIN__PORT and
# sends the admin token when one is set in the environment.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; t = os.environ.get('BRIDGE_ADMIN_TOKEN'); r = u.Request('http://127.0.0.1:%s/healthz' % os.environ.get('BRIDGE_ADMIN__PORT', '8081'), headers={'Authorization': 'Bearer ' + t} if t else {}); u.urlopen(r, timeout=4)"]

# SIGTERM drains: no new calls, live calls finish (server.drain_timeout_s, 300 s by default).
# Docker waits only 10 s before SIGKILL unless told otherwise: use --stop-timeout 330
# (docker run) or stop_grace_period: 330s (compose).
STOPSIGNAL SIGTERM
ENTRYPOINT ["bridge"]
CMD ["serve"]
