"""The layout's promises, checked on the source: no import circles, lower packages import only
profd's data modules, and a profiler, an advisor or a rule takes exactly one new file."""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("profd", "advisors", "collectors", "hwspecs")
#: What advisors, collectors and hwspecs may import from profd (DESIGN.md: they never see the daemon).
#: profd.plugins is the one plug-in discovery loop the registries share; it imports nothing from
#: the project (test_the_plugin_loader_imports_nothing_of_the_project), so it cannot reach up.
PROFD_DATA = {"profd", "profd.model", "profd.metrics", "profd.paths", "profd.plugins"}
LOWER = {"advisors": {"advisors", "hwspecs"}, "collectors": {"collectors", "hwspecs"}, "hwspecs": {"hwspecs"}}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its body (lazy and TYPE_CHECKING imports too)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, f in mods.items():
        pkg = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else resolve(base) for a in node.names]
            graph[mod].update(t for t in targets if t and t != mod)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycles() -> None:
    cycles = _cycles(import_graph())
    assert not cycles, f"import circles: {cycles}"


def test_lower_packages_import_only_profd_data_modules() -> None:
    bad = []
    for mod, targets in import_graph().items():
        top = mod.split(".")[0]
        if top not in LOWER:
            continue
        for t in targets:
            ttop = t.split(".")[0]
            if ttop == "profd" and t not in PROFD_DATA or ttop != "profd" and ttop not in LOWER[top]:
                bad.append(f"{mod} -> {t}")
    assert not bad, "lower packages reach up: " + "; ".join(bad)


def test_the_plugin_loader_imports_nothing_of_the_project() -> None:
    assert import_graph()["profd.plugins"] == set()


def test_the_cycle_check_sees_a_circle(tmp_path: Path) -> None:
    """The checker itself can fail: a two-module circle is found."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


# --------------------------------------------------------------------------- one file per plug-in


def _extend(monkeypatch: pytest.MonkeyPatch, package: object, tmp: Path, name: str, source: str) -> None:
    """Drop one module into a second directory of ``package``'s search path (a plug-in directory)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp)])  # type: ignore[attr-defined]


def test_a_profiler_is_one_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import collectors
    from profd.config import Config
    from profd.doctor import check_profiler

    _extend(monkeypatch, collectors, tmp_path / "plug", "toyprof", '''
        from pathlib import Path
        import pandas as pd
        from collectors import WRAPS, Collector
        from profd.model import CounterTable

        def _load(path, **kw):
            rows = [line.split(",") for line in Path(path).read_text().splitlines()[1:]]
            frame = pd.DataFrame({"kernel": [r[0] for r in rows], "duration_ns": [float(r[1]) for r in rows]})
            return CounterTable(source="toyprof", frame=frame)

        COLLECTOR = Collector(name="toyprof", role=WRAPS, summary="a toy", backends=("toy",),
                              formats=("toyprof CSV: `#toyprof` header",), find=lambda: "/bin/true",
                              reads=lambda path, head: bool(head) and head.startswith("#toyprof"), load=_load,
                              measures=frozenset({"duration_ns"}))
    ''')
    collectors._discover.cache_clear()
    try:
        assert collectors.get("toyprof") is not None
        capture = tmp_path / "cap.csv"
        capture.write_text("#toyprof\nmy_kernel,1234\n")
        table = collectors.load_capture(capture)
        assert table.source == "toyprof" and table.kernels() == ["my_kernel"]
        assert any("toyprof" in f for f in collectors.supported_formats())
        check = check_profiler(has_gpu=False)
        assert "toyprof" in check.detail, check.detail
    finally:
        monkeypatch.undo()
        collectors._discover.cache_clear()


def test_an_advisor_is_one_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from advisors import rewriters
    from profd import config

    _extend(monkeypatch, rewriters, tmp_path / "plug", "echo", '''
        from advisors.rewriters import AdvisorSpec

        class Echo:
            name = "echo"
            def __init__(self, table):
                self.table = dict(table)
            def propose(self, ctx, n):
                return []

        ADVISOR = AdvisorSpec(name="echo", summary="proposes nothing", section="echo",
                              options={"greeting": "what it says"}, records_llm_exchange=True,
                              build=lambda table: Echo(table) if table.get("greeting") else None)
    ''')
    rewriters._discover.cache_clear()
    try:
        cfg_file = tmp_path / "config.toml"
        cfg_file.write_text('[echo]\ngreeting = "hello"\n')
        cfg = config.load(cfg_file, env={})
        built = rewriters.build_advisors(cfg)
        assert [a.name for a in built] == ["deterministic", "cuda", "echo"]
        assert built[-1].table == {"greeting": "hello"}
        assert rewriters.records_llm_exchange("echo") and not rewriters.records_llm_exchange("deterministic")
        cfg_file.write_text('[nonsense]\nx = 1\n')
        with pytest.raises(config.ConfigError):
            config.load(cfg_file, env={})
    finally:
        monkeypatch.undo()
        rewriters._discover.cache_clear()


def test_a_rule_is_one_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    from advisors import rules
    from advisors.diagnosis import analyze, collection_metrics
    from profd.model import CounterTable

    _extend(monkeypatch, rules, tmp_path / "plug", "slow_kernel", '''
        from advisors.rules._base import Rule
        from profd.model import Severity

        class SlowKernel(Rule):
            """Any kernel over a millisecond."""
            id = "slow_kernel"
            title = "Slow kernel"
            requires = ("duration_ns", "ipc")

            def evaluate(self, ctx):
                if ctx.m("duration_ns") < 1e6:
                    return None
                return self.finding(ctx, "it is slow", [], [], 5.0, Severity.LOW)

        RULE = SlowKernel()
    ''')
    rules._discover.cache_clear()
    try:
        assert "ipc" in collection_metrics()  # the new rule's metric is now collected
        table = CounterTable(source="ncu", frame=pd.DataFrame({"kernel": ["k"], "duration_ns": [2e6], "ipc": [1.0]}))
        dx = analyze(table, None, None)
        assert "slow_kernel" in [f.rule for f in dx.findings]
    finally:
        monkeypatch.undo()
        rules._discover.cache_clear()


def test_every_rule_metric_is_collected_by_each_collector() -> None:
    """Each wrapping collector measures every metric a rule declares, or says it cannot."""
    import collectors
    from advisors.diagnosis import collection_metrics

    wanted = collection_metrics()
    for c in collectors.wrappers():
        missing = [m for m in wanted if m not in c.measures and m not in c.unavailable]
        assert not missing, f"{c.name} neither measures nor declares unavailable: {missing}"
        assert c.counters_for is not None and c.counters_for(wanted), c.name


def test_discovery_takes_a_sub_package_as_one_plugin_and_refuses_duplicates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plug-in may grow into a package (rewriters/llm/): its __init__'s attribute is read once."""
    from profd.plugins import discover_plugins

    pkg = tmp_path / "toyplugs"
    (pkg / "big" / "parts").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "small.py").write_text("PLUG = 'small'\n")
    (pkg / "helper.py").write_text("X = 1\n")
    (pkg / "_private.py").write_text("PLUG = 'never read'\n")
    (pkg / "big" / "__init__.py").write_text("from toyplugs.big.impl import PLUG\n")
    (pkg / "big" / "impl.py").write_text("PLUG = 'big'\n")
    (pkg / "big" / "parts" / "__init__.py").write_text("PLUG = 'a part, not a plug-in'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert discover_plugins("toyplugs", "PLUG", str, str, "plugs") == ["big", "small"]
        with pytest.raises(TypeError, match="toyplugs.helper must define PLUG"):
            discover_plugins("toyplugs", "PLUG", str, str, "plugs", required=True)
        (pkg / "helper.py").write_text("PLUG = 2\n")
        sys.modules.pop("toyplugs.helper")
        with pytest.raises(TypeError, match="toyplugs.helper must define PLUG"):
            discover_plugins("toyplugs", "PLUG", str, str, "plugs")
        (pkg / "helper.py").write_text("PLUG = 'small'\n")
        sys.modules.pop("toyplugs.helper")
        with pytest.raises(ValueError, match=r"two plugs share the name\(s\) \['small'\]"):
            discover_plugins("toyplugs", "PLUG", str, str, "plugs")
    finally:
        for mod in [m for m in sys.modules if m == "toyplugs" or m.startswith("toyplugs.")]:
            del sys.modules[mod]
