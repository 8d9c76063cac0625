"""The `voicenav` command: serve, transcribe, prepare, config. Flags come from the settings tree."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from ivr.app.config import AppConfig, UnknownSettings, load_config
from ivr.app.flags import add_setting_flags, flag_values

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("voicenav")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="voicenav",
        description="Contact-center voice navigation. Every setting is also a VOICENAV_* environment "
        "variable; see docs/configuration.md.",
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the service (SIP, WebRTC, HTTP API)")
    add_setting_flags(s)

    t = sub.add_parser("transcribe", help="transcribe WAV files (8 kHz telephone or 16 kHz)")
    add_setting_flags(t, ("recognizer",))
    t.add_argument("--json", action="store_true", help='one JSON line per file: {"file", "text", "seconds"}')
    t.add_argument("--hotwords", help='phrases to favour, comma-separated: "Zentrix Unlimited, NovaPay wallet"')
    t.add_argument("--hotword-file", type=Path, help="one phrase per line, optionally `phrase,boost`")
    t.add_argument("files", nargs="+")

    p = sub.add_parser("prepare", help="convert a model ahead of time (ONNX, int8, TorchScript)")
    add_setting_flags(p, ("recognizer",))

    c = sub.add_parser("config", help="show the settings in effect (defaults, environment, flags)")
    add_setting_flags(c)
    shown = c.add_mutually_exclusive_group(required=True)
    shown.add_argument("--print", action="store_true", help="the effective settings, secrets hidden")
    shown.add_argument("--markdown", action="store_true", help="the reference of every setting (docs/configuration.md)")
    c.add_argument("--format", choices=["yaml", "json"], default="yaml", help="of --print")
    return ap


def _config(args: argparse.Namespace) -> AppConfig:
    return load_config(flag_values(args))


def _show_config(args: argparse.Namespace) -> int:
    from ivr.app.config_doc import effective, markdown

    print(markdown() if args.markdown else effective(_config(args), args.format), end="")
    return 0


def _transcribe(args: argparse.Namespace) -> int:
    from asr_engine.audio.wav import AudioFormatError, read_wav
    from asr_engine.recognizer import Recognizer
    from asr_engine.transcribe import transcribe_audio
    from asr_engine.vad import SileroVad

    cfg = _config(args)
    recognizer = Recognizer(cfg.recognizer, progress=lambda m: print(m, file=sys.stderr))
    recognizer.warmup()
    vad = SileroVad()
    biasing = _hotwords(args, recognizer)
    failed = 0
    for f in args.files:
        try:
            result = transcribe_audio(
                recognizer,
                vad,
                read_wav(f),
                biaser=biasing.graph if biasing else None,
                refine=partial(biasing.refine, recognizer) if biasing else None,
            )
        except (AudioFormatError, OSError) as e:
            failed += 1
            print(json.dumps({"file": f, "error": str(e)}) if args.json else f"{f}: error: {e}", flush=True)
            continue
        if args.json:
            print(json.dumps({"file": f, "text": result.text, "seconds": round(result.seconds, 4)}), flush=True)
        else:
            print(f"{f}\t{result.text}", flush=True)
    return 1 if failed else 0


def _hotwords(args: argparse.Namespace, recognizer):
    """The --hotwords/--hotword-file phrases as a biasing graph and transcript post-pass."""
    if not args.hotwords and not args.hotword_file:
        return None
    from hotwords.parsing import ParseError, parse_hotword_arg, parse_hotword_file
    from ivr.app.biasing import Biasing

    try:
        entries = parse_hotword_arg(args.hotwords) if args.hotwords else []
        if args.hotword_file:
            entries += parse_hotword_file(args.hotword_file)
    except (ParseError, OSError) as e:
        raise SystemExit(f"voicenav: bad hot-word list: {e}") from e
    return Biasing.from_entries(entries, recognizer.tokenizer)


def _prepare(args: argparse.Namespace) -> int:
    from asr_engine.recognizer import engine_for

    rc = _config(args).recognizer
    engine, *_ = engine_for(rc, progress=lambda m: print(m, file=sys.stderr))
    print(f"prepared {rc.model_name()} for {engine.name} in {rc.engine.cache_dir}")
    return 0


async def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from ivr.app.hotword_admin import admin_auth
    from ivr.app.routes import build_app, build_internal_app
    from ivr.app.service import Service

    cfg = _config(args)
    service = Service(cfg)
    auth = admin_auth(cfg.auth)
    public = web.AppRunner(build_app(service, auth=auth), handle_signals=False)
    sites = [(public, cfg.http.port)]
    if cfg.http.internal_port is not None:
        internal = web.AppRunner(build_internal_app(service, auth=auth), handle_signals=False)
        sites.append((internal, cfg.http.internal_port))
    # Cleaned up in reverse: the internal app first, as the public one's clean-up stops the service.
    runners = [runner for runner, _ in reversed(sites)]
    for runner, _ in sites:
        await runner.setup()  # the public one starts loading the recognizer; /readyz says when it is done
    try:
        await service.start_sip()
        for runner, port in sites:
            await web.TCPSite(runner, cfg.http.host, port).start()
    except OSError as e:
        log.error("cannot listen: %s", e)
        await _cleanup(runners)
        return 1
    assert service.sip is not None
    log.info(
        "SIP on %s:%d, HTTP on %s",
        cfg.sip.host,
        service.sip.bound_port,
        ", ".join(f"http://{cfg.http.host}:{runner.addresses[0][1]}" for runner, _ in sites),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Draining: /readyz 503, new SIP calls 503 + Retry-After, new WebRTC offers 503; active calls finish.
    await service.drain()
    await _cleanup(runners)
    return 0


async def _cleanup(runners: list[web.AppRunner]) -> None:
    for r in runners:
        await r.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "transcribe":
            return _transcribe(args)
        if args.command == "prepare":
            return _prepare(args)
        if args.command == "config":
            return _show_config(args)
        return asyncio.run(_serve(args))
    except (ValidationError, UnknownSettings) as e:
        print(f"voicenav: bad configuration:\n{e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
