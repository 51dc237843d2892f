#!/usr/bin/env python3
"""Import circles between the files of a Rust crate.

    scripts/layers.py src protocol/src cli/src      # report; exit 1 on a circle
    scripts/layers.py --order src                   # the layers, bottom to top

Each file is a module (`a/b.rs` and `a/b/mod.rs` are `crate::a::b`). A
file depends on another when it names it: a `use` (braces expanded), or a
path written inline (`crate::a::b::f()`, `super::x::Y`). `mod x;` is not a
dependency (a parent holds its children; what it re-exports it names with
`pub use`, which is). Code under `#[cfg(test)]` is left out: tests may
reach anywhere. A circle is a strongly connected set of two or more files.
"""
import os
import re
import sys


def modules(root):
    """Module path (tuple) -> file, for every .rs file under `root`."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), root)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            if parts and parts[0] == "bin":
                continue
            out[tuple(parts)] = os.path.join(dirpath, f)
    return out


def strip(text):
    """`text` without comments, string and char literals (a tiny Rust lexer)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c in "rb" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")) and re.match(r'(?:br|r)#*"', text[i:]):
            m = re.match(r'(?:br|r)(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + m.end())
            out.append('""')
            i = n if end < 0 else end + 1 + len(m.group(1))
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""')
            i = j + 1
        elif c == "'" and re.match(r"'(?:\\.[^']*|[^'\\])'", text[i:]):
            m = re.match(r"'(?:\\.[^']*|[^'\\])'", text[i:])
            out.append("' '")
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def production_text(path):
    """The file without comments, strings and `#[cfg(test)]` items."""
    text = strip(open(path, encoding="utf-8").read())
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\((?:test|all\(test[^\]]*|any\(test[^\]]*)\)\]", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        # Skip the item: to the end of its first brace block or `;`.
        j, depth = m.end(), 0
        while j < len(text):
            c = text[j]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    j += 1
                    break
            elif c == ";" and depth == 0:
                j += 1
                break
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = re.sub(r"\s+", "", tree)
    if "{" not in tree:
        return [tree]
    k = tree.index("{")
    prefix, body = tree[:k], tree[k + 1 : tree.rindex("}")]
    parts, depth, cur = [], 0, ""
    for c in body:
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += c == "{"
        depth -= c == "}"
        cur += c
    parts.append(cur)
    out = []
    for p in parts:
        if p:
            out += [prefix + e for e in expand_use(p)]
    return out


def walk(segs, here, mods):
    """The module path a `crate::`/`self::`/`super::` path (or one that
    starts with a child module's name) starts from, and the segments after
    it; None for a path into another crate."""
    if segs[0] == "crate":
        return [], segs[1:]
    if segs[0] == "self":
        return list(here), segs[1:]
    if segs[0] == "super":
        cur, rest = list(here), segs
        while rest and rest[0] == "super":
            cur, rest = cur[:-1], rest[1:]
        return cur, rest
    if tuple(list(here) + [segs[0]]) in mods:
        return list(here), segs
    return None


def resolve(path, here, mods, reexports=None, depth=0):
    """The module file a path names, seen from module `here`; an item a
    module re-exports (`pub use x::Y` in lib.rs or a mod.rs) is followed
    to the module that defines it."""
    segs = [s.split(" as ")[0] for s in path.split("::") if s and s != "*"]
    if not segs:
        return None
    start = walk(segs, here, mods)
    if start is None:
        return None
    cur, rest = start
    best = tuple(cur) if tuple(cur) in mods else None
    left = list(rest)
    for s in rest:
        if tuple(cur + [s]) in mods:
            cur = cur + [s]
            best = tuple(cur)
            left = left[1:]
        else:
            break
    if reexports and best is not None and left and depth < 8:
        target = reexports.get(best, {}).get(left[0])
        if target is not None:
            return target
    return best


def reexports_of(mods, texts):
    """For each module, the names it re-exports and the module each comes
    from (followed through chains of re-exports)."""
    raw = {}
    for m, text in texts.items():
        for u in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", text):
            for p in expand_use(u.group(1)):
                segs = [x for x in p.split("::") if x]
                if not segs or segs[-1] == "*":
                    continue
                last = segs[-1]
                name = last.split(" as ")[-1].strip()
                raw.setdefault(m, {})[name] = "::".join(segs[:-1] + [last.split(" as ")[0]])
    out = {}
    for _ in range(8):  # follow chains
        for m, names in raw.items():
            for name, p in names.items():
                t = resolve(p, m, mods, out)
                if t is not None:
                    out.setdefault(m, {})[name] = t
    return out


def graph(root):
    mods = modules(root)
    texts = {m: production_text(path) for m, path in mods.items()}
    reexports = reexports_of(mods, texts)
    edges = {m: set() for m in mods}
    for m, text in texts.items():
        paths = []
        for u in re.finditer(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", text):
            for p in expand_use(u.group(2)):
                target = resolve(p, m, mods)
                # A re-export of a descendant (`pub use self::x::Y`) is the
                # parent showing its children's items, not depending on them.
                if u.group(1) and target and target[: len(m)] == m:
                    continue
                paths.append(p)
        rest = re.sub(r"\buse\s+[^;]+;", "", text)
        paths += re.findall(r"\b(?:crate|super|self)(?:::\w+)+", rest)
        for p in paths:
            target = resolve(p, m, mods, reexports)
            if target is not None and target != m and target != ():
                edges[m].add(target)
    return mods, edges


def sccs(edges):
    index, low, on, stack, out, n = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def name(root, m):
    return root + ":" + ("::".join(m) or "crate")


def main(argv):
    order = "--order" in argv
    roots = [a for a in argv if not a.startswith("--")]
    bad = 0
    for root in roots:
        _, edges = graph(root)
        comps = sccs(edges)
        circles = [c for c in comps if len(c) > 1]
        if order and not circles:
            # Each file's layer: one above the highest file it uses.
            level = {}
            for c in comps:  # Tarjan emits dependencies first
                for m in c:
                    level[m] = 1 + max((level[d] for d in edges[m]), default=-1)
            for n in range(max(level.values()) + 1):
                files = sorted("::".join(m) or "lib" for m in level if level[m] == n)
                print(f"{root} layer {n}: {' '.join(files)}")
        for c in circles:
            bad += 1
            members = sorted(c)
            print(f"circle of {len(c)} in {root}:")
            inside = set(c)
            for m in members:
                deps = sorted(d for d in edges[m] if d in inside)
                print(f"  {'::'.join(m)} -> {', '.join('::'.join(d) for d in deps)}")
        if not circles:
            print(f"layers: {root}: {len(edges)} files, no import circle")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
