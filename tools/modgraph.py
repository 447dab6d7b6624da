#!/usr/bin/env python3
"""Module-level import graph of a Rust crate's src/ (crate::, super::, self::, child-module
paths and `use` trees). Comments, string literals and #[cfg(test)] items are skipped.

Usage: modgraph.py ROOT_FILE [--tests] [--defs] [--collapse] [--edges] [--lines] [--floors]
  --tests     count #[cfg(test)] items too
  --defs      a path through a `pub use` counts as an edge to the module that defines the item
  --collapse  one node per folder (a wing) instead of one per file
  --edges     print every module's targets; --lines: every edge with its line numbers
  --floors    print the floors (longest path down) when there is no cycle
Exits 1 when the graph has a cycle (`make lint` runs it on the library and on nebula-ctl)."""
import os, re, sys
from collections import defaultdict

args = sys.argv[1:]
root_file = args[0]
with_tests = '--tests' in args
collapse = '--collapse' in args
show_edges = '--edges' in args
src_dir = os.path.dirname(root_file)

# ---- discover module tree from `mod x;` declarations --------------------------------------
modules = {}   # modpath tuple -> file
children = defaultdict(set)

def child_file(parent_file, parent_is_dirmod, name, path_attr=None):
    d = os.path.dirname(parent_file) if parent_is_dirmod else os.path.splitext(parent_file)[0]
    for cand in (os.path.join(d, name + '.rs'), os.path.join(d, name, 'mod.rs')):
        if os.path.exists(cand):
            return cand
    return None

MOD_RE = re.compile(r'^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;', re.M)

def strip(text):
    # remove comments and string/char literals (rough but adequate)
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith('//', i):
            j = text.find('\n', i); j = n if j < 0 else j
            i = j; continue
        if text.startswith('/*', i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith('/*', i): depth += 1; i += 2
                elif text.startswith('*/', i): depth -= 1; i += 2
                else:
                    if text[i] == '\n': out.append('\n')
                    i += 1
            continue
        m = re.match(r'r(#*)"', text[i:i+10]) if c == 'r' and (i == 0 or not (text[i-1].isalnum() or text[i-1] == '_')) else None
        if m:
            close = '"' + m.group(1)
            j = text.find(close, i + len(m.group(0)))
            j = n if j < 0 else j + len(close)
            out.append('""' + '\n' * text.count('\n', i, j)); i = j; continue
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == '\\' else 1
            out.append('""' + '\n' * text.count('\n', i, j)); i = j + 1; continue
        if c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i+4]) or (c == "'" and text[i+1:i+2] == '\\'):
            m2 = re.match(r"'(\\[^']*|[^\\'])'", text[i:i+12])
            if m2: out.append("' '"); i += len(m2.group(0)); continue
        out.append(c); i += 1
    return ''.join(out)

def drop_cfg_test(text):
    """Blank out items annotated #[cfg(test)] (a mod block or a single item)."""
    res = list(text)
    for m in re.finditer(r'#\[cfg\(test\)\]', text):
        j = m.end()
        # find end of item: first ';' before any '{', or matching brace
        k = j
        while k < len(text) and text[k] not in '{;':
            k += 1
        if k < len(text) and text[k] == '{':
            depth = 0
            while k < len(text):
                if text[k] == '{': depth += 1
                elif text[k] == '}':
                    depth -= 1
                    if depth == 0: break
                k += 1
        for x in range(m.start(), min(k + 1, len(text))):
            if res[x] != '\n': res[x] = ' '
    return ''.join(res)

def walk(modpath, f, is_dirmod):
    modules[modpath] = f
    text = strip(open(f).read())
    for m in MOD_RE.finditer(text):
        # skip #[cfg(test)] mod x;
        pre = text[max(0, m.start()-40):m.start()]
        cf = child_file(f, is_dirmod, m.group(1))
        if cf:
            children[modpath].add(m.group(1))
            walk(modpath + (m.group(1),), cf, cf.endswith('mod.rs'))

walk((), root_file, True)

# ---- collect paths -------------------------------------------------------------------------
def expand_use(tree):
    """Expand a use tree `a::{b, c::{d}}` into path strings."""
    tree = re.sub(r'\s+as\s+\w+', '', tree)
    tree = re.sub(r'\s+', '', tree)
    def rec(prefix, s):
        # split top-level by commas
        parts, depth, cur = [], 0, ''
        for ch in s:
            if ch == '{': depth += 1
            if ch == '}': depth -= 1
            if ch == ',' and depth == 0:
                parts.append(cur); cur = ''
            else:
                cur += ch
        if cur: parts.append(cur)
        out = []
        for p in parts:
            if '{' in p:
                head, rest = p.split('{', 1)
                rest = rest[:rest.rfind('}')]
                out += rec(prefix + head, rest)
            else:
                out.append(prefix + p)
        return out
    return rec('', tree)

USE_RE = re.compile(r'\buse\s+([^;]+);')
PATH_RE = re.compile(r'(?<![\w:])((?:crate|super|self|[a-z_][a-z0-9_]*)(?:::(?:[A-Za-z_]\w*))+)')

def resolve(cur, segs):
    """Return the deepest module path named by segs from module cur, or None."""
    if not segs: return None
    if segs[0] == 'crate': base, segs = (), segs[1:]
    elif segs[0] == 'self': base, segs = cur, segs[1:]
    elif segs[0] == 'super':
        base = cur
        while segs and segs[0] == 'super':
            base = base[:-1]; segs = segs[1:]
        if segs and segs[0] == 'self': segs = segs[1:]
    elif segs[0] in children[cur]: base = cur
    elif cur == () or False: base = ()
    else: return None
    m = base
    for s in segs:
        if s in children[m]: m = m + (s,)
        else: break
    return m

REEXP = defaultdict(dict)  # module -> exported name -> list of segs (relative to module)
def collect_reexports():
    for mp, f in modules.items():
        text = strip(open(f).read())
        for m in re.finditer(r'\bpub(?:\([^)]*\))?\s+use\s+([^;]+);', text):
            for p in expand_use(m.group(1)):
                segs = p.split('::')
                nm = segs[-1]
                REEXP[mp][nm] = segs
collect_reexports()

def resolve_def(cur, segs, depth=0):
    t = resolve(cur, segs)
    if t is None or depth > 5: return t
    # which segment follows t?
    # find the item name right after the module prefix
    rest = None
    s2 = list(segs)
    # walk same as resolve to find the index
    if s2[0] == 'crate': m, s2 = (), s2[1:]
    elif s2[0] == 'self': m, s2 = cur, s2[1:]
    elif s2[0] == 'super':
        m = cur
        while s2 and s2[0] == 'super': m = m[:-1]; s2 = s2[1:]
    else: m = cur
    i = 0
    while i < len(s2) and s2[i] in children[m]: m = m + (s2[i],); i += 1
    if i < len(s2) and s2[i] in REEXP[m]:
        return resolve_def(m, REEXP[m][s2[i]], depth + 1) or t
    return t

def name(mp):
    return '/'.join(mp) if mp else 'lib'

edges = defaultdict(lambda: defaultdict(list))  # a -> b -> [lines]
def _unused():
    pass

def scan(mp, cur, text):
    text = MOD_RE.sub(lambda m: re.sub(r'[^\n]', ' ', m.group(0)), text)
    found = []
    for m in USE_RE.finditer(text):
        line = text.count('\n', 0, m.start()) + 1
        for p in expand_use(m.group(1)):
            found.append((line, p.split('::')))
    text2 = USE_RE.sub(lambda m: ' ' * len(m.group(0)) if '\n' not in m.group(0) else re.sub(r'[^\n]', ' ', m.group(0)), text)
    for m in PATH_RE.finditer(text2):
        line = text2.count('\n', 0, m.start()) + 1
        found.append((line, m.group(1).split('::')))
    for line, segs in found:
        segs = [s for s in segs if s]
        t = resolve_def(cur, segs) if '--defs' in args else resolve(cur, segs)
        if t is None or t == mp or t == cur: continue
        # an ancestor reached only as a prefix (e.g. super::X) still counts
        edges[mp][t].append(line)

for mp, f in modules.items():
    raw = open(f).read()
    full = strip(raw)
    text = drop_cfg_test(full)
    blocks = [(mp, text)]
    if with_tests:
        testonly = ''.join(c if c == '\n' or c == t else ' ' for c, t in zip(full, text)) if False else \
            ''.join(c if (t == ' ' and c != ' ') or c == '\n' else ' ' for c, t in zip(full, text))
        blocks.append((mp + ('tests',), testonly))
    for cur, text in blocks:
        scan(mp, cur, text)

def coll(mp):
    if not collapse: return mp
    # collapse into the wing: sys/*, pkey/*, seccomp/*, cgroup/*, isolation/<x>/*
    if mp[:1] in (('sys',), ('pkey',), ('seccomp',), ('cgroup',)): return mp[:1]
    if mp[:1] == ('isolation',) and len(mp) >= 2 and mp[1] in ('process', 'hardware'): return mp[:2]
    return mp

G = defaultdict(set)
for a in edges:
    for b in edges[a]:
        ca, cb = coll(a), coll(b)
        if ca != cb: G[ca].add(cb)
nodes = sorted({coll(m) for m in modules})

# Tarjan
idx, low, st, on, sccs, c = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in G[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
for v in nodes:
    if v not in idx: sc(v)

if show_edges:
    for a in nodes:
        tg = sorted(G[a])
        print(f'{name(a)} -> ' + ', '.join(name(t) for t in tg))
    print()
big = [s for s in sccs if len(s) > 1]
print(f'# {len(nodes)} modules, {sum(len(v) for v in G.values())} edges, {len(big)} cycles (SCC > 1)')
for s in big:
    print(f'SCC ({len(s)}): ' + ', '.join(sorted(name(x) for x in s)))
if '--lines' in args:
    for a in sorted(edges):
        for b in sorted(edges[a]):
            print(f'  {modules[a]} -> {name(b)} @ {sorted(set(edges[a][b]))}')

if '--floors' in args and not big:
    fl = {}
    def floor(v):
        if v not in fl:
            fl[v] = 0
            fl[v] = 1 + max((floor(w) for w in G[v]), default=-1)
        return fl[v]
    by = defaultdict(list)
    for v in nodes: by[floor(v)].append(name(v))
    for k in sorted(by): print(f'floor {k}: ' + ', '.join(sorted(by[k])))
sys.exit(1 if big else 0)
