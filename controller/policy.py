"""Who may signal: requesters and their keys, from a policy file (TOML).

    [requesters."alice@h1"]
    key_files = ["alice.key"]    # signaling/keyfile.py; relative to this file

Requesters are named in it; a requester signs with any of its keys, by key id.
Without a policy file no requester is known, so on-path signaling is refused (code 203
for a signed request, 200 for an unsigned one). This first policy holds keys only;
what each requester may claim (addresses, modules, quotas) comes with its next part.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from signaling.errors import SignalingUsageError
from signaling.keyfile import KeyFileError, read_key
from signaling.values import check_requester


class PolicyError(ValueError):
    """The policy file cannot be used; the message says why and where."""


@dataclass(frozen=True)
class Policy:
    """Requesters' keys: requester id → key id → secret."""

    keys: Mapping[str, Mapping[int, bytes]] = field(default_factory=dict)

    def key(self, requester: str, key_id: int) -> bytes | None:
        """Return the secret of `requester`'s key `key_id`, or None when there is none."""
        return self.keys.get(requester, {}).get(key_id)


def load_policy(path: str | os.PathLike[str] | None) -> Policy:
    """Return the policy in the file at `path` (None: the empty policy); raise
    PolicyError saying what is wrong."""
    if path is None:
        return Policy()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"policy {path}: {exc}") from None
    if set(data) - {"requesters"}:
        raise PolicyError(f"policy {path}: unknown key(s) {sorted(set(data) - {'requesters'})}")
    requesters = data.get("requesters", {})
    if not isinstance(requesters, dict):
        raise PolicyError(f"policy {path}: 'requesters' is a table of requesters")
    keys: dict[str, dict[int, bytes]] = {}
    for requester, entry in requesters.items():
        where = f"policy {path}: requester {requester!r}"
        try:
            check_requester(requester)
        except SignalingUsageError as exc:
            raise PolicyError(f"{where}: {exc}") from None
        files = entry.get("key_files") if isinstance(entry, dict) else None
        if not isinstance(files, list) or not files or set(entry) != {"key_files"}:
            raise PolicyError(f"{where}: give 'key_files', a list of key files, and nothing else")
        keys[requester] = {}
        for name in files:
            try:
                key = read_key(path.parent / str(name))
            except KeyFileError as exc:
                raise PolicyError(f"{where}: {exc}") from None
            if key.key_id in keys[requester]:
                raise PolicyError(f"{where}: two keys have id {key.key_id}")
            keys[requester][key.key_id] = key.secret
    return Policy(keys)
