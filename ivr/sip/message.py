"""SIP message syntax (RFC 3261 §7, §19, §20, §25): parse and serialise requests and responses.

Parsing is strict about framing (start line, header lines, Content-Length) and lenient about
what does not matter for a UAS (header order, case, compact forms, folded lines).  Every
malformation raises `SipParseError` with a short reason; nothing else escapes `parse_message`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 65535
MAX_HEAD_BYTES = 16384
MAX_HEADERS = 128
# Call-ID, tags and branches name dialogs, transactions and call records (those take at most 200
# characters); a longer one is refused with 400 before anything stores it.
MAX_ID_CHARS = 200

MAGIC_COOKIE = "z9hG4bK"


class SipParseError(ValueError):
    """The bytes are not a SIP message we can act on; `reason` says why (for logs and 400 phrases)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_COMPACT = {
    "i": "call-id",
    "f": "from",
    "t": "to",
    "v": "via",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "u": "allow-events",
    "x": "session-expires",
}
_CANONICAL = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rseq": "RSeq",
    "rack": "RAck",
}
# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1): several values may share a line.
_LIST_HEADERS = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "allow-events",
        "content-encoding",
    }
)
_TOKEN = r"[A-Za-z0-9.!%*_+`'~\-]+"
_TOKEN_RE = re.compile(_TOKEN)
_REQUEST_LINE = re.compile(rf"^({_TOKEN}) (\S+) (SIP/\d+\.\d+)$")
_STATUS_LINE = re.compile(r"^(SIP/\d+\.\d+) (\d{3}) ?(.*)$")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9.])?)(?::(\d{1,5}))?$")

REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    603: "Decline",
}


def canonical_name(name: str) -> str:
    """Full, conventionally capitalised header name for any spelling or compact form."""
    low = name.strip().lower()
    low = _COMPACT.get(low, low)
    return _CANONICAL.get(low) or "-".join(part.capitalize() for part in low.split("-"))


def split_list(value: str) -> list[str]:
    """Split a header value at the commas that separate list elements (not inside quotes or <>)."""
    out: list[str] = []
    cur: list[str] = []
    quoted = escaped = False
    depth = 0
    for ch in value:
        if quoted:
            cur.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
            continue
        if ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if quoted:
        raise SipParseError("unterminated quoted string")
    out.append("".join(cur).strip())
    return [v for v in out if v]


def parse_params(text: str) -> dict[str, str | None]:
    """';a=b;c' -> {'a': 'b', 'c': None}; names lower-cased, values kept verbatim (quotes included, so
    that re-serialising a header never changes a quoted-string parameter such as +sip.instance)."""
    params: dict[str, str | None] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, val = part.partition("=")
        name = name.strip().lower()
        if not _TOKEN_RE.fullmatch(name):
            raise SipParseError(f"bad parameter name {name!r}")
        params[name] = val.strip() if sep else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _is_decimal(text: str | bytes, max_digits: int) -> bool:
    """ASCII digits only (str.isdigit() also admits "²", which int() refuses), and few enough of them."""
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


def split_hostport(text: str) -> tuple[str, int | None]:
    m = _HOST.match(text.strip())
    if not m:
        raise SipParseError(f"bad host {text!r}")
    port = int(m.group(2)) if m.group(2) else None
    if port is not None and not 0 < port < 65536:
        raise SipParseError(f"bad port {port}")
    host = m.group(1)
    return (host[1:-1] if host.startswith("[") else host), port


def format_hostport(host: str, port: int | None) -> str:
    h = f"[{host}]" if ":" in host else host
    return h if port is None else f"{h}:{port}"


@dataclass(slots=True)
class SipUri:
    """sip:/sips: URI (RFC 3261 §19.1)."""

    host: str
    user: str | None = None
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""
    scheme: str = "sip"
    password: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips"):
            raise SipParseError(f"not a SIP URI: {text[:80]!r}")
        rest, _, headers = rest.partition("?")
        user = password = None
        if "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            user, pc, pw = userinfo.partition(":")
            password = pw if pc else None
            if not user:
                raise SipParseError("empty user part")
        hostport, _, params = rest.partition(";")
        host, port = split_hostport(hostport)
        return cls(
            host=host,
            user=user,
            port=port,
            params=parse_params(params),
            headers=headers,
            scheme=scheme,
            password=password,
        )

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        hdrs = f"?{self.headers}" if self.headers else ""
        hostport = format_hostport(self.host, self.port)
        return f"{self.scheme}:{userinfo}{hostport}{format_params(self.params)}{hdrs}"

    @property
    def default_port(self) -> int:
        return self.port or (5061 if self.scheme == "sips" else 5060)


@dataclass(slots=True)
class NameAddr:
    """name-addr / addr-spec with header parameters, as in From, To, Contact, Route (RFC 3261 §20.10)."""

    uri: str
    display: str = ""
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        display = ""
        if text.startswith('"'):
            i, escaped = 1, False
            while i < len(text):
                ch = text[i]
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    break
                i += 1
            else:
                raise SipParseError("unterminated display name")
            display = re.sub(r"\\(.)", r"\1", text[1:i])
            text = text[i + 1 :].lstrip()
            if not text.startswith("<"):
                raise SipParseError("display name without <uri>")
        if "<" in text:
            before, _, rest = text.partition("<")
            if not display:
                display = before.strip()
            uri, gt, params = rest.partition(">")
            if not gt:
                raise SipParseError("unterminated <uri>")
        else:
            # addr-spec: parameters after the URI belong to the header, not to the URI (§20.10)
            uri, _, params = text.partition(";")
        uri = uri.strip()
        if not uri or ":" not in uri or any(c.isspace() for c in uri):
            raise SipParseError(f"bad URI {uri[:80]!r}")
        return cls(uri=uri, display=display, params=parse_params(params))

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def sip_uri(self) -> SipUri:
        return SipUri.parse(self.uri)

    def __str__(self) -> str:
        disp = ""
        if self.display:
            disp = '"' + self.display.replace("\\", "\\\\").replace('"', '\\"') + '" '
        return f"{disp}<{self.uri}>{format_params(self.params)}"


@dataclass(slots=True)
class Via:
    """One Via value (RFC 3261 §20.42)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        m = re.match(r"^\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+([^;\s]+(?:\s*:\s*\d+)?)\s*(;.*)?$", text, re.I)
        if not m:
            raise SipParseError(f"bad Via {text[:80]!r}")
        host, port = split_hostport(re.sub(r"\s+", "", m.group(2)))
        return cls(transport=m.group(1).upper(), host=host, port=port, params=parse_params(m.group(3) or ""))

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> tuple[str, int]:
        return self.host.lower(), self.port or 5060

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {format_hostport(self.host, self.port)}{format_params(self.params)}"


class Headers:
    """Ordered, case-insensitive multimap of header fields; names are stored in canonical form."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = []
        for name, value in items or []:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value.strip()))

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.add(name, value)

    def remove(self, name: str) -> None:
        cname = canonical_name(name)
        self._items = [(n, v) for n, v in self._items if n != cname]

    def raw(self, name: str) -> list[str]:
        """Each header line's value as received (no comma splitting)."""
        cname = canonical_name(name)
        return [v for n, v in self._items if n == cname]

    def values(self, name: str) -> list[str]:
        """All values, with comma lists split for the headers whose grammar allows it."""
        raw = self.raw(name)
        if canonical_name(name).lower() not in _LIST_HEADERS:
            return raw
        return [v for line in raw for v in split_list(line)]

    def replace(self, name: str, values: list[str]) -> None:
        """Replace all values of `name`, keeping its position among the other headers."""
        cname = canonical_name(name)
        idx = next((i for i, (n, _) in enumerate(self._items) if n == cname), len(self._items))
        rest = [(n, v) for n, v in self._items if n != cname]
        before = sum(1 for n, _ in self._items[:idx] if n != cname)
        self._items = rest[:before] + [(cname, v) for v in values] + rest[before:]

    def get(self, name: str, default: str | None = None) -> str | None:
        vals = self.values(name)
        return vals[0] if vals else default

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)


class _Message:
    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        v = self.headers.get("Call-ID")
        if not v:
            raise SipParseError("missing Call-ID")
        return v

    @property
    def cseq(self) -> tuple[int, str]:
        v = self.headers.get("CSeq")
        if not v:
            raise SipParseError("missing CSeq")
        parts = v.split()
        if len(parts) != 2 or not _is_decimal(parts[0], 10) or not _TOKEN_RE.fullmatch(parts[1]):
            raise SipParseError(f"bad CSeq {v[:40]!r}")
        num = int(parts[0])
        if num >= 2**31:
            raise SipParseError("CSeq number out of range")
        return num, parts[1].upper()

    def _name_addr(self, name: str) -> NameAddr:
        v = self.headers.get(name)
        if v is None:
            raise SipParseError(f"missing {name}")
        return NameAddr.parse(v)

    @property
    def from_(self) -> NameAddr:
        return self._name_addr("From")

    @property
    def to(self) -> NameAddr:
        return self._name_addr("To")

    @property
    def vias(self) -> list[Via]:
        vals = self.headers.values("Via")
        if not vals:
            raise SipParseError("missing Via")
        return [Via.parse(v) for v in vals]

    @property
    def top_via(self) -> Via:
        return self.vias[0]

    @property
    def content_type(self) -> str:
        """Media type without parameters, lower-cased; '' when absent."""
        v = self.headers.get("Content-Type") or ""
        return v.split(";", 1)[0].strip().lower()

    def check(self) -> None:
        """Raise SipParseError unless the headers every transaction needs are present and well formed."""
        for prop in ("call_id", "from_", "to", "vias", "cseq"):
            getattr(self, prop)  # each property raises SipParseError when its header is bad
        ids = {"Call-ID": self.call_id, "From tag": self.from_.tag, "To tag": self.to.tag}
        ids["Via branch"] = self.top_via.branch
        for what, value in ids.items():
            if value is not None and len(value) > MAX_ID_CHARS:
                raise SipParseError(f"{what} longer than {MAX_ID_CHARS} characters")

    def _serialise(self, start: str) -> bytes:
        lines = [start]
        lines += [f"{n}: {v}" for n, v in self.headers.items() if n != "Content-Length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass(slots=True, eq=False)
class SipRequest(_Message):
    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def check(self) -> None:
        _Message.check(self)
        if self.cseq[1] != self.method:
            raise SipParseError("CSeq method does not match the request method")
        mf = self.headers.get("Max-Forwards")
        if mf is not None and (not _is_decimal(mf, 3) or int(mf) > 255):
            raise SipParseError("bad Max-Forwards")

    def to_bytes(self) -> bytes:
        return self._serialise(f"{self.method} {self.uri} SIP/2.0")


@dataclass(slots=True, eq=False)
class SipResponse(_Message):
    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def to_bytes(self) -> bytes:
        return self._serialise(f"SIP/2.0 {self.status} {self.reason}")


SipMessage = SipRequest | SipResponse


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = data.find(sep)
        if i >= 0:
            return data[:i], data[i + len(sep) :]
    raise SipParseError("no end of headers")


def content_length(head: bytes) -> int | None:
    """Content-Length from a raw header block (for stream framing); None when absent."""
    m = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", head)
    if not m:
        return None
    v = m.group(1).strip()
    if not _is_decimal(v, 9):
        raise SipParseError("bad Content-Length")
    return int(v)


def parse_message(data: bytes, *, datagram: bool = True) -> SipMessage:
    """Parse one complete message.  `datagram`: UDP rules (a missing Content-Length means 'rest of
    the packet', RFC 3261 §18.3); else the stream framer already cut exactly Content-Length bytes."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError("message too large")
    data = data.lstrip(b"\r\n")  # CRLFs before a message are keep-alives (§7.5)
    if not data:
        raise SipParseError("empty message")
    head, body = _split_head(data)
    if len(head) > MAX_HEAD_BYTES:
        raise SipParseError("header section too large")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError("header section is not UTF-8") from exc
    raw_lines = re.split(r"\r?\n", text)
    start = raw_lines[0]
    lines: list[str] = []
    for line in raw_lines[1:]:
        if line[:1] in (" ", "\t"):
            if not lines:
                raise SipParseError("continuation line before the first header")
            lines[-1] += " " + line.strip()  # header folding (§7.3.1)
        elif line:
            lines.append(line)
    if len(lines) > MAX_HEADERS:
        raise SipParseError("too many headers")
    if any(ch in text for ch in "\x00"):
        raise SipParseError("NUL byte in headers")
    headers = Headers()
    for line in lines:
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _TOKEN_RE.fullmatch(name):
            raise SipParseError(f"bad header line {line[:60]!r}")
        headers.add(name, value)

    clen_values = headers.raw("Content-Length")
    if len(set(clen_values)) > 1:
        raise SipParseError("conflicting Content-Length")
    if clen_values:
        if not _is_decimal(clen_values[0], 9):
            raise SipParseError("bad Content-Length")
        clen = int(clen_values[0])
        if clen > len(body):
            raise SipParseError(f"body shorter than Content-Length ({len(body)} < {clen})")
        if not datagram and clen != len(body):
            raise SipParseError("body length differs from Content-Length")
        body = body[:clen]  # extra datagram bytes are discarded (§18.3)
    elif not datagram:
        raise SipParseError("missing Content-Length on a stream transport")

    m = _REQUEST_LINE.match(start)
    if m:
        if m.group(3) != "SIP/2.0":
            raise SipParseError(f"unsupported version {m.group(3)}")
        return SipRequest(method=m.group(1), uri=m.group(2), headers=headers, body=body)
    m = _STATUS_LINE.match(start)
    if m:
        if m.group(1) != "SIP/2.0":
            raise SipParseError(f"unsupported version {m.group(1)}")
        status = int(m.group(2))
        if not 100 <= status <= 699:
            raise SipParseError(f"bad status code {status}")
        return SipResponse(status=status, reason=m.group(3), headers=headers, body=body)
    raise SipParseError(f"bad start line {start[:60]!r}")


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    extra: list[tuple[str, str]] | None = None,
) -> SipResponse:
    """A response to `request` per RFC 3261 §8.2.6.2: Via, From, Call-ID, CSeq copied; To gets our tag."""
    h = Headers()
    for v in request.headers.raw("Via"):
        h.add("Via", v)
    for name in ("From", "To", "Call-ID", "CSeq"):
        for v in request.headers.raw(name):
            h.add(name, v)
    if to_tag and status > 100:
        to = request.to
        if to.tag is None:
            to.params["tag"] = to_tag
            h.set("To", str(to))
    for name, value in extra or []:
        h.add(name, value)
    if content_type and body:
        h.add("Content-Type", content_type)
    return SipResponse(status=status, reason=reason or REASONS.get(status, "Unknown"), headers=h, body=body)
