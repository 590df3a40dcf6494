"""The package layers: core2d <- noise3d <- noisewarp <- addon, arrows pointing down only.

Every import in the source (module level or inside a function) is read with `ast`, so a lazy
import cannot hide an upward arrow or a cycle.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("core2d", "noise3d", "noisewarp", "addon")
# what each package may import from this project (itself included)
ALLOWED = {"core2d": {"core2d"}, "noise3d": {"core2d", "noise3d"},
           "noisewarp": {"core2d", "noise3d", "noisewarp"},
           "addon": {"core2d", "noise3d", "noisewarp", "addon"}}
# a library is arrays in, arrays out: no command line, video, plotting or Blender
APP_ONLY = {"argparse", "cv2", "matplotlib", "imageio", "ray", "bpy", "tqdm"}


def _modules():
    for pkg in PACKAGES:
        for name in sorted(os.listdir(os.path.join(ROOT, pkg))):
            if name.endswith(".py"):
                mod = name[:-3]
                yield pkg, (pkg if mod == "__init__" else f"{pkg}.{mod}"), os.path.join(ROOT, pkg, name)


def _imports(pkg, modname, path):
    """Fully qualified names imported by one source file."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    is_pkg = path.endswith("__init__.py")
    base = modname.split(".") if is_pkg else modname.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[:len(base) - node.level + 1]
                prefix = ".".join(parent + ([node.module] if node.module else []))
            else:
                prefix = node.module
            for a in node.names:
                out.add(f"{prefix}.{a.name}")
                out.add(prefix)
    return out


GRAPH = {}
for _pkg, _mod, _path in _modules():
    GRAPH[_mod] = (_pkg, _imports(_pkg, _mod, _path))


def _project_target(name):
    """The project module an imported name refers to (longest known prefix), or None."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        cand = ".".join(parts[:k])
        if cand in GRAPH:
            return cand
    return None


@pytest.mark.parametrize("mod", sorted(GRAPH))
def test_arrows_point_down(mod):
    pkg, names = GRAPH[mod]
    up = sorted(n for n in names if n.split(".")[0] in PACKAGES and n.split(".")[0] not in ALLOWED[pkg])
    assert not up, f"{mod} imports {up} from a package above it"
    if pkg in ("core2d", "noise3d"):
        app = sorted(n for n in names if n.split(".")[0] in APP_ONLY)
        assert not app, f"{mod} (a library) imports {app}"


def test_no_import_cycles():
    edges = {m: {t for n in GRAPH[m][1] if (t := _project_target(n)) and t != m} for m in GRAPH}
    # a package's __init__ re-exporting its own modules is not a cycle of modules
    edges = {m: {t for t in ts if not (t == m.split(".")[0] and m.startswith(t + "."))} for m, ts in edges.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
