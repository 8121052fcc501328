# Embed stage, shared by every builder profile: what every app of one lock shares, on the exact
# base image the pipeline passes. The base provides composer, PHP's php.ini-production and the
# base binary (/go/src/app/dist/frankenphp-linux-<arch>, linked once with an empty app); this
# stage adds the app's Composer dependencies and packs them (pack-deps.sh) into
# /go/src/embed/deps.tar. The extract stage appends the app and this tar to the base binary: an
# app-only commit never rebuilds this image.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}

# From composer.json + composer.lock alone (deps/, written by the pipeline, the lock's download
# locations already pointed at the configured repository). The token is a build secret: it is
# mounted for this one step and is in no layer, label or cache key.
COPY install-deps.sh /usr/local/bin/install-deps
COPY deps/ /go/src/deps/
ARG COMPOSER_REPOSITORY=""
ARG COMPOSER_PACKAGIST=true
RUN --mount=type=secret,id=composer_auth install-deps /go/src/deps

COPY pack-deps.sh /usr/local/bin/pack-deps
RUN pack-deps /go/src/deps /go/src/embed/deps.tar
