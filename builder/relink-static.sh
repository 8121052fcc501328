#!/bin/sh
# Link FrankenPHP against the PHP that static-php-cli (spc) compiled in the base stage: the
# final step of upstream's static build, spc's UnixBuilderBase::buildFrankenphp
# (src/SPC/builder/unix/UnixBuilderBase.php:407-472 at spc 3ce68b64, called by FrankenPHP
# v1.12.7's build-static.sh), without compiling PHP again. docs/STATIC_BUILD.md maps every flag.
#   usage: relink-static OUTPUT          link (and strip, as spc does) into OUTPUT
#          relink-static --warm          compile every package the command imports, once
#          relink-static --print OUTPUT  print the environment and the command, run nothing
# Differences from upstream, on purpose: the Caddy/plugin modules are the ones pinned by our
# go.mod/go.sum (spc's xcaddy takes their latest versions, xcaddy environment.go:194-250);
# -trimpath, for byte-identical binaries; it runs once per base, with an empty app (the extract
# stage appends apps to the binary it makes).
set -eu
mode="link"
case "${1:-}" in
    --warm) mode=warm ;;
    --print) mode=print; shift ;;
esac
out=${1:-}
spc_dir=${SPC_DIR:-/go/src/app/dist/static-php-cli}
buildroot=$spc_dir/buildroot
# build-static.sh always adds brotli to the libraries (build-static.sh:174-177).
libs="${PHP_EXTENSION_LIBS:+$PHP_EXTENSION_LIBS,}brotli"
spc_config() { (cd "$spc_dir" && ./spc spc-config "$PHP_EXTENSIONS" --with-libs="$libs" "$@"); }

# Tags (UBB:411-412, 437-440, 463): static_build for musl only; nowatcher without the watcher
# library; nobrotli never (brotli is always there).
tags=nobadger,nomysql,nopgx
dynamic_list="-Wl,--dynamic-list=$buildroot/lib/libphp.a.dynsym"
if [ "${SPC_LIBC:-musl}" = musl ]; then
    # Fully static: -static-pie, a larger default thread stack (UBB:437-438, 440).
    tags="static_build,$tags"
    static=-static-pie
    extld="-static-pie -Wl,-z,stack-size=0x80000 $dynamic_list "
else
    # glibc: PHP and its libraries static, glibc itself dynamic (UBB:434).
    static=""
    extld="-pie $dynamic_list "
fi
case ",$libs," in *,watcher,*) ;; *) tags="$tags,nowatcher" ;; esac
tags="$tags${FRANKENPHP_EXTRA_TAGS:+,$FRANKENPHP_EXTRA_TAGS}"

# CGO_CFLAGS: spc's -fPIC -O2 twice (LinuxBuilder.php:35, 51-52), the includes spc-config
# prints, build-static.sh's extra flags (build-static.sh:205) and the version (UBB:444, 455).
# CGO_LDFLAGS: spc's own link list, -lphp and every static dependency in order, runtime libs,
# -lstdc++, -lc (SPCConfigUtil.php:80-126, 259-323), after -static-pie for musl (UBB:456).
CGO_ENABLED=1
CGO_CFLAGS="-fPIC -O2 -fPIC -O2 $(spc_config --includes) -fPIE -fstack-protector-strong -O2 -w -s -DFRANKENPHP_VERSION=${FRANKENPHP_VERSION}"
CGO_LDFLAGS="${static:+$static }$(spc_config --libs)"
export CGO_ENABLED CGO_CFLAGS CGO_LDFLAGS

php_version=$("$buildroot/bin/php-config" --version)
pgo=/go/src/app/caddy/frankenphp/default.pgo
ldflags="-linkmode=external -extldflags '$extld'"
ldflags="$ldflags -X 'github.com/caddyserver/caddy/v2/modules/caddyhttp.ServerHeader=FrankenPHP Caddy'"
ldflags="$ldflags -X 'github.com/caddyserver/caddy/v2.CustomBinaryName=frankenphp'"
ldflags="$ldflags -X 'github.com/caddyserver/caddy/v2.CustomVersion=FrankenPHP v${FRANKENPHP_VERSION} PHP ${php_version} Caddy'"

cd "$FRANKENPHP_BUILD"
case "$mode" in
    print)
        printf 'CGO_ENABLED=%s\nCGO_CFLAGS=%s\nCGO_LDFLAGS=%s\n' "$CGO_ENABLED" "$CGO_CFLAGS" "$CGO_LDFLAGS"
        printf 'go build -buildmode=pie -trimpath -ldflags "%s" -tags=%s -o %s -pgo=%s .\n' \
            "$ldflags" "$tags" "$out" "$pgo"
        ;;
    warm)
        go build -buildmode=pie -trimpath -tags="$tags" -pgo="$pgo" \
            github.com/caddyserver/caddy/v2/cmd github.com/caddyserver/caddy/v2/modules/standard \
            github.com/dunglas/frankenphp/caddy github.com/dunglas/caddy-cbrotli \
            github.com/dunglas/mercure/caddy
        # dated ahead so that no embed layer copies the cache (see relink-local.sh)
        find "$(go env GOCACHE)" -type f -exec touch -d 2100-01-01 {} +
        echo "relink: Go build cache warm"
        ;;
    link)
        go build -buildmode=pie -trimpath -ldflags "$ldflags" -tags="$tags" -o "$out" -pgo="$pgo" .
        # spc keeps the debug info apart and strips the binary (UBB:127-153).
        strip --strip-unneeded "$out"
        echo "relink: $out ($(wc -c < "$out") bytes)"
        ;;
esac
