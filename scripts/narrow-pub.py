#!/usr/bin/env python3
"""Narrows `pub` items of the library to `pub(crate)` wherever the binary, tests and benches do
not need them (issue 15). Run on a clean checkout: `python3 scripts/narrow-pub.py .` converts
every item-level `pub` outside src/cli, then compiles all targets and reverts each line the
compiler names (uses from outside, private interfaces, dead code, re-exports) until it builds.
Review the diff, run `cargo fmt`, and commit."""
import json, os, re, subprocess, sys
root = sys.argv[1]
src = os.path.join(root, 'src')
ITEM = re.compile(r'^(\s*)pub (fn|struct|enum|const|type|trait|static|unsafe fn|async fn) ')
changed = {}  # (path, lineno) -> original line
for dp, dn, fn in os.walk(src):
    rel = os.path.relpath(dp, src)
    if rel.startswith('cli'):
        continue
    for f in fn:
        if not f.endswith('.rs') or (rel == '.' and f in ('main.rs', 'lib.rs')):
            continue
        p = os.path.join(dp, f)
        lines = open(p).read().split('\n')
        in_trait_impl = False
        for i, l in enumerate(lines):
            m = ITEM.match(l)
            if m:
                changed[(p, i + 1)] = l
                lines[i] = m.group(1) + 'pub(crate) ' + l[len(m.group(0)) - len(m.group(2)) - 1:].lstrip()
        open(p, 'w').write('\n'.join(lines))
print('converted', len(changed))

def revert(p, n):
    lines = open(p).read().split('\n')
    lines[n - 1] = changed.pop((p, n))
    open(p, 'w').write('\n'.join(lines))

def spans(msg):
    out = []
    for s in msg.get('spans', []):
        out.append(s)
        e = s.get('expansion')
    for c in msg.get('children', []):
        out.extend(spans(c))
    return out

for it in range(30):
    r = subprocess.run(['cargo', 'build', '--all-targets', '--keep-going', '--message-format=json'],
                       cwd=root, capture_output=True, text=True)
    hits = set()
    msgs = 0
    for line in r.stdout.splitlines():
        try:
            j = json.loads(line)
        except Exception:
            continue
        if j.get('reason') != 'compiler-message':
            continue
        m = j['message']
        if m['level'] not in ('error', 'warning'):
            continue
        msgs += 1
        for s in spans(m):
            p = os.path.normpath(os.path.join(root, s['file_name']))
            for n in range(s['line_start'], s['line_end'] + 1):
                if (p, n) in changed:
                    hits.add((p, n))
        if not any((os.path.normpath(os.path.join(root, s['file_name'])), n) in changed
                   for s in spans(m) for n in range(s['line_start'], s['line_end'] + 1)):
            # Re-exports (`pub use`) name the item only in the text: revert every converted
            # definition of that name.
            names = re.findall(r'`([A-Za-z_][A-Za-z0-9_]*)`', m['message'])
            found = False
            for name in names:
                pat = re.compile(r'pub\(crate\) (?:unsafe |async )?(?:fn|struct|enum|const|type|trait|static) ' + re.escape(name) + r'\b')
                for (p, n) in list(changed):
                    lines = open(p).read().split('\n')
                    if pat.search(lines[n - 1]):
                        hits.add((p, n)); found = True
            if not found and m['level'] == 'error':
                print('unmatched:', m['rendered'][:300])
    print(f'iteration {it}: {msgs} messages, reverting {len(hits)}', flush=True)
    if not hits:
        break
    for p, n in sorted(hits):
        revert(p, n)
print('left pub(crate):', len(changed))
