"""perf script -> collapsed stacks (stdin to stdout), or with --summary a
breakdown of collapsed stacks by component (bench/profile)."""
import re
import sys
from collections import Counter

# Each sample is charged to the innermost frame that names a component
# (walking from the leaf up), so the shares add up to 100 %: malloc, memcpy
# and system calls count for the component that called them.
COMPONENTS = [
    ("SQLite (sqlx-sqlite, libsqlite3)", r"sqlx_sqlite::|sqlite3|^pcache|^btree|^vdbe"),
    ("connection pool (sqlx-core)", r"sqlx_core::pool"),
    ("JWT (jsonwebtoken, HMAC, base64)", r"jsonwebtoken::|hmac::|sha2::|base64::"),
    ("GraphQL parse", r"async_graphql_parser::"),
    ("GraphQL validation", r"async_graphql::validation"),
    ("authql document guard", r"authql::graphql::document|authql::graphql::trusted"),
    ("response and request JSON (serde_json)", r"serde_json::|async_graphql_value::"),
    # Instrumented<F>::poll only passes through to F: not tracing's work.
    ("tracing", r"^(?!<tracing::instrument::Instrumented).*(tracing::|tracing_core::|tracing_subscriber::)"),
    ("metrics", r"authql::metrics"),
    ("GraphQL execution (async-graphql)", r"async_graphql::"),
    ("authql services and storage", r"authql::"),
    ("HTTP (hyper, axum, tower)", r"hyper::|axum::|tower::|tower_http::|http::"),
    ("tokio scheduler, I/O driver, threads", r"tokio::|mio::|std::thread|start_thread|clone3"),
]


def collapse(lines):
    stacks = Counter()
    frames = []
    comm = None
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            if comm is not None:
                stacks[";".join([comm] + frames[::-1])] += 1
            frames, comm = [], None
            continue
        if not line.startswith((" ", "\t")):
            comm = line.split()[0].replace(";", ":")
            continue
        parts = line.strip().split(" ", 1)
        if len(parts) < 2:
            continue
        sym = parts[1]
        sym = re.sub(r"\+0x[0-9a-f]+ ", " ", sym)
        dso = ""
        m = re.search(r"\(([^)]*)\)$", sym)
        if m:
            dso = m.group(1)
            sym = sym[: m.start()].strip()
        if sym == "[unknown]":
            sym = f"[{dso.rsplit('/', 1)[-1] or 'unknown'}]"
        sym = re.sub(r"::h[0-9a-f]{16}$", "", sym).replace(";", ":")
        frames.append(sym)
    if comm is not None:
        stacks[";".join([comm] + frames[::-1])] += 1
    for stack, n in stacks.items():
        print(f"{stack} {n}")


def summary(lines):
    total = 0
    shares = Counter()
    leaves = Counter()
    compiled = [(name, re.compile(pattern)) for name, pattern in COMPONENTS]
    for line in lines:
        stack, _, n = line.rstrip("\n").rpartition(" ")
        n = int(n)
        total += n
        frames = stack.split(";")
        owner = "other (kernel scheduling, unresolved frames)"
        for frame in reversed(frames[1:]):
            hit = next((name for name, pattern in compiled if pattern.search(frame)), None)
            if hit:
                owner = hit
                break
        shares[owner] += n
        leaves[frames[-1]] += n
    print(f"{total} samples, each charged to the innermost component on its stack:")
    for name, n in shares.most_common():
        print(f"  {n / total * 100:5.1f} %  {name}")
    print("hottest functions (self):")
    for sym, n in leaves.most_common(15):
        print(f"  {n / total * 100:5.1f} %  {sym[:110]}")


if __name__ == "__main__":
    (summary if "--summary" in sys.argv else collapse)(sys.stdin)
