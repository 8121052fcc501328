# Embed stage, shared by every builder profile: the app (streamed in at package/) plus the
# embedded server configuration, built into the binary on the exact base image the pipeline
# passes. The base provides `frankenphp-relink` and $FRANKENPHP_SRC; only the link step runs here.
# The binary ends at /go/src/app/dist/frankenphp-linux-<arch>.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}

WORKDIR /go/src/app
COPY embed-app.sh /usr/local/bin/embed-app
COPY package/ dist/app/
COPY Caddyfile php.ini app-path.php dist/app/.frankenphp/
RUN embed-app dist/app "dist/frankenphp-linux-$(uname -m)"
