"""``npgpt serve``: load models and run the OpenAI-compatible server of :mod:`npgpt.server`.

Only typer is imported here: ``npgpt`` imports this module on every run to find the command.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from ..errors import NpgptError
from .options import BackendOpt, load_model, model_value, note_chat_template, print_error, print_notice
from .parsing import ENV

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def serve_command(
    ctx: typer.Context,
    model_args: Annotated[
        list[str] | None,
        typer.Argument(
            callback=model_value,
            metavar="model",
            help="The models to serve, as --model takes them (vLLM's `vllm serve MODEL`): npgpt serve 124M.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            callback=model_value,
            help="Checkpoint path or downloaded name (124M…); repeat to serve several. "
            "NAME=PATH sets the name clients put in `model` (a request without one gets the first model). "
            "Default: LLAMA_ARG_MODEL's (one model, as llama-server reads it), else a downloaded GPT-2, else the "
            "bundled model.",
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            envvar="LLAMA_ARG_HOST",
            help="Address to bind; 0.0.0.0 exposes the server to the network. Also read from OLLAMA_HOST "
            "(HOST[:PORT], as ollama serve reads it).",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="LLAMA_ARG_PORT", help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", envvar=["NPGPT_API_KEY", "LLAMA_API_KEY"], help="Require `Authorization: Bearer KEY` on /v1/*."
        ),
    ] = None,
    alias: Annotated[
        str | None,
        typer.Option(
            "--alias",
            "-a",
            envvar="LLAMA_ARG_ALIAS",
            help="The name clients put in `model` for the one model served (llama-server's --alias; -m NAME=PATH "
            "names it too).",
            show_default=False,
        ),
    ] = None,
    max_batch: Annotated[
        int,
        typer.Option(
            envvar=["LLAMA_ARG_N_PARALLEL", "OLLAMA_NUM_PARALLEL"],
            help="Rows decoded together per model (continuous batching).",
        ),
    ] = 16,
    max_queue: Annotated[
        int, typer.Option(envvar="OLLAMA_MAX_QUEUE", help="Requests that may wait for a free row; more get 503.")
    ] = 64,
    backend: BackendOpt = "numpy",
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype",
            help="Weight storage: float32 (the default: the same numbers on every host), float16, bfloat16, int8, "
            "or auto (the fastest of the backend's on this host at --max-batch rows; measured once, cached).",
        ),
    ] = "float32",
    special_tokens: Annotated[
        bool,
        typer.Option(
            "--special-tokens/--no-special-tokens",
            help="Read a literal <|endoftext|> in prompts as the special token (as OpenAI's and vLLM's servers "
            "and npgpt generate do); --no-special-tokens reads it as plain text. In chat messages it is always text.",
        ),
    ] = True,
    max_rows: Annotated[int, typer.Option(help="Completions per request at most (prompts x n); more get 400.")] = 256,
    max_request_tokens: Annotated[
        int,
        typer.Option(help="Tokens per request at most (each completion's prompt + max_tokens, summed); more get 400."),
    ] = 131_072,
    max_request_logprobs: Annotated[
        int | None,
        typer.Option(
            help="Logprob entries per request at most (tokens listed with logprobs x (logprobs + 1): echoed prompts' "
            "and completions'); more get 400. Default: twice --max-request-tokens (logprobs 1 over every token).",
            show_default=False,
        ),
    ] = None,
    max_unread_events: Annotated[
        int,
        typer.Option(
            help="Stream events generated and not yet read by their clients, over all requests; over it, the "
            "stream holding the most ends with an error event."
        ),
    ] = 65_536,
    allowed_origins: Annotated[
        str | None,
        typer.Option(
            envvar="OLLAMA_ORIGINS",
            help="Comma-separated origins whose web pages may call the server (CORS), e.g. "
            "http://localhost:3000,https://chat.example.com (a * in one, as Ollama's: chrome-extension://*), or * for "
            "any. Default: none (same-origin only).",
            show_default=False,
        ),
    ] = None,
    shutdown_timeout: Annotated[
        float,
        typer.Option(
            help="On Ctrl+C/SIGTERM, seconds in-flight requests get to finish before they end with an error "
            "(a second Ctrl+C ends them at once)."
        ),
    ] = 10.0,
) -> None:
    """Serve GPT-2 over an OpenAI-compatible HTTP API, with a playground at /.

    Example: npgpt serve 124M --port 8000 (or --model 124M; -m NAME=PATH names one)
    then open http://127.0.0.1:8000/ or run
    curl localhost:8000/v1/completions -H 'Content-Type: application/json' -d '{"prompt": "Hello,", "max_tokens": 20}'

    Endpoints: /v1/models, /v1/completions, /v1/chat/completions, /v1/next_tokens, /health, /metrics.

    llama-server's environment variables set the options they name where the command line does not (LLAMA_ARG_MODEL,
    LLAMA_ARG_ALIAS, LLAMA_ARG_HOST, LLAMA_ARG_PORT, LLAMA_ARG_N_PARALLEL, LLAMA_API_KEY), and so do Ollama's
    OLLAMA_HOST, OLLAMA_NUM_PARALLEL, OLLAMA_MAX_QUEUE and OLLAMA_ORIGINS.
    """
    from ..server.settings import check_settings  # no FastAPI: a bad option is named before anything is needed

    check_settings(
        max_batch=max_batch,
        max_queue=max_queue,
        max_rows=max_rows,
        max_request_tokens=max_request_tokens,
        max_request_logprobs=max_request_logprobs,
        max_unread_events=max_unread_events,
        shutdown_timeout=shutdown_timeout,
    )
    if os.environ.get("LLAMA_ARG_N_PREDICT", "").strip():  # llama-server's -n: a default for requests without one
        print_notice(
            f"LLAMA_ARG_N_PREDICT={os.environ['LLAMA_ARG_N_PREDICT'].strip()} is not read: npgpt serve has no default "
            "for max_tokens; a client sets it in each request (unset: OpenAI's 16 for a completion, the context's end "
            "for a chat)"
        )
    if max_request_logprobs is None:  # a scoring client's logprobs 1 over every token --max-request-tokens admits
        max_request_logprobs = 2 * max_request_tokens
    if api_key is not None and not api_key.strip():  # an unset shell variable: "Bearer " would be the key
        raise NpgptError(
            "--api-key (or NPGPT_API_KEY) is empty, so any client could send it; give a key, or leave both out"
        )
    origins = parse_origins(allowed_origins)
    try:
        from ..server.app import check_model_name, create_app
        from ..server.shutdown import serve
    except ImportError as e:
        raise NpgptError(f"the server needs {e.name}: pip install 'npgpt[serve]'") from None
    from ..backends import collapse_huge_pages, tune_allocator

    model = [*(model_args or ()), *(model or ())]  # positional first, as written: the first is the default model
    if not model and os.environ.get("LLAMA_ARG_MODEL"):  # llama-server's -m from the environment: one path, spaces kept
        model = [os.environ["LLAMA_ARG_MODEL"]]
        ctx.meta.setdefault(ENV, {})["--model"] = ("LLAMA_ARG_MODEL", model[0])
    host, port = _ollama_host(ctx, host, port)
    specs: list[tuple[str, str | None]] = [_split_spec(spec) for spec in model] if model else [("", None)]
    if any(name and not path for name, path in specs):
        raise NpgptError("a --model NAME= names no model; write --model NAME=PATH (a path or a downloaded name)")
    specs = _with_alias(ctx, specs, alias)
    named = [name for name, _ in specs if name]

    def check_name(name: str) -> None:  # the library's refusal, with the flag that names a model
        try:
            check_model_name(name)
        except NpgptError as e:
            raise NpgptError(f"{e} with {'--alias NAME' if name == alias else '--model NAME=PATH'}") from None

    for name in named:  # a bad or repeated name fails here, before loading; names from files are checked below
        check_name(name)
        if named.count(name) > 1:
            raise NpgptError(f"two models are called {name!r}; give each its own --model NAME=PATH")
    sock = bind(host, port)  # a busy port or a bad host fails here, before loading or printing anything
    port = sock.getsockname()[1]  # --port 0 takes a free port
    tune_allocator()  # process-wide: the server's entry point tunes it, the library never does
    models = {}
    for name, path in specs:
        m = load_model(path, backend, dtype, auto_rows=max_batch, cap_blas=False)  # auto: at the rows served together
        note_chat_template(m, "/v1/chat/completions", "send the text to /v1/completions")
        name = name or _model_name(path, m.source)
        if name in models:
            raise NpgptError(f"two models are called {name!r}; name them with --model NAME=PATH")
        check_name(name)
        models[name] = m
    from ..q8_0 import cap_blas_for

    cap_blas_for([m.params for m in models.values()])  # only if every model is int8: float32 needs every core
    collapse_huge_pages()  # process-wide; ~1 s once for decoding ~1.25x faster from int8 weights
    if host not in LOCAL_HOSTS and api_key is None:
        print_error(f"serving on {host} without --api-key: anyone who can reach it may use it", label="warning")
    app = create_app(
        models,
        api_key=api_key,
        max_batch=max_batch,
        max_queue=max_queue,
        special_tokens=special_tokens,
        max_rows=max_rows,
        max_request_tokens=max_request_tokens,
        max_request_logprobs=max_request_logprobs,
        max_unread_events=max_unread_events,
        allowed_origins=origins,
    )
    shown = f"[{host}]" if ":" in host else host
    print_notice(
        f"serving {', '.join(models)} on http://{shown}:{port}/ (playground) and http://{shown}:{port}/v1", style=""
    )
    serve(app, sock, shutdown_timeout=shutdown_timeout, host=host, port=port, log_level="info")


def _ollama_host(ctx: typer.Context, host: str, port: int) -> tuple[str, int]:
    """``host`` and ``port`` with Ollama's ``OLLAMA_HOST`` (``HOST[:PORT]``, ``[IPV6]:PORT``, ``http://HOST:PORT``, as
    ``ollama serve`` reads it) in place of those that neither the command line nor llama.cpp's LLAMA_ARG_HOST and
    LLAMA_ARG_PORT set; a bare host keeps the port. NpgptError naming the variable for a value that is no address."""
    text = os.environ.get("OLLAMA_HOST", "").strip()
    sources = {name: ctx.get_parameter_source(name) for name in ("host", "port")}
    free = {name for name, source in sources.items() if source is None or source.name.startswith("DEFAULT")}
    if not text or not free:
        return host, port
    hostport = text.partition("://")[2] if "://" in text else text
    hostport = hostport.partition("/")[0]  # Ollama drops a path
    given_port: str | None = None
    if hostport.startswith("["):  # [IPV6] or [IPV6]:PORT
        given_host, _, rest = hostport[1:].partition("]")
        given_port = rest.removeprefix(":") if rest else None
    elif hostport.count(":") == 1:
        given_host, given_port = hostport.split(":")
    else:  # a name, an IPv4 address, or a bare IPv6 address (::1)
        given_host = hostport
    if given_port is not None and not (given_port.isdigit() and int(given_port) <= 65535):
        raise NpgptError(
            f"OLLAMA_HOST={text}: {given_port!r} is not a port; write HOST:PORT (e.g. 0.0.0.0:8000), or HOST alone "
            "for npgpt's --port"
        )
    named = ctx.meta.setdefault(ENV, {})
    if "host" in free:
        host = given_host or "0.0.0.0"  # OLLAMA_HOST=:8000: every interface, as Go's net.Listen reads it
        named["--host"] = ("OLLAMA_HOST", host)
    if "port" in free and given_port is not None:
        port = int(given_port)
        named["--port"] = ("OLLAMA_HOST", given_port)
    return host, port


def parse_origins(text: str | None) -> list[str]:
    """``--allowed-origins``: comma-separated ``scheme://host[:port]`` origins, Ollama's wildcard ones
    (``chrome-extension://*``, ``http://localhost:*``, as its OLLAMA_ORIGINS takes them), or ``*``; each written as a
    browser sends it (scheme and host lower-case, no default port: ``HTTP://A.com:80`` -> ``http://a.com``),
    since the header is compared as a string. NpgptError for one a browser never sends (no scheme, a
    path or a trailing slash, a port outside 1-65535), which would match nothing."""
    origins = []
    for o in (o.strip() for o in (text or "").split(",")):
        if not o:
            continue
        origin = "*" if o == "*" else _browser_origin(o) if "*" not in o else _origin_pattern(o)
        if origin is None:
            raise NpgptError(
                f"--allowed-origins: {o!r} is not an origin; give scheme://host[:port] with no path, "
                "e.g. http://localhost:3000 (http://localhost:* for any port), or * for any"
            )
        origins.append(origin)
    return origins


def _origin_pattern(text: str) -> str | None:
    """Ollama's wildcard origin (OLLAMA_ORIGINS' ``chrome-extension://*``, ``http://localhost:*``, its defaults'
    ``app://*``), lower-cased where it names a scheme and host, for ``create_app`` to match: a ``*`` stands for any
    run of characters but ``/``. None where it is no origin with a wildcard (a path, no scheme)."""
    scheme, sep, rest = text.partition("://")
    if not sep or not scheme.replace("-", "").isalnum() or not rest or "/" in rest:
        return None
    return f"{scheme.lower()}://{rest.lower()}"


def _browser_origin(text: str) -> str | None:
    """``text`` as a browser's Origin header spells it, or None where it is not an origin."""
    from urllib.parse import urlsplit

    scheme, sep, rest = text.partition("://")
    if not sep or not scheme.isalnum() or not rest or "/" in rest:
        return None
    try:
        parts = urlsplit(text)
        port = parts.port  # ValueError outside 0-65535
    except ValueError:
        return None
    if not parts.hostname or port == 0:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    scheme = scheme.lower()
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port``, or one NpgptError saying why not (port out of range,
    unknown host, port in use, no permission). Bound here rather than by uvicorn so that these
    fail as one line before anything is loaded or announced; uvicorn then serves on the socket."""
    if not 0 <= port <= 65535:
        raise NpgptError(f"--port {port} is not a TCP port; use 1-65535 (0 picks a free one)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as e:
        raise NpgptError(
            f"--host {host!r} is not an address of this machine ({e}); "
            "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart without waiting
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise NpgptError(
                f"port {port} on {host} is in use (another server?); stop it or choose another with --port"
            ) from None
        if e.errno == errno.EACCES:
            raise NpgptError(
                f"no permission to listen on port {port}; ports below 1024 need root, use --port "
                "8000 or another above 1023"
            ) from None
        raise NpgptError(f"cannot listen on {host}:{port}: {e.strerror or e}; check --host and --port") from None
    return sock


def _with_alias(
    ctx: typer.Context, specs: list[tuple[str, str | None]], alias: str | None
) -> list[tuple[str, str | None]]:
    """``specs`` with llama-server's ``--alias`` (or LLAMA_ARG_ALIAS) as the name of the one model served. NpgptError
    for --alias typed beside several models, or beside the model's own NAME=; LLAMA_ARG_ALIAS there is not read,
    as the command line wins over a variable (said in a notice where several models are served)."""
    if alias is None:
        return specs
    source = ctx.get_parameter_source("alias")
    typed = source is None or source.name != "ENVIRONMENT"
    if not alias.strip() and typed:  # --alias "" (an unset shell variable) served the model under its own name
        raise NpgptError(
            "--alias is empty; give the name clients put in model, or leave --alias out for the model's own",
            param="alias",
        )
    if len(specs) > 1:
        if typed:
            raise NpgptError(
                "--alias names the one model served; with several, name each: --model NAME=PATH", param="alias"
            )
        print_notice(f"LLAMA_ARG_ALIAS={alias} is not read: it names one model and {len(specs)} are served")
        return specs
    (name, path), *_ = specs
    if name and typed:
        raise NpgptError(
            f"the model is named twice, {name!r} by --model NAME=PATH and {alias!r} by --alias; give one", param="alias"
        )
    return [(name or alias, path)]


def _split_spec(spec: str) -> tuple[str, str]:
    """``--model`` as (name, path): ``NAME=PATH``, or ("", spec) for a plain path (one whose name holds "=")."""
    name, eq, path = spec.partition("=")
    return (name, path) if eq and not Path(spec).exists() else ("", spec)


def _model_name(spec: str | None, source: str | None) -> str:
    """What clients call a model: the name it was given (``124M``), else its file's name."""
    if spec and not Path(spec).expanduser().exists():
        return spec
    path = Path(spec or source or "model")
    return path.parent.name if path.stem == "model" and path.parent.name else path.stem
