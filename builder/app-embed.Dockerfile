# Embed stage: the app (streamed in at package/) built into the binary, on the exact base image
# the pipeline passes. The binary ends at /go/src/app/dist/frankenphp-linux-<arch>.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}

WORKDIR /go/src/app
COPY package/ dist/app/
COPY Caddyfile php.ini dist/app/
RUN EMBED=dist/app/ ./build-static.sh
