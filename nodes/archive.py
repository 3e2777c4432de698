"""Bundle archives: a module folder as one deterministic tar, and back again, safely.

A bundle is an uncompressed POSIX (ustar) tar of the module folder's regular files,
each under `<name>/` (the folder's name, which the manifest's name must equal), in
sorted order, with modification time 0, owner and group 0 without names, and mode
0644. Its bytes depend on nothing but the files' paths and contents, so the same
folder packs to the same bytes anywhere, and the archive's SHA-256 (`digest`) is the
bundle's identity: what a publisher signs, what the repository and sessions name,
what an agent checks before it loads. There is no compression because compressed
bytes depend on the compressor's version; bundles are small Python packages.

Left out when packing: `__pycache__` folders, `*.pyc` files and every name that
starts with a dot (`.git`, editor files). A link or anything else that is not a
regular file or folder is refused, as are more than MAX_MEMBERS files or more than
MAX_BUNDLE bytes of archive.

Reading (`read_archive`) trusts nothing: an archive that is not a plain tar, a member
that is a link, device, FIFO or anything but a regular file or folder, a path that is
absolute, climbs with `..`, is not printable ASCII, or lies outside the one top
folder, a path given twice, too many members or too many bytes: each is refused with
a message that names the member, and nothing is written. `unpack_bundle` then writes
the files into a new folder, reads the manifest and compiles every Python file (it
runs none), so a bundle with a bad manifest or a syntax error is refused whole.
"""

from __future__ import annotations

import ast
import hashlib
import io
import os
import re
import stat
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from nodes.bundle import NAME_RE, BundleError, Manifest, read_manifest

MAX_BUNDLE = 512 * 1024  # bytes of archive; the files in it are fewer still
MAX_MEMBERS = 256
MAX_DEPTH = 8  # folders below the top one
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}\Z")  # one path component
_SKIPPED_DIRS = {"__pycache__"}


class ArchiveError(BundleError):
    """An archive that is not a bundle, or a folder that cannot be packed into one."""


@dataclass(frozen=True)
class Archive:
    """A bundle's files as read from its archive: the top folder's name and each file's
    bytes by its path below it ("manifest.toml", "module.py", "lib/util.py")."""

    top: str
    files: Mapping[str, bytes]


def digest(data: bytes) -> str:
    """Return the hex SHA-256 of an archive: the bundle's identity."""
    return hashlib.sha256(data).hexdigest()


# --- packing -----------------------------------------------------------------------
def pack(folder: str | os.PathLike[str]) -> bytes:
    """Return the bundle archive of the module folder `folder` (see the module's doc).

    Raise ArchiveError naming what cannot be packed.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ArchiveError(f"{root} is not a folder")
    top = root.resolve().name
    if not NAME_RE.match(top):
        raise ArchiveError(f"{root}: a module folder is named as its module, {NAME_RE.pattern}")
    files = _collect(root)
    if not files:
        raise ArchiveError(f"{root} holds no file to pack")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for rel, path in files:
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
            if buffer.tell() > MAX_BUNDLE:
                raise ArchiveError(f"{root} packs to more than {MAX_BUNDLE} bytes")
    data = buffer.getvalue()
    if len(data) > MAX_BUNDLE:
        raise ArchiveError(f"{root} packs to {len(data)} bytes; a bundle may be {MAX_BUNDLE}")
    return data


def _collect(root: Path) -> list[tuple[str, Path]]:
    """Return (path below root, file) of every file to pack, sorted by that path."""
    found: list[tuple[str, Path]] = []
    for here, dirs, names in os.walk(root):
        base = Path(here)
        for name in list(dirs):
            if name.startswith(".") or name in _SKIPPED_DIRS:
                dirs.remove(name)
            elif (base / name).is_symlink():
                raise ArchiveError(f"{base / name} is a link; a bundle holds files only")
        for name in names:
            if name.startswith(".") or name.endswith(".pyc"):
                continue
            path = base / name
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):
                raise ArchiveError(f"{path} is not a regular file; a bundle holds files only")
            rel = path.relative_to(root).as_posix()
            _check_path(rel, f"{root}: {rel!r}")
            found.append((rel, path))
            if len(found) > MAX_MEMBERS:
                raise ArchiveError(f"{root} holds more than {MAX_MEMBERS} files")
    return sorted(found)


# --- reading -----------------------------------------------------------------------
def read_archive(data: bytes) -> Archive:
    """Return the files of the bundle archive `data`; raise ArchiveError when it is not
    one a node may unpack (see the module's doc)."""
    if len(data) > MAX_BUNDLE:
        raise ArchiveError(f"the bundle is {len(data)} bytes; at most {MAX_BUNDLE}")
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    except tarfile.TarError as exc:
        raise ArchiveError(
            f"not a bundle: {exc} (a bundle is an uncompressed tar: netserv module pack)"
        ) from None
    top: str | None = None
    files: dict[str, bytes] = {}
    total = 0
    with tar:
        try:
            for count, member in enumerate(tar, 1):
                if count > MAX_MEMBERS:
                    raise ArchiveError(f"the bundle has more than {MAX_MEMBERS} members")
                first, rel = _member_path(member)
                if top is None:
                    top = first
                elif first != top:
                    raise ArchiveError(
                        f"member {member.name!r} is outside the bundle's folder {top!r}"
                    )
                if member.isdir():
                    continue
                total += member.size
                if total > MAX_BUNDLE:
                    raise ArchiveError(f"the bundle's files exceed {MAX_BUNDLE} bytes")
                if rel in files:
                    raise ArchiveError(f"member {member.name!r} is in the bundle twice")
                files[rel] = _read_member(tar, member)
        except tarfile.TarError as exc:
            raise ArchiveError(f"the bundle is damaged: {exc}") from None
    if top is None or not files:
        raise ArchiveError("the bundle holds no file")
    return Archive(top, MappingProxyType(files))


def _member_path(member: tarfile.TarInfo) -> tuple[str, str]:
    """Return (top folder, path below it) of a member; raise ArchiveError for one that
    is not a plain file or folder, or whose path is not safe to write."""
    name = member.name
    shown = repr(name) if len(name) <= 80 else repr(name[:60]) + "..."
    if not (member.isreg() or member.isdir()):
        kind = (
            "a symbolic link"
            if member.issym()
            else "a hard link"
            if member.islnk()
            else "a device"
            if member.ischr() or member.isblk()
            else "a FIFO"
            if member.isfifo()
            else "not a regular file"
        )
        raise ArchiveError(f"member {shown} is {kind}; a bundle holds regular files only")
    if name.startswith("/"):
        raise ArchiveError(f"member {shown} has an absolute path")
    parts = name.rstrip("/").split("/") if member.isdir() else name.split("/")
    if ".." in parts:
        raise ArchiveError(f"member {shown} climbs out of the bundle with '..'")
    if not NAME_RE.match(parts[0]):
        raise ArchiveError(f"member {shown}: the top folder must be a module name")
    rel = "/".join(parts[1:])
    if member.isdir():
        if rel:
            _check_path(rel, f"member {shown}")
        return parts[0], rel
    if not rel:
        raise ArchiveError(f"member {shown} is a file outside the module's folder")
    _check_path(rel, f"member {shown}")
    return parts[0], rel


def _check_path(rel: str, where: str) -> None:
    parts = rel.split("/")
    if len(parts) > MAX_DEPTH + 1:
        raise ArchiveError(f"{where} lies deeper than {MAX_DEPTH} folders")
    for part in parts:
        if not _PART.match(part) or part in (".", ".."):
            raise ArchiveError(
                f"{where}: each part of a path is 1 to 100 of A-Z a-z 0-9 _ . + - "
                "and starts with a letter, digit or _"
            )


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    if handle is None:  # isreg() members always have one; kept for the type checker
        raise ArchiveError(f"member {member.name!r} cannot be read")
    data = handle.read(member.size + 1)
    if len(data) != member.size:
        raise ArchiveError(f"member {member.name!r} is cut short")
    return data


# --- unpacking -----------------------------------------------------------------------
def write_files(archive: Archive, dest: Path) -> Path:
    """Write the archive's files into `dest` (a folder made here, which must not exist);
    return the module folder, `dest/<top>`."""
    dest.mkdir(mode=0o700)
    folder = dest / archive.top
    for rel, data in archive.files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    return folder


def unpack_bundle(data: bytes, dest: Path) -> Manifest:
    """Unpack the bundle `data` into the new folder `dest`; return its manifest.

    Raise ArchiveError or BundleError, saying what is wrong, when the archive is not
    safe, the manifest is invalid, a Python file does not compile, or the entry file
    binds no name the manifest's entry names; `dest` may then hold part of the files,
    and the caller removes it.
    """
    archive = read_archive(data)
    folder = write_files(archive, dest)
    manifest = read_manifest(folder)
    for rel, source in sorted(archive.files.items()):
        if rel.endswith(".py"):
            tree = _compile(f"{archive.top}/{rel}", source)
            if rel == f"{manifest.entry_file}.py" and manifest.entry_class not in _bound(tree):
                raise BundleError(
                    f"{archive.top}/{rel} defines no {manifest.entry_class} at its top level "
                    f"(the manifest's entry {manifest.entry_file}:{manifest.entry_class})"
                )
    return manifest


def _compile(where: str, source: bytes) -> ast.Module:
    """Return the syntax tree of a Python file; raise BundleError when it does not
    compile. Nothing of it runs."""
    try:
        tree = ast.parse(source, where)
        compile(tree, where, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise BundleError(f"{where} line {exc.lineno}: syntax error: {exc.msg}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{where} is not Python source: {exc}") from None
    return tree


def _bound(tree: ast.Module) -> set[str]:
    """Return the names a module binds at its top level (also inside top-level if/try)."""
    names: set[str] = set()
    body = list(tree.body)
    while body:
        node = body.pop()
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.If | ast.Try):
            body += node.body + node.orelse
            body += getattr(node, "finalbody", [])
            for handler in getattr(node, "handlers", []):
                body += handler.body
    return names
