"""Bundle archives: the same folder packs to the same bytes; unsafe or broken bundles are
refused with a message that names the fault, and nothing is unpacked."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from nodes.archive import (
    MAX_BUNDLE,
    MAX_MEMBERS,
    ArchiveError,
    digest,
    pack,
    read_archive,
    unpack_bundle,
)
from nodes.bundle import BundleError
from tests.bundles import module_folder


def tar_of(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    """Return a tar made by hand of (header, data) members."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


GOOD = (member("tally/manifest.toml"), b'name = "tally"\nentry = "module:Tally"\n')
CODE = (member("tally/module.py"), b"class Tally: pass\n")


def test_the_same_folder_packs_to_the_same_bytes_whatever_its_times_owner_and_modes(tmp_path):
    first = module_folder(tmp_path / "a")
    (first / "lib").mkdir()
    (first / "lib" / "util.py").write_text("X = 1\n")
    second = tmp_path / "b" / "tally"
    shutil.copytree(first, second)
    os.utime(second / "module.py", (1, 1))
    os.chmod(second / "module.py", 0o755)
    os.chown(second / "manifest.toml", 1234, 1234)
    time.sleep(0.01)
    data = pack(first)
    assert pack(second) == data and pack(first) == data
    archive = read_archive(data)
    assert archive.top == "tally"
    assert list(archive.files) == ["lib/util.py", "manifest.toml", "module.py"]  # sorted
    for info in tarfile.open(fileobj=io.BytesIO(data)):
        assert (info.mtime, info.uid, info.gid, info.uname, info.mode) == (0, 0, 0, "", 0o644)
    (second / "module.py").write_text("changed = True\n")
    assert digest(pack(second)) != digest(data)  # the hash is the content's


def test_packing_leaves_out_caches_and_hidden_files(tmp_path):
    folder = module_folder(tmp_path)
    before = pack(folder)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "module.cpython-311.pyc").write_bytes(b"\0")
    (folder / "stale.pyc").write_bytes(b"\0")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref\n")
    (folder / ".module.py.swp").write_text("x")
    assert pack(folder) == before


@pytest.mark.parametrize("kind", ["link to a file", "link to a folder", "fifo"])
def test_a_folder_with_links_or_special_files_is_not_packed(tmp_path, kind):
    folder = module_folder(tmp_path)
    if kind == "link to a file":
        (folder / "passwd").symlink_to("/etc/passwd")
    elif kind == "link to a folder":
        (folder / "etc").symlink_to("/etc")
    else:
        os.mkfifo(folder / "pipe")
    with pytest.raises(ArchiveError, match="link|not a regular file"):
        pack(folder)


@pytest.mark.parametrize(
    "members, words",
    [
        ([(member("/tally/module.py"), b"x")], "absolute path"),
        ([GOOD, (member("tally/../../etc/cron.d/x"), b"x")], "climbs out"),
        ([GOOD, (member("tally/../tally/module.py"), b"x")], "climbs out"),
        ([GOOD, (member("tally/link", tarfile.SYMTYPE, "/etc/shadow"), b"")], "symbolic link"),
        ([GOOD, (member("tally/hard", tarfile.LNKTYPE, "tally/manifest.toml"), b"")], "hard link"),
        ([GOOD, (member("tally/dev", tarfile.CHRTYPE), b"")], "a device"),
        ([GOOD, (member("tally/disk", tarfile.BLKTYPE), b"")], "a device"),
        ([GOOD, (member("tally/fifo", tarfile.FIFOTYPE), b"")], "a FIFO"),
        ([GOOD, (member("other/module.py"), b"x")], "outside the bundle's folder"),
        ([GOOD, (member("tally/manifest.toml"), b"again")], "twice"),
        ([(member("tally"), b"x")], "outside the module's folder"),
        ([(member("module.py"), b"x")], "top folder must be a module name"),
        ([(member("Tally/module.py"), b"x")], "top folder must be a module name"),
        ([GOOD, (member("tally/bad name.py"), b"x")], "each part of a path"),
        ([GOOD, (member("tally/caf\u00e9.py"), b"x")], "each part of a path"),
        ([GOOD, (member("tally/-rf"), b"x")], "each part of a path"),
        ([GOOD, (member("tally/" + "/".join("d" * 10) + "/x.py"), b"x")], "deeper than"),
    ],
)
def test_unsafe_members_are_refused_and_nothing_is_written(tmp_path, members, words):
    data = tar_of(*members)
    with pytest.raises(ArchiveError, match=words):
        read_archive(data)
    with pytest.raises(ArchiveError, match=words):
        unpack_bundle(data, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_too_many_members_or_bytes_are_refused(tmp_path):
    many = [GOOD] + [(member(f"tally/f{i}.txt"), b"") for i in range(MAX_MEMBERS)]
    with pytest.raises(ArchiveError, match=f"more than {MAX_MEMBERS} members"):
        read_archive(tar_of(*many))
    with pytest.raises(ArchiveError, match="at most"):
        read_archive(b"\0" * (MAX_BUNDLE + 1))
    big = module_folder(tmp_path)
    (big / "data.bin").write_bytes(os.urandom(MAX_BUNDLE))
    with pytest.raises(ArchiveError, match="more than"):
        pack(big)


@pytest.mark.parametrize(
    "data, words",
    [
        (b"not a tar at all" * 100, "not a bundle"),
        (b"", "not a bundle"),
    ],
)
def test_what_is_not_a_plain_tar_is_refused(data, words):
    with pytest.raises(ArchiveError, match=words):
        read_archive(data)


def test_a_compressed_or_cut_archive_is_refused(tmp_path):
    data = pack(module_folder(tmp_path))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = member("tally/manifest.toml")
        info.size = len(GOOD[1])
        tar.addfile(info, io.BytesIO(GOOD[1]))
    with pytest.raises(ArchiveError, match="uncompressed tar"):
        read_archive(out.getvalue())
    with pytest.raises(ArchiveError, match="cut short|damaged|not a bundle"):
        read_archive(data[:700])


def test_a_good_bundle_unpacks_and_its_manifest_is_read(tmp_path):
    data = pack(module_folder(tmp_path / "src", version="2.1.0", manifest="observe_only = true\n"))
    manifest = unpack_bundle(data, tmp_path / "dest")
    assert (manifest.name, manifest.version, manifest.api, manifest.observe_only) == (
        "tally",
        "2.1.0",
        1,
        True,
    )
    assert manifest.path == tmp_path / "dest" / "tally"
    assert (manifest.path / "module.py").read_bytes() == read_archive(data).files["module.py"]


@pytest.mark.parametrize(
    "change, words",
    [
        ({"manifest": "bogus = 1\n"}, "unknown key"),
        ({"manifest": "[params.x]\ntype = 'complex'\n"}, "needs type"),
        ({"manifest": "api = 2\n"}, "api 2 is not one this node offers"),
        ({"manifest": "observe_only = 'yes'\n"}, "observe_only must be true or false"),
        ({"version": "1.0-beta"}, "version must be up to four dot-separated numbers"),
        ({"code": "def broken(:\n    pass\n"}, "module.py line 1: syntax error"),
        ({"code": "class Other: pass\n"}, "defines no Tally at its top level"),
        ({"code": "x = b'\\xff'\n\x00"}, "not Python source|syntax error"),
    ],
)
def test_a_bundle_with_a_bad_manifest_or_code_is_refused(tmp_path, change, words):
    data = pack(module_folder(tmp_path / "src", **change))
    with pytest.raises(BundleError, match=words):
        unpack_bundle(data, tmp_path / "dest")


def test_the_manifest_must_name_the_bundles_folder(tmp_path):
    folder = module_folder(tmp_path / "src")
    (folder / "manifest.toml").write_text('name = "other"\nentry = "module:Tally"\n')
    with pytest.raises(BundleError, match="differs from its folder"):
        unpack_bundle(pack(folder), tmp_path / "dest")


def test_an_entry_class_bound_by_import_or_in_a_top_level_if_is_found(tmp_path):
    code = "import sys\nif sys.version_info >= (3,):\n    class Tally: pass\n"
    unpack_bundle(pack(module_folder(tmp_path / "a", code=code)), tmp_path / "d1")
    code = "from nodes.module_api import ServiceModule as Tally\n"
    unpack_bundle(pack(module_folder(tmp_path / "b", code=code)), tmp_path / "d2")


def test_nothing_in_a_bundle_runs_while_it_is_checked(tmp_path):
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').write('x')\nclass Tally: pass\n"
    unpack_bundle(pack(module_folder(tmp_path / "src", code=code)), tmp_path / "dest")
    assert not marker.exists()


def test_a_folder_named_as_no_module_cannot_be_packed(tmp_path):
    folder = tmp_path / "Not-A-Name"
    folder.mkdir()
    (folder / "module.py").write_text("")
    with pytest.raises(ArchiveError, match="named as its module"):
        pack(folder)
    with pytest.raises(ArchiveError, match="not a folder"):
        pack(tmp_path / "missing")
    empty = Path(tmp_path / "empty")
    empty.mkdir()
    with pytest.raises(ArchiveError, match="no file"):
        pack(empty)
