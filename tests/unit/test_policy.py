"""The requester policy: loading a file (and every way it can be wrong), authorizing."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from controller.errors import (
    ModuleNotAllowed,
    NotEndpoint,
    NotOwner,
    PolicyError,
    QuotaExceeded,
    UnknownRequester,
)
from controller.match import parse_match
from controller.policy import (
    DEFAULT_MAX_FLOWS,
    DEFAULT_MAX_SESSIONS,
    OPERATOR,
    OPERATOR_ONLY,
    load_policy,
)
from controller.requests import ModuleSpec, SessionRequest
from controller.sessions import Session

ALICE_TOKEN = "alice-token-0123456789abcdef"
BOB_TOKEN = "bob-token-0123456789abcdef"
OPERATOR_TOKEN = "operator-token-0123456789abcdef"
KEY1 = bytes(range(32))
KEY2 = bytes(range(100, 132))
KEY3 = b"k" * 32


def digest(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


GOOD = f"""
# who may ask for what
[operator]
tokens = ["file:operator.token"]
keys = {{ 9 = "file:operator.key" }}

[requesters."alice@h1"]
keys = {{ 1 = "hex:{KEY1.hex()}", 2 = "base64:{base64.b64encode(KEY2).decode()}" }}
tokens = ["{digest(ALICE_TOKEN)}"]
prefixes = ["10.0.0.1/32", "fd00::/64"]
modules = ["counter", "null"]
max_sessions = 2
max_flows = 3

[requesters.bob]
tokens = ["{digest(BOB_TOKEN)}"]
prefixes = "any"
modules = "all"
"""


def write(folder: Path, text: str, name: str = "policy.toml", mode: int = 0o600) -> Path:
    path = folder / name
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    write(tmp_path, OPERATOR_TOKEN + "\n", "operator.token")
    (tmp_path / "operator.key").write_bytes(KEY3)
    (tmp_path / "operator.key").chmod(0o600)
    return tmp_path


@pytest.fixture
def policy(policy_dir: Path):
    return load_policy(write(policy_dir, GOOD))


def request(match: dict, *modules: str) -> SessionRequest:
    specs = tuple(ModuleSpec(m, ()) for m in modules or ("counter",))
    return SessionRequest(parse_match(match), specs, 60)


def session(sid: int, requester: str) -> Session:
    match = parse_match({"udp_dst": 9000 + sid})
    return Session(sid, 1, sid, match, (), 60, 0.0, 60.0, requester=requester)


# --- a good file ---------------------------------------------------------------------


def test_a_good_file_gives_each_requester_its_rights(policy, policy_dir):
    assert policy.configured and policy.source == policy_dir / "policy.toml"
    assert set(policy.requesters) == {OPERATOR, "alice@h1", "bob"}
    alice = policy.requester("alice@h1")
    assert [str(p) for p in alice.prefixes] == ["10.0.0.1/32", "fd00::/64"]
    assert alice.modules == {"counter", "null"}
    assert (alice.max_sessions, alice.max_flows) == (2, 3)
    bob = policy.requester("bob")
    assert bob.prefixes is None and bob.modules is None
    assert (bob.max_sessions, bob.max_flows) == (DEFAULT_MAX_SESSIONS, DEFAULT_MAX_FLOWS)
    operator = policy.requester(OPERATOR)
    assert operator.prefixes is None and operator.max_sessions is None


def test_keys_come_from_hex_base64_and_files(policy):
    assert policy.key("alice@h1", 1) == KEY1
    assert policy.key("alice@h1", 2) == KEY2
    assert policy.key(OPERATOR, 9) == KEY3
    assert policy.key("alice@h1", 3) is None
    assert policy.key("mallory", 1) is None


def test_rest_tokens_name_their_requester(policy):
    assert policy.rest_requester(ALICE_TOKEN) == "alice@h1"
    assert policy.rest_requester(BOB_TOKEN) == "bob"
    assert policy.rest_requester(OPERATOR_TOKEN) == OPERATOR  # read from a file, newline cut
    assert policy.rest_requester(OPERATOR_TOKEN + "\n") is None
    assert policy.rest_requester("") is None
    assert policy.rest_requester(digest(ALICE_TOKEN)) is None  # the digest is no token


def test_no_secret_shows_in_a_repr_or_the_json_view(policy):
    text = repr(policy) + str(policy.to_json())
    for secret in (KEY1.hex(), KEY2.hex(), KEY3.hex(), repr(KEY1), repr(KEY3), ALICE_TOKEN):
        assert secret not in text
    assert hashlib.sha256(ALICE_TOKEN.encode()).hexdigest() not in text


def test_the_json_view_shows_rights_and_what_each_holds(policy):
    view = policy.to_json([session(1, "alice@h1"), session(2, "alice@h1"), session(3, "bob")])
    by_id = {r["id"]: r for r in view["requesters"]}
    assert by_id["alice@h1"] == {
        "id": "alice@h1",
        "keys": [1, 2],
        "tokens": 1,
        "prefixes": ["10.0.0.1/32", "fd00::/64"],
        "modules": ["counter", "null"],
        "max_sessions": 2,
        "max_flows": 3,
        "sessions": 2,
        "flows": 2,
    }
    assert by_id["bob"]["prefixes"] == "any" and by_id["bob"]["modules"] == "all"
    assert by_id[OPERATOR]["max_sessions"] is None and by_id[OPERATOR]["sessions"] == 0


def test_a_policy_is_frozen(policy):
    with pytest.raises(AttributeError):
        policy.source = None
    with pytest.raises(TypeError):
        policy.requesters["mallory"] = policy.requesters["bob"]
    with pytest.raises(TypeError):
        policy.requester("alice@h1").keys[5] = KEY1


def test_no_policy_means_the_operator_alone(policy):
    assert not OPERATOR_ONLY.configured
    OPERATOR_ONLY.authorize(OPERATOR, request({"udp_dst": 1}, "anything"), [])
    with pytest.raises(UnknownRequester):
        OPERATOR_ONLY.authorize("alice@h1", request({"udp_dst": 1}), [])
    assert OPERATOR_ONLY.rest_requester(OPERATOR_TOKEN) is None
    assert OPERATOR_ONLY.key(OPERATOR, 1) is None


# --- bad files: each refused, saying where and what ----------------------------------

REQ = '[requesters.a]\ntokens = ["' + digest(ALICE_TOKEN) + '"]\n'
BAD = [
    ("[requesters.a\n", None, "not valid TOML"),
    ("requester = 1\n", 1, "requester: unknown key; known here: modules, operator, requesters"),
    ('[operator]\ntokens = []\nprefixes = "any"\n', 3, "operator.prefixes: unknown key"),
    (REQ + 'prefixes = "any"\nmodules = "all"\nmax_session = 3\n', 5, "max_session: unknown key"),
    (REQ + 'prefixes = "any"\n', 1, "'modules' is required"),
    (REQ + 'modules = "all"\n', 1, "'prefixes' is required"),
    ('[requesters.operator]\nprefixes = "any"\nmodules = "all"\n', 1, "operator's identity"),
    ('[requesters."a b"]\nprefixes = "any"\nmodules = "all"\n', 1, "printable ASCII"),
    ('requesters = "x"\n', 1, "must be a table of requesters"),
    ("[requesters]\na = 1\n", 2, "requesters.a: must be a table"),
    (REQ + 'prefixes = ["10.0.0.1/8"]\nmodules = "all"\n', 3, "has host bits set"),
    (REQ + 'prefixes = ["h1"]\nmodules = "all"\n', 3, "'h1' is not an address prefix"),
    (REQ + 'prefixes = "all"\nmodules = "all"\n', 3, 'must be "any" or a list'),
    (REQ + "prefixes = [10]\nmodules = \"all\"\n", 3, "a prefix is a string"),
    (REQ + 'prefixes = "any"\nmodules = "any"\n', 4, 'must be "all" or a list'),
    (REQ + 'prefixes = "any"\nmodules = ["Counter"]\n', 4, "'Counter' is not a module name"),
    (REQ + 'prefixes = "any"\nmodules = "all"\nmax_flows = -1\n', 5, "max_flows: must be"),
    (REQ + 'prefixes = "any"\nmodules = "all"\nmax_sessions = true\n', 5, "whole number"),
    (REQ + 'prefixes = "any"\nmodules = "all"\nmax_sessions = "3"\n', 5, "whole number"),
    ('[requesters.a]\nprefixes = "any"\nmodules = "all"\n', 1, "neither keys nor tokens"),
    (
        '[requesters.a]\nprefixes = "any"\nmodules = "all"\ntokens = ["' + ALICE_TOKEN + '"]\n',
        4,
        "never the token itself",
    ),
    (
        REQ.replace("sha256:", "sha256:x") + 'prefixes = "any"\nmodules = "all"\n',
        2,
        "64 lower-case hex digits",
    ),
    (REQ + 'prefixes = "any"\nmodules = "all"\ntokens = []\n', None, "Cannot overwrite"),
    ('[operator]\ntokens = "' + digest(ALICE_TOKEN) + '"\n', 2, "must be a list of tokens"),
    ('[operator]\nkeys = { 01 = "hex:' + KEY1.hex() + '" }\n', 2, "a key id is a decimal"),
    ('[operator]\nkeys = { 4294967296 = "hex:' + KEY1.hex() + '" }\n', 2, "0 to 4294967295"),
    ('[operator]\nkeys = { 1 = "hex:zz" }\n', 2, "not hexadecimal"),
    ('[operator]\nkeys = { 1 = "base64:***" }\n', 2, "not base64"),
    ('[operator]\nkeys = { 1 = "' + KEY1.hex() + '" }\n', 2, "'hex:...', 'base64:...'"),
    ('[operator]\nkeys = { 1 = "hex:00ff" }\n', 2, "the secret is 2 bytes; at least 16"),
    ("[operator]\nkeys = { 1 = 5 }\n", 2, "a secret is a string"),
    ('[operator]\nkeys = { 1 = "file:nothing.key" }\n', 2, "cannot read"),
    ('[operator.keys]\n1 = "file:nothing.key"\n', 2, "operator.keys.1: cannot read"),
    (
        '[operator]\ntokens = ["' + digest(ALICE_TOKEN) + '"]\n\n' + REQ
        + 'prefixes = "any"\nmodules = "all"\n',
        5,
        "a token of 'a' is also 'operator''s",
    ),
]  # fmt: skip


@pytest.mark.parametrize("text, line, words", BAD)
def test_a_bad_file_is_refused_with_its_line_and_what_is_wrong(tmp_path, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert message.startswith(f"policy file {path}"), message
    assert words in message, message
    if line is not None:
        assert f"{path} line {line}: " in message, message


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(PolicyError, match="cannot read it"):
        load_policy(tmp_path / "nothing.toml")


def test_inline_secrets_need_a_file_others_cannot_read(tmp_path):
    text = f'[operator]\nkeys = {{ 1 = "hex:{KEY1.hex()}" }}\n'
    with pytest.raises(PolicyError, match=r"readable by group or others \(mode 0644\)"):
        load_policy(write(tmp_path, text, mode=0o644))
    assert load_policy(write(tmp_path, text, mode=0o600)).key(OPERATOR, 1) == KEY1


def test_a_file_of_digests_may_be_readable(tmp_path):
    text = f'[operator]\ntokens = ["{digest(OPERATOR_TOKEN)}"]\n'
    assert load_policy(write(tmp_path, text, mode=0o644)).rest_requester(OPERATOR_TOKEN)


@pytest.mark.parametrize("spec", ['keys = { 1 = "file:k" }', 'tokens = ["file:k"]'])
def test_key_and_token_files_others_can_read_are_refused(tmp_path, spec):
    write(tmp_path, "x" * 32, "k", mode=0o640)
    with pytest.raises(PolicyError, match=r"k holds a secret but is readable.*chmod go-rw"):
        load_policy(write(tmp_path, f"[operator]\n{spec}\n"))


def test_a_short_token_file_is_refused(tmp_path):
    write(tmp_path, "short\n", "t")
    with pytest.raises(PolicyError, match="shorter than 16 bytes"):
        load_policy(write(tmp_path, '[operator]\ntokens = ["file:t"]\n'))


def test_an_empty_file_is_the_operator_alone_with_no_credentials(tmp_path):
    policy = load_policy(write(tmp_path, "# nobody yet\n"))
    assert policy.configured and list(policy.requesters) == [OPERATOR]
    assert policy.rest_requester(OPERATOR_TOKEN) is None


# --- authorize -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "match",
    [
        {"ipv4_src": "10.0.0.1", "udp_dst": 9000},
        {"ipv4_dst": "10.0.0.1", "udp_dst": 9000},
        {"ipv4_src": "10.0.0.2", "ipv4_dst": "10.0.0.1"},
        {"ipv6_src": "fd00::5", "udp_dst": 53},
        {"ipv6_dst": "fd00::/80"},
    ],
)
def test_a_flow_with_an_endpoint_in_the_prefixes_may_be_claimed(policy, match):
    policy.authorize("alice@h1", request(match), [])


@pytest.mark.parametrize(
    "match, words",
    [
        ({"ipv4_src": "10.0.0.2", "ipv4_dst": "10.0.0.3"}, "ipv4_src=10.0.0.2/32"),
        ({"ipv4_src": "10.0.0.0/24"}, "no endpoint of the flow"),  # wider than 10.0.0.1/32
        ({"ipv6_src": "fd00::/48"}, "no endpoint"),
        ({"ipv6_src": "fd01::1"}, "no endpoint"),
        ({"udp_dst": 9000}, "the match names no address"),
        ({"eth_src": "00:00:00:00:00:01"}, "names no address"),
    ],
)
def test_a_flow_outside_the_prefixes_is_not_the_requesters(policy, match, words):
    with pytest.raises(NotEndpoint, match=re.escape(words)):
        policy.authorize("alice@h1", request(match), [])


def test_any_lets_a_requester_claim_every_flow(policy):
    policy.authorize("bob", request({"udp_dst": 9000}, "flowmon"), [])
    policy.authorize("bob", request({"ipv4_src": "192.0.2.1"}), [])


def test_only_the_modules_allowed_may_be_used(policy):
    flow = {"ipv4_src": "10.0.0.1"}
    policy.authorize("alice@h1", request(flow, "null", "counter"), [])
    with pytest.raises(ModuleNotAllowed, match="may not use module 'mirror'"):
        policy.authorize("alice@h1", request(flow, "null", "mirror", "nat"), [])


def test_the_claim_is_checked_before_the_modules(policy):
    with pytest.raises(NotEndpoint):
        policy.authorize("alice@h1", request({"ipv4_src": "10.0.0.9"}, "mirror"), [])


def test_a_requester_holding_its_quota_of_sessions_is_refused(policy):
    flow = request({"ipv4_src": "10.0.0.1"})
    others = [session(i, "bob") for i in range(1, 10)]  # other requesters' do not count
    policy.authorize("alice@h1", flow, others + [session(10, "alice@h1")])
    with pytest.raises(QuotaExceeded, match=r"holds 2 session\(s\), its quota \(max_sessions 2\)"):
        policy.authorize(
            "alice@h1", flow, others + [session(10, "alice@h1"), session(11, "alice@h1")]
        )


def test_a_requester_holding_its_quota_of_flows_is_refused(tmp_path):
    text = REQ + 'prefixes = "any"\nmodules = "all"\nmax_sessions = 5\nmax_flows = 1\n'
    policy = load_policy(write(tmp_path, text))
    policy.authorize("a", request({"udp_dst": 1}), [])
    with pytest.raises(QuotaExceeded, match=r"holds 1 flow\(s\); 1 more.*max_flows 1"):
        policy.authorize("a", request({"udp_dst": 1}), [session(1, "a")])


def test_a_quota_of_zero_refuses_every_session(tmp_path):
    text = REQ + 'prefixes = "any"\nmodules = "all"\nmax_sessions = 0\n'
    with pytest.raises(QuotaExceeded):
        load_policy(write(tmp_path, text)).authorize("a", request({"udp_dst": 1}), [])


def test_the_operator_may_do_anything(policy):
    many = [session(i, OPERATOR) for i in range(1, 100)]
    policy.authorize(OPERATOR, request({"udp_dst": 1}, "anything"), many)


def test_an_unknown_requester_is_refused(policy):
    with pytest.raises(UnknownRequester, match="no requester 'mallory'"):
        policy.authorize("mallory", request({"ipv4_src": "10.0.0.1"}), [])


def test_only_the_owner_or_the_operator_may_change_a_session(policy):
    mine = session(1, "alice@h1")
    policy.check_owner("alice@h1", mine)
    policy.check_owner(OPERATOR, mine)
    with pytest.raises(NotOwner, match="session 1 is not requester 'bob''s"):
        policy.check_owner("bob", mine)
    with pytest.raises(UnknownRequester):
        policy.check_owner("mallory", mine)


@pytest.mark.parametrize(
    "match, endpoint",
    [
        ({"ipv4_src": "10.0.0.1", "ipv4_dst": "10.0.0.2"}, "10.0.0.1"),
        ({"ipv4_src": "10.0.0.2", "ipv4_dst": "10.0.0.1"}, "10.0.0.1"),
        ({"ipv6_dst": "fd00::7"}, "fd00::7"),
        ({"ipv6_dst": "fd00::/80"}, None),  # a prefix is no address to send a cookie to
    ],
)
def test_the_claimed_endpoint_is_the_single_address_in_the_prefixes(policy, match, endpoint):
    assert policy.claimed_endpoint("alice@h1", request(match)) == endpoint
    assert policy.claimed_endpoint("bob", request(match)) is None
