"""The install secret (``parley.auth.secret``), in process: created once with mode 0600, read
back unchanged, unsafe or short files refused, and concurrent first starts agree on one key."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from parley.auth import secret
from parley.auth.secret import MIN_KEY_BYTES, SecretFileError, install_secret


def test_first_call_creates_a_private_key_later_calls_read_it(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"  # created if missing
    key = install_secret(data)
    path = data / "jwt-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key.encode()) >= MIN_KEY_BYTES and len(key) == 86  # token_urlsafe(64)
    assert path.read_text() == key + "\n"
    assert install_secret(data) == key
    assert [p.name for p in data.iterdir()] == ["jwt-secret"]  # no temporary file left behind


def test_keys_differ_between_installs(tmp_path: Path) -> None:
    assert install_secret(tmp_path / "a") != install_secret(tmp_path / "b")


def test_mode_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        install_secret(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "jwt-secret").stat().st_mode) == 0o600


def test_an_operator_written_key_is_used_whitespace_stripped(tmp_path: Path) -> None:
    path = tmp_path / "jwt-secret"
    path.write_text("k" * 64 + "\n")
    path.chmod(0o400)
    assert install_secret(tmp_path) == "k" * 64


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644])
def test_a_file_others_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "jwt-secret"
    path.write_text("k" * 86)
    path.chmod(mode)
    with pytest.raises(SecretFileError, match="chmod 600"):
        install_secret(tmp_path)
    assert path.read_text() == "k" * 86  # left as it was


@pytest.mark.parametrize("content", ["", "\n", "k" * (MIN_KEY_BYTES - 1), " " + "k" * 40 + " " * 40])
def test_a_short_key_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "jwt-secret"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(SecretFileError, match=f"fewer than {MIN_KEY_BYTES}"):
        install_secret(tmp_path)


def test_not_a_regular_file_or_not_text_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir" / "jwt-secret").mkdir(parents=True)
    with pytest.raises(SecretFileError):
        install_secret(tmp_path / "dir")
    target = tmp_path / "elsewhere"
    target.write_text("k" * 86)
    target.chmod(0o600)
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "jwt-secret").symlink_to(target)
    with pytest.raises(SecretFileError, match="cannot read"):
        install_secret(tmp_path / "link")
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "jwt-secret").write_bytes(b"\xff" * 100)
    (binary / "jwt-secret").chmod(0o600)
    with pytest.raises(SecretFileError, match="UTF-8"):
        install_secret(binary)


def test_the_loser_of_a_race_reads_the_winners_key(tmp_path: Path) -> None:
    """Publishing when another start already published keeps the first key."""
    winner = install_secret(tmp_path)
    secret._publish(tmp_path / "jwt-secret", "z" * 86 + "\n")
    assert install_secret(tmp_path) == winner
    assert [p.name for p in tmp_path.iterdir()] == ["jwt-secret"]


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    starters = 8
    barrier = threading.Barrier(starters)
    keys: list[str] = []
    errors: list[BaseException] = []

    def start(i: int) -> None:
        barrier.wait()
        try:
            keys.append(install_secret(tmp_path / "data"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(starters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors and len(keys) == starters
    assert len(set(keys)) == 1
    assert (tmp_path / "data" / "jwt-secret").read_text().strip() == keys[0]


def test_an_unwritable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(SecretFileError, match="PARLEY_JWT_SECRET"):
            install_secret(tmp_path)
    finally:
        tmp_path.chmod(0o700)
