# Embed stage, shared by every builder profile: the app (streamed in at package/) plus the
# embedded server configuration, built into the binary on the exact base image the pipeline
# passes. The base provides composer, `frankenphp-relink` and $FRANKENPHP_SRC; only the link
# step runs here. The binary ends at /go/src/app/dist/frankenphp-linux-<arch>.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}

# Dependencies first, from composer.json + composer.lock alone (deps/, written by the pipeline):
# BuildKit reuses this layer for every commit that leaves them alone. The token is a build
# secret: it is mounted for this one step and is in no layer, label or cache key.
COPY install-deps.sh /usr/local/bin/install-deps
COPY deps/ /go/src/deps/
ARG COMPOSER_REPOSITORY=""
ARG COMPOSER_PACKAGIST=true
RUN --mount=type=secret,id=composer_auth install-deps /go/src/deps

WORKDIR /go/src/app
COPY frankenphp/*.go /go/src/frankenphp-build/
COPY frankenphp/appdir/ /go/src/frankenphp-build/appdir/
COPY package/ dist/app/
COPY Caddyfile php.ini app-path.php dist/app/.frankenphp/
COPY embed-app.sh /usr/local/bin/embed-app
ARG APP_DOCROOT=webroot
ARG COMPOSER_SCRIPTS=false
ARG SOURCE_DATE_EPOCH=0
RUN embed-app dist/app "dist/frankenphp-linux-$(uname -m)"
