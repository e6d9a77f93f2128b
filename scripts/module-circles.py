#!/usr/bin/env python3
"""No two modules of a crate may import each other: the module graph of every crate from `crate::`, `super::` and
`use` lines (cycles of any length), and the crate root against its modules (re-exports aside). Exit 1 on a circle.
Usage: scripts/module-circles.py [REPO]"""
import os, re, sys, itertools
root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
crates = {}
for c in sorted(os.listdir(root + '/crates')) + ['.']:
    src = os.path.join(root, 'crates', c, 'src') if c != '.' else os.path.join(root, 'src')
    if os.path.isdir(src):
        crates[c] = src

def modpath(src, f):
    rel = os.path.relpath(f, src)[:-3].split(os.sep)
    if rel[-1] in ('lib', 'main', 'mod'):
        rel = rel[:-1]
    return tuple(rel)

found = False
for c, src in crates.items():
    mods = {}
    for d, _, fs in os.walk(src):
        for f in fs:
            if f.endswith('.rs'):
                p = os.path.join(d, f)
                mods[modpath(src, p)] = p
    edges = set()
    for m, p in mods.items():
        text = open(p).read()
        # drop #[cfg(test)] mod tests { ... } tails crudely: ignore lines after '#[cfg(test)]'
        text = text.split('#[cfg(test)]')[0]
        text = re.sub(r'//[^\n]*', '', text)
        refs = set()
        for mm in re.finditer(r'\bcrate::([a-z_0-9]+(?:::[a-z_0-9]+)*)', text):
            refs.add(tuple(mm.group(1).split('::')))
        for mm in re.finditer(r'\bsuper::([a-z_0-9]+(?:::[a-z_0-9]+)*)', text):
            refs.add(tuple(m[:-1]) + tuple(mm.group(1).split('::')))
        # use crate::{a, b::c}
        for mm in re.finditer(r'use crate::\{([^}]*)\}', text):
            for part in mm.group(1).split(','):
                part = part.strip().split('::')[0].strip()
                if re.match(r'^[a-z_0-9]+$', part):
                    refs.add((part,))
        for mm in re.finditer(r'use super::\{([^}]*)\}', text):
            for part in mm.group(1).split(','):
                part = part.strip().split('::')[0].strip()
                if re.match(r'^[a-z_0-9]+$', part):
                    refs.add(tuple(m[:-1]) + (part,))
        for r in refs:
            # longest prefix that is a module
            for n in range(len(r), 0, -1):
                if r[:n] in mods:
                    t = r[:n]
                    # a reference to an ancestor module (e.g. crate root items) is an edge to that module
                    if t != m and m[:len(t)] != t:
                        edges.add((m, t))
                    break
    # cycles: DFS
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    pairs = sorted({tuple(sorted((a, b))) for a, b in edges if (b, a) in edges})
    for a, b in pairs:
        found = True
        print(f"{c}: {'::'.join(a) or 'lib'} <-> {'::'.join(b) or 'lib'}")
    # longer cycles via Tarjan SCC
    index = {}; low = {}; stack = []; on = set(); sccs = []; counter = [0]
    sys.setrecursionlimit(10000)
    def strong(v):
        index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 2:
                sccs.append(comp)
    for v in list(mods):
        if v not in index:
            strong(v)
    for comp in sccs:
        found = True
        print(f"{c}: cycle among {sorted('::'.join(x) or 'lib' for x in comp)}")


for c in sorted(os.listdir(root + '/crates')) + ['.']:
    src = os.path.join(root, 'crates', c, 'src') if c != '.' else os.path.join(root, 'src')
    if not os.path.isdir(src): continue
    for rootfile in ('lib.rs', 'main.rs'):
        rp = os.path.join(src, rootfile)
        if not os.path.exists(rp): continue
        rt = open(rp).read().split('#[cfg(test)]')[0]
        rt = re.sub(r'//[^\n]*', '', rt)
        children = re.findall(r'^\s*(?:pub(?:\([a-z]+\))? )?mod ([a-z_0-9]+);', rt, re.M)
        uses, reexports = set(), set()
        for ch in children:
            for mm in re.finditer(r'(^\s*pub(?:\([a-z]+\))? use (?:crate::|self::)?%s::)|((?<![:\w])(?:crate::|self::)?%s::)' % (ch, ch), rt, re.M):
                (reexports if mm.group(1) else uses).add(ch)
        back = set()
        for ch in children:
            p = os.path.join(src, ch + '.rs')
            if not os.path.exists(p): p = os.path.join(src, ch, 'mod.rs')
            if not os.path.exists(p): continue
            t = open(p).read().split('#[cfg(test)]')[0]
            t = re.sub(r'//[^\n]*', '', t)
            names = set(re.findall(r'\bcrate::([A-Za-z_0-9]+)', t))
            for mm in re.finditer(r'use crate::\{([^}]*)\}', t):
                names |= {x.strip().split('::')[0] for x in mm.group(1).split(',') if x.strip()}
            if any(n not in children for n in names):
                back.add(ch)
        both = sorted(uses & back)
        found = found or bool(both)
        if both:
            print(f"{c}/{rootfile}: the root and {both} import each other")
print("module circles found" if found else "no module circles")
sys.exit(1 if found else 0)
