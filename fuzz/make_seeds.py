#!/usr/bin/env python3
"""Writes the hand-made seed inputs into fuzz/corpus/<target>/seed-*.

Run from anywhere: python3 fuzz/make_seeds.py. Seeds are deterministic; re-running rewrites
the same files. Minimised corpora from `cargo fuzz cmin` sit beside them (sha1 names).
"""
import base64
import hashlib
import hmac
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Must match CONFIG in fuzz_targets/cookie.rs.
SECRET = b"fuzz-secret-0123456789abcdef0123456789abcdef"
NAME = "__Host-sessiongate"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sign(session_id, secret=SECRET, name=NAME):
    """src/session/cookie.rs: base64url(id) "." base64url(HMAC(secret, len(name) || name || id))."""
    mac = hmac.new(secret, struct.pack(">Q", len(name)) + name.encode() + session_id, hashlib.sha256)
    return b64(session_id) + "." + b64(mac.digest())


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def cookie():
    ids = [bytes(32), b"\xff" * 32, bytes(range(32)), hashlib.sha256(b"seed").digest()]
    for i, sid in enumerate(ids):
        v = sign(sid)
        write("cookie", f"signed-value-{i}", v)
        write("cookie", f"signed-pair-{i}", f"{NAME}={v}")
        write("cookie", f"signed-among-others-{i}", f"theme=dark; {NAME}={v}; lang=en")
    v = sign(ids[3])
    idp, tag = v.split(".")
    # Near misses: non-canonical trailing bits, padding, standard alphabet, wrong lengths,
    # other key / other name.
    last = idp[-1]
    alt = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    bumped = alt[(alt.index(last) + 1) % 64]
    write("cookie", "noncanonical-id-bits", f"{NAME}={idp[:-1]}{bumped}.{tag}")
    bumped_tag = alt[(alt.index(tag[-1]) + 1) % 64]
    write("cookie", "noncanonical-tag-bits", f"{NAME}={idp}.{tag[:-1]}{bumped_tag}")
    write("cookie", "padded", f"{NAME}={idp}=.{tag}=")
    write("cookie", "std-alphabet", f"{NAME}=" + v.replace("-", "+").replace("_", "/"))
    write("cookie", "truncated", f"{NAME}={v[:-1]}")
    write("cookie", "extended", f"{NAME}={v}A")
    write("cookie", "two-dots", f"{NAME}={idp}..{tag[1:]}")
    write("cookie", "other-secret", f"{NAME}=" + sign(ids[3], secret=b"x" * 32))
    write("cookie", "other-name", f"{NAME}=" + sign(ids[3], name="sessiongate"))
    # The issued session (@SID@ is replaced by its cookie inside the target).
    write("cookie", "issued", f"{NAME}=@SID@")
    write("cookie", "issued-among-others", f"a=1; {NAME}=@SID@; b=2")
    write("cookie", "issued-spaces", f"  {NAME} = @SID@ ;")
    write("cookie", "issued-twice", f"{NAME}=@SID@; {NAME}=@SID@")
    write("cookie", "issued-and-forged", f"{NAME}=@SID@; {NAME}={v}")
    write("cookie", "issued-two-headers", f"a=1\n{NAME}=@SID@\nb=2")
    write("cookie", "issued-twice-two-headers", f"{NAME}=@SID@\n{NAME}=x")
    write("cookie", "issued-non-text-header", f"{NAME}=@SID@\nx=\xe9".encode("latin-1"))
    write("cookie", "issued-unprefixed", "sessiongate=@SID@")
    write("cookie", "issued-lowercase", "__host-sessiongate=@SID@")
    write("cookie", "issued-quoted", f'{NAME}="@SID@"')
    write("cookie", "issued-tab", f"{NAME}=@SID@\t")
    # Malformed.
    for name, data in [
        ("empty", b""),
        ("name-only", NAME.encode()),
        ("empty-value", f"{NAME}=".encode()),
        ("semicolons", b";;; ;"),
        ("equals", b"==="),
        ("no-name", b"=@SID@"),
        ("nul", b"a=\x00b"),
        ("non-utf8", b"a=\xff\xfe; " + NAME.encode() + b"=@SID@"),
        ("utf8", f"caf\u00e9=cr\u00e8me; {NAME}=\u00e9".encode()),
        ("bytes-34", bytes(range(34))),
        ("bytes-34-ff", b"\xff" * 34),
    ]:
        write("cookie", name, data)


def return_path():
    path = os.path.join(ROOT, "tests", "data", "oauth2-proxy-openredirects.txt")
    with open(path, "rb") as f:
        lines = [l for l in f.read().split(b"\n") if l.strip()]
    for i, line in enumerate(lines):
        write("return_path", f"oauth2-proxy-{i:03}", line)
    # From the unit tests in src/auth/redirect.rs.
    for i, s in enumerate([
        "/", "/app", "/app/x?y=1&z=%2F", "/a//b", "/%2F%2Fevil.com", "/x#frag",
        "", "//evil.com", "/\\evil.com", "\\\\evil.com", "https://evil.com", "https:evil.com",
        "javascript:alert(1)", "/\t/evil.com", "/\n/evil.com", "/x\r\nSet-Cookie: a=b",
        "/ /evil.com", "/\u00e9", "evil.com", "/a\\b", "/" + "a" * 2047, "/" + "a" * 2048,
    ]):
        write("return_path", f"unit-{i:02}", s)


def path():
    # From the unit tests in src/paths.rs (request targets, query after '?').
    targets = [
        "/", "/a%20b?q=%2F&x=%7e", "/%41", "/caf%C3%A9",
        "/%zz", "/a%2", "/a%", "/x?y=%G0", "/a%00b", "/a%0d%0aX:1", "/%7F", "/?a=%1b", "*", "",
        "example.com:443",
        "/a/b.css?q=../x", "/a/.well-known", "/a..b/c", "/x/", "/a//b",
        "/%7Euser/%61", "/a%2fb", "/a%2Fb/%3b", "/caf%c3%a9", "/public/../admin",
        "/public/%2e%2e/admin", "/public/%2E%2e/admin", "/public/.%2e/admin", "/PUBLIC/../admin",
        "/a/./b/.", "/a/b/..", "/..", "/../../etc/passwd", "/.", "/a/.b/./c",
        "/public//../admin", "/%2e%2e/%2e",
        "/public", "/public/", "/public/a.css", "/static/x.js", "/p%75blic/a.css",
        "/static/./x.js", "/admin/../public/x",
        "/publicity", "/admin", "/public/..%2fadmin", "/public\\..\\admin", "/public/..%5cadmin",
        "/public;x/../admin", "/public/..;/admin", "/PUBLIC/a", "/static", "/admin?x=/public",
        "/public/%2E%2E/admin",
    ]
    for i, t in enumerate(targets):
        write("path", f"unit-{i:02}", t)


def config():
    with open(os.path.join(ROOT, "tests", "common", "mod.rs")) as f:
        assert "fn config_toml" in f.read()
    # tests/it/common/mod.rs config_toml() with its test user's argon2id hash.
    h = "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    base = f'''
[server]
listen = "127.0.0.1:0"
shutdown_timeout = "5s"

[upstream]
url = "http://127.0.0.1:3000"
{{upstream_extra}}

[session]
secret = "test-secret-0123456789abcdef0123456789abcdef"
{{extra}}

[[users]]
name = "alice"
password_hash = "{h}"
'''
    variants = {
        "test-default": ("", ""),
        "test-insecure": ("", 'secure = false\ncookie_name = "sid"'),
        "test-timeouts": ('timeout = "2s"', 'idle_timeout = "1s"\nabsolute_timeout = "3s"\ncookie_max_age = "1h"\nsweep_interval = "500ms"'),
        "test-identity": ('identity_header = "X-Remote-User"', 'same_site = "strict"'),
        "test-https-upstream": ('tls_server_name = "app.internal"', ""),
    }
    for name, (up, extra) in variants.items():
        text = base.replace("{upstream_extra}", up).replace("{extra}", extra)
        if name == "test-https-upstream":
            text = text.replace("http://127.0.0.1:3000", "https://app.example:8443")
        write("config", name, text)
    example = os.path.join(ROOT, "config", "sessiongate.example.toml")
    with open(example) as f:
        ex = f.read()
    write("config", "example", ex)
    # The example with every optional key switched on (as far as no file is needed).
    full = f'''
[server]
listen = "[::1]:8443"
workers = 2
shutdown_timeout = "10s"
header_read_timeout = "30s"
handshake_timeout = "10s"
max_connections = 100
trusted_proxies = ["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"]

[upstream]
url = "http://app.internal:3000/"
timeout = "1h 30m"
identity_header = "X-Forwarded-User"

[session]
secret = "at-least-32-bytes-of-random-text-go-here"
cookie_name = "__Secure-gate"
secure = true
same_site = "LAX"
idle_timeout = "30m"
absolute_timeout = "12h"
cookie_max_age = "7d"
sweep_interval = "1m"

[auth]
prefix = "/.sessiongate"
public_paths = ["/static/", "/favicon.ico", "/public"]
login_workers = 2
login_queue = 64
max_failures = 5
failure_window = "1m"

[[users]]
name = "admin"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$sptmRcee/aS3bM2AWU87iQ$owQHDg8ZVj0jHkUKCghk3vLNiVfHhgc0coSspyKLmXQ"

[[users]]
name = "bob the builder"
password_hash = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"
'''
    write("config", "full", full)
    # Invalid ones near the edges of validation.
    write("config", "tls-missing-files", full.replace("[upstream]", '[server.tls]\ncert = "/nonexistent/cert.pem"\nkey = "/nonexistent/key.pem"\n\n[upstream]'))
    write("config", "hsts-without-tls", full.replace("workers = 2", 'workers = 2\nhsts = "365d"\nredirect_http = "0.0.0.0:80"'))
    write("config", "unknown-key", full.replace("workers = 2", "workerz = 2"))
    write("config", "zero-duration", full.replace('timeout = "1h 30m"', 'timeout = "0s"'))
    write("config", "reserved-identity", full.replace('"X-Forwarded-User"', '"Cookie"'))
    write("config", "inline-tables", '''server = { listen = "127.0.0.1:1" }
upstream = { url = "http://h" }
session = { secure = false, cookie_name = "s" }
users = [ { name = "u", password_hash = "$2y$10$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01" } ]
''')
    write("config", "duplicate-user", full.replace('"bob the builder"', '"admin"'))


def host():
    """Host headers: the cases of the unit tests in src/host.rs and spellings around them."""
    cases = [
        "admin.example.com", "admin.example.com.", "Admin.Example.COM.:8443",
        "admin.example.com:80", "localhost", "my_app:3000", "xn--bcher-kva.example",
        "127.0.0.1:8080", "[::1]", "[::1]:8080", "[0:0::1]", "[2001:DB8::1]:443",
        "[::ffff:127.0.0.1]", "a1.example", "example.1a", "", ".", ":80",
        "admin.example.com..", ".admin.example.com", "admin..example.com",
        "admin example.com", "evil.example@admin.example.com", "admin%2eexample.com",
        "b\u00fccher.example", "admin.example.com/x", "*.example.com",
        "a" * 64 + ".example", "abcdefghi." * 25 + "example", "admin.example.com:",
        "admin.example.com:65536", "admin.example.com:80:80", "[::1", "[::1]x",
        "[fe80::1%25eth0]", "[127.0.0.1]", "[]", "127.1", "0x7f.0.0.1", "example.0x1F",
        "2130706433", "127.000.0.1", "256.0.0.1",
    ]
    for i, case in enumerate(cases):
        write("host", f"case-{i}", case)


if __name__ == "__main__":
    cookie()
    return_path()
    path()
    config()
    host()
