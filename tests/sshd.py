"""A throwaway OpenSSH server on loopback, for tests that need a real machine to SSH into.

It runs the system's ``/usr/sbin/sshd`` with a complete config of its own (nothing from
``/etc/ssh`` leaks in), a fresh ed25519 host key, and a dedicated local user with a random
password and generated client keys. Needs root (to create the user and let sshd switch to it).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from machines.ssh import ConnectionSpec, HostKey
from tests.conftest import free_port, stop_process

TEST_USER = "tms-ssh-test"
SSHD_BINARY = "/usr/sbin/sshd"


class SSHDUnavailable(RuntimeError):
    """This machine cannot run the test sshd (no binary, not root, ...)."""


def _run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)


PASSWORD_FILE = Path("/root/.cache/tms-ssh-test-password")


def _shared_password() -> str:
    """One password per machine, kept where only root reads it: test sessions running at
    the same time (two checkouts, parallel runs) must not reset it under each other."""
    PASSWORD_FILE.parent.mkdir(parents=True, exist_ok=True)
    if not PASSWORD_FILE.exists():
        draft = PASSWORD_FILE.with_name(f"{PASSWORD_FILE.name}.{os.getpid()}")
        draft.write_text(secrets.token_urlsafe(18))
        draft.chmod(0o600)
        # A hard link publishes the whole file at once; if another session won, use its.
        with contextlib.suppress(FileExistsError):
            os.link(draft, PASSWORD_FILE)
        draft.unlink()
    return PASSWORD_FILE.read_text().strip()


def ensure_test_user(password: str) -> Path:
    """Create the test user if needed and give it ``password``; its home directory."""
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        made = _run("useradd", "--create-home", "--shell", "/bin/sh", TEST_USER)
        # Another test process may have created it in between: only a missing user is fatal.
        if made.returncode != 0 and _run("id", TEST_USER).returncode != 0:
            raise SSHDUnavailable(f"useradd {TEST_USER} failed: {made.stderr.strip()}") from None
    changed = _run("chpasswd", stdin=f"{TEST_USER}:{password}\n")
    if changed.returncode != 0:
        raise SSHDUnavailable(f"chpasswd failed: {changed.stderr.strip()}")
    home = Path(pwd.getpwnam(TEST_USER).pw_dir)
    if not home.is_dir():
        home.mkdir(parents=True)
        entry = pwd.getpwnam(TEST_USER)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    return home


def _openssh_private(key: ed25519.Ed25519PrivateKey, passphrase: str | None) -> str:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
    ).decode()


def _public_line(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey, comment: str) -> str:
    blob = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return f"{blob.decode()} {comment}"


@dataclass
class SSHD:
    """A running test sshd and everything a test needs to log in to it."""

    directory: Path
    host: str = "127.0.0.1"
    port: int = 0
    username: str = TEST_USER
    password: str = ""
    home: Path = Path()
    private_key: str = ""
    passphrase: str = ""
    private_key_with_passphrase: str = ""
    # A legacy PEM (PKCS#1) RSA key, also passphrase protected: the other format in the wild.
    rsa_private_key_pem: str = ""
    host_key: HostKey = field(default_factory=lambda: HostKey("", "", ""))
    host_key_pub_path: Path = Path()
    log_path: Path = Path()
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.directory / "sshd_config"

    def spec(self, **overrides: object) -> ConnectionSpec:
        """Password login with the host key pinned; overrides replace any field."""
        fields: dict[str, object] = {
            "hostname": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "host_key": self.host_key,
            "connect_timeout": 5.0,
            "retry_backoff": 0.2,
        }
        fields.update(overrides)
        return ConnectionSpec(**fields)  # type: ignore[arg-type]  # keys checked by the dataclass

    def _write_config(self) -> None:
        self.config_path.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.host}",
                    f"HostKey {self.directory / 'ssh_host_ed25519_key'}",
                    f"PidFile {self.directory / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.directory / 'authorized_keys'}",
                    "UsePAM no",
                    "PasswordAuthentication yes",
                    "PubkeyAuthentication yes",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin no",
                    f"AllowUsers {self.username}",
                    # The temp directory is not owned by the user; that is fine for a test.
                    "StrictModes no",
                    "Subsystem sftp internal-sftp",
                    "MaxStartups 64",
                    "MaxSessions 64",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )

    def start(self, timeout: float = 10.0) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._write_config()
        check = _run(SSHD_BINARY, "-t", "-f", str(self.config_path))
        if check.returncode != 0:
            raise SSHDUnavailable(f"sshd rejected its test config: {check.stderr.strip()}")
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [SSHD_BINARY, "-D", "-e", "-f", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise SSHDUnavailable(
                    f"sshd exited with {self._proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise SSHDUnavailable(f"sshd did not answer on port {self.port} in {timeout} s")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                return sock.recv(8).startswith(b"SSH-")
        except OSError:
            return False

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, timeout=10)
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


def why_unavailable() -> str | None:
    """Why this machine cannot run the test sshd, or None if it can."""
    if not Path(SSHD_BINARY).is_file():
        return f"{SSHD_BINARY} is missing (apt-get install openssh-server)"
    if os.geteuid() != 0:
        return "the sshd tests must run as root (they create a local test user)"
    for tool in ("useradd", "chpasswd", "ssh-keygen"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} is missing"
    return None


def start_sshd() -> SSHD:
    """Start a test sshd; raises SSHDUnavailable with the reason when it cannot."""
    reason = why_unavailable()
    if reason:
        raise SSHDUnavailable(reason)
    # Privilege separation directory; normally created by the distribution's service unit.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    # Under /tmp directly, not pytest's 0700 tree: sshd reads authorized_keys as the test user.
    directory = Path(tempfile.mkdtemp(prefix="tms-sshd-"))
    directory.chmod(0o755)

    password = _shared_password()
    home = ensure_test_user(password)

    host_key_path = directory / "ssh_host_ed25519_key"
    made = _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tms-test-host",
                "-f", str(host_key_path))  # fmt: skip
    if made.returncode != 0:
        raise SSHDUnavailable(f"ssh-keygen failed: {made.stderr.strip()}")
    host_pub = host_key_path.with_suffix(".pub")

    passphrase = secrets.token_urlsafe(12)
    plain = ed25519.Ed25519PrivateKey.generate()
    locked = ed25519.Ed25519PrivateKey.generate()
    legacy = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (directory / "authorized_keys").write_text(
        "\n".join(
            [
                _public_line(plain, "tms-test-plain"),
                _public_line(locked, "tms-test-passphrase"),
                _public_line(legacy, "tms-test-rsa-pem"),
                "",
            ]
        )
    )
    (directory / "authorized_keys").chmod(0o644)

    server = SSHD(
        directory=directory,
        password=password,
        home=home,
        private_key=_openssh_private(plain, None),
        passphrase=passphrase,
        private_key_with_passphrase=_openssh_private(locked, passphrase),
        rsa_private_key_pem=legacy.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.BestAvailableEncryption(passphrase.encode()),
        ).decode(),
        host_key=HostKey.from_openssh_line(host_pub.read_text()),
        host_key_pub_path=host_pub,
        log_path=directory / "sshd.log",
    )
    # free_port() can race with another process taking the port: try a few.
    for _ in range(3):
        server.port = free_port()
        try:
            server.start()
            return server
        except SSHDUnavailable:
            if "Address already in use" not in server.log_path.read_text():
                raise
    raise SSHDUnavailable("no free loopback port for sshd after 3 tries")


def remove_sshd(server: SSHD) -> None:
    server.stop()
    shutil.rmtree(server.directory, ignore_errors=True)
