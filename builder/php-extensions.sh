#!/bin/sh
# Turn a PHP_EXTENSIONS list (the names static-php-cli uses, comma or space separated) into
# PHP ./configure flags for the local profile. PHP is configured with --disable-all, so the
# list is exactly what the binary gets (besides PHP's always-on core: Core, date, hash, json,
# pcre, random, Reflection, SPL, standard). opcache is a zend_extension PHP 8.2 only builds
# shared; the embed stage packs it with the app's dependencies (pack-deps.sh).
#   usage: php-extensions LIST      (prints the flags; an unknown name is an error)
set -eu
flags=""
xml=""
add() { flags="$flags $*"; }
for ext in $(printf '%s' "$1" | tr ',' ' '); do
    case "$ext" in
        bcmath | calendar | ctype | dom | exif | fileinfo | filter | ftp | intl | mbstring | \
            mysqlnd | opcache | pcntl | pdo | phar | posix | session | shmop | simplexml | \
            soap | sockets | sysvmsg | sysvsem | sysvshm | tokenizer | xml | xmlreader | \
            xmlwriter | redis)
            add "--enable-$ext" ;;
        bz2 | curl | gettext | gmp | iconv | mysqli | openssl | pgsql | sodium | sqlite3 | \
            xsl | zip | zlib)
            add "--with-$ext" ;;
        pdo_mysql | pdo_pgsql | pdo_sqlite)
            add "--with-$(printf '%s' "$ext" | tr _ -)" ;;
        gd) add --enable-gd --with-jpeg --with-webp --with-freetype ;;
        *)
            printf 'php-extensions: unknown extension "%s"; known: %s\n' "$ext" \
                "bcmath bz2 calendar ctype curl dom exif fileinfo filter ftp gd gettext gmp iconv intl mbstring mysqli mysqlnd opcache openssl pcntl pdo pdo_mysql pdo_pgsql pdo_sqlite pgsql phar posix redis session shmop simplexml soap sockets sodium sqlite3 sysvmsg sysvsem sysvshm tokenizer xml xmlreader xmlwriter xsl zip zlib" >&2
            exit 1 ;;
    esac
    case "$ext" in dom | simplexml | soap | xml | xmlreader | xmlwriter | xsl) xml=1 ;; esac
done
[ -z "$xml" ] || add --with-libxml
printf '%s\n' "${flags# }"
