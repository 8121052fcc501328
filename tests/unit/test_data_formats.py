"""The formats data operations read and write, without an engine: the backup manifest, env files
as compose reads them, volume archives a restore may unpack, SCRAM verifiers (against RFC 7677's
vector), the bundle's volumes from a captured `docker compose config`, and what PostgreSQL's
tools print. Milliseconds each."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import tarfile
from pathlib import Path

import pytest
from fakes import compose_config

from tasks.core.errors import BackupError, ConfigError, FormatError
from tasks.formats import backup_manifest, compose_volumes, env_file, pg_output, scram
from tasks.formats import volume_archive as va

# --- the backup manifest ------------------------------------------------------------------------

SHA = "a" * 64


def manifest(**change: object) -> dict[str, object]:
    data: dict[str, object] = {
        "tool": "durango-backup/2",
        "project": "demo",
        "kind": "backup",
        "sequence": 4,
        "created": "2026-01-01T00:00:00+00:00",
        "generation": 0,
        "database": {
            "bundled": True, "name": "app", "dump_started": "", "pg_dump": "15.18",
            "server": "15.18", "size": 100, "schemas": ["public"],
            "tables": {"public.actions": 12, 'extra."We ird"': 2},
        },
        "volumes": {"app-uploads": {"name": "demo_app-uploads", "file": "volumes/app-uploads.tar",
                                    "entries": 3, "bytes": 10}},
        "images": {"app": "sha256:" + "b" * 64},
        "source_commit": None,
        "files": {"database.dump": {"sha256": SHA, "size": 5},
                  "volumes/app-uploads.tar": {"sha256": SHA, "size": 7}},
    }  # fmt: skip
    data.update(change)
    return data


def test_a_manifest_reads_back_what_was_written() -> None:
    read = backup_manifest.read(json.dumps(manifest()))
    assert read.sequence == 4 and read.database.tables['extra."We ird"'] == 2
    assert backup_manifest.read(backup_manifest.dumps(read)) == read


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"files": {"/etc/passwd": {"sha256": SHA, "size": 1}}}, "is not inside the backup"),
        ({"files": {"../x": {"sha256": SHA, "size": 1}}}, "is not inside the backup"),
        (
            {
                "volumes": {
                    "app-uploads": {"file": "/tmp/x.tar", "name": "", "entries": 0, "bytes": 0}
                }
            },
            "is not inside the backup",
        ),
        ({"sequence": "4"}, "sequence is missing or not a int"),
        ({"sequence": True}, "sequence is missing or not a int"),
        ({"kind": "weekly"}, "kind must be one of"),
        ({"tool": "durango-backup/1"}, "older version"),
        ({"images": {"app": "orangescrum-ee:latest"}}, "not an image ID"),
    ],
)
def test_a_manifest_is_refused_in_one_line(change: dict[str, object], words: str) -> None:
    with pytest.raises(FormatError, match=words):
        backup_manifest.read(json.dumps(manifest(**change)))


def test_a_table_name_that_is_not_one_never_reaches_sql() -> None:
    database = dict(manifest()["database"])  # type: ignore[call-overload]
    database["tables"] = {"public.x; DROP TABLE y": 1}
    with pytest.raises(FormatError, match="malformed"):
        backup_manifest.read(json.dumps(manifest(database=database)))


def test_peek_orders_older_and_damaged_backups_before_numbered_ones() -> None:
    older = backup_manifest.peek(json.dumps({"tool": "durango-backup/1", "kind": "pre-restore",
                                             "images": {"app": "sha256:1"}}))  # fmt: skip
    assert older == backup_manifest.Peek("pre-restore", 0, ("sha256:1",))
    assert backup_manifest.peek('{"tool": "someone-else"}') is None
    assert backup_manifest.peek("not json") is None


# --- env files, read as compose reads them --------------------------------------------------------


def test_env_file_values_as_compose_reads_them() -> None:
    text = (
        "# comment\nexport A=1\nB = two words # trailing\nC='lit $HOME'\n"
        'D="x\\ny"\nE=pa$$word\n\nF=\n'
    )
    found = env_file.parse(text, "t.env")
    assert found.values == {"A": "1", "B": "two words", "C": "lit $HOME", "D": "x\ny",
                            "E": "pa$word", "F": ""}  # fmt: skip
    found.check()  # `$$` and single quotes are what compose passes on unchanged


@pytest.mark.parametrize("value", ["pa$word", "a$$$b", '"x$Y"', "${X}"])
def test_a_lone_dollar_is_refused_naming_the_key(value: str) -> None:
    found = env_file.parse(f"OK=1\nDB_PASSWORD={value}\n", "orangescrum-ee/.env")
    with pytest.raises(ConfigError) as refused:
        found.check()
    assert "DB_PASSWORD contains `$`" in str(refused.value) and "\n" not in str(refused.value)


def test_a_line_that_is_not_name_value_is_named() -> None:
    with pytest.raises(FormatError, match="line 2"):
        env_file.parse("A=1\njust words\n")


@pytest.mark.parametrize("value", ["a\nDB_HOST=evil", "x y", "a$b", "#"])
def test_a_value_this_tool_writes_must_read_back_the_same(value: str) -> None:
    with pytest.raises(ConfigError, match="APP_URL"):
        env_file.line("APP_URL", value)
    assert (
        env_file.line("APP_URL", "https://acme.example.com") == "APP_URL=https://acme.example.com"
    )


# --- SCRAM verifiers ---------------------------------------------------------------------------


def test_the_verifier_answers_rfc_7677s_exchange() -> None:
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    client_key, stored_key, server_key = scram.keys("pencil", salt)
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth = (f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
            f"c=biws,r={nonce}").encode()  # fmt: skip
    signature = hmac.new(stored_key, auth, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    assert base64.b64encode(proof).decode() == "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    server = hmac.new(server_key, auth, hashlib.sha256).digest()
    assert base64.b64encode(server).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    verifier = scram.verifier("pencil", salt)
    assert verifier.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    assert "pencil" not in verifier


def test_every_verifier_has_its_own_salt() -> None:
    assert scram.verifier("same") != scram.verifier("same")


# --- the bundle's volumes, from compose's own reading ------------------------------------------


def test_volumes_come_from_compose_config_with_the_live_names() -> None:
    config = compose_config()
    found = compose_volumes.volumes(config)
    assert found["app-uploads"] == "demo_app-uploads_g3"  # switched by the live state
    assert found["db-data"] == "demo_db-data"
    assert set(found) == {"app-uploads", "app-logs", "app-files", "app-sessions", "app-cache",
                          "db-data"}  # fmt: skip
    assert compose_volumes.mounted(config, "orangescrum-app")["app-uploads"] == "/data/uploads"
    assert "db-data" not in compose_volumes.mounted(config, "orangescrum-app")


def test_a_volume_without_a_name_gets_composes_default() -> None:
    assert compose_volumes.volumes({"name": "p", "volumes": {"v": {}}}) == {"v": "p_v"}
    with pytest.raises(FormatError):
        compose_volumes.volumes({"volumes": {}})


# --- what PostgreSQL's tools print --------------------------------------------------------------

LISTING = """;
;     Dumped from database version: 15.18 (Debian 15.18-0+deb12u1)
;     Dumped by pg_dump version: 15.18 (Debian 15.18-0+deb12u1)
;
6; 2615 16385 SCHEMA - extra u
215; 1259 16386 TABLE extra We ird u
216; 1259 16389 TABLE public t u
3343; 0 16386 TABLE DATA extra We ird u
"""


def test_the_dumps_schemas_and_maker_from_its_table_of_contents() -> None:
    assert pg_output.schemas(LISTING) == ("extra", "public")
    assert pg_output.dumped_by(LISTING) == (15, 18)
    assert pg_output.version("pg_restore (PostgreSQL) 16.4") == (16, 4)


def test_a_full_read_counts_rows_and_needs_the_exit_marker() -> None:
    done = pg_output.full_read('rows public.t 2\nrows extra."We ird" 0\nexit 0\n')
    assert done == pg_output.FullRead(0, {"public.t": 2, 'extra."We ird"': 0})
    assert pg_output.full_read("rows public.t 2\n").status is None  # cut off: never counts
    assert pg_output.full_read("open public.t\nexit 1\n").unterminated == "public.t"


def test_free_space_from_df() -> None:
    text = "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/vda 10 5 4096 50% /\n"
    assert pg_output.df_available(text) == 4096 * 1024


# --- volume archives a restore may unpack --------------------------------------------------------


def archive(tmp_path: Path, *members: tuple[str, str, str]) -> Path:
    """(name, type f/d/l/h/p, data or link target) -> a tar like the engine's of /volume."""
    path = tmp_path / "app-uploads.tar"
    with tarfile.open(path, "w") as tar:
        for name, kind, data in (("volume", "d", ""), *members):
            info = tarfile.TarInfo(name)
            info.uid = info.gid = 10001
            info.mode = 0o755 if kind == "d" else 0o640
            info.type = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE,
                         "h": tarfile.LNKTYPE, "p": tarfile.FIFOTYPE}[kind]  # fmt: skip
            if kind in "lh":
                info.linkname = data
            payload = data.encode() if kind == "f" else b""
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ((("volume/leak", "l", "/data/tmp/orangescrum-entrypoint/pgpass"),), "links outside"),
        ((("volume/etc", "l", "../../etc"),), "links outside"),
        ((("volume/d", "d", ""), ("volume/d/up", "l", "../../x")), "links outside"),
        ((("volume/etc", "l", "sub"), ("volume/etc/evil", "f", "x")), "through a symbolic link"),
        (
            (("volume/a", "d", ""), ("volume/a/l1", "l", ".."), ("volume/l2", "l", "a/l1/../..")),
            "through another link",
        ),
        ((("volume/../etc/evil", "f", "x"),), "outside the volume"),
        ((("/volume/x", "f", "x"),), "outside the volume"),
        ((("other/x", "f", "x"),), "outside the volume"),
        ((("volume/pipe", "p", ""),), "device or FIFO"),
        ((("volume/h", "h", "/etc/passwd"),), "links outside"),
        ((("volume/x", "f", "1"), ("volume/x", "f", "2")), "appears twice"),
    ],
)
def test_an_archive_member_a_restore_would_refuse(
    tmp_path: Path, members: tuple[tuple[str, str, str], ...], why: str
) -> None:
    with pytest.raises(BackupError, match=why):
        va.check(archive(tmp_path, *members))


def test_a_setuid_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("volume/run")
        info.mode = 0o4755
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(BackupError, match="setuid"):
        va.check(path)


def test_links_inside_the_volume_and_the_listing_an_unpack_must_show(tmp_path: Path) -> None:
    path = archive(
        tmp_path,
        ("volume/a", "d", ""),
        ("volume/a/f", "f", "hello"),
        ("volume/a/same", "h", "volume/a/f"),
        ("volume/rel", "l", "a/f"),
        ("volume/a/up", "l", "../rel-target"),
    )
    listing = va.check(path)
    digest = hashlib.sha256(b"hello").hexdigest()
    assert va.lines(listing) == [
        ".|d|755|10001|10001|0|",
        "a|d|755|10001|10001|0|",
        f"a/f|f|640|10001|10001|5|{digest}",
        f"a/same|f|640|10001|10001|5|{digest}",
        "a/up|l|777|10001|10001|0|../rel-target",
        "rel|l|777|10001|10001|0|a/f",
    ]
    assert va.size(listing) == 10
    helper = (
        "@stat\n.|41ed|10001|10001|4096\n./a|41ed|10001|10001|4096\n./a/f|81a0|10001|10001|5\n"
        "./a/same|81a0|10001|10001|5\n./a/up|a1ff|10001|10001|12\n./rel|a1ff|10001|10001|3\n"
        f"@sum\n{digest}  ./a/f\n{digest}  ./a/same\n@link\n./a/up|../rel-target\n./rel|a/f\n"
    )
    assert va.lines(va.from_volume(helper)) == va.lines(listing)


def test_a_backup_lists_what_a_restore_would_refuse_without_failing(tmp_path: Path) -> None:
    listing, problems = va.scan(archive(tmp_path, ("volume/leak", "l", "/etc/passwd")))
    assert problems == ["volume/leak links outside the volume (/etc/passwd)"]
    assert "leak" not in listing
