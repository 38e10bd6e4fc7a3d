"""The house plan's import rules (shared/DESIGN.md): ``eval/`` never imports ``train/``, lower layers never
import higher ones, and no two modules import each other (directly or in a cycle) — counting imports inside
functions too, read from the source (nothing is imported here)."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "spatial_mllm"

# what each layer must not import. eval sits beside train: eval never imports train (train may use eval's
# metrics: the GRPO rewards score with VSI-Bench's rules); the studies in experiments/ sit above both
FORBIDDEN = {"eval": {"train", "experiments", "integrations"}, "train": {"experiments", "integrations"},
             "models": {"train", "eval", "experiments", "integrations"},
             "data": {"models", "train", "eval", "experiments", "integrations", "sampling"},
             "geometry": {"data", "models", "train", "eval", "experiments", "integrations", "sampling"}}


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            cands = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            cands = [a.name for a in node.names]
        else:
            continue
        found |= {c for c in cands if c in known and c != name}
    return found


def _graph():
    mods = _modules()
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def _layer(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else None


def test_layers_import_only_downwards():
    bad = [(m, t) for m, targets in _graph().items() for t in targets
           if _layer(t) in FORBIDDEN.get(_layer(m), set())]
    assert not bad, "imports against the house plan: " + ", ".join(f"{m} -> {t}" for m, t in sorted(bad))


def test_no_import_cycles():
    graph = _graph()
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"modules that import each other: {cycles}"


def test_the_checker_sees_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from spatial_mllm.train.sft import SFTConfig\n")
    assert _imports("spatial_mllm.eval.m", f, {"spatial_mllm.train.sft"}) == {"spatial_mllm.train.sft"}
