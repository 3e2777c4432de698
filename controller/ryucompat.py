"""What Ryu 4.34 needs to run NetServ on current eventlet, for `netserv controller` and for
a plain `ryu-manager` alike.

Ryu imports `eventlet.wsgi.ALREADY_HANDLED`, which current eventlet no longer has (and
the eventlet that had it does not run on Python 3.11). It is only used to answer
websocket requests, which NetServ does not serve, so a stand-in object is enough; it
must exist before `ryu.app.wsgi` is imported.

Ryu starts its REST server with eventlet's defaults: `debug=True`, which sends the
traceback of an unhandled exception as the body of a 500, and no socket time-out, so a
client that promises a body and never sends it holds its connection for as long as it
likes. `harden_rest` replaces Ryu's `serve_forever` (Ryu's files stay as they are) with
`controller.restserver`, a lean HTTP/1.1 server: no tracebacks, a read time-out, and our
JSON guard around Ryu's router. Each connection gets its own greenthread, so a stalled
client never delays an agent's heartbeat.

`install_hook` puts both in place the moment anything imports `ryu.app.wsgi`, in any
process: `tools/setup.sh` installs a start-up hook (`netserv-ryu.pth`) into the
virtualenv that calls it, so the environment's own `ryu-manager` runs `controller.app`
beside stock Ryu apps. Its cost for an interpreter that never imports Ryu is this
module's import, which imports nothing but `sys` (annotations name builtins only, so that
not even `typing` is loaded).
"""

from __future__ import annotations

import sys

WSGI_MODULE = "ryu.app.wsgi"


def eventlet_compat() -> None:
    """Give eventlet.wsgi the attribute Ryu imports; return None. Idempotent."""
    import warnings

    warnings.filterwarnings("ignore", message="(?s).*Eventlet is deprecated")
    import eventlet.wsgi

    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = object()


def register_options() -> None:
    """Register NetServ's options (`--netserv-store` ...) on Ryu's configuration, unless
    they are; return None. Their defaults are None: the app then takes its own defaults
    (`controller/app.py`), so `ryu-manager controller.app` needs none of them."""
    from ryu import cfg

    opts = [
        cfg.StrOpt("netserv-module-path", help="service module folders, joined as in $PATH"),
        cfg.FloatOpt(
            "netserv-agent-dead-after", help="seconds of agent silence before its sessions go"
        ),
        cfg.StrOpt("netserv-store", help="the controller's session store (SQLite file)"),
        cfg.StrOpt("netserv-repo", help="the module repository's folder"),
        cfg.FloatOpt(
            "netserv-routability-timeout",
            help="seconds a return-routability check waits for its answer",
        ),
        cfg.StrOpt("netserv-metrics-host", help="the Prometheus metrics' address"),
        cfg.IntOpt("netserv-metrics-port", help="the Prometheus metrics' port; none: no metrics"),
        cfg.StrOpt("netserv-policy", help="the requester policy file (TOML); none: open"),
        cfg.StrOpt("netserv-secrets", help="the secrets folder (REST token, node keys)"),
    ]
    try:
        cfg.CONF.register_cli_opts([o for o in opts if o.dest not in cfg.CONF])
    except cfg.ArgsAlreadyParsedError:  # Ryu imported late, by a process that parsed its own
        pass


def harden_rest(wsgi: object = None) -> None:
    """Make Ryu's REST server (`wsgi`, default the imported `ryu.app.wsgi`) serve with
    `controller.restserver`: no tracebacks, stalled reads timed out, every answer JSON.
    Return None. Idempotent."""
    if wsgi is None:
        wsgi = sys.modules[WSGI_MODULE]

    def serve_forever(server: object) -> None:
        # Imported when serving, not here: controller.rest imports Ryu's wsgi module,
        # whose import may be what called this.
        import eventlet

        from controller import restserver
        from controller.rest import MAX_BODY, READ_TIMEOUT, guard

        pool = eventlet.GreenPool(restserver.MAX_CONNECTIONS)
        restserver.serve(server.server, guard(server.handle), READ_TIMEOUT, MAX_BODY, pool.spawn_n)

    wsgi.WSGIServer.serve_forever = serve_forever


class _Loader:
    """Runs `ryu.app.wsgi` with eventlet made compatible first and the REST server
    hardened and NetServ's options registered after."""

    def __init__(self, loader: object) -> None:
        self.loader = loader

    def create_module(self, spec: object) -> object:
        return self.loader.create_module(spec)

    def exec_module(self, module: object) -> None:
        eventlet_compat()
        self.loader.exec_module(module)
        harden_rest(module)
        register_options()


class _Finder:
    """Finds `ryu.app.wsgi` as the other finders do, and hands it to `_Loader`."""

    def find_spec(self, name: str, path: object, target: object = None) -> object:
        if name != WSGI_MODULE:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


def install_hook() -> None:
    """Make every later import of `ryu.app.wsgi` in this process compatible and hardened;
    return None. Does nothing when it is imported already or the hook is in place."""
    if WSGI_MODULE in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
