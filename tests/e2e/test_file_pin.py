"""A secret read from a file keeps meaning the file the user configured.

keyward re-reads file: credentials, the vault, its key and the passphrase
file while `keyward run` serves (rotation, every 500 ms). When they lie in
folders the sandbox can write (its workspace), the files themselves are
covered in the sandbox but the folders holding them are not: CMD can rename
such a folder and put a symbolic link, or the folder of another credential,
in its place. keyward must go on reading the file it was configured with
(or fail closed), never attach another credential's secret on this
credential's route. A secret manager that renames a new file over the
token, in the same folder, is still picked up."""

import os

from conftest import policy_for
from kwtest import PLACEHOLDER, SECRET, SECRET2
from test_rotation import requests_around, rotations, wait_for
from test_secrets import run_kw, vault_policy


def private_file(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, text.encode())
    os.close(fd)


def two_file_credentials(sb, upstream):
    """Credential test from ws/secrets/test/token (SECRET) on /api/**, and
    credential other from ws/secrets/other/token (SECRET2) on /other/**: two
    token files with the same name, in folders the sandbox can rename."""
    for name, value in (("test", SECRET), ("other", SECRET2)):
        (sb.workspace / "secrets" / name).mkdir(parents=True)
        private_file(sb.workspace / "secrets" / name / "token", value + "\n")
    other_route = f"""  - host: {upstream.host}
    port: {upstream.port}
    paths: ["/other/**"]
    credential: other
    inject: bearer
    upstream_ca: {upstream.ca_file}
    allow_private: true
"""
    text = policy_for(upstream, extra_routes=other_route)
    text = text.replace("from: env:TEST_TOKEN\n", f"from: file:{sb.workspace}/secrets/test/token\n")
    text = text.replace("from: env:TEST_TOKEN2\n", f"from: file:{sb.workspace}/secrets/other/token\n")
    assert "env:TEST_TOKEN" not in text
    sb.policy.write_text(text)


def api_auths(upstream):
    return [r.header("Authorization") for r in upstream.requests if r.target.startswith("/api/")]


def swap_and_ask(sb, upstream, swap):
    """CMD asks once on test's route, swaps folders of the workspace, waits
    past a few rotation checks, and asks again."""
    url = f"https://api.test:{upstream.port}/api/x"
    curl = f'curl -sS -o /dev/null -w "%{{http_code}}\\n" -H "Authorization: Bearer $TEST_TOKEN" {url}'
    p = sb.run(["sh", "-c", f"{curl} && {swap} && sleep 1.6 && {curl}"])
    assert p.returncode == 0, p.out + p.err
    codes = p.out.split()
    assert codes[0] == "200", p.out + p.err
    assert codes[1] in ("200", "503"), p.out + p.err
    auths = api_auths(upstream)
    assert f"Bearer {SECRET2}" not in auths, "credential other was sent on the route of credential test"
    assert auths[0] == f"Bearer {SECRET}"
    if codes[1] == "200":
        assert auths[-1] == f"Bearer {SECRET}"
    assert not rotations(sb.records(), "allow"), "a swapped folder was taken for a rotation"
    return p


def test_folder_swapped_for_a_link_does_not_redirect_a_file_credential(sandbox_factory, upstream):
    sb = sandbox_factory("")
    two_file_credentials(sb, upstream)
    swap_and_ask(sb, upstream, 'mv secrets/test secrets/test.old && ln -s "$PWD/secrets/other" secrets/test')
    # the host sees the sandbox's swap: the path now leads to the other token
    assert (sb.workspace / "secrets" / "test").is_symlink()


def test_folder_swapped_for_another_credentials_folder_does_not_redirect(sandbox_factory, upstream):
    sb = sandbox_factory("")
    two_file_credentials(sb, upstream)
    swap_and_ask(sb, upstream, "mv secrets/test secrets/test.old && mv secrets/other secrets/test")
    assert (sb.workspace / "secrets" / "test" / "token").read_text() == SECRET2 + "\n"


def test_vault_folder_swap_does_not_redirect(sandbox_factory, upstream):
    """The same with the vault: a state directory in the workspace whose
    parent folder CMD swaps for a link to another state directory, whose
    vault holds a secret of the same name."""
    sb = sandbox_factory(vault_policy(upstream))
    mine, theirs = sb.workspace / "kw" / "state", sb.workspace / "kw2" / "state"
    assert run_kw(mine, "secret", "set", "test", input=SECRET).returncode == 0
    assert run_kw(theirs, "secret", "set", "test", input=SECRET2).returncode == 0
    sb.env["KEYWARD_HOME"] = str(mine)
    swap_and_ask(sb, upstream, 'mv kw kw.old && ln -s "$PWD/kw2" kw')


def test_token_renamed_over_by_the_host_is_picked_up(sandbox_factory, upstream):
    """Legitimate rotation of a file credential in a folder of the
    workspace: a new file written next to the token and renamed over it."""
    sb = sandbox_factory("")
    two_file_credentials(sb, upstream)

    def rotate():
        assert api_auths(upstream)[-1] == f"Bearer {SECRET}"
        folder = sb.workspace / "secrets" / "test"
        private_file(folder / ".token.new", SECRET2 + "\n")
        os.rename(folder / ".token.new", folder / "token")

    requests_around(sb, upstream, rotate)
    assert api_auths(upstream)[-1] == f"Bearer {SECRET2}"
    rec = rotations(sb.records())
    assert [(r["credential"], r["decision"]) for r in rec] == [("test", "allow")], rec
